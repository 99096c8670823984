//! A message queue that loses nothing (seed 004): startup recovery of stuck messages,
//! archiving of old failures, queue health, operator operations and the retry schedule seam.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use recon_core::{Counter, Reconciler, RunContext, StepReport};
use serde::{Deserialize, Serialize};

use crate::rebuild::{DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE};
use crate::{Error, Key, Result};

/// Messages moved from `processing` back to `pending`.
pub const STUCK_RELEASED: Counter = Counter::new("stuck_released");
/// Failed messages archived because they were older than the archive age.
pub const FAILED_ARCHIVED: Counter = Counter::new("failed_archived");
/// Messages pending after the step.
pub const QUEUE_PENDING: Counter = Counter::new("queue_pending");
/// Messages processing after the step.
pub const QUEUE_PROCESSING: Counter = Counter::new("queue_processing");
/// Messages sent.
pub const QUEUE_SENT: Counter = Counter::new("queue_sent");
/// Messages failed after the step.
pub const QUEUE_FAILED: Counter = Counter::new("queue_failed");

/// Default age after which failed messages are archived, in days.
pub const DEFAULT_ARCHIVE_AFTER_DAYS: u32 = 30;

/// Where a message is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Waiting to be sent (also after a failed attempt with retries left).
    Pending,
    /// Claimed by a sender.
    Processing,
    /// Delivered.
    Sent,
    /// Out of retries; kept for an operator.
    Failed,
    /// A failed message put away (after the archive age, or deleted by an operator where
    /// archiving is configured). Never deleted silently.
    Archived,
}

impl MessageStatus {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Archived => "archived",
        }
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The delivery state of one message (the host's other columns — recipient, body — are not
/// recon's business).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The message's key.
    pub id: Key,
    /// Its status.
    pub status: MessageStatus,
    /// The sender session that claimed it (cleared when released).
    pub session: Option<String>,
    /// Send attempts made.
    pub attempts: u32,
    /// When it was last claimed or tried.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (`None`: now).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it became `failed`.
    pub failed_at: Option<DateTime<Utc>>,
    /// The last error.
    pub last_error: Option<String>,
}

impl Message {
    /// A pending message with no history.
    pub fn pending(id: impl Into<Key>) -> Self {
        Self {
            id: id.into(),
            status: MessageStatus::Pending,
            session: None,
            attempts: 0,
            last_attempt_at: None,
            next_attempt_at: None,
            failed_at: None,
            last_error: None,
        }
    }
}

/// How many messages are in each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    /// Pending.
    pub pending: u64,
    /// Processing.
    pub processing: u64,
    /// Sent.
    pub sent: u64,
    /// Failed.
    pub failed: u64,
    /// Archived.
    pub archived: u64,
}

/// The recovery side of a message store: what the startup step needs.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Messages per status (`SELECT status, COUNT(*) ... GROUP BY status`).
    async fn status_counts(&self) -> Result<StatusCounts>;

    /// How many messages are `processing` and were claimed before `claimed_before` (all
    /// `processing` messages when `None`; a message with no `last_attempt_at` counts as
    /// claimed long ago).
    async fn count_stuck(&self, claimed_before: Option<DateTime<Utc>>) -> Result<u64>;

    /// Move up to `limit` of the messages [`count_stuck`](Self::count_stuck) counts to
    /// `pending` and clear their session, in one statement, guarded on the status still being
    /// `processing`; returns how many moved. Attempts are not changed.
    async fn release_stuck(
        &self,
        claimed_before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<u64>;

    /// How many messages are `failed` with `failed_at` before `cutoff` (NULL `failed_at`:
    /// never counted).
    async fn count_failed_before(&self, cutoff: DateTime<Utc>) -> Result<u64>;

    /// Archive up to `limit` of those, in one statement; returns how many. Archived messages
    /// are kept (status `archived`, or moved to an archive table), never deleted.
    async fn archive_failed_before(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64>;
}

/// The operator side of a message store: failed messages.
///
/// Every write is guarded on the message still being `failed`; ids of other messages are
/// ignored (not an error), so the returned count says what happened.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait FailedMessageStore: Send + Sync {
    /// Up to `limit` failed messages with an id greater than `after`, ascending.
    async fn list_failed(&self, after: Option<Key>, limit: usize) -> Result<Vec<Message>>;

    /// Make the failed messages among `ids` pending again: attempts 0, `failed_at`,
    /// `next_attempt_at` and session cleared (`last_error` is kept). Returns how many.
    async fn retry_failed(&self, ids: &[Key], now: DateTime<Utc>) -> Result<u64>;

    /// Delete the failed messages among `ids`; returns how many.
    async fn delete_failed(&self, ids: &[Key]) -> Result<u64>;

    /// Archive the failed messages among `ids`; returns how many.
    async fn archive_failed(&self, ids: &[Key], now: DateTime<Utc>) -> Result<u64>;
}

