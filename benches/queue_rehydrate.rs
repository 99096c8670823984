//! queue-rehydrate on SQL, against baselines measured in the same run.
//!
//! ```sh
//! cargo bench --bench queue_rehydrate                                   # SQLite only
//! RECON_TEST_POSTGRES_URL=postgres://root@127.0.0.1:5432/test \
//!   cargo bench --bench queue_rehydrate --features postgres             # + PostgreSQL
//! ```
//!
//! (a) **Orphan diff**: 1,000,000 waiting jobs in `recon_queued_jobs` against 1,000,000
//! reservations, 1 % of the jobs (10,000, spread evenly) referring to reservations that do not
//! exist. Measured: [`SqlJobQueue::sweep_orphans`] (set-based: batches of 10,000 jobs in
//! entity-key order, a range anti-join for suspects, a checked delete of the orphans). Baseline: the per-row loop this project exists to beat —
//! one `SELECT 1 FROM reservations WHERE id = ?` per job — timed on a 20,000-job sample and
//! extrapolated linearly to 1,000,000 (it would take minutes per sample otherwise). Between
//! iterations the orphans are put back, untimed.
//!
//! (a') **The orphan part through `QueueDiffReconciler`**, same data: obsolete removal,
//! rescheduling and enqueuing off, batch 10,000, once with one `get_many` per page of jobs
//! (the generic path) and once with [`SqlJobQueue::orphan_sweeper`]; single timed runs
//! (median of 3), orphans put back between runs, untimed.
//!
//! (b) **Rebuild**: 1,000,000 `user_sessions`, 10 % eligible after maintenance (1 % of the
//! rows have an expired cooldown the maintenance rule clears, restored untimed between
//! iterations): [`RehydrateReconciler`] with the rule and the eligibility predicate, streaming
//! candidates in keyset batches into a sink that counts them. Peak memory: one rebuild in a
//! fresh process (this binary run again), `VmHWM` reset (`/proc/self/clear_refs`) before it
//! and read after it, for batch sizes 1,000 and 10,000 — and, for contrast, a sink that keeps
//! every candidate — next to the largest batch the sink was handed.
//!
//! `RECON_BENCH_ROWS` scales both data sets down for a quick look (default 1,000,000).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use queue_rehydrate::memory::MemoryDerivedQueue;
use queue_rehydrate::{
    ColumnType, DerivedQueue, DesiredJob, DiffSettings, KeyType, Maintenance, Operand, Predicate,
    QueueDiffReconciler, RehydrateReconciler, Result as QResult, Row, SetValue, TableMapping,
};
use recon_core::{Reconciler, RunContext, async_trait};
use store_sqlx::{Db, Dialect, SqlJobQueue};
use tokio::runtime::Runtime;

const QUEUE: &str = "bench";
const SAMPLE: usize = 20_000;
const SWEEP_BATCH: usize = 10_000;

fn rows() -> i64 {
    std::env::var("RECON_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn now() -> DateTime<Utc> {
    "2024-01-24T12:00:00Z".parse().unwrap()
}

fn reservations() -> TableMapping {
    TableMapping::builder("bench_reservations", "id", KeyType::Text)
        .column("status", ColumnType::Text)
        .build()
        .unwrap()
}

fn sessions() -> TableMapping {
    TableMapping::builder("bench_sessions", "phone", KeyType::Text)
        .column("contact_status", ColumnType::Text)
        .column("follow_up_attempts", ColumnType::Integer)
        .column("cooldown_until", ColumnType::Timestamp)
        .column("last_activity", ColumnType::Timestamp)
        .build()
        .unwrap()
}

/// Run plain SQL (the bench's own seeding; the library never formats values into SQL).
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
        #[allow(unreachable_patterns)]
        other => panic!("{other:?} is not benchmarked"),
    };
    r.unwrap_or_else(|e| panic!("bench SQL failed: {e}"));
}

