//! The pure decision: (row, kind, now, settings) → action. No I/O, no clock, no randomness
//! (the retry policy draws its jitter from the job's key).

use chrono::{DateTime, Utc};
use retry_policy::{Attempt, Decision, RetryPolicy};
use serde::Serialize;

use crate::{CandidateKind, Error, JobRow, Repair};

/// The host's state values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStates {
    /// The state of a running job (`processing`).
    pub processing: String,
    /// Where a stuck job goes to be retried (`retry`).
    pub retry: String,
    /// Where a job that used up its attempts goes (`failed`).
    pub failed: String,
    /// Where an orphaned job goes (`retry` in seed 000's table, `queued` in its diagram).
    pub orphaned_to: String,
}

impl Default for JobStates {
    fn default() -> Self {
        Self {
            processing: "processing".into(),
            retry: "retry".into(),
            failed: "failed".into(),
            orphaned_to: "retry".into(),
        }
    }
}

/// Attempts above this are anomalies: no real job gets there, and writing `attempts + 1` could
/// overflow the host's `INTEGER` column and fail the whole batch.
pub const MAX_ATTEMPTS: i64 = 1_000_000;

/// Longest `last_error` message a repair writes (host columns are often `VARCHAR(255)` or
/// `TEXT`; a longer message would fail the batch on strict databases).
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The `last_error` written by a repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Messages {
    /// For jobs whose lease expired.
    pub lease_expired: String,
    /// For orphaned jobs.
    pub orphaned: String,
}

impl Default for Messages {
    fn default() -> Self {
        Self {
            lease_expired: "Lease expired - worker crashed or timed out".into(),
            orphaned: "Orphaned job recovered".into(),
        }
    }
}

/// Where the time that decides lease expiry comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeBasis {
    /// The run's frozen `now` (the runner's time source).
    #[default]
    Run,
    /// The database's clock, read once at the start of the step, so that hosts with skewed
    /// clocks agree with the workers that wrote the leases.
    Database,
}

/// Everything the decision depends on besides the row and the time.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The host's state values.
    pub states: JobStates,
    /// Decides retry (and when) or give up, from the attempts count.
    pub policy: RetryPolicy,
    /// Hosts whose workers count an attempt only when it finishes: the interrupted attempt is
    /// counted by the repair (written as attempts + 1, and decided on attempts + 1).
    pub count_interrupted_attempt: bool,
    /// `last_error` messages.
    pub messages: Messages,
    /// Leases ending further ahead than this are reported as anomalies (`None`: no check).
    pub max_lease: Option<chrono::Duration>,
    /// Repair anomalies that have a safe repair instead of only reporting them: NULL or
    /// negative attempts are taken as 0, and an owner without an expiry is treated as
    /// orphaned. Expiries too far ahead are always only reported. Default: `false`.
    pub repair_anomalies: bool,
    /// Report rows whose status is none of the host's states (a typo, another case, stray
    /// spaces, an empty string, NULL) as [`AnomalyKind::UnknownStatus`] anomalies. `None`
    /// (the default): off. `Some(states)`: the host's states *besides* the four of
    /// [`JobStates`] (`pending`, `done`, …); any other value is reported, compared exactly
    /// (byte for byte, also on MariaDB's case-insensitive collations). Such rows are never
    /// changed. Finding them reads every row of the table once per run, so it is opt-in.
    pub report_unknown_status: Option<Vec<String>>,
}

/// At most this many states in [`Settings::report_unknown_status`] (each is a bound value of
/// one statement).
pub const MAX_KNOWN_STATES: usize = 1000;

impl Settings {
    /// Scenario A's settings with `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            states: JobStates::default(),
            policy,
            count_interrupted_attempt: false,
            messages: Messages::default(),
            max_lease: Some(chrono::Duration::hours(24)),
            repair_anomalies: false,
            report_unknown_status: None,
        }
    }

    /// Every state the host declared: the four of [`JobStates`] and, when unknown states are
    /// reported, the listed ones, without duplicates.
    pub fn known_states(&self) -> Vec<String> {
        let s = &self.states;
        let mut v: Vec<String> = Vec::new();
        let extra = self.report_unknown_status.iter().flatten();
        for st in [&s.processing, &s.retry, &s.failed, &s.orphaned_to]
            .into_iter()
            .chain(extra)
        {
            if !v.contains(st) {
                v.push(st.clone());
            }
        }
        v
    }

    /// Whether `status` is one of [`known_states`](Self::known_states), compared exactly,
    /// without building the list (the decision asks this for every unknown-status candidate).
    pub fn is_known_state(&self, status: &str) -> bool {
        let s = &self.states;
        [&s.processing, &s.retry, &s.failed, &s.orphaned_to]
            .into_iter()
            .chain(self.report_unknown_status.iter().flatten())
            .any(|known| known == status)
    }

    /// Reject settings that cannot work: empty states, targets equal to `processing` (the
    /// job would never leave it), a non-positive maximum lease.
    pub fn validate(&self) -> Result<(), Error> {
        let s = &self.states;
        for (what, v) in [
            ("processing", &s.processing),
            ("retry", &s.retry),
            ("failed", &s.failed),
            ("orphaned_to", &s.orphaned_to),
        ] {
            if v.trim().is_empty() {
                return Err(Error::Settings(format!("the `{what}` state is empty")));
            }
            if what != "processing" && v == &s.processing {
                return Err(Error::Settings(format!(
                    "the `{what}` state equals the processing state `{v}`: repaired jobs would stay stuck"
                )));
            }
        }
        for (what, m) in [
            ("lease_expired", &self.messages.lease_expired),
            ("orphaned", &self.messages.orphaned),
        ] {
            if m.len() > MAX_MESSAGE_BYTES {
                return Err(Error::Settings(format!(
                    "the `{what}` message is {} bytes; at most {MAX_MESSAGE_BYTES} are written to last_error",
                    m.len()
                )));
            }
        }
        if let Some(known) = &self.report_unknown_status
            && known.len() > MAX_KNOWN_STATES
        {
            return Err(Error::Settings(format!(
                "report_unknown_status lists {} states; at most {MAX_KNOWN_STATES} are supported",
                known.len()
            )));
        }
        if self
            .max_lease
            .is_some_and(|m| m <= chrono::Duration::zero())
        {
            return Err(Error::Settings("max_lease must be positive".into()));
        }
        Ok(())
    }
}

