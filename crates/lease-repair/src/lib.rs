#![doc = include_str!("../README.md")]

pub mod counters;
mod decide;
mod error;
mod memory;
mod model;
mod plan;
mod reconcile;
mod store;

pub use decide::{
    Action, AnomalyKind, JobStates, LeaveReason, MAX_ATTEMPTS, MAX_KNOWN_STATES, MAX_MESSAGE_BYTES,
    Messages, Outcome, Settings, TimeBasis, decide,
};
pub use error::Error;
pub use memory::{MemoryLeaseStore, StoredJob};
pub use model::{
    ApplyOutcome, CandidateKind, CandidateQuery, JobKey, JobRow, PruneMode, PruneQuery, Repair,
};
pub use plan::{MAX_PLAN_STEPS, PlannedBatch, PlannedCounts, RepairPlan};
pub use reconcile::{LeasePrune, LeaseRepair, MAX_BATCH_SIZE, MAX_LISTED_ANOMALIES};
pub use store::{LeaseStore, PruneStore};

#[cfg(test)]
pub use store::{MockLeaseStore, MockPruneStore};

#[cfg(test)]
mod tests;
