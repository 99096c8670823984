//! Per-record lineage through host-defined ordered stages, stage counts and gap analysis.
//!
//! A lineage row per (pipeline, key) says which stage the record reached last
//! (`stage`), whether the pipeline is still working on it (`in_progress`), is done with it
//! (`completed`) or could not get it further (`failed`), when each stage was reported, the
//! fingerprint it was processed with, how often it was retried, the last error and free host
//! metadata (child-row counts, fields populated, …).
//!
//! A record *has reached* stage `s` when its current stage is `s` or a later one. Counting
//! rows per current stage (one `GROUP BY`) is therefore enough to know how many reached each
//! stage, and the gap of a stage is how many reached the stage before it (for the first stage:
//! the source count) but not this one ([`analyse_gaps`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Fingerprint, Result, limits};

/// A pipeline's ordered stages, validated: at least one, unique, identifier-like names
/// (ASCII letters, digits, `_`; at most 64 bytes).
///
/// ```
/// use lineage_checksum::Stages;
/// let stages = Stages::new(["extracted", "pii_removed", "embedding_generated", "loaded"])?;
/// assert_eq!(stages.index("pii_removed")?, 1);
/// assert!(stages.index("transformed").is_err());
/// assert!(Stages::new(Vec::<String>::new()).is_err());
/// assert!(Stages::new(["a", "a"]).is_err());
/// # Ok::<(), lineage_checksum::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Stages {
    names: Vec<String>,
}

impl Stages {
    /// Validate and keep `names` in the given order.
    pub fn new<I, S>(names: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.is_empty() {
            return Err(Error::InvalidStages(
                "a pipeline needs at least one stage".into(),
            ));
        }
        for (i, n) in names.iter().enumerate() {
            limits::check_ident("stage name", n)
                .map_err(|e| Error::InvalidStages(e.to_string()))?;
            if names[..i].contains(n) {
                return Err(Error::InvalidStages(format!(
                    "stage `{n}` is listed twice; stage names must be unique"
                )));
            }
        }
        Ok(Self { names })
    }

    /// Position of `stage` (0 for the first), or [`Error::UnknownStage`].
    pub fn index(&self, stage: &str) -> Result<usize> {
        self.names
            .iter()
            .position(|n| n == stage)
            .ok_or_else(|| Error::UnknownStage {
                stage: stage.to_owned(),
                known: self.names.join(", "),
            })
    }

    /// Whether `stage` is the last stage.
    pub fn is_last(&self, stage: &str) -> bool {
        self.names.last().is_some_and(|l| l == stage)
    }

    /// The stage names in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The first stage.
    pub fn first(&self) -> &str {
        &self.names[0]
    }

    /// The last stage.
    pub fn last(&self) -> &str {
        &self.names[self.names.len() - 1]
    }

    /// Number of stages (at least one).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: a pipeline has at least one stage.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl<'de> Deserialize<'de> for Stages {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        Stages::new(names).map_err(serde::de::Error::custom)
    }
}

/// Where the pipeline stands with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineageStatus {
    /// The record reached its current stage and moves on.
    InProgress,
    /// The record went through the whole pipeline.
    Completed,
    /// The record could not get past its current stage (see the failed-record log).
    Failed,
}

impl LineageStatus {
    /// `in_progress`, `completed` or `failed` (the stored text).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for LineageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LineageStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "in_progress" => Ok(Self::InProgress),
            "completed" => Ok(Self::Completed),
            "failed" => Ok(Self::Failed),
            other => Err(Error::invalid_input(format!(
                "unknown lineage status `{other}`"
            ))),
        }
    }
}

