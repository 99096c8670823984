//! Repair plans: the pure decision, evaluated once per class of rows, so that a store can
//! apply it inside the database in one statement per batch instead of sending every row out
//! and back.
//!
//! When the retry policy has no jitter, [`decide`] depends on a stuck row only through its
//! candidate kind and its attempts count (the key feeds nothing but the jitter). A
//! [`RepairPlan`] is `decide` evaluated for each attempts count of one kind; a store applies
//! it with `CASE attempts …` over the batch, guarded by the candidate condition in the same
//! statement. Rows the plan does not cover (unreadable values, attempts out of range, rows
//! another transaction holds) are left for the row-by-row path, which reads, decides and
//! reports them as before.

use chrono::{DateTime, Utc};
use retry_policy::Jitter;

use crate::decide::{Action, Outcome, Settings, decide};
use crate::{CandidateKind, JobKey, JobRow, MAX_ATTEMPTS, Repair};

/// At most this many distinct retry times in a plan (one `CASE` arm each). A policy whose
/// delays still grow after this many attempts is planned for the attempts counts below it;
/// jobs with more attempts go the row-by-row way.
pub const MAX_PLAN_STEPS: usize = 64;

/// The decision for every stuck job of one kind, by attempts count: what a store applies in
/// the database with [`LeaseStore::repair_planned`](crate::LeaseStore::repair_planned).
///
/// Built by [`RepairPlan::new`] from [`decide`] itself, and only when the decision cannot
/// depend on the job's key (the policy has no jitter), so applying the plan to a row gives
/// exactly the repair `decide` gives for it ([`RepairPlan::repair_for`], property-tested).
///
/// Plans of different kinds cover disjoint rows (an expired lease has an expiry, an orphan
/// has none), so a store applies the plans of a run together, in one pass over the table.
///
/// A row is **covered** when it is a candidate of [`kind`](Self::kind) at [`now`](Self::now)
/// and its stored attempts are in `0..=`[`max_attempts`](Self::max_attempts). For a covered row
/// with stored attempts `a`, the repair writes:
///
/// - `status`: [`failed_state`](Self::failed_state) when `a >= fail_from`, else
///   [`retry_state`](Self::retry_state);
/// - `attempts`: `a + increment`;
/// - `last_error`: [`last_error`](Self::last_error); lease owner and expiry: NULL;
/// - `next_run_at` (when mapped): `retry_at[min(a, len − 1)]` for a retry, NULL when failed;
/// - `failed_at` (when mapped): `now` when failed, else unchanged; `updated_at`: `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairPlan {
    /// [`CandidateKind::ExpiredLease`] or [`CandidateKind::Orphaned`].
    pub kind: CandidateKind,
    /// The host's processing state.
    pub processing_state: String,
    /// The run's time: leases ending before it are expired; stamps `updated_at`/`failed_at`.
    pub now: DateTime<Utc>,
    /// Added to the stored attempts (1 when the interrupted attempt is counted, else 0).
    pub increment: i64,
    /// Highest stored attempts count the plan covers.
    pub max_attempts: i64,
    /// Stored attempts from which the job is given up, if any within the covered range.
    pub fail_from: Option<i64>,
    /// The retry time for stored attempts 0, 1, …; the last one holds for every higher count.
    /// Never empty unless every covered count fails (`fail_from == Some(0)`).
    pub retry_at: Vec<DateTime<Utc>>,
    /// The state a retried job goes to.
    pub retry_state: String,
    /// The state a given-up job goes to.
    pub failed_state: String,
    /// The `last_error` written.
    pub last_error: String,
}

/// What [`LeaseStore::repair_planned`](crate::LeaseStore::repair_planned) did with one batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlannedBatch {
    /// Per plan, in the order the plans were given: the jobs it repaired.
    pub counts: Vec<PlannedCounts>,
    /// The keyset position for the next batch: the highest key the batch covered (repaired
    /// or looked at), in the store's own key order (a database collation may differ from
    /// Rust's); `None` when there is nothing after it. A position answered twice in one run
    /// is an error.
    pub last: Option<JobKey>,
    /// Whether rows after `last` remain to be looked at (another batch is needed).
    pub more: bool,
}

/// The jobs one plan repaired in a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlannedCounts {
    /// Jobs repaired and sent back to be retried.
    pub requeued: u64,
    /// Jobs repaired and given up.
    pub failed: u64,
}

impl PlannedCounts {
    /// Count one repaired job.
    pub fn add(&mut self, failed: bool) {
        self.add_n(failed, 1);
    }

    /// Count `n` repaired jobs with the same outcome.
    pub fn add_n(&mut self, failed: bool, n: u64) {
        if failed {
            self.failed += n;
        } else {
            self.requeued += n;
        }
    }
}

impl PlannedBatch {
    /// An empty batch for `plans` plans: nothing repaired, nothing after.
    pub fn empty(plans: usize) -> Self {
        Self {
            counts: vec![PlannedCounts::default(); plans],
            last: None,
            more: false,
        }
    }

    /// Jobs repaired in the batch, by every plan.
    pub fn repaired(&self) -> u64 {
        self.counts.iter().map(|c| c.requeued + c.failed).sum()
    }
}

