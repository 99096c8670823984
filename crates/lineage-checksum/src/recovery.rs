//! Replaying failed records: per-stage retry policy and fallback chain, resolution, manual
//! review, and retention pruning.
//!
//! For each due record (keyset pages of [`FailedRecordStore::due`]), the
//! [`RecoveryReconciler`] replays the stage through the host's [`StageHandler`]: first with the
//! primary provider, then with each fallback provider in order. The first success resolves the
//! record with the method `retry` (primary) or `fallback:<provider>`. If every provider fails,
//! the stage's [`StagePolicy`] decides from (key, attempts, first failure, `now`, error class):
//!
//! * [`RetryDecision::RetryAt`] soon enough (within [`RecoverySettings::inline_retry_limit`]
//!   of the run's `now`): wait with `tokio::time::sleep` and replay again in this run;
//! * [`RetryDecision::RetryAt`] later: store `next_attempt_at`; a later run replays it;
//! * [`RetryDecision::GiveUp`]: `manual_review`; it is never replayed automatically again.
//!
//! The decision is pure: time comes only from [`RunContext::now`], and a policy that jitters
//! must derive its randomness from the key, so a stored `next_attempt_at` can be recomputed.
//! Every [`retry_policy::RetryPolicy`] is a [`StagePolicy`] (seed 003: PII removal under
//! [`retry_policy::presets::api_call`], 1 s, 2 s, 4 s; the vector-store load under
//! [`retry_policy::presets::vector_store_load`], 2 s, 4 s, 8 s); [`DelaySchedule`] is a small
//! built-in one.
//!
//! One replay runs the stage's providers as a [`retry_policy::FallbackChain`]: the primary,
//! then each fallback, each provider retried *in place* under its own policy (default: a
//! single attempt). Seed 003's embedding step is the primary provider retried at 1 s, 2 s,
//! 4 s, then the Nomic fallback: [`StageRecovery::primary_retries`] with
//! [`retry_policy::presets::api_call`] and [`StageRecovery::with_fallbacks`]. Those in-place
//! retries happen inside one replay; the stage policy above decides, durably, what happens
//! when the whole chain failed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use recon_core::{Reconciler, RunContext, RunLog, StepReport};
use serde::{Deserialize, Serialize};

use crate::failed::{
    DueQuery, ErrorTypeCount, FailedRecord, FailedRecordStore, FailureOutcome, OutcomeKind,
    PruneQuery,
};
use crate::lineage::{LineageStatus, LineageStore, LineageUpdate, Stages};
use crate::{Error, Result, limits};

/// Whether an error may go away by trying again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Timeouts, rate limits, unavailable services.
    Transient,
    /// Bad data, missing fields: retrying the same payload will fail the same way.
    Permanent,
}

impl From<ErrorClass> for retry_policy::ErrorClass {
    fn from(c: ErrorClass) -> Self {
        match c {
            ErrorClass::Transient => Self::Transient,
            ErrorClass::Permanent => Self::Permanent,
        }
    }
}

/// What a [`StagePolicy`] decides from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryAttempt {
    /// The record's key (the only allowed source of jitter).
    pub key: String,
    /// Replays that failed so far, this one included (≥ 1).
    pub attempts_made: u32,
    /// When the record first failed.
    pub first_failure_at: DateTime<Utc>,
    /// The run's `now`.
    pub now: DateTime<Utc>,
    /// The class of the last error.
    pub error_class: ErrorClass,
}

