use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use chrono::{Duration as CDuration, NaiveDate};
use recon_core::{MemoryWatermarkStore, RunStatus, Runner};

use super::*;
use crate::Schema;
use crate::memory::MemoryFingerprintStore;

#[derive(Clone, Debug, PartialEq)]
struct Res {
    guest: String,
    status: String,
    check_in: NaiveDate,
    check_out: NaiveDate,
}

fn now() -> DateTime<Utc> {
    "2024-02-01T10:30:00Z".parse().unwrap()
}

fn schema() -> Schema {
    Schema::new(
        "reservation",
        ["id", "guest_name", "status", "check_in", "check_out"],
    )
    .unwrap()
}

fn rec(key: &str, cursor: DateTime<Utc>, guest: &str, status: &str) -> UpstreamRecord<Res> {
    let data = Res {
        guest: guest.into(),
        status: status.into(),
        check_in: NaiveDate::from_ymd_opt(2024, 2, 5).unwrap(),
        check_out: NaiveDate::from_ymd_opt(2024, 2, 8).unwrap(),
    };
    let fingerprint = schema()
        .fingerprint(&[
            key.into(),
            data.guest.as_str().into(),
            data.status.as_str().into(),
            data.check_in.into(),
            data.check_out.into(),
        ])
        .unwrap();
    UpstreamRecord {
        key: key.into(),
        cursor,
        fingerprint,
        group: Some("acc-1".into()),
        data,
    }
}

/// The Stays API: a change feed filtered by `since`, paged by offset tokens, with outages; it
/// can also list a full snapshot (every record, same paging).
#[derive(Default)]
struct FakeUpstream {
    records: Mutex<Vec<UpstreamRecord<Res>>>,
    fail_next: Mutex<u32>,
    permanent: Mutex<bool>,
    /// Every fetch of a page at or after this offset fails (an outage mid-pagination).
    down_from_offset: Mutex<Option<usize>>,
    requests: Mutex<Vec<(FetchRequest, tokio::time::Instant)>>,
    snapshot_requests: Mutex<Vec<SnapshotRequest>>,
    /// Return pages in this exact shape instead (for duplicate tests).
    raw_pages: Mutex<Option<Vec<Vec<UpstreamRecord<Res>>>>>,
}

impl FakeUpstream {
    fn set(&self, records: Vec<UpstreamRecord<Res>>) {
        *self.records.lock().unwrap() = records;
    }

    fn page(
        &self,
        since: Option<DateTime<Utc>>,
        token: Option<&str>,
        limit: usize,
    ) -> Result<UpstreamPage<Res>> {
        let offset: usize = token.map_or(0, |t| t.parse().unwrap());
        let down = self
            .down_from_offset
            .lock()
            .unwrap()
            .is_some_and(|o| offset >= o);
        {
            let mut fail = self.fail_next.lock().unwrap();
            if *fail > 0 || down {
                *fail = fail.saturating_sub(1);
                let io =
                    std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Stays API down");
                return Err(if *self.permanent.lock().unwrap() {
                    Error::permanent("fetch reservations", io)
                } else {
                    Error::transient("fetch reservations", io)
                });
            }
        }
        if let Some(pages) = &*self.raw_pages.lock().unwrap() {
            let next = (offset + 1 < pages.len()).then(|| (offset + 1).to_string());
            return Ok(UpstreamPage {
                records: pages[offset].clone(),
                next_page_token: next,
            });
        }
        let mut all: Vec<UpstreamRecord<Res>> = self
            .records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| since.is_none_or(|s| r.cursor >= s))
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.cursor, &a.key).cmp(&(b.cursor, &b.key)));
        let page: Vec<_> = all.iter().skip(offset).take(limit).cloned().collect();
        let next = (offset + limit < all.len()).then(|| (offset + limit).to_string());
        Ok(UpstreamPage {
            records: page,
            next_page_token: next,
        })
    }
}

#[async_trait]
impl UpstreamSource<Res> for FakeUpstream {
    async fn fetch(&self, _ctx: &RunContext, req: &FetchRequest) -> Result<UpstreamPage<Res>> {
        self.requests
            .lock()
            .unwrap()
            .push((req.clone(), tokio::time::Instant::now()));
        self.page(Some(req.since), req.page_token.as_deref(), req.limit)
    }

