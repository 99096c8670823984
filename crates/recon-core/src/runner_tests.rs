//! Behaviour of the runner. Steps are mockall mocks where only calls matter, and small
//! hand-written reconcilers where a step must sleep or panic.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mockall::Sequence;

use crate::reconciler::MockReconciler;
use crate::*;

fn t0() -> DateTime<Utc> {
    "2024-01-24T12:00:00Z".parse().unwrap()
}

const TOUCHED: Counter = Counter::new("touched");

fn mock(name: &str) -> MockReconciler {
    let mut m = MockReconciler::new();
    m.expect_name().return_const(name.to_owned());
    m
}

fn ok_step(name: &'static str, seq: &mut Sequence) -> MockReconciler {
    let mut m = mock(name);
    m.expect_reconcile()
        .times(1)
        .in_sequence(seq)
        .returning(move |_| {
            let mut r = StepReport::new(name);
            r.add(TOUCHED, 1);
            Ok(r)
        });
    m
}

fn never_called(name: &str) -> MockReconciler {
    let mut m = mock(name);
    m.expect_reconcile().never();
    m
}

/// A step that sleeps, then reports; counts how many copies run at once and how many got past
/// their sleep (a cancelled step never does).
struct Sleeper {
    name: &'static str,
    sleep: Duration,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    runs: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
}

impl Sleeper {
    fn new(name: &'static str, sleep: Duration) -> Self {
        Self {
            name,
            sleep,
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            runs: Arc::default(),
            finished: Arc::default(),
        }
    }
}

#[async_trait]
impl Reconciler for Sleeper {
    fn name(&self) -> &str {
        self.name
    }
    async fn reconcile(&self, _ctx: &RunContext) -> Result<StepReport> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.sleep).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(StepReport::new(self.name))
    }
}

struct Panicker;

#[async_trait]
impl Reconciler for Panicker {
    fn name(&self) -> &str {
        "panicker"
    }
    async fn reconcile(&self, _ctx: &RunContext) -> Result<StepReport> {
        panic!("host bug in a step")
    }
}

fn runner(name: &str) -> RunnerBuilder {
    Runner::builder(name).time_source(Arc::new(ManualClock::at(t0())))
}

#[tokio::test]
async fn steps_run_in_order_with_the_frozen_now() {
    let mut seq = Sequence::new();
    let mut a = mock("a");
    a.expect_reconcile()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|ctx| ctx.now() == t0() && ctx.step() == "a" && !ctx.is_dry_run())
        .returning(|_| Ok(StepReport::new("a")));
    let b = ok_step("b", &mut seq);
    let c = ok_step("c", &mut seq);
    let report = runner("startup")
        .step(a)
        .step(b)
        .step(c)
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(report.status, RunStatus::Success, "{report:#?}");
    let names: Vec<_> = report.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(report.count(TOUCHED), 2);
    assert_eq!(report.started_at, t0());
    assert!(report.errors.is_empty());
}

#[tokio::test]
async fn a_failing_step_does_not_stop_later_steps() {
    let mut seq = Sequence::new();
    let mut a = mock("a");
    a.expect_reconcile()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| {
            Err(Error::transient(
                "read jobs",
                std::io::Error::other("connection reset"),
            ))
        });
    let b = ok_step("b", &mut seq);
    let report = runner("r").step(a).step(b).build().unwrap().run().await;
    assert_eq!(report.status, RunStatus::Partial);
    let a = report.step("a").unwrap();
    assert_eq!(a.status, StepStatus::Failed);
    let err = a.error.as_ref().unwrap();
    assert!(err.transient);
    assert_eq!(err.message, "read jobs: connection reset");
    assert_eq!(report.step("b").unwrap().status, StepStatus::Succeeded);
    assert_eq!(report.errors, ["a: read jobs: connection reset"]);
}

#[tokio::test]
async fn a_failing_required_step_stops_the_run() {
    let mut a = mock("health");
    a.expect_reconcile().times(1).returning(|_| {
        Err(Error::permanent(
            "SELECT 1",
            std::io::Error::other("refused"),
        ))
    });
    let report = runner("r")
        .required_step(a)
        .step(never_called("b"))
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(report.status, RunStatus::Failed);
    let b = report.step("b").unwrap();
    assert_eq!(b.status, StepStatus::NotRun);
    assert!(
        b.error
            .as_ref()
            .unwrap()
            .message
            .contains("required step `health`")
    );
}