impl RepairPlan {
    /// The plan for `kind` candidates at `now`, or `None` when the decision is not one plan
    /// can hold: a policy with jitter (the retry time depends on the key), a kind other than
    /// expired leases and orphans, or a time at the calendar's edge.
    pub fn new(kind: CandidateKind, now: DateTime<Utc>, s: &Settings) -> Option<Self> {
        if s.policy.jitter() != Jitter::None
            || !matches!(kind, CandidateKind::ExpiredLease | CandidateKind::Orphaned)
        {
            return None;
        }
        let lease = match kind {
            CandidateKind::ExpiredLease => {
                Some(now.checked_sub_signed(chrono::Duration::seconds(1))?)
            }
            _ => None,
        };
        let probe = |key: i64, attempts: i64| JobRow {
            key: JobKey::Int(key),
            status: s.states.processing.clone(),
            lease_owner: lease.map(|_| "w".to_owned()),
            lease_expires_at: lease,
            attempts: Some(attempts),
            unreadable: None,
        };
        // The decision for stored attempts `a`, checked to be the same for two keys.
        let step = |a: i64| -> Option<(Repair, Outcome)> {
            let one = decide(&probe(1, a), kind, now, s);
            let two = decide(&probe(2, a), kind, now, s);
            match (one, two) {
                (
                    Action::Repair { repair, outcome },
                    Action::Repair {
                        repair: other,
                        outcome: o2,
                    },
                ) if outcome == o2
                    && repair.status == other.status
                    && repair.next_run_at == other.next_run_at
                    && repair.last_error == other.last_error
                    && repair.attempts == other.attempts =>
                {
                    Some((repair, outcome))
                }
                _ => None,
            }
        };
        let increment = i64::from(s.count_interrupted_attempt);
        let (first, _) = step(0)?;
        let last_error = first.last_error.clone();
        let mut plan = Self {
            kind,
            processing_state: s.states.processing.clone(),
            now,
            increment,
            max_attempts: 0,
            fail_from: None,
            retry_at: Vec::new(),
            retry_state: String::new(),
            failed_state: s.states.failed.clone(),
            last_error,
        };
        let max_delay =
            now.checked_add_signed(chrono::Duration::from_std(s.policy.max_delay()).ok()?);
        for a in 0..MAX_PLAN_STEPS as i64 {
            let (repair, outcome) = step(a)?;
            if repair.last_error != plan.last_error || repair.attempts != a + increment {
                return None;
            }
            match outcome {
                // Giving up is monotone: `attempts >= max_attempts` (the policy's rule 2).
                Outcome::Failed => {
                    if repair.status != plan.failed_state {
                        return None;
                    }
                    plan.fail_from = Some(a);
                    plan.max_attempts = MAX_ATTEMPTS;
                    return Some(plan);
                }
                Outcome::Requeued => {
                    let at = repair.next_run_at?;
                    if plan.retry_state.is_empty() {
                        plan.retry_state = repair.status.clone();
                    } else if repair.status != plan.retry_state {
                        return None;
                    }
                    plan.retry_at.push(at);
                    plan.max_attempts = a;
                    // Without jitter the delay is the base delay, non-decreasing and capped
                    // at `max_delay`: once there, every later retry waits the same, until the
                    // attempts run out.
                    if Some(at) == max_delay {
                        let max = s.policy.max_attempts().map(i64::from);
                        return plan.with_saturated_tail(a, max, &step);
                    }
                }
            }
        }
        Some(plan)
    }

    /// Extend a plan whose retry time stopped changing at stored attempts `a` to every count:
    /// find where the policy gives up (if it does) and check the decision there.
    fn with_saturated_tail(
        mut self,
        a: i64,
        policy_max: Option<i64>,
        step: &impl Fn(i64) -> Option<(Repair, Outcome)>,
    ) -> Option<Self> {
        self.max_attempts = MAX_ATTEMPTS;
        let Some(max) = policy_max else {
            return Some(self);
        };
        // Stored attempts `f` fail when `f + increment >= max` (and 0 counts as 1).
        let f = (max - self.increment).max(a + 1);
        if f > MAX_ATTEMPTS {
            return Some(self);
        }
        let (before, o1) = step(f - 1)?;
        let (at, o2) = step(f)?;
        if o1 != Outcome::Requeued
            || before.next_run_at != self.retry_at.last().copied()
            || o2 != Outcome::Failed
            || at.status != self.failed_state
        {
            return None;
        }
        self.fail_from = Some(f);
        Some(self)
    }

    /// The repair this plan makes of `row`, or `None` when the plan does not cover it (not a
    /// candidate of its kind, unreadable, attempts outside `0..=max_attempts`).
    pub fn repair_for(&self, row: &JobRow) -> Option<Repair> {
        if row.unreadable.is_some() || row.status != self.processing_state {
            return None;
        }
        let candidate = match self.kind {
            CandidateKind::ExpiredLease => row.lease_expires_at.is_some_and(|e| e < self.now),
            _ => row.lease_owner.is_none() && row.lease_expires_at.is_none(),
        };
        let a = row.attempts?;
        if !candidate || !(0..=self.max_attempts).contains(&a) {
            return None;
        }
        let failed = self.fail_from.is_some_and(|f| a >= f);
        let next_run_at = if failed {
            None
        } else {
            let i = usize::try_from(a).unwrap_or(usize::MAX);
            Some(*self.retry_at.get(i).or(self.retry_at.last())?)
        };
        Some(Repair {
            expected: row.clone(),
            status: if failed {
                self.failed_state.clone()
            } else {
                self.retry_state.clone()
            },
            attempts: a + self.increment,
            last_error: self.last_error.clone(),
            next_run_at,
            failed,
        })
    }
}
