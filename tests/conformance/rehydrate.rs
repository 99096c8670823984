//! queue-rehydrate's conformance suite (written once, in the core crate) against memory,
//! SQLite, PostgreSQL and MariaDB, plus the SQL-only properties: exact text on a
//! case-insensitive collation, concurrent release, the set-based orphan sweep, `verify()`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use queue_rehydrate::conformance::{
    self, JobQueueFixture, MemoryHarness, MessageFixture, SourceFixture,
};
use queue_rehydrate::{
    ColumnType, DesiredJob, EntitySource, Error as QError, FailedMessageStore, JobQueue, Key,
    KeyType, Maintenance, Message, MessageRecovery, MessageStatus, MessageStore, Predicate,
    QueuedJob, RecoverySettings, Result as QResult, Row, SetValue, SourceStore, TableMapping,
    Value,
};
use recon_core::async_trait;
use recon_core::{Reconciler, RunContext};
use store_sqlx::{Dialect, JobState, MessageTable, SqlJobQueue, SqlSourceStore};

use crate::Backend;
use crate::common::TestDb;

const QUEUE: &str = "pin-jobs";

// ---------------------------------------------------------------------------------------------
// SQL fixtures: create, seed and read back tables with plain SQL (test-only literals)
// ---------------------------------------------------------------------------------------------

struct SqlFx<'a> {
    t: &'a TestDb,
}

fn d(t: &TestDb) -> Dialect {
    t.db.dialect()
}

fn text_lit(dialect: Dialect, s: &str) -> String {
    let s = s.replace('\'', "''");
    match dialect {
        Dialect::MySql => format!("'{}'", s.replace('\\', "\\\\")),
        _ => format!("'{s}'"),
    }
}

/// A host timestamp literal (SQLite: RFC 3339 text, the stores' default format).
fn ts_lit(dialect: Dialect, t: DateTime<Utc>) -> String {
    match dialect {
        Dialect::Postgres => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f+00")),
        Dialect::MySql => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f")),
        _ => format!("'{}'", t.to_rfc3339_opts(SecondsFormat::AutoSi, false)),
    }
}

/// A timestamp in recon's own tables (SQLite: fixed-width RFC 3339).
fn own_ts_lit(dialect: Dialect, t: DateTime<Utc>) -> String {
    match dialect {
        Dialect::Sqlite => format!("'{}'", t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00")),
        _ => ts_lit(dialect, t),
    }
}

fn value_lit(dialect: Dialect, v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::Text(s) => text_lit(dialect, s),
        Value::Bool(b) => match dialect {
            Dialect::Postgres => b.to_string(),
            _ => i64::from(*b).to_string(),
        },
        Value::Timestamp(t) => ts_lit(dialect, *t),
    }
}

fn sql_type(dialect: Dialect, ty: ColumnType) -> &'static str {
    match (dialect, ty) {
        (Dialect::Postgres, ColumnType::Text) => "TEXT",
        (Dialect::Postgres, ColumnType::Integer) => "BIGINT",
        (Dialect::Postgres, ColumnType::Boolean) => "BOOLEAN",
        (Dialect::Postgres, ColumnType::Timestamp) => "TIMESTAMPTZ",
        // a case-insensitive collation on purpose: the store must still compare exactly
        (Dialect::MySql, ColumnType::Text) => {
            "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
        }
        (Dialect::MySql, ColumnType::Integer) => "BIGINT",
        (Dialect::MySql, ColumnType::Boolean) => "BOOLEAN",
        (Dialect::MySql, ColumnType::Timestamp) => "DATETIME(6)",
        (_, ColumnType::Integer | ColumnType::Boolean) => "INTEGER",
        (_, _) => "TEXT",
    }
}