#[tokio::test]
async fn item_errors_make_the_run_partial() {
    let mut a = mock("a");
    a.expect_reconcile().times(1).returning(|_| {
        let mut r = StepReport::new("a");
        r.push_error("job 7", "payload is not JSON");
        Ok(r)
    });
    let report = runner("r").step(a).build().unwrap().run().await;
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.all_errors(), ["a: job 7: payload is not JSON"]);
}

#[tokio::test]
async fn a_panicking_step_is_recorded_and_the_next_step_runs() {
    let mut seq = Sequence::new();
    let report = runner("r")
        .step(Panicker)
        .step(ok_step("b", &mut seq))
        .build()
        .unwrap()
        .run()
        .await;
    let p = report.step("panicker").unwrap();
    assert_eq!(p.status, StepStatus::Failed);
    assert_eq!(
        p.error.as_ref().unwrap().message,
        "step panicked: host bug in a step"
    );
    assert_eq!(report.step("b").unwrap().status, StepStatus::Succeeded);
    assert_eq!(report.status, RunStatus::Partial);
}

#[tokio::test(start_paused = true)]
async fn a_step_timeout_cancels_the_step_and_the_next_step_runs() {
    let slow = Sleeper::new("slow", Duration::from_secs(60));
    let finished = slow.finished.clone();
    let mut seq = Sequence::new();
    let report = runner("r")
        .step_with(slow, StepOptions::new().timeout(Duration::from_secs(5)))
        .step(ok_step("b", &mut seq))
        .build()
        .unwrap()
        .run()
        .await;
    let s = report.step("slow").unwrap();
    assert_eq!(s.status, StepStatus::TimedOut);
    let e = s.error.as_ref().unwrap();
    assert!(e.transient);
    assert!(e.message.contains("step timeout"), "{}", e.message);
    assert_eq!(s.report.duration_ms(), 5_000);
    assert_eq!(report.step("b").unwrap().status, StepStatus::Succeeded);
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.duration_ms, 5_000);
    // Cancelled, not merely abandoned: long after its sleep would have ended, the step has
    // still not got past it (a detached task would have, and kept writing).
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the timed-out step kept running"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_run_cancels_its_running_step() {
    let slow = Sleeper::new("slow", Duration::from_secs(60));
    let (runs, finished) = (slow.runs.clone(), slow.finished.clone());
    let runner = runner("r").step(slow).build().unwrap();
    // the host gives up on the run (its own timeout, a shutdown) while the step runs
    let gave_up = tokio::time::timeout(Duration::from_secs(1), runner.run()).await;
    assert!(gave_up.is_err());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the step outlived the dropped run"
    );
}

/// A step whose last poll blocks its thread past the deadline and then completes: it did its
/// work, so it must not be reported as timed out.
struct BlocksPastItsDeadline;

