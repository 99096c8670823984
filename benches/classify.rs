//! Classify 1,000,000 incoming records with 1 % changed against `recon_fingerprints`, with the
//! fingerprints of the previous run pre-loaded (untimed): what the timed part measures is
//! `Classifier::classify` over all 1,000,000 records in batches of 10,000 — one lookup query
//! per batch plus the pure classification — target ≤ 3 s.
//!
//! Baseline in the same run: one lookup query per record (the per-row anti-pattern), timed
//! on a 20,000-record sample and extrapolated to 1,000,000 in the summary (labelled as such).
//!
//! ```sh
//! cargo bench --bench classify --features postgres
//! ```
//! SQLite always runs, twice on the same file: `sqlite` with `Db::connect`'s defaults and
//! `sqlite_mmap` with `ConnectOptions::sqlite_mmap_size` = 1 GiB (`PRAGMA mmap_size`), which
//! reads the table's pages by memory mapping instead of one `pread` per page. PostgreSQL runs
//! when `RECON_TEST_POSTGRES_URL` is set and the `postgres` feature is on (the bench uses its
//! own schema, `recon_bench_classify`, and drops it afterwards). `RECON_BENCH_ROWS` changes the record count (default 1,000,000; 1 %
//! changed). Correctness is checked after every timed pass, untimed: exactly 1 % updates, the
//! rest unchanged, no creates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use lineage_checksum::{
    Classifier, FingerprintEntry, FingerprintStore, Incoming, RecordBatch, Schema, Value,
};
use store_sqlx::{ConnectOptions, Db};
use tokio::runtime::Runtime;

const NS: &str = "case";
const BATCH: usize = 10_000;
const SAMPLE: usize = 20_000;

fn rows() -> usize {
    std::env::var("RECON_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Every 100th record changed since the last run.
fn changed(i: usize) -> bool {
    i % 100 == 42
}

/// The incoming records of "today" (scenario C's key fields), fingerprinted once, untimed.
fn incoming(n: usize) -> (Vec<Incoming>, Vec<FingerprintEntry>) {
    let schema = Schema::new(
        "case",
        [
            "id",
            "last_modified",
            "subject",
            "description",
            "resolution",
            "status",
        ],
    )
    .expect("schema");
    let base: DateTime<Utc> = "2024-11-03T08:00:00Z".parse().expect("time");
    let mut today = Vec::with_capacity(n);
    let mut yesterday = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("5007T{i:010}");
        let modified = base + chrono::Duration::seconds(i as i64);
        let subject = format!("Server {i} won't boot");
        let fp = |status: &str| {
            schema
                .fingerprint(&[
                    Value::Str(&id),
                    Value::Timestamp(modified),
                    Value::Str(&subject),
                    Value::Str("iLO_400_MemoryErrors on DL380"),
                    Value::Null,
                    Value::Str(status),
                ])
                .expect("fingerprint")
        };
        let old = fp("Open");
        let new = if changed(i) { fp("Closed") } else { old };
        yesterday.push(FingerprintEntry {
            key: id.clone(),
            fingerprint: old,
            group: None,
        });
        today.push(Incoming::new(id, new));
    }
    (today, yesterday)
}

fn sqlite_path() -> std::path::PathBuf {
    std::env::temp_dir().join("recon-bench-classify.sqlite")
}

async fn connect(backend: &str) -> Option<Db> {
    match backend {
        "sqlite" => {
            let path = sqlite_path();
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
            }
            let db = Db::connect(&format!("sqlite:{}", path.display()))
                .await
                .expect("open SQLite");
            Some(db)
        }
        "sqlite_mmap" => {
            // the shipped knob: `Db::connect_with` with `ConnectOptions::sqlite_mmap_size`
            let db = Db::connect_with(
                &format!("sqlite:{}", sqlite_path().display()),
                ConnectOptions {
                    sqlite_mmap_size: Some(1 << 30),
                    ..ConnectOptions::default()
                },
            )
            .await
            .expect("open SQLite with mmap");
            Some(db)
        }
        "postgres" if cfg!(feature = "postgres") => {
            let url = std::env::var("RECON_TEST_POSTGRES_URL").ok()?;
            let admin = Db::connect(&url).await.expect("connect to PostgreSQL");
            pg_exec(
                &admin,
                "DROP SCHEMA IF EXISTS recon_bench_classify CASCADE; CREATE SCHEMA recon_bench_classify",
            )
            .await;
            admin.close().await;
            let db = Db::connect_with(
                &url,
                ConnectOptions {
                    search_path: Some("recon_bench_classify".into()),
                    ..ConnectOptions::default()
                },
            )
            .await
            .expect("connect to the bench schema");
            Some(db)
        }
        _ => None,
    }
}

/// Bench set-up SQL on PostgreSQL (constants of the bench, no input).
#[allow(unused_variables)]
async fn pg_exec(db: &Db, sql: &str) {
    #[cfg(feature = "postgres")]
    if let Some(pg) = db.as_postgres() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(pg)
            .await
            .expect("bench SQL");
    }
}

/// Load yesterday's fingerprints through the store (10,000 per call), untimed.
async fn preload(store: &dyn FingerprintStore, yesterday: &[FingerprintEntry]) {
    let at: DateTime<Utc> = "2024-11-03T06:00:00Z".parse().expect("time");
    for chunk in yesterday.chunks(BATCH) {
        let batch = RecordBatch {
            run: "day-1".into(),
            at,
            upserts: chunk.to_vec(),
            seen: vec![],
        };
        store.record(NS, &batch).await.expect("preload");
    }
}

