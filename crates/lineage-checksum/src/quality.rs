//! Data-quality rules, alerts, the audit step and seed 003's text report.
//!
//! The [`AuditReconciler`] counts a pipeline's lineage per stage, compares it with the source
//! count (gap analysis), groups unresolved failures by error type, measures coverage of child
//! tables and populated fields from the lineage metadata, and raises [`Alert`]s. Everything it
//! finds goes into its [`StepReport`] as counters and as the `audit` detail
//! ([`AuditSummary`]). [`PipelineReport::from_run_report`] combines that with the
//! [`RecoveryReconciler`](crate::RecoveryReconciler)'s `recovery` detail into the report of
//! seed 003 ([`PipelineReport::render_text`]) or JSON (serde).

use std::fmt::{self, Write as _};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use recon_core::{Reconciler, RunContext, RunReport, StepReport};
use serde::{Deserialize, Serialize};

use crate::failed::{ErrorTypeCount, FailedRecordStore};
use crate::lineage::{GapReport, LineageStore, QualityQuery, Stages, analyse_gaps};
use crate::recovery::{RECOVERY_DETAIL, RecoverySummary};
use crate::{Error, Result, limits};

/// How serious an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Flag for review, keep processing.
    Medium,
    /// Act soon.
    High,
    /// Stop and investigate.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Low => "LOW",
            Self::Medium => "MEDIUM",
            Self::High => "HIGH",
            Self::Critical => "CRITICAL",
        })
    }
}

/// The share of records that have rows in a child table must reach a threshold.
///
/// A record "has" the table when its lineage metadata holds a number greater than zero at
/// `metadata_key` (e.g. `task_count`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoverageRule {
    /// The table's name for people (`Task`).
    pub table: String,
    /// The metadata key with the child-row count (`task_count`).
    pub metadata_key: String,
    /// The minimum share, 0.0..=1.0 (`0.70`).
    pub min_share: f64,
    /// The alert's severity when coverage is below the minimum.
    pub severity: Severity,
    /// What people should do then (`Check WorkOrder data availability in SFDC`).
    pub action: String,
}

impl CoverageRule {
    /// A rule; `action` defaults to `"Check {table} data availability"`.
    pub fn new(
        table: impl Into<String>,
        metadata_key: impl Into<String>,
        min_share: f64,
        severity: Severity,
    ) -> Self {
        let table = table.into();
        Self {
            action: format!("Check {table} data availability"),
            table,
            metadata_key: metadata_key.into(),
            min_share,
            severity,
        }
    }

    /// With a specific action text.
    #[must_use]
    pub fn with_action(mut self, action: impl Into<String>) -> Self {
        self.action = action.into();
        self
    }
}

/// Records should have at least `min_fields` of `total_fields` populated (seed 003: 30 of 44).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldsRule {
    /// The metadata key with the count of populated fields (`fields_populated`).
    pub metadata_key: String,
    /// The minimum (30).
    pub min_fields: u32,
    /// The number of fields a record can have (44), for the report.
    pub total_fields: u32,
    /// The alert's severity when any record is below the minimum.
    pub severity: Severity,
}

/// Every rule of an audit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QualityRules {
    /// Coverage rules, reported in this order.
    pub coverage: Vec<CoverageRule>,
    /// The populated-fields rule.
    pub fields: Option<FieldsRule>,
    /// A failure rate (failed lineage rows / tracked) above this is critical (default 0.10).
    pub max_failure_rate: f64,
    /// A total gap above this is high (default 100).
    pub max_gap: u64,
}

impl Default for QualityRules {
    fn default() -> Self {
        Self {
            coverage: Vec::new(),
            fields: None,
            max_failure_rate: 0.10,
            max_gap: 100,
        }
    }
}

impl QualityRules {
    /// No coverage or fields rule; failure rate > 10 % critical, gap > 100 high.
    pub fn new() -> Self {
        Self::default()
    }