#[async_trait]
impl Reconciler for BlocksPastItsDeadline {
    fn name(&self) -> &str {
        "blocking"
    }
    async fn reconcile(&self, _ctx: &RunContext) -> Result<StepReport> {
        std::thread::sleep(Duration::from_millis(1_000));
        let mut r = StepReport::new("blocking");
        r.add(TOUCHED, 3);
        Ok(r)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_completed_as_it_timed_out_reports_its_real_result() {
    // The deadline fires (50 ms) while the step's poll is still running; the abort comes too
    // late to stop it, and the task completes with its report at 1 s.
    let report = runner("r")
        .step_with(
            BlocksPastItsDeadline,
            StepOptions::new().timeout(Duration::from_millis(50)),
        )
        .build()
        .unwrap()
        .run()
        .await;
    let s = report.step("blocking").unwrap();
    assert_eq!(s.status, StepStatus::Succeeded, "{report:#?}");
    assert!(s.error.is_none());
    assert_eq!(s.report.count(TOUCHED), 3, "its counters are kept");
    assert_eq!(report.status, RunStatus::Success);
}

#[tokio::test(start_paused = true)]
async fn the_runner_step_timeout_applies_to_steps_without_their_own() {
    let report = runner("r")
        .step(Sleeper::new("slow", Duration::from_secs(60)))
        .step_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(report.step("slow").unwrap().status, StepStatus::TimedOut);
    assert_eq!(report.status, RunStatus::Failed, "no step succeeded");
}

#[tokio::test(start_paused = true)]
async fn a_run_timeout_stops_the_current_step_and_skips_the_rest() {
    let report = runner("r")
        .step(Sleeper::new("a", Duration::from_secs(3)))
        .step(Sleeper::new("b", Duration::from_secs(3)))
        .step(never_called("c"))
        .run_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(report.step("a").unwrap().status, StepStatus::Succeeded);
    let b = report.step("b").unwrap();
    assert_eq!(b.status, StepStatus::TimedOut);
    assert!(b.error.as_ref().unwrap().message.contains("run timeout"));
    assert_eq!(b.report.duration_ms(), 2_000);
    assert_eq!(report.step("c").unwrap().status, StepStatus::NotRun);
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.duration_ms, 5_000);
}

#[tokio::test(start_paused = true)]
async fn steps_see_the_earlier_of_step_and_run_deadline() {
    let mut a = mock("a");
    a.expect_reconcile()
        .times(1)
        .withf(|ctx| ctx.time_left() == Some(Duration::from_secs(3)))
        .returning(|_| Ok(StepReport::new("a")));
    let report = runner("r")
        .step_with(a, StepOptions::new().timeout(Duration::from_secs(3)))
        .run_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(report.status, RunStatus::Success);
}

#[tokio::test]
async fn dry_run_reaches_every_step() {
    let mk = |name: &'static str| {
        let mut m = mock(name);
        m.expect_reconcile()
            .times(1)
            .withf(|ctx| ctx.is_dry_run())
            .returning(move |_| Ok(StepReport::new(name)));
        m
    };
    let runner = runner("r").step(mk("a")).step(mk("b")).build().unwrap();
    let report = runner.run_with(RunOptions::dry_run(true)).await;
    assert_eq!(report.status, RunStatus::Success);
    assert!(report.dry_run);
    assert!(report.steps.iter().all(|s| s.report.is_dry_run()));
    assert!(report.render_text().contains("DRY RUN"));

    let mut c = mock("c");
    c.expect_reconcile()
        .times(1)
        .withf(|ctx| ctx.is_dry_run())
        .returning(|_| Ok(StepReport::new("c")));
    let report = runner_dry(c).run().await;
    assert!(report.dry_run);
}

fn runner_dry(step: MockReconciler) -> Runner {
    runner("r").step(step).dry_run(true).build().unwrap()
}

#[tokio::test]
async fn a_held_lock_makes_the_run_skipped_and_runs_nothing() {
    let clock = ManualClock::at(t0());
    let lock = MemoryRunLock::with_clock(Arc::new(clock.clone()));
    // another instance holds the lock
    let LockAttempt::Acquired(theirs) = lock
        .try_acquire("startup", Duration::from_secs(600))
        .await
        .unwrap()
    else {
        panic!("lock should be free")
    };
    let log = Arc::new(MemoryRunLog::new());
    let runner = runner("startup")
        .step(never_called("a"))
        .lock(Arc::new(lock.clone()), Duration::from_secs(600))
        .run_log(log.clone())
        .build()
        .unwrap();
    let report = runner.run().await;
    assert_eq!(report.status, RunStatus::Skipped);
    assert!(report.steps.is_empty());
    assert!(report.notes[0].contains("held by another instance"));
    assert!(
        log.latest("startup").await.unwrap().is_none(),
        "skips are not logged"
    );
    assert_eq!(runner.status().unwrap().status, RunStatus::Skipped);
    lock.release(theirs).await.unwrap();
}

#[tokio::test]
async fn the_lock_is_taken_for_the_run_and_released_after() {
    let lock = Arc::new(MemoryRunLock::with_clock(Arc::new(ManualClock::at(t0()))));
    let probe = lock.clone();
    let mut a = mock("a");
    a.expect_reconcile().times(2).returning(move |_| {
        // while the step runs, nobody else can take the lock
        let held = futures_lite_block_on_try(&probe);
        assert!(held, "lock must be held during the run");
        Ok(StepReport::new("a"))
    });
    let runner = runner("startup")
        .step(a)
        .lock(lock.clone(), Duration::from_secs(60))
        .build()
        .unwrap();
    assert_eq!(runner.run().await.status, RunStatus::Success);
    assert_eq!(
        runner.run().await.status,
        RunStatus::Success,
        "released after the first run"
    );
}

