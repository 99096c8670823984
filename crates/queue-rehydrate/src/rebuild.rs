//! Rebuild a derived queue from its source table: maintenance, candidates, named counts.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use recon_core::{Reconciler, RunContext, StepReport};

use crate::maintenance::validate_counter_name;
use crate::{Error, Key, Maintenance, Predicate, Result, Row, TableMapping};

/// Default number of rows per batch.
pub const DEFAULT_BATCH_SIZE: usize = 1000;

/// Largest batch size accepted.
pub const MAX_BATCH_SIZE: usize = 100_000;

/// Default name of the candidates counter.
pub const DEFAULT_CANDIDATES_COUNTER: &str = "candidates";

/// Read and repair access to the host's source tables.
///
/// Every method receives the [`TableMapping`] it works on, so one store (one connection pool)
/// serves every mapped table. Implementations must check `predicate` / `rule` against `table`
/// ([`Predicate::validate`], [`Maintenance::validate`]) before touching anything and return
/// that error unchanged: a bad predicate changes nothing. Predicates are evaluated with SQL's
/// three-valued logic exactly as [`Predicate::eval`] does; `now` is the run's frozen time and
/// is the only clock used (bound as a parameter, never the database's `NOW()`).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SourceStore: Send + Sync {
    /// `UPDATE table SET rule.set WHERE rule.when` — one set-based statement (or a few
    /// bounded ones by key range); returns how many rows were changed.
    async fn apply_maintenance(
        &self,
        table: &TableMapping,
        rule: &Maintenance,
        now: DateTime<Utc>,
    ) -> Result<u64>;

    /// `SELECT COUNT(*) FROM table WHERE predicate`.
    async fn count(
        &self,
        table: &TableMapping,
        predicate: &Predicate,
        now: DateTime<Utc>,
    ) -> Result<u64>;

    /// Up to `limit` rows matching `predicate` whose key is greater than `after` (all when
    /// `None`), in ascending key order: `... WHERE predicate AND key > ? ORDER BY key LIMIT ?`.
    /// Each row carries every mapped column. Never OFFSET.
    async fn read_matching(
        &self,
        table: &TableMapping,
        predicate: &Predicate,
        now: DateTime<Utc>,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<Row>>;
}

/// Where rebuilt candidates go: an in-process queue, a Redis list, a table.
///
/// A rebuild calls [`begin_rebuild`](Self::begin_rebuild), then
/// [`push_batch`](Self::push_batch) once per batch, then
/// [`finish_rebuild`](Self::finish_rebuild). A sink must de-duplicate by [`Row::key`]: pushing
/// a row that is already queued replaces it and does not add a second entry.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait DerivedQueue: Send + Sync {
    /// A rebuild starts. Default: nothing.
    async fn begin_rebuild(&self) -> Result<()> {
        Ok(())
    }

    /// Add a batch of candidates; returns how many were not queued before.
    async fn push_batch(&self, rows: &[Row]) -> Result<u64>;

    /// The rebuild ended. With `complete`, every candidate was pushed, so a sink may drop the
    /// entries the rebuild did not push (they are no longer eligible); returns how many it
    /// dropped. Without `complete` (the run hit its deadline) it must drop nothing.
    /// Default: nothing dropped.
    async fn finish_rebuild(&self, complete: bool) -> Result<u64> {
        let _ = complete;
        Ok(0)
    }
}

/// A count for a dashboard: `SELECT COUNT(*) FROM table WHERE predicate`, reported under
/// `name` (e.g. `pending_orders` for `processing_status IN ('pending', 'processing')`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedCount {
    /// Counter name (`snake_case`).
    pub name: String,
    /// The table counted.
    pub table: TableMapping,
    /// Which rows count.
    pub predicate: Predicate,
}

impl NamedCount {
    /// A named count.
    pub fn new(name: impl Into<String>, table: TableMapping, predicate: Predicate) -> Self {
        Self {
            name: name.into(),
            table,
            predicate,
        }
    }

