//! Lease repair behaves the same on memory, SQLite, PostgreSQL and MySQL/MariaDB.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use lease_repair::counters::*;
use lease_repair::{
    CandidateKind, CandidateQuery, JobKey, JobRow, LeasePrune, LeaseRepair, PruneMode, Settings,
    StoredJob, TimeBasis,
};
use recon_core::{Reconciler, RunContext, StepReport};
use retry_policy::presets;
use store_sqlx::{Dialect, KeyKind, TimestampFormat};

use crate::Backend;
use crate::jobs::{Jobs, Shape};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn now() -> DateTime<Utc> {
    t("2024-01-24T12:00:00Z")
}

fn settings(count_interrupted: bool) -> Settings {
    let mut s = Settings::new(presets::startup_jobs());
    s.count_interrupted_attempt = count_interrupted;
    s
}

/// Scenario A's policy without its jitter: the decision then depends only on the attempts
/// count, so `LeaseRepair` applies it inside the database (`RepairPlan`).
fn plain_settings(count_interrupted: bool) -> Settings {
    let policy = presets::startup_jobs()
        .to_builder()
        .jitter(retry_policy::Jitter::None)
        .build()
        .unwrap();
    let mut s = Settings::new(policy);
    s.count_interrupted_attempt = count_interrupted;
    s
}

/// Passes every call through, counting the batches the store repaired inside the database.
pub(crate) struct CountPlanned {
    inner: Arc<dyn lease_repair::LeaseStore>,
    planned: std::sync::atomic::AtomicU64,
}

impl CountPlanned {
    pub(crate) fn new(inner: Arc<dyn lease_repair::LeaseStore>) -> Self {
        Self {
            inner,
            planned: 0.into(),
        }
    }