/// The timed work: classify every record, one lookup per batch of 10,000.
async fn classify_all(classifier: &Classifier, today: &[Incoming]) -> (u64, u64, u64) {
    let (mut created, mut updated, mut unchanged) = (0, 0, 0);
    for batch in today.chunks(BATCH) {
        let c = classifier.classify(batch).await.expect("classify");
        created += c.created;
        updated += c.updated;
        unchanged += c.unchanged;
    }
    (created, updated, unchanged)
}

/// The same work through `Classifier::classify_in_chunks`: chunks of 10,000, two lookups in
/// flight at once (each on its own connection of the pool).
async fn classify_all_two_in_flight(
    classifier: &Classifier,
    today: &[Incoming],
) -> (u64, u64, u64) {
    let (mut created, mut updated, mut unchanged) = (0, 0, 0);
    classifier
        .classify_in_chunks(today, BATCH, |_, c| {
            created += c.created;
            updated += c.updated;
            unchanged += c.unchanged;
            Ok(())
        })
        .await
        .expect("classify_in_chunks");
    (created, updated, unchanged)
}

/// The baseline: one lookup query per record.
async fn lookup_one_by_one(store: &dyn FingerprintStore, sample: &[Incoming]) -> (u64, u64) {
    let (mut updated, mut unchanged) = (0, 0);
    for r in sample {
        let stored = store
            .lookup(NS, std::slice::from_ref(&r.key))
            .await
            .expect("lookup");
        match stored.first() {
            Some(s) if s.fingerprint == r.fingerprint => unchanged += 1,
            Some(_) => updated += 1,
            None => panic!("{} is not stored", r.key),
        }
    }
    (updated, unchanged)
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let n = rows();
    let started = Instant::now();
    let (today, yesterday) = incoming(n);
    let expected_updates = (0..n).filter(|i| changed(*i)).count() as u64;
    eprintln!(
        "classify bench: {n} records ({expected_updates} changed) fingerprinted in {:.1?}",
        started.elapsed()
    );
    let sample = &today[..SAMPLE.min(n)];
    let mut summary = Vec::new();
    for backend in ["sqlite", "sqlite_mmap", "postgres"] {
        let Some(db) = rt.block_on(connect(backend)) else {
            eprintln!("classify bench: {backend} skipped (no URL or feature)");
            continue;
        };
        rt.block_on(db.migrate()).expect("migrate");
        let store: Arc<dyn FingerprintStore> = Arc::new(db.fingerprints());
        // sqlite_mmap reads the file `sqlite` loaded.
        if backend != "sqlite_mmap" {
            let started = Instant::now();
            rt.block_on(preload(&*store, &yesterday));
            if backend == "postgres" {
                rt.block_on(pg_exec(&db, "ANALYZE recon_fingerprints"));
            }
            eprintln!(
                "classify bench: {backend}: {n} fingerprints pre-loaded in {:.1?}",
                started.elapsed()
            );
        }
        let classifier = Classifier::new(store.clone(), NS).expect("classifier");

        let mut g = c.benchmark_group(format!("classify/{backend}"));
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_secs(1));
        let mut best = Duration::MAX;
        g.bench_function(format!("batched_{n}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let counts = rt.block_on(classify_all(&classifier, &today));
                    let took = t0.elapsed();
                    total += took;
                    best = best.min(took);
                    // Untimed: exactly the changed records are updates, the rest unchanged.
                    assert_eq!(
                        counts,
                        (0, expected_updates, n as u64 - expected_updates),
                        "{backend}: wrong classification"
                    );
                }
                total
            })
        });
        let mut best_two = Duration::MAX;
        g.bench_function(format!("batched_{n}_two_in_flight"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let counts = rt.block_on(classify_all_two_in_flight(&classifier, &today));
                    let took = t0.elapsed();
                    total += took;
                    best_two = best_two.min(took);
                    assert_eq!(
                        counts,
                        (0, expected_updates, n as u64 - expected_updates),
                        "{backend}: wrong classification"
                    );
                }
                total
            })
        });
        let mut best_baseline = Duration::MAX;
        g.bench_function(format!("per_record_lookup_{}_sample", sample.len()), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let counts = rt.block_on(lookup_one_by_one(&*store, sample));
                    let took = t0.elapsed();
                    total += took;
                    best_baseline = best_baseline.min(took);
                    let want = sample
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| changed(*i))
                        .count() as u64;
                    assert_eq!(counts, (want, sample.len() as u64 - want));
                }
                total
            })
        });
        g.finish();
        summary.push((backend, best, best_two, best_baseline));
        if backend == "postgres" {
            rt.block_on(pg_exec(
                &db,
                "DROP SCHEMA IF EXISTS recon_bench_classify CASCADE",
            ));
        }
        rt.block_on(db.close());
    }
    eprintln!("\nclassify bench summary ({n} records, 1 % changed; fastest pass):");
    for (backend, best, two, baseline) in summary {
        let secs = |d: Duration| {
            if d == Duration::MAX {
                "—".to_owned() // filtered out on the command line
            } else {
                format!("{:.3} s", d.as_secs_f64())
            }
        };
        let per_record = baseline.as_secs_f64() / sample.len() as f64;
        let extrapolated = if baseline == Duration::MAX {
            "—".to_owned()
        } else {
            format!(
                "{:.1} µs each, {:.1} s for {n} EXTRAPOLATED from {}",
                per_record * 1e6,
                per_record * n as f64,
                sample.len()
            )
        };
        eprintln!(
            "  {backend:<11} batched: {} | two batches in flight: {} | per-record lookups: {extrapolated}",
            secs(best),
            secs(two),
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