/// `1..=n` as a row source, and the SQL of a zero-padded key `prefix || i`.
fn series(d: Dialect, n: i64) -> (String, fn(&str, &str) -> String) {
    match d {
        Dialect::Postgres => (format!("generate_series(1, {n}) AS s(i)"), |prefix, i| {
            format!("'{prefix}' || lpad(CAST({i} AS TEXT), 8, '0')")
        }),
        _ => (
            format!(
                "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) \
                 SELECT i FROM s) AS s"
            ),
            |prefix, i| format!("'{prefix}' || printf('%08d', {i})"),
        ),
    }
}

/// A timestamp literal as the stores write it: native on PostgreSQL; on SQLite RFC 3339 text
/// for host tables and fixed-width text in recon's own table.
fn ts(d: Dialect, t: &str, own: bool) -> String {
    match (d, own) {
        (Dialect::Postgres, _) => format!("CAST('{t}' AS timestamptz)"),
        (_, true) => format!("'{}'", t.replace('Z', ".000000+00:00")),
        (_, false) => format!("'{}'", t.replace('Z', "+00:00")),
    }
}

async fn seed(db: &Db, n: i64) {
    let d = db.dialect();
    let (from, key) = series(d, n);
    let ts_type = if d == Dialect::Postgres {
        "TIMESTAMPTZ"
    } else {
        "TEXT"
    };
    let t0 = Instant::now();
    exec(db, "DROP TABLE IF EXISTS bench_reservations").await;
    exec(db, "DROP TABLE IF EXISTS bench_sessions").await;
    exec(db, "DELETE FROM recon_queued_jobs").await;
    exec(
        db,
        "CREATE TABLE bench_reservations (id TEXT PRIMARY KEY, status TEXT NOT NULL)",
    )
    .await;
    exec(
        db,
        &format!(
            "INSERT INTO bench_reservations (id, status) SELECT {}, 'confirmed' FROM {from}",
            key("res-", "i")
        ),
    )
    .await;
    // job i refers to reservation i, except every 100th, which refers to one beyond n
    let entity = format!(
        "CASE WHEN i % 100 = 0 THEN {} ELSE {} END",
        key("res-", &format!("(i + {n})")),
        key("res-", "i")
    );
    exec(
        db,
        &format!(
            "INSERT INTO recon_queued_jobs (queue, id, kind, entity_key, entity_key_type, run_at, \
             state, payload, created_at) SELECT '{QUEUE}', {}, 'generatePin', {entity}, 'text', \
             {}, 'waiting', NULL, {} FROM {from}",
            key("gen-", "i"),
            ts(d, "2024-02-05T08:00:00Z", true),
            ts(d, "2024-01-24T12:00:00Z", true),
        ),
    )
    .await;
    // sessions: i % 10 = 0 eligible (i % 100 = 0 only once maintenance clears its expired
    // cooldown); i % 10 = 1 inactive; = 2 stale; = 3 in a future cooldown; others 3 attempts
    exec(
        db,
        &format!(
            "CREATE TABLE bench_sessions (phone TEXT PRIMARY KEY, contact_status TEXT NOT NULL, \
             follow_up_attempts INTEGER NOT NULL, cooldown_until {ts_type}, last_activity \
             {ts_type} NOT NULL, seg INTEGER NOT NULL)"
        ),
    )
    .await;
    exec(
        db,
        &format!(
            "INSERT INTO bench_sessions SELECT {}, CASE WHEN i % 10 = 1 THEN 'INACTIVE' ELSE \
             'ACTIVE' END, CASE WHEN i % 10 = 0 AND i % 100 <> 0 THEN 1 ELSE 3 END, CASE WHEN i \
             % 10 = 3 THEN {} ELSE NULL END, CASE WHEN i % 10 = 2 THEN {} ELSE {} END, i % 100 \
             FROM {from}",
            key("+57", "i"),
            ts(d, "2024-01-24T18:00:00Z", false),
            ts(d, "2022-01-01T00:00:00Z", false),
            ts(d, "2024-01-23T12:00:00Z", false),
        ),
    )
    .await;
    // steady state: statistics, and on PostgreSQL a visibility map (what autovacuum leaves
    // behind) so that key probes are index-only
    exec(
        db,
        if d == Dialect::Postgres {
            "VACUUM ANALYZE"
        } else {
            "ANALYZE"
        },
    )
    .await;
    eprintln!(
        "[{}] seeded {n} reservations, {n} queued jobs, {n} sessions in {:.1?}",
        d.name(),
        t0.elapsed()
    );
}