/// The overall health of the queue, worst last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthLevel {
    /// Nothing to worry about.
    Healthy,
    /// Worth a look.
    Degraded,
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

impl HealthLevel {
    /// Every level, best first.
    pub const ALL: [Self; 4] = [Self::Healthy, Self::Degraded, Self::Warning, Self::Critical];

    /// Lower-case name, as in seed 004's `overall`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for HealthLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Three rising thresholds for one figure: at or above `degraded` → degraded, and so on.
/// `None` disables a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// From this value on: degraded.
    pub degraded: Option<u64>,
    /// From this value on: warning.
    pub warning: Option<u64>,
    /// From this value on: critical.
    pub critical: Option<u64>,
}

impl Thresholds {
    /// Thresholds at `degraded`, `warning`, `critical`.
    pub const fn new(degraded: u64, warning: u64, critical: u64) -> Self {
        Self {
            degraded: Some(degraded),
            warning: Some(warning),
            critical: Some(critical),
        }
    }

    /// No thresholds: always healthy.
    pub const fn off() -> Self {
        Self {
            degraded: None,
            warning: None,
            critical: None,
        }
    }

    /// Check that the thresholds that are set rise: `degraded ≤ warning ≤ critical` (a
    /// threshold of 0 would make an empty queue unhealthy, so each is at least 1). `figure`
    /// names them in the error.
    pub fn validate(&self, figure: &str) -> Result<()> {
        let set = [
            ("degraded", self.degraded),
            ("warning", self.warning),
            ("critical", self.critical),
        ];
        let mut below: Option<(&str, u64)> = None;
        for (name, t) in set {
            let Some(t) = t else { continue };
            if t == 0 {
                return Err(Error::config(format!(
                    "the {figure} {name} threshold is 0: an empty queue would be {name}"
                )));
            }
            if let Some((lower, l)) = below
                && t < l
            {
                return Err(Error::config(format!(
                    "the {figure} thresholds must rise: {name} {t} is below {lower} {l}"
                )));
            }
            below = Some((name, t));
        }
        Ok(())
    }

    /// The level of `value`.
    pub fn level(&self, value: u64) -> HealthLevel {
        let at = |t: Option<u64>| t.is_some_and(|t| value >= t);
        if at(self.critical) {
            HealthLevel::Critical
        } else if at(self.warning) {
            HealthLevel::Warning
        } else if at(self.degraded) {
            HealthLevel::Degraded
        } else {
            HealthLevel::Healthy
        }
    }
}

/// The thresholds the overall level is computed from; the level is the worst of the figures.
///
/// Defaults (seed 004's example — 5 pending, 1 processing, 2 failed — is healthy):
///
/// | figure | degraded | warning | critical |
/// |--------|----------|---------|----------|
/// | pending | 100 | 500 | 1,000 |
/// | processing | — | — | — |
/// | failed | 10 | 50 | 100 |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthThresholds {
    /// Backlog of pending messages.
    pub pending: Thresholds,
    /// Messages processing (after startup recovery this should be small).
    pub processing: Thresholds,
    /// Failed messages waiting for an operator.
    pub failed: Thresholds,
}

