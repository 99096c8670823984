//! lineage-checksum's stores on every backend: the crate's own conformance checks, then
//! scenario C (fingerprints, gaps, audit, recovery, retention) and scenario B (upstream sync
//! with an outage, a failing record and late rows) end to end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lineage_checksum::memory::{
    MemoryFailedRecordStore, MemoryFingerprintStore, MemoryLineageStore,
};
use lineage_checksum::recovery::{counters as rc, retention_counters};
use lineage_checksum::sync::counters as sc;
use lineage_checksum::{
    AuditReconciler, AuditSummary, Change, ChangeKind, Classifier, CleanupScope, DelaySchedule,
    Error, ErrorClass, FailedRecordStore, FailureState, FetchRequest, FingerprintStore, Incoming,
    ItemResult, LineageStatus, LineageStore, LineageTracker, LineageUpdate, ListQuery, NewFailure,
    QualityRules, RecoveryReconciler, RecoverySettings, Replay, ReplayError, RetentionReconciler,
    RetentionSettings, Schema, SnapshotRequest, SourceCount, StageHandler, StageRecovery, Stages,
    SyncReconciler, SyncSettings, SyncTarget, UpstreamPage, UpstreamRecord, UpstreamRetry,
    UpstreamSource,
};
use recon_core::{
    ManualClock, MemoryRunLog, MemoryWatermarkStore, Reconciler, RunContext, RunLog, RunStatus,
    Runner, WatermarkStore, async_trait,
};

use crate::Backend;

fn fingerprints(b: &Backend) -> Arc<dyn FingerprintStore> {
    match b {
        Backend::Memory => Arc::new(MemoryFingerprintStore::new()),
        Backend::Sql(t) => Arc::new(t.db.fingerprints()),
    }
}

fn lineage(b: &Backend) -> Arc<dyn LineageStore> {
    match b {
        Backend::Memory => Arc::new(MemoryLineageStore::new()),
        Backend::Sql(t) => Arc::new(t.db.lineage()),
    }
}

fn failures(b: &Backend) -> Arc<dyn FailedRecordStore> {
    match b {
        Backend::Memory => Arc::new(MemoryFailedRecordStore::new()),
        Backend::Sql(t) => Arc::new(t.db.failed_records()),
    }
}

fn watermarks(b: &Backend) -> Arc<dyn WatermarkStore> {
    match b {
        Backend::Memory => Arc::new(MemoryWatermarkStore::new()),
        Backend::Sql(t) => Arc::new(t.db.watermarks()),
    }
}