/// `MemoryRunLock::try_acquire` never awaits, so it can be polled once synchronously.
fn futures_lite_block_on_try(lock: &MemoryRunLock) -> bool {
    use std::task::{Context, Poll, Waker};
    let mut fut = lock.try_acquire("startup", Duration::from_secs(1));
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(LockAttempt::HeldByOther { .. })) => true,
        Poll::Ready(_) => false,
        Poll::Pending => panic!("memory lock awaited"),
    }
}

#[tokio::test(start_paused = true)]
async fn one_process_never_overlaps_runs_of_the_same_runner() {
    let step = Sleeper::new("slow", Duration::from_secs(10));
    let (runs, max) = (step.runs.clone(), step.max_in_flight.clone());
    let runner = runner("startup").step(step).build().unwrap();
    let other = runner.clone(); // an admin "run now" endpoint, say
    let (a, b) = tokio::join!(runner.run(), other.run());
    let mut statuses = [a.status, b.status];
    statuses.sort_by_key(|s| s.as_str());
    assert_eq!(statuses, [RunStatus::Skipped, RunStatus::Success]);
    let skipped = if a.status == RunStatus::Skipped {
        &a
    } else {
        &b
    };
    assert!(skipped.steps.is_empty());
    assert_eq!(
        skipped.notes,
        ["a run of `startup` is already in progress in this process"]
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(max.load(Ordering::SeqCst), 1);
    // the status shows the run that ran, not the skip
    assert_eq!(runner.status().unwrap().status, RunStatus::Success);
    // and once it is over, the next run goes ahead
    assert_eq!(other.run().await.status, RunStatus::Success);
}

#[tokio::test(start_paused = true)]
async fn run_now_during_a_periodic_run_is_skipped() {
    let step = Sleeper::new("slow", Duration::from_secs(10));
    let (runs, max) = (step.runs.clone(), step.max_in_flight.clone());
    let runner = runner("periodic").step(step).build().unwrap();
    let bg = runner.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        bg.run_periodic(Duration::from_secs(3600), async {
            let _ = rx.await;
        })
        .await
    });
    tokio::time::sleep(Duration::from_secs(1)).await; // the periodic run is in its step
    let now = runner.run().await;
    assert_eq!(now.status, RunStatus::Skipped);
    assert!(
        now.notes[0].contains("already in progress"),
        "{:?}",
        now.notes
    );
    tx.send(()).unwrap();
    assert_eq!(task.await.unwrap().unwrap(), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(max.load(Ordering::SeqCst), 1);
}

