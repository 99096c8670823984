//! queue-rehydrate's conformance suite (written once, in the core crate) against memory,
//! SQLite, PostgreSQL and MariaDB, plus the SQL-only properties: exact text on a
//! case-insensitive collation, concurrent release, the set-based orphan sweep, `verify()`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use queue_rehydrate::conformance::{
    self, JobQueueFixture, MemoryHarness, MessageFixture, SourceFixture,
};
use queue_rehydrate::memory::MemoryOrphanSweeper;
use queue_rehydrate::{
    ColumnType, DesiredJob, EntitySource, Error as QError, FailedMessageStore, JobQueue, Key,
    KeyType, Maintenance, Message, MessageRecovery, MessageStatus, MessageStore, OrphanSweeper,
    Predicate, QueuedJob, RecoverySettings, Result as QResult, Row, SetValue, SourceStore,
    TableMapping, Value,
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
    /// Orphans of `queue` against `entities` (the reservations), swept in the store.
    sweeper: Arc<dyn OrphanSweeper>,
    fx: Fx<'a>,
}

impl<'a> World<'a> {
    async fn new(be: &Backend<'a>) -> World<'a> {
        match be {
            Backend::Memory => {
                let h = MemoryHarness::new();
                let entities = h.reservations();
                World {
                    source: Arc::new(h.source.clone()),
                    queue: h.queue.clone(),
                    sweeper: Arc::new(MemoryOrphanSweeper::new(h.queue.clone(), entities.clone())),
                    entities,
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
                    sweeper: Arc::new(queue.orphan_sweeper(conformance::reservations()).unwrap()),
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

async fn scenario_b_with_orphan_sweeper(be: &Backend<'_>) {
    let w = World::new(be).await;
    conformance::scenario_b_with_orphan_sweeper(
        w.queue.clone(),
        w.queue_fx(),
        w.entities.clone(),
        w.sweeper.clone(),
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

/// Keys of the wrong type and malformed jobs are clear errors that change nothing — on every
/// backend, memory included: every table and queue is read back and compared.
async fn bad_keys_and_jobs_are_errors(be: &Backend<'_>) {
    let w = World::new(be).await;
    let name = be.name();
    let sessions = conformance::user_sessions();
    w.source_fx()
        .reset_table(&sessions, &conformance::user_session_rows())
        .await
        .unwrap();
    let (res, jobs) = conformance::scenario_b_data();
    let reservations = conformance::reservations();
    w.source_fx()
        .reset_table(&reservations, &res[..5])
        .await
        .unwrap();
    w.queue_fx().reset_jobs(&jobs[..6], &[]).await.unwrap();
    let messages = conformance::scenario_d_messages();
    w.message_fx().reset_messages(&messages).await.unwrap();
    let before_sessions = w.source_fx().table_rows(&sessions).await.unwrap();
    let before_res = w.source_fx().table_rows(&reservations).await.unwrap();
    let before_jobs = w.queue_fx().waiting_jobs().await.unwrap();

    let mismatch = |what: &str, r: QResult<u64>, column: &str| match r {
        Err(QError::TypeMismatch { column: c, .. }) if c == column => {}
        other => panic!("{name}: {what}: expected a type mismatch on `{column}`, got {other:?}"),
    };
    // an integer key where the table's keys are text
    let r = w
        .source
        .read_matching(&sessions, &Predicate::All, now(), Some(Key::Int(5)), 10)
        .await
        .map(|rows| rows.len() as u64);
    mismatch("read_matching after an integer key", r, "phone");
    let r = w
        .entities
        .get_many(&[Key::from("res-001"), Key::Int(1)])
        .await
        .map(|rows| rows.len() as u64);
    mismatch("get_many with an integer key", r, "id");
    let r = w
        .entities
        .page(Some(Key::Int(1)), 10)
        .await
        .map(|rows| rows.len() as u64);
    mismatch("entity page after an integer key", r, "id");
    // a text id where message ids are integers: no operator operation touches anything
    let (five, seven) = (Key::Int(5), Key::from("7"));
    mismatch(
        "retry_failed",
        w.failed
            .retry_failed(&[five.clone(), seven.clone()], now())
            .await,
        "id",
    );
    mismatch(
        "delete_failed",
        w.failed.delete_failed(&[five.clone(), seven.clone()]).await,
        "id",
    );
    mismatch(
        "archive_failed",
        w.failed.archive_failed(&[five, seven.clone()], now()).await,
        "id",
    );
    let r = w
        .failed
        .list_failed(Some(seven), 10)
        .await
        .map(|m| m.len() as u64);
    mismatch("list_failed after a text id", r, "id");
    assert_eq!(
        w.message_fx().all_messages().await.unwrap(),
        messages,
        "{name}: a refused operator operation changed messages"
    );

    // a maintenance rule with no assignment
    let e = w
        .source
        .apply_maintenance(&sessions, &Maintenance::new("x", Predicate::All), now())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("assigns no column"), "{name}: {e}");
    assert_eq!(
        w.source_fx().table_rows(&sessions).await.unwrap(),
        before_sessions,
        "{name}"
    );

    // a job no queue can hold (empty id or kind): the whole batch is refused
    let job = |id: &str, kind: &str| DesiredJob {
        id: id.into(),
        kind: kind.into(),
        entity_key: Key::from("res-001"),
        run_at: now(),
        payload: serde_json::json!({"lockId": "lock-1"}),
    };
    for bad in [job("", "generatePin"), job("gen-x", "")] {
        let e = w
            .queue
            .enqueue(&[job("gen-ok", "generatePin"), bad])
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("non-empty id and kind"),
            "{name}: {e}"
        );
    }
    assert_eq!(
        w.queue_fx().waiting_jobs().await.unwrap(),
        before_jobs,
        "{name}: a refused enqueue changed the queue"
    );
    assert_eq!(
        w.source_fx().table_rows(&reservations).await.unwrap(),
        before_res,
        "{name}"
    );

    // enqueue is idempotent
    w.queue_fx().reset_jobs(&[], &[]).await.unwrap();
    let ok = |id: &str| job(id, "generatePin");
    assert_eq!(
        w.queue.enqueue(&[ok("gen-a"), ok("gen-b")]).await.unwrap(),
        2
    );
    assert_eq!(
        w.queue.enqueue(&[ok("gen-a"), ok("gen-c")]).await.unwrap(),
        1
    );
    assert_eq!(w.queue_fx().waiting_jobs().await.unwrap().len(), 3);
}

/// A bad predicate or a bad queued job makes the *reconcilers* report a clear error and change
/// nothing: the rebuild refuses to be built (no table touched, nothing pushed); the diff
/// reports a job without an entity key, or with a key of the wrong type, and leaves that job
/// — and, in a queue holding nothing else, everything — as it was.
async fn bad_inputs_leave_every_table_unchanged(be: &Backend<'_>) {
    use queue_rehydrate::memory::MemoryDerivedQueue;
    use queue_rehydrate::{DiffSettings, QueueDiffReconciler, RehydrateReconciler};
    let w = World::new(be).await;
    let name = be.name();
    let sessions = conformance::user_sessions();
    w.source_fx()
        .reset_table(&sessions, &conformance::user_session_rows())
        .await
        .unwrap();
    let before = w.source_fx().table_rows(&sessions).await.unwrap();
    let bad = [
        (Predicate::eq("contact_state", "ACTIVE"), "`contact_state`"),
        (
            Predicate::is_in("contact_status", Vec::<Value>::new()),
            "contact_status",
        ),
        (
            Predicate::lt("follow_up_attempts", "3"),
            "follow_up_attempts",
        ),
    ];
    for (p, says) in bad {
        let derived = Arc::new(MemoryDerivedQueue::new());
        let built = RehydrateReconciler::builder("q", w.source.clone(), sessions.clone())
            .maintenance(conformance::clear_expired_cooldowns())
            .candidates(p.clone(), derived.clone())
            .build();
        let e = built.expect_err("a bad predicate must be refused");
        assert!(e.to_string().contains(says), "{name}: {p:?}: {e}");
        // and a maintenance rule with the bad predicate, run directly
        let rule = Maintenance::new("x", p.clone()).set("follow_up_attempts", SetValue::Int(0));
        let e = w
            .source
            .apply_maintenance(&sessions, &rule, now())
            .await
            .expect_err("must refuse");
        assert!(e.to_string().contains(says), "{name}: {p:?}: {e}");
        assert_eq!(
            w.source_fx().table_rows(&sessions).await.unwrap(),
            before,
            "{name}: {p:?} changed user_sessions"
        );
    }

    // queued jobs that cannot be judged, alone in the queue: reported, nothing changes
    let reservations = conformance::reservations();
    let rows = vec![conformance::reservation(1)];
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
    let jobs = vec![
        odd("gen-int-key", Value::Int(1)),
        odd("gen-no-key", Value::Null),
    ];
    w.queue_fx().reset_jobs(&jobs, &[]).await.unwrap();
    let plan: Arc<dyn queue_rehydrate::JobPlan> = Arc::new(conformance::pin_plan);
    let step = QueueDiffReconciler::new("pin-jobs", w.queue.clone(), w.entities.clone(), plan)
        .with_settings(DiffSettings::new().batch_size(10).enqueue_missing(false))
        .unwrap();
    let report = step.reconcile(&RunContext::new(now())).await.unwrap();
    let errors: Vec<(String, String)> = report
        .item_errors()
        .iter()
        .map(|e| (e.key.clone(), e.reason.clone()))
        .collect();
    assert_eq!(errors.len(), 2, "{name}: {errors:?}");
    assert_eq!(errors[0].0, "job gen-int-key");
    assert!(
        errors[0].1.contains("is integer, but keys are text"),
        "{name}: {errors:?}"
    );
    assert_eq!(errors[1].0, "job gen-no-key");
    assert!(errors[1].1.contains("no entity key"), "{name}: {errors:?}");
    for c in ["orphaned", "obsolete", "rescheduled", "enqueued"] {
        assert_eq!(report.get(c), Some(0), "{name}: {c}: {report:?}");
    }
    assert_eq!(w.queue_fx().waiting_jobs().await.unwrap(), jobs, "{name}");
    assert_eq!(
        w.source_fx().table_rows(&reservations).await.unwrap(),
        rows,
        "{name}"
    );
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
    // what the sweep skipped, as its OrphanSweeper lists it: the text-typed key
    let unjudged = queue
        .orphan_sweeper(orders)
        .unwrap()
        .unjudged(None, 10)
        .await
        .unwrap()
        .expect("the SQL sweeper lists the jobs it skips");
    let ids: Vec<&str> = unjudged.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["ship-text"]);
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

/// Two `QueueDiffReconciler`s over the same SQL queue at once (two host instances starting
/// together): every orphaned or obsolete job is removed once, every drifted job moved once,
/// every missing job enqueued once — the counters of both runs add up to exactly what one run
/// would do — and the queue ends as the desired set. Three rounds with fresh data and pages
/// of different sizes so the two runs interleave differently; in the second round both use
/// the set-based orphan sweep.
async fn concurrent_diffs_never_double_count(t: &TestDb) {
    use queue_rehydrate::{DiffSettings, JobPlan, QueueDiffReconciler};
    use std::collections::{BTreeSet, HashMap};
    let w = World::new(&Backend::Sql(t)).await;
    let name = d(t).name();
    let reservations = conformance::reservations();
    for round in 0..3_u32 {
        // 600 reservations exist; 601–640 were deleted (their jobs are orphans); every
        // 50th from 7 is cancelled (its jobs are obsolete); gen jobs of every 10th drifted by
        // 3 h; rev jobs only for the first 400 (the rest are missing)
        let rows: Vec<Row> = (1..=600)
            .map(|n| {
                let mut r = conformance::reservation(n);
                if n % 50 == 7 {
                    r.set("status", "cancelled".into());
                }
                r
            })
            .collect();
        let mut jobs = Vec::new();
        for n in 1..=640 {
            let confirmed = conformance::reservation(n);
            let plan = conformance::pin_plan(&confirmed, now()).unwrap();
            let mut gen_job = conformance::queued(&plan[0]);
            if n % 10 == 0 {
                gen_job.run_at += TimeDelta::hours(3);
            }
            jobs.push(gen_job);
            if n <= 400 || n > 600 {
                jobs.push(conformance::queued(&plan[1]));
            }
        }
        // what one run must do
        let wanted: HashMap<String, DesiredJob> = rows
            .iter()
            .flat_map(|r| conformance::pin_plan(r, now()).unwrap())
            .map(|d| (d.id.clone(), d))
            .collect();
        let exists: BTreeSet<&Key> = rows.iter().map(Row::key).collect();
        let key_of = |j: &QueuedJob| Key::from_value(&j.entity_key, KeyType::Text).unwrap();
        let orphaned = jobs.iter().filter(|j| !exists.contains(&key_of(j))).count() as u64;
        let obsolete = jobs
            .iter()
            .filter(|j| exists.contains(&key_of(j)) && !wanted.contains_key(&j.id))
            .count() as u64;
        let rescheduled = jobs
            .iter()
            .filter(|j| wanted.get(&j.id).is_some_and(|d| d.run_at != j.run_at))
            .count() as u64;
        let queued_ids: BTreeSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        let enqueued = wanted
            .keys()
            .filter(|id| !queued_ids.contains(id.as_str()))
            .count() as u64;
        assert_eq!(
            (orphaned, obsolete, rescheduled, enqueued),
            (80, 20, 60, 196),
            "the fixture"
        );
        w.source_fx()
            .reset_table(&reservations, &rows)
            .await
            .unwrap();
        w.queue_fx().reset_jobs(&jobs, &[]).await.unwrap();

        let plan: Arc<dyn JobPlan> = Arc::new(conformance::pin_plan);
        let mut tasks = Vec::new();
        for batch in [37 + round as usize, 53 - round as usize] {
            // each instance with its own stores over the same tables, as two processes have
            let queue = Arc::new(t.db.job_queue(QUEUE).unwrap());
            let entities = Arc::new(t.db.source_store().entities(reservations.clone()));
            let mut step =
                QueueDiffReconciler::new("pin-jobs", queue.clone(), entities, plan.clone())
                    .with_settings(DiffSettings::new().batch_size(batch))
                    .unwrap();
            if round == 1 {
                // the set-based orphan sweep, twice at once
                step = step.with_orphan_sweeper(Arc::new(
                    queue.orphan_sweeper(reservations.clone()).unwrap(),
                ));
            }
            tasks.push(tokio::spawn(async move {
                step.reconcile(&RunContext::new(now())).await.unwrap()
            }));
        }
        let mut sum: BTreeMap<&str, u64> = BTreeMap::new();
        for task in tasks {
            let report = task.await.unwrap();
            assert_eq!(report.item_error_count(), 0, "{name}: {report:?}");
            for c in ["orphaned", "obsolete", "rescheduled", "enqueued"] {
                *sum.entry(c).or_default() += report.get(c).unwrap();
            }
        }
        let want: BTreeMap<&str, u64> = [
            ("orphaned", orphaned),
            ("obsolete", obsolete),
            ("rescheduled", rescheduled),
            ("enqueued", enqueued),
        ]
        .into();
        assert_eq!(sum, want, "{name} round {round}: both runs together");

        let after = w.queue_fx().waiting_jobs().await.unwrap();
        let mut desired: Vec<QueuedJob> = wanted.values().map(conformance::queued).collect();
        desired.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            after, desired,
            "{name} round {round}: the queue is the desired set"
        );
    }
}

/// recon_queued_jobs' columns hold 191 characters: a longer id, kind or key is refused before
/// anything is written (the in-memory queue has no such limit, so this case is SQL-only).
async fn over_long_jobs_are_refused(t: &TestDb) {
    let w = World::new(&Backend::Sql(t)).await;
    let (_, jobs) = conformance::scenario_b_data();
    w.queue_fx().reset_jobs(&jobs[..3], &[]).await.unwrap();
    let before = w.queue_fx().waiting_jobs().await.unwrap();
    let job = |id: &str, key: &str| DesiredJob {
        id: id.into(),
        kind: "generatePin".into(),
        entity_key: Key::from(key),
        run_at: now(),
        payload: serde_json::Value::Null,
    };
    let long = "x".repeat(192);
    for bad in [job(&long, "res-001"), job("gen-long-key", &long)] {
        let e = w
            .queue
            .enqueue(&[job("gen-ok", "res-001"), bad])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("longer than 191"), "{e}");
    }
    assert_eq!(w.queue_fx().waiting_jobs().await.unwrap(), before);
    let fits = "y".repeat(191);
    assert_eq!(w.queue.enqueue(&[job(&fits, "res-001")]).await.unwrap(), 1);
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
    scenario_b_with_orphan_sweeper,
    drift_obsolete_and_running_jobs,
    queued_job_without_entity_key,
    queued_job_with_wrong_key_type,
    scenario_d_stuck_messages,
    scenario_d_operator_operations,
    message_status_counts,
    text_compares_exactly,
    concurrent_release_stuck_releases_each_message_once,
    bad_keys_and_jobs_are_errors,
    bad_inputs_leave_every_table_unchanged,
);

sql_conformance!(
    verify_names_what_is_missing,
    orphan_sweep_removes_exactly_the_orphans,
    maintenance_runs_in_keyset_batches,
    job_states_guard_removal,
    over_long_jobs_are_refused,
    concurrent_diffs_never_double_count,
);