    /// Seed 003's rules: Task 70 % high, WorkOrder 70 % high, Comments 50 % medium
    /// (metadata keys `task_count`, `workorder_count`, `comment_count`), at least 30 of 44
    /// fields (`fields_populated`, medium), failure rate > 10 % critical, gap > 100 high.
    pub fn seed_003() -> Self {
        Self {
            coverage: vec![
                CoverageRule::new("Task", "task_count", 0.70, Severity::High)
                    .with_action("Check SFDC Task table availability"),
                CoverageRule::new("WorkOrder", "workorder_count", 0.70, Severity::High)
                    .with_action("Check WorkOrder data availability in SFDC"),
                CoverageRule::new("Comments", "comment_count", 0.50, Severity::Medium)
                    .with_action("Normal (comments are optional); check if it keeps dropping"),
            ],
            fields: Some(FieldsRule {
                metadata_key: "fields_populated".into(),
                min_fields: 30,
                total_fields: 44,
                severity: Severity::Medium,
            }),
            ..Self::default()
        }
    }

    /// Add a coverage rule.
    #[must_use]
    pub fn coverage(mut self, rule: CoverageRule) -> Self {
        self.coverage.push(rule);
        self
    }

    /// Set the populated-fields rule.
    #[must_use]
    pub fn fields(mut self, rule: FieldsRule) -> Self {
        self.fields = Some(rule);
        self
    }

    /// Failure rate above which an alert is critical.
    #[must_use]
    pub fn max_failure_rate(mut self, rate: f64) -> Self {
        self.max_failure_rate = rate;
        self
    }

    /// Total gap above which an alert is high.
    #[must_use]
    pub fn max_gap(mut self, gap: u64) -> Self {
        self.max_gap = gap;
        self
    }

    fn validate(&self) -> Result<()> {
        for r in &self.coverage {
            limits::check_ident("metadata key", &r.metadata_key)?;
            if !(0.0..=1.0).contains(&r.min_share) {
                return Err(Error::config(format!(
                    "coverage threshold of `{}` must be within 0..=1, got {}",
                    r.table, r.min_share
                )));
            }
        }
        if let Some(f) = &self.fields {
            limits::check_ident("metadata key", &f.metadata_key)?;
            if f.min_fields > f.total_fields {
                return Err(Error::config("min_fields exceeds total_fields"));
            }
        }
        if !(0.0..=1.0).contains(&self.max_failure_rate) {
            return Err(Error::config("max_failure_rate must be within 0..=1"));
        }
        Ok(())
    }
}

/// Coverage of one child table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// The table.
    pub table: String,
    /// Records that have rows in it.
    pub present: u64,
    /// Records counted.
    pub total: u64,
    /// `present / total` (0 when there are no records).
    pub share: f64,
    /// The rule's minimum.
    pub min_share: f64,
    /// Whether the share is at least the minimum.
    pub ok: bool,
}

/// Records under the populated-fields minimum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldsCheck {
    /// Records below the minimum (or without the metadata).
    pub below: u64,
    /// Records counted.
    pub total: u64,
    /// The minimum.
    pub min_fields: u32,
    /// Fields a record can have.
    pub total_fields: u32,
}

/// One alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// How serious.
    pub severity: Severity,
    /// Stable code: `failure_rate`, `gap`, `coverage:<table>`, `min_fields`.
    pub code: String,
    /// What was found.
    pub message: String,
    /// What to do.
    pub action: String,
}

/// Decide the alerts of an audit: pure.
pub fn alerts(
    rules: &QualityRules,
    gaps: Option<&GapReport>,
    coverage: &[Coverage],
    fields: Option<&FieldsCheck>,
    failure_rate: f64,
    failed: u64,
) -> Vec<Alert> {
    let mut out = Vec::new();
    if failure_rate > rules.max_failure_rate {
        out.push(Alert {
            severity: Severity::Critical,
            code: "failure_rate".into(),
            message: format!(
                "{} of tracked records are failing ({} {}; limit {})",
                percent(failure_rate),
                thousands(failed),
                plural(failed, "record", "records"),
                percent(rules.max_failure_rate)
            ),
            action: "Stop the pipeline and investigate the root cause".into(),
        });
    }
    if let Some(g) = gaps
        && g.total_gap > rules.max_gap
    {
        out.push(Alert {
            severity: Severity::High,
            code: "gap".into(),
            message: format!(
                "{} of {} source records did not reach the last stage (limit {})",
                thousands(g.total_gap),
                thousands(g.source_count),
                thousands(rules.max_gap)
            ),
            action: "Run manual recovery and investigate data loss".into(),
        });
    }
    for (c, r) in coverage.iter().zip(&rules.coverage) {
        if !c.ok {
            out.push(Alert {
                severity: r.severity,
                code: format!("coverage:{}", c.table),
                message: format!(
                    "{} coverage {} is below the {} threshold",
                    c.table,
                    percent(c.share),
                    percent(c.min_share)
                ),
                action: r.action.clone(),
            });
        }
    }
    if let (Some(f), Some(rule)) = (fields, &rules.fields)
        && f.below > 0
    {
        out.push(Alert {
            severity: rule.severity,
            code: "min_fields".into(),
            message: format!(
                "{} {} fewer than {} of {} fields populated",
                thousands(f.below),
                plural(f.below, "record has", "records have"),
                f.min_fields,
                f.total_fields
            ),
            action: "Flag for review, but continue processing".into(),
        });
    }
    out.sort_by_key(|a| std::cmp::Reverse(a.severity));
    out
}