/// A clock that follows tokio's (paused) time, so that a `MemoryRunLock`'s leases lapse as
/// the test's time passes.
#[derive(Debug)]
struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        t0() + chrono::Duration::from_std(self.start.elapsed()).unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn a_lease_lock_bounds_the_run_so_it_is_never_taken_mid_run() {
    let start = tokio::time::Instant::now();
    let lock = MemoryRunLock::with_clock(Arc::new(TokioClock { start }));
    let mut probe = mock("probe");
    probe
        .expect_reconcile()
        .times(1)
        .withf(|ctx| ctx.time_left() == Some(Duration::from_secs(5)))
        .returning(|_| Ok(StepReport::new("probe")));
    let slow = Sleeper::new("slow", Duration::from_secs(10));
    let finished = slow.finished.clone();
    // no run timeout: only the lock's 5 s TTL can bound this run
    let runner = runner("sync")
        .step(probe)
        .step(slow)
        .step(never_called("after"))
        .lock(Arc::new(lock.clone()), Duration::from_secs(5))
        .build()
        .unwrap();
    let run = async {
        let report = runner.run().await;
        (report, tokio::time::Instant::now())
    };
    // another instance tries to take the lock every 70 ms (never exactly at 5 s)
    let other = async {
        loop {
            tokio::time::sleep(Duration::from_millis(70)).await;
            if let LockAttempt::Acquired(g) = lock
                .try_acquire("sync", Duration::from_secs(60))
                .await
                .unwrap()
            {
                lock.release(g).await.unwrap();
                return tokio::time::Instant::now();
            }
        }
    };
    let ((report, run_ended), taken) = tokio::join!(run, other);
    assert_eq!(run_ended - start, Duration::from_secs(5), "{report:#?}");
    assert!(
        taken > run_ended,
        "another instance took the lock at {:?}, while the run went on until {:?}",
        taken - start,
        run_ended - start
    );
    let slow = report.step("slow").unwrap();
    assert_eq!(slow.status, StepStatus::TimedOut);
    let msg = &slow.error.as_ref().unwrap().message;
    assert!(msg.contains("run lock ttl"), "{msg}");
    assert_eq!(slow.report.duration_ms(), 5_000);
    let after = report.step("after").unwrap();
    assert_eq!(after.status, StepStatus::NotRun);
    assert!(
        after
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("run lock ttl"),
        "{after:?}"
    );
    assert!(
        !report.errors.iter().any(|e| e.contains("release")),
        "the lock was released in time: {:?}",
        report.errors
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(finished.load(Ordering::SeqCst), 0, "the step was cancelled");
}

/// A lock like a PostgreSQL advisory lock: held by a session, no expiry.
struct SessionLock;

#[async_trait]
impl RunLock for SessionLock {
    async fn try_acquire(&self, name: &str, _ttl: Duration) -> Result<LockAttempt> {
        Ok(LockAttempt::Acquired(LockGuard::new(name, "session")))
    }
    async fn release(&self, _guard: LockGuard) -> Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_lock_without_expiry_does_not_bound_the_run() {
    let mut probe = mock("probe");
    probe
        .expect_reconcile()
        .times(1)
        .withf(|ctx| ctx.deadline().is_none())
        .returning(|_| Ok(StepReport::new("probe")));
    let report = runner("sync")
        .step(probe)
        .step(Sleeper::new("slow", Duration::from_secs(10)))
        .lock(Arc::new(SessionLock), Duration::from_secs(5))
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(report.status, RunStatus::Success, "{report:#?}");
    assert_eq!(report.duration_ms, 10_000);
}

#[test]
fn lock_ttl_shorter_than_run_timeout_is_rejected() {
    let err = runner("r")
        .step(never_called("a"))
        .run_timeout(Duration::from_secs(60))
        .lock(Arc::new(MemoryRunLock::new()), Duration::from_secs(10))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[test]
fn bad_configurations_are_rejected() {
    assert!(Runner::builder("r").build().is_err(), "no steps");
    assert!(
        Runner::builder(" ")
            .step(never_called("a"))
            .build()
            .is_err(),
        "no name"
    );
    let dup = Runner::builder("r")
        .step(never_called("a"))
        .step(never_called("a"))
        .build()
        .unwrap_err();
    assert!(
        dup.to_string().contains("two steps are called `a`"),
        "{dup}"
    );
    assert!(
        Runner::builder("r")
            .step_with(
                never_called("a"),
                StepOptions::new().timeout(Duration::ZERO)
            )
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn the_finished_report_goes_to_the_run_log() {
    let log = Arc::new(MemoryRunLog::new());
    let mut seq = Sequence::new();
    let runner = runner("startup")
        .step(ok_step("a", &mut seq))
        .run_log(log.clone())
        .build()
        .unwrap();
    let report = runner.run().await;
    assert_eq!(log.latest("startup").await.unwrap(), Some(report));
}

struct BrokenLog;

#[async_trait]
impl RunLog for BrokenLog {
    async fn append(&self, _: &RunReport) -> Result<()> {
        Err(Error::transient(
            "insert run",
            std::io::Error::other("disk full"),
        ))
    }
    async fn latest(&self, _: &str) -> Result<Option<RunReport>> {
        Ok(None)
    }
    async fn history(&self, _: &str, _: usize) -> Result<Vec<RunReport>> {
        Ok(vec![])
    }
    async fn prune(&self, _: DateTime<Utc>) -> Result<u64> {
        Ok(0)
    }
}

#[tokio::test]
async fn a_run_log_failure_is_reported_not_swallowed() {
    let mut seq = Sequence::new();
    let report = runner("r")
        .step(ok_step("a", &mut seq))
        .run_log(Arc::new(BrokenLog))
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.errors, ["run log: insert run: disk full"]);
}

#[derive(Debug)]
struct DeadDatabaseClock;

#[async_trait]
impl TimeSource for DeadDatabaseClock {
    async fn fetch_now(&self) -> Result<DateTime<Utc>> {
        Err(Error::transient(
            "SELECT now()",
            std::io::Error::other("gone"),
        ))
    }
}

#[tokio::test]
async fn no_time_means_no_decisions() {
    let report = Runner::builder("r")
        .step(never_called("a"))
        .time_source(Arc::new(DeadDatabaseClock))
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.errors, ["time source: SELECT now(): gone"]);
}

#[tokio::test]
async fn progress_reaches_the_hook() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let mut a = mock("a");
    a.expect_reconcile().times(1).returning(|ctx| {
        ctx.report_progress(5, Some(10));
        Ok(StepReport::new("a"))
    });
    runner("r")
        .step(a)
        .progress(Arc::new(move |p: &Progress| {
            sink.lock().unwrap().push((p.step.clone(), p.done, p.total))
        }))
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(*seen.lock().unwrap(), [("a".to_owned(), 5, Some(10))]);
}

#[tokio::test(start_paused = true)]
async fn periodic_runs_never_overlap_and_skip_missed_slots() {
    let step = Sleeper::new("slow", Duration::from_millis(250));
    let (max, runs) = (step.max_in_flight.clone(), step.runs.clone());
    let runner = runner("periodic").step(step).build().unwrap();
    let shutdown = tokio::time::sleep(Duration::from_millis(1_000));
    let n = runner
        .run_periodic(Duration::from_millis(100), shutdown)
        .await
        .unwrap();
    // runs start at 0, 300, 600, 900 (each takes 250 ms; slots in between are skipped);
    // the shutdown at 1000 lets the run started at 900 finish.
    assert_eq!(n, 4);
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    assert_eq!(max.load(Ordering::SeqCst), 1, "runs overlapped");
    assert_eq!(runner.next_run(), None, "no next run after shutdown");
}

#[tokio::test(start_paused = true)]
async fn periodic_runner_knows_its_next_run() {
    let mut seq = Sequence::new();
    let mut a = mock("a");
    a.expect_reconcile()
        .returning(|_| Ok(StepReport::new("a")))
        .times(1..)
        .in_sequence(&mut seq);
    let runner = runner("periodic").step(a).build().unwrap();
    let bg = runner.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        bg.run_periodic(Duration::from_secs(1800), async {
            let _ = rx.await;
        })
        .await
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let status = runner.status().expect("first run happened");
    assert_eq!(status.next_run, Some(t0() + chrono::Duration::minutes(30)));
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["nextRun"], "2024-01-24T12:30:00.000Z");
    assert_eq!(json["uptime"], 10);
    tx.send(()).unwrap();
    assert_eq!(task.await.unwrap().unwrap(), 1);
}

#[test]
fn the_next_slot_skips_missed_slots_in_one_step() {
    use crate::runner::next_slot;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _guard = rt.enter();
    let t0 = tokio::time::Instant::now();
    let ms = Duration::from_millis;
    // exactly on a slot: that slot is taken (not now), the next one is due
    assert_eq!(next_slot(t0, t0, ms(100)), Some(t0 + ms(100)));
    assert_eq!(next_slot(t0, t0 + ms(99), ms(100)), Some(t0 + ms(100)));
    assert_eq!(next_slot(t0, t0 + ms(100), ms(100)), Some(t0 + ms(200)));
    assert_eq!(next_slot(t0, t0 + ms(250), ms(100)), Some(t0 + ms(300)));
    assert_eq!(
        next_slot(t0, t0 + ms(250), Duration::from_nanos(7)),
        Some(t0 + Duration::from_nanos(250_000_002))
    );
    assert_eq!(next_slot(t0, t0, Duration::MAX), None, "not representable");

    // A 1 ns interval after an hour-long run: 3.6e12 missed slots. Counting them one by one
    // takes hours; the slot must come back at once.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let hour = Duration::from_secs(3600);
        let _ = tx.send(
            next_slot(t0, t0 + hour, Duration::from_nanos(1))
                == Some(t0 + hour + Duration::from_nanos(1)),
        );
    });
    let right = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("next_slot did not return within 20 s: it walks the missed slots");
    assert!(right, "wrong slot after an hour of 1 ns slots");
}