    /// Check the name and the predicate.
    pub fn validate(&self) -> Result<()> {
        validate_counter_name(&self.name)?;
        self.predicate.validate(&self.table)
    }
}

struct Candidates {
    predicate: Predicate,
    queue: Arc<dyn DerivedQueue>,
}

/// Builds a [`RehydrateReconciler`]; see [`RehydrateReconciler::builder`].
pub struct RehydrateBuilder {
    name: String,
    store: Arc<dyn SourceStore>,
    table: TableMapping,
    maintenance: Vec<Maintenance>,
    candidates: Option<Candidates>,
    candidates_counter: String,
    counts: Vec<NamedCount>,
    batch_size: usize,
}

impl fmt::Debug for RehydrateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RehydrateBuilder")
            .field("name", &self.name)
            .field("table", &self.table.qualified_name())
            .finish_non_exhaustive()
    }
}

impl RehydrateBuilder {
    /// Add a maintenance rule on the source table. Rules run in the order added, each as one
    /// store call, before candidates are read.
    #[must_use]
    pub fn maintenance(mut self, rule: Maintenance) -> Self {
        self.maintenance.push(rule);
        self
    }

    /// Stream the rows matching `eligible` into `queue`.
    #[must_use]
    pub fn candidates(mut self, eligible: Predicate, queue: Arc<dyn DerivedQueue>) -> Self {
        self.candidates = Some(Candidates {
            predicate: eligible,
            queue,
        });
        self
    }

    /// Report the number of candidates under this counter (default
    /// [`DEFAULT_CANDIDATES_COUNTER`]; seed 001's status shows `follow_up_candidates`).
    #[must_use]
    pub fn candidates_counter(mut self, name: impl Into<String>) -> Self {
        self.candidates_counter = name.into();
        self
    }

    /// Add a named count (on any mapped table).
    #[must_use]
    pub fn count(mut self, count: NamedCount) -> Self {
        self.counts.push(count);
        self
    }

    /// Rows per batch (default [`DEFAULT_BATCH_SIZE`]); the reconciler never holds more.
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Check everything and build.
    ///
    /// Errors: an empty step name; a batch size of 0 or above [`MAX_BATCH_SIZE`]; any
    /// validation error of a rule, the eligibility predicate or a named count against its
    /// table; counter names that are not `snake_case` or used twice.
    pub fn build(self) -> Result<RehydrateReconciler> {
        if self.name.trim().is_empty() {
            return Err(Error::config("the rehydrate step needs a name"));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return Err(Error::config(format!(
                "batch size {} is out of range 1..={MAX_BATCH_SIZE}",
                self.batch_size
            )));
        }
        let mut names: Vec<String> = Vec::new();
        let step = self.name.clone();
        let mut claim = |name: &str| -> Result<()> {
            validate_counter_name(name)?;
            if names.iter().any(|n| n == name) {
                return Err(Error::config(format!(
                    "counter `{name}` is reported twice by step `{step}`"
                )));
            }
            names.push(name.to_owned());
            Ok(())
        };
        for rule in &self.maintenance {
            rule.validate(&self.table)?;
            claim(&rule.name)?;
        }
        if let Some(c) = &self.candidates {
            c.predicate.validate(&self.table)?;
            claim(&self.candidates_counter)?;
        }
        for count in &self.counts {
            count.validate()?;
            claim(&count.name)?;
        }
        Ok(RehydrateReconciler {
            name: self.name,
            store: self.store,
            table: self.table,
            maintenance: self.maintenance,
            candidates: self.candidates,
            candidates_counter: self.candidates_counter,
            counts: self.counts,
            batch_size: self.batch_size,
        })
    }
}

