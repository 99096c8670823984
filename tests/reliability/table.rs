//! A job table of `n` stuck jobs on any backend, an audit of the repair writes, and the check
//! that every job was repaired exactly once.

use chrono::{DateTime, Utc};
use store_sqlx::{Dialect, JobTable};

use crate::common::TestDb;

pub fn now() -> DateTime<Utc> {
    "2024-01-24T12:00:00Z".parse().unwrap()
}

pub fn map() -> JobTable {
    JobTable::builder("jobs")
        .next_run_at("next_run_at")
        .updated_at("updated_at")
        .failed_at("failed_at")
        .build()
        .unwrap()
}

/// One `i64` from a query (tests only).
pub async fn scalar(t: &TestDb, text: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(text.to_owned());
    let v: Option<i64> = match t.db.dialect() {
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
    .unwrap_or_else(|e| panic!("{e}: {text}"));
    v.unwrap_or(0)
}

/// `n` jobs, all stuck at `now()`: every fifth orphaned, the others with a lease that expired an
/// hour ago; `attempts = id % 3`.
pub async fn stuck_table(t: &TestDb, n: i64) {
    let d = t.db.dialect();
    let (id, ts, txt) = match d {
        Dialect::Sqlite => ("INTEGER PRIMARY KEY", "TEXT", "TEXT"),
        Dialect::Postgres => ("BIGINT PRIMARY KEY", "TIMESTAMPTZ", "TEXT"),
        _ => ("BIGINT PRIMARY KEY", "DATETIME(6)", "VARCHAR(255)"),
    };
    t.exec(&format!(
        "CREATE TABLE jobs (id {id}, status {txt} NOT NULL, locked_by {txt}, locked_until {ts}, \
         attempts INTEGER, last_error {txt}, next_run_at {ts}, updated_at {ts}, failed_at {ts})"
    ))
    .await;
    let numbers = match d {
        Dialect::Postgres => format!("SELECT g AS x FROM generate_series(1, {n}) g"),
        Dialect::Sqlite => format!(
            "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {n}) SELECT x FROM g"
        ),
        _ => {
            let digit = "(SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                         UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL \
                         SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
            format!(
                "SELECT 1 + a.n + 10*b.n + 100*c.n + 1000*d.n + 10000*e.n + 100000*f.n AS x \
                 FROM {digit} a, {digit} b, {digit} c, {digit} d, {digit} e, {digit} f \
                 WHERE 1 + a.n + 10*b.n + 100*c.n + 1000*d.n + 10000*e.n + 100000*f.n <= {n}"
            )
        }
    };
    let expired = match d {
        Dialect::Sqlite => "'2024-01-24T11:00:00+00:00'",
        Dialect::Postgres => "TIMESTAMPTZ '2024-01-24 11:00:00+00'",
        _ => "'2024-01-24 11:00:00'",
    };
    t.exec(&format!(
        "INSERT INTO jobs (id, status, locked_by, locked_until, attempts) \
         SELECT x, 'processing', CASE WHEN x % 5 = 0 THEN NULL ELSE 'worker' END, \
                CASE WHEN x % 5 = 0 THEN NULL ELSE {expired} END, x % 3 FROM ({numbers}) AS numbers"
    ))
    .await;
    t.exec("CREATE INDEX jobs_keyset ON jobs (status, id)")
        .await;
}

/// Log every write to a job row into `repair_audit`: any UPDATE, whatever it changes (so a
/// second write to a row already repaired is caught too, not only a second transition out of
/// `processing`). Call it after the table is filled.
pub async fn audit(t: &TestDb) {
    t.exec("CREATE TABLE repair_audit (job_id BIGINT NOT NULL)")
        .await;
    match t.db.dialect() {
        Dialect::Postgres => {
            t.exec(
                "CREATE FUNCTION audit_repair() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN INSERT INTO repair_audit (job_id) VALUES (NEW.id); RETURN NEW; END $$",
            )
            .await;
            t.exec(
                "CREATE TRIGGER jobs_audit AFTER UPDATE ON jobs FOR EACH ROW \
                 EXECUTE FUNCTION audit_repair()",
            )
            .await;
        }
        Dialect::MySql => {
            t.exec(
                "CREATE TRIGGER jobs_audit AFTER UPDATE ON jobs FOR EACH ROW \
                 INSERT INTO repair_audit (job_id) VALUES (NEW.id)",
            )
            .await;
        }
        Dialect::Sqlite => {
            t.exec(
                "CREATE TRIGGER jobs_audit AFTER UPDATE ON jobs FOR EACH ROW \
                 BEGIN INSERT INTO repair_audit (job_id) VALUES (NEW.id); END",
            )
            .await;
        }
    }
}

/// (jobs written more than once, distinct jobs written) according to the audit.
pub async fn audit_counts(t: &TestDb) -> (i64, i64) {
    let dup = scalar(
        t,
        "SELECT COUNT(*) FROM (SELECT job_id FROM repair_audit GROUP BY job_id HAVING COUNT(*) > 1) AS d",
    )
    .await;
    let distinct = scalar(t, "SELECT COUNT(DISTINCT job_id) FROM repair_audit").await;
    (dup, distinct)
}

/// Every one of the `n` jobs is present, out of `processing`, with its attempts counted exactly
/// once (the tests count the interrupted attempt: attempts = id % 3 + 1) and the state the rule
/// gives for that count (max 3 attempts).
pub async fn assert_each_repaired_once(t: &TestDb, n: i64) {
    let name = t.db.dialect().name();
    assert_eq!(
        scalar(t, "SELECT COUNT(*) FROM jobs").await,
        n,
        "{name}: jobs lost"
    );
    assert_eq!(
        scalar(t, "SELECT COUNT(*) FROM jobs WHERE status = 'processing'").await,
        0,
        "{name}: jobs still stuck"
    );
    assert_eq!(
        scalar(t, "SELECT COUNT(*) FROM jobs WHERE attempts <> id % 3 + 1").await,
        0,
        "{name}: an attempt counted twice or not at all"
    );
    assert_eq!(
        scalar(
            t,
            "SELECT COUNT(*) FROM jobs WHERE NOT ((attempts >= 3 AND status = 'failed') \
             OR (attempts < 3 AND status = 'retry'))"
        )
        .await,
        0,
        "{name}: a job in the wrong state"
    );
    assert_eq!(
        scalar(
            t,
            "SELECT COUNT(*) FROM jobs WHERE locked_by IS NOT NULL OR locked_until IS NOT NULL"
        )
        .await,
        0,
        "{name}: a lease left behind"
    );
    // every column of the repair written, none torn: a retry has its next run and no failure
    // time, a failure its failure time and no next run, both the message and updated_at
    for (what, filter) in [
        (
            "a retry without next_run_at",
            "status = 'retry' AND next_run_at IS NULL",
        ),
        (
            "a retry with failed_at",
            "status = 'retry' AND failed_at IS NOT NULL",
        ),
        (
            "a failure without failed_at",
            "status = 'failed' AND failed_at IS NULL",
        ),
        (
            "a failure with next_run_at",
            "status = 'failed' AND next_run_at IS NOT NULL",
        ),
        ("a job without last_error", "last_error IS NULL"),
        ("a job without updated_at", "updated_at IS NULL"),
        (
            "a job with the wrong message",
            "last_error <> CASE WHEN id % 5 = 0 THEN 'Orphaned job recovered' \
             ELSE 'Lease expired - worker crashed or timed out' END",
        ),
    ] {
        let sql = format!("SELECT COUNT(*) FROM jobs WHERE {filter}");
        assert_eq!(scalar(t, &sql).await, 0, "{name}: {what}");
    }
}
