//! Lease repair on a 1,000,000-row job table with 100,000 expired leases and 20,000 orphans,
//! against two baselines measured in the same run:
//!
//! - `single_update`: the hand-written statement of seeds 000/001 — one `UPDATE … SET status =
//!   CASE WHEN attempts >= 3 …` over every stuck row (fast, but unguarded, no policy, no report);
//! - `per_row_loop`: select the stuck ids, then `SELECT` and `UPDATE` each job (the anti-pattern).
//!
//! Plus `clean_table`: a full `LeaseRepair` reconcile of the same 1,000,000 rows when nothing is
//! stuck (the cost of running it at every start).
//!
//! ```sh
//! cargo bench --bench lease_repair --features postgres,mysql
//! ```
//! SQLite always runs; PostgreSQL and MariaDB run when `RECON_TEST_POSTGRES_URL` /
//! `RECON_TEST_MYSQL_URL` are set (and the features are on). `RECON_BENCH_ROWS` changes the
//! table size (default 1,000,000; stuck rows stay 10 % expired + 2 % orphaned).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use lease_repair::{LeaseRepair, Settings, counters};
use recon_core::{Reconciler, RunContext};
use store_sqlx::{ConnectOptions, Db, Dialect, JobTable};
use tokio::runtime::Runtime;

const T: &str = "bench_jobs";

fn rows() -> i64 {
    std::env::var("RECON_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn now() -> DateTime<Utc> {
    "2024-01-24T12:00:00Z".parse().unwrap()
}

/// A timestamp literal as the bench table stores it.
fn ts(d: Dialect, s: &str) -> String {
    let t: DateTime<Utc> = s.parse().unwrap();
    match d {
        Dialect::Sqlite => format!(
            "'{}'",
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
        ),
        Dialect::Postgres => format!("'{}+00'", t.format("%Y-%m-%d %H:%M:%S")),
        _ => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S")),
    }
}

/// Run raw SQL (bench set-up only: values here are constants of the bench, not input).
async fn exec(db: &Db, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    let r = match db.dialect() {
        Dialect::Sqlite => sqlx::raw_sql(sql)
            .execute(db.as_sqlite().unwrap())
            .await
            .map(drop),
        #[cfg(feature = "postgres")]
        Dialect::Postgres => sqlx::raw_sql(sql)
            .execute(db.as_postgres().unwrap())
            .await
            .map(drop),
        #[cfg(feature = "mysql")]
        Dialect::MySql => sqlx::raw_sql(sql)
            .execute(db.as_mysql().unwrap())
            .await
            .map(drop),
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    };
    r.expect("bench SQL");
}

async fn setup(db: &Db) {
    let d = db.dialect();
    let n = rows();
    exec(db, &format!("DROP TABLE IF EXISTS {T}")).await;
    let (id, ts_t, txt) = match d {
        Dialect::Sqlite => ("INTEGER PRIMARY KEY", "TEXT", "TEXT"),
        Dialect::Postgres => ("BIGINT PRIMARY KEY", "TIMESTAMPTZ", "TEXT"),
        _ => ("BIGINT PRIMARY KEY", "DATETIME(6)", "VARCHAR(255)"),
    };
    exec(
        db,
        &format!(
            "CREATE TABLE {T} (id {id}, status {txt} NOT NULL, locked_by {txt}, locked_until {ts_t}, \
             attempts INTEGER NOT NULL, last_error {txt}, next_run_at {ts_t}, updated_at {ts_t})"
        ),
    )
    .await;
    let numbers = match d {
        Dialect::Postgres => format!("SELECT g AS x FROM generate_series(1, {n}) g"),
        Dialect::Sqlite => format!(
            "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {n}) SELECT x FROM g"
        ),
        _ => {
            let digit = "(SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL \
                         SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL \
                         SELECT 8 UNION ALL SELECT 9)";
            format!(
                "SELECT 1 + a.n + 10*b.n + 100*c.n + 1000*d.n + 10000*e.n + 100000*f.n + 1000000*g.n AS x \
                 FROM {digit} a, {digit} b, {digit} c, {digit} d, {digit} e, {digit} f, {digit} g \
                 WHERE 1 + a.n + 10*b.n + 100*c.n + 1000*d.n + 10000*e.n + 100000*f.n + 1000000*g.n <= {n}"
            )
        }
    };
    exec(
        db,
        &format!(
            "INSERT INTO {T} (id, status, attempts) SELECT x, CASE WHEN x % 4 = 0 THEN 'pending' ELSE 'done' END, \
             x % 4 FROM ({numbers}) AS numbers"
        ),
    )
    .await;
    // 0.1 % of the table is running with a live lease; it must be left alone every time.
    exec(
        db,
        &format!(
            "UPDATE {T} SET status = 'processing', locked_by = 'live', locked_until = {} WHERE id % 1000 = 7",
            ts(d, "2024-01-24T13:00:00Z")
        ),
    )
    .await;
    // The host's usual index, and the one recon's keyset batches want (see docs/lease-repair.md).
    exec(
        db,
        &format!("CREATE INDEX {T}_lease ON {T} (status, locked_until)"),
    )
    .await;
    exec(db, &format!("CREATE INDEX {T}_keyset ON {T} (status, id)")).await;
    if d == Dialect::Postgres {
        exec(db, &format!("ANALYZE {T}")).await;
    }
}

/// Put the stuck rows back: 10 % expired leases, 2 % orphans (not timed).
async fn make_stuck(db: &Db) {
    let d = db.dialect();
    exec(
        db,
        &format!(
            "UPDATE {T} SET status = 'processing', locked_by = 'worker-1', locked_until = {}, \
             last_error = NULL, next_run_at = NULL, updated_at = NULL WHERE id % 10 = 0",
            ts(d, "2024-01-24T11:00:00Z")
        ),
    )
    .await;
    exec(
        db,
        &format!(
            "UPDATE {T} SET status = 'processing', locked_by = NULL, locked_until = NULL, \
             last_error = NULL, next_run_at = NULL, updated_at = NULL WHERE id % 50 = 1"
        ),
    )
    .await;
}

/// How many stuck jobs are left (checked after every timed iteration, untimed).
async fn still_stuck(db: &Db) -> i64 {
    let n = ts(db.dialect(), "2024-01-24T12:00:00Z");
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {T} WHERE status = 'processing' AND (locked_until < {n} OR (locked_by IS NULL AND locked_until IS NULL))"
    ));
    match db.dialect() {
        Dialect::Sqlite => {
            sqlx::query_scalar(sql)
                .fetch_one(db.as_sqlite().unwrap())
                .await
        }
        #[cfg(feature = "postgres")]
        Dialect::Postgres => {
            sqlx::query_scalar(sql)
                .fetch_one(db.as_postgres().unwrap())
                .await
        }
        #[cfg(feature = "mysql")]
        Dialect::MySql => {
            sqlx::query_scalar(sql)
                .fetch_one(db.as_mysql().unwrap())
                .await
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    }
    .expect("count stuck jobs")
}