impl HealthThresholds {
    /// Check each figure's thresholds ([`Thresholds::validate`]).
    pub fn validate(&self) -> Result<()> {
        self.pending.validate("pending")?;
        self.processing.validate("processing")?;
        self.failed.validate("failed")
    }
}

impl Default for HealthThresholds {
    fn default() -> Self {
        Self {
            pending: Thresholds::new(100, 500, 1000),
            processing: Thresholds::off(),
            failed: Thresholds::new(10, 50, 100),
        }
    }
}

/// Queue figures and the overall level (seed 004's `/health` `queue` and `overall`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueHealth {
    /// The figures.
    #[serde(flatten)]
    pub counts: StatusCounts,
    /// The overall level.
    pub overall: HealthLevel,
}

impl QueueHealth {
    /// Judge `counts` against `thresholds` — a pure function.
    pub fn assess(counts: StatusCounts, thresholds: &HealthThresholds) -> Self {
        let overall = thresholds
            .pending
            .level(counts.pending)
            .max(thresholds.processing.level(counts.processing))
            .max(thresholds.failed.level(counts.failed));
        Self { counts, overall }
    }
}

/// Read the queue's health from `store`.
pub async fn queue_health(
    store: &dyn MessageStore,
    thresholds: &HealthThresholds,
) -> Result<QueueHealth> {
    Ok(QueueHealth::assess(
        store.status_counts().await?,
        thresholds,
    ))
}

/// What to do about a failed send — the seam for the `retry-policy` crate.
///
/// Given the message's key, the number of attempts made (the failed one included) and the
/// time of the failure, return when to try again, or `None` to give up (the message becomes
/// `failed`). Any `Fn(&str, u32, DateTime<Utc>) -> Option<DateTime<Utc>>` is a schedule;
/// [`FixedDelays`] is seed 004's, and every `retry_policy::RetryPolicy` is one too.
pub trait RetrySchedule: Send + Sync {
    /// When to retry after attempt number `attempts_made` failed at `now`.
    fn next_attempt(
        &self,
        key: &str,
        attempts_made: u32,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>>;
}

impl<F> RetrySchedule for F
where
    F: Fn(&str, u32, DateTime<Utc>) -> Option<DateTime<Utc>> + Send + Sync,
{
    fn next_attempt(
        &self,
        key: &str,
        attempts_made: u32,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self(key, attempts_made, now)
    }
}

/// Every `retry_policy::RetryPolicy` is a schedule: `presets::message_delivery()` is seed 004's
/// 5, 15, 30, 60, 120 minutes, and a jittered policy draws from the message key, so the sender
/// and recon compute the same time.
impl RetrySchedule for retry_policy::RetryPolicy {
    fn next_attempt(
        &self,
        key: &str,
        attempts_made: u32,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.decide(&retry_policy::Attempt::new(key, attempts_made, now))
            .retry_at()
    }
}

/// Retry after a fixed list of delays, then give up: after attempt `n` fails, wait
/// `delays[n - 1]`; when there is none, give up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedDelays(Vec<TimeDelta>);

impl FixedDelays {
    /// Retry after each of `delays` in turn.
    pub fn new(delays: impl IntoIterator<Item = TimeDelta>) -> Self {
        Self(delays.into_iter().collect())
    }

    /// Seed 004: 5, 15, 30, 60, 120 minutes — five retries, six sends, a 3 h 50 min window.
    pub fn message_delivery() -> Self {
        Self::new([5, 15, 30, 60, 120].map(TimeDelta::minutes))
    }