    pub(crate) fn planned(&self) -> u64 {
        self.planned.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[recon_core::async_trait]
impl lease_repair::LeaseStore for CountPlanned {
    async fn read_candidates(&self, q: CandidateQuery) -> recon_core::Result<Vec<JobRow>> {
        self.inner.read_candidates(q).await
    }

    async fn apply(
        &self,
        repairs: &[lease_repair::Repair],
        now: DateTime<Utc>,
    ) -> recon_core::Result<lease_repair::ApplyOutcome> {
        self.inner.apply(repairs, now).await
    }

    async fn database_now(&self) -> recon_core::Result<DateTime<Utc>> {
        self.inner.database_now().await
    }

    async fn any_stuck(&self, q: CandidateQuery) -> recon_core::Result<bool> {
        self.inner.any_stuck(q).await
    }

    async fn repair_planned(
        &self,
        plans: &[lease_repair::RepairPlan],
        after: Option<JobKey>,
        limit: usize,
    ) -> recon_core::Result<Option<lease_repair::PlannedBatch>> {
        let out = self.inner.repair_planned(plans, after, limit).await?;
        if out.as_ref().is_some_and(|b| b.repaired() > 0) {
            self.planned
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(out)
    }
}

/// Jobs of every sort: expired leases and orphans with attempts 0 to 4 (3 and 4 fail under
/// scenario A's policy), live leases, finished jobs, and the anomalies only the row-by-row
/// path judges (NULL and negative attempts, an owner without an expiry, a lease too long).
fn mixed(n: i64, key: KeyKind) -> Vec<StoredJob> {
    (1..=n)
        .map(|i| {
            let k: JobKey = match key {
                KeyKind::Text => JobKey::Text(format!("job-{i:05}")),
                KeyKind::Uuid => JobKey::Text(format!("0b6b7a1e-0000-4000-8000-{i:012}")),
                _ => JobKey::Int(i),
            };
            let a = Some(i % 5);
            let ago = now() - Duration::minutes(1 + i % 90);
            match i % 9 {
                // an owner that is not ASCII: SQLite's in-database pass leaves it to the
                // row-by-row pass
                0 if i % 4 == 0 => {
                    StoredJob::new(k.clone(), "processing", Some("wörker-ü"), Some(ago), a)
                }
                0..=2 => StoredJob::new(k.clone(), "processing", Some("w"), Some(ago), a),
                3 | 4 => StoredJob::new(k.clone(), "processing", None, None, a),
                5 => StoredJob::new(
                    k.clone(),
                    "processing",
                    Some("w"),
                    Some(now() + Duration::minutes(5)),
                    a,
                ),
                6 => StoredJob::new(k.clone(), "done", None, None, a),
                7 => {
                    let bad = if i % 2 == 0 { None } else { Some(-1) };
                    if i % 4 == 3 {
                        StoredJob::new(k.clone(), "processing", None, None, bad)
                    } else {
                        StoredJob::new(k.clone(), "processing", Some("w"), Some(ago), bad)
                    }
                }
                _ => {
                    if i % 2 == 0 {
                        StoredJob::new(k.clone(), "processing", Some("w"), None, a)
                    } else {
                        StoredJob::new(
                            k.clone(),
                            "processing",
                            Some("w"),
                            Some(now() + Duration::days(3)),
                            a,
                        )
                    }
                }
            }
        })
        .collect()
}

/// The same jobs repaired inside the database and row by row come out identical, every
/// column (next run, failed and updated times included), with the same counters and the same
/// anomalies listed.
async fn in_the_database_and_row_by_row_give_the_same_jobs(be: &Backend<'_>) {
    use retry_policy::{Backoff, RetryPolicy};
    let secs = std::time::Duration::from_secs;
    // scenario A's policy without jitter; one that never retries; one at its longest delay
    // from the first retry on (the plan's saturated tail)
    let never = RetryPolicy::builder().max_attempts(1).build().unwrap();
    let capped = RetryPolicy::builder()
        .backoff(Backoff::constant(secs(30)))
        .max_delay(secs(30))
        .max_attempts(3)
        .build()
        .unwrap();
    let text = Shape {
        key: KeyKind::Text,
        ..Shape::default()
    };
    let unix = Shape {
        sqlite_ts: TimestampFormat::UnixSeconds,
        ..Shape::default()
    };
    let uuid = Shape {
        key: KeyKind::Uuid,
        ..Shape::default()
    };
    let cases = [
        (
            "plain",
            plain_settings(false).policy,
            Shape::default(),
            false,
        ),
        (
            "plain_counted",
            plain_settings(true).policy,
            Shape::default(),
            true,
        ),
        ("never", never, Shape::default(), false),
        ("capped_text", capped.clone(), text, true),
        ("capped_unix", capped, unix, false),
        ("plain_uuid", plain_settings(false).policy, uuid, false),
        // both kinds write the same message: PostgreSQL cannot tell them apart by the new
        // rows and locks the rows first (see `pg_key_range`)
        (
            "one_message",
            plain_settings(false).policy,
            Shape::default(),
            false,
        ),
    ];
    for (name, policy, shape, count) in cases {
        let mut s = Settings::new(policy);
        s.count_interrupted_attempt = count;
        if name == "one_message" {
            s.messages.orphaned = s.messages.lease_expired.clone();
        }
        let mut outcomes = Vec::new();
        for in_db in [true, false] {
            let table = format!("same_{name}_{}", u8::from(in_db));
            let jobs = Jobs::new(be, &table, shape).await;
            jobs.insert(&mixed(600, shape.key), shape).await;
            let store = Arc::new(CountPlanned::new(jobs.lease.clone()));
            let step = LeaseRepair::new(store.clone(), s.clone())
                .unwrap()
                .batch_size(37)
                .unwrap()
                .plan_batch_size(29)
                .unwrap()
                .in_database(in_db);
            let r = run(&step, false).await;
            assert_eq!(store.planned() > 0, in_db, "{}: {name}", be.name());
            // batches of 29 over 600 jobs: many batches, whatever the key type
            assert!(
                !in_db || store.planned() > 3,
                "{}: {name}: {} batches in the database",
                be.name(),
                store.planned()
            );
            let counters: Vec<u64> = OUTCOME.map(|c| r.count(c)).to_vec();
            outcomes.push((
                counters,
                all(&jobs).await,
                r.details().get("anomalies").cloned(),
            ));
        }
        let (counters, after, _) = &outcomes[0];
        // every sort of row is there to compare: expired leases, anomalies, failures
        assert!(
            counters[0] > 150 && counters[2] > 50 && counters[3] > 50,
            "{}: {name}: {counters:?}",
            be.name()
        );
        let retried = after
            .iter()
            .any(|j| j.next_run_at.is_some() && j.failed_at.is_none());
        assert_eq!(retried, name != "never", "{}: {name}", be.name());
        assert_eq!(
            outcomes[0],
            outcomes[1],
            "{}: {name}: in the database vs row by row",
            be.name()
        );
    }
}

fn scenario_a() -> Vec<StoredJob> {
    let j = |k: i64, st: &str, o: Option<&str>, u: Option<&str>, a: i64| {
        StoredJob::new(k, st, o, u.map(t), Some(a))
    };
    vec![
        j(
            42,
            "processing",
            Some("worker-001"),
            Some("2024-01-24T10:00:00Z"),
            1,
        ),
        j(43, "processing", None, None, 2),
        j(44, "pending", None, None, 0),
        j(
            45,
            "processing",
            Some("worker-002"),
            Some("2024-01-24T13:00:00Z"),
            0,
        ),
        j(
            46,
            "processing",
            Some("worker-003"),
            Some("2024-01-24T09:00:00Z"),
            3,
        ),
    ]
}

async fn run(step: &impl Reconciler, dry: bool) -> StepReport {
    step.reconcile(&RunContext::new(now()).with_dry_run(dry))
        .await
        .unwrap()
}

/// (status, owner, expiry, attempts, last_error) of every job.
type Brief = (
    JobKey,
    String,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<i64>,
    Option<String>,
);

fn brief(jobs: &[StoredJob]) -> Vec<Brief> {
    jobs.iter()
        .map(|j| {
            (
                j.row.key.clone(),
                j.row.status.clone(),
                j.row.lease_owner.clone(),
                j.row.lease_expires_at,
                j.row.attempts,
                j.last_error.clone(),
            )
        })
        .collect()
}

fn b(k: i64, st: &str, o: Option<&str>, u: Option<&str>, a: i64, e: Option<&str>) -> Brief {
    (
        JobKey::Int(k),
        st.into(),
        o.map(Into::into),
        u.map(t),
        Some(a),
        e.map(Into::into),
    )
}

/// Every job in key order (`Jobs::all` orders PostgreSQL rows by the id's text).
async fn all(jobs: &Jobs<'_>) -> Vec<StoredJob> {
    let mut v = jobs.all().await;
    v.sort_by(|a, b| a.row.key.cmp(&b.row.key));
    v
}

/// Every archived job in key order.
async fn archived(jobs: &Jobs<'_>) -> Vec<StoredJob> {
    let mut v = jobs.archived().await;
    v.sort_by(|a, b| a.row.key.cmp(&b.row.key));
    v
}

const EXPIRED: &str = "Lease expired - worker crashed or timed out";
const ORPHANED: &str = "Orphaned job recovered";

async fn scenario_a_jobs_row_by_row(be: &Backend<'_>) {
    let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    jobs.insert(&scenario_a(), Shape::default()).await;
    let step = LeaseRepair::new(jobs.lease.clone(), settings(false)).unwrap();
    let r = run(&step, false).await;
    assert_eq!(
        (
            r.count(LEASES_REPAIRED),
            r.count(JOBS_REQUEUED),
            r.count(JOBS_FAILED)
        ),
        (2, 1, 1),
        "{}",
        be.name()
    );
    assert_eq!(r.count(ANOMALIES) + r.count(SKIPPED_CHANGED), 0);
    let after = all(&jobs).await;
    assert_eq!(
        brief(&after),
        vec![
            b(42, "retry", None, None, 1, Some(EXPIRED)),
            b(43, "retry", None, None, 2, Some(ORPHANED)),
            b(44, "pending", None, None, 0, None),
            b(
                45,
                "processing",
                Some("worker-002"),
                Some("2024-01-24T13:00:00Z"),
                0,
                None
            ),
            b(46, "failed", None, None, 3, Some(EXPIRED)),
        ],
        "{}",
        be.name()
    );
    // repair metadata: next run from the policy, failure and update times stamped
    assert!(after[0].next_run_at.is_some_and(|n| n > now()));
    assert_eq!(after[4].failed_at, Some(now()));
    assert_eq!(after[4].next_run_at, None);
    assert_eq!(after[0].updated_at, Some(now()));
    assert_eq!(after[2].updated_at, None, "untouched rows stay untouched");
    // a second run right after repairs nothing
    let again = run(&step, false).await;
    for c in [
        LEASES_REPAIRED,
        JOBS_REQUEUED,
        JOBS_FAILED,
        SKIPPED_CHANGED,
        ANOMALIES,
    ] {
        assert_eq!(again.count(c), 0, "{}: {c}", be.name());
    }
    assert_eq!(
        all(&jobs).await,
        after,
        "{}: the second run changed something",
        be.name()
    );
}

async fn scenario_a_jobs_counting_the_interrupted_attempt(be: &Backend<'_>) {
    let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    jobs.insert(&scenario_a(), Shape::default()).await;
    let step = LeaseRepair::new(jobs.lease.clone(), settings(true)).unwrap();
    let r = run(&step, false).await;
    assert_eq!(
        (
            r.count(LEASES_REPAIRED),
            r.count(JOBS_REQUEUED),
            r.count(JOBS_FAILED)
        ),
        (2, 0, 2)
    );
    assert_eq!(
        brief(&all(&jobs).await),
        vec![
            b(42, "retry", None, None, 2, Some(EXPIRED)),
            b(43, "failed", None, None, 3, Some(ORPHANED)),
            b(44, "pending", None, None, 0, None),
            b(
                45,
                "processing",
                Some("worker-002"),
                Some("2024-01-24T13:00:00Z"),
                0,
                None
            ),
            b(46, "failed", None, None, 4, Some(EXPIRED)),
        ],
        "{}",
        be.name()
    );
    let after = all(&jobs).await;
    let again = run(&step, false).await;
    for c in [
        LEASES_REPAIRED,
        JOBS_REQUEUED,
        JOBS_FAILED,
        SKIPPED_CHANGED,
        ANOMALIES,
    ] {
        assert_eq!(again.count(c), 0, "{}: {c}", be.name());
    }
    assert_eq!(
        all(&jobs).await,
        after,
        "{}: the second run changed something",
        be.name()
    );
}

async fn a_lease_renewed_between_read_and_write_is_not_clobbered(be: &Backend<'_>) {
    let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    jobs.insert(&scenario_a(), Shape::default()).await;
    let (rows, repairs) = jobs.read_expired_and_decide(now(), &settings(false)).await;
    let keys: Vec<_> = rows.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys, [JobKey::Int(42), JobKey::Int(46)], "{}", be.name());
    // worker-001 comes back and renews job 42's lease before the repair is written
    jobs.renew(42, t("2024-01-24T12:05:00Z")).await;
    let out = jobs.lease.apply(&repairs, now()).await.unwrap();
    assert_eq!(out.applied, [JobKey::Int(46)], "{}", be.name());
    assert_eq!(out.skipped, [JobKey::Int(42)], "{}", be.name());
    let after = all(&jobs).await;
    assert_eq!(
        brief(&after[..1]),
        vec![b(
            42,
            "processing",
            Some("worker-001"),
            Some("2024-01-24T12:05:00Z"),
            1,
            None
        )],
        "{}: a live lease was clobbered",
        be.name()
    );
}

/// `n` stuck jobs from key `start`: every fifth an orphan, the others expired leases;
/// attempts `k % 4`, so a quarter of them (attempts 3) fail.
/// A store that lets job 42's worker renew its lease after the step has read the batch and
/// before it writes it — the race a guarded UPDATE must lose gracefully.
struct RenewBeforeApply {
    inner: Arc<dyn lease_repair::LeaseStore>,
    renew: Renewer,
    done: std::sync::atomic::AtomicBool,
}

enum Renewer {
    Memory(Arc<lease_repair::MemoryLeaseStore>),
    Sql(store_sqlx::Db),
}

const RENEWED_UNTIL: &str = "2024-01-24T12:05:00Z";

/// Scenario A after a repair that raced job 42's renewal: 42 keeps its renewed lease, 43 is
/// requeued, 46 failed, the others untouched.
fn renewed_42_and_repaired() -> Vec<Brief> {
    vec![
        b(
            42,
            "processing",
            Some("worker-001"),
            Some(RENEWED_UNTIL),
            1,
            None,
        ),
        b(43, "retry", None, None, 2, Some(ORPHANED)),
        b(44, "pending", None, None, 0, None),
        b(
            45,
            "processing",
            Some("worker-002"),
            Some("2024-01-24T13:00:00Z"),
            0,
            None,
        ),
        b(46, "failed", None, None, 3, Some(EXPIRED)),
    ]
}

impl Renewer {
    async fn renew_42(&self) {
        match self {
            Renewer::Memory(m) => {
                assert!(m.update(&JobKey::Int(42), |j| {
                    j.row.lease_expires_at = Some(t(RENEWED_UNTIL))
                }));
            }
            Renewer::Sql(db) => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "UPDATE processing_jobs SET locked_until = {} WHERE id = 42",
                    crate::jobs::ts_lit(
                        db.dialect(),
                        TimestampFormat::Rfc3339,
                        Some(t(RENEWED_UNTIL))
                    )
                ));
                let n = match db.dialect() {
                    Dialect::Sqlite => sqlx::query(sql)
                        .execute(db.as_sqlite().unwrap())
                        .await
                        .map(|r| r.rows_affected()),
                    #[cfg(feature = "postgres")]
                    Dialect::Postgres => sqlx::query(sql)
                        .execute(db.as_postgres().unwrap())
                        .await
                        .map(|r| r.rows_affected()),
                    #[cfg(feature = "mysql")]
                    Dialect::MySql => sqlx::query(sql)
                        .execute(db.as_mysql().unwrap())
                        .await
                        .map(|r| r.rows_affected()),
                    #[allow(unreachable_patterns)]
                    _ => unreachable!(),
                }
                .expect("renew job 42");
                assert_eq!(n, 1);
            }
        }
    }
}

type BoxFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

// The trait is declared with `#[async_trait]`; this is what that macro expands to (the root
// package does not depend on async-trait).
impl lease_repair::LeaseStore for RenewBeforeApply {
    fn read_candidates<'a, 'b>(
        &'a self,
        q: CandidateQuery,
    ) -> BoxFut<'b, recon_core::Result<Vec<JobRow>>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move { self.inner.read_candidates(q).await })
    }

    fn apply<'a, 'r, 'b>(
        &'a self,
        repairs: &'r [lease_repair::Repair],
        now: DateTime<Utc>,
    ) -> BoxFut<'b, recon_core::Result<lease_repair::ApplyOutcome>>
    where
        'a: 'b,
        'r: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
                self.renew.renew_42().await;
            }
            self.inner.apply(repairs, now).await
        })
    }

    fn database_now<'a, 'b>(&'a self) -> BoxFut<'b, recon_core::Result<DateTime<Utc>>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move { self.inner.database_now().await })
    }
}

async fn a_reconcile_racing_a_renewal_counts_it_as_skipped_changed(be: &Backend<'_>) {
    let (memory, jobs) = match be {
        Backend::Memory => {
            let m = Arc::new(lease_repair::MemoryLeaseStore::new());
            m.insert(scenario_a());
            (Some(m), None)
        }
        Backend::Sql(_) => {
            let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
            jobs.insert(&scenario_a(), Shape::default()).await;
            (None, Some(jobs))
        }
    };
    let (inner, renew): (Arc<dyn lease_repair::LeaseStore>, Renewer) = match (&memory, &jobs, be) {
        (Some(m), _, _) => (m.clone(), Renewer::Memory(m.clone())),
        (_, Some(j), Backend::Sql(tdb)) => (j.lease.clone(), Renewer::Sql(tdb.db.clone())),
        _ => unreachable!(),
    };
    let store = RenewBeforeApply {
        inner,
        renew,
        done: false.into(),
    };
    let r = run(&LeaseRepair::new(store, settings(false)).unwrap(), false).await;
    assert_eq!(
        [
            r.count(LEASES_REPAIRED),
            r.count(JOBS_REQUEUED),
            r.count(JOBS_FAILED),
            r.count(SKIPPED_CHANGED),
        ],
        [1, 1, 1, 1],
        "{}: job 46 repaired, 43 requeued, 42 skipped as changed",
        be.name()
    );
    let after = match (&memory, &jobs) {
        (Some(m), _) => m.jobs(),
        (_, Some(j)) => all(j).await,
        _ => unreachable!(),
    };
    assert_eq!(
        brief(&after),
        renewed_42_and_repaired(),
        "{}: the renewed lease was clobbered",
        be.name()
    );
}

fn stuck(n: i64, start: i64) -> Vec<StoredJob> {
    (start..start + n)
        .map(|k| {
            if k % 5 == 0 {
                StoredJob::new(k, "processing", None, None, Some(k % 4))
            } else {
                StoredJob::new(
                    k,
                    "processing",
                    Some("w"),
                    Some(now() - Duration::minutes(1 + k % 50)),
                    Some(k % 4),
                )
            }
        })
        .collect()
}

