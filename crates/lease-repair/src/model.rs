//! The rows a [`LeaseStore`](crate::LeaseStore) reads and the repairs it applies.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A job's primary key: an integer or a text/UUID key. Keys of one table are all of one
/// kind; integers sort before texts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JobKey {
    /// An integer key.
    Int(i64),
    /// A text or UUID key.
    Text(String),
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Text(s) => f.write_str(s),
        }
    }
}

impl From<i64> for JobKey {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<&str> for JobKey {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

/// A job as the store read it: the columns lease repair decides on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    /// Primary key.
    pub key: JobKey,
    /// The host's state value (`processing`, …).
    pub status: String,
    /// Who holds the lease (`locked_by`), if anyone.
    pub lease_owner: Option<String>,
    /// When the lease ends (`locked_until`), if set.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Attempts already counted. `None` when the column is NULL (an anomaly).
    pub attempts: Option<i64>,
    /// A column the store could not decode (`"locked_until: invalid datetime"`): the row is
    /// reported as an anomaly and never changed, and the other rows of the batch go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// Which stuck jobs a batch looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateKind {
    /// `processing` with a lease that ended before `now` (owner set or not).
    ExpiredLease,
    /// `processing` with neither owner nor expiry: the worker vanished before taking a lease.
    Orphaned,
    /// `processing` rows that are neither of the above but look wrong: an owner without an
    /// expiry, an expiry further ahead than the maximum lease, NULL, negative or absurdly
    /// large attempts.
    Anomaly,
    /// Rows in a state the host did not declare (`procesing`, `PROCESSING`, `''`, NULL): in
    /// none of [`CandidateQuery::known_states`] and not the processing state. Only read when
    /// [`Settings::report_unknown_status`](crate::Settings::report_unknown_status) is set,
    /// because finding them reads every row of the table once.
    UnknownStatus,
}

impl CandidateKind {
    /// All kinds, in the order lease repair scans them (`UnknownStatus` only when it is
    /// turned on).
    pub const ALL: [CandidateKind; 4] = [
        Self::ExpiredLease,
        Self::Orphaned,
        Self::Anomaly,
        Self::UnknownStatus,
    ];

    /// The kinds of stuck jobs: everything but [`UnknownStatus`](Self::UnknownStatus).
    pub const STUCK: [CandidateKind; 3] = [Self::ExpiredLease, Self::Orphaned, Self::Anomaly];

    /// Whether `row` belongs to this kind at `now`. This is the reference definition that
    /// every store's query must agree with (the conformance suite checks it).
    pub fn matches(self, row: &JobRow, query: &CandidateQuery) -> bool {
        if self == Self::UnknownStatus {
            return row.status != query.processing_state
                && !query.known_states.contains(&row.status);
        }
        if row.status != query.processing_state {
            return false;
        }
        let now = query.now;
        let expired = row.lease_expires_at.is_some_and(|e| e < now);
        let orphaned = row.lease_owner.is_none() && row.lease_expires_at.is_none();
        match self {
            Self::ExpiredLease => expired,
            Self::Orphaned => orphaned,
            Self::Anomaly => {
                let owner_without_expiry =
                    row.lease_owner.is_some() && row.lease_expires_at.is_none();
                let too_far = match (row.lease_expires_at, query.max_lease_horizon()) {
                    (Some(e), Some(h)) => e > h,
                    _ => false,
                };
                let live = row.lease_expires_at.is_some_and(|e| e >= now);
                let bad_attempts = row
                    .attempts
                    .is_none_or(|a| !(0..=crate::MAX_ATTEMPTS).contains(&a));
                owner_without_expiry || too_far || (live && bad_attempts)
            }
            // answered before the processing check
            Self::UnknownStatus => false,
        }
    }
}

/// One batch to read: `limit` rows of `kind` with keys after `after`, in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidateQuery {
    /// Which stuck jobs.
    pub kind: CandidateKind,
    /// The host's `processing` state value.
    pub processing_state: String,
    /// The run's time: leases ending before it are expired.
    pub now: DateTime<Utc>,
    /// Leases longer than this are anomalies (only for [`CandidateKind::Anomaly`]).
    pub max_lease: Option<chrono::Duration>,
    /// The states the host uses besides `processing_state` (only for
    /// [`CandidateKind::UnknownStatus`]; compared exactly, byte for byte, on every backend).
    pub known_states: Vec<String>,
    /// Keyset position: only keys greater than this.
    pub after: Option<JobKey>,
    /// At most this many rows.
    pub limit: usize,
}

impl CandidateQuery {
    /// `now + max_lease`, if a maximum lease is set (saturating at the calendar's end).
    pub fn max_lease_horizon(&self) -> Option<DateTime<Utc>> {
        self.max_lease.map(|m| {
            self.now
                .checked_add_signed(m)
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        })
    }
}

/// A decided change to one job, with the row as it was read so the store can leave the job
/// alone if it changed in between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    /// The row as read; the store applies the repair only if the job still looks like this.
    pub expected: JobRow,
    /// The new state value.
    pub status: String,
    /// The new attempts count.
    pub attempts: i64,
    /// The message for `last_error`.
    pub last_error: String,
    /// When the job may run again (written to `next_run_at` when the host maps it).
    pub next_run_at: Option<DateTime<Utc>>,
    /// Whether the job is given up (`failed_at` is set when the host maps it).
    pub failed: bool,
}

/// What [`LeaseStore::apply`](crate::LeaseStore::apply) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Jobs that were repaired.
    pub applied: Vec<JobKey>,
    /// Jobs left alone because they changed since they were read (a worker renewed the lease
    /// or finished the job), were deleted, or are locked by another repairer right now.
    pub skipped: Vec<JobKey>,
}

/// How [`PruneStore::prune_batch`](crate::PruneStore::prune_batch) disposes of old jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PruneMode {
    /// Delete them.
    Delete,
    /// Copy them into the archive table (same columns), then delete them, in one transaction.
    Archive,
}

/// One batch of old terminal jobs to prune.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneQuery {
    /// States that are final (`done`, `failed`, …).
    pub terminal_states: Vec<String>,
    /// Jobs last updated before this are pruned.
    pub older_than: DateTime<Utc>,
    /// At most this many jobs per batch.
    pub limit: usize,
    /// Delete or archive.
    pub mode: PruneMode,
}
