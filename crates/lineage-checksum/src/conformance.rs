//! The behaviour every store implementation must have, as reusable async checks.
//!
//! Each function takes a store as a trait object and a `prefix` that it puts in front of every
//! namespace or pipeline it uses, so several runs (or several backends) can share one database.
//! The functions panic on the first difference, like `assert!`. The memory stores run them in
//! this crate's tests; `store-sqlx` runs the very same functions against SQLite, PostgreSQL and
//! MariaDB:
//!
//! ```no_run
//! # async fn f(store: &dyn lineage_checksum::FingerprintStore) {
//! lineage_checksum::conformance::fingerprint_store(store, "sqlite-1").await;
//! # }
//! ```

#![allow(missing_docs, clippy::missing_panics_doc)]

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::classify::{
    Difference, FingerprintEntry, FingerprintStore, Incoming, RecordBatch, UnseenQuery,
};
use crate::failed::{
    DueQuery, FailedRecordStore, FailureId, FailureOutcome, FailureState, ListQuery, NewFailure,
    OutcomeKind, PruneQuery,
};
use crate::lineage::{
    LineageStatus, LineageStore, LineageUpdate, QualityQuery, Stages, StuckQuery, analyse_gaps,
};
use crate::{Error, Fingerprint, limits};

/// The base instant of every check: 2024-11-04T06:00:00Z.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_730_700_000, 0).expect("valid")
}

fn fp(n: u8) -> Fingerprint {
    Fingerprint::from_bytes([n; 32])
}

fn entry(key: &str, n: u8, group: Option<&str>) -> FingerprintEntry {
    FingerprintEntry {
        key: key.into(),
        fingerprint: fp(n),
        group: group.map(Into::into),
    }
}

