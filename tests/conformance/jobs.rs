//! A job table on every backend: created, seeded and read back the same way for the memory
//! store and the SQL stores.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lease_repair::{JobKey, LeaseStore, MemoryLeaseStore, PruneStore, StoredJob};
use store_sqlx::{Dialect, JobTable, KeyKind, SqlLeaseStore, TimestampFormat};

use crate::Backend;
use crate::common::TestDb;

pub struct Jobs<'a> {
    pub lease: Arc<dyn LeaseStore>,
    pub prune: Arc<dyn PruneStore>,
    inner: Inner<'a>,
}

enum Inner<'a> {
    Memory(Arc<MemoryLeaseStore>),
    Sql {
        t: &'a TestDb,
        store: Box<SqlLeaseStore>,
        table: String,
    },
}

/// Options for the test table.
#[derive(Clone, Copy)]
pub struct Shape {
    pub key: KeyKind,
    pub sqlite_ts: TimestampFormat,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            key: KeyKind::Integer,
            sqlite_ts: TimestampFormat::Rfc3339,
        }
    }
}

pub fn ts_lit(d: Dialect, f: TimestampFormat, t: Option<DateTime<Utc>>) -> String {
    let Some(t) = t else { return "NULL".into() };
    match d {
        Dialect::Postgres => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f+00")),
        Dialect::MySql => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f")),
        Dialect::Sqlite => match f {
            TimestampFormat::Rfc3339 => {
                format!(
                    "'{}'",
                    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
                )
            }
            TimestampFormat::SqliteText => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.f")),
            TimestampFormat::UnixSeconds => t.timestamp().to_string(),
            TimestampFormat::UnixMillis => t.timestamp_millis().to_string(),
            _ => unreachable!(),
        },
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    }
}

fn text_lit(s: &Option<String>) -> String {
    match s {
        Some(s) => format!("'{}'", s.replace('\'', "''")),
        None => "NULL".into(),
    }
}