async fn stuck_sets_larger_than_a_batch_are_repaired_in_keyset_batches(be: &Backend<'_>) {
    let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    let seed = stuck(1234, 1);
    // live leases between the stuck ones: never touched, never counted
    let live: Vec<_> = (2001..=2100)
        .map(|k| {
            StoredJob::new(
                k,
                "processing",
                Some("w"),
                Some(now() + Duration::minutes(5)),
                Some(0),
            )
        })
        .collect();
    jobs.insert(&seed, Shape::default()).await;
    jobs.insert(&live, Shape::default()).await;
    let step = LeaseRepair::new(jobs.lease.clone(), settings(false))
        .unwrap()
        .batch_size(100)
        .unwrap();
    let r = run(&step, false).await;
    // the expected outcome, job by job, from scenario A's rule (stored attempts >= 3 → failed)
    let mut want = Vec::new();
    let (mut expired, mut requeued, mut failed) = (0, 0, 0);
    for j in &seed {
        let k = match j.row.key {
            JobKey::Int(k) => k,
            _ => unreachable!(),
        };
        let orphan = j.row.lease_owner.is_none();
        let fails = k % 4 >= 3;
        expired += u64::from(!orphan);
        requeued += u64::from(orphan && !fails);
        failed += u64::from(fails);
        want.push(b(
            k,
            if fails { "failed" } else { "retry" },
            None,
            None,
            k % 4,
            Some(if orphan { ORPHANED } else { EXPIRED }),
        ));
    }
    assert_eq!(
        (expired, requeued, failed),
        (988, 185, 308),
        "the seed's arithmetic"
    );
    assert_eq!(
        [
            r.count(LEASES_REPAIRED),
            r.count(JOBS_REQUEUED),
            r.count(JOBS_FAILED),
            r.count(ANOMALIES),
            r.count(SKIPPED_CHANGED),
        ],
        [expired, requeued, failed, 0, 0],
        "{}",
        be.name()
    );
    // 988 expired (10 batches of 100) + 246 orphans (3 batches)
    assert_eq!(r.count(BATCHES), 13, "{}", be.name());
    let after = all(&jobs).await;
    assert_eq!(brief(&after[..1234]), want, "{}", be.name());
    assert_eq!(
        after[1234..],
        live[..],
        "{}: a live lease was touched",
        be.name()
    );
}

async fn four_concurrent_reconcilers_repair_every_job_exactly_once(be: &Backend<'_>) {
    // row by row (scenario A's jittered policy), then inside the database (no jitter)
    four_concurrent(be, "processing_jobs", settings(true), false).await;
    four_concurrent(be, "planned_jobs", plain_settings(true), true).await;
}

