//! Upstream sync with a watermark, an overlap window and fingerprints (seed 002, scenario B).
//!
//! Each run of a [`SyncReconciler`]:
//!
//! 1. reads the watermark from a [`WatermarkStore`] (first run: `now − initial_lookback`,
//!    default 24 h; a watermark in the future is clamped to `now` and a note says so);
//! 2. asks the [`UpstreamSource`] for records changed since `watermark − overlap` (default
//!    5 min), page by page. The overlap re-reads rows committed late or sharing the
//!    watermark's timestamp; their fingerprints are unchanged, so they cost a lookup, never
//!    duplicate work. With a [`CleanupScope`] other than `None` the run is a **snapshot run**
//!    instead: it pages through [`UpstreamSource::fetch_snapshot`] (every record, whatever its
//!    cursor);
//! 3. per page: keeps one record per key (the greatest cursor; on a tie the later one in the
//!    page), classifies the page with **one** fingerprint lookup, hands creates and updates to
//!    the host's [`SyncTarget`] in one call, and records the fingerprints of the applied ones
//!    in one call (unchanged and failed ones are only stamped seen);
//! 4. deletes what the snapshot no longer contains ([`CleanupScope`]) — only in a snapshot
//!    run, only when every page of the snapshot was fetched and no record of it failed, and
//!    never in a dry run; then runs the host's [`OrphanCleanup`] (e.g. remove PIN jobs of
//!    deleted reservations);
//! 5. advances the watermark to the highest cursor seen, only if every page was fetched and
//!    never past `now`; with failed records, at most to the earliest failed record's cursor
//!    so that the next run fetches it again. It never moves backwards.
//!
//! An upstream failure is retried inside the step after 2 s, 4 s, 8 s (tokio's sleep,
//! [`UpstreamRetry`]); then the step fails with a transient error, the watermark stays and
//! nothing is deleted. A record the target rejects is an item error (the run is partial); the
//! others are applied, and the held watermark makes the next run fetch the rejected one again.
//!
//! # When records are deleted
//!
//! A key the run did not see is deleted only if the run saw a **complete snapshot** of the
//! scope: an incremental run (records changed since a cursor) does not see unchanged records,
//! so it never deletes; a run that stopped early (upstream failure, `max_pages`, deadline)
//! never deletes; a snapshot with a failed or invalid record never deletes (the run did not
//! succeed); an empty snapshot deletes only with `allow_empty_cleanup`. A source that cannot
//! list a snapshot keeps [`UpstreamSource::fetch_snapshot`]'s default, which refuses: a sync
//! with a cleanup scope then fails before anything is applied or deleted.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use recon_core::{Reconciler, RunContext, StepReport, WatermarkStore};
use serde::{Deserialize, Serialize};

use crate::classify::{
    Action, Classifier, CleanupScope, FingerprintEntry, FingerprintStore, Incoming, RecordBatch,
    UnseenQuery, cleanup_allowed,
};
use crate::{Error, Fingerprint, Result, limits};

/// One record as the upstream returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpstreamRecord<R> {
    /// The record's key (`stay-123`).
    pub key: String,
    /// The record's position in the change feed: its `updated_at`.
    pub cursor: DateTime<Utc>,
    /// The fingerprint of its key fields (see [`Schema`](crate::Schema)).
    pub fingerprint: Fingerprint,
    /// Its source group, for per-group cleanup.
    pub group: Option<String>,
    /// The record itself.
    pub data: R,
}

/// One page request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// Records changed at or after this instant (the watermark minus the overlap).
    pub since: DateTime<Utc>,
    /// The token of the page to fetch (`None`: the first page).
    pub page_token: Option<String>,
    /// At most this many records.
    pub limit: usize,
}

/// One page request of a full snapshot ([`UpstreamSource::fetch_snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    /// The token of the page to fetch (`None`: the first page).
    pub page_token: Option<String>,
    /// At most this many records.
    pub limit: usize,
}

