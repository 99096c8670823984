//! # recon
//!
//! Reconcile a host application's derived state with the truth in its database after
//! crashes, restarts and partial failures. This facade re-exports the workspace crates under
//! short names:
//!
//! | module | crate |
//! |--------|-------|
//! | [`core`] | `recon-core`: `Reconciler`, `Runner`, reports, store traits |
//! | [`retry`] | `retry-policy` |
//! | [`lease`] | `lease-repair` |
//! | [`rehydrate`] | `queue-rehydrate` |
//! | [`lineage`] | `lineage-checksum` |
//! | [`store`] | `store-sqlx` (features `sqlite` (default), `postgres`, `mysql`) |
//!
//! ```
//! use std::time::Duration;
//! use recon::{
//!     async_trait, Counter, Reconciler, Result, RunContext, Runner, RunStatus, StepOptions,
//!     StepReport,
//! };
//!
//! const PINGS: Counter = Counter::new("pings");
//!
//! struct Ping;
//!
//! #[async_trait]
//! impl Reconciler for Ping {
//!     fn name(&self) -> &str { "ping" }
//!     async fn reconcile(&self, _ctx: &RunContext) -> Result<StepReport> {
//!         let mut report = StepReport::new("ping");
//!         report.add(PINGS, 1);
//!         Ok(report)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<()> {
//! let runner = Runner::builder("startup")
//!     .step_with(Ping, StepOptions::new().required().timeout(Duration::from_secs(5)))
//!     .build()?;
//! let report = runner.run().await;
//! assert_eq!(report.status, RunStatus::Success);
//! assert_eq!(report.count(PINGS), 1);
//! # Ok(()) }
//! ```

pub use lease_repair as lease;
pub use lineage_checksum as lineage;
pub use queue_rehydrate as rehydrate;
pub use recon_core as core;
pub use retry_policy as retry;
pub use store_sqlx as store;

pub use recon_core::{
    Counter, Error, Reconciler, Result, RunContext, RunOptions, RunReport, RunStatus, Runner,
    StatusView, StepOptions, StepReport, async_trait,
};

/// The guides in `docs/` are compiled as doctests here, where every crate is in scope, so
/// their examples cannot drift from the code.
#[doc(hidden)]
pub mod guides {
    #[doc = include_str!("../README.md")]
    pub mod readme {}
    #[doc = include_str!("../docs/lease-repair.md")]
    pub mod lease_repair {}
    #[doc = include_str!("../docs/recon-core.md")]
    pub mod recon_core {}
    #[doc = include_str!("../docs/store-sqlx.md")]
    pub mod store_sqlx {}
    #[doc = include_str!("../docs/operations.md")]
    pub mod operations {}
    #[doc = include_str!("../docs/queue-rehydrate.md")]
    pub mod queue_rehydrate {}
    #[doc = include_str!("../docs/lineage-checksum.md")]
    pub mod lineage_checksum {}
}
