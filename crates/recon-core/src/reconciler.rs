//! The one trait every reconciliation step implements.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Result, RunContext, StepReport};

/// One reconciliation step: read the truth, decide, repair, report.
///
/// Object safe, so a [`Runner`](crate::Runner) holds steps as `Arc<dyn Reconciler>`.
/// Implementations must honour [`RunContext::is_dry_run`] (decide and report, change nothing)
/// and should stop between batches once [`RunContext::deadline_passed`].
///
/// ```
/// use recon_core::{async_trait, Counter, Reconciler, Result, RunContext, StepReport};
///
/// struct HealthCheck;
///
/// #[async_trait]
/// impl Reconciler for HealthCheck {
///     fn name(&self) -> &str {
///         "health-check"
///     }
///     async fn reconcile(&self, _ctx: &RunContext) -> Result<StepReport> {
///         let mut report = StepReport::new(self.name());
///         report.set(Counter::new("healthy"), 1);
///         Ok(report)
///     }
/// }
/// ```
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Reconciler: Send + Sync {
    /// A short, stable, kebab-case name (`lease-repair`); it names the step in reports.
    fn name(&self) -> &str;

    /// Run the step once.
    async fn reconcile(&self, ctx: &RunContext) -> Result<StepReport>;
}

#[async_trait]
impl<R: Reconciler + ?Sized> Reconciler for Arc<R> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn reconcile(&self, ctx: &RunContext) -> Result<StepReport> {
        (**self).reconcile(ctx).await
    }
}

#[async_trait]
impl<R: Reconciler + ?Sized> Reconciler for Box<R> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn reconcile(&self, ctx: &RunContext) -> Result<StepReport> {
        (**self).reconcile(ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Compile-time check: the trait is object safe and boxes/arcs of it are reconcilers too.
    fn _object_safe(_: Box<dyn Reconciler>) {}
    fn _boxed_is_reconciler(r: Box<dyn Reconciler>) -> impl Reconciler {
        r
    }
    fn _arc_is_reconciler(r: Arc<dyn Reconciler>) -> impl Reconciler {
        r
    }
}
