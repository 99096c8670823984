//! Reconcile the jobs in a queue with the entities they belong to (seed 002's PIN jobs).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use recon_core::{Counter, Reconciler, RunContext, StepReport};
use serde::{Deserialize, Serialize};

use crate::rebuild::{DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE};
use crate::{Error, Key, KeyType, Result, Row, Value};

/// Jobs removed because their entity no longer exists.
pub const ORPHANED: Counter = Counter::new("orphaned");
/// Jobs removed because their entity exists but no longer wants them.
pub const OBSOLETE: Counter = Counter::new("obsolete");
/// Jobs enqueued because their entity wants them and the queue did not have them.
pub const ENQUEUED: Counter = Counter::new("enqueued");
/// Jobs whose run time was moved to the one their entity wants.
pub const RESCHEDULED: Counter = Counter::new("rescheduled");
/// Batches read (queue pages plus entity pages).
pub const BATCHES: Counter = Counter::new("batches");
/// Queued jobs examined.
pub const JOBS_CHECKED: Counter = Counter::new("jobs_checked");
/// Entities examined.
pub const ENTITIES_CHECKED: Counter = Counter::new("entities_checked");

/// A job as the queue holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedJob {
    /// The job's id, unique in the queue (deterministic ids such as `gen-<reservationId>`).
    pub id: String,
    /// What the job does (`generatePin`, `revokePin`).
    pub kind: String,
    /// The key of the entity the job belongs to, as stored: may be NULL (missing) or of the
    /// wrong type in a queue that does not enforce types; such a job is reported and left
    /// alone.
    pub entity_key: Value,
    /// When the job is due.
    pub run_at: DateTime<Utc>,
}

/// A job an entity should have, as the host's [`JobPlan`] describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredJob {
    /// The job's deterministic id (the same entity always yields the same id).
    pub id: String,
    /// What the job does.
    pub kind: String,
    /// The entity it belongs to (must be the key of the entity it was planned for).
    pub entity_key: Key,
    /// When it should run.
    pub run_at: DateTime<Utc>,
    /// Data the job carries (`{ reservationId, lockId }`); stored on enqueue, not compared.
    pub payload: serde_json::Value,
}

/// Move job `id` from `from` to `to` — only if it is still due at `from` (compare-and-set).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reschedule {
    /// The job.
    pub id: String,
    /// The run time that was read.
    pub from: DateTime<Utc>,
    /// The run time wanted.
    pub to: DateTime<Utc>,
}

/// A queue of jobs that refer to entities (BullMQ queues, a jobs table).
///
/// All methods are batch-shaped: one call per batch, never one per job.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Up to `limit` jobs **waiting to run** (not running, not finished) with an id greater
    /// than `after`, in ascending id order (the queue's own order; `after` is always an id this
    /// method returned).
    async fn page(&self, after: Option<String>, limit: usize) -> Result<Vec<QueuedJob>>;

    /// Which of `ids` the queue knows in any state in which enqueuing the id again would be
    /// wrong (waiting, running, and finished jobs the queue keeps). One lookup for the batch.
    async fn existing(&self, ids: &[String]) -> Result<Vec<String>>;

    /// Remove the jobs among `ids` that are still waiting; returns how many were removed.
    async fn remove(&self, ids: &[String]) -> Result<u64>;

    /// Add the jobs whose id is not known yet (insert-if-absent); returns how many were added.
    async fn enqueue(&self, jobs: &[DesiredJob]) -> Result<u64>;

    /// Apply each change whose job is still waiting and still due at `from`; returns how many
    /// were applied.
    async fn reschedule(&self, changes: &[Reschedule]) -> Result<u64>;
}

/// The source of truth the jobs belong to (the reservations table).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait EntitySource: Send + Sync {
    /// The type of entity keys; a queued job whose key has another type is reported.
    fn key_type(&self) -> KeyType;

    /// Up to `limit` entities with a key greater than `after`, in ascending key order.
    async fn page(&self, after: Option<Key>, limit: usize) -> Result<Vec<Row>>;

    /// The entities among `keys` that exist (any order; absent keys are simply missing).
    /// Keys compare exactly. One lookup for the batch.
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Row>>;
}