/// One change to a lineage row, as the pipeline reports it.
///
/// Stores apply it like this (the memory store is the reference):
///
/// * no row yet: insert with `stage`, `status`, `stage_at = at`, `stage_times = {stage: at}`,
///   `fingerprint`, `retry_count = 1` if `retry` else 0, `last_error = error`,
///   `metadata` (or `{}`), `created_at = updated_at = at`;
/// * a row whose `updated_at` is **later** than `at`: nothing (a stale report never
///   overwrites a newer one);
/// * otherwise: `stage`, `status`, `stage_at = at`, `stage_times[stage] = at` (other stages'
///   times are kept), `fingerprint` and `metadata` replaced only when given,
///   `last_error = error` (a success clears it), `retry_count += 1` if `retry`,
///   `updated_at = at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineageUpdate {
    /// The record's key.
    pub key: String,
    /// The stage it reached (or failed to get past).
    pub stage: String,
    /// Its status now.
    pub status: LineageStatus,
    /// When (stored at microsecond precision).
    pub at: DateTime<Utc>,
    /// The fingerprint it is processed with, if it changed.
    pub fingerprint: Option<Fingerprint>,
    /// The error, for `failed`; `None` clears the last error.
    pub error: Option<String>,
    /// Host metadata, replacing the stored object when given (a JSON object, at most
    /// [`limits::MAX_METADATA_BYTES`]).
    pub metadata: Option<serde_json::Value>,
    /// Count this report as a retry.
    pub retry: bool,
}

impl LineageUpdate {
    /// A plain "reached `stage` with `status` at `at`" report.
    pub fn new(
        key: impl Into<String>,
        stage: impl Into<String>,
        status: LineageStatus,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            key: key.into(),
            stage: stage.into(),
            status,
            at,
            fingerprint: None,
            error: None,
            metadata: None,
            retry: false,
        }
    }

    /// With the fingerprint the record is processed with.
    #[must_use]
    pub fn with_fingerprint(mut self, fingerprint: Fingerprint) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }

    /// With an error message.
    #[must_use]
    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// With host metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Counted as a retry.
    #[must_use]
    pub fn as_retry(mut self) -> Self {
        self.retry = true;
        self
    }
}

/// A lineage row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineageRecord {
    /// The record's key.
    pub key: String,
    /// The stage it reached last.
    pub stage: String,
    /// Its status.
    pub status: LineageStatus,
    /// When its current stage was reported.
    pub stage_at: DateTime<Utc>,
    /// When each stage was last reported.
    pub stage_times: BTreeMap<String, DateTime<Utc>>,
    /// The fingerprint it was processed with.
    pub fingerprint: Option<Fingerprint>,
    /// Reports counted as retries.
    pub retry_count: u32,
    /// The last error, cleared by a success.
    pub last_error: Option<String>,
    /// Host metadata (a JSON object).
    pub metadata: serde_json::Value,
    /// First report.
    pub created_at: DateTime<Utc>,
    /// Last applied report.
    pub updated_at: DateTime<Utc>,
}

/// How many rows are at one (current stage, status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStatusCount {
    /// The current stage, as stored.
    pub stage: String,
    /// The status.
    pub status: LineageStatus,
    /// Number of rows.
    pub count: u64,
}

/// A keyset page of records stuck in a stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StuckQuery {
    /// Only this stage (`None`: any stage).
    pub stage: Option<String>,
    /// Rows `in_progress` whose `stage_at` is strictly before this instant.
    pub entered_before: DateTime<Utc>,
    /// Keys strictly after this one.
    pub after: Option<String>,
    /// At most this many rows.
    pub limit: usize,
}

/// Which metadata a quality count looks at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityQuery {
    /// Count rows whose metadata has a **number greater than zero** at each of these keys
    /// (e.g. `task_count`).
    pub present: Vec<String>,
    /// Count rows whose metadata at this key is a number below this minimum, or missing, or
    /// not a number (e.g. `("fields_populated", 30)`).
    pub below: Option<(String, u32)>,
}