/// The number of source records, from the host (e.g. `SELECT count(*)` on its staging table).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SourceCount: Send + Sync {
    /// Records at the source now.
    async fn source_count(&self, ctx: &RunContext) -> Result<u64>;
}

/// Counters of the [`AuditReconciler`].
pub mod counters {
    use recon_core::Counter;
    /// Records at the source.
    pub const SOURCE_COUNT: Counter = Counter::new("source_count");
    /// Lineage rows with a known stage.
    pub const TRACKED: Counter = Counter::new("tracked");
    /// Records that completed the pipeline.
    pub const COMPLETED: Counter = Counter::new("completed");
    /// Source records that did not reach the last stage.
    pub const TOTAL_GAP: Counter = Counter::new("total_gap");
    /// Lineage rows with status `failed`.
    pub const FAILED: Counter = Counter::new("failed");
    /// Unresolved failed records (open + manual review).
    pub const UNRESOLVED_FAILURES: Counter = Counter::new("unresolved_failures");
    /// Records below the populated-fields minimum.
    pub const BELOW_MIN_FIELDS: Counter = Counter::new("below_min_fields");
    /// Alerts raised.
    pub const ALERTS: Counter = Counter::new("alerts");
    /// Critical alerts raised.
    pub const ALERTS_CRITICAL: Counter = Counter::new("alerts_critical");
    /// High alerts raised.
    pub const ALERTS_HIGH: Counter = Counter::new("alerts_high");
}

/// The detail key under which the [`AuditReconciler`] stores its [`AuditSummary`].
pub const AUDIT_DETAIL: &str = "audit";

/// What an audit found; also stored as the step's `audit` detail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditSummary {
    /// The pipeline.
    pub pipeline: String,
    /// Gap analysis (absent without a [`SourceCount`]: then `source_count` = tracked).
    pub gaps: GapReport,
    /// Unresolved failures by error type.
    pub failures_by_error_type: Vec<ErrorTypeCount>,
    /// Coverage per rule, in rule order.
    pub coverage: Vec<Coverage>,
    /// The populated-fields check.
    pub fields: Option<FieldsCheck>,
    /// Alerts, most severe first.
    pub alerts: Vec<Alert>,
}

/// Counts, gaps, failures by type, coverage, fields and alerts of one pipeline, read with
/// three aggregate queries (stage counts, quality counts, failures by error type).
///
/// Counters: [`counters`]; detail `audit`: an [`AuditSummary`]. Read-only, so dry-run
/// changes nothing. Alerts are reported, not errors: the step succeeds.
pub struct AuditReconciler {
    name: String,
    pipeline: String,
    stages: Stages,
    lineage: Arc<dyn LineageStore>,
    failures: Option<Arc<dyn FailedRecordStore>>,
    source: Option<Arc<dyn SourceCount>>,
    rules: QualityRules,
}