#[tokio::test]
async fn zero_interval_is_a_config_error() {
    let mut seq = Sequence::new();
    let runner = runner("p").step(ok_step("a", &mut seq)).build().unwrap();
    assert_eq!(runner.run().await.status, RunStatus::Success);
    let err = runner
        .run_periodic(Duration::ZERO, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)));
}

#[tokio::test(start_paused = true)]
async fn duration_max_timeouts_mean_no_deadline() {
    let mut a = mock("a");
    a.expect_reconcile()
        .times(1)
        .withf(|ctx| ctx.deadline().is_none() && !ctx.deadline_passed())
        .returning(|_| Ok(StepReport::new("a")));
    let mut b = mock("b");
    b.expect_reconcile()
        .times(1)
        .withf(|ctx| ctx.deadline().is_none())
        .returning(|_| Ok(StepReport::new("b")));
    let report = runner("r")
        .step(a)
        .step_with(b, StepOptions::new().timeout(Duration::MAX))
        .step_timeout(Duration::MAX)
        .run_timeout(Duration::MAX)
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(report.status, RunStatus::Success, "{report:#?}");
}

#[tokio::test(start_paused = true)]
async fn an_interval_too_long_to_schedule_is_a_config_error() {
    let runner = runner("p").step(never_called("a")).build().unwrap();
    let err = runner
        .run_periodic(Duration::MAX, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("too long to schedule"), "{err}");
    assert!(runner.last_report().is_none(), "nothing ran");
}