fn run_log(b: &Backend) -> Arc<dyn RunLog> {
    match b {
        Backend::Memory => Arc::new(MemoryRunLog::new()),
        Backend::Sql(t) => Arc::new(t.db.run_log()),
    }
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The crate's conformance suite
// ---------------------------------------------------------------------------------------------

async fn fingerprint_store_conforms(b: &Backend<'_>) {
    lineage_checksum::conformance::fingerprint_store(&*fingerprints(b), &b.name()).await;
}

async fn lineage_store_conforms(b: &Backend<'_>) {
    lineage_checksum::conformance::lineage_store(&*lineage(b), &b.name()).await;
}

async fn failed_record_store_conforms(b: &Backend<'_>) {
    lineage_checksum::conformance::failed_record_store(&*failures(b), &b.name()).await;
}

/// Keys are bytes: a trailing space, case and composed/decomposed accents make other keys
/// (MariaDB's `utf8mb4_bin` would treat `"a"` and `"a "` as one key; we use `nopad_bin`).
async fn keys_compare_by_bytes(b: &Backend<'_>) {
    let store = fingerprints(b);
    let keys = ["a", "a ", "A", "caf\u{e9}", "cafe\u{301}", "k\u{0}"];
    let fp = |n: u8| lineage_checksum::Fingerprint::from_bytes([n; 32]);
    let upserts = keys[..5]
        .iter()
        .enumerate()
        .map(|(i, k)| lineage_checksum::FingerprintEntry {
            key: (*k).into(),
            fingerprint: fp(i as u8),
            group: None,
        })
        .collect();
    let batch = lineage_checksum::RecordBatch {
        run: "r1".into(),
        at: t("2024-11-04T06:00:00Z"),
        upserts,
        seen: vec![],
    };
    assert_eq!(
        store.record("bytes", &batch).await.unwrap(),
        5,
        "{}",
        b.name()
    );
    let all: Vec<String> = keys[..5].iter().map(|k| (*k).to_owned()).collect();
    let mut got = store.lookup("bytes", &all).await.unwrap();
    got.sort_by(|x, y| x.key.cmp(&y.key));
    let got: Vec<(String, u8)> = got
        .into_iter()
        .map(|r| (r.key, r.fingerprint.as_bytes()[0]))
        .collect();
    assert_eq!(
        got,
        vec![
            ("A".to_owned(), 2),
            ("a".to_owned(), 0),
            ("a ".to_owned(), 1),
            ("cafe\u{301}".to_owned(), 4),
            ("caf\u{e9}".to_owned(), 3),
        ],
        "{}: five distinct keys, each with its own fingerprint",
        b.name()
    );
    // A NUL byte is refused before anything is sent (PostgreSQL text cannot hold it).
    let e = store
        .lookup("bytes", &[keys[5].to_owned()])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Scenario C: fingerprints decide create / update / unchanged
// ---------------------------------------------------------------------------------------------

fn case_schema() -> Schema {
    Schema::new(
        "case",
        [
            "id",
            "last_modified",
            "subject",
            "description",
            "resolution",
            "status",
        ],
    )
    .unwrap()
}

/// Case `i` as the source holds it; `changed` edits its status.
fn case(schema: &Schema, i: u32, changed: bool) -> Incoming {
    let id = format!("5007T{i:010}");
    let modified = t("2024-11-03T08:00:00Z") + chrono::Duration::seconds(i64::from(i));
    let status = if changed { "Closed" } else { "Open" };
    let fp = schema
        .fingerprint(&[
            id.as_str().into(),
            modified.into(),
            format!("Server {i} won't boot").as_str().into(),
            "iLO_400_MemoryErrors".into(),
            lineage_checksum::Value::Null,
            status.into(),
        ])
        .unwrap();
    Incoming::new(id, fp)
}

/// Classify a day's records in batches of 1,000 (one lookup each), then record the applied
/// ones (created and updated) and stamp the rest seen, as a pipeline does.
async fn run_day(
    classifier: &Classifier,
    run: &str,
    at: DateTime<Utc>,
    day: &[Incoming],
) -> (u64, u64, u64) {
    let (mut created, mut updated, mut unchanged) = (0, 0, 0);
    for batch in day.chunks(1_000) {
        let c = classifier.classify(batch).await.unwrap();
        created += c.created;
        updated += c.updated;
        unchanged += c.unchanged;
        let mut record = lineage_checksum::RecordBatch {
            run: run.into(),
            at,
            upserts: vec![],
            seen: vec![],
        };
        for (r, a) in batch.iter().zip(&c.actions) {
            match a {
                lineage_checksum::Action::Create | lineage_checksum::Action::Update { .. } => {
                    record.upserts.push(lineage_checksum::FingerprintEntry {
                        key: r.key.clone(),
                        fingerprint: r.fingerprint,
                        group: None,
                    })
                }
                _ => record.seen.push(r.key.clone()),
            }
        }
        let n = classifier
            .store()
            .record(classifier.namespace(), &record)
            .await
            .unwrap();
        assert_eq!(
            n,
            batch.len() as u64,
            "every key of the batch is written or stamped"
        );
    }
    (created, updated, unchanged)
}

async fn scenario_c_day_two_fifty_changed(b: &Backend<'_>) {
    let schema = case_schema();
    let classifier = Classifier::new(fingerprints(b), "case").unwrap();
    let day1: Vec<Incoming> = (0..10_000).map(|i| case(&schema, i, false)).collect();
    let r1 = run_day(&classifier, "day-1", t("2024-11-03T06:00:00Z"), &day1).await;
    assert_eq!(r1, (10_000, 0, 0), "{}: day 1 creates everything", b.name());
    // Day 2: 50 of the 10,000 changed (every 200th).
    let day2: Vec<Incoming> = (0..10_000)
        .map(|i| case(&schema, i, i % 200 == 7))
        .collect();
    let r2 = run_day(&classifier, "day-2", t("2024-11-04T06:00:00Z"), &day2).await;
    assert_eq!(
        r2,
        (0, 50, 9_950),
        "{}: 50 updated, 9,950 unchanged",
        b.name()
    );
    // Day 3, nothing new: every record unchanged, and day 2's changes stuck.
    let r3 = run_day(&classifier, "day-3", t("2024-11-05T06:00:00Z"), &day2).await;
    assert_eq!(r3, (0, 0, 10_000), "{}", b.name());
    // Every row was seen by day 3: a full cleanup would delete nothing.
    let unseen = classifier
        .store()
        .unseen(
            "case",
            &lineage_checksum::UnseenQuery {
                run: "day-3".into(),
                group: None,
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert!(unseen.is_empty(), "{unseen:?}");
}

/// One call of 10,000 items (the crate's batch limit) goes through on every backend, split
/// into statements under each one's bind-parameter limit inside one transaction.
async fn full_batches_fit_every_backend(b: &Backend<'_>) {
    let at = t("2024-11-04T06:00:00Z");
    let fps = fingerprints(b);
    let upserts: Vec<lineage_checksum::FingerprintEntry> = (0..lineage_checksum::limits::MAX_BATCH)
        .map(|i| lineage_checksum::FingerprintEntry {
            key: format!("k{i:05}"),
            fingerprint: lineage_checksum::Fingerprint::from_bytes([(i % 251) as u8; 32]),
            group: Some(format!("g{}", i % 7)),
        })
        .collect();
    let keys: Vec<String> = upserts.iter().map(|e| e.key.clone()).collect();
    let batch = lineage_checksum::RecordBatch {
        run: "big".into(),
        at,
        upserts,
        seen: vec![],
    };
    assert_eq!(fps.record("big", &batch).await.unwrap(), 10_000);
    assert_eq!(fps.lookup("big", &keys).await.unwrap().len(), 10_000);
    let stamp = lineage_checksum::RecordBatch {
        run: "big-2".into(),
        at,
        upserts: vec![],
        seen: keys.clone(),
    };
    assert_eq!(fps.record("big", &stamp).await.unwrap(), 10_000);
    assert_eq!(fps.remove("big", &keys).await.unwrap(), 10_000);

    let lin = lineage(b);
    let updates: Vec<lineage_checksum::LineageUpdate> = keys
        .iter()
        .map(|k| {
            lineage_checksum::LineageUpdate::new(
                k.clone(),
                "extracted",
                lineage_checksum::LineageStatus::InProgress,
                at,
            )
            .with_metadata(serde_json::json!({"task_count": 1}))
        })
        .collect();
    assert_eq!(lin.upsert("big", &updates).await.unwrap(), 10_000);
    assert_eq!(lin.get("big", &keys).await.unwrap().len(), 10_000);

    let log = failures(b);
    let fails: Vec<lineage_checksum::NewFailure> = keys
        .iter()
        .map(|k| lineage_checksum::NewFailure {
            key: k.clone(),
            stage: "loaded".into(),
            error_type: "WeaviateTimeout".into(),
            message: "cluster timeout".into(),
            payload: serde_json::json!({"id": k}),
            at,
        })
        .collect();
    assert_eq!(log.record("big", &fails).await.unwrap(), 10_000);
    let due = log
        .due(
            "big",
            &lineage_checksum::DueQuery {
                now: at,
                after: None,
                limit: 10_000,
            },
        )
        .await
        .unwrap();
    let outcomes: Vec<lineage_checksum::FailureOutcome> = due
        .iter()
        .map(|r| lineage_checksum::FailureOutcome {
            id: r.id(),
            expected_attempts: r.attempts,
            expected_last_failed_at: r.last_failed_at,
            attempts: 1,
            at,
            kind: lineage_checksum::OutcomeKind::Resolved {
                method: "retry".into(),
            },
        })
        .collect();
    assert_eq!(
        log.apply("big", &outcomes).await.unwrap(),
        10_000,
        "{}",
        b.name()
    );
}

// ---------------------------------------------------------------------------------------------
// Scenario C: the gap table, the audit, recovery with the seed's retry policies, retention
// ---------------------------------------------------------------------------------------------

fn stages() -> Stages {
    Stages::new(["extracted", "pii_removed", "embedding_generated", "loaded"]).unwrap()
}

fn c_now() -> DateTime<Utc> {
    t("2024-11-04T06:00:00Z")
}

struct Source(u64);

#[async_trait]
impl SourceCount for Source {
    async fn source_count(&self, _: &RunContext) -> lineage_checksum::Result<u64> {
        Ok(self.0)
    }
}

/// 10,000 cases at the source, 9,950 tracked: 10 stuck after extraction, 20 that passed PII
/// removal and failed the embedding (lineage: `failed` at `pii_removed`, the stage they could
/// not get past), 15 embedded that failed the load and 5 in progress after embedding, 9,900
/// loaded. Task on 72 % of the records, WorkOrder on 65 %, Comments on 81 %; 3 % under 30
/// populated fields.
async fn scenario_c_pipeline(
    b: &Backend<'_>,
) -> (Arc<dyn LineageStore>, Arc<dyn FailedRecordStore>) {
    let lin = lineage(b);
    let tracker = LineageTracker::new(lin.clone(), "cases", stages()).unwrap();
    let mut updates = Vec::new();
    for i in 0..9_950u32 {
        let (stage, status) = match i {
            0..10 => ("extracted", LineageStatus::InProgress),
            10..30 => ("pii_removed", LineageStatus::Failed),
            30..45 => ("embedding_generated", LineageStatus::Failed),
            45..50 => ("embedding_generated", LineageStatus::InProgress),
            _ => ("loaded", LineageStatus::Completed),
        };
        let pct = i % 100;
        let meta = serde_json::json!({
            "task_count": u32::from(pct < 72) * 2,
            "workorder_count": u32::from(pct < 65),
            "comment_count": u32::from(pct < 81) * 3,
            "fields_populated": if pct < 3 { 21 } else { 38 },
        });
        updates.push(
            LineageUpdate::new(format!("5007T{i:010}"), stage, status, c_now()).with_metadata(meta),
        );
    }
    for chunk in updates.chunks(2_500) {
        tracker.record(chunk).await.unwrap();
    }
    let log = failures(b);
    let fail = |i: u32, stage: &str, error_type: &str| NewFailure {
        key: format!("5007T{i:010}"),
        stage: stage.into(),
        error_type: error_type.into(),
        message: format!("{error_type} on case {i}"),
        payload: serde_json::json!({"case": i, "text": "ProLiant DL380 won't boot"}),
        at: c_now() - chrono::Duration::hours(2),
    };
    let mut batch: Vec<NewFailure> = (10..30)
        .map(|i| fail(i, "embedding_generated", "EmbeddingAPITimeout"))
        .collect();
    batch.extend((30..45).map(|i| fail(i, "loaded", "WeaviateTimeout")));
    log.record("cases", &batch).await.unwrap();
    (lin, log)
}

async fn scenario_c_gap_table_and_audit(b: &Backend<'_>) {
    let (lin, log) = scenario_c_pipeline(b).await;
    let tracker = LineageTracker::new(lin.clone(), "cases", stages()).unwrap();
    let g = tracker.gaps(10_000).await.unwrap();
    let table: Vec<(&str, u64, u64, u64)> = g
        .stages
        .iter()
        .map(|s| (s.stage.as_str(), s.expected, s.reached, s.gap))
        .collect();
    assert_eq!(
        table,
        [
            ("extracted", 10_000, 9_950, 50),
            ("pii_removed", 9_950, 9_940, 10),
            ("embedding_generated", 9_940, 9_920, 20),
            ("loaded", 9_920, 9_900, 20),
        ],
        "{}: source 10,000 / tracked 9,950 / pii 9,940 / embedded 9,920 / loaded 9,900",
        b.name()
    );
    assert_eq!((g.total_gap, g.failed, g.completed), (100, 35, 9_900));

    let audit = AuditReconciler::new("cases", stages(), lin, QualityRules::seed_003())
        .unwrap()
        .with_source(Arc::new(Source(10_000)))
        .with_failures(log);
    let r = audit.reconcile(&RunContext::new(c_now())).await.unwrap();
    let s: AuditSummary =
        serde_json::from_value(r.details()[lineage_checksum::quality::AUDIT_DETAIL].clone())
            .unwrap();
    let failures: Vec<(&str, u64)> = s
        .failures_by_error_type
        .iter()
        .map(|f| (f.error_type.as_str(), f.open))
        .collect();
    assert_eq!(
        failures,
        [("EmbeddingAPITimeout", 20), ("WeaviateTimeout", 15)]
    );
    // i % 100 < 72 over 0..9,950: 99 full hundreds × 72 + 50 = 7,178.
    let coverage: Vec<(&str, u64, bool)> = s
        .coverage
        .iter()
        .map(|c| (c.table.as_str(), c.present, c.ok))
        .collect();
    assert_eq!(
        coverage,
        [
            ("Task", 7_178, true),
            ("WorkOrder", 6_485, false),
            ("Comments", 8_069, true)
        ],
        "{}",
        b.name()
    );
    assert_eq!(s.fields.as_ref().unwrap().below, 99 * 3 + 3);
    let alerts: Vec<&str> = s.alerts.iter().map(|a| a.code.as_str()).collect();
    assert_eq!(alerts, ["coverage:WorkOrder", "min_fields"]);
    // Stuck: the 10 records in progress after extraction and the 5 in embedding, reported
    // 2 hours ago, with a 1-hour threshold; keyset pages of 4.
    let mut stuck = Vec::new();
    let mut after = None;
    loop {
        let page = tracker
            .stuck(
                None,
                Duration::from_secs(3600),
                c_now() + chrono::Duration::hours(2),
                after.clone(),
                4,
            )
            .await
            .unwrap();
        after = page.last().map(|r| r.key.clone());
        let done = page.len() < 4;
        stuck.extend(page.into_iter().map(|r| r.key));
        if done {
            break;
        }
    }
    let want: Vec<String> = (0..10)
        .chain(45..50)
        .map(|i| format!("5007T{i:010}"))
        .collect();
    assert_eq!(stuck, want);
}

/// Behaves by key prefix: `ok` succeeds on the primary, `fb` on the `nomic` fallback, `flaky`
/// on its second replay, `bad` fails permanently, anything else transiently.
#[derive(Default)]
struct Handler {
    calls: Mutex<BTreeMap<String, u32>>,
}

#[async_trait]
impl StageHandler for Handler {
    async fn replay(&self, _: &RunContext, r: &Replay) -> Result<(), ReplayError> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry(r.key.clone()).or_default();
            *n += 1;
            *n
        };
        let k = r.key.as_str();
        let succeeds = k.starts_with("ok")
            || (k.starts_with("fb") && r.provider.as_deref() == Some("nomic"))
            || (k.starts_with("flaky") && n >= 2);
        if succeeds {
            Ok(())
        } else if k.starts_with("bad") {
            Err(ReplayError::permanent(
                "MissingRequiredFields",
                "no resolution in SFDC",
            ))
        } else {
            Err(ReplayError::transient(
                "Timeout",
                format!("attempt {n} timed out"),
            ))
        }
    }
}

/// Recovery on the backend's stores with the seed's policies from `retry-policy`: PII removal
/// `api_call` (1 s, 2 s, 4 s), embedding primary then the Nomic fallback, load
/// `vector_store_load` (2 s, 4 s, 8 s). No waiting in place here (`inline_retry_limit` 0), so
/// every retry goes through the store's `next_attempt_at` and is picked up by a later run.
async fn scenario_c_recovery_with_seed_policies(b: &Backend<'_>) {
    let log = failures(b);
    let lin = lineage(b);
    let at = c_now() - chrono::Duration::hours(2);
    let f = |key: &str, stage: &str| NewFailure {
        key: key.into(),
        stage: stage.into(),
        error_type: "Initial".into(),
        message: "failed in the pipeline".into(),
        payload: serde_json::json!({"key": key}),
        at,
    };
    log.record(
        "cases",
        &[
            f("ok-1", "embedding_generated"),
            f("fb-1", "embedding_generated"),
            f("pii-1", "pii_removed"),
            f("flaky-1", "loaded"),
            f("bad-1", "loaded"),
        ],
    )
    .await
    .unwrap();
    let handler = Arc::new(Handler::default());
    let rec = RecoveryReconciler::new("cases", stages(), log.clone())
        .unwrap()
        .stage(
            "pii_removed",
            StageRecovery::new(handler.clone(), Arc::new(retry_policy::presets::api_call())),
        )
        .unwrap()
        .stage(
            "embedding_generated",
            StageRecovery::new(handler.clone(), Arc::new(DelaySchedule::once()))
                .with_fallbacks(["nomic"])
                .unwrap(),
        )
        .unwrap()
        .stage(
            "loaded",
            StageRecovery::new(
                handler.clone(),
                Arc::new(retry_policy::presets::vector_store_load()),
            ),
        )
        .unwrap()
        .with_lineage(lin.clone())
        .with_settings(
            RecoverySettings::new()
                .inline_retry_limit(Duration::ZERO)
                .batch_size(2),
        )
        .unwrap();
    let secs = |s: i64| c_now() + chrono::Duration::seconds(s);
    let row = |rows: &[lineage_checksum::FailedRecord], k: &str| {
        rows.iter().find(|r| r.key == k).unwrap().clone()
    };
    let list = || async {
        log.list(
            "cases",
            &ListQuery {
                state: None,
                after: None,
                limit: 100,
            },
        )
        .await
        .unwrap()
    };

    let r1 = rec.reconcile(&RunContext::new(secs(0))).await.unwrap();
    assert_eq!(r1.count(rc::DUE), 5, "{}", b.name());
    assert_eq!(
        r1.count(rc::RECOVERED),
        2,
        "ok-1 on the primary, fb-1 on the fallback"
    );
    assert_eq!(r1.count(rc::RESCHEDULED), 2, "pii-1 and flaky-1");
    assert_eq!(r1.count(rc::MANUAL_REVIEW), 1, "bad-1 is permanent");
    let rows = list().await;
    assert_eq!(
        row(&rows, "fb-1").resolution.as_deref(),
        Some("fallback:nomic")
    );
    assert_eq!(row(&rows, "ok-1").resolution.as_deref(), Some("retry"));
    assert_eq!(
        row(&rows, "pii-1").next_attempt_at,
        Some(secs(1)),
        "api_call: 1 s"
    );
    assert_eq!(
        row(&rows, "flaky-1").next_attempt_at,
        Some(secs(2)),
        "vector_store_load: 2 s"
    );
    assert_eq!(row(&rows, "bad-1").state, FailureState::ManualReview);

    // Later runs pick the rescheduled ones up when due: pii-1 at +1 s, +3 s, +7 s (waits of
    // 1 s, 2 s, 4 s), then gives up after its fourth failed replay.
    let r2 = rec.reconcile(&RunContext::new(secs(1))).await.unwrap();
    assert_eq!((r2.count(rc::DUE), r2.count(rc::RESCHEDULED)), (1, 1));
    assert_eq!(row(&list().await, "pii-1").next_attempt_at, Some(secs(3)));
    let r3 = rec.reconcile(&RunContext::new(secs(3))).await.unwrap();
    assert_eq!(r3.count(rc::DUE), 2, "pii-1 and flaky-1 (due at +2 s)");
    assert_eq!(r3.count(rc::RECOVERED), 1, "flaky-1 on its second replay");
    assert_eq!(row(&list().await, "pii-1").next_attempt_at, Some(secs(7)));
    let r4 = rec.reconcile(&RunContext::new(secs(7))).await.unwrap();
    assert_eq!(r4.count(rc::MANUAL_REVIEW), 1);
    let pii = row(&list().await, "pii-1");
    assert_eq!((pii.state, pii.attempts), (FailureState::ManualReview, 4));
    assert!(pii.message.contains("4 attempts made"), "{}", pii.message);
    assert_eq!(r4.count(rc::STILL_FAILED), 2, "bad-1 and pii-1 need people");
    let counts = log.counts_by_error_type("cases").await.unwrap();
    let counts: Vec<(&str, u64, u64)> = counts
        .iter()
        .map(|c| (c.error_type.as_str(), c.open, c.manual_review))
        .collect();
    assert_eq!(counts, [("MissingRequiredFields", 0, 1), ("Timeout", 0, 1)]);
    // The lineage follows: resolved records reached their stage.
    let l = lin
        .get("cases", &["flaky-1".into(), "fb-1".into(), "pii-1".into()])
        .await
        .unwrap();
    let mut st: Vec<(&str, &str, LineageStatus)> = l
        .iter()
        .map(|r| (r.key.as_str(), r.stage.as_str(), r.status))
        .collect();
    st.sort();
    assert_eq!(
        st,
        [
            ("fb-1", "embedding_generated", LineageStatus::InProgress),
            ("flaky-1", "loaded", LineageStatus::Completed),
            ("pii-1", "extracted", LineageStatus::Failed)
        ],
        "{}: pii-1 failed PII removal again: failed at the stage before it",
        b.name()
    );
    // Gap analysis over those five: bad-1 failed the load (permanently) and pii-1 failed PII
    // removal; neither counts as having reached the stage it failed.
    let g = LineageTracker::new(lin.clone(), "cases", stages())
        .unwrap()
        .gaps(5)
        .await
        .unwrap();
    let reached: Vec<u64> = g.stages.iter().map(|s| s.reached).collect();
    assert_eq!(reached, [5, 4, 4, 1], "{}", b.name());
    // Nothing left to do.
    let r5 = rec.reconcile(&RunContext::new(secs(3600))).await.unwrap();
    assert_eq!(r5.count(rc::DUE), 0);
}

/// Two recoveries applying the same outcomes at once: compare-and-set lets each outcome
/// apply exactly once.
async fn concurrent_applies_apply_each_outcome_once(b: &Backend<'_>) {
    let log = failures(b);
    let at = c_now();
    let batch: Vec<NewFailure> = (0..500)
        .map(|i| NewFailure {
            key: format!("k{i:04}"),
            stage: "loaded".into(),
            error_type: "WeaviateTimeout".into(),
            message: "timeout".into(),
            payload: serde_json::json!({}),
            at,
        })
        .collect();
    log.record("cases", &batch).await.unwrap();
    let due = log
        .due(
            "cases",
            &lineage_checksum::DueQuery {
                now: at,
                after: None,
                limit: 1_000,
            },
        )
        .await
        .unwrap();
    let outcomes: Vec<lineage_checksum::FailureOutcome> = due
        .iter()
        .map(|r| lineage_checksum::FailureOutcome {
            id: r.id(),
            expected_attempts: r.attempts,
            expected_last_failed_at: r.last_failed_at,
            attempts: 1,
            at,
            kind: lineage_checksum::OutcomeKind::Resolved {
                method: "retry".into(),
            },
        })
        .collect();
    let mut reversed = outcomes.clone();
    reversed.reverse();
    let (a, c) = tokio::join!(log.apply("cases", &outcomes), log.apply("cases", &reversed));
    assert_eq!(a.unwrap() + c.unwrap(), 500, "{}", b.name());
}

async fn retention_prunes_failed_records_and_runs_not_lineage(b: &Backend<'_>) {
    let log = failures(b);
    let runs = run_log(b);
    let lin = lineage(b);
    let now = c_now();
    let days = |d: i64| now - chrono::Duration::days(d);
    let f = |key: &str, at| NewFailure {
        key: key.into(),
        stage: "loaded".into(),
        error_type: "WeaviateTimeout".into(),
        message: "timeout".into(),
        payload: serde_json::json!({}),
        at,
    };
    log.record(
        "cases",
        &[
            f("old-1", days(120)),
            f("old-2", days(120)),
            f("old-3", days(120)),
            f("recent", days(20)),
            f("open", days(200)),
        ],
    )
    .await
    .unwrap();
    let rows = log
        .list(
            "cases",
            &ListQuery {
                state: None,
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    let resolve: Vec<lineage_checksum::FailureOutcome> = rows
        .iter()
        .filter(|r| r.key != "open")
        .map(|r| lineage_checksum::FailureOutcome {
            id: r.id(),
            expected_attempts: 0,
            expected_last_failed_at: r.last_failed_at,
            attempts: 1,
            at: if r.key == "recent" {
                days(10)
            } else {
                days(95)
            },
            kind: lineage_checksum::OutcomeKind::Resolved {
                method: "retry".into(),
            },
        })
        .collect();
    assert_eq!(log.apply("cases", &resolve).await.unwrap(), 4);
    for (id, d) in [("run-40", 40), ("run-10", 10)] {
        runs.append(&recon_core::RunReport {
            id: recon_core::RunId::from_string(id),
            runner: "pipeline".into(),
            started_at: days(d),
            finished_at: days(d),
            duration_ms: 0,
            status: RunStatus::Success,
            dry_run: false,
            steps: vec![],
            errors: vec![],
            notes: vec![],
        })
        .await
        .unwrap();
    }
    lin.upsert(
        "cases",
        &[LineageUpdate::new(
            "old-1",
            "loaded",
            LineageStatus::Completed,
            days(400),
        )],
    )
    .await
    .unwrap();
    let mut settings = RetentionSettings::default();
    settings.batch_size = 2; // bounded deletes: 2 + 1 over two statements
    let r = RetentionReconciler::new("cases", log.clone(), Some(runs.clone()), settings).unwrap();
    let dry = r
        .reconcile(&RunContext::new(now).with_dry_run(true))
        .await
        .unwrap();
    assert_eq!(dry.count(retention_counters::FAILED_RECORDS_PRUNED), 0);
    let report = r.reconcile(&RunContext::new(now)).await.unwrap();
    assert_eq!(
        report.count(retention_counters::FAILED_RECORDS_PRUNED),
        3,
        "{}",
        b.name()
    );
    assert_eq!(report.count(retention_counters::RUNS_PRUNED), 1);
    let left: Vec<String> = log
        .list(
            "cases",
            &ListQuery {
                state: None,
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(
        left,
        ["open", "recent"],
        "resolved 10 days ago and unresolved are kept"
    );
    assert_eq!(runs.history("pipeline", 10).await.unwrap().len(), 1);
    assert_eq!(
        lin.get("cases", &["old-1".into()]).await.unwrap().len(),
        1,
        "lineage is kept"
    );
}

/// Bad input is refused with a clear error and writes nothing.
async fn bad_input_is_refused_whole(b: &Backend<'_>) {
    let log = failures(b);
    let lin = lineage(b);
    let at = c_now();
    let ok = NewFailure {
        key: "ok".into(),
        stage: "loaded".into(),
        error_type: "WeaviateTimeout".into(),
        message: "timeout".into(),
        payload: serde_json::json!({"id": 1}),
        at,
    };
    let mut huge = ok.clone();
    huge.key = "huge".into();
    huge.payload =
        serde_json::json!({"text": "x".repeat(lineage_checksum::limits::MAX_PAYLOAD_BYTES)});
    let e = log.record("cases", &[ok.clone(), huge]).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("payload of `huge`"), "{e}");
    assert!(e.to_string().contains("the limit is 1048576 bytes"), "{e}");
    let mut bad_stage = ok.clone();
    bad_stage.key = "s".into();
    bad_stage.stage = "weaviate-load".into();
    let e = log
        .record("cases", &[ok.clone(), bad_stage])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("weaviate-load"), "{e}");
    let listed = log
        .list(
            "cases",
            &ListQuery {
                state: None,
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert!(
        listed.is_empty(),
        "{}: nothing of a refused batch is written",
        b.name()
    );

    // Unknown stages: the tracker refuses the whole batch before the store sees it.
    let tracker = LineageTracker::new(lin.clone(), "cases", stages()).unwrap();
    let e = tracker
        .record(&[
            LineageUpdate::new("a", "extracted", LineageStatus::InProgress, at),
            LineageUpdate::new("b", "weaviate_loaded", LineageStatus::InProgress, at),
        ])
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown stage `weaviate_loaded` (stages: extracted, pii_removed, embedding_generated, loaded)"
    );
    let e = tracker
        .record(&[LineageUpdate::new("a", "extracted", LineageStatus::InProgress, at)
            .with_metadata(serde_json::json!({"blob": "x".repeat(lineage_checksum::limits::MAX_METADATA_BYTES)}))])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    assert!(
        lin.get("cases", &["a".into(), "b".into()])
            .await
            .unwrap()
            .is_empty()
    );
    let handler: Arc<dyn StageHandler> = Arc::new(Handler::default());
    let e = RecoveryReconciler::new("cases", stages(), log)
        .unwrap()
        .stage(
            "weaviate_loaded",
            StageRecovery::new(handler, Arc::new(DelaySchedule::once())),
        )
        .unwrap_err();
    assert!(matches!(e, Error::UnknownStage { .. }), "{e}");
    // The class mapping is what the policies see.
    assert_eq!(
        retry_policy::ErrorClass::from(ErrorClass::Permanent),
        retry_policy::ErrorClass::Permanent
    );
}

// ---------------------------------------------------------------------------------------------
// Scenario B: upstream sync with a watermark, against an in-process fake upstream
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct Reservation {
    guest: String,
    status: String,
}

fn b_now() -> DateTime<Utc> {
    t("2024-02-01T10:30:00Z")
}

fn at(min: i64) -> DateTime<Utc> {
    b_now() + chrono::Duration::minutes(min)
}

fn reservation(
    key: &str,
    cursor: DateTime<Utc>,
    guest: &str,
    status: &str,
) -> UpstreamRecord<Reservation> {
    let fingerprint = Schema::new("reservation", ["id", "guest_name", "status"])
        .unwrap()
        .fingerprint(&[key.into(), guest.into(), status.into()])
        .unwrap();
    UpstreamRecord {
        key: key.into(),
        cursor,
        fingerprint,
        group: Some("acc-1".into()),
        data: Reservation {
            guest: guest.into(),
            status: status.into(),
        },
    }
}

/// The Stays API: a change feed filtered by `since` (inclusive), paged by offset tokens, that
/// fails the next `outage` fetches.
/// It also lists full snapshots (same paging), and can go down from a page offset on.
#[derive(Default)]
struct Upstream {
    records: Mutex<Vec<UpstreamRecord<Reservation>>>,
    outage: Mutex<u32>,
    down_from_offset: Mutex<Option<usize>>,
    requests: Mutex<Vec<FetchRequest>>,
}

impl Upstream {
    fn page(
        &self,
        since: Option<DateTime<Utc>>,
        token: Option<&str>,
        limit: usize,
    ) -> lineage_checksum::Result<UpstreamPage<Reservation>> {
        let offset: usize = token.map_or(0, |t| t.parse().unwrap());
        {
            let mut outage = self.outage.lock().unwrap();
            let down = self
                .down_from_offset
                .lock()
                .unwrap()
                .is_some_and(|o| offset >= o);
            if *outage > 0 || down {
                *outage = outage.saturating_sub(1);
                return Err(Error::transient(
                    "fetch reservations",
                    std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Stays API down"),
                ));
            }
        }
        let mut all: Vec<_> = self
            .records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| since.is_none_or(|s| r.cursor >= s))
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.cursor, &a.key).cmp(&(b.cursor, &b.key)));
        let records: Vec<_> = all.iter().skip(offset).take(limit).cloned().collect();
        let next = (offset + limit < all.len()).then(|| (offset + limit).to_string());
        Ok(UpstreamPage {
            records,
            next_page_token: next,
        })
    }
}

#[async_trait]
impl UpstreamSource<Reservation> for Upstream {
    async fn fetch(
        &self,
        _: &RunContext,
        req: &FetchRequest,
    ) -> lineage_checksum::Result<UpstreamPage<Reservation>> {
        self.requests.lock().unwrap().push(req.clone());
        self.page(Some(req.since), req.page_token.as_deref(), req.limit)
    }

    async fn fetch_snapshot(
        &self,
        _: &RunContext,
        req: &SnapshotRequest,
    ) -> lineage_checksum::Result<UpstreamPage<Reservation>> {
        self.page(None, req.page_token.as_deref(), req.limit)
    }
}

/// The local reservations table and its PIN jobs.
#[derive(Default)]
struct Local {
    rows: Mutex<BTreeMap<String, Reservation>>,
    pin_jobs: Mutex<Vec<(String, String)>>,
    applied: Mutex<Vec<String>>,
    reject: Mutex<Vec<String>>,
    deleted: Mutex<Vec<String>>,
}

#[async_trait]
impl SyncTarget<Reservation> for Local {
    async fn apply(
        &self,
        _: &RunContext,
        changes: &[Change<Reservation>],
    ) -> lineage_checksum::Result<Vec<ItemResult>> {
        let reject = self.reject.lock().unwrap().clone();
        let mut rows = self.rows.lock().unwrap();
        let mut jobs = self.pin_jobs.lock().unwrap();
        let mut applied = self.applied.lock().unwrap();
        Ok(changes
            .iter()
            .map(|c| {
                let r = &c.record;
                if reject.contains(&r.key) {
                    return Err("lock not found for accommodation acc-1".to_owned());
                }
                applied.push(r.key.clone());
                let before = rows.insert(r.key.clone(), r.data.clone());
                let schedule = match c.kind {
                    ChangeKind::Create => true,
                    ChangeKind::Update { .. } => {
                        r.data.status == "confirmed"
                            && before.is_some_and(|b| b.status != "confirmed")
                    }
                };
                if schedule {
                    jobs.push(("generatePin".into(), r.key.clone()));
                    jobs.push(("revokePin".into(), r.key.clone()));
                }
                Ok(())
            })
            .collect())
    }

    async fn delete(
        &self,
        _: &RunContext,
        keys: &[String],
    ) -> lineage_checksum::Result<Vec<ItemResult>> {
        let mut rows = self.rows.lock().unwrap();
        let mut deleted = self.deleted.lock().unwrap();
        Ok(keys
            .iter()
            .map(|k| {
                rows.remove(k);
                deleted.push(k.clone());
                Ok(())
            })
            .collect())
    }
}

async fn scenario_b_sync_outage_failing_record_and_late_rows(b: &Backend<'_>) {
    let upstream = Arc::new(Upstream::default());
    let local = Arc::new(Local::default());
    let marks = watermarks(b);
    let fps = fingerprints(b);
    // The seed's 2 s, 4 s, 8 s backoff, scaled down to keep the suite fast (the crate's own
    // tests check the real delays on a paused clock).
    let settings = SyncSettings::new("stays-sync")
        .page_size(2)
        .retry(UpstreamRetry::new([10, 20, 40].map(Duration::from_millis)));
    let sync = || {
        SyncReconciler::new(
            "stays-sync",
            upstream.clone(),
            local.clone(),
            fps.clone(),
            marks.clone(),
        )
        .unwrap()
        .with_settings(settings.clone())
        .unwrap()
    };
    let runner = |now: DateTime<Utc>| {
        Runner::builder("upstream-sync")
            .time_source(Arc::new(ManualClock::at(now)))
            .required_step(sync())
            .run_log(run_log(b))
            .build()
            .unwrap()
    };
    let mark = || async { marks.get("stays-sync").await.unwrap() };
    let step = |r: &recon_core::RunReport| r.step("stays-sync").unwrap().report.clone();

    // Run 1 (first run: now − 24 h − 5 min).
    *upstream.records.lock().unwrap() = vec![
        reservation("stay-123", at(-25), "John Doe", "confirmed"),
        reservation("stay-456", at(-20), "Ana Lima", "pending"),
        reservation("stay-789", at(-10), "Bo Chen", "pending"),
        reservation("stay-old", at(-3 * 24 * 60), "Too Old", "confirmed"),
    ];
    let r1 = runner(b_now()).run().await;
    assert_eq!(
        r1.status,
        RunStatus::Success,
        "{}: {:?}",
        b.name(),
        r1.errors
    );
    assert_eq!(step(&r1).count(sc::CREATED), 3);
    assert_eq!(
        mark().await,
        Some(at(-10)),
        "{}: the highest cursor seen",
        b.name()
    );

    // Run 2: the upstream is down longer than the retries last → failed, watermark unchanged.
    *upstream.outage.lock().unwrap() = 4;
    let requests_before = upstream.requests.lock().unwrap().len();
    let r2 = runner(at(30)).run().await;
    assert_eq!(r2.status, RunStatus::Failed);
    let outcome = r2.step("stays-sync").unwrap();
    assert!(
        outcome.error.as_ref().unwrap().transient,
        "{:?}",
        outcome.error
    );
    assert_eq!(
        upstream.requests.lock().unwrap().len() - requests_before,
        4,
        "the first fetch and three retries"
    );
    assert_eq!(
        mark().await,
        Some(at(-10)),
        "watermark unchanged after an outage"
    );

    // Run 3: back up. stay-456 confirmed; stay-789 re-read (its cursor is the watermark);
    // stay-tie committed late with exactly the watermark's timestamp; stay-late committed late
    // two minutes before it; stay-bad rejected by the target.
    upstream.records.lock().unwrap().extend([
        reservation("stay-456", at(15), "Ana Lima", "confirmed"),
        reservation("stay-tie", at(-10), "Tie Boundary", "confirmed"),
        reservation("stay-late", at(-12), "Late Row", "confirmed"),
        reservation("stay-bad", at(5), "No Lock", "confirmed"),
    ]);
    upstream
        .records
        .lock()
        .unwrap()
        .retain(|r| !(r.key == "stay-456" && r.cursor == at(-20)));
    *local.reject.lock().unwrap() = vec!["stay-bad".into()];
    let applied_before = local.applied.lock().unwrap().len();
    let r3 = runner(at(30)).run().await;
    assert_eq!(
        r3.status,
        RunStatus::Partial,
        "{}: one record failed",
        b.name()
    );
    let s3 = step(&r3);
    assert_eq!(
        (
            s3.count(sc::CREATED),
            s3.count(sc::UPDATED),
            s3.count(sc::UNCHANGED),
            s3.count(sc::ERRORS)
        ),
        (2, 1, 1, 1),
        "{}: stay-tie and stay-late created (not missed), stay-456 updated, stay-789 unchanged, stay-bad failed",
        b.name()
    );
    assert_eq!(s3.item_errors()[0].key, "stay-bad");
    let applied: Vec<String> = local.applied.lock().unwrap()[applied_before..].to_vec();
    assert_eq!(
        applied.len(),
        3,
        "no duplicate work for the overlap: {applied:?}"
    );
    assert_eq!(
        mark().await,
        Some(at(5)),
        "held at the failed record's cursor"
    );

    // Run 4: the lock exists now. stay-bad is fetched again and applied; the rest of the
    // overlap is unchanged and costs no apply.
    local.reject.lock().unwrap().clear();
    let applied_before = local.applied.lock().unwrap().len();
    let r4 = runner(at(60)).run().await;
    assert_eq!(r4.status, RunStatus::Success);
    let s4 = step(&r4);
    assert_eq!((s4.count(sc::CREATED), s4.count(sc::UPDATED)), (1, 0));
    assert_eq!(
        s4.count(sc::UNCHANGED),
        1,
        "stay-456 re-read in the overlap"
    );
    assert_eq!(
        local.applied.lock().unwrap()[applied_before..],
        ["stay-bad".to_owned()]
    );
    assert_eq!(mark().await, Some(at(15)));
    assert_eq!(local.rows.lock().unwrap().len(), 6);
    assert_eq!(
        local.pin_jobs.lock().unwrap().len(),
        6 * 2 + 2,
        "generatePin and revokePin for the 6 reservations created, and again for stay-456's confirmation"
    );
    let keys: Vec<String> = local.rows.lock().unwrap().keys().cloned().collect();
    assert_eq!(fps.lookup("stays-sync", &keys).await.unwrap().len(), 6);
}

/// Deletes of records a run did not see happen only after a complete snapshot in a run that
/// succeeded: an incremental run, an outage mid-pagination and a snapshot with a failing record
/// delete nothing (and an outage keeps the watermark); the next complete snapshot does.
async fn scenario_b_cleanup_only_after_a_complete_snapshot(b: &Backend<'_>) {
    let upstream = Arc::new(Upstream::default());
    let local = Arc::new(Local::default());
    let marks = watermarks(b);
    let fps = fingerprints(b);
    let sync = |cleanup: CleanupScope| {
        SyncReconciler::new(
            "stays-sync",
            upstream.clone(),
            local.clone(),
            fps.clone(),
            marks.clone(),
        )
        .unwrap()
        .with_settings(
            SyncSettings::new("stays-sync")
                .page_size(2)
                .retry(UpstreamRetry::new([10, 20].map(Duration::from_millis)))
                .cleanup(cleanup, false),
        )
        .unwrap()
    };
    let run = |cleanup: CleanupScope, now: DateTime<Utc>| {
        let runner = Runner::builder("upstream-sync")
            .time_source(Arc::new(ManualClock::at(now)))
            .required_step(sync(cleanup))
            .build()
            .unwrap();
        async move { runner.run().await }
    };
    let acc = || CleanupScope::Groups(vec!["acc-1".into()]);
    let mark = || async { marks.get("stays-sync").await.unwrap() };
    let step = |r: &recon_core::RunReport| r.step("stays-sync").unwrap().report.clone();
    let stored = |keys: &[&str]| {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let fps = fps.clone();
        async move { fps.lookup("stays-sync", &keys).await.unwrap().len() }
    };

    // Six reservations, one unchanged for a week (outside any incremental window).
    *upstream.records.lock().unwrap() = (0..6)
        .map(|i| {
            let cursor = if i == 0 {
                at(-7 * 24 * 60)
            } else {
                at(-60 + i)
            };
            reservation(&format!("stay-{i}"), cursor, "Guest", "confirmed")
        })
        .collect();
    let r1 = run(acc(), b_now()).await;
    assert_eq!(
        r1.status,
        RunStatus::Success,
        "{}: {:?}",
        b.name(),
        r1.errors
    );
    assert_eq!(step(&r1).count(sc::CREATED), 6);
    assert_eq!(mark().await, Some(at(-55)));

    // stay-1 and stay-3 vanish upstream.
    upstream
        .records
        .lock()
        .unwrap()
        .retain(|r| r.key != "stay-1" && r.key != "stay-3");

    // An incremental run sees only changes: it never deletes.
    let r2 = run(CleanupScope::None, at(30)).await;
    assert_eq!(r2.status, RunStatus::Success, "{}", b.name());
    assert_eq!(step(&r2).count(sc::DELETED), 0);
    assert_eq!(stored(&["stay-0", "stay-1", "stay-3"]).await, 3);

    // A snapshot whose second page never arrives: failed, nothing deleted, watermark kept.
    *upstream.down_from_offset.lock().unwrap() = Some(2);
    let r3 = run(acc(), at(60)).await;
    assert_eq!(r3.status, RunStatus::Failed, "{}", b.name());
    assert!(local.deleted.lock().unwrap().is_empty(), "{}", b.name());
    assert_eq!(stored(&["stay-1", "stay-3"]).await, 2, "{}", b.name());
    assert_eq!(
        mark().await,
        Some(at(-55)),
        "{}: watermark unchanged",
        b.name()
    );
    *upstream.down_from_offset.lock().unwrap() = None;

    // A complete snapshot in which one record fails: partial, nothing deleted, and the
    // watermark is held at the failed record.
    upstream.records.lock().unwrap().extend([
        reservation("stay-9", at(-57), "No Lock", "confirmed"),
        reservation("stay-8", at(-40), "New Guest", "confirmed"),
    ]);
    *local.reject.lock().unwrap() = vec!["stay-9".into()];
    let r4 = run(acc(), at(90)).await;
    assert_eq!(r4.status, RunStatus::Partial, "{}", b.name());
    let s4 = step(&r4);
    assert_eq!(
        (
            s4.count(sc::CREATED),
            s4.count(sc::ERRORS),
            s4.count(sc::DELETED)
        ),
        (1, 1, 0),
        "{}: stay-8 created, stay-9 failed, nothing deleted",
        b.name()
    );
    assert!(local.deleted.lock().unwrap().is_empty(), "{}", b.name());
    assert_eq!(stored(&["stay-1", "stay-3"]).await, 2, "{}", b.name());
    assert_eq!(
        mark().await,
        Some(at(-55)),
        "{}: held at the failed record (−57), not moved to −40",
        b.name()
    );

    // Fixed: the complete snapshot of a run that succeeds applies stay-9 and deletes the two.
    local.reject.lock().unwrap().clear();
    let r5 = run(acc(), at(120)).await;
    assert_eq!(
        r5.status,
        RunStatus::Success,
        "{}: {:?}",
        b.name(),
        r5.errors
    );
    let s5 = step(&r5);
    assert_eq!((s5.count(sc::CREATED), s5.count(sc::DELETED)), (1, 2));
    assert_eq!(*local.deleted.lock().unwrap(), ["stay-1", "stay-3"]);
    assert_eq!(stored(&["stay-1", "stay-3"]).await, 0, "{}", b.name());
    assert_eq!(
        stored(&["stay-0", "stay-2", "stay-4", "stay-5", "stay-8", "stay-9"]).await,
        6
    );
    assert_eq!(local.rows.lock().unwrap().len(), 6);
    assert_eq!(mark().await, Some(at(-40)));
}

crate::conformance!(
    fingerprint_store_conforms,
    lineage_store_conforms,
    failed_record_store_conforms,
    keys_compare_by_bytes,
    scenario_c_day_two_fifty_changed,
    full_batches_fit_every_backend,
    scenario_c_gap_table_and_audit,
    scenario_c_recovery_with_seed_policies,
    concurrent_applies_apply_each_outcome_once,
    retention_prunes_failed_records_and_runs_not_lineage,
    bad_input_is_refused_whole,
    scenario_b_sync_outage_failing_record_and_late_rows,
    scenario_b_cleanup_only_after_a_complete_snapshot,
);