/// Why a policy stopped retrying.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The maximum number of attempts was made.
    AttemptsExhausted(u32),
    /// The error is permanent.
    Permanent,
    /// Any other reason a policy gives.
    Other(String),
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AttemptsExhausted(n) => write!(f, "{n} attempts made"),
            Self::Permanent => f.write_str("permanent error"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// A retry policy's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[must_use]
pub enum RetryDecision {
    /// Replay again at this instant.
    RetryAt(DateTime<Utc>),
    /// Stop: hand the record to people.
    GiveUp(GiveUpReason),
}

/// A stage's retry behaviour: a pure function of the attempt.
///
/// Implemented by every [`retry_policy::RetryPolicy`] (so the presets plug in directly) and by
/// the small built-in [`DelaySchedule`].
pub trait StagePolicy: Send + Sync + fmt::Debug {
    /// Decide what happens after `attempt.attempts_made` failed replays. Must not read the
    /// clock or a random generator: `attempt.now` and `attempt.key` are the only inputs.
    fn decide(&self, attempt: &RetryAttempt) -> RetryDecision;
}

/// `retry-policy`'s policies as stage policies: the same counting (`attempts_made` is 1 after
/// the first failed replay), the record's first failure as the start of `max_elapsed`, the
/// key as the only source of jitter.
///
/// ```
/// use lineage_checksum::{ErrorClass, GiveUpReason, RetryAttempt, RetryDecision, StagePolicy};
/// use retry_policy::presets;
/// let now: chrono::DateTime<chrono::Utc> = "2024-11-04T06:00:00Z".parse().unwrap();
/// let attempt = |n| RetryAttempt {
///     key: "5007T".into(), attempts_made: n, first_failure_at: now, now,
///     error_class: ErrorClass::Transient,
/// };
/// // seed 003, PII removal: retries after 1 s, 2 s, 4 s, then manual review. (`RetryPolicy`
/// // has an inherent `decide` too, so call the trait's by its path.)
/// let pii = presets::api_call();
/// let decide = |n| StagePolicy::decide(&pii, &attempt(n));
/// let delays: Vec<_> = (1..=3).map(decide).collect();
/// assert_eq!(delays, [1, 2, 4].map(|s| RetryDecision::RetryAt(now + chrono::Duration::seconds(s))));
/// assert_eq!(decide(4), RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted(4)));
/// let permanent = RetryAttempt { error_class: ErrorClass::Permanent, ..attempt(1) };
/// assert_eq!(StagePolicy::decide(&pii, &permanent), RetryDecision::GiveUp(GiveUpReason::Permanent));
/// ```
impl StagePolicy for retry_policy::RetryPolicy {
    fn decide(&self, a: &RetryAttempt) -> RetryDecision {
        let attempt = retry_policy::Attempt::new(&a.key, a.attempts_made, a.now)
            .first_failure_at(a.first_failure_at)
            .error_class(a.error_class.into());
        match retry_policy::RetryPolicy::decide(self, &attempt) {
            retry_policy::Decision::RetryAt(t) => RetryDecision::RetryAt(t),
            retry_policy::Decision::GiveUp(reason) => RetryDecision::GiveUp(match reason {
                retry_policy::GiveUpReason::Permanent => GiveUpReason::Permanent,
                retry_policy::GiveUpReason::MaxAttempts { attempts_made, .. } => {
                    GiveUpReason::AttemptsExhausted(attempts_made)
                }
                other => GiveUpReason::Other(other.to_string()),
            }),
        }
    }
}

/// Retry after fixed delays, give up after `max_attempts` failed replays or on a permanent
/// error. The n-th failure (n ≥ 1) waits `delays[n-1]` (the last delay repeats).
///
/// ```
/// use std::time::Duration;
/// use lineage_checksum::{DelaySchedule, ErrorClass, RetryAttempt, RetryDecision, StagePolicy};
/// // seed 003, PII removal: retries after 1 s, 2 s, 4 s, then manual review.
/// let pii = DelaySchedule::new([1, 2, 4].map(Duration::from_secs), 4)?;
/// let now: chrono::DateTime<chrono::Utc> = "2024-11-04T06:00:00Z".parse().unwrap();
/// let attempt = |n| RetryAttempt {
///     key: "5007T".into(), attempts_made: n, first_failure_at: now, now,
///     error_class: ErrorClass::Transient,
/// };
/// assert_eq!(pii.decide(&attempt(2)), RetryDecision::RetryAt(now + chrono::Duration::seconds(2)));
/// assert!(matches!(pii.decide(&attempt(4)), RetryDecision::GiveUp(_)));
/// # Ok::<(), lineage_checksum::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelaySchedule {
    delays: Vec<Duration>,
    max_attempts: u32,
}

impl DelaySchedule {
    /// Delays in order and the number of failed replays after which to give up (≥ 1). At
    /// least one delay unless `max_attempts` is 1.
    pub fn new(delays: impl IntoIterator<Item = Duration>, max_attempts: u32) -> Result<Self> {
        let delays: Vec<Duration> = delays.into_iter().collect();
        if max_attempts == 0 {
            return Err(Error::config("max_attempts must be at least 1"));
        }
        if delays.is_empty() && max_attempts > 1 {
            return Err(Error::config(
                "a schedule that retries needs at least one delay",
            ));
        }
        if delays
            .iter()
            .any(|d| chrono::Duration::from_std(*d).is_err())
        {
            return Err(Error::config("a retry delay is too large"));
        }
        Ok(Self {
            delays,
            max_attempts,
        })
    }

    /// One replay per failure episode: give up at the first failure.
    pub fn once() -> Self {
        Self {
            delays: Vec::new(),
            max_attempts: 1,
        }
    }
}