    /// The delays.
    pub fn delays(&self) -> &[TimeDelta] {
        &self.0
    }
}

impl RetrySchedule for FixedDelays {
    fn next_attempt(
        &self,
        _key: &str,
        attempts_made: u32,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let i = usize::try_from(attempts_made.checked_sub(1)?).ok()?;
        now.checked_add_signed(*self.0.get(i)?)
    }
}

/// The state a message moves to after a failed send (see [`after_failed_send`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum SendFailure {
    /// Back to `pending`, due at `next_attempt_at`, released to any session.
    RetryAt {
        /// Attempts made so far.
        attempts: u32,
        /// When to try again.
        next_attempt_at: DateTime<Utc>,
    },
    /// `failed`, kept for an operator.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// When it failed.
        failed_at: DateTime<Utc>,
    },
}

/// Decide what a failed send does to `message` at `now` — a pure function for the host's
/// sender, so that the sender and recon use one schedule. `message.attempts` counts the
/// attempts made before this one.
pub fn after_failed_send(
    message: &Message,
    now: DateTime<Utc>,
    schedule: &dyn RetrySchedule,
) -> SendFailure {
    let attempts = message.attempts.saturating_add(1);
    match schedule.next_attempt(&message.id.to_string(), attempts, now) {
        Some(next_attempt_at) => SendFailure::RetryAt {
            attempts,
            next_attempt_at,
        },
        None => SendFailure::Failed {
            attempts,
            failed_at: now,
        },
    }
}

/// Settings of [`MessageRecovery`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoverySettings {
    /// Release only messages claimed longer ago than this; `None` (default): every
    /// `processing` message, right for a single sender process at startup.
    pub stuck_after: Option<TimeDelta>,
    /// Archive failed messages older than this many days; `None`: never. Default 30.
    pub archive_after_days: Option<u32>,
    /// Messages per statement. Default [`DEFAULT_BATCH_SIZE`].
    pub batch_size: usize,
    /// Health thresholds.
    pub thresholds: HealthThresholds,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            stuck_after: None,
            archive_after_days: Some(DEFAULT_ARCHIVE_AFTER_DAYS),
            batch_size: DEFAULT_BATCH_SIZE,
            thresholds: HealthThresholds::default(),
        }
    }
}

impl RecoverySettings {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Release only messages claimed longer ago than `age`.
    #[must_use]
    pub fn stuck_after(mut self, age: Option<TimeDelta>) -> Self {
        self.stuck_after = age;
        self
    }

    /// Archive failed messages older than `days` (`None`: never).
    #[must_use]
    pub fn archive_after_days(mut self, days: Option<u32>) -> Self {
        self.archive_after_days = days;
        self
    }

    /// Messages per statement.
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Health thresholds.
    #[must_use]
    pub fn thresholds(mut self, thresholds: HealthThresholds) -> Self {
        self.thresholds = thresholds;
        self
    }
}

/// Startup recovery of a message queue (seed 004).
///
/// 1. every message stuck in `processing` goes back to `pending`, released from its sender
///    session (`stuck_released`), in statements of `batch_size`;
/// 2. failed messages older than `archive_after_days` (default 30) are archived, never
///    deleted (`failed_archived`);
/// 3. the queue's figures are reported (`queue_pending`, `queue_processing`, `queue_sent`,
///    `queue_failed`) with the overall level in the detail `queue_health`.
///
/// Dry run: steps 1–2 are counted, not applied; the figures are the current ones adjusted by
/// those counts (what they would be after a real run).
pub struct MessageRecovery {
    name: String,
    store: Arc<dyn MessageStore>,
    settings: RecoverySettings,
}

