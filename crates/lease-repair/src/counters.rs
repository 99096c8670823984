//! The counters lease repair reports.

use recon_core::Counter;

/// Jobs whose expired lease was cleared (whether they were requeued or failed).
pub const LEASES_REPAIRED: Counter = Counter::new("leases_repaired");
/// Orphaned jobs (no owner, no expiry) put back to the queue.
pub const JOBS_REQUEUED: Counter = Counter::new("jobs_requeued");
/// Jobs of either kind moved to the failed state because they used up their attempts.
pub const JOBS_FAILED: Counter = Counter::new("jobs_failed");
/// Rows reported, not changed: owner without expiry, expiry too far ahead, bad attempts.
pub const ANOMALIES: Counter = Counter::new("anomalies");
/// Repairs not applied because the job changed since it was read (or was locked).
pub const SKIPPED_CHANGED: Counter = Counter::new("skipped_changed");
/// Batches read (row by row) or repaired inside the database.
pub const BATCHES: Counter = Counter::new("batches");
/// The counters that say what a repair run did to the jobs, in this order: the same whichever
/// way it ran (inside the database or row by row, in any batch sizes), unlike [`BATCHES`].
/// Every run reports each of them, zero or not.
pub const OUTCOME: [Counter; 5] = [
    LEASES_REPAIRED,
    JOBS_REQUEUED,
    JOBS_FAILED,
    ANOMALIES,
    SKIPPED_CHANGED,
];

/// Old terminal jobs deleted by the prune step.
pub const PRUNED: Counter = Counter::new("pruned");
/// Old terminal jobs moved to the archive table by the prune step.
pub const ARCHIVED: Counter = Counter::new("archived");