async fn four_concurrent(be: &Backend<'_>, table: &str, s: Settings, in_db: bool) {
    let jobs = Jobs::new(be, table, Shape::default()).await;
    let n = 2000;
    let seed: Vec<_> = (1..=n)
        .map(|k| {
            StoredJob::new(
                k,
                "processing",
                Some("w"),
                Some(now() - Duration::minutes(5)),
                Some(0),
            )
        })
        .collect();
    jobs.insert(&seed, Shape::default()).await;
    let live: Vec<_> = (n + 1..=n + 100)
        .map(|k| {
            StoredJob::new(
                k,
                "processing",
                Some("w"),
                Some(now() + Duration::minutes(5)),
                Some(0),
            )
        })
        .collect();
    jobs.insert(&live, Shape::default()).await;
    let store = Arc::new(CountPlanned::new(jobs.lease.clone()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        // counting the interrupted attempt makes a double repair visible as attempts 2
        let step = LeaseRepair::new(store.clone(), s.clone())
            .unwrap()
            .batch_size(50)
            .unwrap()
            .plan_batch_size(50)
            .unwrap();
        tasks.push(tokio::spawn(async move { run(&step, false).await }));
    }
    let mut repaired = 0;
    for task in tasks {
        repaired += task.await.unwrap().count(LEASES_REPAIRED);
    }
    assert_eq!(
        store.planned() > 0,
        in_db,
        "{}: repaired inside the database",
        be.name()
    );
    assert_eq!(
        repaired,
        n as u64,
        "{}: repairs across instances",
        be.name()
    );
    let after = all(&jobs).await;
    assert_eq!(after.len(), n as usize + live.len());
    assert_eq!(
        after[n as usize..],
        live[..],
        "{}: a live lease was touched",
        be.name()
    );
    for j in &after[..n as usize] {
        assert_eq!(
            (j.row.status.as_str(), j.row.attempts),
            ("retry", Some(1)),
            "{}: job {} repaired other than exactly once",
            be.name(),
            j.row.key
        );
    }
}

async fn dry_run_changes_nothing(be: &Backend<'_>) {
    let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    jobs.insert(&scenario_a(), Shape::default()).await;
    let before = all(&jobs).await;
    let step = LeaseRepair::new(jobs.lease.clone(), settings(false)).unwrap();
    let r = run(&step, true).await;
    assert_eq!(
        (
            r.count(LEASES_REPAIRED),
            r.count(JOBS_REQUEUED),
            r.count(JOBS_FAILED)
        ),
        (2, 1, 1),
        "dry run reports what it would do"
    );
    assert_eq!(
        all(&jobs).await,
        before,
        "{}: dry run changed rows",
        be.name()
    );
}

async fn anomalies_are_reported_and_left_alone(be: &Backend<'_>) {
    let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    let rows = vec![
        StoredJob::new(1, "processing", Some("w"), None, Some(0)),
        StoredJob::new(
            2,
            "processing",
            Some("w"),
            Some(t("2031-01-01T00:00:00Z")),
            Some(0),
        ),
        StoredJob::new(
            3,
            "processing",
            Some("w"),
            Some(t("2024-01-24T13:00:00Z")),
            None,
        ),
        StoredJob::new(
            4,
            "processing",
            Some("w"),
            Some(t("2024-01-24T10:00:00Z")),
            Some(-2),
        ),
        StoredJob::new(
            5,
            "processing",
            Some("w"),
            Some(t("1969-07-20T20:17:00Z")),
            Some(1),
        ),
    ];
    jobs.insert(&rows, Shape::default()).await;
    let before = all(&jobs).await;
    let step = LeaseRepair::new(jobs.lease.clone(), settings(false)).unwrap();
    let r = run(&step, false).await;
    assert_eq!(r.count(ANOMALIES), 4, "{}", be.name());
    assert_eq!(
        r.count(LEASES_REPAIRED),
        1,
        "a lease that ended before 1970 is still expired"
    );
    let listed: Vec<(String, String)> = r.details()["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap().into(),
                a["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut listed = listed;
    listed.sort();
    assert_eq!(
        listed,
        [
            ("1".to_owned(), "owner_without_expiry".to_owned()),
            ("2".into(), "expiry_too_far_ahead".into()),
            ("3".into(), "invalid_attempts".into()),
            ("4".into(), "invalid_attempts".into()),
        ],
        "{}: anomalies reported",
        be.name()
    );
    let after = all(&jobs).await;
    assert_eq!(
        brief(&after[..4]),
        brief(&before[..4]),
        "{}: anomalies changed",
        be.name()
    );
}

async fn candidate_reads_agree_with_the_reference_definition(be: &Backend<'_>) {
    let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    // every combination of status × owner × expiry × attempts around `now`
    let mut rows = Vec::new();
    let mut k = 0;
    // `PROCESSING` is an unknown status: equal to `processing` under MariaDB's usual
    // collation, so this also checks that states are compared exactly there
    for st in ["processing", "retry", "PROCESSING"] {
        for owner in [None, Some("w")] {
            for exp in [
                None,
                Some(-3600),
                Some(-1),
                Some(0),
                Some(1),
                Some(3600),
                Some(90_000),
            ] {
                for att in [None, Some(-1), Some(0), Some(5)] {
                    k += 1;
                    rows.push(StoredJob::new(
                        k,
                        st,
                        owner,
                        exp.map(|s| now() + Duration::seconds(s)),
                        att,
                    ));
                }
            }
        }
    }
    jobs.insert(&rows, Shape::default()).await;
    for kind in CandidateKind::ALL {
        let q = CandidateQuery {
            kind,
            processing_state: "processing".into(),
            now: now(),
            max_lease: Some(Duration::hours(24)),
            known_states: vec!["retry".into()],
            after: None,
            limit: 1000,
        };
        let want: Vec<JobRow> = rows
            .iter()
            .map(|j| j.row.clone())
            .filter(|r| kind.matches(r, &q))
            .collect();
        let got = jobs.lease.read_candidates(q.clone()).await.unwrap();
        assert_eq!(got, want, "{}: {kind:?}", be.name());
        // keyset: the second half after the middle key
        if let Some(mid) = want.get(want.len() / 2) {
            let q2 = CandidateQuery {
                after: Some(mid.key.clone()),
                ..q
            };
            let got2 = jobs.lease.read_candidates(q2).await.unwrap();
            assert_eq!(
                got2,
                want[want.len() / 2 + 1..].to_vec(),
                "{}: keyset {kind:?}",
                be.name()
            );
        }
    }
}

/// `any_stuck` says yes for a table with one candidate of any stuck kind, and no for a table
/// of live leases and finished jobs only.
async fn any_stuck_answers_for_every_stuck_kind(be: &Backend<'_>) {
    let calm = [
        StoredJob::new(
            1,
            "processing",
            Some("w"),
            Some(now() + Duration::minutes(5)),
            Some(0),
        ),
        StoredJob::new(2, "done", None, None, Some(1)),
    ];
    let cases = [
        ("stuck_none", None, false),
        (
            "stuck_expired",
            Some(StoredJob::new(
                3,
                "processing",
                Some("w"),
                Some(now() - Duration::minutes(5)),
                Some(0),
            )),
            true,
        ),
        (
            "stuck_orphan",
            Some(StoredJob::new(3, "processing", None, None, Some(0))),
            true,
        ),
        (
            "stuck_anomaly",
            Some(StoredJob::new(3, "processing", Some("w"), None, Some(0))),
            true,
        ),
    ];
    for (table, extra, want) in cases {
        let jobs = Jobs::new(be, table, Shape::default()).await;
        jobs.insert(&calm, Shape::default()).await;
        jobs.insert(&extra.into_iter().collect::<Vec<_>>(), Shape::default())
            .await;
        let q = CandidateQuery {
            kind: CandidateKind::ExpiredLease,
            processing_state: "processing".into(),
            now: now(),
            max_lease: Some(Duration::hours(24)),
            known_states: vec![],
            after: None,
            limit: 1,
        };
        assert_eq!(
            jobs.lease.any_stuck(q).await.unwrap(),
            want,
            "{}: {table}",
            be.name()
        );
    }
}

async fn text_and_uuid_keys_work(be: &Backend<'_>) {
    for key in [KeyKind::Text, KeyKind::Uuid] {
        let shape = Shape {
            key,
            ..Shape::default()
        };
        let table = if key == KeyKind::Text {
            "jobs_text"
        } else {
            "jobs_uuid"
        };
        let jobs = Jobs::new(be, table, shape).await;
        let ids = [
            "0b6b7a1e-0000-4000-8000-000000000001",
            "0b6b7a1e-0000-4000-8000-000000000002",
            "0b6b7a1e-0000-4000-8000-000000000003",
        ];
        let rows: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                StoredJob::new(
                    *id,
                    "processing",
                    Some("w"),
                    Some(now() - Duration::minutes(i as i64 + 1)),
                    Some(0),
                )
            })
            .collect();
        jobs.insert(&rows, shape).await;
        let step = LeaseRepair::new(jobs.lease.clone(), settings(false))
            .unwrap()
            .batch_size(2)
            .unwrap();
        let r = run(&step, false).await;
        assert_eq!(r.count(LEASES_REPAIRED), 3, "{}: {key:?}", be.name());
        assert_eq!(r.count(BATCHES), 2);
        assert!(all(&jobs).await.iter().all(|j| j.row.status == "retry"));
    }
}

async fn prune_deletes_or_archives_old_terminal_jobs(be: &Backend<'_>) {
    let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    let mut rows = Vec::new();
    for k in 1..=25 {
        let st = ["done", "failed", "processing", "retry", "done"][(k % 5) as usize];
        let mut j = StoredJob::new(k, st, None, None, Some(1));
        j.updated_at = Some(if k <= 20 {
            t("2023-11-01T00:00:00Z")
        } else {
            t("2024-01-20T00:00:00Z")
        });
        rows.push(j);
    }
    jobs.insert(&rows, Shape::default()).await;
    let terminal = vec!["done".to_owned(), "failed".to_owned()];
    let archive = LeasePrune::new(
        jobs.prune.clone(),
        terminal.clone(),
        Duration::days(30),
        PruneMode::Archive,
    )
    .unwrap()
    .batch_size(5)
    .unwrap();
    assert_eq!(
        run(&archive, true).await.count(ARCHIVED),
        12,
        "{}",
        be.name()
    );
    assert_eq!(all(&jobs).await.len(), 25, "dry run keeps everything");
    let r = run(&archive, false).await;
    assert_eq!(r.count(ARCHIVED), 12, "{}", be.name());
    assert_eq!(all(&jobs).await.len(), 13);
    let archived = archived(&jobs).await;
    assert_eq!(archived.len(), 12, "{}: archived rows are kept", be.name());
    assert!(
        archived
            .iter()
            .all(|j| j.row.status == "done" || j.row.status == "failed")
    );
    assert_eq!(run(&archive, false).await.count(ARCHIVED), 0, "idempotent");
}

async fn database_time_basis_uses_the_database_clock(be: &Backend<'_>) {
    let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    // expired by the real clock, live by scenario A's frozen now
    let real = Utc::now();
    jobs.insert(
        &[StoredJob::new(
            1,
            "processing",
            Some("w"),
            Some(real - Duration::minutes(10)),
            Some(0),
        )],
        Shape::default(),
    )
    .await;
    let step = LeaseRepair::new(jobs.lease.clone(), settings(false)).unwrap();
    let ctx = RunContext::new(real - Duration::hours(1));
    assert_eq!(
        step.reconcile(&ctx).await.unwrap().count(LEASES_REPAIRED),
        0
    );
    let step = step.time_basis(TimeBasis::Database);
    assert_eq!(
        step.reconcile(&ctx).await.unwrap().count(LEASES_REPAIRED),
        1,
        "{}",
        be.name()
    );
}

async fn sqlite_timestamp_formats(be: &Backend<'_>) {
    let Backend::Sql(tdb) = be else { return };
    if tdb.db.dialect() != Dialect::Sqlite {
        return;
    }
    for f in [TimestampFormat::SqliteText, TimestampFormat::UnixSeconds] {
        let shape = Shape {
            sqlite_ts: f,
            ..Shape::default()
        };
        let table = format!("jobs_{f:?}").to_lowercase();
        let jobs = Jobs::new(be, &table, shape).await;
        jobs.insert(&scenario_a(), shape).await;
        let r = run(
            &LeaseRepair::new(jobs.lease.clone(), settings(false)).unwrap(),
            false,
        )
        .await;
        assert_eq!(
            (
                r.count(LEASES_REPAIRED),
                r.count(JOBS_REQUEUED),
                r.count(JOBS_FAILED)
            ),
            (2, 1, 1),
            "{f:?}"
        );
        let after = all(&jobs).await;
        assert_eq!(after[3].row.status, "processing", "{f:?}: live lease kept");
        assert_eq!(
            after[4].failed_at,
            Some(now()),
            "{f:?}: failed_at written in the table's format"
        );
    }
}

async fn verify_names_what_is_missing(be: &Backend<'_>) {
    let Backend::Sql(tdb) = be else { return };
    let _jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    let map = |table: &str| store_sqlx::JobTable::builder(table);
    let err = tdb
        .db
        .lease_store(map("no_such_jobs").build().unwrap())
        .verify()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("table no_such_jobs does not exist"),
        "{err}"
    );
    let err = tdb
        .db
        .lease_store(
            map("processing_jobs")
                .lease_owner("owner")
                .attempts("tries")
                .build()
                .unwrap(),
        )
        .verify()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("has no column(s) owner, tries"), "{msg}");
    // Quoted names are case-sensitive on PostgreSQL only; verify follows each backend's rules.
    let upper = tdb
        .db
        .lease_store(map("processing_jobs").status("STATUS").build().unwrap())
        .verify()
        .await;
    let table_case = tdb
        .db
        .lease_store(map("Processing_Jobs").build().unwrap())
        .verify()
        .await;
    let err = match tdb.db.dialect() {
        Dialect::Postgres => {
            let e = upper.unwrap_err();
            assert!(e.to_string().contains("did you mean `status`"), "{e}");
            let e = table_case.unwrap_err();
            assert!(
                e.to_string().contains("did you mean `processing_jobs`"),
                "{e}"
            );
            e
        }
        _ => {
            upper.expect("SQLite and MySQL match column names without regard to case");
            if tdb.db.dialect() == Dialect::Sqlite {
                table_case.expect("SQLite matches table names without regard to case");
            }
            tdb.db
                .lease_store(map("no_such_jobs").build().unwrap())
                .verify()
                .await
                .unwrap_err()
        }
    };
    // recon converts it into a config error for the runner
    let core: recon_core::Error = err.into();
    assert!(!core.is_transient());
}

