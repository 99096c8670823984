//! The reconcilers: [`LeaseRepair`] and [`LeasePrune`].

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use recon_core::{Reconciler, RunContext, StepReport};
use serde_json::json;

use crate::counters::*;
use crate::decide::{Action, AnomalyKind, Outcome, Settings, TimeBasis, decide};
use crate::{
    ApplyOutcome, CandidateKind, CandidateQuery, Error, JobKey, LeaseStore, PlannedBatch,
    PruneMode, PruneQuery, PruneStore, Repair, RepairPlan,
};

/// Largest batch a reconciler accepts (bounded memory and statement size).
pub const MAX_BATCH_SIZE: usize = 10_000;
/// At most this many anomalies are listed (all are counted).
pub const MAX_LISTED_ANOMALIES: usize = 100;

#[async_trait]
impl<T: LeaseStore + ?Sized> LeaseStore for Arc<T> {
    async fn read_candidates(&self, q: CandidateQuery) -> recon_core::Result<Vec<crate::JobRow>> {
        (**self).read_candidates(q).await
    }
    async fn apply(&self, r: &[Repair], now: DateTime<Utc>) -> recon_core::Result<ApplyOutcome> {
        (**self).apply(r, now).await
    }
    async fn database_now(&self) -> recon_core::Result<DateTime<Utc>> {
        (**self).database_now().await
    }
    async fn any_stuck(&self, q: CandidateQuery) -> recon_core::Result<bool> {
        (**self).any_stuck(q).await
    }
    async fn repair_planned(
        &self,
        plans: &[RepairPlan],
        after: Option<JobKey>,
        limit: usize,
    ) -> recon_core::Result<Option<PlannedBatch>> {
        (**self).repair_planned(plans, after, limit).await
    }
}

#[async_trait]
impl<T: PruneStore + ?Sized> PruneStore for Arc<T> {
    async fn prune_batch(&self, q: PruneQuery) -> recon_core::Result<u64> {
        (**self).prune_batch(q).await
    }
    async fn count_prunable(&self, q: PruneQuery) -> recon_core::Result<u64> {
        (**self).count_prunable(q).await
    }
}

fn check_batch(n: usize) -> Result<usize, Error> {
    if (1..=MAX_BATCH_SIZE).contains(&n) {
        Ok(n)
    } else {
        Err(Error::Settings(format!(
            "batch size {n} is outside 1..={MAX_BATCH_SIZE}"
        )))
    }
}

/// Repairs jobs stuck in `processing`: expired leases and orphans go back to the queue or,
/// when their attempts are used up, to failed; anomalies are reported.
///
/// Each kind of candidate is read in keyset batches; each batch is decided by the pure
/// [`decide`] and applied in one guarded, set-based store call, so a job that a live worker
/// renewed or finished in between is left alone (counted as `skipped_changed`). Dry runs read
/// and decide but apply nothing. The step stops between batches once the run's deadline passed.
///
/// **In the database.** When the retry policy has no jitter, the decision for expired leases
/// and orphans depends only on the attempts count: the step then builds a [`RepairPlan`] (the
/// same [`decide`], evaluated per attempts count) for each of the two kinds and lets the store
/// apply both in one pass of keyset batches without reading the rows out
/// ([`LeaseStore::repair_planned`]), each batch a guarded statement or two. Whatever the plan does not cover — unreadable values, attempts out of
/// range, rows another transaction held — is then read, decided and reported row by row as
/// above. Same outcome, row for row (the conformance suite checks it on every backend); turn
/// it off with [`in_database(false)`](Self::in_database).
pub struct LeaseRepair<S> {
    store: S,
    settings: Settings,
    name: String,
    batch_size: usize,
    time_basis: TimeBasis,
    in_database: bool,
    plan_batch_size: usize,
}

impl<S: LeaseStore> LeaseRepair<S> {
    /// A lease repair step over `store` with `settings` (validated).
    pub fn new(store: S, settings: Settings) -> Result<Self, Error> {
        settings.validate()?;
        Ok(Self {
            store,
            settings,
            name: "lease-repair".into(),
            batch_size: 500,
            time_basis: TimeBasis::Run,
            in_database: true,
            plan_batch_size: 5_000,
        })
    }