impl StagePolicy for DelaySchedule {
    fn decide(&self, a: &RetryAttempt) -> RetryDecision {
        if a.error_class == ErrorClass::Permanent {
            return RetryDecision::GiveUp(GiveUpReason::Permanent);
        }
        if a.attempts_made >= self.max_attempts {
            return RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted(a.attempts_made));
        }
        let i = (a.attempts_made.max(1) as usize - 1).min(self.delays.len() - 1);
        // Checked at construction: every delay converts.
        let d = chrono::Duration::from_std(self.delays[i]).unwrap_or(chrono::Duration::MAX);
        RetryDecision::RetryAt(
            a.now
                .checked_add_signed(d)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }
}

/// One replay request handed to a [`StageHandler`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    /// The pipeline.
    pub pipeline: String,
    /// The record's key.
    pub key: String,
    /// The stage to replay.
    pub stage: String,
    /// The payload recorded with the failure.
    pub payload: serde_json::Value,
    /// `None` for the primary provider, else the fallback provider to use.
    pub provider: Option<String>,
    /// The replay attempt number (1 for the first replay of this failure episode).
    pub attempt: u32,
}

/// Why a replay failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct ReplayError {
    /// Whether retrying may help.
    pub class: ErrorClass,
    /// A category for grouping (`EmbeddingAPITimeout`).
    pub error_type: String,
    /// The message.
    pub message: String,
}

impl ReplayError {
    /// A transient failure.
    pub fn transient(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Transient,
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// A permanent failure.
    pub fn permanent(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            error_type: error_type.into(),
            message: message.into(),
        }
    }
}

/// The host's code that re-runs one stage for one record.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait StageHandler: Send + Sync {
    /// Replay `replay.stage` for `replay.key` from `replay.payload`, with `replay.provider`
    /// (`None`: the primary). Must be idempotent: a replay may repeat work that half-happened.
    async fn replay(
        &self,
        ctx: &RunContext,
        replay: &Replay,
    ) -> std::result::Result<(), ReplayError>;
}

/// A fallback provider and how often it is tried in place within one replay.
#[derive(Clone, Debug)]
struct Fallback {
    name: String,
    retries: Option<retry_policy::RetryPolicy>,
}

/// How one stage is recovered: the host's handler, the stage's (durable) policy, and the
/// providers one replay tries, in order, as a [`retry_policy::FallbackChain`].
///
/// ```
/// use std::sync::Arc;
/// use lineage_checksum::{DelaySchedule, Replay, ReplayError, StageHandler, StageRecovery};
/// use recon_core::{async_trait, RunContext};
/// use retry_policy::presets;
/// # struct Embedder;
/// # #[async_trait]
/// # impl StageHandler for Embedder {
/// #     async fn replay(&self, _: &RunContext, _: &Replay) -> Result<(), ReplayError> { Ok(()) }
/// # }
/// // seed 003: ChatHPE retried at 1 s, 2 s, 4 s, then the Nomic fallback; if both fail, the
/// // record goes to manual review (or, with another stage policy, waits for a later run).
/// let embedding = StageRecovery::new(Arc::new(Embedder), Arc::new(DelaySchedule::once()))
///     .primary_retries(presets::api_call())?
///     .with_fallbacks(["nomic"])?;
/// // seed 003: PII removal, replayed at 1 s, 2 s, 4 s, then manual review.
/// let pii = StageRecovery::new(Arc::new(Embedder), Arc::new(presets::api_call()));
/// # let _ = (embedding, pii);
/// # Ok::<(), lineage_checksum::Error>(())
/// ```
#[derive(Clone)]
pub struct StageRecovery {
    handler: Arc<dyn StageHandler>,
    policy: Arc<dyn StagePolicy>,
    primary_retries: Option<retry_policy::RetryPolicy>,
    fallbacks: Vec<Fallback>,
}

impl fmt::Debug for StageRecovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageRecovery")
            .field("policy", &self.policy)
            .field("primary_retries", &self.primary_retries)
            .field("fallbacks", &self.fallbacks)
            .finish_non_exhaustive()
    }
}

/// An in-place policy must end: it runs inside one replay, with `tokio::time::sleep`.
fn check_in_place(who: &str, p: &retry_policy::RetryPolicy) -> Result<()> {
    if p.max_attempts().is_none() && p.max_elapsed().is_none() {
        return Err(Error::config(format!(
            "the in-place retry policy of {who} has neither max_attempts nor max_elapsed: it \
             would retry for ever inside one replay"
        )));
    }
    Ok(())
}

