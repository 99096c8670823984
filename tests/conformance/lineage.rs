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
use lineage_checksum::{
    Classifier, Error, FailedRecordStore, FingerprintStore, Incoming, LineageStore, Schema,
};
use recon_core::{MemoryRunLog, MemoryWatermarkStore, RunLog, WatermarkStore};

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

crate::conformance!(
    fingerprint_store_conforms,
    lineage_store_conforms,
    failed_record_store_conforms,
    keys_compare_by_bytes,
    scenario_c_day_two_fifty_changed,
    full_batches_fit_every_backend,
);