impl fmt::Debug for MessageRecovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageRecovery")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl MessageRecovery {
    /// A step called `name` with the default settings.
    pub fn new(name: impl Into<String>, store: Arc<dyn MessageStore>) -> Self {
        Self {
            name: name.into(),
            store,
            settings: RecoverySettings::default(),
        }
    }

    /// Use `settings`. Errors: a batch size of 0 or above [`MAX_BATCH_SIZE`], a negative
    /// `stuck_after`, an archive age above 36,600 days, health thresholds that do not rise
    /// ([`HealthThresholds::validate`]).
    pub fn with_settings(mut self, settings: RecoverySettings) -> Result<Self> {
        if settings.batch_size == 0 || settings.batch_size > MAX_BATCH_SIZE {
            return Err(Error::config(format!(
                "batch size {} is out of range 1..={MAX_BATCH_SIZE}",
                settings.batch_size
            )));
        }
        if settings.stuck_after.is_some_and(|d| d < TimeDelta::zero()) {
            return Err(Error::config("stuck_after may not be negative"));
        }
        if settings.archive_after_days.is_some_and(|d| d > 36_600) {
            return Err(Error::config("archive_after_days is above 36,600"));
        }
        settings.thresholds.validate()?;
        self.settings = settings;
        Ok(self)
    }

    /// The settings in force.
    pub fn settings(&self) -> &RecoverySettings {
        &self.settings
    }

    /// Repeat a bounded set-based `op` until it reports fewer than a batch, `expected` rows
    /// are done, or the deadline passes.
    async fn drain<'a, F, Fut>(
        &'a self,
        ctx: &RunContext,
        expected: u64,
        counter: Counter,
        report: &mut StepReport,
        op: F,
    ) -> Result<u64>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<u64>> + 'a,
    {
        let limit = self.settings.batch_size;
        let mut done = 0_u64;
        report.add(counter, 0);
        while done < expected && !ctx.deadline_passed() {
            let n = op(limit).await?;
            done += n;
            report.add(counter, n);
            // (committed: a run that stops later still reports it)
            ctx.checkpoint(report);
            if n < limit as u64 {
                break;
            }
        }
        Ok(done)
    }
}

#[async_trait]
impl Reconciler for MessageRecovery {
    fn name(&self) -> &str {
        &self.name
    }

    #[tracing::instrument(
        name = "recon.message_recovery",
        skip_all,
        fields(step = %self.name, dry_run = ctx.is_dry_run()),
        err
    )]
    async fn reconcile(&self, ctx: &RunContext) -> recon_core::Result<StepReport> {
        let (now, dry) = (ctx.now(), ctx.is_dry_run());
        let mut report = StepReport::new(self.name.clone());
        let store = self.store.as_ref();

        let claimed_before = self.settings.stuck_after.map(|age| now - age);
        let stuck = store.count_stuck(claimed_before).await?;
        let released = if dry {
            report.add(STUCK_RELEASED, stuck);
            stuck
        } else {
            self.drain(ctx, stuck, STUCK_RELEASED, &mut report, |limit| {
                store.release_stuck(claimed_before, limit)
            })
            .await?
        };

        let mut archived = 0;
        if let Some(days) = self.settings.archive_after_days {
            let cutoff = now - TimeDelta::days(i64::from(days));
            let old = store.count_failed_before(cutoff).await?;
            archived = if dry {
                report.add(FAILED_ARCHIVED, old);
                old
            } else {
                self.drain(ctx, old, FAILED_ARCHIVED, &mut report, |limit| {
                    store.archive_failed_before(cutoff, now, limit)
                })
                .await?
            };
        } else {
            report.add(FAILED_ARCHIVED, 0);
        }
        if ctx.deadline_passed() {
            report.note("stopped at the deadline; the rest is left for the next run");
        }

        let mut counts = store.status_counts().await?;
        if dry {
            counts.processing = counts.processing.saturating_sub(released);
            counts.pending = counts.pending.saturating_add(released);
            counts.failed = counts.failed.saturating_sub(archived);
            counts.archived = counts.archived.saturating_add(archived);
        }
        let health = QueueHealth::assess(counts, &self.settings.thresholds);
        report
            .set(QUEUE_PENDING, counts.pending)
            .set(QUEUE_PROCESSING, counts.processing)
            .set(QUEUE_SENT, counts.sent)
            .set(QUEUE_FAILED, counts.failed);
        report.detail(
            "queue_health",
            serde_json::to_value(health).unwrap_or(serde_json::Value::Null),
        );
        if health.overall != HealthLevel::Healthy {
            report.note(format!("queue health: {}", health.overall));
        }
        Ok(report)
    }
}