/// One attempt, no retry: a provider without an in-place policy.
fn single_attempt() -> std::result::Result<retry_policy::RetryPolicy, retry_policy::Error> {
    retry_policy::RetryPolicy::builder().max_attempts(1).build()
}

impl StageRecovery {
    /// Replay with `handler` under `policy`, primary provider only, one attempt per replay.
    pub fn new(handler: Arc<dyn StageHandler>, policy: Arc<dyn StagePolicy>) -> Self {
        Self {
            handler,
            policy,
            primary_retries: None,
            fallbacks: Vec::new(),
        }
    }

    /// Retry the primary provider in place under `policy` (its sleeps happen within the
    /// replay) before falling back (seed 003: [`retry_policy::presets::api_call`] for ChatHPE).
    /// Errors: a policy without `max_attempts` or `max_elapsed`.
    pub fn primary_retries(mut self, policy: retry_policy::RetryPolicy) -> Result<Self> {
        check_in_place("the primary provider", &policy)?;
        self.primary_retries = Some(policy);
        Ok(self)
    }

    /// After the primary fails, try these providers in order, once each (seed 003:
    /// `["nomic"]`). Replaces earlier fallbacks. Errors: a bad or repeated name.
    pub fn with_fallbacks<I, S>(mut self, providers: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fallbacks.clear();
        for p in providers {
            self = self.push_fallback(p.into(), None)?;
        }
        Ok(self)
    }

    /// Add one fallback provider, retried in place under `policy`. Errors: a bad or repeated
    /// name, or a policy without `max_attempts` or `max_elapsed`.
    pub fn with_fallback(
        self,
        provider: impl Into<String>,
        policy: retry_policy::RetryPolicy,
    ) -> Result<Self> {
        let provider = provider.into();
        check_in_place(&format!("fallback provider `{provider}`"), &policy)?;
        self.push_fallback(provider, Some(policy))
    }

    fn push_fallback(
        mut self,
        name: String,
        retries: Option<retry_policy::RetryPolicy>,
    ) -> Result<Self> {
        limits::check_name("fallback provider", &name)?;
        if self.fallbacks.iter().any(|f| f.name == name) {
            return Err(Error::config(format!(
                "fallback provider `{name}` listed twice"
            )));
        }
        self.fallbacks.push(Fallback { name, retries });
        Ok(self)
    }
}

/// Settings of a [`RecoveryReconciler`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecoverySettings {
    /// Due records read per page (default 100).
    pub batch_size: usize,
    /// At most this many records per run (default 10,000); the rest wait for the next run.
    pub max_records: usize,
    /// A retry due within this delay of `now` is waited for and made in the same run
    /// (default 10 s; zero: one replay per record per run).
    pub inline_retry_limit: Duration,
    /// At most this many replays of one record in one run (default 5), whatever the policy.
    pub max_inline_attempts: u32,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            batch_size: 100,
            max_records: 10_000,
            inline_retry_limit: Duration::from_secs(10),
            max_inline_attempts: 5,
        }
    }
}

impl RecoverySettings {
    /// Defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Due records read per page.
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Records handled per run at most.
    #[must_use]
    pub fn max_records(mut self, n: usize) -> Self {
        self.max_records = n;
        self
    }

    /// Retries due within this delay are made in the same run.
    #[must_use]
    pub fn inline_retry_limit(mut self, d: Duration) -> Self {
        self.inline_retry_limit = d;
        self
    }

    /// Replays of one record per run at most.
    #[must_use]
    pub fn max_inline_attempts(mut self, n: u32) -> Self {
        self.max_inline_attempts = n;
        self
    }
}

/// Counters of the [`RecoveryReconciler`].
pub mod counters {
    use recon_core::Counter;

    /// Failed records that were due.
    pub const DUE: Counter = Counter::new("due");
    /// Replays made (each provider tried counts once).
    pub const REPLAYS: Counter = Counter::new("replays");
    /// Records resolved.
    pub const RECOVERED: Counter = Counter::new("recovered");
    /// Records that failed again and were rescheduled.
    pub const RESCHEDULED: Counter = Counter::new("rescheduled");
    /// Records the policy gave up on (now in manual review).
    pub const MANUAL_REVIEW: Counter = Counter::new("manual_review");
    /// Due records whose stage has no handler (left as they are).
    pub const UNHANDLED: Counter = Counter::new("unhandled");
    /// Outcomes not applied because the row changed meanwhile (another instance, or a new
    /// failure recorded during the replay).
    pub const CONFLICTS: Counter = Counter::new("conflicts");
    /// Unresolved failed records after the run.
    pub const STILL_FAILED: Counter = Counter::new("still_failed");
}