    /// Whether repairs a [`RepairPlan`] can express are applied inside the database (default
    /// `true`; used only when the policy has no jitter and the store supports it).
    #[must_use]
    pub fn in_database(mut self, on: bool) -> Self {
        self.in_database = on;
        self
    }

    /// Rows per batch repaired inside the database (1 to [`MAX_BATCH_SIZE`], default 5,000).
    /// No row travels, so this bounds only how many rows one transaction holds (and how often
    /// the deadline is checked); [`batch_size`](Self::batch_size) bounds the row-by-row path.
    pub fn plan_batch_size(mut self, n: usize) -> Result<Self, Error> {
        self.plan_batch_size = check_batch(n)?;
        Ok(self)
    }

    /// Rows per batch (1 to [`MAX_BATCH_SIZE`], default 500).
    pub fn batch_size(mut self, n: usize) -> Result<Self, Error> {
        self.batch_size = check_batch(n)?;
        Ok(self)
    }

    /// Where the time deciding expiry comes from (default: the run's `now`).
    #[must_use]
    pub fn time_basis(mut self, basis: TimeBasis) -> Self {
        self.time_basis = basis;
        self
    }

    /// The step's name in reports (default `lease-repair`).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

struct Tally {
    report: StepReport,
    anomalies: Vec<serde_json::Value>,
    repaired: u64,
}

impl Tally {
    /// Count `n` jobs of `kind` repaired with `outcome`.
    fn count_repaired(&mut self, kind: CandidateKind, outcome: Outcome, n: u64) {
        self.repaired += n;
        match kind {
            CandidateKind::ExpiredLease => {
                self.report.add(LEASES_REPAIRED, n);
            }
            _ if outcome == Outcome::Requeued => {
                self.report.add(JOBS_REQUEUED, n);
            }
            _ => {}
        }
        if outcome == Outcome::Failed {
            self.report.add(JOBS_FAILED, n);
        }
    }

