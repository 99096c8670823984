//! Model-based test: random job tables reconciled by `LeaseRepair` on SQLite, compared row by
//! row and counter by counter with a plain-Rust model of scenario A's rules. The model is
//! written from SCENARIOS.md and the documented settings, not from the library: it does not
//! call `decide` or the retry policy (the retry-or-fail rule and the backoff window are stated
//! here). Reconciling twice must equal reconciling once.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use lease_repair::counters::*;
use lease_repair::{LeaseRepair, Settings};
use proptest::prelude::*;
use recon_core::{Reconciler, RunContext, StepReport};
use store_sqlx::{Db, JobTable};

const CASES: u32 = 1000;

fn now() -> DateTime<Utc> {
    "2024-01-24T12:00:00Z".parse().unwrap()
}

#[derive(Clone, Debug, PartialEq)]
struct Job {
    id: i64,
    status: String,
    owner: Option<String>,
    until: Option<DateTime<Utc>>,
    attempts: Option<i64>,
    last_error: Option<String>,
    next_run_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
}

fn arb_job(id: i64) -> impl Strategy<Value = Job> {
    let earlier = || prop::option::of(Just(now() - Duration::days(3)));
    (
        prop::sample::select(vec![
            "processing",
            "processing",
            "processing",
            "retry",
            "pending",
            "done",
            // unknown or near-miss statuses are not `processing`: never touched
            "PROCESSING",
            "processing ",
            "x",
        ]),
        prop::option::of(prop::sample::select(vec!["w1", "w2"])),
        prop::option::of(prop_oneof![
            -7200_i64..7200,             // around now, to the second
            Just(0_i64),                 // exactly now: not expired
            Just(-1),                    // a second ago
            Just(24 * 3600),             // exactly the 24 h maximum lease: allowed
            Just(24 * 3600 + 1),         // a second beyond it
            Just(40 * 24 * 3600),        // far beyond the 24 h maximum lease
            Just(-60 * 365 * 24 * 3600)  // before 1970
        ]),
        prop::option::of(-2_i64..6),
        prop::option::of(Just("an earlier error".to_owned())),
        earlier(),
        earlier(),
    )
        .prop_map(
            move |(status, owner, off, attempts, last_error, next_run_at, failed_at)| Job {
                id,
                status: status.into(),
                owner: owner.map(Into::into),
                until: off.map(|s| now() + Duration::seconds(s)),
                attempts,
                last_error,
                next_run_at,
                failed_at,
                updated_at: None,
            },
        )
}

fn arb_table() -> impl Strategy<Value = Vec<Job>> {
    prop::collection::vec(any::<u8>(), 0..40).prop_flat_map(|v| {
        v.iter()
            .enumerate()
            .map(|(i, gap)| arb_job(1 + i as i64 * 3 + i64::from(gap % 3)))
            .collect::<Vec<_>>()
    })
}

/// What one run should leave and report.
#[derive(Debug, Default)]
struct Expected {
    rows: Vec<Job>,
    /// For each row requeued: the window its `next_run_at` must fall in.
    windows: Vec<Option<(DateTime<Utc>, DateTime<Utc>)>>,
    leases_repaired: u64,
    jobs_requeued: u64,
    jobs_failed: u64,
    anomalies: u64,
}

/// The rules of SCENARIOS.md A and the documented settings, stated directly:
///
/// - only `processing` rows (exact value) are looked at;
/// - reported, never changed: a lease ending more than 24 h ahead; unless `repair_anomalies`,
///   an owner without an expiry and NULL or negative attempts;
/// - a lease that ended before `now` is expired; no owner and no expiry (or, with
///   `repair_anomalies`, an owner without expiry) is orphaned; anything else is live;
/// - a repair clears the lease, writes the counted attempts (stored, NULL/negative taken as 0,
///   +1 when the interrupted attempt counts), its message and `updated_at = now`;
/// - counted attempts >= 3 → `failed`, `failed_at = now`, no next run; otherwise `retry` at
///   `now` + the equal-jittered backoff: base 10 s · 2^(n-1) (n = counted, at least 1), capped
///   at 60 s, the delay drawn from [base/2, base].
fn model(jobs: &[Job], count_interrupted: bool, repair_anomalies: bool) -> Expected {
    let max_lease = now() + Duration::hours(24);
    let mut e = Expected::default();
    for j in jobs {
        let mut j = j.clone();
        let mut window = None;
        if j.status == "processing" {
            let too_far = matches!(j.until, Some(u) if u > max_lease);
            let owner_no_expiry = j.owner.is_some() && j.until.is_none();
            let bad_attempts = !matches!(j.attempts, Some(a) if a >= 0);
            let expired = matches!(j.until, Some(u) if u < now());
            let orphan = j.until.is_none();
            if too_far || (!repair_anomalies && (owner_no_expiry || bad_attempts)) {
                e.anomalies += 1;
            } else if expired || orphan {
                let counted =
                    j.attempts.filter(|a| *a >= 0).unwrap_or(0) + i64::from(count_interrupted);
                j.owner = None;
                j.until = None;
                j.attempts = Some(counted);
                j.updated_at = Some(now());
                j.last_error = Some(if expired {
                    "Lease expired - worker crashed or timed out".into()
                } else {
                    "Orphaned job recovered".into()
                });
                if expired {
                    e.leases_repaired += 1;
                }
                if counted >= 3 {
                    j.status = "failed".into();
                    j.next_run_at = None;
                    j.failed_at = Some(now());
                    e.jobs_failed += 1;
                } else {
                    j.status = "retry".into();
                    let n = counted.max(1) as u32;
                    let base = Duration::seconds((10_i64 << (n - 1)).min(60));
                    window = Some((now() + base / 2, now() + base));
                    if !expired {
                        e.jobs_requeued += 1;
                    }
                }
            }
        }
        e.rows.push(j);
        e.windows.push(window);
    }
    e
}