/// Why a row is reported instead of repaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A lease owner but no expiry: nobody can tell whether the worker is alive.
    OwnerWithoutExpiry,
    /// A lease ending further ahead than the configured maximum lease.
    ExpiryTooFarAhead,
    /// `attempts` is NULL, negative, or above [`MAX_ATTEMPTS`].
    InvalidAttempts,
    /// A column holds a value the store could not read (a timestamp in an unknown format,
    /// invalid UTF-8, text in a number column).
    UnreadableValue,
    /// A status none of the host's states (only with [`Settings::report_unknown_status`]).
    UnknownStatus,
}

/// What happens to a repaired job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Back to the queue.
    Requeued,
    /// Given up.
    Failed,
}

/// Why a candidate is left as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    /// Not in the processing state (it moved on since the store read it).
    NotProcessing,
    /// Its lease is live: a live lease is never touched.
    LiveLease,
    /// Read as an unknown-status candidate, but its status is one of the host's states.
    KnownStatus,
}

/// The decision for one row.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Change the job.
    Repair {
        /// The change, guarded by the row as read.
        repair: Repair,
        /// Requeued or failed.
        outcome: Outcome,
    },
    /// Report, do not change.
    Anomaly(AnomalyKind),
    /// Nothing to do.
    Leave(LeaveReason),
}

/// Decide what to do with `row`, found as a `kind` candidate, at `now`.
///
/// - A [`CandidateKind::UnknownStatus`] candidate is an anomaly when its status is none of
///   [`Settings::known_states`] (compared exactly), and left alone otherwise.
/// - A job whose lease has not ended, or that is not `processing`, is left alone.
/// - NULL or negative attempts, an owner without expiry and an expiry too far ahead are
///   anomalies (unless [`Settings::repair_anomalies`] allows the safe repairs).
/// - Otherwise the attempts that count are the stored attempts (+1 when the interrupted
///   attempt is counted); the retry policy decides with them: retry at its time, or give up
///   (`attempts >= max` → failed).
pub fn decide(row: &JobRow, kind: CandidateKind, now: DateTime<Utc>, s: &Settings) -> Action {
    if kind == CandidateKind::UnknownStatus {
        return if s.is_known_state(&row.status) {
            Action::Leave(LeaveReason::KnownStatus)
        } else {
            Action::Anomaly(AnomalyKind::UnknownStatus)
        };
    }
    if row.unreadable.is_some() {
        return Action::Anomaly(AnomalyKind::UnreadableValue);
    }
    if row.status != s.states.processing {
        return Action::Leave(LeaveReason::NotProcessing);
    }
    let expired = row.lease_expires_at.is_some_and(|e| e < now);
    let no_lease = row.lease_owner.is_none() && row.lease_expires_at.is_none();
    let owner_without_expiry = row.lease_owner.is_some() && row.lease_expires_at.is_none();
    if let (Some(e), Some(m)) = (row.lease_expires_at, s.max_lease)
        && e > now
            .checked_add_signed(m)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    {
        return Action::Anomaly(AnomalyKind::ExpiryTooFarAhead);
    }
    let orphaned = no_lease || (owner_without_expiry && s.repair_anomalies);
    if owner_without_expiry && !s.repair_anomalies {
        return Action::Anomaly(AnomalyKind::OwnerWithoutExpiry);
    }
    let attempts = match row.attempts {
        Some(a) if (0..=MAX_ATTEMPTS).contains(&a) => a,
        _ if s.repair_anomalies => 0,
        _ => return Action::Anomaly(AnomalyKind::InvalidAttempts),
    };
    if !expired && !orphaned {
        return Action::Leave(LeaveReason::LiveLease);
    }
    let counted = if s.count_interrupted_attempt {
        attempts.saturating_add(1)
    } else {
        attempts
    };
    let key = row.key.to_string();
    let made = u32::try_from(counted).unwrap_or(u32::MAX);
    let message = if expired && kind != CandidateKind::Orphaned {
        &s.messages.lease_expired
    } else {
        &s.messages.orphaned
    };
    let (status, outcome, next_run_at) = match s.policy.decide(&Attempt::new(&key, made, now)) {
        Decision::RetryAt(at) => {
            let target = if expired {
                &s.states.retry
            } else {
                &s.states.orphaned_to
            };
            (target.clone(), Outcome::Requeued, Some(at))
        }
        Decision::GiveUp(_) => (s.states.failed.clone(), Outcome::Failed, None),
    };
    Action::Repair {
        repair: Repair {
            expected: row.clone(),
            status,
            attempts: counted,
            last_error: message.clone(),
            next_run_at,
            failed: outcome == Outcome::Failed,
        },
        outcome,
    }
}