    fn fail(&self, what: &str, e: recon_core::Error) -> recon_core::Error {
        let context = format!(
            "{what} (after {} repairs in {} batches)",
            self.repaired,
            self.report.count(BATCHES)
        );
        if e.is_transient() {
            recon_core::Error::transient(context, e)
        } else {
            recon_core::Error::permanent(context, e)
        }
    }
}

#[async_trait]
impl<S: LeaseStore + 'static> Reconciler for LeaseRepair<S> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn reconcile(&self, ctx: &RunContext) -> recon_core::Result<StepReport> {
        let now = match self.time_basis {
            TimeBasis::Run => ctx.now(),
            TimeBasis::Database => self.store.database_now().await?,
        };
        let mut t = Tally {
            report: StepReport::new(&self.name),
            anomalies: Vec::new(),
            repaired: 0,
        };
        for c in OUTCOME.into_iter().chain([BATCHES]) {
            t.report.add(c, 0);
        }
        let mut seen = 0_u64;
        let known_states = self.settings.known_states();
        let query = |kind, after, limit| CandidateQuery {
            kind,
            processing_state: self.settings.states.processing.clone(),
            now,
            max_lease: self.settings.max_lease,
            known_states: if kind == CandidateKind::UnknownStatus {
                known_states.clone()
            } else {
                Vec::new()
            },
            after,
            limit,
        };
        // Anything stuck at all? If not, nothing to do but the unknown-status scan.
        let anything = self
            .store
            .any_stuck(query(CandidateKind::ExpiredLease, None, 1))
            .await
            .map_err(|e| t.fail("read stuck jobs", e))?;
        // Expired leases and orphans in one pass inside the database, when the decision is
        // a plan (no jitter) and the store can apply it; what it leaves goes row by row.
        let mut plans: Vec<RepairPlan> = Vec::new();
        if anything && self.in_database && !ctx.is_dry_run() {
            for kind in [CandidateKind::ExpiredLease, CandidateKind::Orphaned] {
                let Some(plan) = RepairPlan::new(kind, now, &self.settings) else {
                    continue;
                };
                // One row tells whether there is anything of this kind at all (when only
                // anomalies are stuck, a pass would walk every processing job for nothing).
                let any = self
                    .store
                    .read_candidates(query(kind, None, 1))
                    .await
                    .map_err(|e| t.fail("read stuck jobs", e))?;
                if !any.is_empty() {
                    plans.push(plan);
                }
            }
        }
        let finished = plans.is_empty() || self.run_plans(&plans, ctx, &mut t, &mut seen).await?;
        'kinds: for kind in CandidateKind::ALL {
            let wanted = match kind {
                // (a pass the deadline stopped ends the run)
                _ if !finished => false,
                CandidateKind::UnknownStatus => self.settings.report_unknown_status.is_some(),
                _ => anything,
            };
            if !wanted {
                continue;
            }
            let mut after: Option<JobKey> = None;
            loop {
                if ctx.deadline_passed() {
                    t.report.note(format!(
                        "stopped at the deadline before finishing {kind:?} candidates; the next run continues"
                    ));
                    break 'kinds;
                }
                let rows = self
                    .store
                    .read_candidates(query(kind, after.clone(), self.batch_size))
                    .await
                    .map_err(|e| t.fail("read stuck jobs", e))?;
                if rows.is_empty() {
                    break;
                }
                t.report.add(BATCHES, 1);
                seen += rows.len() as u64;
                let full = rows.len() >= self.batch_size;
                after = rows.last().map(|r| r.key.clone());
                let mut repairs = Vec::new();
                let mut outcomes = Vec::new();
                for row in &rows {
                    match decide(row, kind, now, &self.settings) {
                        Action::Repair { repair, outcome } => {
                            outcomes.push((repair.expected.key.clone(), outcome, kind));
                            repairs.push(repair);
                        }
                        Action::Anomaly(a) => record_anomaly(&mut t, row, a),
                        Action::Leave(_) => {}
                    }
                }
                if !repairs.is_empty() {
                    let applied = if ctx.is_dry_run() {
                        ApplyOutcome {
                            applied: repairs.iter().map(|r| r.expected.key.clone()).collect(),
                            skipped: vec![],
                        }
                    } else {
                        self.store
                            .apply(&repairs, now)
                            .await
                            .map_err(|e| t.fail("apply repairs", e))?
                    };
                    let applied_keys: std::collections::HashSet<&JobKey> =
                        applied.applied.iter().collect();
                    for (key, outcome, kind) in &outcomes {
                        if applied_keys.contains(key) {
                            t.count_repaired(*kind, *outcome, 1);
                        }
                    }
                    t.report.add(SKIPPED_CHANGED, applied.skipped.len() as u64);
                }
                ctx.report_progress(seen, None);
                // (committed: a run that stops later still reports it)
                ctx.checkpoint(&t.report);
                if !full {
                    break;
                }
            }
        }
        if !t.anomalies.is_empty() {
            t.report.detail("anomalies", json!(t.anomalies));
        }
        tracing::debug!(repaired = t.repaired, seen, "lease repair finished");
        Ok(t.report)
    }
}

impl<S: LeaseStore> LeaseRepair<S> {
    /// Apply `plans` in keyset batches until the store says nothing is left. Returns `false`
    /// when the deadline stopped it (noted in the report).
    async fn run_plans(
        &self,
        plans: &[RepairPlan],
        ctx: &RunContext,
        t: &mut Tally,
        seen: &mut u64,
    ) -> recon_core::Result<bool> {
        let mut after: Option<JobKey> = None;
        // every position the store has answered (one a batch)
        let mut visited = std::collections::HashSet::new();
        loop {
            if ctx.deadline_passed() {
                t.report.note(
                    "stopped at the deadline before finishing expired leases and orphans; the next run continues",
                );
                return Ok(false);
            }
            let Some(b) = self
                .store
                .repair_planned(plans, after.clone(), self.plan_batch_size)
                .await
                .map_err(|e| t.fail("repair stuck jobs in the database", e))?
            else {
                return Ok(true);
            };
            if b.counts.len() != plans.len() {
                return Err(t.fail(
                    "repair stuck jobs in the database",
                    recon_core::Error::permanent(
                        "the store's answer",
                        format!("{} counts for {} repair plans", b.counts.len(), plans.len()),
                    ),
                ));
            }
            if b.repaired() > 0 {
                t.report.add(BATCHES, 1);
                for (plan, c) in plans.iter().zip(&b.counts) {
                    t.count_repaired(plan.kind, Outcome::Requeued, c.requeued);
                    t.count_repaired(plan.kind, Outcome::Failed, c.failed);
                }
                *seen += b.repaired();
                ctx.report_progress(*seen, None);
                ctx.checkpoint(&t.report);
            }
            let Some(last) = b.last.filter(|_| b.more) else {
                return Ok(true);
            };
            // A position the store answered before would repeat batches for ever. (Not
            // compared in Rust's order: the database orders the keys — a text key in a column
            // with its own collation, SQLite `NOCASE` say, may sort lower in Rust and still be
            // ahead.)
            if !visited.insert(last.clone()) {
                return Err(t.fail(
                    "repair stuck jobs in the database",
                    recon_core::Error::permanent(
                        "the store's answer",
                        format!("position {last} came back: keyset pagination is broken"),
                    ),
                ));
            }
            after = Some(last);
        }
    }
}