/// One page of changed records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpstreamPage<R> {
    /// The records, in any order.
    pub records: Vec<UpstreamRecord<R>>,
    /// The next page's token (`None`: this was the last page).
    pub next_page_token: Option<String>,
}

/// The source of truth upstream (the Stays API of seed 002).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait UpstreamSource<R: Send + Sync + 'static>: Send + Sync {
    /// One page of records changed since `request.since`. Return a transient error
    /// ([`Error::transient`]) for outages so the step retries them.
    async fn fetch(&self, ctx: &RunContext, request: &FetchRequest) -> Result<UpstreamPage<R>>;

    /// One page of a **full snapshot**: every record of the source, whatever its cursor, the
    /// pages together listing each record at least once. Only runs with a [`CleanupScope`]
    /// other than `None` call it, and they delete the local records the snapshot does not
    /// contain — so implement it only if the pages really are complete.
    ///
    /// The default refuses with a configuration error: without a snapshot nothing is deleted.
    async fn fetch_snapshot(
        &self,
        _ctx: &RunContext,
        _request: &SnapshotRequest,
    ) -> Result<UpstreamPage<R>> {
        Err(Error::config(
            "a cleanup scope needs an upstream source that lists full snapshots \
             (UpstreamSource::fetch_snapshot); this one does not, so nothing is deleted",
        ))
    }
}

/// Whether a change creates or updates a local record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ChangeKind {
    /// Not known locally.
    Create,
    /// Known with another fingerprint.
    Update {
        /// The fingerprint applied last time.
        previous: Fingerprint,
    },
}

/// A record to create or update locally.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change<R> {
    /// Create or update.
    pub kind: ChangeKind,
    /// The upstream record.
    pub record: UpstreamRecord<R>,
}

/// The result of applying one change: `Err(reason)` makes it an item error.
pub type ItemResult = std::result::Result<(), String>;

/// The local side: applies creates and updates (and their hooks: schedule PIN jobs, …).
///
/// Hooks must be idempotent: after a crash between the apply and the fingerprint write, the
/// next run applies the same change again.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SyncTarget<R: Send + Sync + 'static>: Send + Sync {
    /// Apply one page's changes; return one result per change, in order. An `Err` return
    /// fails the whole step (nothing of this page is recorded as applied).
    async fn apply(&self, ctx: &RunContext, changes: &[Change<R>]) -> Result<Vec<ItemResult>>;

    /// Delete local records that a full snapshot no longer contains (only called with a
    /// [`CleanupScope`] other than `None`). One result per key, in order.
    async fn delete(&self, _ctx: &RunContext, _keys: &[String]) -> Result<Vec<ItemResult>> {
        Err(Error::config(
            "this sync target does not delete; use CleanupScope::None",
        ))
    }
}

/// Host cleanup after the sync (seed 002: remove PIN jobs whose reservation is gone).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait OrphanCleanup: Send + Sync {
    /// Clean up; return how many orphans were removed.
    async fn cleanup(&self, ctx: &RunContext) -> Result<u64>;
}

/// Delays between retries of a failing upstream fetch (default 2 s, 4 s, 8 s).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamRetry {
    delays: Vec<Duration>,
}

impl Default for UpstreamRetry {
    fn default() -> Self {
        Self::new([2, 4, 8].map(Duration::from_secs))
    }
}

impl UpstreamRetry {
    /// Retry after each of these delays, then give up.
    pub fn new(delays: impl IntoIterator<Item = Duration>) -> Self {
        Self {
            delays: delays.into_iter().collect(),
        }
    }

    /// Never retry.
    pub fn none() -> Self {
        Self::new([])
    }

    /// The delay after the `failures`-th consecutive failure (1-based), or `None` to give up.
    pub fn delay(&self, failures: usize) -> Option<Duration> {
        failures
            .checked_sub(1)
            .and_then(|i| self.delays.get(i))
            .copied()
    }
}