/// Read rows with plain sqlx: `$decode` turns one row into a value.
macro_rules! read_rows {
    ($t:expr, $sql:expr, |$row:ident| $decode:expr) => {{
        use sqlx::Row as _;
        let sql = sqlx::AssertSqlSafe($sql.to_owned());
        match $t.db.dialect() {
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => sqlx::query(sql)
                .fetch_all($t.db.as_sqlite().unwrap())
                .await
                .expect("read back")
                .iter()
                .map(|$row| $decode)
                .collect::<Vec<_>>(),
            #[cfg(feature = "postgres")]
            Dialect::Postgres => sqlx::query(sql)
                .fetch_all($t.db.as_postgres().unwrap())
                .await
                .expect("read back")
                .iter()
                .map(|$row| $decode)
                .collect::<Vec<_>>(),
            #[cfg(feature = "mysql")]
            Dialect::MySql => sqlx::query(sql)
                .fetch_all($t.db.as_mysql().unwrap())
                .await
                .expect("read back")
                .iter()
                .map(|$row| $decode)
                .collect::<Vec<_>>(),
            #[allow(unreachable_patterns)]
            other => panic!("{other:?} not compiled in"),
        }
    }};
}

fn ts_select(dialect: Dialect, col: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("CAST({col} AS timestamptz)"),
        _ => col.to_owned(),
    }
}