/// What a recovery run did; also stored as the step's `recovery` detail.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverySummary {
    /// Due records read.
    pub due: u64,
    /// Records resolved.
    pub recovered: u64,
    /// Resolved records per method (`retry`, `fallback:nomic`, …).
    pub recovered_by_method: BTreeMap<String, u64>,
    /// Rescheduled records.
    pub rescheduled: u64,
    /// Records moved to manual review in this run.
    pub manual_review: u64,
    /// Due records without a handler for their stage.
    pub unhandled: u64,
    /// Outcomes lost to concurrent changes.
    pub conflicts: u64,
    /// Unresolved failed records after the run, by error type.
    pub still_failed_by_error_type: Vec<ErrorTypeCount>,
}

impl RecoverySummary {
    /// Unresolved failed records after the run.
    pub fn still_failed(&self) -> u64 {
        self.still_failed_by_error_type
            .iter()
            .map(|c| c.open + c.manual_review)
            .sum()
    }
}

/// The detail key under which the [`RecoveryReconciler`] stores its [`RecoverySummary`].
pub const RECOVERY_DETAIL: &str = "recovery";

/// Replays due failed records (see the [module docs](self)).
///
/// Counters: [`counters`]. Detail `recovery`: a [`RecoverySummary`]. A store error fails the
/// step (transient errors stay transient); a record that cannot be replayed is an outcome, not
/// an error. In dry-run, due records are read and counted, nothing is replayed or written.
pub struct RecoveryReconciler {
    name: String,
    pipeline: String,
    stages: Stages,
    failures: Arc<dyn FailedRecordStore>,
    lineage: Option<Arc<dyn LineageStore>>,
    handlers: HashMap<String, StageRecovery>,
    settings: RecoverySettings,
}

impl fmt::Debug for RecoveryReconciler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryReconciler")
            .field("name", &self.name)
            .field("pipeline", &self.pipeline)
            .field("stages", &self.stages)
            .field("handlers", &self.handlers)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

enum Replayed {
    Resolved(String),
    Failed(ReplayError),
}

impl RecoveryReconciler {
    /// Recover `pipeline` (whose stages are `stages`) from `failures`. Name: `recovery`.
    pub fn new(
        pipeline: impl Into<String>,
        stages: Stages,
        failures: Arc<dyn FailedRecordStore>,
    ) -> Result<Self> {
        let pipeline = pipeline.into();
        limits::check_name("pipeline", &pipeline)?;
        Ok(Self {
            name: "recovery".into(),
            pipeline,
            stages,
            failures,
            lineage: None,
            handlers: HashMap::new(),
            settings: RecoverySettings::default(),
        })
    }

    /// Rename the step.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Recover `stage` this way. Errors: unknown stage, or a stage configured twice.
    pub fn stage(mut self, stage: &str, recovery: StageRecovery) -> Result<Self> {
        self.stages.index(stage)?;
        if self.handlers.insert(stage.to_owned(), recovery).is_some() {
            return Err(Error::config(format!(
                "stage `{stage}` is configured twice"
            )));
        }
        Ok(self)
    }

    /// Also record in the lineage that a resolved record reached its stage (`completed` for
    /// the last stage, else `in_progress`, counted as a retry), and that a record that failed
    /// again at stage `S` is `failed`, with the new error, at the stage **before** `S` — the
    /// stage it reached and could not get past — so gap analysis does not count it as having
    /// reached `S`. A record that failed again at the first stage reached no stage: its
    /// lineage row is left as it is. One upsert per page.
    #[must_use]
    pub fn with_lineage(mut self, lineage: Arc<dyn LineageStore>) -> Self {
        self.lineage = Some(lineage);
        self
    }

    /// Use these settings. Errors: a zero batch size or one above [`limits::MAX_BATCH`].
    pub fn with_settings(mut self, settings: RecoverySettings) -> Result<Self> {
        limits::check_limit(settings.batch_size)
            .map_err(|e| Error::config(format!("batch_size: {e}")))?;
        if settings.max_inline_attempts == 0 {
            return Err(Error::config("max_inline_attempts must be at least 1"));
        }
        self.settings = settings;
        Ok(self)
    }