/// Settings of a [`SyncReconciler`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SyncSettings {
    /// Fingerprint namespace (default: the step name).
    pub namespace: String,
    /// Watermark name (default: the step name).
    pub watermark: String,
    /// First run: start this long before `now` (default 24 h).
    pub initial_lookback: Duration,
    /// Start this long before the watermark (default 5 min).
    pub overlap: Duration,
    /// Records per page requested (default 500).
    pub page_size: usize,
    /// Retries of a failing fetch.
    pub retry: UpstreamRetry,
    /// What unseen records to delete (default none: an incremental sync sees only changes).
    /// Any other scope makes every run a snapshot run ([`UpstreamSource::fetch_snapshot`]);
    /// see the [module docs](self) for when it deletes.
    pub cleanup: CleanupScope,
    /// Delete even when the run saw no record in the scope (default false).
    pub allow_empty_cleanup: bool,
    /// Stop after this many pages (default 10,000); the watermark then stays.
    pub max_pages: usize,
}

impl SyncSettings {
    /// Defaults for a step called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            namespace: name.to_owned(),
            watermark: name.to_owned(),
            initial_lookback: Duration::from_secs(24 * 3600),
            overlap: Duration::from_secs(5 * 60),
            page_size: 500,
            retry: UpstreamRetry::default(),
            cleanup: CleanupScope::None,
            allow_empty_cleanup: false,
            max_pages: 10_000,
        }
    }

    /// Fingerprint namespace.
    #[must_use]
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Watermark name.
    #[must_use]
    pub fn watermark(mut self, name: impl Into<String>) -> Self {
        self.watermark = name.into();
        self
    }

    /// First-run lookback.
    #[must_use]
    pub fn initial_lookback(mut self, d: Duration) -> Self {
        self.initial_lookback = d;
        self
    }

    /// Overlap window.
    #[must_use]
    pub fn overlap(mut self, d: Duration) -> Self {
        self.overlap = d;
        self
    }

    /// Page size.
    #[must_use]
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n;
        self
    }

    /// Upstream retries.
    #[must_use]
    pub fn retry(mut self, retry: UpstreamRetry) -> Self {
        self.retry = retry;
        self
    }

    /// Cleanup scope (other than `None`: snapshot runs that delete unseen records).
    #[must_use]
    pub fn cleanup(mut self, scope: CleanupScope, allow_empty: bool) -> Self {
        self.cleanup = scope;
        self.allow_empty_cleanup = allow_empty;
        self
    }

    /// Page cap.
    #[must_use]
    pub fn max_pages(mut self, n: usize) -> Self {
        self.max_pages = n;
        self
    }
}

/// The window a sync run reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncWindow {
    /// The stored watermark, if any.
    pub stored: Option<DateTime<Utc>>,
    /// The watermark used: stored, or `now − initial_lookback`, clamped to `now`.
    pub watermark: DateTime<Utc>,
    /// Whether the stored watermark was in the future and clamped.
    pub clamped: bool,
    /// `watermark − overlap`: the `since` of the fetch.
    pub since: DateTime<Utc>,
}

fn minus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    crate::lineage::stuck_cutoff(t, d)
}

/// The window of a run: pure.
pub fn sync_window(
    stored: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    initial_lookback: Duration,
    overlap: Duration,
) -> SyncWindow {
    let wanted = stored.unwrap_or_else(|| minus(now, initial_lookback));
    let clamped = wanted > now;
    let watermark = wanted.min(now);
    SyncWindow {
        stored,
        watermark,
        clamped,
        since: minus(watermark, overlap),
    }
}

/// Where the watermark moves after a run whose pages were all fetched: pure.
///
/// The highest cursor seen, held at the earliest cursor of a failed record, never past `now`;
/// `None` when that is not after the stored watermark (it never moves backwards).
pub fn next_watermark(
    stored: Option<DateTime<Utc>>,
    max_cursor: Option<DateTime<Utc>>,
    min_failed_cursor: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut t = max_cursor?;
    if let Some(f) = min_failed_cursor {
        t = t.min(f);
    }
    let t = limits::store_time(t.min(now));
    match stored {
        Some(s) if t <= s => None,
        _ => Some(t),
    }
}