    async fn fetch_snapshot(
        &self,
        _ctx: &RunContext,
        req: &SnapshotRequest,
    ) -> Result<UpstreamPage<Res>> {
        self.snapshot_requests.lock().unwrap().push(req.clone());
        self.page(None, req.page_token.as_deref(), req.limit)
    }
}

/// A change feed that cannot list a snapshot (keeps the default `fetch_snapshot`).
struct FeedOnly(Arc<FakeUpstream>);

#[async_trait]
impl UpstreamSource<Res> for FeedOnly {
    async fn fetch(&self, ctx: &RunContext, req: &FetchRequest) -> Result<UpstreamPage<Res>> {
        self.0.fetch(ctx, req).await
    }
}

/// The local reservations table and PIN job queue.
#[derive(Default)]
struct FakeLocal {
    rows: Mutex<BTreeMap<String, Res>>,
    jobs: Mutex<Vec<(String, String, NaiveDate)>>,
    reject: Mutex<HashSet<String>>,
    applies: Mutex<usize>,
    deleted: Mutex<Vec<String>>,
}

#[async_trait]
impl SyncTarget<Res> for FakeLocal {
    async fn apply(&self, _ctx: &RunContext, changes: &[Change<Res>]) -> Result<Vec<ItemResult>> {
        *self.applies.lock().unwrap() += 1;
        let reject = self.reject.lock().unwrap().clone();
        let mut rows = self.rows.lock().unwrap();
        let mut jobs = self.jobs.lock().unwrap();
        Ok(changes
            .iter()
            .map(|c| {
                let r = &c.record;
                if reject.contains(&r.key) {
                    return Err("lock not found for accommodation acc-1".to_owned());
                }
                let before = rows.insert(r.key.clone(), r.data.clone());
                let schedule = match c.kind {
                    ChangeKind::Create => true,
                    ChangeKind::Update { .. } => {
                        r.data.status == "confirmed"
                            && before.is_some_and(|b| b.status != "confirmed")
                    }
                };
                if schedule {
                    jobs.push(("generatePin".into(), r.key.clone(), r.data.check_in));
                    jobs.push(("revokePin".into(), r.key.clone(), r.data.check_out));
                }
                Ok(())
            })
            .collect())
    }

    async fn delete(&self, _ctx: &RunContext, keys: &[String]) -> Result<Vec<ItemResult>> {
        let mut rows = self.rows.lock().unwrap();
        self.deleted.lock().unwrap().extend(keys.iter().cloned());
        Ok(keys
            .iter()
            .map(|k| {
                rows.remove(k);
                Ok(())
            })
            .collect())
    }
}

struct World {
    upstream: Arc<FakeUpstream>,
    local: Arc<FakeLocal>,
    fps: Arc<MemoryFingerprintStore>,
    marks: Arc<MemoryWatermarkStore>,
}

impl World {
    fn new() -> Self {
        Self {
            upstream: Arc::default(),
            local: Arc::default(),
            fps: Arc::default(),
            marks: Arc::default(),
        }
    }

    fn sync(&self) -> SyncReconciler<Res> {
        self.sync_with(SyncSettings::new("stays-sync"))
    }

    fn sync_with(&self, settings: SyncSettings) -> SyncReconciler<Res> {
        SyncReconciler::new(
            "stays-sync",
            self.upstream.clone(),
            self.local.clone(),
            self.fps.clone(),
            self.marks.clone(),
        )
        .unwrap()
        .with_settings(settings)
        .unwrap()
    }

    async fn mark(&self) -> Option<DateTime<Utc>> {
        self.marks.get("stays-sync").await.unwrap()
    }
}

fn at(min: i64) -> DateTime<Utc> {
    now() + CDuration::minutes(min)
}