/// The host's description of which jobs an entity should have. Pure: the same entity and
/// `now` always give the same jobs, with deterministic ids.
///
/// An error means "cannot tell" (a column missing or of the wrong type): it is reported for
/// that entity and its jobs are left as they are.
///
/// Any `Fn(&Row, DateTime<Utc>) -> Result<Vec<DesiredJob>>` is a plan.
pub trait JobPlan: Send + Sync {
    /// The jobs `entity` should have at `now` (empty: none).
    fn desired_jobs(&self, entity: &Row, now: DateTime<Utc>) -> Result<Vec<DesiredJob>>;
}

impl<F> JobPlan for F
where
    F: Fn(&Row, DateTime<Utc>) -> Result<Vec<DesiredJob>> + Send + Sync,
{
    fn desired_jobs(&self, entity: &Row, now: DateTime<Utc>) -> Result<Vec<DesiredJob>> {
        self(entity, now)
    }
}

/// What an [`OrphanSweeper`] did (in a dry run: would have done).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepCounts {
    /// Waiting jobs with an entity key it examined.
    pub checked: u64,
    /// Waiting jobs whose entity does not exist: removed (dry run: to be removed).
    pub orphaned: u64,
    /// Batches (statements or transactions) it took.
    pub batches: u64,
}

/// Removes the **waiting** jobs whose entity no longer exists, set-based, inside the store
/// that holds both the queue and the entities — the orphan part of [`QueueDiffReconciler`]
/// without carrying every job and entity key through the application
/// (`store_sqlx::SqlJobQueue::orphan_sweeper`, [`MemoryOrphanSweeper`](crate::memory::MemoryOrphanSweeper)).
///
/// Contract: keys compare exactly, as [`EntitySource::get_many`] does; a job without an entity
/// key, or with a key of the other type, is left alone (the reconciler reports it); running
/// and finished jobs are never touched; two sweeps at once never remove a job twice (the
/// counts add up). A dry run counts and changes nothing.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait OrphanSweeper: Send + Sync {
    /// Sweep, in batches of about `batch_size` jobs.
    async fn sweep_orphans(&self, batch_size: usize, dry_run: bool) -> Result<SweepCounts>;

    /// Up to `limit` waiting jobs with an id greater than `after`, ascending id, among those
    /// the sweep leaves alone because they cannot be judged (no entity key, an empty key, a
    /// key of the other type) — it may return more candidates than that, never fewer; the
    /// reconciler checks each. `Ok(None)` (the default): this sweeper cannot list them, and
    /// the reconciler reads the whole queue to find them.
    async fn unjudged(
        &self,
        _after: Option<String>,
        _limit: usize,
    ) -> Result<Option<Vec<QueuedJob>>> {
        Ok(None)
    }
}

/// The plan of an entity's jobs, checked: ids and kinds non-empty, unique, and referring to
/// the entity they were planned for.
pub fn plan_entity(
    plan: &dyn JobPlan,
    entity: &Row,
    now: DateTime<Utc>,
) -> std::result::Result<Vec<DesiredJob>, String> {
    let jobs = plan.desired_jobs(entity, now).map_err(|e| e.to_string())?;
    for (i, job) in jobs.iter().enumerate() {
        if job.id.is_empty() || job.kind.is_empty() {
            return Err("the plan returned a job with an empty id or kind".to_owned());
        }
        if &job.entity_key != entity.key() {
            return Err(format!(
                "the plan returned job `{}` for entity {} instead of {}",
                job.id,
                job.entity_key,
                entity.key()
            ));
        }
        if jobs[..i].iter().any(|j| j.id == job.id) {
            return Err(format!("the plan returned job `{}` twice", job.id));
        }
    }
    Ok(jobs)
}

/// What the diff does with each queued job of a batch (see [`plan_queued_batch`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchPlan {
    /// Jobs whose entity does not exist: remove.
    pub orphaned: Vec<String>,
    /// Jobs whose entity exists but does not want them (or wants another kind under that id):
    /// remove.
    pub obsolete: Vec<String>,
    /// Jobs wanted at another time: move.
    pub reschedule: Vec<Reschedule>,
    /// Jobs that cannot be judged (no entity key, a key of the wrong type), with the reason:
    /// report, leave alone.
    pub invalid: Vec<(String, String)>,
    /// Jobs left as they are.
    pub kept: u64,
}

