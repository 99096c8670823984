//! The failed-record log: every failure with its payload for replay, until it is resolved.
//!
//! One row per (pipeline, key, stage). A failure is recorded with [`FailedRecordStore::record`]
//! and is due for replay at once; the [`RecoveryReconciler`](crate::RecoveryReconciler)
//! replays due rows and writes back one [`FailureOutcome`] per row: resolved (with the method
//! that worked), rescheduled (`next_attempt_at`), or handed to people (`manual_review`).
//! Outcomes are compare-and-set on the `attempts` and `last_failed_at` that were read, so two
//! instances never both apply an outcome and a failure recorded meanwhile is not hidden.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, limits};

/// Where a failed record stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureState {
    /// Will be replayed when `next_attempt_at` is due.
    Open,
    /// The retry policy gave up: people must look at it. Not replayed automatically.
    ManualReview,
    /// Replayed successfully (or resolved by hand).
    Resolved,
}

impl FailureState {
    /// `open`, `manual_review` or `resolved` (the stored text).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::ManualReview => "manual_review",
            Self::Resolved => "resolved",
        }
    }
}

impl fmt::Display for FailureState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "open" => Ok(Self::Open),
            "manual_review" => Ok(Self::ManualReview),
            "resolved" => Ok(Self::Resolved),
            other => Err(Error::invalid_input(format!(
                "unknown failure state `{other}`"
            ))),
        }
    }
}

/// A failure as the pipeline reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewFailure {
    /// The record's key.
    pub key: String,
    /// The stage that failed (one of the pipeline's stages).
    pub stage: String,
    /// A category for grouping (`EmbeddingAPITimeout`), at most [`limits::MAX_NAME_LEN`].
    pub error_type: String,
    /// The full message (cut to [`limits::MAX_MESSAGE_BYTES`]).
    pub message: String,
    /// Everything needed to replay the stage without going back to the source (a JSON value
    /// of at most [`limits::MAX_PAYLOAD_BYTES`] serialised).
    pub payload: serde_json::Value,
    /// When it failed.
    pub at: DateTime<Utc>,
}

/// A row of the failed-record log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedRecord {
    /// The record's key.
    pub key: String,
    /// The stage that failed.
    pub stage: String,
    /// Category of the last error.
    pub error_type: String,
    /// The last error message.
    pub message: String,
    /// The replay payload.
    pub payload: serde_json::Value,
    /// Replays attempted by recovery so far.
    pub attempts: u32,
    /// When the current episode of failures began.
    pub first_failed_at: DateTime<Utc>,
    /// The last failure (of the pipeline or of a replay).
    pub last_failed_at: DateTime<Utc>,
    /// When the next replay is due (`None` unless `open`).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Where it stands.
    pub state: FailureState,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// How it was resolved: `retry`, `fallback:<provider>`, `manual`, …
    pub resolution: Option<String>,
}

impl FailedRecord {
    /// The row's identity, for keyset pagination.
    pub fn id(&self) -> FailureId {
        FailureId {
            key: self.key.clone(),
            stage: self.stage.clone(),
        }
    }
}

/// The identity of a failed record and the keyset position of a page: rows order by
/// (key, stage), both by UTF-8 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FailureId {
    /// The record's key.
    pub key: String,
    /// The stage.
    pub stage: String,
}

/// A keyset page of failed records that are due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueQuery {
    /// `open` rows with `next_attempt_at <= now`.
    pub now: DateTime<Utc>,
    /// Rows strictly after this (key, stage).
    pub after: Option<FailureId>,
    /// At most this many.
    pub limit: usize,
}

/// A keyset page of the log for operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only rows in this state (`None`: every state).
    pub state: Option<FailureState>,
    /// Rows strictly after this (key, stage).
    pub after: Option<FailureId>,
    /// At most this many.
    pub limit: usize,
}

/// What a replay led to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum OutcomeKind {
    /// The record is repaired: `state = resolved`, `resolved_at = at`, `resolution = method`,
    /// `next_attempt_at = NULL`.
    Resolved {
        /// `retry`, `fallback:<provider>`, …
        method: String,
    },
    /// Failed again, try later: `next_attempt_at = next_attempt_at`, the error replaced,
    /// `last_failed_at = at`.
    Retry {
        /// When the next replay is due.
        next_attempt_at: DateTime<Utc>,
        /// Category of the new error.
        error_type: String,
        /// The new message.
        message: String,
    },
    /// The policy gave up: `state = manual_review`, `next_attempt_at = NULL`, the error
    /// replaced, `last_failed_at = at`.
    ManualReview {
        /// Category of the new error.
        error_type: String,
        /// The new message.
        message: String,
    },
}

/// The outcome of replaying one failed record, guarded by what was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureOutcome {
    /// Which row.
    pub id: FailureId,
    /// Applied only if the row is still `open` with these `attempts` …
    pub expected_attempts: u32,
    /// … and this `last_failed_at` (a failure recorded meanwhile wins over the outcome).
    pub expected_last_failed_at: DateTime<Utc>,
    /// The new `attempts`.
    pub attempts: u32,
    /// When (the run's `now`).
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: OutcomeKind,
}

/// Unresolved failures of one error type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorTypeCount {
    /// The error type.
    pub error_type: String,
    /// Rows `open`.
    pub open: u64,
    /// Rows in `manual_review`.
    pub manual_review: u64,
}

/// What retention pruning deletes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneQuery {
    /// Delete `resolved` rows resolved before this instant.
    pub resolved_before: DateTime<Utc>,
    /// Also delete unresolved rows whose `last_failed_at` is before this instant (`None`:
    /// unresolved rows are kept however old; nothing unrepaired is lost silently).
    pub unresolved_before: Option<DateTime<Utc>>,
    /// Delete at most this many rows in this call (bounded transactions).
    pub limit: usize,
}