/// The answer to a [`QualityQuery`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityCounts {
    /// Rows of the pipeline.
    pub total: u64,
    /// For each key of [`QualityQuery::present`], in order: rows where it is present.
    pub present: Vec<(String, u64)>,
    /// Rows below the minimum (0 without [`QualityQuery::below`]).
    pub below: u64,
}

/// Where lineage rows live: one per (pipeline, key).
///
/// Keys order by their UTF-8 bytes (SQL: binary collation); timestamps are kept at
/// microsecond precision. Implementations validate input with [`check_updates`] and friends
/// before writing and reject a bad batch whole.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait LineageStore: Send + Sync {
    /// Apply a batch of updates (unique keys) as documented on [`LineageUpdate`], in one
    /// transaction. Returns the number of rows inserted or updated (stale reports excluded).
    async fn upsert(&self, pipeline: &str, updates: &[LineageUpdate]) -> Result<u64>;

    /// The rows of those `keys` that exist (any order).
    async fn get(&self, pipeline: &str, keys: &[String]) -> Result<Vec<LineageRecord>>;

    /// Row counts grouped by (current stage, status); one aggregate query. Order unspecified.
    async fn stage_counts(&self, pipeline: &str) -> Result<Vec<StageStatusCount>>;

    /// `in_progress` rows whose current stage was reported before `entered_before`, by key.
    async fn stuck(&self, pipeline: &str, query: &StuckQuery) -> Result<Vec<LineageRecord>>;

    /// Counts over the metadata of every row, in one aggregate query.
    async fn quality_counts(&self, pipeline: &str, query: &QualityQuery) -> Result<QualityCounts>;
}

/// Check a batch of [`LineageUpdate`]s the way every [`LineageStore`] must before writing.
/// (Stage names are checked for shape here; [`LineageTracker`] also checks them against the
/// pipeline's [`Stages`].)
pub fn check_updates(pipeline: &str, updates: &[LineageUpdate]) -> Result<()> {
    limits::check_name("pipeline", pipeline)?;
    limits::check_batch("lineage upsert", updates.len())?;
    for u in updates {
        limits::check_key(&u.key)?;
        limits::check_ident("stage name", &u.stage)?;
        if let Some(m) = &u.metadata {
            if !m.is_object() {
                return Err(Error::invalid_input(format!(
                    "metadata of `{}` must be a JSON object",
                    u.key
                )));
            }
            limits::check_json(
                &format!("metadata of `{}`", u.key),
                m,
                limits::MAX_METADATA_BYTES,
            )?;
        }
    }
    limits::check_unique("lineage upsert", updates.iter().map(|u| u.key.as_str()))
}

/// Check a [`StuckQuery`].
pub fn check_stuck_query(pipeline: &str, q: &StuckQuery) -> Result<()> {
    limits::check_name("pipeline", pipeline)?;
    limits::check_limit(q.limit)?;
    if let Some(s) = &q.stage {
        limits::check_ident("stage name", s)?;
    }
    Ok(())
}

/// Check a [`QualityQuery`].
pub fn check_quality_query(pipeline: &str, q: &QualityQuery) -> Result<()> {
    limits::check_name("pipeline", pipeline)?;
    for k in &q.present {
        limits::check_ident("metadata key", k)?;
    }
    if let Some((k, _)) = &q.below {
        limits::check_ident("metadata key", k)?;
    }
    Ok(())
}

/// One stage of a gap analysis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageGap {
    /// The stage.
    pub stage: String,
    /// Records that reached it (current stage is this one or a later one).
    pub reached: u64,
    /// Records expected: those that reached the previous stage (the source count for the
    /// first stage).
    pub expected: u64,
    /// `expected - reached` (zero if more reached than expected).
    pub gap: u64,
    /// `reached - expected` when more reached than expected (tracked records the source no
    /// longer counts, say), else zero.
    pub excess: u64,
    /// Records whose current stage is this one and whose status is `failed`.
    pub failed_here: u64,
    /// Records whose current stage is this one and whose status is `in_progress`.
    pub in_progress_here: u64,
}