/// Settings of the diff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiffSettings {
    /// Jobs per batch (and entities per batch). Default [`DEFAULT_BATCH_SIZE`].
    pub batch_size: usize,
    /// Remove jobs whose entity exists but no longer wants them (a cancelled reservation).
    /// Default `true`.
    pub remove_obsolete: bool,
    /// Enqueue the jobs entities want and the queue lacks. Default `true`.
    pub enqueue_missing: bool,
    /// Move jobs whose run time differs from the wanted one. Default `true`.
    pub reschedule_drifted: bool,
    /// A run time is drifted when it differs from the wanted one by at least this much.
    /// Default 1 s, so that a store keeping whole seconds does not reschedule forever.
    pub drift_tolerance: TimeDelta,
}

impl Default for DiffSettings {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
            remove_obsolete: true,
            enqueue_missing: true,
            reschedule_drifted: true,
            drift_tolerance: TimeDelta::seconds(1),
        }
    }
}

impl DiffSettings {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the batch size.
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Remove obsolete jobs or not.
    #[must_use]
    pub fn remove_obsolete(mut self, on: bool) -> Self {
        self.remove_obsolete = on;
        self
    }

    /// Enqueue missing jobs or not.
    #[must_use]
    pub fn enqueue_missing(mut self, on: bool) -> Self {
        self.enqueue_missing = on;
        self
    }

    /// Reschedule drifted jobs or not.
    #[must_use]
    pub fn reschedule_drifted(mut self, on: bool) -> Self {
        self.reschedule_drifted = on;
        self
    }

    /// Set the drift tolerance.
    #[must_use]
    pub fn drift_tolerance(mut self, tolerance: TimeDelta) -> Self {
        self.drift_tolerance = tolerance;
        self
    }
}

/// Decide, for one batch of queued jobs, what to do with each — a pure function.
///
/// `plans` holds, for every entity of the batch that **exists**, its checked plan (or the
/// reason it could not be planned). A job whose entity key is absent from `plans` is
/// orphaned; a job of an entity that could not be planned is kept.
pub fn plan_queued_batch(
    jobs: &[QueuedJob],
    key_type: KeyType,
    plans: &BTreeMap<Key, std::result::Result<Vec<DesiredJob>, String>>,
    settings: &DiffSettings,
) -> BatchPlan {
    let mut out = BatchPlan::default();
    for job in jobs {
        let key = match Key::from_value(&job.entity_key, key_type) {
            Ok(k) => k,
            Err(reason) => {
                out.invalid.push((job.id.clone(), reason));
                continue;
            }
        };
        match plans.get(&key) {
            None => out.orphaned.push(job.id.clone()),
            Some(Err(_)) => out.kept += 1,
            Some(Ok(desired)) => match desired
                .iter()
                .find(|d| d.id == job.id && d.kind == job.kind)
            {
                None if settings.remove_obsolete => out.obsolete.push(job.id.clone()),
                None => out.kept += 1,
                Some(d)
                    if settings.reschedule_drifted
                        && (d.run_at - job.run_at).abs() >= settings.drift_tolerance =>
                {
                    out.reschedule.push(Reschedule {
                        id: job.id.clone(),
                        from: job.run_at,
                        to: d.run_at,
                    });
                }
                Some(_) => out.kept += 1,
            },
        }
    }
    out
}