/// Where failed records live.
///
/// Keys order by (key, stage) as UTF-8 bytes (SQL: binary collation); timestamps are kept at
/// microsecond precision. Implementations validate input with the `check_*` functions of this
/// module before writing and reject a bad batch whole.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait FailedRecordStore: Send + Sync {
    /// Record failures (unique (key, stage) per call), in one transaction:
    ///
    /// * new (key, stage): insert `open`, `attempts = 0`, `first_failed_at = last_failed_at =
    ///   next_attempt_at = at`;
    /// * existing `open` or `manual_review`: replace error type, message and payload, set
    ///   `last_failed_at = at`; state, attempts and schedule are kept;
    /// * existing `resolved`: reopen as if new (`open`, `attempts = 0`, times `at`,
    ///   resolution cleared).
    ///
    /// Returns the number of rows inserted or updated.
    async fn record(&self, pipeline: &str, failures: &[NewFailure]) -> Result<u64>;

    /// `open` rows with `next_attempt_at <= now`, after `after`, by (key, stage).
    async fn due(&self, pipeline: &str, query: &DueQuery) -> Result<Vec<FailedRecord>>;

    /// Apply outcomes (unique ids per call) in one transaction; each only where the row is
    /// still `open` with the expected `attempts` and `last_failed_at`. Returns how many applied.
    async fn apply(&self, pipeline: &str, outcomes: &[FailureOutcome]) -> Result<u64>;

    /// Unresolved rows grouped by error type, ordered by error type (one aggregate query).
    async fn counts_by_error_type(&self, pipeline: &str) -> Result<Vec<ErrorTypeCount>>;

    /// A keyset page of rows, by (key, stage).
    async fn list(&self, pipeline: &str, query: &ListQuery) -> Result<Vec<FailedRecord>>;

    /// Delete old rows as described by [`PruneQuery`]; returns how many were deleted.
    async fn prune(&self, pipeline: &str, query: &PruneQuery) -> Result<u64>;
}

/// Check failures the way every [`FailedRecordStore::record`] must before writing. Messages
/// are not checked: stores cut them with [`limits::truncate_message`].
pub fn check_failures(pipeline: &str, failures: &[NewFailure]) -> Result<()> {
    limits::check_name("pipeline", pipeline)?;
    limits::check_batch("record failures", failures.len())?;
    let mut seen = std::collections::HashSet::new();
    for f in failures {
        limits::check_key(&f.key)?;
        limits::check_ident("stage name", &f.stage)?;
        limits::check_name("error type", &f.error_type)?;
        limits::check_json(
            &format!("payload of `{}` at `{}`", f.key, f.stage),
            &f.payload,
            limits::MAX_PAYLOAD_BYTES,
        )?;
        if !seen.insert((f.key.as_str(), f.stage.as_str())) {
            return Err(Error::invalid_input(format!(
                "record failures: `{}` at `{}` appears twice in one batch",
                f.key, f.stage
            )));
        }
    }
    Ok(())
}

/// Check outcomes the way every [`FailedRecordStore::apply`] must before writing.
pub fn check_outcomes(pipeline: &str, outcomes: &[FailureOutcome]) -> Result<()> {
    limits::check_name("pipeline", pipeline)?;
    limits::check_batch("apply outcomes", outcomes.len())?;
    let mut seen = std::collections::HashSet::new();
    for o in outcomes {
        limits::check_key(&o.id.key)?;
        limits::check_ident("stage name", &o.id.stage)?;
        match &o.kind {
            OutcomeKind::Resolved { method } => limits::check_name("resolution method", method)?,
            OutcomeKind::Retry { error_type, .. }
            | OutcomeKind::ManualReview { error_type, .. } => {
                limits::check_name("error type", error_type)?
            }
        }
        if !seen.insert(&o.id) {
            return Err(Error::invalid_input(format!(
                "apply outcomes: `{}` at `{}` appears twice in one batch",
                o.id.key, o.id.stage
            )));
        }
    }
    Ok(())
}

/// Check a page query's pipeline and limit.
pub fn check_page(pipeline: &str, limit: usize) -> Result<()> {
    limits::check_name("pipeline", pipeline)?;
    limits::check_limit(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(key: &str) -> NewFailure {
        NewFailure {
            key: key.into(),
            stage: "embedding_generated".into(),
            error_type: "EmbeddingAPITimeout".into(),
            message: "ChatHPE API timeout after 60 seconds".into(),
            payload: serde_json::json!({"text": "…"}),
            at: Utc::now(),
        }
    }

    #[test]
    fn failure_checks() {
        assert!(check_failures("cases", &[failure("a"), failure("b")]).is_ok());
        assert!(check_failures("cases", &[failure("a"), failure("a")]).is_err());
        let mut other_stage = failure("a");
        other_stage.stage = "loaded".into();
        assert!(check_failures("cases", &[failure("a"), other_stage]).is_ok());
        let mut huge = failure("a");
        huge.payload = serde_json::Value::String("x".repeat(limits::MAX_PAYLOAD_BYTES));
        assert!(matches!(
            check_failures("cases", &[huge]),
            Err(Error::TooLarge { .. })
        ));
        let mut no_type = failure("a");
        no_type.error_type.clear();
        assert!(check_failures("cases", &[no_type]).is_err());
        assert_eq!(
            "manual_review".parse::<FailureState>().unwrap(),
            FailureState::ManualReview
        );
        assert!("gone".parse::<FailureState>().is_err());
    }
}
