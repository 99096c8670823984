//! Model-based test: random job tables reconciled by `LeaseRepair` on SQLite, compared row by
//! row with a plain-Rust model of scenario A's rules written independently of `decide`.
//! Reconciling twice must equal reconciling once.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use lease_repair::{LeaseRepair, Settings};
use proptest::prelude::*;
use recon_core::{Reconciler, RunContext};
use retry_policy::{Attempt, Decision, RetryPolicy};
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
}

fn arb_job(id: i64) -> impl Strategy<Value = Job> {
    (
        prop::sample::select(vec![
            "processing",
            "processing",
            "processing",
            "retry",
            "pending",
            "done",
        ]),
        prop::option::of(prop::sample::select(vec!["w1", "w2"])),
        prop::option::of(prop_oneof![
            -7200_i64..7200,             // around now, to the second
            Just(0_i64),                 // exactly now: not expired
            Just(-1),                    // a second ago
            Just(40 * 24 * 3600),        // beyond the 24 h maximum lease
            Just(-60 * 365 * 24 * 3600)  // before 1970
        ]),
        prop::option::of(-2_i64..6),
    )
        .prop_map(move |(status, owner, off, attempts)| Job {
            id,
            status: status.into(),
            owner: owner.map(Into::into),
            until: off.map(|s| now() + Duration::seconds(s)),
            attempts,
            last_error: None,
            next_run_at: None,
            failed_at: None,
        })
}

fn arb_table() -> impl Strategy<Value = Vec<Job>> {
    prop::collection::vec(any::<u8>(), 0..40).prop_flat_map(|v| {
        v.iter()
            .enumerate()
            .map(|(i, gap)| arb_job(1 + i as i64 * 3 + i64::from(gap % 3)))
            .collect::<Vec<_>>()
    })
}

/// The rules of SCENARIOS.md A, stated directly.
fn model(jobs: &[Job], count_interrupted: bool, policy: &RetryPolicy) -> Vec<Job> {
    let max_lease = now() + Duration::hours(24);
    jobs.iter()
        .map(|j| {
            let mut j = j.clone();
            if j.status != "processing" {
                return j;
            }
            let expired = matches!(j.until, Some(u) if u < now());
            let orphan = j.owner.is_none() && j.until.is_none();
            let too_far = matches!(j.until, Some(u) if u > max_lease);
            let bad_attempts = !matches!(j.attempts, Some(a) if a >= 0);
            let owner_no_expiry = j.owner.is_some() && j.until.is_none();
            if !(expired || orphan) || too_far || bad_attempts || owner_no_expiry {
                return j; // live, or an anomaly: left alone
            }
            let counted = j.attempts.unwrap() + i64::from(count_interrupted);
            let key = j.id.to_string();
            let d = policy.decide(&Attempt::new(&key, counted as u32, now()));
            j.owner = None;
            j.until = None;
            j.attempts = Some(counted);
            j.last_error = Some(if expired {
                "Lease expired - worker crashed or timed out".into()
            } else {
                "Orphaned job recovered".into()
            });
            match d {
                Decision::RetryAt(at) => {
                    j.status = "retry".into();
                    j.next_run_at = Some(at);
                }
                Decision::GiveUp(_) => {
                    j.status = "failed".into();
                    j.next_run_at = None;
                    j.failed_at = Some(now());
                }
            }
            j
        })
        .collect()
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
            format!(
                "({}, '{}', {}, {}, {})",
                j.id,
                j.status,
                j.owner.as_ref().map_or("NULL".into(), |o| format!("'{o}'")),
                lit(j.until),
                j.attempts.map_or("NULL".into(), |a| a.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO jobs (id, status, locked_by, locked_until, attempts) VALUES {rows}"
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
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, status, locked_by, locked_until, attempts, last_error, next_run_at, failed_at FROM jobs ORDER BY id",
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
    let policy = retry_policy::presets::startup_jobs();
    let config = ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let cases = std::sync::atomic::AtomicU32::new(0);
    proptest!(config, |(jobs in arb_table(), count in any::<bool>(), batch in 1_usize..8)| {
        let mut settings = Settings::new(policy.clone());
        settings.count_interrupted_attempt = count;
        let step = LeaseRepair::new(store.clone(), settings).unwrap().batch_size(batch).unwrap();
        let ctx = RunContext::new(now());
        rt.block_on(load(&t.db, &jobs));
        rt.block_on(step.reconcile(&ctx)).unwrap();
        let once = rt.block_on(read(&t.db));
        let want = model(&jobs, count, &policy);
        cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        prop_assert_eq!(&once, &want);
        // reconcile twice == reconcile once
        let again = rt.block_on(step.reconcile(&ctx)).unwrap();
        prop_assert_eq!(again.count(lease_repair::counters::LEASES_REPAIRED), 0);
        prop_assert_eq!(again.count(lease_repair::counters::JOBS_REQUEUED), 0);
        prop_assert_eq!(again.count(lease_repair::counters::JOBS_FAILED), 0);
        prop_assert_eq!(rt.block_on(read(&t.db)), once);
    });
    // proptest stops at the first difference, so reaching here means none in every case run
    let ran = cases.into_inner();
    assert!(ran >= CASES, "only {ran} cases ran");
    println!("model-based: {ran} cases, 0 differences");
    rt.block_on(t.finish());
}