/// Keep one record per key: the greatest cursor, on a tie the later one. Returns the kept
/// records in first-seen key order and how many were dropped: pure.
pub fn dedupe_page<R>(records: Vec<UpstreamRecord<R>>) -> (Vec<UpstreamRecord<R>>, u64) {
    let total = records.len();
    let mut slot: HashMap<String, usize> = HashMap::with_capacity(total);
    let mut kept: Vec<Option<UpstreamRecord<R>>> = Vec::with_capacity(total);
    for r in records {
        match slot.get(&r.key) {
            Some(&i) => {
                let cur = kept[i].as_ref().map(|c| c.cursor);
                if cur.is_none_or(|c| r.cursor >= c) {
                    kept[i] = Some(r);
                }
            }
            None => {
                slot.insert(r.key.clone(), kept.len());
                kept.push(Some(r));
            }
        }
    }
    let kept: Vec<UpstreamRecord<R>> = kept.into_iter().flatten().collect();
    let dropped = (total - kept.len()) as u64;
    (kept, dropped)
}

/// Counters of the [`SyncReconciler`].
pub mod counters {
    use recon_core::Counter;
    /// Records fetched from upstream (duplicates included).
    pub const FETCHED: Counter = Counter::new("fetched");
    /// Pages fetched.
    pub const PAGES: Counter = Counter::new("pages");
    /// Records created locally.
    pub const CREATED: Counter = Counter::new("created");
    /// Records updated locally.
    pub const UPDATED: Counter = Counter::new("updated");
    /// Records whose fingerprint was unchanged (overlap re-reads included).
    pub const UNCHANGED: Counter = Counter::new("unchanged");
    /// Records dropped because the same key came again in the page.
    pub const DUPLICATES: Counter = Counter::new("duplicates");
    /// Records that failed (rejected by the target or invalid).
    pub const ERRORS: Counter = Counter::new("errors");
    /// Local records deleted by the cleanup scope.
    pub const DELETED: Counter = Counter::new("deleted");
    /// Orphans removed by the host's cleanup.
    pub const ORPHANED: Counter = Counter::new("orphaned");
    /// Upstream fetches retried.
    pub const UPSTREAM_RETRIES: Counter = Counter::new("upstream_retries");
}

/// The sync step (see the [module docs](self)). Counters: [`counters`]; detail `watermark`.
pub struct SyncReconciler<R> {
    name: String,
    source: Arc<dyn UpstreamSource<R>>,
    target: Arc<dyn SyncTarget<R>>,
    classifier: Classifier,
    watermarks: Arc<dyn WatermarkStore>,
    orphans: Option<Arc<dyn OrphanCleanup>>,
    settings: SyncSettings,
}

impl<R> fmt::Debug for SyncReconciler<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncReconciler")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Progress {
    max_cursor: Option<DateTime<Utc>>,
    min_failed: Option<DateTime<Utc>>,
    seen_by_group: HashMap<Option<String>, u64>,
}