/// Reconciles a [`JobQueue`] with an [`EntitySource`] under a [`JobPlan`]: removes jobs whose
/// entity is gone (`orphaned`) or no longer wants them (`obsolete`), reschedules drifted jobs
/// (`rescheduled`) and enqueues missing ones (`enqueued`). Also counts `batches`,
/// `jobs_checked`, `entities_checked`.
///
/// Two passes of batched lookups — no per-job round trip:
/// 1. **queue → truth**: page through the waiting jobs (keyset by job id); for each page, one
///    [`EntitySource::get_many`] of the distinct entity keys, the plan of each entity found,
///    [`plan_queued_batch`], then at most one [`JobQueue::remove`] per reason and one
///    [`JobQueue::reschedule`];
/// 2. **truth → queue**: page through the entities (keyset by key); for each page, the plans,
///    one [`JobQueue::existing`] of the wanted ids, one [`JobQueue::enqueue`] of the missing.
///
/// With an [`OrphanSweeper`] ([`with_orphan_sweeper`](Self::with_orphan_sweeper): the queue
/// and the entities live in the same database), the orphans are removed set-based first
/// (counted as `orphaned`, its figures in the detail `orphan_sweep`); then pass 1 runs as
/// above if obsolete jobs are removed or drifted ones rescheduled (their lookups now find
/// every entity); otherwise there is no entity lookup at all: the jobs that cannot be judged
/// are listed by [`OrphanSweeper::unjudged`] (or, if the sweeper cannot list them, found by
/// reading the queue) and reported.
///
/// A queued job without an entity key, or with a key of the wrong type, is an item error
/// (reported with the job id) and left alone. A plan error is an item error for the entity
/// (pass 2) and its jobs are left alone. A store error ends the step with that error.
/// Dry run: both passes read and decide; nothing is removed, moved or enqueued, and the
/// counters say what would have been (an orphan counted by the sweep is not counted again
/// by pass 1).
pub struct QueueDiffReconciler {
    name: String,
    queue: Arc<dyn JobQueue>,
    entities: Arc<dyn EntitySource>,
    plan: Arc<dyn JobPlan>,
    sweeper: Option<Arc<dyn OrphanSweeper>>,
    settings: DiffSettings,
}

impl fmt::Debug for QueueDiffReconciler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueDiffReconciler")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("orphan_sweeper", &self.sweeper.is_some())
            .finish_non_exhaustive()
    }
}

impl QueueDiffReconciler {
    /// A step called `name` with the default [`DiffSettings`].
    pub fn new(
        name: impl Into<String>,
        queue: Arc<dyn JobQueue>,
        entities: Arc<dyn EntitySource>,
        plan: Arc<dyn JobPlan>,
    ) -> Self {
        Self {
            name: name.into(),
            queue,
            entities,
            plan,
            sweeper: None,
            settings: DiffSettings::default(),
        }
    }

    /// Remove orphans with `sweeper` (set-based, in the store) instead of finding them with
    /// per-page entity lookups. The sweeper must cover the same queue and entities as this
    /// reconciler's [`JobQueue`] and [`EntitySource`].
    #[must_use]
    pub fn with_orphan_sweeper(mut self, sweeper: Arc<dyn OrphanSweeper>) -> Self {
        self.sweeper = Some(sweeper);
        self
    }

    /// Use `settings`. Errors: a batch size of 0 or above [`MAX_BATCH_SIZE`], a negative
    /// drift tolerance.
    pub fn with_settings(mut self, settings: DiffSettings) -> Result<Self> {
        if settings.batch_size == 0 || settings.batch_size > MAX_BATCH_SIZE {
            return Err(Error::config(format!(
                "batch size {} is out of range 1..={MAX_BATCH_SIZE}",
                settings.batch_size
            )));
        }
        if settings.drift_tolerance < TimeDelta::zero() {
            return Err(Error::config("the drift tolerance may not be negative"));
        }
        self.settings = settings;
        Ok(self)
    }

    /// The settings in force.
    pub fn settings(&self) -> &DiffSettings {
        &self.settings
    }

    async fn remove(
        &self,
        ids: &[String],
        counter: Counter,
        dry: bool,
        report: &mut StepReport,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let n = if dry {
            ids.len() as u64
        } else {
            self.queue.remove(ids).await?
        };
        if n < ids.len() as u64 {
            report.note(format!(
                "{} {counter} jobs were no longer waiting and were left alone",
                ids.len() as u64 - n
            ));
        }
        report.add(counter, n);
        Ok(())
    }