fn strings<const N: usize>(a: [&str; N]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Every fingerprint-store check.
pub async fn fingerprint_store(store: &dyn FingerprintStore, prefix: &str) {
    fingerprint_round_trip(store, &format!("{prefix}-fp-rt")).await;
    fingerprint_unseen_keyset(store, &format!("{prefix}-fp-unseen")).await;
    fingerprint_remove_and_namespaces(store, &format!("{prefix}-fp-rm")).await;
    fingerprint_rejects_bad_input(store, &format!("{prefix}-fp-bad")).await;
    fingerprint_differences(store, &format!("{prefix}-fp-diff")).await;
}

/// `differences` returns exactly the missing and changed records of a batch, with what is
/// stored, and nothing for unchanged ones; bad input is refused.
pub async fn fingerprint_differences(store: &dyn FingerprintStore, ns: &str) {
    store
        .record(
            ns,
            &RecordBatch {
                run: "r1".into(),
                at: t0(),
                upserts: vec![
                    entry("same", 1, None),
                    entry("changed", 2, None),
                    entry("B", 3, None),
                ],
                seen: vec![],
            },
        )
        .await
        .expect("record");
    let batch = vec![
        Incoming::new("changed", fp(20)),
        Incoming::new("new", fp(4)),
        Incoming::new("same", fp(1)),
        Incoming::new("b", fp(3)),
        Incoming::new("B", fp(3)),
    ];
    let mut got = store.differences(ns, &batch).await.expect("differences");
    got.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(
        got,
        vec![
            Difference {
                key: "b".into(),
                stored: None
            },
            Difference {
                key: "changed".into(),
                stored: Some(fp(2))
            },
            Difference {
                key: "new".into(),
                stored: None
            },
        ],
        "missing and changed keys only (keys are case-sensitive bytes)"
    );
    assert!(
        store
            .differences(ns, &[])
            .await
            .expect("empty batch")
            .is_empty()
    );
    let dup = [Incoming::new("x", fp(1)), Incoming::new("x", fp(2))];
    assert!(matches!(
        store.differences(ns, &dup).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(
        store
            .differences(ns, &[Incoming::new("", fp(1))])
            .await
            .is_err()
    );
    assert!(store.differences("", &batch).await.is_err());
}

/// Upserts are read back exactly (group, seen stamp at microsecond precision); missing keys
/// are absent; a key asked twice comes back once; `seen` ignores unknown keys.
pub async fn fingerprint_round_trip(store: &dyn FingerprintStore, ns: &str) {
    let at = t0() + Duration::nanoseconds(123_456_789);
    let n = store
        .record(
            ns,
            &RecordBatch {
                run: "run-1".into(),
                at,
                upserts: vec![entry("a", 1, Some("g1")), entry("b", 2, None)],
                seen: strings(["not-stored"]),
            },
        )
        .await
        .expect("record");
    assert_eq!(n, 2, "two upserts; the unknown seen key is ignored");
    let mut got = store
        .lookup(ns, &strings(["b", "a", "zz", "a"]))
        .await
        .expect("lookup");
    got.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].key, "a");
    assert_eq!(got[0].fingerprint, fp(1));
    assert_eq!(got[0].group.as_deref(), Some("g1"));
    assert_eq!(got[0].seen_run.as_deref(), Some("run-1"));
    assert_eq!(
        got[0].seen_at,
        Some(t0() + Duration::microseconds(123_456)),
        "timestamps are kept at microsecond precision, finer digits dropped"
    );
    assert_eq!(got[1].group, None);
    // Replace: new fingerprint and group; stamp only for the other.
    store
        .record(
            ns,
            &RecordBatch {
                run: "run-2".into(),
                at: t0() + Duration::hours(1),
                upserts: vec![entry("a", 9, Some("g2"))],
                seen: strings(["b"]),
            },
        )
        .await
        .expect("record 2");
    let mut got = store
        .lookup(ns, &strings(["a", "b"]))
        .await
        .expect("lookup");
    got.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(
        (got[0].fingerprint, got[0].group.as_deref()),
        (fp(9), Some("g2"))
    );
    assert_eq!(
        got[1].fingerprint,
        fp(2),
        "a seen stamp keeps the fingerprint"
    );
    assert_eq!(got[1].seen_run.as_deref(), Some("run-2"));
    assert_eq!(got[1].seen_at, Some(t0() + Duration::hours(1)));
    assert!(
        store
            .lookup(ns, &[])
            .await
            .expect("empty lookup")
            .is_empty()
    );
}

/// Unseen keys come in ascending byte order, in keyset pages, filtered by group.
pub async fn fingerprint_unseen_keyset(store: &dyn FingerprintStore, ns: &str) {
    // Byte order, not a locale's: "B" < "Z" < "a" < "b" < "é" (0xC3 0xA9).
    let keys = [
        "a", "B", "é", "Z", "b", "k01", "k02", "k03", "k04", "k05", "k06",
    ];
    let upserts: Vec<FingerprintEntry> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| entry(k, i as u8, Some(if i % 2 == 0 { "even" } else { "odd" })))
        .collect();
    store
        .record(
            ns,
            &RecordBatch {
                run: "r1".into(),
                at: t0(),
                upserts,
                seen: vec![],
            },
        )
        .await
        .expect("record r1");
    // Run r2 sees "a" (applied) and "k03" (unchanged) only.
    store
        .record(
            ns,
            &RecordBatch {
                run: "r2".into(),
                at: t0() + Duration::minutes(30),
                upserts: vec![entry("a", 50, Some("even"))],
                seen: strings(["k03"]),
            },
        )
        .await
        .expect("record r2");
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .unseen(
                ns,
                &UnseenQuery {
                    run: "r2".into(),
                    group: None,
                    after: after.clone(),
                    limit: 3,
                },
            )
            .await
            .expect("unseen");
        assert!(page.len() <= 3);
        after = page.last().map(|r| r.key.clone());
        let done = page.len() < 3;
        all.extend(page.into_iter().map(|r| r.key));
        if done {
            break;
        }
    }
    assert_eq!(
        all,
        strings(["B", "Z", "b", "k01", "k02", "k04", "k05", "k06", "é"]),
        "unseen keys in byte order; seen ones (a, k03) excluded"
    );
    let odd = store
        .unseen(
            ns,
            &UnseenQuery {
                run: "r2".into(),
                group: Some("odd".into()),
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("unseen odd");
    let odd: Vec<String> = odd.into_iter().map(|r| r.key).collect();
    // indexes 1,3,5,7,9 → B, Z, k01, k03 (seen), k05
    assert_eq!(odd, strings(["B", "Z", "k01", "k05"]));
    let after_z = store
        .unseen(
            ns,
            &UnseenQuery {
                run: "r2".into(),
                group: None,
                after: Some("k06".into()),
                limit: 10,
            },
        )
        .await
        .expect("unseen after");
    assert_eq!(after_z.len(), 1);
    assert_eq!(after_z[0].key, "é");
}

/// `remove` deletes only the given keys of the given namespace.
pub async fn fingerprint_remove_and_namespaces(store: &dyn FingerprintStore, ns: &str) {
    let other = format!("{ns}-other");
    for n in [ns, other.as_str()] {
        store
            .record(
                n,
                &RecordBatch {
                    run: "r".into(),
                    at: t0(),
                    upserts: vec![entry("x", 1, None), entry("y", 2, None)],
                    seen: vec![],
                },
            )
            .await
            .expect("record");
    }
    assert_eq!(
        store
            .remove(ns, &strings(["x", "missing"]))
            .await
            .expect("remove"),
        1
    );
    let left: Vec<String> = store
        .lookup(ns, &strings(["x", "y"]))
        .await
        .expect("lookup")
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(left, strings(["y"]));
    assert_eq!(
        store
            .lookup(&other, &strings(["x", "y"]))
            .await
            .expect("lookup other")
            .len(),
        2,
        "another namespace is untouched"
    );
}

/// Bad input is refused with an input error and writes nothing.
pub async fn fingerprint_rejects_bad_input(store: &dyn FingerprintStore, ns: &str) {
    let bad_batches = [
        RecordBatch {
            run: "r".into(),
            at: t0(),
            upserts: vec![entry("ok", 1, None), entry("dup", 1, None)],
            seen: strings(["dup"]),
        },
        RecordBatch {
            run: "r".into(),
            at: t0(),
            upserts: vec![entry("ok", 1, None), entry("", 1, None)],
            seen: vec![],
        },
        RecordBatch {
            run: "r".into(),
            at: t0(),
            upserts: vec![entry("ok", 1, None)],
            seen: (0..limits::MAX_BATCH).map(|i| format!("k{i}")).collect(),
        },
        RecordBatch {
            run: "r".into(),
            at: t0(),
            upserts: vec![
                entry("ok", 1, None),
                entry(&"k".repeat(limits::MAX_KEY_LEN + 1), 1, None),
            ],
            seen: vec![],
        },
    ];
    for b in &bad_batches {
        let e = store
            .record(ns, b)
            .await
            .expect_err("bad batch must be refused");
        assert!(!e.is_transient(), "{e}");
    }
    assert!(
        store
            .lookup(ns, &strings(["ok"]))
            .await
            .expect("lookup")
            .is_empty(),
        "a refused batch writes nothing"
    );
    let q = UnseenQuery {
        run: "r".into(),
        group: None,
        after: None,
        limit: 0,
    };
    assert!(matches!(
        store.unseen(ns, &q).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(store.lookup("", &strings(["a"])).await.is_err());
}

/// Every lineage-store check.
pub async fn lineage_store(store: &dyn LineageStore, prefix: &str) {
    lineage_upsert_semantics(store, &format!("{prefix}-lin-up")).await;
    lineage_scenario_c_gaps(store, &format!("{prefix}-lin-gaps")).await;
    lineage_stuck_keyset(store, &format!("{prefix}-lin-stuck")).await;
    lineage_quality_counts(store, &format!("{prefix}-lin-q")).await;
    lineage_rejects_bad_input(store, &format!("{prefix}-lin-bad")).await;
}

/// Insert, update, stale reports, kept stage times, replaced-only-when-given fields.
pub async fn lineage_upsert_semantics(store: &dyn LineageStore, p: &str) {
    let t = |m: i64| t0() + Duration::minutes(m);
    let first = LineageUpdate::new(
        "5007T000002AbcD",
        "extracted",
        LineageStatus::InProgress,
        t(0) + Duration::nanoseconds(1_999),
    )
    .with_fingerprint(fp(1))
    .with_metadata(json!({"task_count": 2, "fields_populated": 38}));
    assert_eq!(store.upsert(p, &[first]).await.expect("insert"), 1);
    let failed = LineageUpdate::new(
        "5007T000002AbcD",
        "pii_removed",
        LineageStatus::Failed,
        t(7),
    )
    .with_error("regex timeout")
    .as_retry();
    assert_eq!(store.upsert(p, &[failed]).await.expect("update"), 1);
    let r = &store
        .get(p, &strings(["5007T000002AbcD", "nope"]))
        .await
        .expect("get")[0];
    assert_eq!(r.stage, "pii_removed");
    assert_eq!(r.status, LineageStatus::Failed);
    assert_eq!(r.stage_at, t(7));
    assert_eq!(
        r.stage_times.get("extracted"),
        Some(&(t(0) + Duration::microseconds(1)))
    );
    assert_eq!(r.stage_times.get("pii_removed"), Some(&t(7)));
    assert_eq!(r.fingerprint, Some(fp(1)), "kept when not given");
    assert_eq!(r.metadata["fields_populated"], 38, "kept when not given");
    assert_eq!(r.retry_count, 1);
    assert_eq!(r.last_error.as_deref(), Some("regex timeout"));
    assert_eq!(r.created_at, t(0) + Duration::microseconds(1));
    assert_eq!(r.updated_at, t(7));
    // A stale report (older than the row) changes nothing.
    let stale = LineageUpdate::new(
        "5007T000002AbcD",
        "extracted",
        LineageStatus::InProgress,
        t(5),
    );
    assert_eq!(store.upsert(p, &[stale]).await.expect("stale"), 0);
    // A success clears the error; metadata and fingerprint are replaced when given.
    let done = LineageUpdate::new("5007T000002AbcD", "loaded", LineageStatus::Completed, t(12))
        .with_fingerprint(fp(2))
        .with_metadata(json!({"fields_populated": 40}));
    assert_eq!(store.upsert(p, &[done]).await.expect("done"), 1);
    let r = &store
        .get(p, &strings(["5007T000002AbcD"]))
        .await
        .expect("get")[0];
    assert_eq!(
        (r.stage.as_str(), r.status),
        ("loaded", LineageStatus::Completed)
    );
    assert_eq!(r.last_error, None);
    assert_eq!(r.fingerprint, Some(fp(2)));
    assert_eq!(r.metadata, json!({"fields_populated": 40}));
    assert_eq!(r.retry_count, 1);
    assert_eq!(r.stage_times.len(), 3);
    // An update at the same instant as the row applies (not stale).
    let same =
        LineageUpdate::new("5007T000002AbcD", "loaded", LineageStatus::Completed, t(12)).as_retry();
    assert_eq!(store.upsert(p, &[same]).await.expect("same instant"), 1);
    // Empty metadata defaults to an empty object.
    store
        .upsert(
            p,
            &[LineageUpdate::new(
                "bare",
                "extracted",
                LineageStatus::InProgress,
                t(0),
            )],
        )
        .await
        .expect("bare");
    let bare = &store.get(p, &strings(["bare"])).await.expect("get")[0];
    assert_eq!(bare.metadata, json!({}));
    assert_eq!(bare.fingerprint, None);
}

/// Scenario C: source 10,000; tracked 9,950; pii 9,940; embedded 9,920; loaded 9,900.
pub async fn lineage_scenario_c_gaps(store: &dyn LineageStore, p: &str) {
    let stages =
        Stages::new(["extracted", "pii_removed", "embedding_generated", "loaded"]).expect("stages");
    let mut all = Vec::with_capacity(9_950);
    for i in 0..9_950u32 {
        let (stage, status) = match i {
            0..10 => ("extracted", LineageStatus::Failed),
            10..30 => ("pii_removed", LineageStatus::Failed),
            30..45 => ("embedding_generated", LineageStatus::Failed),
            45..50 => ("embedding_generated", LineageStatus::InProgress),
            _ => ("loaded", LineageStatus::Completed),
        };
        all.push(LineageUpdate::new(
            format!("case-{i:05}"),
            stage,
            status,
            t0(),
        ));
    }
    for chunk in all.chunks(1_000) {
        store.upsert(p, chunk).await.expect("upsert chunk");
    }
    let counts = store.stage_counts(p).await.expect("stage counts");
    let g = analyse_gaps(&stages, 10_000, &counts);
    let gaps: Vec<(u64, u64)> = g.stages.iter().map(|s| (s.reached, s.gap)).collect();
    assert_eq!(gaps, [(9_950, 50), (9_940, 10), (9_920, 20), (9_900, 20)]);
    assert_eq!(g.total_gap, 100);
    assert_eq!(g.failed, 45);
    assert_eq!(g.completed, 9_900);
}

/// Stuck rows: `in_progress`, reported before the cutoff, optional stage, keyset by key.
pub async fn lineage_stuck_keyset(store: &dyn LineageStore, p: &str) {
    let t = |m: i64| t0() + Duration::minutes(m);
    let rows = vec![
        LineageUpdate::new("k1", "pii_removed", LineageStatus::InProgress, t(0)),
        LineageUpdate::new("k2", "pii_removed", LineageStatus::InProgress, t(50)),
        LineageUpdate::new("k3", "embedding_generated", LineageStatus::InProgress, t(1)),
        LineageUpdate::new("k4", "pii_removed", LineageStatus::Failed, t(0)),
        LineageUpdate::new("k5", "loaded", LineageStatus::Completed, t(0)),
        LineageUpdate::new("k6", "pii_removed", LineageStatus::InProgress, t(2)),
        LineageUpdate::new("k7", "pii_removed", LineageStatus::InProgress, t(60)),
    ];
    store.upsert(p, &rows).await.expect("upsert");
    let q = |stage: Option<&str>, after: Option<&str>, limit| StuckQuery {
        stage: stage.map(Into::into),
        entered_before: t(60),
        after: after.map(Into::into),
        limit,
    };
    let keys = |v: Vec<crate::LineageRecord>| v.into_iter().map(|r| r.key).collect::<Vec<_>>();
    assert_eq!(
        keys(store.stuck(p, &q(None, None, 10)).await.expect("stuck")),
        strings(["k1", "k2", "k3", "k6"]),
        "strictly before the cutoff, in_progress only"
    );
    assert_eq!(
        keys(
            store
                .stuck(p, &q(Some("pii_removed"), None, 2))
                .await
                .expect("page 1")
        ),
        strings(["k1", "k2"])
    );
    assert_eq!(
        keys(
            store
                .stuck(p, &q(Some("pii_removed"), Some("k2"), 2))
                .await
                .expect("page 2")
        ),
        strings(["k6"])
    );
}

/// Coverage and populated-fields counts over the metadata.
pub async fn lineage_quality_counts(store: &dyn LineageStore, p: &str) {
    let metas = [
        json!({"task_count": 2, "workorder_count": 1, "fields_populated": 38}),
        json!({"task_count": 1, "workorder_count": 0, "fields_populated": 30}),
        json!({"task_count": 0, "fields_populated": 21}),
        json!({"task_count": "3", "fields_populated": 29.5}),
        json!({"task_count": null}),
        json!({"task_count": 0.5, "fields_populated": 44}),
    ];
    let rows: Vec<LineageUpdate> = metas
        .iter()
        .enumerate()
        .map(|(i, m)| {
            LineageUpdate::new(format!("c{i}"), "loaded", LineageStatus::Completed, t0())
                .with_metadata(m.clone())
        })
        .collect();
    store.upsert(p, &rows).await.expect("upsert");
    let q = QualityQuery {
        present: strings(["task_count", "workorder_count", "comment_count"]),
        below: Some(("fields_populated".into(), 30)),
    };
    let c = store.quality_counts(p, &q).await.expect("quality counts");
    assert_eq!(c.total, 6);
    assert_eq!(
        c.present,
        vec![
            ("task_count".to_owned(), 3),
            ("workorder_count".to_owned(), 1),
            ("comment_count".to_owned(), 0)
        ],
        "present = a JSON number > 0 (a string \"3\" or null is not)"
    );
    assert_eq!(c.below, 3, "21, 29.5 and missing are below 30; 30 is not");
    let none = store
        .quality_counts(&format!("{p}-empty"), &q)
        .await
        .expect("empty pipeline");
    assert_eq!(none.total, 0);
    assert_eq!(none.below, 0);
}

/// Bad lineage input is refused whole.
pub async fn lineage_rejects_bad_input(store: &dyn LineageStore, p: &str) {
    let ok = LineageUpdate::new("ok", "extracted", LineageStatus::InProgress, t0());
    let bad = [
        vec![ok.clone(), ok.clone()],
        vec![
            ok.clone(),
            LineageUpdate::new("x", "bad stage", LineageStatus::InProgress, t0()),
        ],
        vec![ok.clone(), ok.clone().with_metadata(json!("not an object"))],
        vec![
            ok.clone(),
            LineageUpdate::new("x", "extracted", LineageStatus::InProgress, t0())
                .with_metadata(json!({"big": "x".repeat(limits::MAX_METADATA_BYTES)})),
        ],
    ];
    for b in &bad {
        assert!(store.upsert(p, b).await.is_err());
    }
    assert!(
        store
            .get(p, &strings(["ok"]))
            .await
            .expect("get")
            .is_empty()
    );
    let q = StuckQuery {
        stage: None,
        entered_before: t0(),
        after: None,
        limit: 0,
    };
    assert!(store.stuck(p, &q).await.is_err());
    let bad_key = QualityQuery {
        present: strings(["task count"]),
        below: None,
    };
    assert!(store.quality_counts(p, &bad_key).await.is_err());
}

/// Every failed-record-store check.
pub async fn failed_record_store(store: &dyn FailedRecordStore, prefix: &str) {
    failed_record_and_due(store, &format!("{prefix}-fr-due")).await;
    failed_apply_compare_and_set(store, &format!("{prefix}-fr-apply")).await;
    failed_counts_list_prune(store, &format!("{prefix}-fr-prune")).await;
    failed_rejects_bad_input(store, &format!("{prefix}-fr-bad")).await;
}

fn failure(key: &str, stage: &str, error_type: &str, at: DateTime<Utc>) -> NewFailure {
    NewFailure {
        key: key.into(),
        stage: stage.into(),
        error_type: error_type.into(),
        message: format!("{error_type} for {key}"),
        payload: json!({"key": key, "text": "ProLiant DL380"}),
        at,
    }
}

fn ids(v: &[crate::FailedRecord]) -> Vec<(String, String)> {
    v.iter().map(|r| (r.key.clone(), r.stage.clone())).collect()
}

/// Recording, re-recording, reopening, and due pages by (key, stage).
pub async fn failed_record_and_due(store: &dyn FailedRecordStore, p: &str) {
    let t = |m: i64| t0() + Duration::minutes(m);
    let batch = vec![
        failure(
            "b",
            "loaded",
            "WeaviateTimeout",
            t(0) + Duration::nanoseconds(500),
        ),
        failure("a", "pii_removed", "PIIRemovalFailure", t(1)),
        failure("a", "embedding_generated", "EmbeddingAPITimeout", t(2)),
        failure("c", "embedding_generated", "EmbeddingAPITimeout", t(30)),
    ];
    assert_eq!(store.record(p, &batch).await.expect("record"), 4);
    let due = |now, after: Option<FailureId>, limit| DueQuery { now, after, limit };
    let page = store.due(p, &due(t(10), None, 10)).await.expect("due");
    assert_eq!(
        ids(&page),
        vec![
            ("a".into(), "embedding_generated".into()),
            ("a".into(), "pii_removed".into()),
            ("b".into(), "loaded".into())
        ],
        "due now (c is due at t+30), ordered by (key, stage)"
    );
    let r = &page[2];
    assert_eq!(r.state, FailureState::Open);
    assert_eq!(r.attempts, 0);
    assert_eq!(r.first_failed_at, t(0));
    assert_eq!(
        r.next_attempt_at,
        Some(t(0)),
        "due at once, microsecond precision"
    );
    assert_eq!(r.payload["text"], "ProLiant DL380");
    let p2 = store
        .due(p, &due(t(60), Some(page[1].id()), 10))
        .await
        .expect("due after");
    assert_eq!(
        ids(&p2),
        vec![
            ("b".into(), "loaded".into()),
            ("c".into(), "embedding_generated".into())
        ]
    );
    // Recording again an open failure replaces the error but keeps the episode.
    let mut again = failure("b", "loaded", "WeaviateClusterBusy", t(20));
    again.payload = json!({"v": 2});
    store.record(p, &[again]).await.expect("record again");
    let l = store
        .list(
            p,
            &ListQuery {
                state: None,
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    let b = l.iter().find(|r| r.key == "b").expect("b");
    assert_eq!(b.error_type, "WeaviateClusterBusy");
    assert_eq!(b.payload, json!({"v": 2}));
    assert_eq!(b.first_failed_at, t(0));
    assert_eq!(b.last_failed_at, t(20));
    assert_eq!(b.next_attempt_at, Some(t(0)), "schedule kept");
}

/// Outcomes apply only where the row is as read.
pub async fn failed_apply_compare_and_set(store: &dyn FailedRecordStore, p: &str) {
    let t = |m: i64| t0() + Duration::minutes(m);
    store
        .record(
            p,
            &[
                failure("r1", "embedding_generated", "EmbeddingAPITimeout", t(0)),
                failure("r2", "embedding_generated", "EmbeddingAPITimeout", t(0)),
                failure("r3", "pii_removed", "PIIRemovalFailure", t(0)),
                failure("r4", "loaded", "WeaviateTimeout", t(0)),
            ],
        )
        .await
        .expect("record");
    let rows = store
        .due(
            p,
            &DueQuery {
                now: t(60),
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("due");
    assert_eq!(rows.len(), 4);
    let outcome = |r: &crate::FailedRecord, kind| FailureOutcome {
        id: r.id(),
        expected_attempts: r.attempts,
        expected_last_failed_at: r.last_failed_at,
        attempts: r.attempts + 1,
        at: t(60),
        kind,
    };
    // r4 fails again meanwhile: its outcome must not apply.
    store
        .record(p, &[failure("r4", "loaded", "WeaviateTimeout", t(61))])
        .await
        .expect("concurrent failure");
    let outcomes = vec![
        outcome(
            &rows[0],
            OutcomeKind::Resolved {
                method: "fallback:nomic".into(),
            },
        ),
        outcome(
            &rows[1],
            OutcomeKind::Retry {
                next_attempt_at: t(120),
                error_type: "EmbeddingAPITimeout".into(),
                message: "still down".into(),
            },
        ),
        outcome(
            &rows[2],
            OutcomeKind::ManualReview {
                error_type: "PIIRemovalFailure".into(),
                message: "gave up".into(),
            },
        ),
        outcome(
            &rows[3],
            OutcomeKind::Resolved {
                method: "retry".into(),
            },
        ),
    ];
    assert_eq!(store.apply(p, &outcomes).await.expect("apply"), 3);
    assert_eq!(
        store.apply(p, &outcomes).await.expect("apply twice"),
        0,
        "a second apply of the same outcomes changes nothing"
    );
    let all = store
        .list(
            p,
            &ListQuery {
                state: None,
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    let by = |k: &str| all.iter().find(|r| r.key == k).expect("row").clone();
    let r1 = by("r1");
    assert_eq!(r1.state, FailureState::Resolved);
    assert_eq!(r1.resolution.as_deref(), Some("fallback:nomic"));
    assert_eq!(r1.resolved_at, Some(t(60)));
    assert_eq!(r1.next_attempt_at, None);
    assert_eq!(r1.attempts, 1);
    let r2 = by("r2");
    assert_eq!(
        (r2.state, r2.next_attempt_at),
        (FailureState::Open, Some(t(120)))
    );
    assert_eq!(
        (r2.message.as_str(), r2.last_failed_at),
        ("still down", t(60))
    );
    let r3 = by("r3");
    assert_eq!(
        (r3.state, r3.next_attempt_at),
        (FailureState::ManualReview, None)
    );
    let r4 = by("r4");
    assert_eq!(
        (r4.state, r4.attempts),
        (FailureState::Open, 0),
        "the new failure won"
    );
    // Not due: r2 before t+120, r3 in manual review, r1 resolved.
    let due = store
        .due(
            p,
            &DueQuery {
                now: t(119),
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("due");
    assert_eq!(ids(&due), vec![("r4".into(), "loaded".into())]);
    // A resolved record that fails again is reopened as a new episode.
    store
        .record(
            p,
            &[failure(
                "r1",
                "embedding_generated",
                "EmbeddingAPITimeout",
                t(200),
            )],
        )
        .await
        .expect("reopen");
    let r1 = store
        .list(
            p,
            &ListQuery {
                state: Some(FailureState::Open),
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("list open")
        .into_iter()
        .find(|r| r.key == "r1")
        .expect("reopened");
    assert_eq!(
        (r1.attempts, r1.first_failed_at, r1.resolution),
        (0, t(200), None)
    );
    assert_eq!(r1.resolved_at, None);
}

/// Grouping by error type, listing by state, and bounded retention pruning.
pub async fn failed_counts_list_prune(store: &dyn FailedRecordStore, p: &str) {
    let t = |d: i64| t0() + Duration::days(d);
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.push(failure(
            &format!("e{i}"),
            "embedding_generated",
            "EmbeddingAPITimeout",
            t(0),
        ));
    }
    for i in 0..3 {
        batch.push(failure(
            &format!("m{i}"),
            "extracted",
            "MissingResolutionField",
            t(0),
        ));
    }
    batch.push(failure("p0", "pii_removed", "PIIRemovalFailure", t(0)));
    store.record(p, &batch).await.expect("record");
    let rows = store
        .list(
            p,
            &ListQuery {
                state: None,
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("list");
    let resolve: Vec<FailureOutcome> = rows
        .iter()
        .filter(|r| r.key.starts_with('e') && r.key != "e4")
        .map(|r| FailureOutcome {
            id: r.id(),
            expected_attempts: 0,
            expected_last_failed_at: r.last_failed_at,
            attempts: 1,
            at: t(1),
            kind: OutcomeKind::Resolved {
                method: "retry".into(),
            },
        })
        .chain(
            rows.iter()
                .filter(|r| r.key == "p0")
                .map(|r| FailureOutcome {
                    id: r.id(),
                    expected_attempts: 0,
                    expected_last_failed_at: r.last_failed_at,
                    attempts: 3,
                    at: t(1),
                    kind: OutcomeKind::ManualReview {
                        error_type: "PIIRemovalFailure".into(),
                        message: "regex timeout".into(),
                    },
                }),
        )
        .collect();
    assert_eq!(store.apply(p, &resolve).await.expect("apply"), 5);
    let counts = store.counts_by_error_type(p).await.expect("counts");
    let counts: Vec<(String, u64, u64)> = counts
        .into_iter()
        .map(|c| (c.error_type, c.open, c.manual_review))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("EmbeddingAPITimeout".into(), 1, 0),
            ("MissingResolutionField".into(), 3, 0),
            ("PIIRemovalFailure".into(), 0, 1)
        ],
        "unresolved only, by error type"
    );
    let resolved = store
        .list(
            p,
            &ListQuery {
                state: Some(FailureState::Resolved),
                after: None,
                limit: 2,
            },
        )
        .await
        .expect("list resolved");
    assert_eq!(ids(&resolved).len(), 2);
    let rest = store
        .list(
            p,
            &ListQuery {
                state: Some(FailureState::Resolved),
                after: Some(resolved[1].id()),
                limit: 10,
            },
        )
        .await
        .expect("list resolved page 2");
    let keys: BTreeSet<String> = resolved
        .iter()
        .chain(&rest)
        .map(|r| r.key.clone())
        .collect();
    assert_eq!(
        keys,
        ["e0", "e1", "e2", "e3"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    // Retention: the cutoff is strict (resolved exactly at it: kept) …
    let at_cutoff = PruneQuery {
        resolved_before: t(1),
        unresolved_before: None,
        limit: 100,
    };
    assert_eq!(store.prune(p, &at_cutoff).await.expect("prune none"), 0);
    // … and older resolved rows go, in bounded calls.
    let q = PruneQuery {
        resolved_before: t(91),
        unresolved_before: None,
        limit: 3,
    };
    assert_eq!(store.prune(p, &q).await.expect("prune 1"), 3);
    assert_eq!(store.prune(p, &q).await.expect("prune 2"), 1);
    assert_eq!(store.prune(p, &q).await.expect("prune 3"), 0);
    let left = store
        .list(
            p,
            &ListQuery {
                state: None,
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("list");
    assert_eq!(left.len(), 5, "unresolved rows are kept however old");
    let q = PruneQuery {
        resolved_before: t(91),
        unresolved_before: Some(t(2)),
        limit: 100,
    };
    assert_eq!(store.prune(p, &q).await.expect("prune unresolved"), 5);
}

/// Oversized payloads and duplicates are refused whole; long messages are cut.
pub async fn failed_rejects_bad_input(store: &dyn FailedRecordStore, p: &str) {
    let mut huge = failure("h", "loaded", "Big", t0());
    huge.payload = json!({"blob": "x".repeat(limits::MAX_PAYLOAD_BYTES)});
    let e = store
        .record(p, &[failure("ok", "loaded", "X", t0()), huge])
        .await
        .expect_err("payload over the limit");
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    let dup = [
        failure("d", "loaded", "X", t0()),
        failure("d", "loaded", "Y", t0()),
    ];
    assert!(store.record(p, &dup).await.is_err());
    let list = store
        .list(
            p,
            &ListQuery {
                state: None,
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert!(list.is_empty(), "nothing of a refused batch is written");
    let mut long = failure("long", "loaded", "X", t0());
    long.message = "é".repeat(limits::MAX_MESSAGE_BYTES);
    store
        .record(p, &[long])
        .await
        .expect("long message is cut, not refused");
    let got = store
        .list(
            p,
            &ListQuery {
                state: None,
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert!(got[0].message.len() <= limits::MAX_MESSAGE_BYTES);
    assert!(got[0].message.ends_with(limits::TRUNCATION_MARK));
    assert!(
        store
            .due(
                p,
                &DueQuery {
                    now: t0(),
                    after: None,
                    limit: 0
                }
            )
            .await
            .is_err()
    );
}
