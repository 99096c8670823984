//! The runner: steps in order, graceful degradation, timeouts, dry-run, single-flight,
//! periodic runs, and the run log.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::{Instant, sleep_until, timeout_at};
use tracing::Instrument;
use tracing::field::{Empty, display};

use crate::{
    Counters, Error, LockAttempt, ProgressHook, Reconciler, Result, RunContext, RunId, RunLock,
    RunLog, RunReport, RunStatus, StatusView, StepError, StepOutcome, StepReport, StepStatus,
    SystemClock, TimeSource,
};

/// How the runner treats one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepOptions {
    required: bool,
    timeout: Option<Duration>,
}

impl StepOptions {
    /// Optional step, runner-wide timeout.
    pub const fn new() -> Self {
        Self {
            required: false,
            timeout: None,
        }
    }

    /// If this step does not succeed, the run stops and is `failed` (a health check, say).
    #[must_use]
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Give up on the step after `timeout` (overrides the runner's step timeout).
    #[must_use]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

struct Step {
    name: String,
    reconciler: Arc<dyn Reconciler>,
    options: StepOptions,
}

/// Per-call overrides for [`Runner::run_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOptions {
    /// Override the runner's dry-run setting for this run.
    pub dry_run: Option<bool>,
}

impl RunOptions {
    /// Run this call as a dry run (or not).
    pub const fn dry_run(dry_run: bool) -> Self {
        Self {
            dry_run: Some(dry_run),
        }
    }
}

/// Builds a [`Runner`]. See [`Runner::builder`].
pub struct RunnerBuilder {
    name: String,
    steps: Vec<Step>,
    time_source: Arc<dyn TimeSource>,
    step_timeout: Option<Duration>,
    run_timeout: Option<Duration>,
    run_log: Option<Arc<dyn RunLog>>,
    lock: Option<(Arc<dyn RunLock>, Duration)>,
    dry_run: bool,
    progress: Option<ProgressHook>,
}

impl fmt::Debug for RunnerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerBuilder")
            .field("name", &self.name)
            .field(
                "steps",
                &self.steps.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl RunnerBuilder {
    /// Add an optional step: if it fails, later steps still run.
    #[must_use]
    pub fn step(self, reconciler: impl Reconciler + 'static) -> Self {
        self.step_with(reconciler, StepOptions::new())
    }

    /// Add a required step: if it fails, the run stops and is `failed`.
    #[must_use]
    pub fn required_step(self, reconciler: impl Reconciler + 'static) -> Self {
        self.step_with(reconciler, StepOptions::new().required())
    }

    /// Add a step with explicit options.
    #[must_use]
    pub fn step_with(
        mut self,
        reconciler: impl Reconciler + 'static,
        options: StepOptions,
    ) -> Self {
        self.steps.push(Step {
            name: reconciler.name().to_owned(),
            reconciler: Arc::new(reconciler),
            options,
        });
        self
    }

    /// Where `now` comes from (default: the system clock). A store may offer the database's
    /// clock here so that every instance agrees on the time.
    #[must_use]
    pub fn time_source(mut self, source: Arc<dyn TimeSource>) -> Self {
        self.time_source = source;
        self
    }

    /// Default timeout for every step without its own. A timeout too long to be represented as
    /// an instant (`Duration::MAX`, say) means no deadline.
    #[must_use]
    pub fn step_timeout(mut self, timeout: Duration) -> Self {
        self.step_timeout = Some(timeout);
        self
    }

    /// Timeout for the whole run; steps not started by then are reported as not run. A timeout
    /// too long to be represented as an instant (`Duration::MAX`, say) means no deadline.
    #[must_use]
    pub fn run_timeout(mut self, timeout: Duration) -> Self {
        self.run_timeout = Some(timeout);
        self
    }

    /// Persist every finished run here.
    #[must_use]
    pub fn run_log(mut self, log: Arc<dyn RunLog>) -> Self {
        self.run_log = Some(log);
        self
    }

    /// Run at most one instance at a time across processes: before each run take `lock`
    /// (named after the runner) for `ttl`; if another instance holds it the run is `skipped`.
    ///
    /// `ttl` may not be shorter than the run timeout. When the lock lapses on its own (its
    /// guard has an [expiry](crate::LockGuard::expires_at), as lease rows do), the TTL also
    /// bounds the run like a run timeout, so a run never goes on after another instance could
    /// have taken the lock. Session locks have no expiry and do not bound the run.
    #[must_use]
    pub fn lock(mut self, lock: Arc<dyn RunLock>, ttl: Duration) -> Self {
        self.lock = Some((lock, ttl));
        self
    }

    /// Make every run a dry run unless [`RunOptions`] say otherwise.
    #[must_use]
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Receive progress reports from long steps.
    #[must_use]
    pub fn progress(mut self, hook: ProgressHook) -> Self {
        self.progress = Some(hook);
        self
    }

    /// Check the configuration and build the runner.
    ///
    /// Errors: no steps, an empty or duplicate step name, a zero timeout, or a lock
    /// time-to-live shorter than the run timeout.
    pub fn build(self) -> Result<Runner> {
        if self.name.trim().is_empty() {
            return Err(Error::config("the runner needs a name"));
        }
        if self.steps.is_empty() {
            return Err(Error::config(format!(
                "runner `{}` has no steps",
                self.name
            )));
        }
        for (i, s) in self.steps.iter().enumerate() {
            if s.name.trim().is_empty() {
                return Err(Error::config(format!("step {} has an empty name", i + 1)));
            }
            if self.steps[..i].iter().any(|o| o.name == s.name) {
                return Err(Error::config(format!(
                    "two steps are called `{}`; step names must be unique",
                    s.name
                )));
            }
            if s.options.timeout == Some(Duration::ZERO) {
                return Err(Error::config(format!(
                    "step `{}` has a zero timeout",
                    s.name
                )));
            }
        }
        if self.lock.as_ref().is_some_and(|(_, ttl)| ttl.is_zero()) {
            return Err(Error::config(
                "the run lock needs a time-to-live above zero",
            ));
        }
        if self.step_timeout == Some(Duration::ZERO) || self.run_timeout == Some(Duration::ZERO) {
            return Err(Error::config("timeouts must be greater than zero"));
        }
        if let (Some((_, ttl)), Some(run)) = (&self.lock, self.run_timeout)
            && *ttl < run
        {
            return Err(Error::config(format!(
                "lock ttl {ttl:?} is shorter than the run timeout {run:?}: a slow run would \
                 lose its lock while still running"
            )));
        }
        Ok(Runner {
            inner: Arc::new(Inner {
                name: self.name,
                steps: self.steps,
                time_source: self.time_source,
                step_timeout: self.step_timeout,
                run_timeout: self.run_timeout,
                run_log: self.run_log,
                lock: self.lock,
                dry_run: self.dry_run,
                progress: self.progress,
                created: Instant::now(),
                flight: tokio::sync::Mutex::new(()),
                state: Mutex::default(),
            }),
        })
    }
}

#[derive(Default)]
struct State {
    last: Option<RunReport>,
    next_run: Option<DateTime<Utc>>,
}

struct Inner {
    name: String,
    steps: Vec<Step>,
    time_source: Arc<dyn TimeSource>,
    step_timeout: Option<Duration>,
    run_timeout: Option<Duration>,
    run_log: Option<Arc<dyn RunLog>>,
    lock: Option<(Arc<dyn RunLock>, Duration)>,
    dry_run: bool,
    progress: Option<ProgressHook>,
    created: Instant,
    /// Held for the whole of a run: one process never runs the same runner twice at once.
    flight: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

/// Runs reconciliation steps in order and reports what they did.
///
/// - A step that fails, panics or times out is recorded and the next step still runs, unless
///   the step is required: then the run stops and is `failed`.
/// - `now` is read once per run from the time source and handed to every step.
/// - Dry-run reaches every step through [`RunContext::is_dry_run`].
/// - One run at a time per runner in this process: a run started while another is in
///   progress (on a clone, or during [`Runner::run_periodic`]) returns a `skipped` report
///   at once instead of overlapping it.
/// - With a [`RunLock`], only one instance runs at a time; the others get a `skipped` report.
/// - The finished report goes to the [`RunLog`], if one is configured, and to
///   [`Runner::status`].
///
/// Cheap to clone: clones share steps and status.
///
/// ```
/// # use recon_core::*;
/// # struct Noop;
/// # #[async_trait]
/// # impl Reconciler for Noop {
/// #     fn name(&self) -> &str { "noop" }
/// #     async fn reconcile(&self, _: &RunContext) -> Result<StepReport> { Ok(StepReport::new("noop")) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let runner = Runner::builder("startup")
///     .step(Noop)
///     .step_timeout(std::time::Duration::from_secs(30))
///     .build()?;
/// let report = runner.run().await;
/// assert_eq!(report.status, RunStatus::Success);
/// println!("{}", report.render_text());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("name", &self.inner.name)
            .field(
                "steps",
                &self.inner.steps.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field("dry_run", &self.inner.dry_run)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// Start building a runner called `name` (it names the run in logs, the lock and reports).
    pub fn builder(name: impl Into<String>) -> RunnerBuilder {
        RunnerBuilder {
            name: name.into(),
            steps: Vec::new(),
            time_source: Arc::new(SystemClock),
            step_timeout: None,
            run_timeout: None,
            run_log: None,
            lock: None,
            dry_run: false,
            progress: None,
        }
    }

    /// The runner's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Run every step once, with the runner's settings.
    pub async fn run(&self) -> RunReport {
        self.run_with(RunOptions::default()).await
    }

    /// Run every step once, with per-call overrides.
    pub async fn run_with(&self, options: RunOptions) -> RunReport {
        let inner = &self.inner;
        let dry_run = options.dry_run.unwrap_or(inner.dry_run);
        let span = tracing::info_span!(
            "recon.run",
            runner = %inner.name,
            run_id = Empty,
            dry_run,
            status = Empty,
            counters = Empty,
            duration_ms = Empty,
        );
        let (report, ran_here) = self.run_inner(dry_run, span.clone()).instrument(span).await;
        // A run skipped because this process is already running is not shown as the last run:
        // the run in progress will be.
        if ran_here {
            let mut state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.last = Some(report.clone());
        }
        report
    }

    /// The report, and whether it should become this process's last report.
    async fn run_inner(&self, dry_run: bool, span: tracing::Span) -> (RunReport, bool) {
        let inner = &self.inner;
        let started = Instant::now();
        let (now, mut errors) = match inner.time_source.fetch_now().await {
            Ok(now) => (now, Vec::new()),
            // Without a trusted time no decision can be made; report with the local clock.
            Err(e) => (Utc::now(), vec![format!("time source: {e}")]),
        };
        let id = RunId::generate(now);
        span.record("run_id", display(&id));
        let mut report = RunReport {
            id: id.clone(),
            runner: inner.name.clone(),
            started_at: now,
            finished_at: now,
            duration_ms: 0,
            status: RunStatus::Failed,
            dry_run,
            steps: Vec::new(),
            errors: Vec::new(),
            notes: Vec::new(),
        };
        if !errors.is_empty() {
            report.errors = errors;
            return (self.finish(report, started, &span, None).await, true);
        }

        let Ok(_flight) = inner.flight.try_lock() else {
            report.status = RunStatus::Skipped;
            report.notes.push(format!(
                "a run of `{}` is already in progress in this process",
                inner.name
            ));
            return (self.finish(report, started, &span, None).await, false);
        };

        let lock_started = Instant::now();
        let guard = match &inner.lock {
            None => None,
            Some((lock, ttl)) => match lock.try_acquire(&inner.name, *ttl).await {
                Ok(LockAttempt::Acquired(guard)) => Some(guard),
                Ok(LockAttempt::HeldByOther { holder, until }) => {
                    let mut note = format!("run lock `{}` is held by another instance", inner.name);
                    if let Some(h) = holder {
                        note.push_str(&format!(" ({h})"));
                    }
                    if let Some(u) = until {
                        note.push_str(&format!(" until {}", u.to_rfc3339()));
                    }
                    report.status = RunStatus::Skipped;
                    report.notes.push(note);
                    return (self.finish(report, started, &span, None).await, true);
                }
                Err(e) => {
                    report.errors.push(format!("run lock: {e}"));
                    return (self.finish(report, started, &span, None).await, true);
                }
            },
        };

        let timeout = inner
            .run_timeout
            .and_then(|t| deadline_after(started, t))
            .map(|at| RunDeadline {
                at,
                cause: "run timeout",
            });
        // A lock that lapses on its own (a lease with an expiry) bounds the run: past its TTL
        // another instance may take it and run alongside. Counted from before the acquisition,
        // so the run ends no later than the lease does. Session locks (no expiry) are held as
        // long as the process lives and do not bound the run.
        let lease = match (&guard, &inner.lock) {
            (Some(g), Some((_, ttl))) if g.expires_at().is_some() => {
                deadline_after(lock_started, *ttl).map(|at| RunDeadline {
                    at,
                    cause: "run lock ttl",
                })
            }
            _ => None,
        };
        let run_deadline = RunDeadline::earliest(timeout, lease);
        let mut base = RunContext::new(now).with_run_id(id).with_dry_run(dry_run);
        if let Some(hook) = &inner.progress {
            base = base.with_progress(hook.clone());
        }
        let mut stop: Option<String> = None;
        for step in &inner.steps {
            if let Some(reason) = &stop {
                report.steps.push(not_run(step, reason));
                continue;
            }
            if let Some(d) = run_deadline.filter(|d| Instant::now() >= d.at) {
                let reason = format!("the {} was reached before it started", d.cause);
                errors.push(format!("{}: {reason}", step.name));
                report.steps.push(not_run(step, &reason));
                stop = Some(reason);
                continue;
            }
            let outcome = self.run_step(step, &base, dry_run, run_deadline).await;
            if let Some(err) = &outcome.error {
                errors.push(format!("{}: {}", step.name, err.message));
            }
            if outcome.status != StepStatus::Succeeded {
                if step.options.required {
                    stop = Some(format!("required step `{}` did not succeed", step.name));
                } else if let Some(d) = run_deadline
                    .filter(|d| outcome.status == StepStatus::TimedOut && Instant::now() >= d.at)
                {
                    stop = Some(format!("the {} was reached", d.cause));
                }
            }
            report.steps.push(outcome);
        }
        report.errors = errors;
        (self.finish(report, started, &span, guard).await, true)
    }

    async fn run_step(
        &self,
        step: &Step,
        base: &RunContext,
        dry_run: bool,
        run_deadline: Option<RunDeadline>,
    ) -> StepOutcome {
        let step_started = Instant::now();
        let step_timeout = step.options.timeout.or(self.inner.step_timeout);
        let step_deadline = step_timeout
            .and_then(|t| deadline_after(step_started, t))
            .map(|at| RunDeadline {
                at,
                cause: "step timeout",
            });
        let bound = RunDeadline::earliest(step_deadline, run_deadline);
        let deadline = bound.map(|d| d.at);
        let span = tracing::info_span!(
            "recon.step",
            step = %step.name,
            required = step.options.required,
            status = Empty,
            counters = Empty,
            duration_ms = Empty,
        );
        let checkpoints = crate::context::Checkpoints::default();
        let ctx = base
            .clone()
            .with_step(&step.name)
            .with_deadline(deadline)
            .with_checkpoints(checkpoints.clone());
        let reconciler = step.reconciler.clone();
        // A task of its own: a panicking step is recorded instead of taking the run down, and
        // a timed-out step is cancelled at its next await point (its transaction rolls back).
        let mut task = AbortOnDrop(tokio::spawn(
            async move { reconciler.reconcile(&ctx).await }.instrument(span.clone()),
        ));
        let handle = &mut task.0;
        let joined = match deadline {
            None => Some(handle.await),
            Some(d) => match timeout_at(d, &mut *handle).await {
                Ok(joined) => Some(joined),
                Err(_) => {
                    handle.abort();
                    // The step may have completed between the deadline and the abort (its last
                    // poll was still running): then it did its work, and its real result is
                    // reported. Only a task that was actually cancelled timed out.
                    match handle.await {
                        Err(e) if e.is_cancelled() => None,
                        finished => Some(finished),
                    }
                }
            },
        };
        let elapsed = step_started.elapsed();
        let (status, mut report, error) = match joined {
            Some(Ok(Ok(report))) => (StepStatus::Succeeded, report, None),
            // (what a step that stopped half-way had committed: its last checkpoint)
            Some(Ok(Err(e))) => (
                StepStatus::Failed,
                checkpoints.last(&step.name),
                Some(StepError {
                    message: crate::truncate(e.to_string(), StepReport::MAX_REASON_BYTES),
                    transient: e.is_transient(),
                }),
            ),
            Some(Err(join)) => {
                let message = if join.is_panic() {
                    let payload = join.into_panic();
                    let text = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-text panic payload".to_owned());
                    format!("step panicked: {text}")
                } else {
                    "step task was cancelled".to_owned()
                };
                (
                    StepStatus::Failed,
                    checkpoints.last(&step.name),
                    Some(StepError {
                        message,
                        transient: false,
                    }),
                )
            }
            None => {
                let which = bound.map_or("deadline", |d| d.cause);
                (
                    StepStatus::TimedOut,
                    checkpoints.last(&step.name),
                    Some(StepError {
                        message: format!("timed out after {} ms ({which})", elapsed.as_millis()),
                        transient: true,
                    }),
                )
            }
        };
        report.stamp(&step.name, elapsed.as_millis() as u64, dry_run);
        span.record("status", status.as_str());
        span.record("duration_ms", report.duration_ms());
        span.record("counters", display(CountersField(report.counters())));
        match &error {
            None => tracing::info!(parent: &span, "step finished"),
            Some(e) => {
                tracing::warn!(parent: &span, error = %e.message, transient = e.transient, "step did not succeed")
            }
        }
        StepOutcome {
            name: step.name.clone(),
            required: step.options.required,
            status,
            report,
            error,
        }
    }

    async fn finish(
        &self,
        mut report: RunReport,
        started: Instant,
        span: &tracing::Span,
        guard: Option<crate::LockGuard>,
    ) -> RunReport {
        let inner = &self.inner;
        let mut run_errors = 0;
        if let (Some(guard), Some((lock, _))) = (guard, &inner.lock)
            && let Err(e) = lock.release(guard).await
        {
            report.errors.push(format!("run lock release: {e}"));
            run_errors += 1;
        }
        let elapsed = started.elapsed();
        report.duration_ms = elapsed.as_millis() as u64;
        // `started_at` comes from the time source (possibly a database): an absurd value near
        // the end of the calendar saturates instead of panicking.
        report.finished_at = chrono::Duration::from_std(elapsed)
            .ok()
            .and_then(|d| report.started_at.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if report.status != RunStatus::Skipped {
            if report.steps.is_empty() {
                report.status = RunStatus::Failed;
            } else {
                report.status = RunStatus::from_steps(&report.steps, run_errors);
            }
            if let Some(log) = &inner.run_log
                && let Err(e) = log.append(&report).await
            {
                report.errors.push(format!("run log: {e}"));
                if report.status == RunStatus::Success {
                    report.status = RunStatus::Partial;
                }
            }
        }
        span.record("status", report.status.as_str());
        span.record("counters", display(CountersField(&report.totals())));
        span.record("duration_ms", report.duration_ms);
        match report.status {
            RunStatus::Success | RunStatus::Skipped => {
                tracing::info!(status = %report.status, "run finished")
            }
            _ => {
                tracing::warn!(status = %report.status, errors = report.errors.len(), "run finished")
            }
        }
        report
    }

    /// Run now, then every `interval`, until `shutdown` completes; returns how many runs ran.
    ///
    /// Runs never overlap: when a run takes longer than `interval`, the missed slots are
    /// skipped and the next run starts at the next slot. A shutdown that arrives during a run
    /// lets that run finish. [`Runner::status`] knows the next run time in between.
    ///
    /// Errors: a zero `interval`, or one too long to schedule (`Duration::MAX`, say), is
    /// [`Error::Config`] and nothing runs.
    pub async fn run_periodic<F>(&self, interval: Duration, shutdown: F) -> Result<u64>
    where
        F: Future<Output = ()>,
    {
        if interval.is_zero() {
            return Err(Error::config(
                "the interval of a periodic runner must be > 0",
            ));
        }
        if deadline_after(Instant::now(), interval).is_none() {
            return Err(Error::config(format!(
                "the interval {interval:?} of periodic runner `{}` is too long to schedule",
                self.inner.name
            )));
        }
        tokio::pin!(shutdown);
        let mut runs = 0_u64;
        let mut next = Some(Instant::now());
        loop {
            match next {
                Some(at) => tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = sleep_until(at) => {}
                },
                // The next slot is past what the clock can represent: no more runs.
                None => {
                    (&mut shutdown).await;
                    break;
                }
            }
            let started = Instant::now();
            let report = self.run().await;
            runs += 1;
            let now = Instant::now();
            next = next_slot(started, now, interval);
            let next_run = next.and_then(|at| {
                let wait = chrono::Duration::from_std(at.saturating_duration_since(now)).ok()?;
                report.finished_at.checked_add_signed(wait)
            });
            self.set_next_run(next_run);
        }
        self.set_next_run(None);
        Ok(runs)
    }

    fn set_next_run(&self, at: Option<DateTime<Utc>>) {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_run = at;
    }

    /// The most recent report of this runner in this process.
    pub fn last_report(&self) -> Option<RunReport> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last
            .clone()
    }

    /// When the next periodic run is due, while [`Runner::run_periodic`] is running.
    pub fn next_run(&self) -> Option<DateTime<Utc>> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_run
    }

    /// The status view of the most recent run (the JSON of a `/reconciliation/status`
    /// endpoint), or `None` before the first run. `uptime` counts from when the runner was built.
    pub fn status(&self) -> Option<StatusView> {
        let state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let last = state.last.as_ref()?;
        Some(
            StatusView::from_report(last, self.inner.created.elapsed().as_secs())
                .with_next_run(state.next_run),
        )
    }
}

/// The instant by which a run or step must end, and what set it (for the report).
#[derive(Clone, Copy, Debug)]
struct RunDeadline {
    at: Instant,
    cause: &'static str,
}

impl RunDeadline {
    /// The earlier of two optional deadlines (the first on a tie).
    fn earliest(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.at < a.at { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// Aborts a step's task when dropped, so that a step never outlives the run that started it
/// (a host that drops the `run()` future mid-step, say). Aborting a finished task does nothing.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `start + after`, or `None` (no deadline) when that instant cannot be represented, so that
/// `Duration::MAX` means "no limit" instead of panicking. A second of headroom is kept: the
/// timer rounds deadlines up and must not overflow either.
fn deadline_after(start: Instant, after: Duration) -> Option<Instant> {
    let at = start.checked_add(after)?;
    at.checked_add(Duration::from_secs(1))?;
    Some(at)
}

/// The first slot `started + k·interval` (k ≥ 1) after `now`: slots missed while a run took
/// longer than `interval` are skipped. Computed directly, not one step per missed slot (a 1 µs
/// interval after an hour-long run would be 3.6e9 steps). `None` when that slot cannot be
/// represented.
pub(crate) fn next_slot(started: Instant, now: Instant, interval: Duration) -> Option<Instant> {
    const NANOS: u128 = 1_000_000_000;
    let step = interval.as_nanos().max(1);
    let k = now.saturating_duration_since(started).as_nanos() / step + 1;
    let offset = k.checked_mul(step)?;
    let offset = Duration::new(u64::try_from(offset / NANOS).ok()?, (offset % NANOS) as u32);
    deadline_after(started, offset)
}

fn not_run(step: &Step, reason: &str) -> StepOutcome {
    StepOutcome {
        name: step.name.clone(),
        required: step.options.required,
        status: StepStatus::NotRun,
        report: StepReport::new(&step.name),
        error: Some(StepError {
            message: format!("not run: {reason}"),
            transient: false,
        }),
    }
}

/// Counters as one span field, `name=value name=value` (a span's field names are fixed when
/// it is created, so counters cannot be fields of their own).
struct CountersField<'a>(&'a Counters);

impl fmt::Display for CountersField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}