async fn bad_mappings_are_rejected_before_any_sql(_be: &Backend<'_>) {
    use store_sqlx::JobTable;
    for (what, r) in [
        ("table", JobTable::builder("jobs; DROP TABLE jobs").build()),
        (
            "status",
            JobTable::builder("jobs")
                .status("status\" OR 1=1 --")
                .build(),
        ),
        (
            "owner",
            JobTable::builder("jobs").lease_owner("x`y").build(),
        ),
        (
            "expiry",
            JobTable::builder("jobs").lease_expires_at("a b").build(),
        ),
        ("attempts", JobTable::builder("jobs").attempts("").build()),
        (
            "error",
            JobTable::builder("jobs").last_error("1col").build(),
        ),
        ("next", JobTable::builder("jobs").next_run_at("n'x").build()),
        (
            "archive",
            JobTable::builder("jobs").archive_table("a.b.c").build(),
        ),
        (
            "twice",
            JobTable::builder("jobs").attempts("status").build(),
        ),
    ] {
        let e = r.expect_err(what).to_string();
        assert!(
            e.contains("invalid identifier") || e.contains("mapped twice"),
            "{what}: {e}"
        );
    }
    let e = JobTable::builder("jobs")
        .lease_owner("x`y")
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"x`y\"") && e.contains("lease owner column"),
        "the error names the setting and the rejected name: {e}"
    );
    let e = JobTable::builder("jobs")
        .attempts("status")
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("column `status` is mapped twice"), "{e}");
}

async fn a_key_of_the_wrong_type_is_an_error(be: &Backend<'_>) {
    if matches!(be, Backend::Memory) {
        return;
    }
    let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    let q = CandidateQuery {
        kind: CandidateKind::ExpiredLease,
        processing_state: "processing".into(),
        now: now(),
        max_lease: None,
        known_states: vec![],
        after: Some(JobKey::Text("not-an-int".into())),
        limit: 10,
    };
    let err = jobs.lease.read_candidates(q).await.unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let _ = Arc::new(());
}