impl fmt::Debug for AuditReconciler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditReconciler")
            .field("name", &self.name)
            .field("pipeline", &self.pipeline)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl AuditReconciler {
    /// Audit `pipeline` with `rules`. Name: `audit`. Errors: invalid rules.
    pub fn new(
        pipeline: impl Into<String>,
        stages: Stages,
        lineage: Arc<dyn LineageStore>,
        rules: QualityRules,
    ) -> Result<Self> {
        let pipeline = pipeline.into();
        limits::check_name("pipeline", &pipeline)?;
        rules.validate()?;
        Ok(Self {
            name: "audit".into(),
            pipeline,
            stages,
            lineage,
            failures: None,
            source: None,
            rules,
        })
    }

    /// Rename the step.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Compare with the source's count (without it, the tracked count stands in for it).
    #[must_use]
    pub fn with_source(mut self, source: Arc<dyn SourceCount>) -> Self {
        self.source = Some(source);
        self
    }

    /// Group unresolved failures by error type from this log.
    #[must_use]
    pub fn with_failures(mut self, failures: Arc<dyn FailedRecordStore>) -> Self {
        self.failures = Some(failures);
        self
    }

    async fn audit(&self, ctx: &RunContext) -> Result<AuditSummary> {
        let counts = self.lineage.stage_counts(&self.pipeline).await?;
        let source = match &self.source {
            Some(s) => Some(s.source_count(ctx).await?),
            None => None,
        };
        let mut gaps = analyse_gaps(&self.stages, source.unwrap_or(0), &counts);
        if source.is_none() {
            gaps = analyse_gaps(&self.stages, gaps.tracked, &counts);
        }
        let failures_by_error_type = match &self.failures {
            Some(f) => f.counts_by_error_type(&self.pipeline).await?,
            None => Vec::new(),
        };
        let (coverage, fields) = if self.rules.coverage.is_empty() && self.rules.fields.is_none() {
            (Vec::new(), None)
        } else {
            let q = QualityQuery {
                present: self
                    .rules
                    .coverage
                    .iter()
                    .map(|r| r.metadata_key.clone())
                    .collect(),
                below: self
                    .rules
                    .fields
                    .as_ref()
                    .map(|f| (f.metadata_key.clone(), f.min_fields)),
            };
            let qc = self.lineage.quality_counts(&self.pipeline, &q).await?;
            let coverage = self
                .rules
                .coverage
                .iter()
                .zip(&qc.present)
                .map(|(r, (_, present))| {
                    let share = if qc.total == 0 {
                        0.0
                    } else {
                        *present as f64 / qc.total as f64
                    };
                    Coverage {
                        table: r.table.clone(),
                        present: *present,
                        total: qc.total,
                        share,
                        min_share: r.min_share,
                        ok: qc.total == 0 || share >= r.min_share,
                    }
                })
                .collect();
            let fields = self.rules.fields.as_ref().map(|f| FieldsCheck {
                below: qc.below,
                total: qc.total,
                min_fields: f.min_fields,
                total_fields: f.total_fields,
            });
            (coverage, fields)
        };
        let alerts = alerts(
            &self.rules,
            Some(&gaps),
            &coverage,
            fields.as_ref(),
            gaps.failure_rate(),
            gaps.failed,
        );
        Ok(AuditSummary {
            pipeline: self.pipeline.clone(),
            gaps,
            failures_by_error_type,
            coverage,
            fields,
            alerts,
        })
    }
}

#[async_trait]
impl Reconciler for AuditReconciler {
    fn name(&self) -> &str {
        &self.name
    }

    #[tracing::instrument(skip_all, fields(step = %self.name, pipeline = %self.pipeline), err)]
    async fn reconcile(&self, ctx: &RunContext) -> recon_core::Result<StepReport> {
        let s = self.audit(ctx).await?;
        let mut r = StepReport::new(&self.name);
        r.set(counters::SOURCE_COUNT, s.gaps.source_count)
            .set(counters::TRACKED, s.gaps.tracked)
            .set(counters::COMPLETED, s.gaps.completed)
            .set(counters::TOTAL_GAP, s.gaps.total_gap)
            .set(counters::FAILED, s.gaps.failed)
            .set(
                counters::UNRESOLVED_FAILURES,
                s.failures_by_error_type
                    .iter()
                    .map(|c| c.open + c.manual_review)
                    .sum(),
            );
        if let Some(f) = &s.fields {
            r.set(counters::BELOW_MIN_FIELDS, f.below);
        }
        let count = |sev| s.alerts.iter().filter(|a| a.severity == sev).count() as u64;
        r.set(counters::ALERTS, s.alerts.len() as u64)
            .set(counters::ALERTS_CRITICAL, count(Severity::Critical))
            .set(counters::ALERTS_HIGH, count(Severity::High));
        for a in &s.alerts {
            r.note(format!("[{}] {}", a.severity, a.message));
        }
        if !s.gaps.unknown_stages.is_empty() {
            r.note(format!(
                "{} lineage rows are at stages the pipeline does not define",
                s.gaps.unknown_stages.iter().map(|c| c.count).sum::<u64>()
            ));
        }
        r.detail(
            AUDIT_DETAIL,
            serde_json::to_value(&s).unwrap_or(serde_json::Value::Null),
        );
        Ok(r)
    }
}