impl<'a> Jobs<'a> {
    pub async fn new(b: &Backend<'a>, table: &str, shape: Shape) -> Jobs<'a> {
        match b {
            Backend::Memory => {
                let m = Arc::new(MemoryLeaseStore::new());
                Jobs {
                    lease: m.clone(),
                    prune: m.clone(),
                    inner: Inner::Memory(m),
                }
            }
            Backend::Sql(t) => {
                let d = t.db.dialect();
                let id = match (d, shape.key) {
                    (Dialect::Postgres, KeyKind::Uuid) => "UUID PRIMARY KEY",
                    (Dialect::MySql, KeyKind::Text | KeyKind::Uuid) => "VARCHAR(64) PRIMARY KEY",
                    (_, KeyKind::Text | KeyKind::Uuid) => "TEXT PRIMARY KEY",
                    (Dialect::Sqlite, KeyKind::Integer) => "INTEGER PRIMARY KEY",
                    (_, KeyKind::Integer) => "BIGINT PRIMARY KEY",
                };
                let (ts, text) = match d {
                    Dialect::Postgres => ("TIMESTAMPTZ", "TEXT"),
                    Dialect::MySql => ("DATETIME(6)", "VARCHAR(255)"),
                    _ => match shape.sqlite_ts {
                        TimestampFormat::UnixSeconds | TimestampFormat::UnixMillis => {
                            ("INTEGER", "TEXT")
                        }
                        _ => ("TEXT", "TEXT"),
                    },
                };
                for archive in ["", "_archive"] {
                    t.exec(&format!(
                        "CREATE TABLE {table}{archive} (id {id}, status {text} NOT NULL, \
                         locked_by {text}, locked_until {ts}, attempts INTEGER, last_error {text}, \
                         next_run_at {ts}, updated_at {ts}, failed_at {ts})"
                    ))
                    .await;
                }
                t.exec(&format!(
                    "CREATE INDEX {table}_lease ON {table} (status, locked_until)"
                ))
                .await;
                let map = JobTable::builder(table)
                    .key_kind(shape.key)
                    .timestamps(shape.sqlite_ts)
                    .next_run_at("next_run_at")
                    .updated_at("updated_at")
                    .failed_at("failed_at")
                    .archive_table(&format!("{table}_archive"))
                    .build()
                    .unwrap();
                let store = t.db.lease_store(map);
                store.verify().await.expect("the test table verifies");
                let s = Arc::new(store.clone());
                let _ = shape;
                Jobs {
                    lease: s.clone(),
                    prune: s,
                    inner: Inner::Sql {
                        t,
                        store: Box::new(store),
                        table: table.into(),
                    },
                }
            }
        }
    }

    pub async fn insert(&self, jobs: &[StoredJob], shape: Shape) {
        match &self.inner {
            Inner::Memory(m) => m.insert(jobs.iter().cloned()),
            Inner::Sql { t, table, .. } => {
                let d = t.db.dialect();
                let f = shape.sqlite_ts;
                for chunk in jobs.chunks(500) {
                    let rows = chunk
                        .iter()
                        .map(|j| {
                            let id = match &j.row.key {
                                JobKey::Int(i) => i.to_string(),
                                JobKey::Text(s) => format!("'{s}'"),
                            };
                            format!(
                                "({id}, {}, {}, {}, {}, {}, {}, {}, {})",
                                text_lit(&Some(j.row.status.clone())),
                                text_lit(&j.row.lease_owner),
                                ts_lit(d, f, j.row.lease_expires_at),
                                j.row.attempts.map_or("NULL".into(), |a| a.to_string()),
                                text_lit(&j.last_error),
                                ts_lit(d, f, j.next_run_at),
                                ts_lit(d, f, j.updated_at),
                                ts_lit(d, f, j.failed_at),
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    t.exec(&format!(
                        "INSERT INTO {table} (id, status, locked_by, locked_until, attempts, \
                         last_error, next_run_at, updated_at, failed_at) VALUES {rows}"
                    ))
                    .await;
                }
            }
        }
    }

    /// A repair stopped before its write: the expired leases read at `now` (one batch of up
    /// to 100) and the repairs `settings` decide for them — so that a test can change a job
    /// between the read and the write.
    pub async fn read_expired_and_decide(
        &self,
        now: DateTime<Utc>,
        settings: &lease_repair::Settings,
    ) -> (Vec<lease_repair::JobRow>, Vec<lease_repair::Repair>) {
        use lease_repair::{Action, CandidateKind, CandidateQuery};
        let q = CandidateQuery {
            kind: CandidateKind::ExpiredLease,
            processing_state: "processing".into(),
            now,
            max_lease: None,
            known_states: vec![],
            after: None,
            limit: 100,
        };
        let rows = self.lease.read_candidates(q).await.unwrap();
        let repairs = rows
            .iter()
            .filter_map(|r| {
                match lease_repair::decide(r, CandidateKind::ExpiredLease, now, settings) {
                    Action::Repair { repair, .. } => Some(repair),
                    _ => None,
                }
            })
            .collect();
        (rows, repairs)
    }

    /// What a live worker does: renew its lease.
    pub async fn renew(&self, key: i64, until: DateTime<Utc>) {
        match &self.inner {
            Inner::Memory(m) => {
                assert!(m.update(&JobKey::Int(key), |j| j.row.lease_expires_at = Some(until)));
            }
            Inner::Sql { t, table, .. } => {
                t.exec(&format!(
                    "UPDATE {table} SET locked_until = {} WHERE id = {key}",
                    ts_lit(t.db.dialect(), TimestampFormat::Rfc3339, Some(until))
                ))
                .await
            }
        }
    }

    pub async fn all(&self) -> Vec<StoredJob> {
        self.read("").await
    }

    pub async fn archived(&self) -> Vec<StoredJob> {
        match &self.inner {
            Inner::Memory(m) => m.archived(),
            Inner::Sql { .. } => self.read("_archive").await,
        }
    }

    async fn read(&self, suffix: &str) -> Vec<StoredJob> {
        match &self.inner {
            Inner::Memory(m) => m.jobs(),
            Inner::Sql { t, table, store } => {
                let _ = store;
                read_sql(t, &format!("{table}{suffix}")).await
            }
        }
    }
}

async fn read_sql(t: &TestDb, table: &str) -> Vec<StoredJob> {
    type Row = (
        String,
        String,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<i64>,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let d = t.db.dialect();
    let (id, int) = match d {
        Dialect::MySql => ("CAST(id AS CHAR)", "CAST(attempts AS SIGNED)"),
        _ => ("CAST(id AS TEXT)", "CAST(attempts AS BIGINT)"),
    };
    let sql = format!(
        "SELECT {id}, status, locked_by, locked_until, {int}, last_error, next_run_at, updated_at, \
         failed_at FROM {table} ORDER BY id"
    );
    macro_rules! fetch {
        ($pool:expr) => {
            sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql.clone()))
                .fetch_all($pool)
                .await
                .expect("read back the job table")
        };
    }
    let rows: Vec<Row> = match d {
        Dialect::Sqlite => fetch!(t.db.as_sqlite().unwrap()),
        #[cfg(feature = "postgres")]
        Dialect::Postgres => fetch!(t.db.as_postgres().unwrap()),
        #[cfg(feature = "mysql")]
        Dialect::MySql => fetch!(t.db.as_mysql().unwrap()),
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    };
    rows.into_iter()
        .map(|r| {
            let key =
                r.0.parse::<i64>()
                    .map(JobKey::Int)
                    .unwrap_or(JobKey::Text(r.0));
            let mut j = StoredJob::new(key, &r.1, r.2.as_deref(), r.3, r.4);
            j.last_error = r.5;
            j.next_run_at = r.6;
            j.updated_at = r.7;
            j.failed_at = r.8;
            j
        })
        .collect()
}

/// Rows of `table` (tests only).
pub async fn count_rows(t: &TestDb, table: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
    match t.db.dialect() {
        Dialect::Sqlite => {
            sqlx::query_scalar(sql)
                .fetch_one(t.db.as_sqlite().unwrap())
                .await
        }
        #[cfg(feature = "postgres")]
        Dialect::Postgres => {
            sqlx::query_scalar(sql)
                .fetch_one(t.db.as_postgres().unwrap())
                .await
        }
        #[cfg(feature = "mysql")]
        Dialect::MySql => {
            sqlx::query_scalar(sql)
                .fetch_one(t.db.as_mysql().unwrap())
                .await
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    }
    .unwrap()
}

impl Jobs<'_> {
    /// (id, status, raw attempts as text) of every row — readable even when a row holds values
    /// the typed read refuses (tests of hostile data).
    pub async fn all_raw_status(&self) -> Vec<(String, String, Option<String>)> {
        let Inner::Sql { t, table, .. } = &self.inner else {
            unreachable!("memory rows are always well-typed")
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT CAST(id AS TEXT), status, CAST(attempts AS TEXT) FROM {table} ORDER BY id"
        ));
        sqlx::query_as(sql)
            .fetch_all(t.db.as_sqlite().expect("SQLite only"))
            .await
            .unwrap()
    }
}