fn stuck_rows() -> i64 {
    rows() / 10 + rows() / 50
}

fn settings() -> Settings {
    Settings::new(retry_policy::presets::startup_jobs())
}

fn step(db: &Db) -> LeaseRepair<store_sqlx::SqlLeaseStore> {
    let map = JobTable::builder(T)
        .next_run_at("next_run_at")
        .updated_at("updated_at")
        .build()
        .unwrap();
    LeaseRepair::new(db.lease_store(map), settings())
        .unwrap()
        .batch_size(5000)
        .unwrap()
}

async fn single_update(db: &Db) {
    let d = db.dialect();
    let n = ts(d, "2024-01-24T12:00:00Z");
    exec(
        db,
        &format!(
            "UPDATE {T} SET status = CASE WHEN attempts >= 3 THEN 'failed' ELSE 'retry' END, \
             last_error = CASE WHEN locked_until IS NULL THEN 'Orphaned job recovered' \
             ELSE 'Lease expired - worker crashed or timed out' END, \
             locked_by = NULL, locked_until = NULL, updated_at = {n} \
             WHERE status = 'processing' AND (locked_until < {n} OR (locked_by IS NULL AND locked_until IS NULL))"
        ),
    )
    .await;
}

/// The anti-pattern: one SELECT and one UPDATE per stuck job.
async fn per_row_loop(db: &Db) {
    let d = db.dialect();
    let n = ts(d, "2024-01-24T12:00:00Z");
    let ids_sql = format!(
        "SELECT id FROM {T} WHERE status = 'processing' AND (locked_until < {n} OR (locked_by IS NULL AND locked_until IS NULL))"
    );
    macro_rules! run {
        ($pool:expr, $p:literal) => {{
            let pool = $pool;
            let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(ids_sql.clone()))
                .fetch_all(pool)
                .await
                .unwrap();
            let sel = format!("SELECT attempts FROM {T} WHERE id = {}", $p);
            let upd = format!(
                "UPDATE {T} SET status = {p}, last_error = {p}, locked_by = NULL, locked_until = NULL WHERE id = {p}",
                p = $p
            );
            for id in ids {
                let attempts: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(sel.clone()))
                    .bind(id)
                    .fetch_one(pool)
                    .await
                    .unwrap();
                let status = if attempts >= 3 { "failed" } else { "retry" };
                sqlx::query(sqlx::AssertSqlSafe(upd.clone()))
                    .bind(status)
                    .bind("recovered")
                    .bind(id)
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }};
    }
    match d {
        Dialect::Sqlite => run!(db.as_sqlite().unwrap(), "?"),
        #[cfg(feature = "postgres")]
        Dialect::Postgres => {
            // PostgreSQL numbers its placeholders
            let pool = db.as_postgres().unwrap();
            let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(ids_sql.clone()))
                .fetch_all(pool)
                .await
                .unwrap();
            for id in ids {
                let attempts: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT attempts FROM {T} WHERE id = $1"
                )))
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap();
                let status = if attempts >= 3 { "failed" } else { "retry" };
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE {T} SET status = $1, last_error = $2, locked_by = NULL, locked_until = NULL WHERE id = $3"
                )))
                .bind(status)
                .bind("recovered")
                .bind(id)
                .execute(pool)
                .await
                .unwrap();
            }
        }
        #[cfg(feature = "mysql")]
        Dialect::MySql => run!(db.as_mysql().unwrap(), "?"),
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    }
}