    /// One replay: the primary, then each fallback, each retried in place under its own
    /// policy, as a [`retry_policy::FallbackChain`]. The first success resolves the record;
    /// when every provider gave up, the last provider's error is the record's.
    async fn chain(
        &self,
        ctx: &RunContext,
        rec: &FailedRecord,
        cfg: &StageRecovery,
        attempt: u32,
        report: &mut StepReport,
    ) -> Replayed {
        let policy = |p: &Option<retry_policy::RetryPolicy>| match p {
            Some(p) => Ok(p.clone()),
            None => single_attempt(),
        };
        let op = |provider: Option<String>| {
            let handler = cfg.handler.clone();
            let (pipeline, key, stage) = (&self.pipeline, &rec.key, &rec.stage);
            move |_: u32| {
                let replay = Replay {
                    pipeline: pipeline.clone(),
                    key: key.clone(),
                    stage: stage.clone(),
                    payload: rec.payload.clone(),
                    provider: provider.clone(),
                    attempt,
                };
                let handler = handler.clone();
                async move {
                    let result = handler.replay(ctx, &replay).await;
                    if let Err(e) = &result {
                        tracing::debug!(key = %replay.key, stage = %replay.stage, provider = ?replay.provider, error = %e, "replay failed");
                    }
                    result
                }
            }
        };
        let chain = match policy(&cfg.primary_retries) {
            Ok(p) => retry_policy::FallbackChain::new("primary", p, op(None)),
            Err(e) => {
                return Replayed::Failed(ReplayError::permanent("RecoveryConfig", e.to_string()));
            }
        };
        let mut chain = chain.starting_at(ctx.now());
        for f in &cfg.fallbacks {
            match policy(&f.retries) {
                Ok(p) => chain = chain.or_else(f.name.clone(), p, op(Some(f.name.clone()))),
                Err(e) => {
                    return Replayed::Failed(ReplayError::permanent(
                        "RecoveryConfig",
                        e.to_string(),
                    ));
                }
            }
        }
        match chain
            .run_with(&rec.key, |e: &ReplayError| e.class.into())
            .await
        {
            Ok(done) => {
                report.add(counters::REPLAYS, u64::from(done.total_attempts));
                Replayed::Resolved(if done.stage == 0 {
                    "retry".to_owned()
                } else {
                    format!("fallback:{}", done.name)
                })
            }
            Err(failed) => {
                let tries: u64 = failed.failures.iter().map(|f| u64::from(f.attempts)).sum();
                report.add(counters::REPLAYS, tries);
                Replayed::Failed(failed.failures.into_iter().last().map_or_else(
                    || ReplayError::transient("Unknown", "no provider"),
                    |f| f.error.error,
                ))
            }
        }
    }

    /// Replay one record until it is resolved, given up, or scheduled for a later run.
    async fn recover_one(
        &self,
        ctx: &RunContext,
        rec: &FailedRecord,
        cfg: &StageRecovery,
        report: &mut StepReport,
    ) -> FailureOutcome {
        let now = ctx.now();
        let mut attempts = rec.attempts;
        let mut inline = 0u32;
        let kind = loop {
            inline += 1;
            match self
                .chain(ctx, rec, cfg, attempts.saturating_add(1), report)
                .await
            {
                Replayed::Resolved(method) => break OutcomeKind::Resolved { method },
                Replayed::Failed(e) => {
                    attempts = attempts.saturating_add(1);
                    let decision = cfg.policy.decide(&RetryAttempt {
                        key: rec.key.clone(),
                        attempts_made: attempts,
                        first_failure_at: rec.first_failed_at,
                        now,
                        error_class: e.class,
                    });
                    let message = limits::truncate_message(&e.message);
                    match decision {
                        RetryDecision::GiveUp(reason) => {
                            break OutcomeKind::ManualReview {
                                error_type: e.error_type,
                                message: limits::truncate_message(&format!(
                                    "{message} (gave up: {reason})"
                                )),
                            };
                        }
                        RetryDecision::RetryAt(at) => {
                            let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
                            let in_time = ctx.time_left().is_none_or(|left| wait < left);
                            if wait <= self.settings.inline_retry_limit
                                && inline < self.settings.max_inline_attempts
                                && in_time
                            {
                                // The only sleep: outside the decision, paused-time testable.
                                tokio::time::sleep(wait).await;
                                continue;
                            }
                            break OutcomeKind::Retry {
                                next_attempt_at: at,
                                error_type: e.error_type,
                                message,
                            };
                        }
                    }
                }
            }
        };
        FailureOutcome {
            id: rec.id(),
            expected_attempts: rec.attempts,
            expected_last_failed_at: rec.last_failed_at,
            attempts: match kind {
                OutcomeKind::Resolved { .. } => attempts.saturating_add(1),
                _ => attempts,
            },
            at: now,
            kind,
        }
    }