/// Put the orphans back (untimed).
async fn restore_orphans(db: &Db, n: i64) {
    let d = db.dialect();
    let (from, key) = series(d, n);
    exec(
        db,
        &format!(
            "INSERT INTO recon_queued_jobs (queue, id, kind, entity_key, entity_key_type, run_at, \
             state, payload, created_at) SELECT '{QUEUE}', {}, 'generatePin', {}, 'text', {}, \
             'waiting', NULL, {} FROM {from} WHERE i % 100 = 0",
            key("gen-", "i"),
            key("res-", &format!("(i + {n})")),
            ts(d, "2024-02-05T08:00:00Z", true),
            ts(d, "2024-01-24T12:00:00Z", true),
        ),
    )
    .await;
}

/// Put the expired cooldowns back (untimed).
async fn restore_cooldowns(db: &Db) {
    let d = db.dialect();
    exec(
        db,
        &format!(
            "UPDATE bench_sessions SET follow_up_attempts = 3, cooldown_until = {} WHERE seg = 0",
            ts(d, "2024-01-24T11:00:00Z", false)
        ),
    )
    .await;
}

/// The baseline: one existence query per job, for the first `SAMPLE` jobs; returns how many
/// were orphans.
async fn per_job_existence(db: &Db, keys: &[String]) -> usize {
    let mut orphans = 0;
    macro_rules! each {
        ($pool:expr, $sql:literal) => {
            for k in keys {
                let found: Option<i32> = sqlx::query_scalar($sql)
                    .bind(k)
                    .fetch_optional($pool)
                    .await
                    .unwrap();
                orphans += usize::from(found.is_none());
            }
        };
    }
    match db.dialect() {
        Dialect::Sqlite => each!(
            db.as_sqlite().unwrap(),
            "SELECT 1 FROM bench_reservations WHERE id = ?1"
        ),
        #[cfg(feature = "postgres")]
        Dialect::Postgres => each!(
            db.as_postgres().unwrap(),
            "SELECT 1 FROM bench_reservations WHERE id = $1"
        ),
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    }
    orphans
}

async fn sample_keys(db: &Db) -> Vec<String> {
    let sql = format!(
        "SELECT entity_key FROM recon_queued_jobs WHERE queue = '{QUEUE}' ORDER BY id LIMIT {SAMPLE}"
    );
    let sql = sqlx::AssertSqlSafe(sql);
    match db.dialect() {
        Dialect::Sqlite => sqlx::query_scalar(sql)
            .fetch_all(db.as_sqlite().unwrap())
            .await
            .unwrap(),
        #[cfg(feature = "postgres")]
        Dialect::Postgres => sqlx::query_scalar(sql)
            .fetch_all(db.as_postgres().unwrap())
            .await
            .unwrap(),
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    }
}

/// Timed runs of each reconciler variant (single runs, not criterion samples: one takes
/// seconds to tens of seconds at 1,000,000 jobs).
const DIFF_RUNS: usize = 3;