/// Rebuilds a derived queue from its source table (seed 001's follow-up queue) and reports
/// named counts.
///
/// One run, in order:
/// 1. **maintenance**: each rule is one [`SourceStore::apply_maintenance`] call; the rows
///    touched are added to the counter named after the rule (e.g. `cooldowns_cleared`);
/// 2. **candidates**: the rows matching the eligibility predicate are read in keyset batches
///    of `batch_size` and pushed batch by batch into the [`DerivedQueue`]; their number is the
///    candidates counter (default `candidates`). At most one batch is held in memory;
/// 3. **named counts**: one [`SourceStore::count`] call each, reported under its name.
///
/// A store or sink error ends the step with that error; nothing after it is attempted.
/// Between batches the step stops at the run's deadline (the report says so in a note, the
/// sink is told the rebuild is incomplete, and named counts are skipped).
///
/// **Dry run**: maintenance is counted (one [`SourceStore::count`] of each rule's `when`),
/// not applied, and nothing is pushed. Eligibility is evaluated *as if* maintenance had run:
/// the step reads the rows matching `when₁ OR … OR whenₙ OR eligible` (a superset of the
/// post-maintenance candidates: a row that matches no `when` is not changed by any rule),
/// applies the rules to each row in memory with [`Maintenance::apply`] and counts the rows
/// the eligibility predicate then selects. Named counts on the source table (same mapping)
/// are computed the same way; other named counts count the current data. When a rule's
/// `when` reads a column an earlier rule assigns, its dry-run count is of the current data
/// and the report notes it.
pub struct RehydrateReconciler {
    name: String,
    store: Arc<dyn SourceStore>,
    table: TableMapping,
    maintenance: Vec<Maintenance>,
    candidates: Option<Candidates>,
    candidates_counter: String,
    counts: Vec<NamedCount>,
    batch_size: usize,
}

impl fmt::Debug for RehydrateReconciler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RehydrateReconciler")
            .field("name", &self.name)
            .field("table", &self.table.qualified_name())
            .field("maintenance", &self.maintenance.len())
            .field("counts", &self.counts.len())
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

/// How a scan ended.
struct Scan {
    matched: u64,
    complete: bool,
}

impl RehydrateReconciler {
    /// Start building a step called `name` that rebuilds from `table` through `store`.
    pub fn builder(
        name: impl Into<String>,
        store: Arc<dyn SourceStore>,
        table: TableMapping,
    ) -> RehydrateBuilder {
        RehydrateBuilder {
            name: name.into(),
            store,
            table,
            maintenance: Vec::new(),
            candidates: None,
            candidates_counter: DEFAULT_CANDIDATES_COUNTER.to_owned(),
            counts: Vec::new(),
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }

    /// The source table.
    pub fn table(&self) -> &TableMapping {
        &self.table
    }

    /// Apply every maintenance rule to `row` in memory, then test `predicate` on the result.
    fn eligible_after_maintenance(
        &self,
        row: &mut Row,
        predicate: &Predicate,
        now: DateTime<Utc>,
    ) -> bool {
        for rule in &self.maintenance {
            rule.apply(row, now);
        }
        predicate.matches(row, now)
    }

    /// Read the rows of the source table matching `predicate` (as if maintenance had run,
    /// in a dry run), batch by batch, pushing each batch into `sink` when given.
    async fn scan(
        &self,
        ctx: &RunContext,
        predicate: &Predicate,
        sink: Option<&dyn DerivedQueue>,
        report: &mut StepReport,
    ) -> Result<Scan> {
        let now = ctx.now();
        let as_if = ctx.is_dry_run() && !self.maintenance.is_empty();
        let read_predicate = if as_if {
            let mut parts: Vec<Predicate> =
                self.maintenance.iter().map(|m| m.when.clone()).collect();
            parts.push(predicate.clone());
            Predicate::Or(parts)
        } else {
            predicate.clone()
        };
        let mut after: Option<Key> = None;
        let mut matched = 0_u64;
        let mut scanned = 0_u64;
        loop {
            if ctx.deadline_passed() {
                report.note(format!(
                    "stopped at the deadline after {scanned} rows of `{}`; the rest is left \
                     for the next run",
                    self.table.qualified_name()
                ));
                return Ok(Scan {
                    matched,
                    complete: false,
                });
            }
            let mut batch = self
                .store
                .read_matching(
                    &self.table,
                    &read_predicate,
                    now,
                    after.clone(),
                    self.batch_size,
                )
                .await?;
            let full = batch.len() >= self.batch_size;
            let Some(last) = batch.last().map(|r| r.key().clone()) else {
                break;
            };
            if after.as_ref() == Some(&last) {
                return Err(Error::permanent(
                    "read candidates",
                    format!("the store returned key {last} again: keyset pagination is broken"),
                ));
            }
            scanned += batch.len() as u64;
            if as_if {
                batch.retain_mut(|row| self.eligible_after_maintenance(row, predicate, now));
            }
            matched += batch.len() as u64;
            if let Some(sink) = sink
                && !batch.is_empty()
            {
                sink.push_batch(&batch).await?;
            }
            ctx.report_progress(scanned, None);
            after = Some(last);
            if !full {
                break;
            }
        }
        Ok(Scan {
            matched,
            complete: true,
        })
    }
}

#[async_trait]
impl Reconciler for RehydrateReconciler {
    fn name(&self) -> &str {
        &self.name
    }

