//! Eight reconcilers at once over 100,000 stuck jobs on PostgreSQL and MariaDB (and SQLite):
//! every job repaired exactly once according to an audit trigger on the table, and no lock
//! conflict reaches the host.

use std::sync::Arc;
use std::time::Instant;

use lease_repair::counters::*;
use lease_repair::{LeaseRepair, Settings};
use recon_core::{Reconciler, RunContext};

use crate::common::{self, TestDb};
use crate::table::*;

const JOBS: i64 = 100_000;
const INSTANCES: usize = 8;

async fn eight_at_once(t: &TestDb) {
    stuck_table(t, JOBS).await;
    audit(t).await;
    let store = Arc::new(t.db.lease_store(map()));
    let started = Instant::now();
    // all eight start together, so that they compete for the same rows
    let barrier = Arc::new(tokio::sync::Barrier::new(INSTANCES));
    let mut tasks = Vec::new();
    for _ in 0..INSTANCES {
        let mut s = Settings::new(retry_policy::presets::startup_jobs());
        s.count_interrupted_attempt = true;
        let step = LeaseRepair::new(store.clone(), s)
            .unwrap()
            .batch_size(500)
            .unwrap();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let from = Instant::now();
            let r = step.reconcile(&RunContext::new(now())).await;
            (from, Instant::now(), r)
        }));
    }
    let (mut leases, mut requeued, mut failed, mut skipped) = (0, 0, 0, 0);
    let mut per_instance = Vec::new();
    let mut intervals = Vec::new();
    for task in tasks {
        let (from, to, r) = task.await.unwrap();
        // no deadlock or serialization error may reach the host
        let r = r.expect("a reconciler failed");
        leases += r.count(LEASES_REPAIRED);
        requeued += r.count(JOBS_REQUEUED);
        failed += r.count(JOBS_FAILED);
        skipped += r.count(SKIPPED_CHANGED);
        per_instance.push(r.count(LEASES_REPAIRED) + r.count(JOBS_REQUEUED));
        intervals.push((from, to));
    }
    let elapsed = started.elapsed();
    let name = t.db.dialect().name();
    let (dup, distinct) = audit_counts(t).await;
    let writes = scalar(t, "SELECT COUNT(*) FROM repair_audit").await;
    println!(
        "concurrency {name}: {INSTANCES} reconcilers, {JOBS} jobs in {elapsed:.1?}; \
         audit: {writes} writes, {distinct} jobs written, {dup} written twice; \
         repairs per instance {per_instance:?}; {skipped} repairs skipped as taken"
    );
    assert_eq!(dup, 0, "{name}: a job was written twice");
    assert_eq!(writes, JOBS, "{name}: one write per job, no other write");
    assert_eq!(distinct, JOBS, "{name}: a job was not repaired");
    assert_eq!(
        (leases, requeued, failed),
        expected_counters(JOBS),
        "{name}: the reports of the instances do not add up to one repair per job"
    );
    // They really ran at the same time, over the same rows: all eight were in flight at one
    // moment, and the work was shared (or contended for) rather than done by one instance
    // before the others started.
    let last_start = intervals.iter().map(|i| i.0).max().unwrap();
    let first_end = intervals.iter().map(|i| i.1).min().unwrap();
    assert!(
        last_start < first_end,
        "{name}: an instance finished before another started"
    );
    let working = per_instance.iter().filter(|n| **n > 0).count();
    assert!(
        working >= 2 || skipped > 0,
        "{name}: one instance did all the work and none met another's rows: {per_instance:?}"
    );
    assert_each_repaired_once(t, JOBS).await;
}

/// (leases_repaired, jobs_requeued, jobs_failed) for the fixture: expired leases are the ids not
/// divisible by 5, orphans the others; attempts id % 3 + 1 reach the maximum 3 when id % 3 == 2.
pub fn expected_counters(n: i64) -> (u64, u64, u64) {
    let ids = 1..=n;
    let leases = ids.clone().filter(|i| i % 5 != 0).count() as u64;
    let requeued = ids.clone().filter(|i| i % 5 == 0 && i % 3 != 2).count() as u64;
    let failed = ids.filter(|i| i % 3 == 2).count() as u64;
    (leases, requeued, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_reconcilers_postgres() {
    #[cfg(feature = "postgres")]
    if let Some(t) = common::postgres().await {
        eight_at_once(&t).await;
        t.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_reconcilers_mysql() {
    #[cfg(feature = "mysql")]
    if let Some(t) = common::mysql().await {
        eight_at_once(&t).await;
        t.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_reconcilers_sqlite() {
    let t = common::sqlite().await;
    eight_at_once(&t).await;
    t.finish().await;
}
