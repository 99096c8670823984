#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod classify;
mod error;
pub mod failed;
pub mod fingerprint;
pub mod limits;
pub mod lineage;
pub mod memory;
pub mod quality;
pub mod recovery;
pub mod sync;

#[doc(hidden)]
pub mod conformance;

pub use classify::{
    Action, Classification, Classifier, CleanupScope, Difference, FingerprintEntry,
    FingerprintStore, Incoming, RecordBatch, StoredFingerprint, UnseenQuery, classify,
};
pub use error::{Error, Result};
pub use failed::{
    DueQuery, ErrorTypeCount, FailedRecord, FailedRecordStore, FailureId, FailureOutcome,
    FailureState, ListQuery, NewFailure, OutcomeKind, PruneQuery,
};
pub use fingerprint::{Fingerprint, Schema, Value, fingerprint};
pub use lineage::{
    GapReport, LineageRecord, LineageStatus, LineageStore, LineageTracker, LineageUpdate,
    QualityCounts, QualityQuery, StageGap, StageStatusCount, Stages, StuckQuery, analyse_gaps,
};
pub use quality::{
    Alert, AuditReconciler, AuditSummary, Coverage, CoverageRule, FieldsCheck, FieldsRule,
    PipelineReport, QualityRules, Severity, SourceCount,
};
pub use recovery::{
    DelaySchedule, ErrorClass, GiveUpReason, RecoveryReconciler, RecoverySettings, RecoverySummary,
    Replay, ReplayError, RetentionReconciler, RetentionSettings, RetryAttempt, RetryDecision,
    StageHandler, StagePolicy, StageRecovery,
};
pub use sync::{
    Change, ChangeKind, FetchRequest, ItemResult, OrphanCleanup, SnapshotRequest, SyncReconciler,
    SyncSettings, SyncTarget, UpstreamPage, UpstreamRecord, UpstreamRetry, UpstreamSource,
};

#[cfg(test)]
mod object_safety {
    //! Compile-time checks: every trait is usable as a trait object and every reconciler
    //! can be boxed as a `dyn Reconciler`.
    use super::*;
    use recon_core::Reconciler;

    fn _stores(_: &dyn FingerprintStore, _: &dyn LineageStore, _: &dyn FailedRecordStore) {}
    fn _host(
        _: &dyn StageHandler,
        _: &dyn StagePolicy,
        _: &dyn SourceCount,
        _: &dyn UpstreamSource<()>,
        _: &dyn SyncTarget<()>,
        _: &dyn OrphanCleanup,
    ) {
    }
    fn _reconcilers(
        a: RecoveryReconciler,
        b: RetentionReconciler,
        c: AuditReconciler,
        d: SyncReconciler<()>,
    ) -> [Box<dyn Reconciler>; 4] {
        [Box::new(a), Box::new(b), Box::new(c), Box::new(d)]
    }
    fn _send_sync<T: Send + Sync>() {}
    fn _all_send_sync() {
        _send_sync::<Fingerprint>();
        _send_sync::<Schema>();
        _send_sync::<Classifier>();
        _send_sync::<LineageTracker>();
        _send_sync::<Error>();
    }
}