#[tokio::test(start_paused = true)]
async fn scenario_b_first_run_then_overlap_absorbs_boundary_and_late_rows() {
    let w = World::new();
    w.upstream.set(vec![
        rec("stay-123", at(-25), "John Doe", "confirmed"),
        rec("stay-456", at(-20), "Ana Lima", "pending"),
        rec("stay-789", at(-10), "Bo Chen", "pending"),
        rec("stay-old", at(-3 * 24 * 60), "Too Old", "confirmed"),
    ]);
    let sync = w.sync();
    let r1 = sync.reconcile(&RunContext::new(now())).await.unwrap();
    // First run: since = now − 24 h − 5 min, so stay-old is not fetched.
    let first_since = w.upstream.requests.lock().unwrap()[0].0.since;
    assert_eq!(
        first_since,
        now() - CDuration::hours(24) - CDuration::minutes(5)
    );
    assert_eq!(
        (
            r1.count(counters::FETCHED),
            r1.count(counters::CREATED),
            r1.count(counters::UPDATED)
        ),
        (3, 3, 0)
    );
    assert_eq!(
        w.local.jobs.lock().unwrap().len(),
        6,
        "two PIN jobs per new reservation"
    );
    assert_eq!(w.mark().await, Some(at(-10)), "highest cursor seen");

    // 30 minutes later. stay-789 is re-read because its cursor equals the watermark;
    // stay-late was committed late with a cursor 2 minutes before the watermark; stay-456
    // was confirmed.
    w.upstream.set(vec![
        rec("stay-123", at(-25), "John Doe", "confirmed"),
        rec("stay-456", at(15), "Ana Lima", "confirmed"),
        rec("stay-789", at(-10), "Bo Chen", "pending"),
        rec("stay-late", at(-12), "Late Row", "confirmed"),
    ]);
    let r2 = sync.reconcile(&RunContext::new(at(30))).await.unwrap();
    let since2 = w.upstream.requests.lock().unwrap()[1].0.since;
    assert_eq!(since2, at(-15), "watermark − 5 min overlap");
    assert_eq!(
        r2.count(counters::FETCHED),
        3,
        "stay-456, stay-789 (boundary), stay-late"
    );
    assert_eq!(r2.count(counters::CREATED), 1, "the late row is not missed");
    assert_eq!(r2.count(counters::UPDATED), 1, "stay-456 confirmed");
    assert_eq!(
        r2.count(counters::UNCHANGED),
        1,
        "the overlap re-read costs no work"
    );
    assert_eq!(r2.item_error_count(), 0);
    let jobs = w.local.jobs.lock().unwrap().clone();
    assert_eq!(
        jobs.len(),
        10,
        "late row: 2 jobs; confirmation: 2 rescheduled; none for 789"
    );
    assert_eq!(jobs.iter().filter(|j| j.1 == "stay-789").count(), 2);
    assert_eq!(w.mark().await, Some(at(15)));

    // Third run with nothing new: all unchanged, nothing applied, watermark stays.
    let applies = *w.local.applies.lock().unwrap();
    let r3 = sync.reconcile(&RunContext::new(at(60))).await.unwrap();
    assert_eq!(r3.count(counters::UNCHANGED), r3.count(counters::FETCHED));
    assert_eq!(
        *w.local.applies.lock().unwrap(),
        applies,
        "no apply call at all"
    );
    assert_eq!(w.mark().await, Some(at(15)));
}

#[tokio::test(start_paused = true)]
async fn upstream_outage_is_retried_2_4_8_then_fails_the_run_transiently() {
    let w = World::new();
    w.upstream
        .set(vec![rec("stay-1", at(-5), "A", "confirmed")]);
    w.marks.advance("stays-sync", at(-60)).await.unwrap();
    *w.upstream.fail_next.lock().unwrap() = 4;
    let runner = Runner::builder("upstream-sync")
        .required_step(w.sync())
        .build()
        .unwrap();
    let report = runner.run().await;
    assert_eq!(report.status, RunStatus::Failed);
    let step = report.step("stays-sync").unwrap();
    assert!(step.error.as_ref().unwrap().transient, "{:?}", step.error);
    assert_eq!(w.mark().await, Some(at(-60)), "watermark unchanged");
    let times: Vec<tokio::time::Instant> = w
        .upstream
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.1)
        .collect();
    let gaps: Vec<u64> = times.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    assert_eq!(gaps, [2, 4, 8], "backoff inside the step");
    assert!(w.local.rows.lock().unwrap().is_empty());

    // A shorter outage is absorbed by the retries.
    *w.upstream.fail_next.lock().unwrap() = 2;
    let r = w.sync().reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(r.count(counters::UPSTREAM_RETRIES), 2);
    assert_eq!(r.count(counters::CREATED), 1);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_upstream_error_is_not_retried() {
    let w = World::new();
    *w.upstream.fail_next.lock().unwrap() = 1;
    *w.upstream.permanent.lock().unwrap() = true;
    let err = w
        .sync()
        .reconcile(&RunContext::new(now()))
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(w.upstream.requests.lock().unwrap().len(), 1);
    assert_eq!(w.mark().await, None);
}