impl<R: Send + Sync + 'static> SyncReconciler<R> {
    /// A sync step called `name` (kebab-case, e.g. `stays-sync`) with default settings.
    pub fn new(
        name: impl Into<String>,
        source: Arc<dyn UpstreamSource<R>>,
        target: Arc<dyn SyncTarget<R>>,
        fingerprints: Arc<dyn FingerprintStore>,
        watermarks: Arc<dyn WatermarkStore>,
    ) -> Result<Self> {
        let name = name.into();
        let settings = SyncSettings::new(&name);
        let classifier = Classifier::new(fingerprints, settings.namespace.clone())?;
        Ok(Self {
            name,
            source,
            target,
            classifier,
            watermarks,
            orphans: None,
            settings,
        })
    }

    /// Use these settings. Errors: empty names, a page size outside 1..=[`limits::MAX_BATCH`],
    /// zero `max_pages`, or a cleanup scope with an empty group list.
    pub fn with_settings(mut self, settings: SyncSettings) -> Result<Self> {
        limits::check_name("watermark name", &settings.watermark)?;
        limits::check_limit(settings.page_size)
            .map_err(|e| Error::config(format!("page_size: {e}")))?;
        if settings.max_pages == 0 {
            return Err(Error::config("max_pages must be at least 1"));
        }
        if let CleanupScope::Groups(g) = &settings.cleanup {
            if g.is_empty() {
                return Err(Error::config(
                    "CleanupScope::Groups needs at least one group",
                ));
            }
            for name in g {
                limits::check_name("source group", name)?;
            }
        }
        self.classifier =
            Classifier::new(self.classifier.store().clone(), settings.namespace.clone())?;
        self.settings = settings;
        Ok(self)
    }

    /// Run the host's orphan cleanup after the sync.
    #[must_use]
    pub fn with_orphan_cleanup(mut self, cleanup: Arc<dyn OrphanCleanup>) -> Self {
        self.orphans = Some(cleanup);
        self
    }

    /// One page (incremental or snapshot), retried on transient errors per
    /// [`SyncSettings::retry`].
    async fn fetch(
        &self,
        ctx: &RunContext,
        req: &FetchRequest,
        snapshot: bool,
        report: &mut StepReport,
    ) -> Result<UpstreamPage<R>> {
        let mut failures = 0;
        loop {
            let page = if snapshot {
                self.source
                    .fetch_snapshot(
                        ctx,
                        &SnapshotRequest {
                            page_token: req.page_token.clone(),
                            limit: req.limit,
                        },
                    )
                    .await
            } else {
                self.source.fetch(ctx, req).await
            };
            match page {
                Ok(page) => return Ok(page),
                Err(e) if e.is_transient() => {
                    failures += 1;
                    let Some(delay) = self.settings.retry.delay(failures) else {
                        return Err(e);
                    };
                    tracing::warn!(error = %e, ?delay, "upstream fetch failed; retrying");
                    report.add(counters::UPSTREAM_RETRIES, 1);
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn apply_page(
        &self,
        ctx: &RunContext,
        records: Vec<UpstreamRecord<R>>,
        report: &mut StepReport,
        progress: &mut Progress,
    ) -> Result<()> {
        report.add(counters::FETCHED, records.len() as u64);
        let mut valid = Vec::with_capacity(records.len());
        for r in records {
            let check = limits::check_key(&r.key).and_then(|()| match &r.group {
                Some(g) => limits::check_name("source group", g),
                None => Ok(()),
            });
            match check {
                Ok(()) => valid.push(r),
                Err(e) => {
                    // Invalid forever: not held in the watermark (retrying cannot help).
                    report.add(counters::ERRORS, 1);
                    report.push_error(r.key.chars().take(64).collect::<String>(), e.to_string());
                }
            }
        }
        for r in &valid {
            progress.max_cursor = progress.max_cursor.max(Some(r.cursor));
        }
        let (records, dropped) = dedupe_page(valid);
        report.add(counters::DUPLICATES, dropped);
        let incoming: Vec<Incoming> = records
            .iter()
            .map(|r| Incoming::new(r.key.clone(), r.fingerprint))
            .collect();
        let classes = self.classifier.classify(&incoming).await?;
        let mut changes = Vec::new();
        let mut seen = Vec::new();
        for (r, action) in records.into_iter().zip(classes.actions) {
            *progress.seen_by_group.entry(r.group.clone()).or_default() += 1;
            let kind = match action {
                Action::Create => ChangeKind::Create,
                Action::Update { previous } => ChangeKind::Update { previous },
                Action::Unchanged | Action::Superseded => {
                    report.add(counters::UNCHANGED, 1);
                    seen.push(r.key);
                    continue;
                }
            };
            changes.push(Change { kind, record: r });
        }
        if ctx.is_dry_run() {
            for c in &changes {
                match c.kind {
                    ChangeKind::Create => report.add(counters::CREATED, 1),
                    ChangeKind::Update { .. } => report.add(counters::UPDATED, 1),
                };
            }
            return Ok(());
        }
        let results = if changes.is_empty() {
            Vec::new()
        } else {
            self.target.apply(ctx, &changes).await?
        };
        if results.len() != changes.len() {
            return Err(Error::permanent(
                "sync target",
                format!(
                    "apply returned {} results for {} changes",
                    results.len(),
                    changes.len()
                ),
            ));
        }
        let mut upserts = Vec::with_capacity(changes.len());
        for (c, res) in changes.into_iter().zip(results) {
            match res {
                Ok(()) => {
                    report.add(
                        match c.kind {
                            ChangeKind::Create => counters::CREATED,
                            ChangeKind::Update { .. } => counters::UPDATED,
                        },
                        1,
                    );
                    upserts.push(FingerprintEntry {
                        key: c.record.key,
                        fingerprint: c.record.fingerprint,
                        group: c.record.group,
                    });
                }
                Err(reason) => {
                    report.add(counters::ERRORS, 1);
                    report.push_error(c.record.key.clone(), reason);
                    let cursor = c.record.cursor;
                    progress.min_failed =
                        Some(progress.min_failed.map_or(cursor, |m| m.min(cursor)));
                    seen.push(c.record.key);
                }
            }
        }
        if !upserts.is_empty() || !seen.is_empty() {
            self.classifier
                .store()
                .record(
                    self.classifier.namespace(),
                    &RecordBatch {
                        run: ctx.run_id().to_string(),
                        at: ctx.now(),
                        upserts,
                        seen,
                    },
                )
                .await?;
        }
        Ok(())
    }

    async fn cleanup(
        &self,
        ctx: &RunContext,
        report: &mut StepReport,
        progress: &Progress,
    ) -> Result<()> {
        let groups: Vec<Option<String>> = match &self.settings.cleanup {
            CleanupScope::None => return Ok(()),
            CleanupScope::Full => vec![None],
            CleanupScope::Groups(g) => g.iter().cloned().map(Some).collect(),
        };
        if ctx.is_dry_run() {
            report.note("dry run: records missing from the snapshot were not looked for");
            return Ok(());
        }
        let store = self.classifier.store();
        let ns = self.classifier.namespace();
        for group in groups {
            let seen: u64 = match &group {
                None => progress.seen_by_group.values().sum(),
                Some(_) => progress.seen_by_group.get(&group).copied().unwrap_or(0),
            };
            if !cleanup_allowed(seen, self.settings.allow_empty_cleanup) {
                report.note(format!(
                    "cleanup of {} skipped: the run saw no record there (an empty snapshot \
                     is more likely an upstream problem; set allow_empty_cleanup to delete)",
                    group
                        .as_deref()
                        .map_or("the whole source".to_owned(), |g| format!("group `{g}`"))
                ));
                continue;
            }
            let mut after = None;
            loop {
                let page = store
                    .unseen(
                        ns,
                        &UnseenQuery {
                            run: ctx.run_id().to_string(),
                            group: group.clone(),
                            after: after.take(),
                            limit: self.settings.page_size,
                        },
                    )
                    .await?;
                let full = page.len() == self.settings.page_size;
                after = page.last().map(|r| r.key.clone());
                if page.is_empty() {
                    break;
                }
                // A row stamped by a run that started after this one (a concurrent run saw
                // it upstream) is not this run's to judge.
                let keys: Vec<String> = page
                    .into_iter()
                    .filter(|r| r.seen_at.is_none_or(|t| t < limits::store_time(ctx.now())))
                    .map(|r| r.key)
                    .collect();
                if keys.is_empty() {
                    if !full {
                        break;
                    }
                    continue;
                }
                let results = self.target.delete(ctx, &keys).await?;
                if results.len() != keys.len() {
                    return Err(Error::permanent(
                        "sync target",
                        format!(
                            "delete returned {} results for {} keys",
                            results.len(),
                            keys.len()
                        ),
                    ));
                }
                let mut gone = Vec::new();
                for (k, res) in keys.into_iter().zip(results) {
                    match res {
                        Ok(()) => gone.push(k),
                        Err(reason) => {
                            report.add(counters::ERRORS, 1);
                            report.push_error(k, format!("delete: {reason}"));
                        }
                    }
                }
                if !gone.is_empty() {
                    store.remove(ns, &gone).await?;
                    report.add(counters::DELETED, gone.len() as u64);
                    ctx.checkpoint(report);
                }
                if !full {
                    break;
                }
            }
        }
        Ok(())
    }

    async fn run(&self, ctx: &RunContext, report: &mut StepReport) -> Result<()> {
        let now = ctx.now();
        let stored = self.watermarks.get(&self.settings.watermark).await?;
        let window = sync_window(
            stored,
            now,
            self.settings.initial_lookback,
            self.settings.overlap,
        );
        if window.clamped {
            report.note(format!(
                "watermark {} is in the future; clamped to now ({})",
                stored.map(|t| t.to_rfc3339()).unwrap_or_default(),
                now.to_rfc3339()
            ));
        }
        let snapshot = self.settings.cleanup != CleanupScope::None;
        let mut progress = Progress::default();
        let mut token = None;
        let mut pages = 0usize;
        let mut complete = false;
        while pages < self.settings.max_pages {
            if ctx.deadline_passed() {
                report.note("deadline reached before the last page; the watermark stays");
                break;
            }
            let req = FetchRequest {
                since: window.since,
                page_token: token.take(),
                limit: self.settings.page_size,
            };
            let page = self.fetch(ctx, &req, snapshot, report).await?;
            pages += 1;
            report.add(counters::PAGES, 1);
            self.apply_page(ctx, page.records, report, &mut progress)
                .await?;
            ctx.report_progress(report.count(counters::FETCHED), None);
            // (the page is written: a run that stops later still reports it)
            ctx.checkpoint(report);
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => {
                    complete = true;
                    break;
                }
            }
        }
        if !complete && pages >= self.settings.max_pages {
            report.note(format!(
                "stopped after max_pages ({}); the watermark stays and the next run continues",
                self.settings.max_pages
            ));
        }
        if complete && snapshot {
            if report.item_error_count() == 0 {
                self.cleanup(ctx, report, &progress).await?;
            } else {
                report.note(
                    "cleanup skipped: records of the snapshot failed, so the run did not \
                     succeed; nothing was deleted (the next complete snapshot cleans up)",
                );
            }
        } else if snapshot {
            report.note("cleanup skipped: the snapshot is incomplete; nothing was deleted");
        }
        if let Some(orphans) = &self.orphans {
            if ctx.is_dry_run() {
                report.note("dry run: orphan cleanup not run");
            } else {
                match orphans.cleanup(ctx).await {
                    Ok(n) => {
                        report.add(counters::ORPHANED, n);
                        ctx.checkpoint(report);
                    }
                    Err(e) => {
                        // The sync results stand; the next run retries the cleanup.
                        report.add(counters::ERRORS, 1);
                        report.push_error("orphan-cleanup", e.to_string());
                        report.note(
                            "orphan cleanup failed; sync results stand, the next run retries it",
                        );
                    }
                }
            }
        }
        let advance = if complete && !ctx.is_dry_run() {
            next_watermark(stored, progress.max_cursor, progress.min_failed, now)
        } else {
            None
        };
        if let Some(to) = advance {
            self.watermarks
                .advance(&self.settings.watermark, to)
                .await?;
        }
        report.detail(
            "watermark",
            serde_json::json!({
                "stored": stored,
                "since": window.since,
                "advancedTo": advance,
                "earliestFailedCursor": progress.min_failed,
                "snapshot": snapshot,
            }),
        );
        Ok(())
    }
}

#[async_trait]
impl<R: Send + Sync + 'static> Reconciler for SyncReconciler<R> {
    fn name(&self) -> &str {
        &self.name
    }

    #[tracing::instrument(skip_all, fields(step = %self.name), err)]
    async fn reconcile(&self, ctx: &RunContext) -> recon_core::Result<StepReport> {
        let mut report = StepReport::new(&self.name);
        for c in [
            counters::FETCHED,
            counters::CREATED,
            counters::UPDATED,
            counters::UNCHANGED,
            counters::ERRORS,
        ] {
            report.add(c, 0);
        }
        self.run(ctx, &mut report).await?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
