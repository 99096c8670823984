#![doc = include_str!("../README.md")]

mod diff;
mod error;
mod maintenance;
mod mapping;
pub mod memory;
mod messages;
mod predicate;
mod rebuild;
mod value;

#[doc(hidden)]
pub mod conformance;
#[cfg(test)]
mod orchestration_tests;

pub use diff::{
    BATCHES, BatchPlan, DesiredJob, DiffSettings, ENQUEUED, ENTITIES_CHECKED, EntitySource,
    JOBS_CHECKED, JobPlan, JobQueue, OBSOLETE, ORPHANED, OrphanSweeper, QueueDiffReconciler,
    QueuedJob, RESCHEDULED, Reschedule, SweepCounts, plan_entity, plan_queued_batch,
};
pub use error::{BoxError, Error, Result};
pub use maintenance::{Maintenance, SetValue, validate_counter_name};
pub use mapping::{
    Column, MAX_IDENTIFIER_LEN, TableMapping, TableMappingBuilder, TableMappingSpec,
    validate_identifier,
};
pub use messages::{
    DEFAULT_ARCHIVE_AFTER_DAYS, FAILED_ARCHIVED, FailedMessageStore, FixedDelays, HealthLevel,
    HealthThresholds, Message, MessageAdmin, MessageRecovery, MessageStatus, MessageStore,
    QUEUE_FAILED, QUEUE_PENDING, QUEUE_PROCESSING, QUEUE_SENT, QueueHealth, RecoverySettings,
    Removal, RetrySchedule, STUCK_RELEASED, SendFailure, StatusCounts, Thresholds,
    after_failed_send, queue_health,
};
pub use predicate::{
    MAX_DEPTH, MAX_IN_LIST, MAX_NOW_OFFSET_SECS, MAX_WITHIN_DAYS, Operand, Operator, Predicate,
    Truth,
};
pub use rebuild::{
    DEFAULT_BATCH_SIZE, DEFAULT_CANDIDATES_COUNTER, DerivedQueue, MAX_BATCH_SIZE, NamedCount,
    RehydrateBuilder, RehydrateReconciler, SourceStore,
};
pub use value::{ColumnType, Key, KeyType, Row, Value};

#[cfg(test)]
mod tests {
    use super::*;

    // Compile-time check: the store traits are object safe.
    type _ObjectSafe = (
        Box<dyn SourceStore>,
        Box<dyn DerivedQueue>,
        Box<dyn JobQueue>,
        Box<dyn EntitySource>,
        Box<dyn JobPlan>,
        Box<dyn OrphanSweeper>,
        Box<dyn MessageStore>,
        Box<dyn FailedMessageStore>,
        Box<dyn RetrySchedule>,
        Box<dyn recon_core::Reconciler>,
    );
    fn _object_safe(_: _ObjectSafe) {}
}