#[tokio::test]
async fn one_failing_record_makes_the_run_partial_and_is_fetched_again() {
    let w = World::new();
    w.upstream.set(vec![
        rec("stay-1", at(-30), "A", "confirmed"),
        rec("stay-2", at(-20), "B", "confirmed"),
        rec("stay-3", at(-10), "C", "confirmed"),
    ]);
    w.local.reject.lock().unwrap().insert("stay-2".into());
    let runner = Runner::builder("upstream-sync")
        .time_source(Arc::new(recon_core::ManualClock::at(now())))
        .required_step(w.sync())
        .build()
        .unwrap();
    let report = runner.run().await;
    assert_eq!(report.status, RunStatus::Partial);
    let step = &report.step("stays-sync").unwrap().report;
    assert_eq!(step.count(counters::CREATED), 2);
    assert_eq!(step.count(counters::ERRORS), 1);
    assert_eq!(step.item_errors()[0].key, "stay-2");
    assert_eq!(
        w.mark().await,
        Some(at(-20)),
        "held at the failed record's cursor, not at the highest (−10)"
    );
    // Fixed: the next run re-reads it (and the others, unchanged) and applies it.
    w.local.reject.lock().unwrap().clear();
    let r = w.sync().reconcile(&RunContext::new(at(30))).await.unwrap();
    assert_eq!(r.count(counters::CREATED), 1);
    assert_eq!(
        r.count(counters::UNCHANGED),
        1,
        "stay-3; stay-1 is before the window"
    );
    assert_eq!(w.mark().await, Some(at(-10)));
    assert_eq!(w.local.rows.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn duplicate_keys_in_a_page_keep_the_latest_cursor_then_the_last() {
    let w = World::new();
    *w.upstream.raw_pages.lock().unwrap() = Some(vec![vec![
        rec("stay-1", at(-10), "newest", "confirmed"),
        rec("stay-1", at(-20), "older", "confirmed"),
        rec("stay-2", at(-5), "first of a tie", "pending"),
        rec("stay-2", at(-5), "last of a tie", "pending"),
    ]]);
    let r = w.sync().reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(r.count(counters::FETCHED), 4);
    assert_eq!(r.count(counters::DUPLICATES), 2);
    assert_eq!(r.count(counters::CREATED), 2);
    let rows = w.local.rows.lock().unwrap().clone();
    assert_eq!(rows["stay-1"].guest, "newest");
    assert_eq!(rows["stay-2"].guest, "last of a tie");
}

#[test]
fn dedupe_is_deterministic() {
    let (kept, dropped) = dedupe_page(vec![
        rec("a", at(1), "x", "s"),
        rec("b", at(1), "x", "s"),
        rec("a", at(0), "y", "s"),
        rec("a", at(1), "z", "s"),
    ]);
    assert_eq!(dropped, 2);
    let got: Vec<(&str, &str)> = kept
        .iter()
        .map(|r| (r.key.as_str(), r.data.guest.as_str()))
        .collect();
    assert_eq!(got, [("a", "z"), ("b", "x")]);
}

#[tokio::test]
async fn a_watermark_in_the_future_is_clamped_and_never_moved_backwards() {
    let w = World::new();
    w.marks.advance("stays-sync", at(120)).await.unwrap();
    w.upstream
        .set(vec![rec("stay-1", at(-1), "A", "confirmed")]);
    let r = w.sync().reconcile(&RunContext::new(now())).await.unwrap();
    assert!(
        r.notes().iter().any(|n| n.contains("in the future")),
        "{:?}",
        r.notes()
    );
    assert_eq!(w.upstream.requests.lock().unwrap()[0].0.since, at(-5));
    assert_eq!(r.count(counters::CREATED), 1);
    assert_eq!(w.mark().await, Some(at(120)), "not moved backwards");
}

#[test]
fn window_and_watermark_rules_are_pure() {
    let d = |m: u64| Duration::from_secs(m * 60);
    let w = sync_window(None, now(), d(24 * 60), d(5));
    assert_eq!(w.watermark, now() - CDuration::hours(24));
    assert_eq!(
        w.since,
        now() - CDuration::hours(24) - CDuration::minutes(5)
    );
    assert!(!w.clamped);
    let w = sync_window(Some(at(10)), now(), d(60), d(5));
    assert!(w.clamped);
    assert_eq!((w.watermark, w.since), (now(), at(-5)));
    // next_watermark: highest cursor, held at the earliest failure, never past now, never back.
    assert_eq!(
        next_watermark(None, Some(at(-1)), None, now()),
        Some(at(-1))
    );
    assert_eq!(
        next_watermark(Some(at(-5)), Some(at(-1)), Some(at(-3)), now()),
        Some(at(-3))
    );
    assert_eq!(
        next_watermark(Some(at(-5)), Some(at(-1)), Some(at(-9)), now()),
        None
    );
    assert_eq!(
        next_watermark(Some(at(-5)), Some(at(30)), None, now()),
        Some(now())
    );
    assert_eq!(
        next_watermark(Some(at(-5)), Some(at(-5)), None, now()),
        None
    );
    assert_eq!(next_watermark(Some(at(-5)), None, None, now()), None);
    let r = UpstreamRetry::default();
    assert_eq!(
        (1..=4).map(|n| r.delay(n)).collect::<Vec<_>>(),
        [
            Some(d(0) + Duration::from_secs(2)),
            Some(Duration::from_secs(4)),
            Some(Duration::from_secs(8)),
            None
        ]
    );
    assert_eq!(UpstreamRetry::none().delay(1), None);
}

#[tokio::test]
async fn dry_run_applies_nothing_and_keeps_the_watermark() {
    let w = World::new();
    w.upstream
        .set(vec![rec("stay-1", at(-1), "A", "confirmed")]);
    let mut target = MockSyncTarget::<Res>::new();
    target.expect_apply().never();
    let sync = SyncReconciler::new(
        "stays-sync",
        w.upstream.clone(),
        Arc::new(target),
        w.fps.clone(),
        w.marks.clone(),
    )
    .unwrap();
    let r = sync
        .reconcile(&RunContext::new(now()).with_dry_run(true))
        .await
        .unwrap();
    assert_eq!(
        r.count(counters::CREATED),
        1,
        "what would have been created"
    );
    assert_eq!(w.mark().await, None);
    assert!(
        w.fps
            .lookup("stays-sync", &["stay-1".into()])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn pages_are_followed_and_a_page_cap_keeps_the_watermark() {
    let w = World::new();
    w.upstream.set(
        (0..7)
            .map(|i| rec(&format!("stay-{i}"), at(-20 + i), "G", "confirmed"))
            .collect(),
    );
    let capped = w.sync_with(SyncSettings::new("stays-sync").page_size(3).max_pages(2));
    let r = capped.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(
        (r.count(counters::PAGES), r.count(counters::CREATED)),
        (2, 6)
    );
    assert_eq!(
        w.mark().await,
        None,
        "an incomplete fetch never advances the watermark"
    );
    let full = w.sync_with(SyncSettings::new("stays-sync").page_size(3));
    let r = full.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(r.count(counters::PAGES), 3);
    assert_eq!(
        (r.count(counters::CREATED), r.count(counters::UNCHANGED)),
        (1, 6)
    );
    assert_eq!(w.mark().await, Some(at(-14)));
}

#[tokio::test]
async fn full_snapshot_cleanup_deletes_unseen_records_and_refuses_an_empty_snapshot() {
    let w = World::new();
    let settings = SyncSettings::new("stays-sync")
        .page_size(2)
        .cleanup(CleanupScope::Full, false);
    // stay-0 has not changed for a week: outside any incremental window, but in the snapshot.
    w.upstream.set(
        (0..5)
            .map(|i| {
                let cursor = if i == 0 { at(-7 * 24 * 60) } else { at(-10) };
                rec(&format!("stay-{i}"), cursor, "G", "confirmed")
            })
            .collect(),
    );
    let sync = w.sync_with(settings);
    sync.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(w.local.rows.lock().unwrap().len(), 5);
    assert!(
        w.upstream.requests.lock().unwrap().is_empty(),
        "a cleanup scope reads snapshots, never the change feed"
    );
    // stay-1 and stay-3 vanished upstream.
    w.upstream.set(
        [0, 2, 4]
            .iter()
            .map(|i| rec(&format!("stay-{i}"), at(-10), "G", "confirmed"))
            .collect(),
    );
    let r = sync.reconcile(&RunContext::new(at(30))).await.unwrap();
    assert_eq!(r.count(counters::DELETED), 2);
    assert_eq!(*w.local.deleted.lock().unwrap(), ["stay-1", "stay-3"]);
    assert_eq!(w.local.rows.lock().unwrap().len(), 3);
    assert_eq!(w.mark().await, Some(at(-10)));
    // An empty snapshot deletes nothing.
    w.upstream.set(vec![]);
    let r = sync.reconcile(&RunContext::new(at(60))).await.unwrap();
    assert_eq!(r.count(counters::DELETED), 0);
    assert!(r.notes().iter().any(|n| n.contains("skipped")));
    assert_eq!(w.local.rows.lock().unwrap().len(), 3);
}

/// Five reservations synced, then stay-1 and stay-3 vanish upstream: the world every
/// "must not delete" case below starts from.
async fn five_synced_then_two_vanish(w: &World) {
    w.upstream.set(
        (0..5)
            .map(|i| rec(&format!("stay-{i}"), at(-100 + i), "G", "confirmed"))
            .collect(),
    );
    w.sync_with(SyncSettings::new("stays-sync").page_size(2))
        .reconcile(&RunContext::new(now()))
        .await
        .unwrap();
    assert_eq!(w.local.rows.lock().unwrap().len(), 5);
    assert_eq!(w.mark().await, Some(at(-96)));
    w.upstream.set(
        [0, 2, 4]
            .iter()
            .map(|i| rec(&format!("stay-{i}"), at(-100 + i), "G", "confirmed"))
            .collect(),
    );
}

#[tokio::test(start_paused = true)]
async fn an_outage_mid_snapshot_deletes_nothing_and_keeps_the_watermark() {
    let w = World::new();
    five_synced_then_two_vanish(&w).await;
    // The first page (stay-0, stay-2) arrives, then the upstream goes down for good.
    *w.upstream.down_from_offset.lock().unwrap() = Some(2);
    let sync = w.sync_with(
        SyncSettings::new("stays-sync")
            .page_size(2)
            .cleanup(CleanupScope::Full, false),
    );
    let err = sync.reconcile(&RunContext::new(at(30))).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        w.local.deleted.lock().unwrap().is_empty(),
        "nothing deleted"
    );
    assert_eq!(w.local.rows.lock().unwrap().len(), 5);
    assert_eq!(w.mark().await, Some(at(-96)), "watermark unchanged");
    assert_eq!(
        w.fps
            .lookup("stays-sync", &["stay-1".into(), "stay-3".into()])
            .await
            .unwrap()
            .len(),
        2,
        "their fingerprints stay too"
    );
    // Back up: the complete snapshot deletes them.
    *w.upstream.down_from_offset.lock().unwrap() = None;
    let r = sync.reconcile(&RunContext::new(at(60))).await.unwrap();
    assert_eq!(r.count(counters::DELETED), 2);
    assert_eq!(*w.local.deleted.lock().unwrap(), ["stay-1", "stay-3"]);
}

#[tokio::test]
async fn a_partial_snapshot_or_a_failed_record_deletes_nothing() {
    let w = World::new();
    five_synced_then_two_vanish(&w).await;
    // Stopped by max_pages after the first page: incomplete.
    let capped = w.sync_with(
        SyncSettings::new("stays-sync")
            .page_size(2)
            .max_pages(1)
            .cleanup(CleanupScope::Full, false),
    );
    let r = capped.reconcile(&RunContext::new(at(30))).await.unwrap();
    assert_eq!(r.count(counters::DELETED), 0);
    assert!(
        r.notes().iter().any(|n| n.contains("incomplete")),
        "{:?}",
        r.notes()
    );
    // Complete, but one record of it failed: the run did not succeed.
    w.upstream.records.lock().unwrap().extend([
        rec("stay-9", at(-50), "Rejected", "confirmed"),
        rec("stay-8", at(-1), "Applied", "confirmed"),
    ]);
    w.local.reject.lock().unwrap().insert("stay-9".into());
    let full = w.sync_with(
        SyncSettings::new("stays-sync")
            .page_size(2)
            .cleanup(CleanupScope::Groups(vec!["acc-1".into()]), false),
    );
    let r = full.reconcile(&RunContext::new(at(30))).await.unwrap();
    assert_eq!(
        (r.count(counters::CREATED), r.count(counters::ERRORS)),
        (1, 1)
    );
    assert_eq!(r.count(counters::DELETED), 0);
    assert!(
        r.notes().iter().any(|n| n.contains("did not succeed")),
        "{:?}",
        r.notes()
    );
    assert!(w.local.deleted.lock().unwrap().is_empty());
    assert_eq!(w.local.rows.lock().unwrap().len(), 6, "five and stay-8");
    assert_eq!(w.mark().await, Some(at(-50)), "held at the failed record");
    // Fixed: the next complete snapshot applies stay-9 and deletes the two vanished ones.
    w.local.reject.lock().unwrap().clear();
    let r = full.reconcile(&RunContext::new(at(60))).await.unwrap();
    assert_eq!(
        (r.count(counters::CREATED), r.count(counters::DELETED)),
        (1, 2)
    );
    assert_eq!(*w.local.deleted.lock().unwrap(), ["stay-1", "stay-3"]);
    assert_eq!(w.local.rows.lock().unwrap().len(), 5);
    assert_eq!(w.mark().await, Some(at(-1)));
}

#[tokio::test]
async fn incremental_runs_never_delete_and_a_feed_without_snapshots_refuses_cleanup() {
    let w = World::new();
    five_synced_then_two_vanish(&w).await;
    let mut target = MockSyncTarget::<Res>::new();
    target.expect_delete().never();
    target
        .expect_apply()
        .returning(|_, c| Ok(vec![Ok(()); c.len()]));
    let target = Arc::new(target);
    let incremental = SyncReconciler::new(
        "stays-sync",
        w.upstream.clone(),
        target.clone(),
        w.fps.clone(),
        w.marks.clone(),
    )
    .unwrap();
    let r = incremental
        .reconcile(&RunContext::new(at(30)))
        .await
        .unwrap();
    assert_eq!(r.count(counters::DELETED), 0);
    assert_eq!(
        w.fps
            .lookup("stays-sync", &["stay-1".into()])
            .await
            .unwrap()
            .len(),
        1
    );
    // A change feed that cannot list a snapshot, with a cleanup scope: refused before anything
    // is read, applied or deleted.
    let refused = SyncReconciler::new(
        "stays-sync",
        Arc::new(FeedOnly(w.upstream.clone())),
        target,
        w.fps.clone(),
        w.marks.clone(),
    )
    .unwrap()
    .with_settings(SyncSettings::new("stays-sync").cleanup(CleanupScope::Full, true))
    .unwrap();
    let err = refused
        .reconcile(&RunContext::new(at(60)))
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    assert!(err.to_string().contains("fetch_snapshot"), "{err}");
    assert_eq!(w.mark().await, Some(at(-96)));
    assert_eq!(w.local.rows.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn orphan_cleanup_failure_keeps_the_sync_results_and_is_partial() {
    let w = World::new();
    w.upstream
        .set(vec![rec("stay-1", at(-1), "A", "confirmed")]);
    let mut orphans = MockOrphanCleanup::new();
    orphans.expect_cleanup().times(1).returning(|_| {
        Err(Error::transient(
            "remove orphaned PIN jobs",
            std::io::Error::other("redis down"),
        ))
    });
    let sync = w.sync().with_orphan_cleanup(Arc::new(orphans));
    let r = sync.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(r.count(counters::CREATED), 1);
    assert_eq!(r.count(counters::ERRORS), 1);
    assert_eq!(r.item_errors()[0].key, "orphan-cleanup");
    assert_eq!(w.mark().await, Some(at(-1)), "sync results stand");

    let mut orphans = MockOrphanCleanup::new();
    orphans.expect_cleanup().returning(|_| Ok(2));
    let r = w
        .sync()
        .with_orphan_cleanup(Arc::new(orphans))
        .reconcile(&RunContext::new(at(1)))
        .await
        .unwrap();
    assert_eq!(r.count(counters::ORPHANED), 2);
}

#[tokio::test]
async fn invalid_records_are_item_errors_and_do_not_hold_the_watermark() {
    let w = World::new();
    w.upstream.set(vec![
        rec("", at(-5), "no key", "confirmed"),
        rec("stay-1", at(-1), "A", "confirmed"),
    ]);
    let r = w.sync().reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(r.count(counters::ERRORS), 1);
    assert_eq!(r.count(counters::CREATED), 1);
    assert_eq!(w.mark().await, Some(at(-1)));
}

#[tokio::test]
async fn a_target_that_miscounts_results_fails_the_step() {
    let w = World::new();
    w.upstream
        .set(vec![rec("stay-1", at(-1), "A", "confirmed")]);
    let mut target = MockSyncTarget::<Res>::new();
    target.expect_apply().returning(|_, _| Ok(vec![]));
    let sync = SyncReconciler::new(
        "stays-sync",
        w.upstream.clone(),
        Arc::new(target),
        w.fps.clone(),
        w.marks.clone(),
    )
    .unwrap();
    let err = sync.reconcile(&RunContext::new(now())).await.unwrap_err();
    assert!(err.to_string().contains("0 results for 1 changes"), "{err}");
    assert_eq!(w.mark().await, None);
}

#[test]
fn settings_are_validated() {
    let w = World::new();
    let mk = |s| w.sync().with_settings(s);
    assert!(mk(SyncSettings::new("stays-sync").page_size(0)).is_err());
    assert!(mk(SyncSettings::new("stays-sync").max_pages(0)).is_err());
    assert!(
        mk(SyncSettings::new("stays-sync").cleanup(CleanupScope::Groups(vec![]), false)).is_err()
    );
    assert!(mk(SyncSettings::new("stays-sync").watermark("")).is_err());
    assert!(mk(SyncSettings::new("stays-sync").namespace("")).is_err());
}

#[tokio::test]
async fn a_row_stamped_by_a_run_that_started_later_is_not_deleted() {
    let w = World::new();
    let entry = |key: &str| crate::classify::FingerprintEntry {
        key: key.into(),
        fingerprint: rec(key, at(0), "G", "confirmed").fingerprint,
        group: Some("acc-1".into()),
    };
    let stamp = |run: &str, at: DateTime<Utc>, key: &str| RecordBatch {
        run: run.into(),
        at,
        upserts: vec![entry(key)],
        seen: vec![],
    };
    // stay-0 was last seen by an earlier run and has vanished since; stay-2 was created by a
    // concurrent run that started a minute after this one (this run's snapshot predates it).
    w.fps
        .record("stays-sync", &stamp("earlier", at(-60), "stay-0"))
        .await
        .unwrap();
    w.fps
        .record("stays-sync", &stamp("later", at(1), "stay-2"))
        .await
        .unwrap();
    w.upstream
        .set(vec![rec("stay-1", at(-10), "A", "confirmed")]);
    let r = w
        .sync_with(SyncSettings::new("stays-sync").cleanup(CleanupScope::Full, false))
        .reconcile(&RunContext::new(now()))
        .await
        .unwrap();
    assert_eq!(r.count(counters::DELETED), 1);
    assert_eq!(*w.local.deleted.lock().unwrap(), ["stay-0"]);
    assert_eq!(
        w.fps
            .lookup("stays-sync", &["stay-0".into(), "stay-2".into()])
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.key)
            .collect::<Vec<_>>(),
        ["stay-2"]
    );
}

/// The upstream goes down for good after the first page was written: the runner still reports
/// that page's records with the error (the step checkpoints every page it wrote).
#[tokio::test(start_paused = true)]
async fn a_sync_that_fails_half_way_reports_the_pages_it_wrote() {
    let w = World::new();
    w.upstream.set(
        (0..4)
            .map(|i| rec(&format!("stay-{i}"), at(-10 + i), "A", "confirmed"))
            .collect(),
    );
    w.marks.advance("stays-sync", at(-60)).await.unwrap();
    *w.upstream.down_from_offset.lock().unwrap() = Some(2);
    let runner = Runner::builder("upstream-sync")
        .step(w.sync_with(SyncSettings::new("stays-sync").page_size(2)))
        .build()
        .unwrap();
    let report = runner.run().await;
    let step = report.step("stays-sync").unwrap();
    assert_eq!(step.status, recon_core::StepStatus::Failed);
    assert_eq!(
        w.local.rows.lock().unwrap().len(),
        2,
        "the first page is written"
    );
    assert_eq!(step.report.count(counters::CREATED), 2, "and reported");
    assert_eq!(step.report.count(counters::PAGES), 1);
}