    /// After a sweep, with obsolete removal and rescheduling off: report the jobs that cannot
    /// be judged as the sweeper lists them. Returns `None` if it cannot list them.
    async fn report_unjudged(
        &self,
        sweeper: &dyn OrphanSweeper,
        ctx: &RunContext,
        report: &mut StepReport,
    ) -> Result<Option<bool>> {
        let key_type = self.entities.key_type();
        let mut after: Option<String> = None;
        loop {
            if ctx.deadline_passed() {
                report.note("stopped at the deadline while listing jobs that cannot be judged");
                return Ok(Some(false));
            }
            let limit = self.settings.batch_size;
            let Some(jobs) = sweeper.unjudged(after.clone(), limit).await? else {
                return Ok(None);
            };
            let Some(last) = jobs.last().map(|j| j.id.clone()) else {
                break;
            };
            if after.as_ref().is_some_and(|a| a >= &last) {
                return Err(Error::permanent(
                    "list jobs that cannot be judged",
                    format!("the sweeper returned job `{last}` again: keyset pagination is broken"),
                ));
            }
            report.add(BATCHES, 1);
            for j in &jobs {
                if let Err(reason) = Key::from_value(&j.entity_key, key_type) {
                    report.push_error(format!("job {}", j.id), reason);
                }
            }
            after = Some(last);
            if jobs.len() < limit {
                break;
            }
        }
        Ok(Some(true))
    }

    /// Pass 1. Returns whether it finished.
    async fn queue_to_truth(&self, ctx: &RunContext, report: &mut StepReport) -> Result<bool> {
        let (now, dry) = (ctx.now(), ctx.is_dry_run());
        let key_type = self.entities.key_type();
        let swept = self.sweeper.is_some();
        // after a sweep, entities are looked up only to judge obsolete and drifted jobs
        let look_up = !swept || self.settings.remove_obsolete || self.settings.reschedule_drifted;
        if let (Some(sweeper), false) = (&self.sweeper, look_up)
            && let Some(finished) = self.report_unjudged(sweeper.as_ref(), ctx, report).await?
        {
            return Ok(finished);
        }
        let mut after: Option<String> = None;
        let mut checked = 0_u64;
        loop {
            if ctx.deadline_passed() {
                report.note(format!(
                    "stopped at the deadline after {checked} queued jobs"
                ));
                return Ok(false);
            }
            let jobs = self
                .queue
                .page(after.clone(), self.settings.batch_size)
                .await?;
            let Some(last) = jobs.last().map(|j| j.id.clone()) else {
                break;
            };
            if after.as_ref() == Some(&last) {
                return Err(Error::permanent(
                    "read queued jobs",
                    format!("the queue returned job `{last}` again: keyset pagination is broken"),
                ));
            }
            report.add(BATCHES, 1);
            report.add(JOBS_CHECKED, jobs.len() as u64);
            checked += jobs.len() as u64;

            if !look_up {
                for j in &jobs {
                    if let Err(reason) = Key::from_value(&j.entity_key, key_type) {
                        report.push_error(format!("job {}", j.id), reason);
                    }
                }
                ctx.report_progress(checked, None);
                after = Some(last);
                if jobs.len() < self.settings.batch_size {
                    break;
                }
                continue;
            }

            let keys: BTreeSet<Key> = jobs
                .iter()
                .filter_map(|j| Key::from_value(&j.entity_key, key_type).ok())
                .collect();
            let mut plans = BTreeMap::new();
            if !keys.is_empty() {
                let keys: Vec<Key> = keys.into_iter().collect();
                for row in self.entities.get_many(&keys).await? {
                    if keys.binary_search(row.key()).is_ok() {
                        let plan = plan_entity(self.plan.as_ref(), &row, now);
                        plans.insert(row.key().clone(), plan);
                    }
                }
            }
            let plan = plan_queued_batch(&jobs, key_type, &plans, &self.settings);
            for (id, reason) in plan.invalid {
                report.push_error(format!("job {id}"), reason);
            }
            // in a dry run the sweep already counted these orphans (nothing was removed)
            // (each write is checkpointed: a run that stops later still reports it)
            if !(swept && dry) {
                self.remove(&plan.orphaned, ORPHANED, dry, report).await?;
                ctx.checkpoint(report);
            }
            self.remove(&plan.obsolete, OBSOLETE, dry, report).await?;
            ctx.checkpoint(report);
            if !plan.reschedule.is_empty() {
                let want = plan.reschedule.len() as u64;
                let n = if dry {
                    want
                } else {
                    self.queue.reschedule(&plan.reschedule).await?
                };
                if n < want {
                    report.note(format!(
                        "{} jobs changed since they were read and were not rescheduled",
                        want - n
                    ));
                }
                report.add(RESCHEDULED, n);
            }
            ctx.report_progress(checked, None);
            ctx.checkpoint(report);
            after = Some(last);
            if jobs.len() < self.settings.batch_size {
                break;
            }
        }
        Ok(true)
    }