/// Seed 003's reconciliation report: counts, recovery, still-failed records, coverage, alerts
/// and actions. Serialises with serde; [`PipelineReport::render_text`] is for people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineReport {
    /// The run's `now`.
    pub run_at: DateTime<Utc>,
    /// What a record is called in the text (`cases`, `records`).
    pub noun: String,
    /// The audit, if the run had one.
    pub audit: Option<AuditSummary>,
    /// The recovery, if the run had one.
    pub recovery: Option<RecoverySummary>,
    /// The actions people should take, derived from alerts and unresolved failures.
    pub actions: Vec<String>,
}

impl PipelineReport {
    /// Assemble the report from a run's `audit` and `recovery` step details (the first step
    /// that has each). Calls records "records"; see [`PipelineReport::with_noun`].
    pub fn from_run_report(run: &RunReport) -> Self {
        let detail = |key: &str| {
            run.steps
                .iter()
                .find_map(|s| s.report.details().get(key).cloned())
        };
        let audit: Option<AuditSummary> =
            detail(AUDIT_DETAIL).and_then(|v| serde_json::from_value(v).ok());
        let recovery: Option<RecoverySummary> =
            detail(RECOVERY_DETAIL).and_then(|v| serde_json::from_value(v).ok());
        Self::new(run.started_at, audit, recovery)
    }

    /// Assemble the report from its parts.
    pub fn new(
        run_at: DateTime<Utc>,
        audit: Option<AuditSummary>,
        recovery: Option<RecoverySummary>,
    ) -> Self {
        let mut actions = Vec::new();
        if let Some(a) = &audit {
            for alert in &a.alerts {
                actions.push(format!("{} ({})", alert.action, alert.message));
            }
        }
        let still: Vec<ErrorTypeCount> = match (&recovery, &audit) {
            (Some(r), _) => r.still_failed_by_error_type.clone(),
            (None, Some(a)) => a.failures_by_error_type.clone(),
            (None, None) => Vec::new(),
        };
        for c in still.iter().filter(|c| c.manual_review > 0) {
            actions.push(format!(
                "Review {} {} failing with {} (manual review)",
                thousands(c.manual_review),
                plural(c.manual_review, "record", "records"),
                c.error_type
            ));
        }
        Self {
            run_at,
            noun: "records".into(),
            audit,
            recovery,
            actions,
        }
    }

    /// Call records this (seed 003: `cases`).
    #[must_use]
    pub fn with_noun(mut self, noun: impl Into<String>) -> Self {
        self.noun = noun.into();
        self
    }