/// What [`MessageAdmin::delete`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Removal {
    /// The message was deleted.
    Deleted,
    /// The message was archived (archiving on delete is configured).
    Archived,
    /// No failed message has that id; nothing changed.
    NotFailed,
}

/// Operator operations on failed messages (seed 004's `/failed` endpoints).
///
/// Time is passed in (`now`), never read from the system clock.
pub struct MessageAdmin {
    store: Arc<dyn FailedMessageStore>,
    archive_on_delete: bool,
    batch_size: usize,
}

impl fmt::Debug for MessageAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageAdmin")
            .field("archive_on_delete", &self.archive_on_delete)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl MessageAdmin {
    /// Operations on `store`; deleting deletes, batches of [`DEFAULT_BATCH_SIZE`].
    pub fn new(store: Arc<dyn FailedMessageStore>) -> Self {
        Self {
            store,
            archive_on_delete: false,
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }

    /// With `true`, [`delete`](Self::delete) archives instead of deleting.
    #[must_use]
    pub fn archive_on_delete(mut self, on: bool) -> Self {
        self.archive_on_delete = on;
        self
    }

    /// Messages per batch for [`retry_all`](Self::retry_all) (at least 1).
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.clamp(1, MAX_BATCH_SIZE);
        self
    }

    /// A page of failed messages after `after` (keyset), at most `limit` (capped at
    /// [`MAX_BATCH_SIZE`]).
    pub async fn list_failed(&self, after: Option<Key>, limit: usize) -> Result<Vec<Message>> {
        self.store
            .list_failed(after, limit.min(MAX_BATCH_SIZE))
            .await
    }

    /// Retry one failed message; `false` if no failed message has that id.
    pub async fn retry(&self, id: &Key, now: DateTime<Utc>) -> Result<bool> {
        Ok(self
            .store
            .retry_failed(std::slice::from_ref(id), now)
            .await?
            > 0)
    }

    /// Retry every failed message, a page at a time (two calls per page); returns how many.
    pub async fn retry_all(&self, now: DateTime<Utc>) -> Result<u64> {
        let mut after = None;
        let mut total = 0;
        loop {
            let page = self.store.list_failed(after, self.batch_size).await?;
            let Some(last) = page.last().map(|m| m.id.clone()) else {
                break;
            };
            let ids: Vec<Key> = page.iter().map(|m| m.id.clone()).collect();
            total += self.store.retry_failed(&ids, now).await?;
            if page.len() < self.batch_size {
                break;
            }
            after = Some(last);
        }
        Ok(total)
    }

    /// Delete one failed message, or archive it where configured.
    pub async fn delete(&self, id: &Key, now: DateTime<Utc>) -> Result<Removal> {
        let ids = std::slice::from_ref(id);
        if self.archive_on_delete {
            let n = self.store.archive_failed(ids, now).await?;
            Ok(if n > 0 {
                Removal::Archived
            } else {
                Removal::NotFailed
            })
        } else {
            let n = self.store.delete_failed(ids).await?;
            Ok(if n > 0 {
                Removal::Deleted
            } else {
                Removal::NotFailed
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2024-01-24T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn seed_004_retry_timeline() {
        let schedule = FixedDelays::message_delivery();
        let mut msg = Message::pending(1_i64);
        let mut t = now();
        let mut waits = Vec::new();
        loop {
            match after_failed_send(&msg, t, &schedule) {
                SendFailure::RetryAt {
                    attempts,
                    next_attempt_at,
                } => {
                    waits.push((next_attempt_at - t).num_minutes());
                    msg.attempts = attempts;
                    t = next_attempt_at;
                }
                SendFailure::Failed {
                    attempts,
                    failed_at,
                } => {
                    assert_eq!(attempts, 6, "one send and five retries");
                    assert_eq!(failed_at - now(), TimeDelta::minutes(230), "3h50m");
                    break;
                }
            }
        }
        assert_eq!(waits, vec![5, 15, 30, 60, 120]);
    }

    #[test]
    fn closures_are_schedules() {
        let never = |_: &str, _: u32, _: DateTime<Utc>| None;
        assert!(matches!(
            after_failed_send(&Message::pending(1_i64), now(), &never),
            SendFailure::Failed { attempts: 1, .. }
        ));
        assert_eq!(FixedDelays::new([]).next_attempt("k", 0, now()), None);
    }

    #[test]
    fn health_levels() {
        let t = HealthThresholds::default();
        let seed = StatusCounts {
            pending: 5,
            processing: 1,
            sent: 1234,
            failed: 2,
            archived: 0,
        };
        assert_eq!(QueueHealth::assess(seed, &t).overall, HealthLevel::Healthy);
        let level = |pending, failed| {
            QueueHealth::assess(
                StatusCounts {
                    pending,
                    failed,
                    ..seed
                },
                &t,
            )
            .overall
        };
        assert_eq!(level(100, 0), HealthLevel::Degraded);
        assert_eq!(level(99, 10), HealthLevel::Degraded);
        assert_eq!(level(500, 10), HealthLevel::Warning);
        assert_eq!(level(0, 100), HealthLevel::Critical);
        assert_eq!(level(1000, 0), HealthLevel::Critical);
        assert_eq!(Thresholds::off().level(u64::MAX), HealthLevel::Healthy);
        let json = serde_json::to_value(QueueHealth::assess(seed, &t)).unwrap();
        assert_eq!(json["overall"], "healthy");
        assert_eq!(json["pending"], 5);
    }

    /// The documented defaults, figure by figure.
    #[test]
    fn default_thresholds_are_the_documented_ones() {
        let t = HealthThresholds::default();
        assert_eq!(t.pending, Thresholds::new(100, 500, 1000));
        assert_eq!(t.processing, Thresholds::off());
        assert_eq!(t.failed, Thresholds::new(10, 50, 100));
        t.validate().unwrap();
        assert_eq!(RecoverySettings::default().thresholds, t);
    }

    /// Each figure, each level: one below the threshold keeps the level under it, the
    /// threshold itself and one above reach it; the other figures stay at 0. Defaults and a
    /// configured set (processing included), so nothing depends on the default numbers.
    #[test]
    fn every_threshold_boundary_of_every_figure() {
        use HealthLevel::*;
        let configured = HealthThresholds {
            pending: Thresholds::new(3, 7, 20),
            processing: Thresholds::new(1, 2, 5),
            failed: Thresholds::new(4, 6, 8),
        };
        for thresholds in [HealthThresholds::default(), configured] {
            type Slot = fn(&mut StatusCounts) -> &mut u64;
            let figures: [(&str, Thresholds, Slot); 3] = [
                ("pending", thresholds.pending, |c| &mut c.pending),
                ("processing", thresholds.processing, |c| &mut c.processing),
                ("failed", thresholds.failed, |c| &mut c.failed),
            ];
            for (figure, t, slot) in figures {
                let overall = |v: u64| {
                    let mut c = StatusCounts {
                        sent: 1_000_000,
                        archived: 1_000_000,
                        ..StatusCounts::default()
                    };
                    *slot(&mut c) = v;
                    QueueHealth::assess(c, &thresholds).overall
                };
                assert_eq!(overall(0), Healthy, "{figure} 0");
                // (threshold, the level just below it, its level, the next threshold)
                let levels = [
                    (t.degraded, Healthy, Degraded, t.warning),
                    (t.warning, Degraded, Warning, t.critical),
                    (t.critical, Warning, Critical, None),
                ];
                for (at, below, level, next) in levels {
                    let Some(at) = at else {
                        // a level that is off: even the largest value does not reach it
                        assert!(overall(u64::MAX) < level, "{figure}: {level} is off");
                        continue;
                    };
                    assert_eq!(overall(at - 1), below, "{figure} {} (just below)", at - 1);
                    assert_eq!(overall(at), level, "{figure} {at} (at the threshold)");
                    // one above stays at this level, unless it is the next threshold
                    let above = if next == Some(at + 1) {
                        HealthLevel::ALL[level as usize + 1]
                    } else {
                        level
                    };
                    assert_eq!(overall(at + 1), above, "{figure} {} (just above)", at + 1);
                }
                if t.critical.is_some() {
                    assert_eq!(overall(u64::MAX), Critical, "{figure} max");
                }
            }
        }
        // the overall level is the worst of the figures
        let t = configured_for_worst();
        let c = StatusCounts {
            pending: 3,    // degraded
            processing: 2, // warning
            failed: 0,
            ..StatusCounts::default()
        };
        assert_eq!(QueueHealth::assess(c, &t).overall, Warning);
        let c = StatusCounts { failed: 8, ..c }; // critical
        assert_eq!(QueueHealth::assess(c, &t).overall, Critical);
    }

    fn configured_for_worst() -> HealthThresholds {
        HealthThresholds {
            pending: Thresholds::new(3, 7, 20),
            processing: Thresholds::new(1, 2, 5),
            failed: Thresholds::new(4, 6, 8),
        }
    }

    /// Thresholds are checked where they are configured: they must rise and be at least 1;
    /// equal thresholds skip a level; a level may be off.
    #[test]
    fn thresholds_are_checked() {
        let with = |failed| {
            MessageRecovery::new("m", Arc::new(crate::memory::MemoryMessageStore::new()))
                .with_settings(RecoverySettings::new().thresholds(HealthThresholds {
                    failed,
                    ..HealthThresholds::default()
                }))
        };
        let e = with(Thresholds::new(50, 10, 100)).unwrap_err().to_string();
        assert!(
            e.contains("the failed thresholds must rise: warning 10 is below degraded 50"),
            "{e}"
        );
        let e = with(Thresholds::new(1, 60, 50)).unwrap_err().to_string();
        assert!(e.contains("critical 50 is below warning 60"), "{e}");
        let e = with(Thresholds::new(0, 1, 2)).unwrap_err().to_string();
        assert!(e.contains("the failed degraded threshold is 0"), "{e}");
        let no_warning = Thresholds {
            warning: None,
            ..Thresholds::new(10, 0, 5)
        };
        let e = with(no_warning).unwrap_err().to_string();
        assert!(e.contains("critical 5 is below degraded 10"), "{e}");
        with(Thresholds::new(5, 5, 5)).unwrap();
        assert_eq!(Thresholds::new(5, 5, 5).level(4), HealthLevel::Healthy);
        assert_eq!(Thresholds::new(5, 5, 5).level(5), HealthLevel::Critical);
        with(Thresholds {
            degraded: None,
            ..Thresholds::new(0, 10, 20)
        })
        .unwrap();
        with(Thresholds::off()).unwrap();
    }
}

#[cfg(test)]
mod retry_policy_schedule {
    use super::*;

    #[test]
    fn the_message_delivery_preset_matches_seed_004() {
        let now: DateTime<Utc> = "2024-01-24T12:00:00Z".parse().unwrap();
        let policy = retry_policy::presets::message_delivery();
        let fixed = FixedDelays::message_delivery();
        for n in 1..=7 {
            assert_eq!(
                policy.next_attempt("msg-1", n, now),
                fixed.next_attempt("msg-1", n, now),
                "attempt {n}"
            );
        }
        assert_eq!(
            policy.next_attempt("msg-1", 6, now),
            None,
            "gives up after the 6th send"
        );
    }
}
