//! Lease repair on a 1,000,000-row job table with 100,000 expired leases and 20,000 orphans,
//! against two baselines measured in the same run:
//!
//! - `single_update`: the hand-written statement of seeds 000/001 — one `UPDATE … SET status =
//!   CASE WHEN attempts >= 3 …` over every stuck row (fast, but unguarded, no policy, no report);
//! - `per_row_loop`: select the stuck ids, then `SELECT` and `UPDATE` each job (the anti-pattern).
//!   It is timed on a **sample** (the first 2 % of the ids, 2,400 stuck jobs of a 1M-row table)
//!   and its full-table time is **extrapolated** per job; the summary labels it so.
//!
//! Plus `clean_table`: a full `LeaseRepair` reconcile of the same 1,000,000 rows when nothing is
//! stuck (the cost of running it at every start).
//!
//! `LeaseRepair` runs twice, both times with its default batch size:
//!
//! - `lease_repair_in_database`: scenario A's policy without jitter, the hand-written
//!   statement's own rule. The decision then depends only on the attempts count, so
//!   `LeaseRepair` applies it inside the database (`RepairPlan`), one guarded statement per
//!   batch — the like-for-like comparison with the single UPDATE;
//! - `lease_repair`: its default settings with the `startup_jobs` preset, whose jitter makes
//!   every job's retry time its own: read, decided and written back row by row in batches.
//!
//! Every timed iteration's
//! outcome is checked with exact equality, untimed: the counters (repaired, requeued, failed,
//! anomalies, skipped), the rows per status, and the 0.1 % of jobs with a live lease untouched.
//!
//! ```sh
//! cargo bench --bench lease_repair --features postgres,mysql
//! ```
//! SQLite always runs; PostgreSQL and MariaDB run when `RECON_TEST_POSTGRES_URL` /
//! `RECON_TEST_MYSQL_URL` are set (and the features are on). `RECON_BENCH_ROWS` changes the
//! table size (default 1,000,000; stuck rows stay 10 % expired + 2 % orphaned);
//! `RECON_BENCH_BACKENDS=postgres,mysql` runs only the listed backends; `RECON_BENCH_BATCH` and
//! `RECON_BENCH_PLAN_BATCH` override LeaseRepair's row-by-row and in-database batch sizes
//! (exploration only; the summary line says which); `RECON_BENCH_PAIRS` (default 10) sets how
//! many alternating pairs of the in-database repair and the single UPDATE run before the
//! groups (see `paired`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use lease_repair::{LeaseRepair, Settings, counters};
use recon_core::{Reconciler, RunContext};
use std::sync::Mutex;
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
/// Returns the rows affected.
async fn exec(db: &Db, sql: &str) -> u64 {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    let r = match db.dialect() {
        Dialect::Sqlite => sqlx::raw_sql(sql)
            .execute(db.as_sqlite().unwrap())
            .await
            .map(|r| r.rows_affected()),
        #[cfg(feature = "postgres")]
        Dialect::Postgres => sqlx::raw_sql(sql)
            .execute(db.as_postgres().unwrap())
            .await
            .map(|r| r.rows_affected()),
        #[cfg(feature = "mysql")]
        Dialect::MySql => sqlx::raw_sql(sql)
            .execute(db.as_mysql().unwrap())
            .await
            .map(|r| r.rows_affected()),
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    };
    r.expect("bench SQL")
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

/// Put the stuck rows back: 10 % expired leases, 2 % orphans (not timed). On PostgreSQL the
/// table is then vacuumed (no ANALYZE: the statistics stay those of the normal state, as on a
/// host after a crash), as autovacuum keeps a host's table; without it every iteration
/// leaves 240,000 more dead row versions behind for the next one's index walks.
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
    if d == Dialect::Postgres {
        exec(db, &format!("VACUUM {T}")).await;
    }
}

/// What a correct repair of the jobs with ids `1..=upto` must produce (the rules of
/// `setup`/`make_stuck`, with scenario A's `startup_jobs` policy: `attempts >= 3` → failed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Expect {
    /// Expired leases (`id % 10 = 0`), all of them.
    expired: u64,
    /// Of those, the ones that fail.
    expired_failed: u64,
    /// Orphans (`id % 50 = 1`), all of them.
    orphans: u64,
    /// Of those, the ones that fail.
    orphans_failed: u64,
    /// Live leases (`id % 1000 = 7`), never touched.
    live: u64,
}