#[async_trait]
impl SourceFixture for SqlFx<'_> {
    async fn reset_table(&self, table: &TableMapping, rows: &[Row]) -> QResult<()> {
        let dl = d(self.t);
        let name = table.qualified_name();
        let cols = table
            .columns()
            .iter()
            .map(|c| {
                let pk = if c.name == table.key_column() {
                    " PRIMARY KEY"
                } else {
                    ""
                };
                format!("{} {}{pk}", c.name, sql_type(dl, c.ty))
            })
            .collect::<Vec<_>>()
            .join(", ");
        self.t
            .exec(&format!("CREATE TABLE IF NOT EXISTS {name} ({cols})"))
            .await;
        self.t.exec(&format!("DELETE FROM {name}")).await;
        let names = table
            .columns()
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        for chunk in rows.chunks(500) {
            let values = chunk
                .iter()
                .map(|r| {
                    let vs = table
                        .columns()
                        .iter()
                        .map(|c| value_lit(dl, r.get(&c.name)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("({vs})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            self.t
                .exec(&format!("INSERT INTO {name} ({names}) VALUES {values}"))
                .await;
        }
        Ok(())
    }

    async fn table_rows(&self, table: &TableMapping) -> QResult<Vec<Row>> {
        let dl = d(self.t);
        let cols = table.columns().to_vec();
        let list = cols
            .iter()
            .map(|c| match c.ty {
                ColumnType::Timestamp => ts_select(dl, &c.name),
                _ => c.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {list} FROM {} ORDER BY {}",
            table.qualified_name(),
            table.key_column()
        );
        let rows: Vec<BTreeMap<String, Value>> = read_rows!(self.t, sql, |r| {
            cols.iter()
                .enumerate()
                .map(|(i, c)| {
                    let v = match c.ty {
                        ColumnType::Text => r.try_get::<Option<String>, _>(i).unwrap().into(),
                        ColumnType::Integer => r.try_get::<Option<i64>, _>(i).unwrap().into(),
                        ColumnType::Boolean => r.try_get::<Option<bool>, _>(i).unwrap().into(),
                        ColumnType::Timestamp => {
                            r.try_get::<Option<DateTime<Utc>>, _>(i).unwrap().into()
                        }
                    };
                    (c.name.clone(), v)
                })
                .collect()
        });
        rows.into_iter()
            .map(|values| {
                let key = Key::from_value(&values[table.key_column()], table.key_type())
                    .map_err(QError::config)?;
                Ok(Row::new(key, values))
            })
            .collect()
    }
}

#[async_trait]
impl JobQueueFixture for SqlFx<'_> {
    async fn reset_jobs(&self, waiting: &[QueuedJob], running: &[QueuedJob]) -> QResult<()> {
        let dl = d(self.t);
        self.t
            .exec(&format!(
                "DELETE FROM recon_queued_jobs WHERE queue = '{QUEUE}'"
            ))
            .await;
        let all: Vec<(&QueuedJob, JobState)> = waiting
            .iter()
            .map(|j| (j, JobState::Waiting))
            .chain(running.iter().map(|j| (j, JobState::Running)))
            .collect();
        for chunk in all.chunks(500) {
            let values = chunk
                .iter()
                .map(|(j, st)| {
                    let (key, ty) = match &j.entity_key {
                        Value::Null => ("NULL".to_owned(), "NULL".to_owned()),
                        Value::Int(i) => (text_lit(dl, &i.to_string()), "'integer'".into()),
                        other => (value_lit(dl, other), "'text'".into()),
                    };
                    format!(
                        "('{QUEUE}', {}, {}, {key}, {ty}, {}, '{}', NULL, {})",
                        text_lit(dl, &j.id),
                        text_lit(dl, &j.kind),
                        own_ts_lit(dl, j.run_at),
                        st.as_str(),
                        own_ts_lit(dl, conformance::now()),
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            self.t
                .exec(&format!(
                    "INSERT INTO recon_queued_jobs (queue, id, kind, entity_key, entity_key_type, \
                     run_at, state, payload, created_at) VALUES {values}"
                ))
                .await;
        }
        Ok(())
    }

    async fn waiting_jobs(&self) -> QResult<Vec<QueuedJob>> {
        let sql = format!(
            "SELECT id, kind, entity_key, entity_key_type, {} FROM recon_queued_jobs \
             WHERE queue = '{QUEUE}' AND state = 'waiting' ORDER BY id",
            ts_select(d(self.t), "run_at")
        );
        let mut jobs = read_rows!(self.t, sql, |r| {
            let key: Option<String> = r.try_get(2).unwrap();
            let ty: Option<String> = r.try_get(3).unwrap();
            QueuedJob {
                id: r.try_get(0).unwrap(),
                kind: r.try_get(1).unwrap(),
                entity_key: match (key, ty.as_deref()) {
                    (None, _) => Value::Null,
                    (Some(k), Some("integer")) => Value::Int(k.parse().unwrap()),
                    (Some(k), _) => Value::Text(k),
                },
                run_at: r.try_get(4).unwrap(),
            }
        });
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(jobs)
    }
}

const MESSAGES: &str = "wa_messages";

async fn create_messages_table(t: &TestDb) {
    let dl = d(t);
    let ts = sql_type(dl, ColumnType::Timestamp);
    let text = sql_type(dl, ColumnType::Text);
    t.exec(&format!(
        "CREATE TABLE {MESSAGES} (id BIGINT PRIMARY KEY, status {text} NOT NULL, session {text}, \
         attempts BIGINT NOT NULL, last_attempt_at {ts}, next_attempt_at {ts}, failed_at {ts}, \
         last_error {text}, recipient {text})"
    ))
    .await;
    t.exec(&format!(
        "CREATE INDEX {MESSAGES}_status ON {MESSAGES} (status, id)"
    ))
    .await;
}

fn message_table() -> MessageTable {
    MessageTable::builder(MESSAGES).build().unwrap()
}

#[async_trait]
impl MessageFixture for SqlFx<'_> {
    async fn reset_messages(&self, messages: &[Message]) -> QResult<()> {
        let dl = d(self.t);
        self.t.exec(&format!("DELETE FROM {MESSAGES}")).await;
        if messages.is_empty() {
            return Ok(());
        }
        let opt_ts = |t: Option<DateTime<Utc>>| t.map_or("NULL".into(), |t| ts_lit(dl, t));
        let opt_text = |s: &Option<String>| s.as_deref().map_or("NULL".into(), |s| text_lit(dl, s));
        for chunk in messages.chunks(500) {
            let values = chunk
                .iter()
                .map(|m| {
                    let Key::Int(id) = m.id else {
                        panic!("integer ids")
                    };
                    format!(
                        "({id}, '{}', {}, {}, {}, {}, {}, {}, '+5730000')",
                        m.status.as_str(),
                        opt_text(&m.session),
                        m.attempts,
                        opt_ts(m.last_attempt_at),
                        opt_ts(m.next_attempt_at),
                        opt_ts(m.failed_at),
                        opt_text(&m.last_error),
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            self.t
                .exec(&format!(
                    "INSERT INTO {MESSAGES} (id, status, session, attempts, last_attempt_at, \
                     next_attempt_at, failed_at, last_error, recipient) VALUES {values}"
                ))
                .await;
        }
        Ok(())
    }

    async fn all_messages(&self) -> QResult<Vec<Message>> {
        let dl = d(self.t);
        let sql = format!(
            "SELECT id, status, session, attempts, {}, {}, {}, last_error FROM {MESSAGES} ORDER BY id",
            ts_select(dl, "last_attempt_at"),
            ts_select(dl, "next_attempt_at"),
            ts_select(dl, "failed_at"),
        );
        Ok(read_rows!(self.t, sql, |r| {
            let status: String = r.try_get(1).unwrap();
            Message {
                id: Key::Int(r.try_get(0).unwrap()),
                status: [
                    MessageStatus::Pending,
                    MessageStatus::Processing,
                    MessageStatus::Sent,
                    MessageStatus::Failed,
                    MessageStatus::Archived,
                ]
                .into_iter()
                .find(|s| s.as_str() == status)
                .unwrap_or_else(|| panic!("status {status:?}")),
                session: r.try_get(2).unwrap(),
                attempts: u32::try_from(r.try_get::<i64, _>(3).unwrap()).unwrap(),
                last_attempt_at: r.try_get(4).unwrap(),
                next_attempt_at: r.try_get(5).unwrap(),
                failed_at: r.try_get(6).unwrap(),
                last_error: r.try_get(7).unwrap(),
            }
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// The world a case runs in: the stores under test and their fixtures
// ---------------------------------------------------------------------------------------------

enum Fx<'a> {
    Memory(MemoryHarness),
    Sql(SqlFx<'a>),
}

struct World<'a> {
    source: Arc<dyn SourceStore>,
    queue: Arc<dyn JobQueue>,
    entities: Arc<dyn EntitySource>,
    messages: Arc<dyn MessageStore>,
    failed: Arc<dyn FailedMessageStore>,
    fx: Fx<'a>,
}

impl<'a> World<'a> {
    async fn new(be: &Backend<'a>) -> World<'a> {
        match be {
            Backend::Memory => {
                let h = MemoryHarness::new();
                World {
                    source: Arc::new(h.source.clone()),
                    queue: h.queue.clone(),
                    entities: h.reservations(),
                    messages: h.messages.clone(),
                    failed: h.messages.clone(),
                    fx: Fx::Memory(h),
                }
            }
            Backend::Sql(t) => {
                create_messages_table(t).await;
                let source = t.db.source_store();
                let queue = t.db.job_queue(QUEUE).unwrap();
                queue.verify().await.expect("recon_queued_jobs migrated");
                let messages = Arc::new(t.db.message_store(message_table()));
                messages.verify().await.expect("messages table verifies");
                World {
                    entities: Arc::new(source.entities(conformance::reservations())),
                    source: Arc::new(source),
                    queue: Arc::new(queue),
                    messages: messages.clone(),
                    failed: messages,
                    fx: Fx::Sql(SqlFx { t }),
                }
            }
        }
    }

    fn source_fx(&self) -> &dyn SourceFixture {
        match &self.fx {
            Fx::Memory(h) => &h.source,
            Fx::Sql(s) => s,
        }
    }

    fn queue_fx(&self) -> &dyn JobQueueFixture {
        match &self.fx {
            Fx::Memory(h) => h.queue.as_ref(),
            Fx::Sql(s) => s,
        }
    }

    fn message_fx(&self) -> &dyn MessageFixture {
        match &self.fx {
            Fx::Memory(h) => h.messages.as_ref(),
            Fx::Sql(s) => s,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The core crate's suite, on every backend
// ---------------------------------------------------------------------------------------------

async fn scenario_a_user_sessions(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::scenario_a_user_sessions(w.source.clone(), w.source_fx()).await;
}

async fn scenario_a_dry_run(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::scenario_a_dry_run(w.source.clone(), w.source_fx()).await;
}

async fn predicates_match_the_reference_evaluator(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::predicates_match_the_reference_evaluator(w.source.clone(), w.source_fx()).await;
}

async fn keyset_pagination(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::keyset_pagination(w.source.clone(), w.source_fx()).await;
}

async fn bad_predicates_change_nothing(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::bad_predicates_change_nothing(w.source.clone(), w.source_fx()).await;
}

async fn maintenance_counts_matched_rows(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::maintenance_counts_matched_rows(w.source.clone(), w.source_fx()).await;
}

async fn scenario_b_orphans(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::scenario_b_orphans(
        w.queue.clone(),
        w.queue_fx(),
        w.entities.clone(),
        &conformance::reservations(),
        w.source_fx(),
    )
    .await;
}

async fn drift_obsolete_and_running_jobs(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::drift_obsolete_and_running_jobs(
        w.queue.clone(),
        w.queue_fx(),
        w.entities.clone(),
        &conformance::reservations(),
        w.source_fx(),
    )
    .await;
}

async fn queued_job_without_entity_key(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::queued_job_without_entity_key(
        w.queue.clone(),
        w.queue_fx(),
        w.entities.clone(),
        &conformance::reservations(),
        w.source_fx(),
    )
    .await;
}

async fn queued_job_with_wrong_key_type(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::queued_job_with_wrong_key_type(
        w.queue.clone(),
        w.queue_fx(),
        w.entities.clone(),
        &conformance::reservations(),
        w.source_fx(),
    )
    .await;
}

async fn scenario_d_stuck_messages(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::scenario_d_stuck_messages(w.messages.clone(), w.message_fx()).await;
}

async fn scenario_d_operator_operations(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::scenario_d_operator_operations(w.failed.clone(), w.message_fx()).await;
}

async fn message_status_counts(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::status_counts(w.messages.clone(), w.message_fx()).await;
}

// ---------------------------------------------------------------------------------------------
// More, on every backend
// ---------------------------------------------------------------------------------------------

fn now() -> DateTime<Utc> {
    conformance::now()
}

/// `'pending'`, `'Pending'`, `'PENDING'` and `'pending '` are four different values: counts,
/// reads and maintenance touch only the exact one, also on MariaDB's case-insensitive,
/// space-padding collation.
async fn text_compares_exactly(be: &Backend<'_>) {
    let w = World::new(be).await;
    let orders = conformance::orders();
    let statuses = ["pending", "Pending", "PENDING", "pending ", "processing"];
    let rows: Vec<Row> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| {
            orders
                .row([
                    ("id", Value::Int(i as i64 + 1)),
                    ("processing_status", (*s).into()),
                    ("total_cents", Value::Null),
                ])
                .unwrap()
        })
        .collect();
    w.source_fx().reset_table(&orders, &rows).await.unwrap();
    let pending = conformance::pending_orders().predicate;
    assert_eq!(
        w.source.count(&orders, &pending, now()).await.unwrap(),
        2,
        "{}: pending orders = exactly 'pending' or 'processing'",
        be.name()
    );
    let eq = Predicate::eq("processing_status", "pending");
    let got = w
        .source
        .read_matching(&orders, &eq, now(), None, 10)
        .await
        .unwrap();
    assert_eq!(got, vec![rows[0].clone()], "{}", be.name());
    let ne = Predicate::ne("processing_status", "pending");
    assert_eq!(w.source.count(&orders, &ne, now()).await.unwrap(), 4);
    let rule = Maintenance::new("normalised", Predicate::eq("processing_status", "Pending"))
        .set("total_cents", SetValue::Int(7));
    assert_eq!(
        w.source
            .apply_maintenance(&orders, &rule, now())
            .await
            .unwrap(),
        1,
        "{}",
        be.name()
    );
    let after = w.source_fx().table_rows(&orders).await.unwrap();
    let touched: Vec<i64> = after
        .iter()
        .filter(|r| r.get("total_cents") == &Value::Int(7))
        .map(|r| match r.key() {
            Key::Int(i) => *i,
            Key::Text(_) => unreachable!(),
        })
        .collect();
    assert_eq!(
        touched,
        vec![2],
        "{}: only 'Pending' was touched",
        be.name()
    );

    // entity lookups compare keys exactly too
    let (res, _) = conformance::scenario_b_data();
    w.source_fx()
        .reset_table(&conformance::reservations(), &res[..3])
        .await
        .unwrap();
    let found = w
        .entities
        .get_many(&[
            Key::from("RES-001"),
            Key::from("res-002"),
            Key::from("res-002 "),
        ])
        .await
        .unwrap();
    let keys: Vec<&Key> = found.iter().map(Row::key).collect();
    assert_eq!(keys, vec![&Key::from("res-002")], "{}", be.name());
}

/// Two instances release the same stuck messages at once: every message is released exactly
/// once (the counts add up to the number of stuck messages) and ends pending.
async fn concurrent_release_stuck_releases_each_message_once(be: &Backend<'_>) {
    let w = World::new(be).await;
    let n = 1500_i64;
    let stuck: Vec<Message> = (1..=n)
        .map(|i| Message {
            status: MessageStatus::Processing,
            session: Some(if i % 2 == 0 { "primary" } else { "secondary" }.into()),
            attempts: 1,
            last_attempt_at: Some(now() - TimeDelta::hours(1)),
            ..Message::pending(i)
        })
        .collect();
    w.message_fx().reset_messages(&stuck).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let step = MessageRecovery::new("message-recovery", w.messages.clone())
            .with_settings(
                RecoverySettings::new()
                    .batch_size(40)
                    .archive_after_days(None),
            )
            .unwrap();
        tasks.push(tokio::spawn(async move {
            step.reconcile(&RunContext::new(now())).await.unwrap()
        }));
    }
    let mut released = 0;
    for t in tasks {
        released += t.await.unwrap().get("stuck_released").unwrap();
    }
    assert_eq!(
        released,
        n as u64,
        "{}: released across two instances",
        be.name()
    );
    let after = w.message_fx().all_messages().await.unwrap();
    assert_eq!(after.len(), n as usize);
    assert!(
        after
            .iter()
            .all(|m| m.status == MessageStatus::Pending && m.session.is_none() && m.attempts == 1),
        "{}",
        be.name()
    );
}

/// Keys of the wrong type and malformed jobs are clear errors that change nothing.
async fn bad_keys_and_jobs_are_errors(be: &Backend<'_>) {
    let w = World::new(be).await;
    let sessions = conformance::user_sessions();
    w.source_fx()
        .reset_table(&sessions, &conformance::user_session_rows())
        .await
        .unwrap();
    let before = w.source_fx().table_rows(&sessions).await.unwrap();
    // an integer key where the table's keys are text
    let r = w
        .source
        .read_matching(&sessions, &Predicate::All, now(), Some(Key::Int(5)), 10)
        .await;
    if !matches!(be, Backend::Memory) {
        let e = r.unwrap_err();
        assert!(
            matches!(&e, QError::TypeMismatch { column, .. } if column == "phone"),
            "{}: {e}",
            be.name()
        );
        let e = w.entities.get_many(&[Key::Int(1)]).await.unwrap_err();
        assert!(matches!(e, QError::TypeMismatch { .. }), "{e}");
        let e = w
            .failed
            .retry_failed(&[Key::from("7")], now())
            .await
            .unwrap_err();
        assert!(matches!(e, QError::TypeMismatch { .. }), "{e}");
    }
    // a maintenance rule with no assignment
    let e = w
        .source
        .apply_maintenance(&sessions, &Maintenance::new("x", Predicate::All), now())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("assigns no column"), "{e}");
    assert_eq!(w.source_fx().table_rows(&sessions).await.unwrap(), before);

    // a job the queue cannot hold: refused, nothing enqueued
    w.queue_fx().reset_jobs(&[], &[]).await.unwrap();
    let job = |id: &str| DesiredJob {
        id: id.into(),
        kind: "generatePin".into(),
        entity_key: Key::from("res-001"),
        run_at: now(),
        payload: serde_json::json!({"lockId": "lock-1"}),
    };
    if !matches!(be, Backend::Memory) {
        let long = "x".repeat(300);
        let e = w
            .queue
            .enqueue(&[job("gen-ok"), job(&long)])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        assert!(w.queue_fx().waiting_jobs().await.unwrap().is_empty());
    }
    // enqueue is idempotent
    assert_eq!(
        w.queue
            .enqueue(&[job("gen-a"), job("gen-b")])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        w.queue
            .enqueue(&[job("gen-a"), job("gen-c")])
            .await
            .unwrap(),
        1
    );
    assert_eq!(w.queue_fx().waiting_jobs().await.unwrap().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// SQL only
// ---------------------------------------------------------------------------------------------

/// `verify()` of each store names what is missing.
async fn verify_names_what_is_missing(t: &TestDb) {
    let store = t.db.source_store();
    let e = store
        .verify(&conformance::user_sessions())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("table user_sessions does not exist"),
        "{e}"
    );
    let w = World::new(&Backend::Sql(t)).await;
    w.source_fx()
        .reset_table(&conformance::user_sessions(), &[])
        .await
        .unwrap();
    store.verify(&conformance::user_sessions()).await.unwrap();
    let more = TableMapping::builder("user_sessions", "phone", KeyType::Text)
        .column("contact_status", ColumnType::Text)
        .column("opted_out", ColumnType::Boolean)
        .column("region", ColumnType::Text)
        .build()
        .unwrap();
    let e = store.verify(&more).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("table user_sessions has no column(s) opted_out, region"),
        "{e}"
    );
    let e = store.entities(more).verify().await.unwrap_err().to_string();
    assert!(e.contains("opted_out"), "{e}");

    let e =
        t.db.message_store(
            MessageTable::builder(MESSAGES)
                .session("sender_session")
                .archived_at("archived_at")
                .build()
                .unwrap(),
        )
        .verify()
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("has no column(s) sender_session, archived_at"),
        "{e}"
    );
    let e =
        t.db.message_store(MessageTable::builder("outbox").build().unwrap())
            .verify()
            .await
            .unwrap_err();
    assert!(e.to_string().contains("table outbox does not exist"), "{e}");
    t.db.job_queue(QUEUE).unwrap().verify().await.unwrap();
    assert!(t.db.job_queue("").is_err());
    assert!(MessageTable::builder("m; DROP TABLE m").build().is_err());
    assert!(
        MessageTable::builder("m")
            .status_value(MessageStatus::Failed, "pending")
            .build()
            .is_err(),
        "two statuses stored as one value"
    );
}

/// The set-based orphan sweep agrees with the diff: scenario B's two orphans among 270 jobs,
/// on text keys, and orphans of an integer-keyed table; jobs without a key, with a key of the
/// other type, or running, are left alone. A dry run counts and changes nothing.
async fn orphan_sweep_removes_exactly_the_orphans(t: &TestDb) {
    let w = World::new(&Backend::Sql(t)).await;
    let queue: &SqlJobQueue = &t.db.job_queue(QUEUE).unwrap();
    let (rows, mut jobs) = conformance::scenario_b_data();
    let reservations = conformance::reservations();
    w.source_fx()
        .reset_table(&reservations, &rows)
        .await
        .unwrap();
    let odd = |id: &str, key: Value| QueuedJob {
        id: id.into(),
        kind: "generatePin".into(),
        entity_key: key,
        run_at: now(),
    };
    jobs.push(odd("gen-no-key", Value::Null));
    jobs.push(odd("gen-int-key", Value::Int(999)));
    let running = vec![odd("gen-running", "res-404".into())];
    w.queue_fx().reset_jobs(&jobs, &running).await.unwrap();

    let keyed = jobs.iter().filter(|j| !j.entity_key.is_null()).count() as u64;
    let dry = queue.sweep_orphans(&reservations, 50, true).await.unwrap();
    assert_eq!((dry.checked, dry.orphaned), (keyed, 2), "{dry:?}");
    assert!(
        (2..=keyed.div_ceil(50)).contains(&dry.batches),
        "keyset batches of about 50: {dry:?}"
    );
    assert_eq!(w.queue_fx().waiting_jobs().await.unwrap().len(), 272);
    let swept = queue.sweep_orphans(&reservations, 50, false).await.unwrap();
    assert_eq!(swept.orphaned, 2, "{swept:?}");
    let after = w.queue_fx().waiting_jobs().await.unwrap();
    assert_eq!(after.len(), 270);
    assert!(
        after
            .iter()
            .all(|j| j.id != "gen-res-149" && j.id != "gen-res-150")
    );
    assert_eq!(
        queue
            .sweep_orphans(&reservations, 50, false)
            .await
            .unwrap()
            .orphaned,
        0
    );
    assert_eq!(
        queue.existing(&["gen-running".into()]).await.unwrap(),
        vec!["gen-running".to_owned()],
        "a running job is never swept"
    );

    // integer entity keys
    let orders = conformance::orders();
    w.source_fx()
        .reset_table(&orders, &conformance::order_rows())
        .await
        .unwrap();
    let int_jobs: Vec<QueuedJob> = [1, 2, 6, 7, 99]
        .iter()
        .map(|k| odd(&format!("ship-{k}"), Value::Int(*k)))
        .chain([odd("ship-text", "3".into())])
        .collect();
    w.queue_fx().reset_jobs(&int_jobs, &[]).await.unwrap();
    let swept = queue.sweep_orphans(&orders, 2, false).await.unwrap();
    assert_eq!((swept.checked, swept.orphaned), (6, 2), "{swept:?}");
    let ids: Vec<String> = w
        .queue_fx()
        .waiting_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids, ["ship-1", "ship-2", "ship-6", "ship-text"]);
}

/// Maintenance runs in bounded, keyset batches: every matched row is counted once, rows that
/// already hold the assigned values included (MariaDB counts them only as *matched*).
async fn maintenance_runs_in_keyset_batches(t: &TestDb) {
    let w = World::new(&Backend::Sql(t)).await;
    let orders = conformance::orders();
    let rows: Vec<Row> = (1..=2345)
        .map(|i| {
            orders
                .row([
                    ("id", Value::Int(i)),
                    (
                        "processing_status",
                        if i % 3 == 0 { "pending" } else { "sent" }.into(),
                    ),
                    ("total_cents", Value::Int(if i % 2 == 0 { 0 } else { i })),
                ])
                .unwrap()
        })
        .collect();
    w.source_fx().reset_table(&orders, &rows).await.unwrap();
    let store: SqlSourceStore = t.db.source_store().maintenance_batch(100);
    let rule = Maintenance::new("zeroed", Predicate::eq("processing_status", "pending"))
        .set("total_cents", SetValue::Int(0));
    let want = rows.iter().filter(|r| rule.when.matches(r, now())).count() as u64;
    assert_eq!(
        store
            .apply_maintenance(&orders, &rule, now())
            .await
            .unwrap(),
        want
    );
    assert_eq!(
        store
            .apply_maintenance(&orders, &rule, now())
            .await
            .unwrap(),
        want,
        "matched again, although nothing changes"
    );
    let after = w.source_fx().table_rows(&orders).await.unwrap();
    let mut expected = rows.clone();
    for r in &mut expected {
        rule.apply(r, now());
    }
    assert_eq!(after, expected);
}

/// A host worker's states: running and finished jobs are not listed, not removed, and count
/// as existing.
async fn job_states_guard_removal(t: &TestDb) {
    let w = World::new(&Backend::Sql(t)).await;
    let queue = t.db.job_queue(QUEUE).unwrap();
    let other = t.db.job_queue("other-queue").unwrap();
    let (_, jobs) = conformance::scenario_b_data();
    w.queue_fx().reset_jobs(&jobs[..4], &[]).await.unwrap();
    let ids: Vec<String> = jobs[..4].iter().map(|j| j.id.clone()).collect();
    assert_eq!(
        queue.set_state(&ids[..2], JobState::Running).await.unwrap(),
        2
    );
    assert_eq!(
        queue
            .set_state(&ids[1..2], JobState::Finished)
            .await
            .unwrap(),
        1
    );
    assert_eq!(queue.remove(&ids).await.unwrap(), 2, "only waiting jobs");
    assert_eq!(queue.existing(&ids).await.unwrap(), ids[..2].to_vec());
    assert!(queue.page(None, 10).await.unwrap().is_empty());
    assert!(
        other.existing(&ids).await.unwrap().is_empty(),
        "queues are apart"
    );
}

/// Like `conformance!`, for the cases that only make sense on SQL.
macro_rules! sql_conformance {
    ($($case:ident),* $(,)?) => {
        mod sql_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let t = crate::common::sqlite().await;
                    super::$case(&t).await;
                    t.finish().await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod sql_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(t) = crate::common::postgres().await else { return };
                    super::$case(&t).await;
                    t.finish().await;
                }
            )*
        }
        #[cfg(feature = "mysql")]
        mod sql_mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(t) = crate::common::mysql().await else { return };
                    super::$case(&t).await;
                    t.finish().await;
                }
            )*
        }
    };
}

crate::conformance!(
    scenario_a_user_sessions,
    scenario_a_dry_run,
    predicates_match_the_reference_evaluator,
    keyset_pagination,
    bad_predicates_change_nothing,
    maintenance_counts_matched_rows,
    scenario_b_orphans,
    drift_obsolete_and_running_jobs,
    queued_job_without_entity_key,
    queued_job_with_wrong_key_type,
    scenario_d_stuck_messages,
    scenario_d_operator_operations,
    message_status_counts,
    text_compares_exactly,
    concurrent_release_stuck_releases_each_message_once,
    bad_keys_and_jobs_are_errors,
);

sql_conformance!(
    verify_names_what_is_missing,
    orphan_sweep_removes_exactly_the_orphans,
    maintenance_runs_in_keyset_batches,
    job_states_guard_removal,
);