async fn unknown_status_values_are_reported_when_asked_and_never_changed(be: &Backend<'_>) {
    let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    let statuses = [
        "procesing",
        "PROCESSING",
        " processing",
        "processing ",
        "",
        "pending",
        "done",
        "retry",
        "Pending",
    ];
    let mut rows: Vec<_> = statuses
        .iter()
        .enumerate()
        .map(|(i, st)| StoredJob::new(i as i64 + 1, st, None, None, Some(0)))
        .collect();
    rows.push(StoredJob::new(10, "processing", None, None, Some(0)));
    jobs.insert(&rows, Shape::default()).await;
    let before = all(&jobs).await;
    // off (the default): nothing reported, only the real orphan repaired
    let r = run(
        &LeaseRepair::new(jobs.lease.clone(), settings(false)).unwrap(),
        true,
    )
    .await;
    assert_eq!(
        (r.count(ANOMALIES), r.count(JOBS_REQUEUED)),
        (0, 1),
        "{}",
        be.name()
    );
    let mut s = settings(false);
    s.report_unknown_status = Some(vec!["pending".into(), "done".into()]);
    let step = LeaseRepair::new(jobs.lease.clone(), s)
        .unwrap()
        .batch_size(2)
        .unwrap();
    let r = run(&step, false).await;
    assert_eq!(
        (
            r.count(ANOMALIES),
            r.count(JOBS_REQUEUED),
            r.count(LEASES_REPAIRED)
        ),
        (6, 1, 0),
        "{}",
        be.name()
    );
    let listed: Vec<(String, String, String)> = r.details()["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap().into(),
                a["kind"].as_str().unwrap().into(),
                a["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [1, 2, 3, 4, 5, 9]
        .iter()
        .map(|&k| {
            (
                k.to_string(),
                "unknown_status".into(),
                statuses[k - 1].into(),
            )
        })
        .collect();
    assert_eq!(listed, want, "{}: compared exactly", be.name());
    let after = all(&jobs).await;
    assert_eq!(
        after[..9],
        before[..9],
        "{}: reported rows changed",
        be.name()
    );
    assert_eq!(after[9].row.status, "retry");
    // a second run reports the same rows again and changes nothing
    let again = run(&step, false).await;
    assert_eq!((again.count(ANOMALIES), again.count(JOBS_REQUEUED)), (6, 0));
    assert_eq!(all(&jobs).await, after);
}

async fn prune_deletes_old_terminal_jobs_in_batches(be: &Backend<'_>) {
    let jobs = Jobs::new(be, "processing_jobs", Shape::default()).await;
    let mut rows = Vec::new();
    for k in 1..=25 {
        let st = ["done", "failed", "processing", "retry", "done"][(k % 5) as usize];
        let mut j = StoredJob::new(k, st, None, None, Some(1));
        j.updated_at = Some(if k <= 20 {
            t("2023-11-01T00:00:00Z")
        } else {
            t("2024-01-20T00:00:00Z")
        });
        rows.push(j);
    }
    jobs.insert(&rows, Shape::default()).await;
    let keep: Vec<StoredJob> = rows
        .iter()
        .filter(|j| {
            !(["done", "failed"].contains(&j.row.status.as_str())
                && j.updated_at < Some(t("2023-12-25T12:00:00Z")))
        })
        .cloned()
        .collect();
    assert_eq!(keep.len(), 13);
    let prune = LeasePrune::new(
        jobs.prune.clone(),
        vec!["done".to_owned(), "failed".to_owned()],
        Duration::days(30),
        PruneMode::Delete,
    )
    .unwrap()
    .batch_size(5)
    .unwrap();
    let dry = run(&prune, true).await;
    assert_eq!(dry.count(PRUNED), 12, "{}", be.name());
    assert_eq!(all(&jobs).await, rows, "{}: dry run deleted", be.name());
    let r = run(&prune, false).await;
    assert_eq!(
        (r.count(PRUNED), r.count(BATCHES)),
        (12, 3),
        "{}",
        be.name()
    );
    assert_eq!(
        all(&jobs).await,
        keep,
        "{}: exactly the old terminal jobs go",
        be.name()
    );
    assert!(
        archived(&jobs).await.is_empty(),
        "delete mode archives nothing"
    );
    assert_eq!(run(&prune, false).await.count(PRUNED), 0, "idempotent");
}

crate::conformance!(
    in_the_database_and_row_by_row_give_the_same_jobs,
    any_stuck_answers_for_every_stuck_kind,
    scenario_a_jobs_row_by_row,
    scenario_a_jobs_counting_the_interrupted_attempt,
    a_lease_renewed_between_read_and_write_is_not_clobbered,
    stuck_sets_larger_than_a_batch_are_repaired_in_keyset_batches,
    four_concurrent_reconcilers_repair_every_job_exactly_once,
    dry_run_changes_nothing,
    anomalies_are_reported_and_left_alone,
    candidate_reads_agree_with_the_reference_definition,
    text_and_uuid_keys_work,
    prune_deletes_or_archives_old_terminal_jobs,
    database_time_basis_uses_the_database_clock,
    sqlite_timestamp_formats,
    verify_names_what_is_missing,
    bad_mappings_are_rejected_before_any_sql,
    a_key_of_the_wrong_type_is_an_error,
    unknown_status_values_are_reported_when_asked_and_never_changed,
    prune_deletes_old_terminal_jobs_in_batches,
    a_reconcile_racing_a_renewal_counts_it_as_skipped_changed,
);

/// Tests that need a real database's locks.
mod locks {
    use super::*;
    use crate::common::TestDb;

    /// A worker holds job 42's row in an open transaction, renewing its lease, while the step
    /// repairs inside the database. PostgreSQL and MariaDB skip the row it holds (the row-by-row
    /// pass after the plan then finds it locked too and counts it as `skipped_changed`); SQLite
    /// has one writer at a time, so the step waits for the worker and then sees the renewal.
    /// Either way the renewal stands.
    async fn a_row_a_worker_holds_is_never_repaired_in_the_database(t: &TestDb) {
        let be = Backend::Sql(t);
        let jobs = Jobs::new(&be, "processing_jobs", Shape::default()).await;
        jobs.insert(&scenario_a(), Shape::default()).await;
        let d = t.db.dialect();
        let renew = format!(
            "UPDATE processing_jobs SET locked_until = {} WHERE id = 42",
            crate::jobs::ts_lit(d, TimestampFormat::Rfc3339, Some(super::t(RENEWED_UNTIL)))
        );
        let store = Arc::new(CountPlanned::new(jobs.lease.clone()));
        let step = LeaseRepair::new(store.clone(), plain_settings(false)).unwrap();
        macro_rules! hold {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await.unwrap();
                let n = sqlx::query(sqlx::AssertSqlSafe(renew.clone()))
                    .execute(&mut *tx)
                    .await
                    .unwrap()
                    .rows_affected();
                assert_eq!(n, 1);
                if d == Dialect::Sqlite {
                    let commit = tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                        tx.commit().await.unwrap();
                    });
                    let r = run(&step, false).await;
                    commit.await.unwrap();
                    r
                } else {
                    let r = run(&step, false).await;
                    tx.commit().await.unwrap();
                    r
                }
            }};
        }
        let r = match d {
            Dialect::Sqlite => hold!(t.db.as_sqlite().unwrap()),
            #[cfg(feature = "postgres")]
            Dialect::Postgres => hold!(t.db.as_postgres().unwrap()),
            #[cfg(feature = "mysql")]
            Dialect::MySql => hold!(t.db.as_mysql().unwrap()),
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        };
        let skipped = u64::from(d != Dialect::Sqlite);
        assert_eq!(
            [
                r.count(LEASES_REPAIRED),
                r.count(JOBS_REQUEUED),
                r.count(JOBS_FAILED),
                r.count(SKIPPED_CHANGED),
            ],
            [1, 1, 1, skipped],
            "{}: 46 failed, 43 requeued, 42 left to its worker",
            be.name()
        );
        assert!(
            store.planned() > 0,
            "{}: repaired inside the database",
            be.name()
        );
        let after = all(&jobs).await;
        assert_eq!(brief(&after), renewed_42_and_repaired(), "{}", be.name());
    }

    /// A host trigger that rewrites `last_error` as a job is updated: PostgreSQL's key-range
    /// batches count repairs by the message each kind writes, so such rows cannot be counted
    /// that way; the batch goes the locking way instead. Repairs, counters and rows come out as
    /// on a table without the trigger (but for the trigger's own suffix).
    async fn a_trigger_that_rewrites_the_message_changes_nothing_else(t: &TestDb) {
        let be = Backend::Sql(t);
        let d = t.db.dialect();
        let mut outcomes = Vec::new();
        for trigger in [false, true] {
            let table = format!("rewritten_{}", u8::from(trigger));
            let jobs = Jobs::new(&be, &table, Shape::default()).await;
            jobs.insert(&mixed(300, KeyKind::Integer), Shape::default())
                .await;
            if trigger {
                match d {
                    Dialect::Postgres => {
                        t.exec(
                            "CREATE FUNCTION rewrite_message() RETURNS trigger LANGUAGE plpgsql AS $$ \
                             BEGIN NEW.last_error := NEW.last_error || ' (seen)'; RETURN NEW; END $$",
                        )
                        .await;
                        t.exec(&format!(
                            "CREATE TRIGGER rewrite BEFORE UPDATE ON {table} FOR EACH ROW \
                             EXECUTE FUNCTION rewrite_message()"
                        ))
                        .await;
                    }
                    Dialect::MySql => {
                        t.exec(&format!(
                            "CREATE TRIGGER rewrite BEFORE UPDATE ON {table} FOR EACH ROW \
                             SET NEW.last_error = CONCAT(NEW.last_error, ' (seen)')"
                        ))
                        .await;
                    }
                    // (SQLite's triggers cannot change the row being written; this one
                    // writes it again, after `RETURNING` has seen it)
                    _ => {
                        t.exec(&format!(
                            "CREATE TRIGGER rewrite AFTER UPDATE OF status ON {table} FOR EACH ROW \
                             BEGIN UPDATE {table} SET last_error = NEW.last_error || ' (seen)' \
                             WHERE id = NEW.id; END"
                        ))
                        .await;
                    }
                }
            }
            let store = Arc::new(CountPlanned::new(jobs.lease.clone()));
            let step = LeaseRepair::new(store.clone(), plain_settings(false))
                .unwrap()
                .plan_batch_size(41)
                .unwrap();
            let r = run(&step, false).await;
            assert!(store.planned() > 0, "{}: in the database", be.name());
            let counters: Vec<u64> = OUTCOME.map(|c| r.count(c)).to_vec();
            let mut after = brief(&all(&jobs).await);
            for row in &mut after {
                if let Some(e) = &mut row.5 {
                    *e = e.trim_end_matches(" (seen)").to_owned();
                }
            }
            outcomes.push((counters, after));
        }
        assert!(outcomes[0].0[0] > 50, "{}: {:?}", be.name(), outcomes[0].0);
        assert_eq!(outcomes[0], outcomes[1], "{}", be.name());
    }

    /// Plans a store cannot apply — of another kind than expired leases and orphans, or for two
    /// processing states — are errors that change nothing; no plans at all is an empty batch.
    async fn plans_the_store_cannot_apply_are_errors_that_change_nothing(t: &TestDb) {
        let be = Backend::Sql(t);
        let jobs = Jobs::new(&be, "processing_jobs", Shape::default()).await;
        jobs.insert(&scenario_a(), Shape::default()).await;
        let before = all(&jobs).await;
        let plan = lease_repair::RepairPlan::new(
            CandidateKind::ExpiredLease,
            now(),
            &plain_settings(false),
        )
        .unwrap();
        let empty = jobs.lease.repair_planned(&[], None, 10).await.unwrap();
        assert_eq!(empty.map(|b| b.repaired()), Some(0), "{}", be.name());
        let mut anomaly = plan.clone();
        anomaly.kind = CandidateKind::Anomaly;
        let mut elsewhere = plan.clone();
        elsewhere.processing_state = "running".into();
        for (plans, says) in [
            (vec![anomaly], "not Anomaly"),
            (vec![plan, elsewhere], "two processing states"),
        ] {
            let e = jobs
                .lease
                .repair_planned(&plans, None, 10)
                .await
                .expect_err("refused");
            assert!(format!("{e:#}").contains(says), "{}: {e:#}", be.name());
        }
        assert_eq!(all(&jobs).await, before, "{}", be.name());
    }

    /// A host trigger that changes *other* jobs as each one is repaired: here the next job's
    /// attempts, which turns its retry into giving up. SQLite fires it as each row is written
    /// (its `UPDATE` collects the range's rows first, then writes them in key order, reading
    /// each as it stands then), so a count taken before the `UPDATE` would be wrong: a table
    /// with triggers is repaired the `RETURNING` way. PostgreSQL fires it at the end of the
    /// statement, when only the job after the batch is still processing. Either way the
    /// counters say what the table holds afterwards.
    /// MariaDB refuses a trigger that writes the table whose statement fired it: the run fails
    /// and nothing changes.
    async fn a_trigger_that_changes_other_jobs_is_counted_as_written(t: &TestDb) {
        let be = Backend::Sql(t);
        let d = t.db.dialect();
        let jobs = Jobs::new(&be, "nudged", Shape::default()).await;
        jobs.insert(&mixed(300, KeyKind::Integer), Shape::default())
            .await;
        let nudge =
            "UPDATE nudged SET attempts = 4 WHERE id = NEW.id + 1 AND status = 'processing'";
        match d {
            Dialect::Postgres => {
                t.exec(&format!(
                    "CREATE FUNCTION nudge_next() RETURNS trigger LANGUAGE plpgsql AS $$ \
                     BEGIN {nudge}; RETURN NULL; END $$"
                ))
                .await;
                t.exec(
                    "CREATE TRIGGER nudge AFTER UPDATE OF status ON nudged FOR EACH ROW \
                     WHEN (NEW.status <> 'processing') EXECUTE FUNCTION nudge_next()",
                )
                .await;
            }
            Dialect::MySql => {
                t.exec(&format!(
                    "CREATE TRIGGER nudge AFTER UPDATE ON nudged FOR EACH ROW {nudge}"
                ))
                .await;
            }
            _ => {
                t.exec(&format!(
                    "CREATE TRIGGER nudge AFTER UPDATE OF status ON nudged FOR EACH ROW \
                     WHEN NEW.status <> 'processing' BEGIN {nudge}; END"
                ))
                .await;
            }
        }
        let before = all(&jobs).await;
        let store = Arc::new(CountPlanned::new(jobs.lease.clone()));
        let step = LeaseRepair::new(store.clone(), plain_settings(false))
            .unwrap()
            .plan_batch_size(41)
            .unwrap();
        let r = step.reconcile(&RunContext::new(now())).await;
        if d == Dialect::MySql {
            let e = r.expect_err("MariaDB refuses the trigger");
            assert!(format!("{e:#}").contains("nudged"), "{e:#}");
            assert_eq!(all(&jobs).await, before, "{}", be.name());
            return;
        }
        let r = r.unwrap();
        assert!(store.planned() > 0, "{}: in the database", be.name());
        let after = all(&jobs).await;
        // (expired leases repaired, orphans requeued, jobs given up), as the counters count
        let (mut table, mut nudged) = ([0; 3], 0);
        for (was, is) in before.iter().zip(&after) {
            if was.row.status == "processing" && is.row.status != "processing" {
                let failed = is.row.status == "failed";
                if was.row.lease_expires_at.is_some() {
                    table[0] += 1;
                } else if !failed {
                    table[1] += 1;
                }
                if failed {
                    table[2] += 1;
                    nudged += u64::from(matches!(was.row.attempts, Some(a) if a < 3));
                }
            }
        }
        assert_eq!(
            [
                r.count(LEASES_REPAIRED),
                r.count(JOBS_REQUEUED),
                r.count(JOBS_FAILED)
            ],
            table,
            "{}: counters against the table",
            be.name()
        );
        // the trigger did turn retries into failures (on PostgreSQL only the first job of
        // each next batch)
        assert!(nudged > 0, "{}: nothing nudged", be.name());
    }

    /// A host constraint the repair breaks part-way through a statement — here "at most one
    /// failed job" — fails the run with the database's error and leaves the batch as it was,
    /// the jobs written before the failing one included (the batch's transaction is rolled
    /// back whole), both ways.
    async fn a_constraint_the_repair_breaks_leaves_its_batch_as_it_was(t: &TestDb) {
        let be = Backend::Sql(t);
        for in_db in [true, false] {
            let table = format!("guarded_{}", u8::from(in_db));
            let jobs = Jobs::new(&be, &table, Shape::default()).await;
            jobs.insert(&mixed(120, KeyKind::Integer), Shape::default())
                .await;
            match t.db.dialect() {
                // (no partial indexes: a check that no job fails at all, broken by the first)
                Dialect::MySql => {
                    t.exec(&format!(
                        "ALTER TABLE {table} ADD CONSTRAINT {table}_once CHECK (status <> 'failed')"
                    ))
                    .await;
                }
                _ => {
                    t.exec(&format!(
                        "CREATE UNIQUE INDEX {table}_once ON {table} (status) WHERE status = 'failed'"
                    ))
                    .await;
                }
            }
            let before = all(&jobs).await;
            let store = Arc::new(CountPlanned::new(jobs.lease.clone()));
            let step = LeaseRepair::new(store.clone(), plain_settings(false))
                .unwrap()
                .batch_size(1000)
                .unwrap()
                .plan_batch_size(1000)
                .unwrap()
                .in_database(in_db);
            let e = step
                .reconcile(&RunContext::new(now()))
                .await
                .expect_err("the constraint refuses the batch");
            assert!(
                format!("{e:#}").to_lowercase().contains("constraint"),
                "{}: {e:#}",
                be.name()
            );
            assert_eq!(store.planned(), 0, "{}: no batch went through", be.name());
            assert_eq!(
                all(&jobs).await,
                before,
                "{}: in the database {in_db}",
                be.name()
            );
        }
    }

    crate::conformance_sql!(
        plans_the_store_cannot_apply_are_errors_that_change_nothing,
        a_row_a_worker_holds_is_never_repaired_in_the_database,
        a_trigger_that_rewrites_the_message_changes_nothing_else,
        a_trigger_that_changes_other_jobs_is_counted_as_written,
        a_constraint_the_repair_breaks_leaves_its_batch_as_it_was,
    );
}