/// Gap analysis of a pipeline against its source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapReport {
    /// Records at the source.
    pub source_count: u64,
    /// Lineage rows with a known stage.
    pub tracked: u64,
    /// One entry per stage, in order.
    pub stages: Vec<StageGap>,
    /// Source count minus records that reached the last stage (zero if more did).
    pub total_gap: u64,
    /// Rows with status `failed`.
    pub failed: u64,
    /// Rows with status `completed`.
    pub completed: u64,
    /// Rows whose stored stage is not one of the pipeline's stages (renamed or removed
    /// stages): reported, never counted as reached.
    pub unknown_stages: Vec<StageStatusCount>,
}

impl GapReport {
    /// Share of tracked records whose status is `failed` (0 when nothing is tracked).
    pub fn failure_rate(&self) -> f64 {
        if self.tracked == 0 {
            0.0
        } else {
            self.failed as f64 / self.tracked as f64
        }
    }
}

/// Gap analysis: how many records reached each stage and how many fell out before it.
///
/// ```
/// use lineage_checksum::{analyse_gaps, LineageStatus::*, StageStatusCount, Stages};
/// let stages = Stages::new(["extracted", "pii_removed", "embedding_generated", "loaded"])?;
/// let at = |stage: &str, status, count| StageStatusCount { stage: stage.into(), status, count };
/// let counts = [
///     at("extracted", InProgress, 10),        // 9,950 tracked, 9,940 past extraction, …
///     at("pii_removed", Failed, 20),
///     at("embedding_generated", InProgress, 20),
///     at("loaded", Completed, 9_900),
/// ];
/// let gaps = analyse_gaps(&stages, 10_000, &counts);
/// let per_stage: Vec<u64> = gaps.stages.iter().map(|s| s.gap).collect();
/// assert_eq!(per_stage, [50, 10, 20, 20]);
/// assert_eq!(gaps.total_gap, 100);
/// # Ok::<(), lineage_checksum::Error>(())
/// ```
pub fn analyse_gaps(stages: &Stages, source_count: u64, counts: &[StageStatusCount]) -> GapReport {
    let n = stages.len();
    let mut at_stage = vec![0u64; n];
    let mut failed_here = vec![0u64; n];
    let mut in_progress_here = vec![0u64; n];
    let mut unknown = Vec::new();
    let (mut failed, mut completed) = (0u64, 0u64);
    for c in counts {
        let Ok(i) = stages.index(&c.stage) else {
            unknown.push(c.clone());
            continue;
        };
        at_stage[i] += c.count;
        match c.status {
            LineageStatus::Failed => {
                failed_here[i] += c.count;
                failed += c.count;
            }
            LineageStatus::InProgress => in_progress_here[i] += c.count,
            LineageStatus::Completed => completed += c.count,
        }
    }
    // reached[i] = rows whose current stage is i or later.
    let mut reached = vec![0u64; n];
    let mut acc = 0u64;
    for i in (0..n).rev() {
        acc += at_stage[i];
        reached[i] = acc;
    }
    let mut out = Vec::with_capacity(n);
    let mut expected = source_count;
    for (i, name) in stages.names().iter().enumerate() {
        out.push(StageGap {
            stage: name.clone(),
            reached: reached[i],
            expected,
            gap: expected.saturating_sub(reached[i]),
            excess: reached[i].saturating_sub(expected),
            failed_here: failed_here[i],
            in_progress_here: in_progress_here[i],
        });
        expected = reached[i];
    }
    unknown.sort_by(|a, b| (&a.stage, a.status).cmp(&(&b.stage, b.status)));
    GapReport {
        source_count,
        tracked: reached[0],
        stages: out,
        total_gap: source_count.saturating_sub(reached[n - 1]),
        failed,
        completed,
        unknown_stages: unknown,
    }
}