    /// The lineage report of one outcome for stage `S` (see [`Self::with_lineage`]): resolved
    /// → reached `S`; failed again → `failed` at the stage before `S` (the record did not get
    /// past it), so gap analysis never counts it as having reached `S`; failed again at the
    /// first stage → no report (there is no stage it reached; the failed-record log has it).
    fn lineage_update(&self, o: &FailureOutcome) -> Option<LineageUpdate> {
        let reached =
            |stage: &str, status| LineageUpdate::new(&o.id.key, stage, status, o.at).as_retry();
        match &o.kind {
            OutcomeKind::Resolved { .. } => Some(reached(
                &o.id.stage,
                if self.stages.is_last(&o.id.stage) {
                    LineageStatus::Completed
                } else {
                    LineageStatus::InProgress
                },
            )),
            OutcomeKind::Retry { message, .. } | OutcomeKind::ManualReview { message, .. } => {
                let i = self.stages.index(&o.id.stage).ok()?;
                let before = self.stages.names().get(i.checked_sub(1)?)?;
                Some(reached(before, LineageStatus::Failed).with_error(message.clone()))
            }
        }
    }

    async fn run(&self, ctx: &RunContext, report: &mut StepReport) -> Result<RecoverySummary> {
        let mut summary = RecoverySummary::default();
        let mut after = None;
        let mut handled = 0usize;
        let mut unhandled_stages = std::collections::BTreeSet::new();
        loop {
            if ctx.deadline_passed() {
                report.note("deadline reached: remaining due records wait for the next run");
                break;
            }
            let limit = self
                .settings
                .batch_size
                .min(self.settings.max_records.saturating_sub(handled));
            if limit == 0 {
                report.note(format!(
                    "max_records ({}) reached: remaining due records wait for the next run",
                    self.settings.max_records
                ));
                break;
            }
            let page = self
                .failures
                .due(
                    &self.pipeline,
                    &DueQuery {
                        now: ctx.now(),
                        after: after.take(),
                        limit,
                    },
                )
                .await?;
            let full = page.len() == limit;
            after = page.last().map(FailedRecord::id);
            handled += page.len();
            summary.due += page.len() as u64;
            report.add(counters::DUE, page.len() as u64);
            let mut outcomes = Vec::with_capacity(page.len());
            for rec in &page {
                let Some(cfg) = self.handlers.get(&rec.stage) else {
                    summary.unhandled += 1;
                    report.add(counters::UNHANDLED, 1);
                    unhandled_stages.insert(rec.stage.clone());
                    continue;
                };
                if ctx.is_dry_run() {
                    continue;
                }
                if ctx.deadline_passed() {
                    break;
                }
                let outcome = self.recover_one(ctx, rec, cfg, report).await;
                match &outcome.kind {
                    OutcomeKind::Resolved { method } => {
                        summary.recovered += 1;
                        *summary
                            .recovered_by_method
                            .entry(method.clone())
                            .or_default() += 1;
                        report.add(counters::RECOVERED, 1);
                    }
                    OutcomeKind::Retry { .. } => {
                        summary.rescheduled += 1;
                        report.add(counters::RESCHEDULED, 1);
                    }
                    OutcomeKind::ManualReview {
                        error_type,
                        message,
                    } => {
                        summary.manual_review += 1;
                        report.add(counters::MANUAL_REVIEW, 1);
                        report.push_error(
                            format!("{}@{}", rec.key, rec.stage),
                            format!("manual review: {error_type}: {message}"),
                        );
                    }
                }
                outcomes.push(outcome);
            }
            if !outcomes.is_empty() {
                let applied = self.failures.apply(&self.pipeline, &outcomes).await?;
                let conflicts = outcomes.len() as u64 - applied.min(outcomes.len() as u64);
                summary.conflicts += conflicts;
                report.add(counters::CONFLICTS, conflicts);
                if let Some(lineage) = &self.lineage {
                    let updates: Vec<LineageUpdate> = outcomes
                        .iter()
                        .filter_map(|o| self.lineage_update(o))
                        .collect();
                    if !updates.is_empty() {
                        lineage.upsert(&self.pipeline, &updates).await?;
                    }
                }
            }
            ctx.report_progress(handled as u64, None);
            // (the batch is written: a run that stops later still reports it)
            ctx.checkpoint(report);
            if !full {
                break;
            }
        }
        if !unhandled_stages.is_empty() {
            report.note(format!(
                "no handler for stage(s) {}: their failed records were left as they are",
                unhandled_stages.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if ctx.is_dry_run() {
            report.note("dry run: due records were counted, none was replayed");
        }
        summary.still_failed_by_error_type =
            self.failures.counts_by_error_type(&self.pipeline).await?;
        report.set(counters::STILL_FAILED, summary.still_failed());
        Ok(summary)
    }
}

#[async_trait]
impl Reconciler for RecoveryReconciler {
    fn name(&self) -> &str {
        &self.name
    }

    #[tracing::instrument(skip_all, fields(step = %self.name, pipeline = %self.pipeline), err)]
    async fn reconcile(&self, ctx: &RunContext) -> recon_core::Result<StepReport> {
        let mut report = StepReport::new(&self.name);
        let summary = self.run(ctx, &mut report).await?;
        report.detail(
            RECOVERY_DETAIL,
            serde_json::to_value(&summary).unwrap_or(serde_json::Value::Null),
        );
        Ok(report)
    }
}

/// Retention settings of a [`RetentionReconciler`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RetentionSettings {
    /// Resolved failed records are deleted this long after resolution (default 90 days).
    pub failed_records: Duration,
    /// Unresolved failed records are deleted this long after their last failure
    /// (default `None`: never; unrepaired records are not lost silently).
    pub unresolved_failed_records: Option<Duration>,
    /// Runs in the run log are deleted this long after they started (default 30 days).
    pub runs: Duration,
    /// Rows deleted per statement (default 1,000).
    pub batch_size: usize,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            failed_records: Duration::from_secs(90 * 86_400),
            unresolved_failed_records: None,
            runs: Duration::from_secs(30 * 86_400),
            batch_size: 1_000,
        }
    }
}

