#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod context;
mod error;
pub mod memory;
mod reconciler;
mod report;
mod runner;
mod status;
mod store;

#[cfg(test)]
mod runner_tests;

pub use async_trait::async_trait;

pub use clock::{Clock, ManualClock, SystemClock, TimeSource};
pub use context::{Progress, ProgressHook, RunContext, RunId};
pub use error::{BoxError, Error, Result};
pub use memory::{MemoryRunLock, MemoryRunLog, MemoryWatermarkStore};
pub use reconciler::Reconciler;
pub use report::{
    Counter, Counters, ItemError, RunReport, RunStatus, StepError, StepOutcome, StepReport,
    StepStatus, truncate,
};
pub use runner::{RunOptions, Runner, RunnerBuilder, StepOptions};
pub use status::{STATUS_MAX_ERRORS, StatusView, camel_case, render_text};
pub use store::{LockAttempt, LockGuard, RunLock, RunLog, WatermarkStore};