/// The orphan part of the diff as a host would run it through [`QueueDiffReconciler`]:
/// obsolete removal, rescheduling and enqueuing off (the bench's jobs are all wanted), batch
/// 10,000; with `sweep`, the orphans are swept set-based and the sweeper lists the jobs it
/// skipped (none here: one statement); without, every page of jobs costs one `get_many` of
/// its keys.
fn orphan_diff_step(db: &Db, queue: &SqlJobQueue, sweep: bool) -> QueueDiffReconciler {
    let plan = |e: &Row, _: DateTime<Utc>| -> QResult<Vec<DesiredJob>> {
        let id = e.key().to_string();
        Ok(vec![DesiredJob {
            id: format!("gen-{}", id.trim_start_matches("res-")),
            kind: "generatePin".into(),
            entity_key: e.key().clone(),
            run_at: "2024-02-05T08:00:00Z".parse().unwrap(),
            payload: serde_json::Value::Null,
        }])
    };
    let step = QueueDiffReconciler::new(
        "pin-jobs",
        Arc::new(queue.clone()),
        Arc::new(db.source_store().entities(reservations())),
        Arc::new(plan),
    )
    .with_settings(
        DiffSettings::new()
            .batch_size(SWEEP_BATCH)
            .remove_obsolete(false)
            .reschedule_drifted(false)
            .enqueue_missing(false),
    )
    .unwrap();
    if sweep {
        step.with_orphan_sweeper(Arc::new(queue.orphan_sweeper(reservations()).unwrap()))
    } else {
        step
    }
}

/// A sink that keeps only counts: the candidates themselves are the host's business.
#[derive(Default)]
struct CountingSink {
    rows: AtomicU64,
    largest_batch: AtomicUsize,
}

#[async_trait]
impl DerivedQueue for CountingSink {
    async fn push_batch(&self, rows: &[Row]) -> QResult<u64> {
        self.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.largest_batch.fetch_max(rows.len(), Ordering::Relaxed);
        Ok(rows.len() as u64)
    }
}

fn rebuild_step(db: &Db, sink: Arc<dyn DerivedQueue>, batch: usize) -> RehydrateReconciler {
    RehydrateReconciler::builder("follow-up-queue", Arc::new(db.source_store()), sessions())
        .maintenance(
            Maintenance::new(
                "cooldowns_cleared",
                Predicate::lt("cooldown_until", Operand::now()),
            )
            .set("cooldown_until", SetValue::Null)
            .set("follow_up_attempts", SetValue::Int(0)),
        )
        .candidates(
            Predicate::and([
                Predicate::eq("contact_status", "ACTIVE"),
                Predicate::or([
                    Predicate::is_null("cooldown_until"),
                    Predicate::lt("cooldown_until", Operand::now()),
                ]),
                Predicate::lt("follow_up_attempts", 3),
                Predicate::within_days("last_activity", 365),
            ]),
            sink,
        )
        .batch_size(batch)
        .build()
        .unwrap()
}

