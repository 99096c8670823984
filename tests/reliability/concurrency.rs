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
    let mut tasks = Vec::new();
    for _ in 0..INSTANCES {
        let mut s = Settings::new(retry_policy::presets::startup_jobs());
        s.count_interrupted_attempt = true;
        let step = LeaseRepair::new(store.clone(), s)
            .unwrap()
            .batch_size(500)
            .unwrap();
        tasks.push(tokio::spawn(async move {
            step.reconcile(&RunContext::new(now())).await
        }));
    }
    let (mut leases, mut requeued, mut failed, mut skipped) = (0, 0, 0, 0);
    for task in tasks {
        // no deadlock or serialization error may reach the host
        let r = task.await.unwrap().expect("a reconciler failed");
        leases += r.count(LEASES_REPAIRED);
        requeued += r.count(JOBS_REQUEUED);
        failed += r.count(JOBS_FAILED);
        skipped += r.count(SKIPPED_CHANGED);
    }
    let elapsed = started.elapsed();
    let name = t.db.dialect().name();
    let (dup, distinct) = audit_counts(t).await;
    println!(
        "concurrency {name}: {INSTANCES} reconcilers, {JOBS} jobs in {elapsed:.1?}; \
         audit: {distinct} jobs written, {dup} written twice; {skipped} repairs skipped as taken"
    );
    assert_eq!(dup, 0, "{name}: a job was repaired twice");
    assert_eq!(distinct, JOBS, "{name}: a job was not repaired");
    assert_eq!(
        (leases, requeued, failed),
        expected_counters(JOBS),
        "{name}: the reports of the instances do not add up to one repair per job"
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