impl Expect {
    fn upto(upto: i64) -> Self {
        let mut e = Self::default();
        for id in 1..=upto {
            let fails = id % 4 >= 3; // attempts = id % 4
            if id % 10 == 0 {
                e.expired += 1;
                e.expired_failed += u64::from(fails);
            } else if id % 50 == 1 {
                e.orphans += 1;
                e.orphans_failed += u64::from(fails);
            } else if id % 1000 == 7 {
                e.live += 1;
            }
        }
        e
    }

    fn stuck(&self) -> u64 {
        self.expired + self.orphans
    }

    fn failed(&self) -> u64 {
        self.expired_failed + self.orphans_failed
    }

    /// Rows per status after a repair: (retry, failed, live untouched, processing).
    fn census(&self) -> [i64; 4] {
        [
            (self.stuck() - self.failed()) as i64,
            self.failed() as i64,
            self.live as i64,
            self.live as i64,
        ]
    }
}

/// (retry, failed, live leases untouched, processing) among the ids up to `upto`; checked after
/// every timed iteration, untimed. "Untouched" means every column as `setup` wrote it.
async fn census(db: &Db, upto: i64) -> [i64; 4] {
    let live = ts(db.dialect(), "2024-01-24T13:00:00Z");
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(CASE WHEN status = 'retry' THEN 1 END), \
                COUNT(CASE WHEN status = 'failed' THEN 1 END), \
                COUNT(CASE WHEN status = 'processing' AND locked_by = 'live' AND locked_until = {live} \
                     AND last_error IS NULL AND next_run_at IS NULL AND updated_at IS NULL THEN 1 END), \
                COUNT(CASE WHEN status = 'processing' THEN 1 END) \
         FROM {T} WHERE id <= {upto}"
    ));
    let r: (i64, i64, i64, i64) = match db.dialect() {
        Dialect::Sqlite => sqlx::query_as(sql).fetch_one(db.as_sqlite().unwrap()).await,
        #[cfg(feature = "postgres")]
        Dialect::Postgres => {
            sqlx::query_as(sql)
                .fetch_one(db.as_postgres().unwrap())
                .await
        }
        #[cfg(feature = "mysql")]
        Dialect::MySql => sqlx::query_as(sql).fetch_one(db.as_mysql().unwrap()).await,
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    }
    .expect("census of the job table");
    [r.0, r.1, r.2, r.3]
}

fn settings() -> Settings {
    Settings::new(retry_policy::presets::startup_jobs())
}

/// Scenario A's policy without its jitter — the hand-written statement's rule (`attempts >= 3`
/// → failed) with the policy's 10 s / 20 s retry times: the decision then depends only on the
/// attempts count, and `LeaseRepair` applies it inside the database.
fn plain_settings() -> Settings {
    Settings::new(
        retry_policy::presets::startup_jobs()
            .to_builder()
            .jitter(retry_policy::Jitter::None)
            .build()
            .unwrap(),
    )
}

/// `LeaseRepair` as a host would configure it: default batch sizes (`RECON_BENCH_BATCH` and
/// `RECON_BENCH_PLAN_BATCH` override the row-by-row and the in-database batch size, for
/// exploring only: the documented figures use the defaults).
fn step(db: &Db, settings: Settings) -> LeaseRepair<store_sqlx::SqlLeaseStore> {
    let map = JobTable::builder(T)
        .next_run_at("next_run_at")
        .updated_at("updated_at")
        .build()
        .unwrap();
    let mut step = LeaseRepair::new(db.lease_store(map), settings).unwrap();
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    if let Some(n) = var("RECON_BENCH_BATCH") {
        step = step.batch_size(n).unwrap();
    }
    if let Some(n) = var("RECON_BENCH_PLAN_BATCH") {
        step = step.plan_batch_size(n).unwrap();
    }
    step
}

/// The hand-written statement of seeds 000/001; returns the rows it changed.
async fn single_update(db: &Db) -> u64 {
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
    .await
}

/// The per-row loop's sample: the first 2 % of the ids (2,400 stuck jobs of a 1M-row table),
/// so that a run stays seconds, not minutes; its full-table time is extrapolated per job.
fn sample_limit() -> i64 {
    rows() / 50
}