/// The `entered_before` of a stuck query: records whose current stage was reported more than
/// `threshold` before `now`.
pub fn stuck_cutoff(now: DateTime<Utc>, threshold: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(threshold)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A pipeline's lineage: a [`LineageStore`] bound to a pipeline name and its [`Stages`],
/// checking stage names before anything is written.
#[derive(Clone)]
pub struct LineageTracker {
    store: Arc<dyn LineageStore>,
    pipeline: String,
    stages: Stages,
}

impl fmt::Debug for LineageTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineageTracker")
            .field("pipeline", &self.pipeline)
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

impl LineageTracker {
    /// Track `pipeline` through `stages` in `store`.
    pub fn new(
        store: Arc<dyn LineageStore>,
        pipeline: impl Into<String>,
        stages: Stages,
    ) -> Result<Self> {
        let pipeline = pipeline.into();
        limits::check_name("pipeline", &pipeline)?;
        Ok(Self {
            store,
            pipeline,
            stages,
        })
    }

    /// The pipeline name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The stages.
    pub fn stages(&self) -> &Stages {
        &self.stages
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn LineageStore> {
        &self.store
    }

    /// Record a batch of updates (one store call). An unknown stage rejects the whole batch
    /// with [`Error::UnknownStage`] and writes nothing.
    pub async fn record(&self, updates: &[LineageUpdate]) -> Result<u64> {
        for u in updates {
            self.stages.index(&u.stage)?;
        }
        self.store.upsert(&self.pipeline, updates).await
    }

    /// Gap analysis against `source_count` (one aggregate query).
    pub async fn gaps(&self, source_count: u64) -> Result<GapReport> {
        let counts = self.store.stage_counts(&self.pipeline).await?;
        Ok(analyse_gaps(&self.stages, source_count, &counts))
    }

    /// One keyset page of records `in_progress` in `stage` (or any stage) for longer than
    /// `threshold` at `now`.
    pub async fn stuck(
        &self,
        stage: Option<&str>,
        threshold: std::time::Duration,
        now: DateTime<Utc>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<LineageRecord>> {
        if let Some(s) = stage {
            self.stages.index(s)?;
        }
        let q = StuckQuery {
            stage: stage.map(str::to_owned),
            entered_before: stuck_cutoff(now, threshold),
            after,
            limit,
        };
        self.store.stuck(&self.pipeline, &q).await
    }
}

#[cfg(test)]
mod tests {
    use super::LineageStatus::*;
    use super::*;

    fn c(stage: &str, status: LineageStatus, count: u64) -> StageStatusCount {
        StageStatusCount {
            stage: stage.into(),
            status,
            count,
        }
    }

    fn scenario_c_stages() -> Stages {
        Stages::new(["extracted", "pii_removed", "embedding_generated", "loaded"]).unwrap()
    }

    #[test]
    fn scenario_c_gap_table() {
        // 9,950 tracked; 9,940 reached pii; 9,920 embedded; 9,900 loaded.
        let counts = [
            c("extracted", InProgress, 4),
            c("extracted", Failed, 6),
            c("pii_removed", Failed, 20),
            c("embedding_generated", Failed, 15),
            c("embedding_generated", InProgress, 5),
            c("loaded", Completed, 9_900),
        ];
        let g = analyse_gaps(&scenario_c_stages(), 10_000, &counts);
        assert_eq!(g.tracked, 9_950);
        let rows: Vec<(&str, u64, u64, u64)> = g
            .stages
            .iter()
            .map(|s| (s.stage.as_str(), s.expected, s.reached, s.gap))
            .collect();
        assert_eq!(
            rows,
            [
                ("extracted", 10_000, 9_950, 50),
                ("pii_removed", 9_950, 9_940, 10),
                ("embedding_generated", 9_940, 9_920, 20),
                ("loaded", 9_920, 9_900, 20),
            ]
        );
        assert_eq!(g.total_gap, 100);
        assert_eq!(g.failed, 41);
        assert_eq!(g.completed, 9_900);
        assert_eq!(g.stages[2].failed_here, 15);
        assert_eq!(g.stages[2].in_progress_here, 5);
        assert!((g.failure_rate() - 41.0 / 9_950.0).abs() < 1e-12);
    }

    #[test]
    fn unknown_stages_and_excess_are_reported_not_counted() {
        let counts = [c("loaded", Completed, 12), c("transformed", InProgress, 3)];
        let g = analyse_gaps(&scenario_c_stages(), 10, &counts);
        assert_eq!(g.tracked, 12);
        assert_eq!(g.stages[0].gap, 0);
        assert_eq!(g.stages[0].excess, 2);
        assert_eq!(g.total_gap, 0);
        assert_eq!(g.unknown_stages, [c("transformed", InProgress, 3)]);
        let empty = analyse_gaps(&scenario_c_stages(), 0, &[]);
        assert_eq!(empty.failure_rate(), 0.0);
        assert_eq!(empty.total_gap, 0);
    }

    #[test]
    fn stage_validation() {
        assert!(matches!(
            Stages::new(Vec::<String>::new()),
            Err(Error::InvalidStages(_))
        ));
        assert!(matches!(
            Stages::new(["a", "b", "a"]),
            Err(Error::InvalidStages(_))
        ));
        assert!(matches!(Stages::new(["a b"]), Err(Error::InvalidStages(_))));
        assert!(matches!(Stages::new([""]), Err(Error::InvalidStages(_))));
        let s = scenario_c_stages();
        assert_eq!(s.first(), "extracted");
        assert_eq!(s.last(), "loaded");
        assert!(s.is_last("loaded") && !s.is_last("extracted"));
        assert!(matches!(
            s.index("weaviate_loaded"),
            Err(Error::UnknownStage { ref stage, .. }) if stage == "weaviate_loaded"
        ));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Stages>(&json).unwrap(), s);
        assert!(serde_json::from_str::<Stages>("[]").is_err());
        assert_eq!("failed".parse::<LineageStatus>().unwrap(), Failed);
        assert!("done".parse::<LineageStatus>().is_err());
    }

    #[test]
    fn update_checks() {
        let now = Utc::now();
        let ok = LineageUpdate::new("k", "extracted", InProgress, now)
            .with_metadata(serde_json::json!({"task_count": 2}));
        assert!(check_updates("cases", std::slice::from_ref(&ok)).is_ok());
        assert!(
            check_updates("cases", &[ok.clone(), ok.clone()]).is_err(),
            "duplicate key"
        );
        let not_object = ok.clone().with_metadata(serde_json::json!([1]));
        assert!(check_updates("cases", &[not_object]).is_err());
        let huge = ok
            .clone()
            .with_metadata(serde_json::json!({"x": "y".repeat(limits::MAX_METADATA_BYTES)}));
        assert!(matches!(
            check_updates("cases", &[huge]),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn stuck_cutoff_saturates() {
        let now: DateTime<Utc> = "2024-11-04T12:00:00Z".parse().unwrap();
        assert_eq!(
            stuck_cutoff(now, std::time::Duration::from_secs(3600)).to_rfc3339(),
            "2024-11-04T11:00:00+00:00"
        );
        assert_eq!(
            stuck_cutoff(now, std::time::Duration::MAX),
            DateTime::<Utc>::MIN_UTC
        );
    }

    #[tokio::test]
    async fn tracker_refuses_unknown_stages_before_writing() {
        let mut store = MockLineageStore::new();
        store.expect_upsert().never();
        let t = LineageTracker::new(Arc::new(store), "cases", scenario_c_stages()).unwrap();
        let now = Utc::now();
        let err = t
            .record(&[
                LineageUpdate::new("a", "extracted", InProgress, now),
                LineageUpdate::new("b", "weaviate_loaded", InProgress, now),
            ])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnknownStage { .. }), "{err}");
    }
}