fn record_anomaly(t: &mut Tally, row: &crate::JobRow, kind: AnomalyKind) {
    t.report.add(ANOMALIES, 1);
    if t.anomalies.len() < MAX_LISTED_ANOMALIES {
        let mut entry = json!({ "key": row.key.to_string(), "kind": kind });
        if let Some(why) = &row.unreadable {
            entry["reason"] = json!(recon_core::truncate(why.clone(), 512));
        }
        if kind == AnomalyKind::UnknownStatus {
            entry["status"] = json!(recon_core::truncate(row.status.clone(), 256));
        }
        t.anomalies.push(entry);
    }
}

/// Deletes, or moves to an archive table, terminal jobs older than a cut-off, in batches.
pub struct LeasePrune<S> {
    store: S,
    terminal_states: Vec<String>,
    older_than: chrono::Duration,
    mode: PruneMode,
    batch_size: usize,
    name: String,
}

impl<S: PruneStore> LeasePrune<S> {
    /// Prune jobs in `terminal_states` last updated more than `older_than` before the run.
    pub fn new(
        store: S,
        terminal_states: Vec<String>,
        older_than: chrono::Duration,
        mode: PruneMode,
    ) -> Result<Self, Error> {
        if terminal_states.is_empty() || terminal_states.iter().any(|s| s.trim().is_empty()) {
            return Err(Error::Settings(
                "prune needs at least one non-empty terminal state".into(),
            ));
        }
        if older_than <= chrono::Duration::zero() {
            return Err(Error::Settings("prune age must be positive".into()));
        }
        Ok(Self {
            store,
            terminal_states,
            older_than,
            mode,
            batch_size: 1000,
            name: "lease-prune".into(),
        })
    }

    /// Jobs per batch (1 to [`MAX_BATCH_SIZE`], default 1000).
    pub fn batch_size(mut self, n: usize) -> Result<Self, Error> {
        self.batch_size = check_batch(n)?;
        Ok(self)
    }
}

#[async_trait]
impl<S: PruneStore + 'static> Reconciler for LeasePrune<S> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn reconcile(&self, ctx: &RunContext) -> recon_core::Result<StepReport> {
        let counter = match self.mode {
            PruneMode::Delete => PRUNED,
            PruneMode::Archive => ARCHIVED,
        };
        let mut report = StepReport::new(&self.name);
        report.add(counter, 0).add(BATCHES, 0);
        let query = PruneQuery {
            terminal_states: self.terminal_states.clone(),
            older_than: ctx
                .now()
                .checked_sub_signed(self.older_than)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            limit: self.batch_size,
            mode: self.mode.clone(),
        };
        if ctx.is_dry_run() {
            let n = self.store.count_prunable(query).await?;
            report.add(counter, n);
            return Ok(report);
        }
        loop {
            if ctx.deadline_passed() {
                report.note("stopped at the deadline; the next run continues");
                break;
            }
            let n = self.store.prune_batch(query.clone()).await?;
            report.add(counter, n).add(BATCHES, 1);
            ctx.report_progress(report.count(counter), None);
            ctx.checkpoint(&report);
            if n < self.batch_size as u64 {
                break;
            }
        }
        Ok(report)
    }
}
