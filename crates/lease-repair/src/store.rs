//! The store traits lease repair reads and writes through.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use recon_core::Result;

use crate::{
    ApplyOutcome, CandidateQuery, JobKey, JobRow, PlannedBatch, PruneQuery, Repair, RepairPlan,
};

/// Where the host's jobs live, shaped around batches.
///
/// Implementations: `store_sqlx::SqlLeaseStore` (SQLite, PostgreSQL, MySQL/MariaDB) and
/// [`MemoryLeaseStore`](crate::MemoryLeaseStore) (the reference the conformance suite
/// compares against). A host that keeps its jobs elsewhere implements this trait.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Up to `query.limit` rows of `query.kind` with keys after `query.after`, in key order,
    /// as defined by [`CandidateKind::matches`](crate::CandidateKind::matches). Reads only.
    async fn read_candidates(&self, query: CandidateQuery) -> Result<Vec<JobRow>>;

    /// Apply a batch of decided repairs in one transaction, set-based. A repair is applied
    /// only if its job still equals `repair.expected` (status, owner, expiry, attempts) and is
    /// not locked by another repairer; otherwise the job is reported as skipped and left
    /// alone. `now` stamps `updated_at` / `failed_at` where the host maps them.
    async fn apply(&self, repairs: &[Repair], now: DateTime<Utc>) -> Result<ApplyOutcome>;

    /// The database's current time, for [`TimeBasis::Database`](crate::TimeBasis::Database).
    async fn database_now(&self) -> Result<DateTime<Utc>>;

    /// Whether any row is a candidate of one of the [`CandidateKind::STUCK`](crate::CandidateKind::STUCK) kinds (the
    /// query's `kind`, `after` and `limit` are ignored). Lease repair asks this first, so that
    /// a clean table costs one read. The default reads one row of each kind; a store that can
    /// ask all three at once (the SQL store does) should.
    async fn any_stuck(&self, query: CandidateQuery) -> Result<bool> {
        for kind in crate::CandidateKind::STUCK {
            let q = CandidateQuery {
                kind,
                after: None,
                limit: 1,
                ..query.clone()
            };
            if !self.read_candidates(q).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Apply `plans` to the next batch, inside the store, without reading the rows out: up to
    /// `limit` rows that one of the plans covers (see [`RepairPlan`]; plans are of distinct
    /// kinds, so a row is covered by at most one), with keys after `after`, in key order, each
    /// repaired as its plan's [`RepairPlan::repair_for`] says, in one pass and one transaction,
    /// with the candidate condition checked in the same statement that writes (so a lease
    /// renewed or a job finished before it is left alone) and rows another transaction holds
    /// skipped. [`PlannedBatch::counts`] has one entry per plan, in the order given.
    ///
    /// A store may instead look at a key range that holds at most `limit` candidates; either
    /// way it says where the next batch starts ([`PlannedBatch::last`]) and whether there is
    /// one ([`PlannedBatch::more`]). Returns `Ok(None)` when the
    /// store cannot apply plans; [`LeaseRepair`](crate::LeaseRepair) then reads and decides
    /// row by row. The default implementation returns `Ok(None)`.
    async fn repair_planned(
        &self,
        plans: &[RepairPlan],
        after: Option<JobKey>,
        limit: usize,
    ) -> Result<Option<PlannedBatch>> {
        let _ = (plans, after, limit);
        Ok(None)
    }
}

/// Deletes or archives old terminal jobs in batches.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PruneStore: Send + Sync {
    /// Dispose of up to `query.limit` matching jobs (oldest keys first) in one transaction;
    /// returns how many.
    async fn prune_batch(&self, query: PruneQuery) -> Result<u64>;

    /// How many jobs match `query` (ignoring its limit), for dry runs.
    async fn count_prunable(&self, query: PruneQuery) -> Result<u64>;
}