    /// Pass 2.
    async fn truth_to_queue(&self, ctx: &RunContext, report: &mut StepReport) -> Result<()> {
        let (now, dry) = (ctx.now(), ctx.is_dry_run());
        let mut after: Option<Key> = None;
        let mut checked = 0_u64;
        loop {
            if ctx.deadline_passed() {
                report.note(format!("stopped at the deadline after {checked} entities"));
                return Ok(());
            }
            let rows = self
                .entities
                .page(after.clone(), self.settings.batch_size)
                .await?;
            let Some(last) = rows.last().map(|r| r.key().clone()) else {
                break;
            };
            if after.as_ref() == Some(&last) {
                return Err(Error::permanent(
                    "read entities",
                    format!("the source returned key {last} again: keyset pagination is broken"),
                ));
            }
            report.add(BATCHES, 1);
            report.add(ENTITIES_CHECKED, rows.len() as u64);
            checked += rows.len() as u64;

            let mut wanted: BTreeMap<String, DesiredJob> = BTreeMap::new();
            for row in &rows {
                match plan_entity(self.plan.as_ref(), row, now) {
                    Ok(jobs) => {
                        for job in jobs {
                            wanted.entry(job.id.clone()).or_insert(job);
                        }
                    }
                    Err(reason) => {
                        report.push_error(format!("entity {}", row.key()), reason);
                    }
                }
            }
            if !wanted.is_empty() {
                let ids: Vec<String> = wanted.keys().cloned().collect();
                let existing: HashSet<String> =
                    self.queue.existing(&ids).await?.into_iter().collect();
                let missing: Vec<DesiredJob> = wanted
                    .into_values()
                    .filter(|j| !existing.contains(&j.id))
                    .collect();
                if !missing.is_empty() {
                    let n = if dry {
                        missing.len() as u64
                    } else {
                        self.queue.enqueue(&missing).await?
                    };
                    report.add(ENQUEUED, n);
                }
            }
            ctx.report_progress(checked, None);
            ctx.checkpoint(report);
            after = Some(last);
            if rows.len() < self.settings.batch_size {
                break;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Reconciler for QueueDiffReconciler {
    fn name(&self) -> &str {
        &self.name
    }

    #[tracing::instrument(
        name = "recon.queue_diff",
        skip_all,
        fields(step = %self.name, dry_run = ctx.is_dry_run()),
        err
    )]
    async fn reconcile(&self, ctx: &RunContext) -> recon_core::Result<StepReport> {
        let mut report = StepReport::new(self.name.clone());
        for c in [ORPHANED, OBSOLETE, RESCHEDULED, ENQUEUED, BATCHES] {
            report.add(c, 0);
        }
        if let Some(sweeper) = &self.sweeper {
            let swept = sweeper
                .sweep_orphans(self.settings.batch_size, ctx.is_dry_run())
                .await?;
            report.add(ORPHANED, swept.orphaned);
            report.add(BATCHES, swept.batches);
            report.detail(
                "orphan_sweep",
                serde_json::to_value(swept).unwrap_or(serde_json::Value::Null),
            );
            ctx.checkpoint(&report);
        }
        let finished = self.queue_to_truth(ctx, &mut report).await?;
        if finished && self.settings.enqueue_missing {
            self.truth_to_queue(ctx, &mut report).await?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: i64) -> DateTime<Utc> {
        "2024-02-05T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::hours(h)
    }

    fn job(id: &str, kind: &str, key: Value, at: i64) -> QueuedJob {
        QueuedJob {
            id: id.into(),
            kind: kind.into(),
            entity_key: key,
            run_at: t(at),
        }
    }

    fn desired(id: &str, kind: &str, key: &str, at: i64) -> DesiredJob {
        DesiredJob {
            id: id.into(),
            kind: kind.into(),
            entity_key: Key::from(key),
            run_at: t(at),
            payload: serde_json::Value::Null,
        }
    }

    #[test]
    fn each_job_gets_exactly_one_decision() {
        let jobs = vec![
            job("gen-a", "generatePin", "a".into(), 8),
            job("rev-a", "revokePin", "a".into(), 90),
            job("gen-gone", "generatePin", "gone".into(), 8),
            job("gen-b", "generatePin", "b".into(), 8),
            job("gen-c", "generatePin", "c".into(), 8),
            job("no-key", "generatePin", Value::Null, 8),
            job("int-key", "generatePin", Value::Int(5), 8),
            job("gen-d", "generatePin", "d".into(), 8),
        ];
        let mut plans = BTreeMap::new();
        plans.insert(
            Key::from("a"),
            Ok(vec![
                desired("gen-a", "generatePin", "a", 8),
                desired("rev-a", "revokePin", "a", 96),
            ]),
        );
        plans.insert(Key::from("b"), Ok(vec![])); // cancelled
        plans.insert(
            Key::from("c"),
            Ok(vec![desired("gen-c", "revokePin", "c", 8)]),
        );
        plans.insert(Key::from("d"), Err("bad row".to_owned()));
        let p = plan_queued_batch(&jobs, KeyType::Text, &plans, &DiffSettings::default());
        assert_eq!(p.orphaned, vec!["gen-gone".to_owned()]);
        assert_eq!(p.obsolete, vec!["gen-b".to_owned(), "gen-c".to_owned()]);
        assert_eq!(
            p.reschedule,
            vec![Reschedule {
                id: "rev-a".into(),
                from: t(90),
                to: t(96)
            }]
        );
        assert_eq!(p.invalid.len(), 2);
        assert!(p.invalid[0].1.contains("no entity key"), "{:?}", p.invalid);
        assert!(p.invalid[1].1.contains("is integer, but keys are text"));
        assert_eq!(p.kept, 2, "gen-a unchanged, gen-d unplannable");

        let off = DiffSettings::default()
            .remove_obsolete(false)
            .reschedule_drifted(false);
        let p = plan_queued_batch(&jobs, KeyType::Text, &plans, &off);
        assert!(p.obsolete.is_empty() && p.reschedule.is_empty());
        assert_eq!(p.kept, 5);
    }

    #[test]
    fn drift_below_the_tolerance_is_not_drift() {
        let mut j = job("gen-a", "generatePin", "a".into(), 8);
        j.run_at += TimeDelta::milliseconds(400);
        let mut plans = BTreeMap::new();
        plans.insert(
            Key::from("a"),
            Ok(vec![desired("gen-a", "generatePin", "a", 8)]),
        );
        let p = plan_queued_batch(&[j], KeyType::Text, &plans, &DiffSettings::default());
        assert_eq!(p.kept, 1);
    }

    #[test]
    fn plans_are_checked() {
        let row = Row::new(Key::from("a"), Default::default());
        let now = t(0);
        let wrong_key =
            |_: &Row, _: DateTime<Utc>| Ok(vec![desired("gen-b", "generatePin", "b", 1)]);
        assert!(
            plan_entity(&wrong_key, &row, now)
                .unwrap_err()
                .contains("for entity b instead of a")
        );
        let twice = |_: &Row, _: DateTime<Utc>| {
            Ok(vec![
                desired("gen-a", "generatePin", "a", 1),
                desired("gen-a", "generatePin", "a", 1),
            ])
        };
        assert!(
            plan_entity(&twice, &row, now)
                .unwrap_err()
                .contains("twice")
        );
        let failing = |r: &Row, _: DateTime<Utc>| -> Result<Vec<DesiredJob>> {
            r.timestamp("check_in")?
                .ok_or_else(|| Error::config("no check-in"))?;
            Ok(vec![])
        };
        assert_eq!(
            plan_entity(&failing, &row, now).unwrap_err(),
            "invalid configuration: no check-in"
        );
    }

    #[test]
    fn settings_are_checked() {
        use crate::memory::{MemoryEntitySource, MemoryJobQueue, MemorySourceStore};
        use crate::{ColumnType, TableMapping};
        let table = TableMapping::builder("r", "id", KeyType::Text)
            .column("x", ColumnType::Text)
            .build()
            .unwrap();
        let plan = |_: &Row, _: DateTime<Utc>| Ok(vec![]);
        let r = QueueDiffReconciler::new(
            "diff",
            Arc::new(MemoryJobQueue::new()),
            Arc::new(MemoryEntitySource::new(MemorySourceStore::new(), table)),
            Arc::new(plan),
        );
        assert!(r.with_settings(DiffSettings::new().batch_size(0)).is_err());
    }
}