/// kB of `VmHWM` / `VmRSS` in /proc/self/status.
fn proc_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reset `VmHWM` to the current RSS (Linux 4.0+); without it the child's peak includes its
/// start-up, which only makes the figure larger.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn bench_backend(c: &mut Criterion, rt: &Runtime, db: &Db, db_url: &str) {
    let n = rows();
    let name = db.dialect().name();
    rt.block_on(seed(db, n));
    let queue: SqlJobQueue = db.job_queue(QUEUE).unwrap();
    let orphans = (n / 100) as u64;

    // (a) orphan diff
    let mut group = c.benchmark_group(format!("orphan_diff/{name}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100));
    let sweeps = std::cell::RefCell::new(Vec::new());
    group.bench_function(format!("sweep_orphans_{n}_jobs"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                let r = rt
                    .block_on(queue.sweep_orphans(&reservations(), SWEEP_BATCH, false))
                    .unwrap();
                let dt = t0.elapsed();
                total += dt;
                sweeps.borrow_mut().push(dt);
                assert_eq!((r.checked, r.orphaned), (n as u64, orphans), "{r:?}");
                rt.block_on(restore_orphans(db, n));
            }
            total
        })
    });
    let keys = rt.block_on(sample_keys(db));
    let per_job = std::cell::RefCell::new(Vec::new());
    group.bench_function(format!("baseline_per_job_select_{SAMPLE}_sample"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                let found = rt.block_on(per_job_existence(db, &keys));
                let dt = t0.elapsed();
                total += dt;
                per_job.borrow_mut().push(dt);
                assert_eq!(found, keys.len() / 100);
            }
            total
        })
    });
    group.finish();
    let sweep = median(sweeps.into_inner());
    let sample = median(per_job.into_inner());
    let baseline = sample.mul_f64(n as f64 / keys.len() as f64);
    let ratio = baseline.as_secs_f64() / sweep.as_secs_f64();
    println!(
        "RESULT orphan_diff {name}: sweep_orphans {n} jobs = {:.3} s (median); per-job SELECT \
         baseline = {:.3} s for {} jobs, extrapolated x{:.0} to {n} = {:.1} s; ratio {ratio:.1}x \
         (target >= 20x{})",
        sweep.as_secs_f64(),
        sample.as_secs_f64(),
        keys.len(),
        n as f64 / keys.len() as f64,
        baseline.as_secs_f64(),
        if db.dialect() == Dialect::Postgres {
            ", <= 3 s"
        } else {
            ""
        },
    );

    // (a') the orphan part through QueueDiffReconciler: generic lookups vs the sweeper
    for sweep in [false, true] {
        let step = orphan_diff_step(db, &queue, sweep);
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..DIFF_RUNS {
            let t0 = Instant::now();
            let report = rt
                .block_on(step.reconcile(&RunContext::new(now())))
                .unwrap();
            times.push(t0.elapsed());
            assert_eq!(report.get("orphaned"), Some(orphans), "{report:?}");
            assert_eq!(report.item_error_count(), 0, "{report:?}");
            rt.block_on(restore_orphans(db, n));
            last = Some(report);
        }
        let report = last.unwrap();
        println!(
            "RESULT orphan_diff_reconciler {name}: QueueDiffReconciler {} over {n} jobs, batch \
             {SWEEP_BATCH} = {:.3} s (median of {DIFF_RUNS}; runs {}); jobs_checked {}, \
             batches {}",
            if sweep {
                "with SqlJobQueue::orphan_sweeper"
            } else {
                "with get_many per page (no sweeper)"
            },
            median(times.clone()).as_secs_f64(),
            times
                .iter()
                .map(|t| format!("{:.2} s", t.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", "),
            report.get("jobs_checked").unwrap_or(0),
            report.get("batches").unwrap_or(0),
        );
    }

    // (b) rebuild
    let mut group = c.benchmark_group(format!("rebuild/{name}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100));
    let runs = std::cell::RefCell::new(Vec::new());
    group.bench_function(format!("rehydrate_{n}_sessions_batch_1000"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(restore_cooldowns(db));
                let sink = Arc::new(CountingSink::default());
                let step = rebuild_step(db, sink.clone(), 1000);
                let t0 = Instant::now();
                let report = rt
                    .block_on(step.reconcile(&RunContext::new(now())))
                    .unwrap();
                let dt = t0.elapsed();
                total += dt;
                runs.borrow_mut().push(dt);
                assert_eq!(report.get("cooldowns_cleared"), Some(orphans));
                assert_eq!(report.get("candidates"), Some((n / 10) as u64));
            }
            total
        })
    });
    group.finish();
    println!(
        "RESULT rebuild {name}: {n} sessions, {} candidates, batch 1000 = {:.3} s (median)",
        n / 10,
        median(runs.into_inner()).as_secs_f64()
    );
    for (batch, keep) in [(1000, false), (10_000, false), (1000, true)] {
        let m = memory_in_child(db_url, batch, keep);
        println!(
            "RESULT rebuild_memory {name}: batch {batch}, {}: {} candidates pushed, largest batch \
             {} rows; peak RSS grew by {} kB during the rebuild (fresh process: {} kB before, \
             {} kB peak)",
            if keep {
                "contrast: a sink keeping every candidate (MemoryDerivedQueue)"
            } else {
                "counting sink"
            },
            m.pushed,
            m.largest,
            m.peak_kb.saturating_sub(m.before_kb),
            m.before_kb,
            m.peak_kb,
        );
    }
}

struct Memory {
    before_kb: u64,
    peak_kb: u64,
    pushed: u64,
    largest: u64,
}