    /// The report as text, in the layout of seed 003.
    pub fn render_text(&self) -> String {
        let n = &self.noun;
        // "1 case", "2 cases": the noun is given in the plural.
        let one = self.noun.strip_suffix('s').unwrap_or(&self.noun).to_owned();
        let noun = |count: u64| if count == 1 { one.as_str() } else { n.as_str() };
        let mut o = String::new();
        let _ = writeln!(
            o,
            "=== Reconciliation Run: {} ===",
            self.run_at.format("%Y-%m-%d %H:%M")
        );
        if let Some(a) = &self.audit {
            let g = &a.gaps;
            let _ = writeln!(o);
            let _ = writeln!(
                o,
                "Records Checked: {} {}",
                thousands(g.source_count),
                noun(g.source_count)
            );
            let _ = writeln!(
                o,
                "Discrepancies Found: {} {}",
                thousands(g.total_gap),
                noun(g.total_gap)
            );
            let _ = writeln!(o);
            let _ = writeln!(o, "Stage Counts:");
            let _ = writeln!(o, "  {:<24} {:>10}", "source", thousands(g.source_count));
            for s in &g.stages {
                let _ = write!(o, "  {:<24} {:>10}", s.stage, thousands(s.reached));
                if s.gap > 0 {
                    let _ = write!(o, "  (gap {})", thousands(s.gap));
                }
                if s.excess > 0 {
                    let _ = write!(o, "  ({} more than expected)", thousands(s.excess));
                }
                o.push('\n');
            }
        }
        let still: &[ErrorTypeCount] = match (&self.recovery, &self.audit) {
            (Some(r), _) => &r.still_failed_by_error_type,
            (None, Some(a)) => &a.failures_by_error_type,
            (None, None) => &[],
        };
        if let Some(r) = &self.recovery {
            let _ = writeln!(o);
            let _ = writeln!(o, "Recovery Results:");
            let _ = writeln!(
                o,
                " Successfully Recovered: {} {}",
                thousands(r.recovered),
                noun(r.recovered)
            );
            let mut methods: Vec<(&String, &u64)> = r.recovered_by_method.iter().collect();
            methods.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (method, count) in methods {
                let _ = writeln!(
                    o,
                    "  - {} {}: {}",
                    thousands(*count),
                    noun(*count),
                    describe_method(method)
                );
            }
            if r.rescheduled > 0 {
                let _ = writeln!(
                    o,
                    " Rescheduled: {} {} (retried in a later run)",
                    thousands(r.rescheduled),
                    noun(r.rescheduled)
                );
            }
        }
        if self.recovery.is_some() || !still.is_empty() {
            let total: u64 = still.iter().map(|c| c.open + c.manual_review).sum();
            let manual: u64 = still.iter().map(|c| c.manual_review).sum();
            let _ = writeln!(o);
            let _ = write!(o, " Still Failed: {} {}", thousands(total), noun(total));
            if manual > 0 {
                let _ = write!(o, " ({} need manual review)", thousands(manual));
            }
            o.push('\n');
            let mut sorted: Vec<&ErrorTypeCount> = still.iter().collect();
            sorted.sort_by(|a, b| {
                (b.open + b.manual_review)
                    .cmp(&(a.open + a.manual_review))
                    .then(a.error_type.cmp(&b.error_type))
            });
            for c in sorted {
                let k = c.open + c.manual_review;
                let _ = writeln!(o, "  - {} {}: {}", thousands(k), noun(k), c.error_type);
            }
        }
        if let Some(a) = &self.audit {
            if !a.coverage.is_empty() {
                let _ = writeln!(o);
                let _ = writeln!(o, "Multi-Table Coverage:");
                for c in &a.coverage {
                    let _ = writeln!(
                        o,
                        " {}: {} ({} {} threshold)",
                        c.table,
                        percent(c.share),
                        if c.ok { "above" } else { "below" },
                        percent(c.min_share)
                    );
                }
            }
            if let Some(f) = &a.fields {
                let _ = writeln!(
                    o,
                    " Under {} of {} fields: {} {}",
                    f.min_fields,
                    f.total_fields,
                    thousands(f.below),
                    noun(f.below)
                );
            }
            if !a.alerts.is_empty() {
                let _ = writeln!(o);
                let _ = writeln!(o, "Alerts:");
                for al in &a.alerts {
                    let _ = writeln!(o, " [{}] {}", al.severity, al.message);
                }
            }
        }
        let _ = writeln!(o);
        if self.actions.is_empty() {
            let _ = writeln!(o, "Actions Required: none");
        } else {
            let _ = writeln!(o, "Actions Required:");
            for (i, a) in self.actions.iter().enumerate() {
                let _ = writeln!(o, "{}. {a}", i + 1);
            }
        }
        o
    }
}

fn describe_method(method: &str) -> String {
    match method {
        "retry" => "retry succeeded".to_owned(),
        m => match m.strip_prefix("fallback:") {
            Some(p) => format!("used {p} fallback"),
            None => m.to_owned(),
        },
    }
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// `10000` → `10,000`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `0.7` → `70%`, `0.9995` → `99.95%` (at most two decimals, trailing zeros dropped).
pub fn percent(share: f64) -> String {
    let s = format!("{:.2}", share * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

#[cfg(test)]
mod tests;