/// The anti-pattern: one SELECT and one UPDATE per stuck job (on the sample). Returns the
/// rows its UPDATEs changed.
async fn per_row_loop(db: &Db) -> u64 {
    let d = db.dialect();
    let n = ts(d, "2024-01-24T12:00:00Z");
    let ids_sql = format!(
        "SELECT id FROM {T} WHERE status = 'processing' AND (locked_until < {n} OR (locked_by IS NULL AND locked_until IS NULL)) AND id <= {}",
        sample_limit()
    );
    let (p1, p2, p3) = match d {
        Dialect::Postgres => ("$1", "$2", "$3"),
        _ => ("?", "?", "?"),
    };
    let sel = format!("SELECT attempts FROM {T} WHERE id = {p1}");
    let upd = format!(
        "UPDATE {T} SET status = {p1}, last_error = {p2}, locked_by = NULL, locked_until = NULL WHERE id = {p3}"
    );
    macro_rules! run {
        ($pool:expr) => {{
            let pool = $pool;
            let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(ids_sql.clone()))
                .fetch_all(pool)
                .await
                .unwrap();
            let mut changed = 0;
            for id in ids {
                let attempts: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(sel.clone()))
                    .bind(id)
                    .fetch_one(pool)
                    .await
                    .unwrap();
                let status = if attempts >= 3 { "failed" } else { "retry" };
                changed += sqlx::query(sqlx::AssertSqlSafe(upd.clone()))
                    .bind(status)
                    .bind("recovered")
                    .bind(id)
                    .execute(pool)
                    .await
                    .unwrap()
                    .rows_affected();
            }
            changed
        }};
    }
    match d {
        Dialect::Sqlite => run!(db.as_sqlite().unwrap()),
        #[cfg(feature = "postgres")]
        Dialect::Postgres => run!(db.as_postgres().unwrap()),
        #[cfg(feature = "mysql")]
        Dialect::MySql => run!(db.as_mysql().unwrap()),
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

/// One timed `LeaseRepair` run (`name` for messages) on freshly stuck rows, its counters and
/// rows checked untimed.
async fn timed_repair(
    db: &Db,
    ctx: &RunContext,
    settings: fn() -> Settings,
    all: &Expect,
    name: &str,
) -> Duration {
    let backend = db.dialect();
    make_stuck(db).await;
    let s = step(db, settings());
    let t0 = Instant::now();
    let r = s.reconcile(ctx).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(
        [
            r.count(counters::LEASES_REPAIRED),
            r.count(counters::JOBS_REQUEUED),
            r.count(counters::JOBS_FAILED),
            r.count(counters::ANOMALIES),
            r.count(counters::SKIPPED_CHANGED),
        ],
        [
            all.expired,
            all.orphans - all.orphans_failed,
            all.failed(),
            0,
            0
        ],
        "{backend:?}: {name} counters"
    );
    assert_eq!(
        census(db, rows()).await,
        all.census(),
        "{backend:?}: {name} rows (retry, failed, live untouched, processing)"
    );
    took
}

/// One timed single UPDATE on freshly stuck rows, its rows checked untimed.
async fn timed_single(db: &Db, all: &Expect) -> Duration {
    let backend = db.dialect();
    make_stuck(db).await;
    let t0 = Instant::now();
    let changed = single_update(db).await;
    let took = t0.elapsed();
    assert_eq!(changed, all.stuck(), "{backend:?}: single UPDATE rows");
    assert_eq!(
        census(db, rows()).await,
        all.census(),
        "{backend:?}: single UPDATE rows (retry, failed, live untouched, processing)"
    );
    took
}

/// `RECON_BENCH_PAIRS` (default 10, made even) pairs of the in-database repair and the single
/// UPDATE, each pair run back to back and the order flipped every pair: the ratio of each
/// pair, in the database ÷ single. The groups run each case's iterations one after
/// another, a minute or more apart, and a machine whose I/O drifts in between moves their
/// ratio (SQLite runs read 1.37–1.65× off the same build); a pair shares the machine's state.
/// What ran just before can matter too: with the order flipped every pair, each case follows
/// each case equally often, and the summary takes the pairs' geometric mean. They run before
/// the groups, on the table as set up: run after them, SQLite's single UPDATE took a third
/// longer in every pair it started (following the last pair's single UPDATE) than in the
/// pairs the repair started, which no run of the pairs alone showed, and the pairs read an
/// eighth lower than the groups (docs/benchmarks.md, runs P and Q). One untimed pair warms
/// them up.
async fn paired(db: &Db, ctx: &RunContext, all: &Expect) -> Vec<f64> {
    let n: usize = std::env::var("RECON_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(10, |n| n.div_ceil(2) * 2);
    // One pair untimed first, as criterion warms each group up: the first repair of a table
    // just set up pays for what the later ones find ready (SQLite: 662 ms against 502–593 ms
    // in run R).
    timed_repair(db, ctx, plain_settings, all, "warm-up").await;
    timed_single(db, all).await;
    let mut ratios = Vec::with_capacity(n);
    for i in 0..n {
        let name = "lease_repair_in_database (paired)";
        let (in_db, single) = if i % 2 == 0 {
            let a = timed_repair(db, ctx, plain_settings, all, name).await;
            (a, timed_single(db, all).await)
        } else {
            let b = timed_single(db, all).await;
            (timed_repair(db, ctx, plain_settings, all, name).await, b)
        };
        ratios.push(in_db.as_secs_f64() / single.as_secs_f64());
        eprintln!(
            "lease_repair bench: {:?} pair {i}: in the database {:.0} ms, single {:.0} ms, {:.2}x",
            db.dialect(),
            ms(in_db),
            ms(single),
            in_db.as_secs_f64() / single.as_secs_f64()
        );
    }
    ratios
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let all = Expect::upto(rows());
    let sample = Expect::upto(sample_limit());
    // RECON_BENCH_BACKENDS=postgres,mysql runs only those (default: all three).
    let only = std::env::var("RECON_BENCH_BACKENDS").ok();
    for backend in ["sqlite", "postgres", "mysql"] {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|b| b.trim() == backend))
        {
            eprintln!("lease_repair bench: {backend} skipped (RECON_BENCH_BACKENDS)");
            continue;
        }
        let Some(db) = rt.block_on(connect(backend)) else {
            eprintln!("lease_repair bench: {backend} skipped (no URL or feature)");
            continue;
        };
        let started = Instant::now();
        rt.block_on(setup(&db));
        eprintln!(
            "lease_repair bench: {backend}: {} rows, {} stuck ({} expired, {} orphans), {} live; set up in {:.1?}",
            rows(),
            all.stuck(),
            all.expired,
            all.orphans,
            all.live,
            started.elapsed()
        );
        let db = Arc::new(db);
        let ctx = RunContext::new(now());
        // The pairs first, on the table as set up (see `paired`).
        let pairs = rt.block_on(paired(&db, &ctx, &all));
        let mut g = c.benchmark_group(format!("lease_repair/{backend}"));
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_secs(1));
        // Per-iteration times, for the summary printed after the group.
        let seen: Mutex<Vec<(&str, Duration)>> = Mutex::new(Vec::new());
        let record = |name: &'static str, d: Duration| seen.lock().unwrap().push((name, d));

        g.throughput(Throughput::Elements(all.stuck()));
        // The two LeaseRepair cases: the same run, checks and recording, other settings.
        for (name, settings) in [
            ("lease_repair", settings as fn() -> Settings),
            ("lease_repair_in_database", plain_settings),
        ] {
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let took = rt.block_on(timed_repair(&db, &ctx, settings, &all, name));
                            record(name, took);
                            took
                        })
                        .sum()
                })
            });
        }
        g.bench_function("single_update", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let took = rt.block_on(timed_single(&db, &all));
                        record("single_update", took);
                        took
                    })
                    .sum()
            })
        });
        g.throughput(Throughput::Elements(sample.stuck()));
        g.bench_function("per_row_loop_2pct_sample", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    rt.block_on(make_stuck(&db));
                    let t0 = Instant::now();
                    let changed = rt.block_on(per_row_loop(&db));
                    let took = t0.elapsed();
                    total += took;
                    record("per_row_loop", took);
                    assert_eq!(changed, sample.stuck(), "{backend}: per-row loop rows");
                    assert_eq!(
                        rt.block_on(census(&db, sample_limit())),
                        sample.census(),
                        "{backend}: per-row loop rows in the sample"
                    );
                }
                total
            })
        });
        g.throughput(Throughput::Elements(rows() as u64));
        g.bench_function("clean_table", |b| {
            rt.block_on(make_stuck(&db));
            assert_eq!(rt.block_on(single_update(&db)), all.stuck());
            // A clean table at startup is in its steady state: on PostgreSQL, vacuumed after
            // the mass update above (as autovacuum would), not full of its dead row versions.
            if db.dialect() == Dialect::Postgres {
                rt.block_on(exec(&db, &format!("VACUUM {T}")));
            }
            let clean = rt.block_on(census(&db, rows()));
            assert_eq!(
                clean,
                all.census(),
                "{backend}: nothing stuck before clean_table"
            );
            let s = step(&db, settings());
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let r = rt.block_on(s.reconcile(&ctx)).unwrap();
                    let took = t0.elapsed();
                    total += took;
                    record("clean_table", took);
                    for counter in [
                        counters::LEASES_REPAIRED,
                        counters::JOBS_REQUEUED,
                        counters::JOBS_FAILED,
                        counters::ANOMALIES,
                        counters::SKIPPED_CHANGED,
                        counters::BATCHES,
                    ] {
                        assert_eq!(r.count(counter), 0, "{backend}: clean table {counter}");
                    }
                }
                total
            });
            assert_eq!(
                rt.block_on(census(&db, rows())),
                clean,
                "{backend}: clean_table changed rows"
            );
        });
        g.finish();
        summary(backend, &all, &sample, &seen.lock().unwrap(), &pairs);
        rt.block_on(exec(&db, &format!("DROP TABLE {T}")));
        rt.block_on(db.close());
    }
}