const CHILD: &str = "RECON_BENCH_MEMORY_CHILD";

/// Measure one rebuild's peak memory in a fresh process (this binary, run again), so that
/// memory the allocator kept from earlier benchmarks does not hide the growth.
fn memory_in_child(db_url: &str, batch: usize, keep: bool) -> Memory {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--bench")
        .env(CHILD, format!("{batch}|{keep}|{db_url}"))
        .output()
        .expect("run the memory child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MEMORY "))
        .unwrap_or_else(|| {
            panic!(
                "memory child failed: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    Memory {
        before_kb: v[0],
        peak_kb: v[1],
        pushed: v[2],
        largest: v[3],
    }
}

/// The child's side: `batch|keep|url`, a PostgreSQL URL followed by `#search_path`.
fn memory_child(spec: &str) {
    let mut parts = spec.splitn(3, '|');
    let batch: usize = parts.next().unwrap().parse().unwrap();
    let keep: bool = parts.next().unwrap().parse().unwrap();
    let url = parts.next().unwrap();
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let (url, path) = match url.split_once('#') {
            Some((u, p)) => (u, Some(p.to_owned())),
            None => (url, None),
        };
        let db = Db::connect_with(
            url,
            store_sqlx::ConnectOptions {
                search_path: path,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        restore_cooldowns(&db).await;
        let counting = Arc::new(CountingSink::default());
        let keeping = Arc::new(MemoryDerivedQueue::new());
        let sink: Arc<dyn DerivedQueue> = if keep {
            keeping.clone()
        } else {
            counting.clone()
        };
        let step = rebuild_step(&db, sink, batch);
        reset_peak();
        let before = proc_kb("VmHWM:").unwrap_or(0);
        step.reconcile(&RunContext::new(now())).await.unwrap();
        let peak = proc_kb("VmHWM:").unwrap_or(0);
        let (pushed, largest) = if keep {
            (keeping.len() as u64, batch as u64)
        } else {
            (
                counting.rows.load(Ordering::Relaxed),
                counting.largest_batch.load(Ordering::Relaxed) as u64,
            )
        };
        println!("MEMORY {before} {peak} {pushed} {largest}");
        db.close().await;
    });
}

fn bench(c: &mut Criterion) {
    if let Ok(spec) = std::env::var(CHILD) {
        memory_child(&spec);
        std::process::exit(0);
    }
    let rt = Runtime::new().unwrap();
    let dir = std::env::temp_dir().join("recon-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("queue_rehydrate.sqlite");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
    let sqlite_url = format!("sqlite:{}", path.display());
    let sqlite = rt.block_on(async {
        let db = Db::connect(&sqlite_url).await.unwrap();
        db.migrate().await.unwrap();
        db
    });
    bench_backend(c, &rt, &sqlite, &sqlite_url);
    rt.block_on(sqlite.close());

    match std::env::var("RECON_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => {
            #[cfg(feature = "postgres")]
            {
                let db = rt.block_on(async {
                    let admin = Db::connect(&url).await.unwrap();
                    exec(&admin, "DROP SCHEMA IF EXISTS recon_bench CASCADE").await;
                    exec(&admin, "CREATE SCHEMA recon_bench").await;
                    admin.close().await;
                    let db = Db::connect_with(
                        &url,
                        store_sqlx::ConnectOptions {
                            search_path: Some("recon_bench".into()),
                            ..store_sqlx::ConnectOptions::default()
                        },
                    )
                    .await
                    .unwrap();
                    db.migrate().await.unwrap();
                    db
                });
                bench_backend(c, &rt, &db, &format!("{url}#recon_bench"));
                rt.block_on(async {
                    exec(&db, "DROP SCHEMA IF EXISTS recon_bench CASCADE").await;
                    db.close().await;
                });
            }
            #[cfg(not(feature = "postgres"))]
            println!("SKIPPED PostgreSQL: build with --features postgres ({url} is set)");
        }
        _ => println!("SKIPPED PostgreSQL: RECON_TEST_POSTGRES_URL is unset"),
    }
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