/// Compare a run with the model: rows exactly, except that a requeued row's `next_run_at` is
/// checked against its window (the jitter is the library's to draw).
fn differences(got: &[Job], report: &StepReport, want: &Expected) -> Vec<String> {
    let mut diffs = Vec::new();
    if got.len() != want.rows.len() {
        diffs.push(format!("{} rows, expected {}", got.len(), want.rows.len()));
    }
    for ((g, w), window) in got.iter().zip(&want.rows).zip(&want.windows) {
        let mut g = g.clone();
        if let Some((lo, hi)) = window {
            if !g.next_run_at.is_some_and(|t| *lo <= t && t <= *hi) {
                diffs.push(format!(
                    "job {}: next_run_at {:?} outside [{lo}, {hi}]",
                    g.id, g.next_run_at
                ));
            }
            g.next_run_at = w.next_run_at;
        }
        if &g != w {
            diffs.push(format!("job {}: got {g:?}, expected {w:?}", g.id));
        }
    }
    for (counter, expected) in [
        (LEASES_REPAIRED, want.leases_repaired),
        (JOBS_REQUEUED, want.jobs_requeued),
        (JOBS_FAILED, want.jobs_failed),
        (ANOMALIES, want.anomalies),
    ] {
        if report.count(counter) != expected {
            diffs.push(format!(
                "{}: {} expected {expected}",
                counter.name(),
                report.count(counter)
            ));
        }
    }
    diffs
}

fn lit(t: Option<DateTime<Utc>>) -> String {
    t.map_or("NULL".into(), |t| {
        format!(
            "'{}'",
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
        )
    })
}

async fn load(db: &Db, jobs: &[Job]) {
    let pool = db.as_sqlite().unwrap();
    sqlx::raw_sql("DELETE FROM jobs")
        .execute(pool)
        .await
        .unwrap();
    if jobs.is_empty() {
        return;
    }
    let rows = jobs
        .iter()
        .map(|j| {
            let text = |s: &Option<String>| s.as_ref().map_or("NULL".into(), |o| format!("'{o}'"));
            format!(
                "({}, '{}', {}, {}, {}, {}, {}, {}, {})",
                j.id,
                j.status,
                text(&j.owner),
                lit(j.until),
                j.attempts.map_or("NULL".into(), |a| a.to_string()),
                text(&j.last_error),
                lit(j.next_run_at),
                lit(j.failed_at),
                lit(j.updated_at),
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO jobs (id, status, locked_by, locked_until, attempts, last_error, \
         next_run_at, failed_at, updated_at) VALUES {rows}"
    )))
    .execute(pool)
    .await
    .unwrap();
}

async fn read(db: &Db) -> Vec<Job> {
    type Row = (
        i64,
        String,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<i64>,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, status, locked_by, locked_until, attempts, last_error, next_run_at, failed_at, \
         updated_at FROM jobs ORDER BY id",
    )
    .fetch_all(db.as_sqlite().unwrap())
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| Job {
            id: r.0,
            status: r.1,
            owner: r.2,
            until: r.3,
            attempts: r.4,
            last_error: r.5,
            next_run_at: r.6,
            failed_at: r.7,
            updated_at: r.8,
        })
        .collect()
}

#[test]
fn lease_repair_on_sqlite_matches_the_model() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(crate::common::sqlite());
    rt.block_on(t.exec(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, locked_by TEXT, \
         locked_until TEXT, attempts INTEGER, last_error TEXT, next_run_at TEXT, failed_at TEXT, \
         updated_at TEXT)",
    ));
    rt.block_on(t.exec("CREATE INDEX jobs_keyset ON jobs (status, id)"));
    let store = Arc::new(
        t.db.lease_store(
            JobTable::builder("jobs")
                .next_run_at("next_run_at")
                .failed_at("failed_at")
                .updated_at("updated_at")
                .build()
                .unwrap(),
        ),
    );
    let config = ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let cases = std::sync::atomic::AtomicU32::new(0);
    proptest!(config, |(
        jobs in arb_table(),
        count in any::<bool>(),
        repair_anomalies in any::<bool>(),
        batch in 1_usize..8,
    )| {
        let mut settings = Settings::new(retry_policy::presets::startup_jobs());
        settings.count_interrupted_attempt = count;
        settings.repair_anomalies = repair_anomalies;
        let step = LeaseRepair::new(store.clone(), settings).unwrap().batch_size(batch).unwrap();
        let ctx = RunContext::new(now());
        rt.block_on(load(&t.db, &jobs));
        let report = rt.block_on(step.reconcile(&ctx)).unwrap();
        let once = rt.block_on(read(&t.db));
        let want = model(&jobs, count, repair_anomalies);
        cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let diffs = differences(&once, &report, &want);
        prop_assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
        // reconcile twice == reconcile once
        let again = rt.block_on(step.reconcile(&ctx)).unwrap();
        prop_assert_eq!(again.count(LEASES_REPAIRED), 0);
        prop_assert_eq!(again.count(JOBS_REQUEUED), 0);
        prop_assert_eq!(again.count(JOBS_FAILED), 0);
        prop_assert_eq!(again.count(ANOMALIES), want.anomalies, "the same anomalies again");
        prop_assert_eq!(rt.block_on(read(&t.db)), once);
    });
    // proptest stops at the first difference, so reaching here means none in every case run
    let ran = cases.into_inner();
    assert!(ran >= CASES, "only {ran} cases ran");
    println!("model-based: {ran} cases, 0 differences");
    rt.block_on(t.finish());
}