fn median(seen: &[(&str, Duration)], name: &str) -> Duration {
    let mut v: Vec<Duration> = seen
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, d)| *d)
        .collect();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The figures docs/benchmarks.md reports: medians of every timed iteration (warm-up
/// included), per-job costs, the per-row loop extrapolated from its sample, the ratios, and the
/// pairs' geometric mean and range (see [`paired`]).
fn summary(backend: &str, all: &Expect, sample: &Expect, seen: &[(&str, Duration)], pairs: &[f64]) {
    let lr = median(seen, "lease_repair");
    let db = median(seen, "lease_repair_in_database");
    let su = median(seen, "single_update");
    let pr = median(seen, "per_row_loop");
    let clean = median(seen, "clean_table");
    let per_job_us = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n as f64;
    let pr_job = per_job_us(pr, sample.stuck());
    let pr_full_ms = pr_job * all.stuck() as f64 / 1e3;
    let count = |name: &str| seen.iter().filter(|(n, _)| *n == name).count();
    let mut pairs = pairs.to_vec();
    pairs.sort_by(f64::total_cmp);
    let paired = (pairs.iter().map(|r| r.ln()).sum::<f64>() / pairs.len() as f64).exp();
    println!(
        "SUMMARY {backend}: {} rows, {} stuck, {} live (batch {}, in the database {}) \
         | LeaseRepair in the database (no jitter) {:.0} ms ({:.2} µs/job) \
         | LeaseRepair row by row (jittered preset) {:.0} ms ({:.2} µs/job) \
         | single UPDATE {:.0} ms ({:.2} µs/job) \
         -> in the database / single = {:.2}x, row by row / single = {:.2}x \
         | paired ({} pairs, order alternating): in the database / single geometric mean {:.2}x (target <= 1.5), \
         range {:.2}-{:.2}x \
         | per-row loop MEASURED {:.0} ms on a 2 % sample of {} jobs ({:.1} µs/job), EXTRAPOLATED to {} jobs: {:.0} ms \
         -> per-row / in the database = {:.1}x, per-row / row by row = {:.1}x (target >= 10) \
         | clean {}-row table {:.2} ms (target <= 20) \
         | iterations: {} / {} / {} / {} / {}",
        rows(),
        all.stuck(),
        all.live,
        std::env::var("RECON_BENCH_BATCH").unwrap_or_else(|_| "default".into()),
        std::env::var("RECON_BENCH_PLAN_BATCH").unwrap_or_else(|_| "default".into()),
        ms(db),
        per_job_us(db, all.stuck()),
        ms(lr),
        per_job_us(lr, all.stuck()),
        ms(su),
        per_job_us(su, all.stuck()),
        db.as_secs_f64() / su.as_secs_f64(),
        lr.as_secs_f64() / su.as_secs_f64(),
        pairs.len(),
        paired,
        pairs.first().copied().unwrap_or(f64::NAN),
        pairs.last().copied().unwrap_or(f64::NAN),
        ms(pr),
        sample.stuck(),
        pr_job,
        all.stuck(),
        pr_full_ms,
        pr_full_ms / ms(db),
        pr_full_ms / ms(lr),
        rows(),
        ms(clean),
        count("lease_repair_in_database"),
        count("lease_repair"),
        count("single_update"),
        count("per_row_loop"),
        count("clean_table"),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
