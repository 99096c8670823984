#![doc = include_str!("../README.md")]

mod db;
mod dialect;
mod error;
mod ident;
mod lease;
mod lineage;
mod lock;
mod metrics;
mod migrate;
mod rehydrate;
mod run_log;
mod schema;
mod sql;
mod value;
mod watermark;

pub use db::{ConnectOptions, Db};
pub use dialect::{Dialect, TimestampFormat};
pub use error::{Error, Result, is_transient_sqlx};
pub use ident::{Ident, TableName};
pub use lease::{JobTable, JobTableBuilder, KeyKind, SqlLeaseStore};
pub use lineage::{SqlFailedRecordStore, SqlFingerprintStore, SqlLineageStore};
pub use lock::{LockMode, SqlRunLock};
pub use metrics::{HEALTHY, Metrics};
pub use rehydrate::{
    JobState, MessageTable, MessageTableBuilder, OrphanSweep, QUEUED_JOBS_TABLE, SqlEntitySource,
    SqlJobQueue, SqlMessageStore, SqlOrphanSweeper, SqlSourceStore,
};
pub use run_log::SqlRunLog;
pub use watermark::SqlWatermarkStore;

/// The sqlx version this crate is built on, re-exported so hosts can name pool types.
pub use sqlx;