/// Counters of the [`RetentionReconciler`].
pub mod retention_counters {
    use recon_core::Counter;
    /// Failed records deleted.
    pub const FAILED_RECORDS_PRUNED: Counter = Counter::new("failed_records_pruned");
    /// Runs deleted from the run log.
    pub const RUNS_PRUNED: Counter = Counter::new("runs_pruned");
}

/// Deletes old failed records (default: resolved ones after 90 days) in bounded batches and
/// old runs (default 30 days) from a [`RunLog`]. Lineage is never pruned. In dry-run, nothing
/// is deleted.
pub struct RetentionReconciler {
    pipeline: String,
    failures: Arc<dyn FailedRecordStore>,
    runs: Option<Arc<dyn RunLog>>,
    settings: RetentionSettings,
}

impl fmt::Debug for RetentionReconciler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetentionReconciler")
            .field("pipeline", &self.pipeline)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RetentionReconciler {
    /// Prune `pipeline`'s failed records, and runs from `runs` if given. Name: `retention`.
    pub fn new(
        pipeline: impl Into<String>,
        failures: Arc<dyn FailedRecordStore>,
        runs: Option<Arc<dyn RunLog>>,
        settings: RetentionSettings,
    ) -> Result<Self> {
        let pipeline = pipeline.into();
        limits::check_name("pipeline", &pipeline)?;
        limits::check_limit(settings.batch_size)
            .map_err(|e| Error::config(format!("batch_size: {e}")))?;
        Ok(Self {
            pipeline,
            failures,
            runs,
            settings,
        })
    }
}

fn before(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    crate::lineage::stuck_cutoff(now, d)
}

#[async_trait]
impl Reconciler for RetentionReconciler {
    fn name(&self) -> &str {
        "retention"
    }

    #[tracing::instrument(skip_all, fields(pipeline = %self.pipeline), err)]
    async fn reconcile(&self, ctx: &RunContext) -> recon_core::Result<StepReport> {
        let mut report = StepReport::new("retention");
        let now = ctx.now();
        if ctx.is_dry_run() {
            report.note("dry run: nothing was pruned");
            return Ok(report);
        }
        let q = PruneQuery {
            resolved_before: before(now, self.settings.failed_records),
            unresolved_before: self
                .settings
                .unresolved_failed_records
                .map(|d| before(now, d)),
            limit: self.settings.batch_size,
        };
        loop {
            let n = self
                .failures
                .prune(&self.pipeline, &q)
                .await
                .map_err(recon_core::Error::from)?;
            report.add(retention_counters::FAILED_RECORDS_PRUNED, n);
            // (deleted: a run that stops later still reports it)
            ctx.checkpoint(&report);
            if n < q.limit as u64 || ctx.deadline_passed() {
                break;
            }
        }
        if let Some(runs) = &self.runs {
            let n = runs.prune(before(now, self.settings.runs)).await?;
            report.add(retention_counters::RUNS_PRUNED, n);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