#[tokio::test(start_paused = true)]
async fn a_time_source_at_the_end_of_the_calendar_does_not_panic() {
    // a database clock gone mad: the run still finishes and reports
    let end = DateTime::<Utc>::MAX_UTC;
    let runner = Runner::builder("periodic")
        .time_source(Arc::new(ManualClock::at(end)))
        .step(Sleeper::new("slow", Duration::from_secs(1)))
        .build()
        .unwrap();
    let report = runner.run().await;
    assert_eq!(report.status, RunStatus::Success);
    assert_eq!(report.started_at, end);
    assert_eq!(
        report.finished_at, end,
        "saturates at the end of the calendar"
    );
    assert_eq!(report.duration_ms, 1_000);

    let bg = runner.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        bg.run_periodic(Duration::from_secs(60), async {
            let _ = rx.await;
        })
        .await
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let status = runner.status().expect("a periodic run happened");
    assert_eq!(status.next_run, None, "the next run time is not a date");
    tx.send(()).unwrap();
    assert_eq!(task.await.unwrap().unwrap(), 1);
}

fn golden_report() -> RunReport {
    let mut lease = StepReport::new("lease-repair");
    lease
        .add(Counter::new("leases_repaired"), 2)
        .add(Counter::new("jobs_requeued"), 1)
        .add(Counter::new("jobs_failed"), 1);
    lease.stamp("lease-repair", 12, false);
    let mut queue = StepReport::new("queue-rehydrate");
    queue
        .set(Counter::new("follow_up_candidates"), 2)
        .set(Counter::new("pending_orders"), 15);
    queue.push_error("+573000000009", "phone number is not E.164");
    queue.stamp("queue-rehydrate", 3, false);
    let steps = vec![
        StepOutcome {
            name: "lease-repair".into(),
            required: false,
            status: StepStatus::Succeeded,
            report: lease,
            error: None,
        },
        StepOutcome {
            name: "queue-rehydrate".into(),
            required: false,
            status: StepStatus::Succeeded,
            report: queue,
            error: None,
        },
        StepOutcome {
            name: "verify-metrics".into(),
            required: true,
            status: StepStatus::Failed,
            report: StepReport::new("verify-metrics"),
            error: Some(StepError {
                message: "SELECT 1: connection refused".into(),
                transient: true,
            }),
        },
    ];
    RunReport {
        id: RunId::from_string("20240124T120000Z-0000abcd"),
        runner: "startup".into(),
        started_at: t0(),
        finished_at: t0() + chrono::Duration::milliseconds(20),
        duration_ms: 20,
        status: RunStatus::from_steps(&steps, 0),
        dry_run: false,
        steps,
        errors: vec!["verify-metrics: SELECT 1: connection refused".into()],
        notes: vec![],
    }
}

