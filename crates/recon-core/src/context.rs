//! What a reconciler knows about the run it is part of.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::StepReport;

/// Identifier of one run: the run's start time and a short unique suffix,
/// e.g. `20240124T120000Z-3f9a1c0b27d4e815`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// A new id for a run starting at `now`, unique across processes and calls.
    pub fn generate(now: DateTime<Utc>) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::hash::DefaultHasher::new();
        std::process::id().hash(&mut h);
        COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut h);
        std::time::SystemTime::now().hash(&mut h);
        Self(format!(
            "{}-{:016x}",
            now.format("%Y%m%dT%H%M%SZ"),
            h.finish()
        ))
    }

    /// Wrap an existing id (read back from a run log, say).
    pub fn from_string(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Progress of a long step, passed to the host's progress hook.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The step reporting progress.
    pub step: String,
    /// Items handled so far.
    pub done: u64,
    /// Items expected in all, when known.
    pub total: Option<u64>,
}

/// A callback that receives [`Progress`] reports.
pub type ProgressHook = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Where a step's [`RunContext::checkpoint`]s go: the runner keeps the last one, and reports
/// it when the step fails, times out or panics.
#[derive(Clone, Default)]
pub(crate) struct Checkpoints(Arc<std::sync::Mutex<Option<StepReport>>>);

impl Checkpoints {
    /// The last checkpoint, or an empty report named `step`.
    pub(crate) fn last(&self, step: &str) -> StepReport {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| StepReport::new(step))
    }
}

/// Everything a [`Reconciler`](crate::Reconciler) needs to know about the current run.
///
/// `now` is read once when the run starts and stays frozen for every step, so that all
/// decisions of one run agree on the time. Cheap to clone.
#[derive(Clone)]
pub struct RunContext {
    run_id: RunId,
    now: DateTime<Utc>,
    dry_run: bool,
    deadline: Option<Instant>,
    step: Arc<str>,
    progress: Option<ProgressHook>,
    checkpoints: Option<Checkpoints>,
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("run_id", &self.run_id)
            .field("now", &self.now)
            .field("dry_run", &self.dry_run)
            .field("deadline", &self.deadline)
            .field("step", &self.step)
            .field("progress", &self.progress.as_ref().map(|_| "<hook>"))
            .finish()
    }
}

impl RunContext {
    /// A context for a run starting at `now`: not a dry run, no deadline, no progress hook.
    ///
    /// The [`Runner`](crate::Runner) builds contexts itself; this constructor is for calling a
    /// reconciler directly (tests, or a host that does not want the runner).
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            run_id: RunId::generate(now),
            now,
            dry_run: false,
            deadline: None,
            step: Arc::from(""),
            progress: None,
            checkpoints: None,
        }
    }

    /// Use this run id.
    #[must_use]
    pub fn with_run_id(mut self, run_id: RunId) -> Self {
        self.run_id = run_id;
        self
    }

    /// Decide and report, but change nothing.
    #[must_use]
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Steps should stop starting new batches after this instant.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Name of the step this context is handed to.
    #[must_use]
    pub fn with_step(mut self, step: &str) -> Self {
        self.step = Arc::from(step);
        self
    }

    /// Receive progress reports from long steps.
    #[must_use]
    pub fn with_progress(mut self, hook: ProgressHook) -> Self {
        self.progress = Some(hook);
        self
    }

    /// Keep the step's checkpoints in `to` (the runner, per step).
    #[must_use]
    pub(crate) fn with_checkpoints(mut self, to: Checkpoints) -> Self {
        self.checkpoints = Some(to);
        self
    }

    /// The run's id.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// The instant the run started; every decision of the run uses it.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// Whether this run only reports what it would do.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// The instant after which the step should not start new work, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (`None` without a deadline, zero once past it).
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed. Long steps check this between batches.
    pub fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The name of the step currently running (empty outside a runner).
    pub fn step(&self) -> &str {
        &self.step
    }

    /// Record what the step has done and committed so far — its report as it stands (counters,
    /// notes, item errors), say right after each batch it wrote. If the step then fails, times
    /// out or panics, the [`Runner`] reports the last checkpoint with the error instead of an
    /// empty report, so a run that stopped half-way still says what it changed. It is a lower
    /// bound: work committed after the last checkpoint is not in it. In a dry run it holds
    /// what the step would have done.
    ///
    /// Only the step itself should call this (not code it hands the context to). A step that
    /// returns its report needs nothing else: a finished step is reported with the report it
    /// returned. Nothing is stored: a later run does not resume from a checkpoint. Without a
    /// runner (a context built by hand) this does nothing.
    ///
    /// [`Runner`]: crate::Runner
    pub fn checkpoint(&self, report: &StepReport) {
        if let Some(to) = &self.checkpoints {
            *to.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(report.clone());
        }
    }

    /// Report progress of the current step to the host's hook, if one is set.
    pub fn report_progress(&self, done: u64, total: Option<u64>) {
        if let Some(hook) = &self.progress {
            hook(&Progress {
                step: self.step.to_string(),
                done,
                total,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn run_ids_are_unique_and_start_with_the_time() {
        let now: DateTime<Utc> = "2024-01-24T12:00:00Z".parse().unwrap();
        let a = RunId::generate(now);
        let b = RunId::generate(now);
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("20240124T120000Z-"), "{a}");
        // a 64-bit suffix: many instances starting in the same second must not collide
        // on recon_runs' unique run_id
        let suffix = &a.as_str()["20240124T120000Z-".len()..];
        assert_eq!(suffix.len(), 16, "{a}");
        assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
        let many: std::collections::HashSet<_> =
            (0..10_000).map(|_| RunId::generate(now)).collect();
        assert_eq!(many.len(), 10_000);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_and_progress() {
        let now: DateTime<Utc> = "2024-01-24T12:00:00Z".parse().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let ctx = RunContext::new(now)
            .with_step("lease-repair")
            .with_deadline(Some(Instant::now() + Duration::from_secs(2)))
            .with_progress(Arc::new(move |p: &Progress| {
                sink.lock().unwrap().push(p.clone())
            }));
        assert!(!ctx.deadline_passed());
        assert_eq!(ctx.time_left(), Some(Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(ctx.deadline_passed());
        assert_eq!(ctx.time_left(), Some(Duration::ZERO));
        ctx.report_progress(10, Some(20));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].step, "lease-repair");
        assert_eq!((seen[0].done, seen[0].total), (10, Some(20)));
    }
}