async fn connect(name: &str) -> Option<Db> {
    let url = match name {
        "sqlite" => {
            let path = std::env::temp_dir().join("recon-bench-lease.sqlite");
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
            }
            format!("sqlite:{}", path.display())
        }
        "postgres" if cfg!(feature = "postgres") => {
            std::env::var("RECON_TEST_POSTGRES_URL").ok()?
        }
        "mysql" if cfg!(feature = "mysql") => std::env::var("RECON_TEST_MYSQL_URL").ok()?,
        _ => return None,
    };
    let db = Db::connect_with(
        &url,
        ConnectOptions {
            max_connections: 4,
            ..ConnectOptions::default()
        },
    )
    .await
    .ok()?;
    Some(db)
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    for backend in ["sqlite", "postgres", "mysql"] {
        let Some(db) = rt.block_on(connect(backend)) else {
            eprintln!("lease_repair bench: {backend} skipped (no URL or feature)");
            continue;
        };
        let started = Instant::now();
        rt.block_on(setup(&db));
        eprintln!(
            "lease_repair bench: {backend}: {} rows, {} stuck, set up in {:.1?}",
            rows(),
            stuck_rows(),
            started.elapsed()
        );
        let db = Arc::new(db);
        let mut g = c.benchmark_group(format!("lease_repair/{backend}"));
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_secs(1));
        let ctx = RunContext::new(now());

        g.bench_function("lease_repair", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    rt.block_on(make_stuck(&db));
                    let s = step(&db);
                    let t0 = Instant::now();
                    let r = rt.block_on(s.reconcile(&ctx)).unwrap();
                    total += t0.elapsed();
                    let fixed = r.count(counters::LEASES_REPAIRED)
                        + r.count(counters::JOBS_REQUEUED)
                        + r.count(counters::JOBS_FAILED);
                    assert!(fixed >= stuck_rows() as u64, "repaired {fixed}");
                    assert_eq!(
                        rt.block_on(still_stuck(&db)),
                        0,
                        "lease repair left stuck jobs"
                    );
                }
                total
            })
        });
        g.bench_function("single_update", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    rt.block_on(make_stuck(&db));
                    let t0 = Instant::now();
                    rt.block_on(single_update(&db));
                    total += t0.elapsed();
                    assert_eq!(rt.block_on(still_stuck(&db)), 0);
                }
                total
            })
        });
        g.bench_function("per_row_loop", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    rt.block_on(make_stuck(&db));
                    let t0 = Instant::now();
                    rt.block_on(per_row_loop(&db));
                    total += t0.elapsed();
                    assert_eq!(rt.block_on(still_stuck(&db)), 0);
                }
                total
            })
        });
        g.bench_function("clean_table", |b| {
            rt.block_on(make_stuck(&db));
            rt.block_on(single_update(&db));
            let s = step(&db);
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let r = rt.block_on(s.reconcile(&ctx)).unwrap();
                    assert_eq!(r.count(counters::LEASES_REPAIRED), 0);
                }
                t0.elapsed()
            })
        });
        g.finish();
        rt.block_on(exec(&db, &format!("DROP TABLE {T}")));
        rt.block_on(db.close());
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