    #[tracing::instrument(
        name = "recon.rehydrate",
        skip_all,
        fields(step = %self.name, table = %self.table.qualified_name(), dry_run = ctx.is_dry_run()),
        err
    )]
    async fn reconcile(&self, ctx: &RunContext) -> recon_core::Result<StepReport> {
        let now = ctx.now();
        let dry = ctx.is_dry_run();
        let mut report = StepReport::new(self.name.clone());

        // 1. maintenance, one store call per rule
        for (i, rule) in self.maintenance.iter().enumerate() {
            let n = if dry {
                let earlier_sets: Vec<&str> = self.maintenance[..i]
                    .iter()
                    .flat_map(Maintenance::assigned_columns)
                    .collect();
                if rule.when.columns().iter().any(|c| earlier_sets.contains(c)) {
                    report.note(format!(
                        "dry run: `{}` reads columns an earlier rule assigns; its count is of \
                         the current data",
                        rule.name
                    ));
                }
                self.store.count(&self.table, &rule.when, now).await?
            } else {
                self.store.apply_maintenance(&self.table, rule, now).await?
            };
            report.add_named(&rule.name, n);
        }

        // 2. candidates, batch by batch into the sink
        if let Some(c) = &self.candidates {
            let sink = if dry {
                None
            } else {
                c.queue.begin_rebuild().await?;
                Some(c.queue.as_ref())
            };
            let scan = self.scan(ctx, &c.predicate, sink, &mut report).await?;
            report.add_named(&self.candidates_counter, scan.matched);
            if let Some(sink) = sink {
                let dropped = sink.finish_rebuild(scan.complete).await?;
                if dropped > 0 {
                    report.note(format!(
                        "{dropped} queued entries are no longer eligible and were dropped"
                    ));
                }
            }
            if !scan.complete {
                report.note("named counts skipped: the run reached its deadline");
                return Ok(report);
            }
        }

        // 3. named counts
        for count in &self.counts {
            let n = if dry && !self.maintenance.is_empty() && count.table == self.table {
                let scan = self.scan(ctx, &count.predicate, None, &mut report).await?;
                if !scan.complete {
                    report.note("named counts skipped: the run reached its deadline");
                    return Ok(report);
                }
                scan.matched
            } else {
                if dry
                    && !self.maintenance.is_empty()
                    && count.table.qualified_name() == self.table.qualified_name()
                {
                    report.note(format!(
                        "dry run: `{}` maps the source table differently; it counts the \
                         current data",
                        count.name
                    ));
                }
                self.store
                    .count(&count.table, &count.predicate, now)
                    .await?
            };
            report.add_named(&count.name, n);
        }
        Ok(report)
    }
}