#[test]
fn status_view_golden_json() {
    let view = StatusView::from_report(&golden_report(), 3600);
    let json = serde_json::to_string_pretty(&view).unwrap();
    let expected = r#"{
  "status": "failed",
  "timestamp": "2024-01-24T12:00:00.000Z",
  "results": {
    "leasesRepaired": 2,
    "jobsRequeued": 1,
    "jobsFailed": 1,
    "followUpCandidates": 2,
    "pendingOrders": 15
  },
  "errors": [
    "verify-metrics: SELECT 1: connection refused",
    "queue-rehydrate: +573000000009: phone number is not E.164"
  ],
  "uptime": 3600
}"#;
    assert_eq!(json, expected);
    let with_next = view.with_next_run(Some(t0() + chrono::Duration::minutes(30)));
    assert_eq!(
        with_next.to_json()["nextRun"],
        serde_json::json!("2024-01-24T12:30:00.000Z")
    );
}

#[test]
fn status_view_caps_errors() {
    let mut r = golden_report();
    r.errors = (0..200).map(|i| format!("e{i}")).collect();
    let view = StatusView::from_report(&r, 0);
    assert_eq!(view.errors.len(), STATUS_MAX_ERRORS);
    assert_eq!(view.errors.last().unwrap(), "... and 152 more");
}

#[test]
fn run_report_round_trips_through_json() {
    let r = golden_report();
    let json = serde_json::to_string(&r).unwrap();
    let back: RunReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn text_report_golden() {
    let text = golden_report().render_text();
    let expected = "\
=== Reconciliation Run: 2024-01-24 12:00 UTC (startup) ===
Run 20240124T120000Z-0000abcd · status: failed · 20 ms

1. lease-repair: ok (12 ms)
     leases repaired ......... 2
     jobs requeued ........... 1
     jobs failed ............. 1

2. queue-rehydrate: ok (3 ms)
     follow up candidates .... 2
     pending orders .......... 15
     ! +573000000009: phone number is not E.164

3. verify-metrics: FAILED (0 ms) [required]
     error: SELECT 1: connection refused (transient: the next run may succeed)

Errors (1):
  - verify-metrics: SELECT 1: connection refused
";
    assert_eq!(text, expected);
}

/// A step that commits one batch (checkpointed), then fails, sleeps past its timeout or panics.
struct HalfWay(&'static str);

#[async_trait]
impl Reconciler for HalfWay {
    fn name(&self) -> &str {
        self.0
    }
    async fn reconcile(&self, ctx: &RunContext) -> Result<StepReport> {
        let mut r = StepReport::new(self.0);
        r.add(TOUCHED, 500);
        if self.0 != "fails too" {
            ctx.checkpoint(&r);
        }
        // (not checkpointed: the second batch did not commit)
        r.add(TOUCHED, 500);
        match self.0 {
            "finishes" => Ok(r),
            "fails" | "fails too" => Err(Error::transient(
                "write batch 2",
                std::io::Error::other("connection reset"),
            )),
            "hangs" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(r)
            }
            _ => panic!("host bug after a batch"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_step_that_stops_half_way_reports_what_it_committed() {
    let report = runner("r")
        .step(HalfWay("fails"))
        .step_with(
            HalfWay("hangs"),
            StepOptions::new().timeout(Duration::from_secs(5)),
        )
        .step(HalfWay("panics"))
        .build()
        .unwrap()
        .run()
        .await;
    for (name, status) in [
        ("fails", StepStatus::Failed),
        ("hangs", StepStatus::TimedOut),
        ("panics", StepStatus::Failed),
    ] {
        let s = report.step(name).unwrap();
        assert_eq!(s.status, status, "{name}");
        assert!(s.error.is_some(), "{name}");
        assert_eq!(s.report.count(TOUCHED), 500, "{name}: the committed batch");
        assert_eq!(s.report.name(), name);
    }
    assert_eq!(report.status, RunStatus::Failed);
}

#[tokio::test]
async fn checkpoints_belong_to_their_step_and_a_finished_step_reports_its_own_report() {
    let report = runner("r")
        .step(HalfWay("fails"))
        .step(HalfWay("fails too"))
        .step(HalfWay("finishes"))
        .build()
        .unwrap()
        .run()
        .await;
    let count = |name| report.step(name).unwrap().report.count(TOUCHED);
    assert_eq!(count("fails"), 500, "its own checkpoint");
    assert_eq!(
        count("fails too"),
        0,
        "never checkpointed: nothing of the step before"
    );
    assert_eq!(
        count("finishes"),
        1000,
        "the report it returned, not its checkpoint"
    );
    assert_eq!(
        report.step("finishes").unwrap().status,
        StepStatus::Succeeded
    );
}
