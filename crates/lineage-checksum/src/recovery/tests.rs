use std::sync::Mutex;

use chrono::Duration as CDuration;
use serde_json::json;

use super::*;
use crate::failed::{FailureState, ListQuery, MockFailedRecordStore, NewFailure};
use crate::lineage::LineageStore;
use crate::memory::{MemoryFailedRecordStore, MemoryLineageStore};

fn now() -> DateTime<Utc> {
    "2024-11-04T06:00:00Z".parse().unwrap()
}

fn stages() -> Stages {
    Stages::new(["extracted", "pii_removed", "embedding_generated", "loaded"]).unwrap()
}

fn failure(key: &str, stage: &str, error_type: &str) -> NewFailure {
    NewFailure {
        key: key.into(),
        stage: stage.into(),
        error_type: error_type.into(),
        message: format!("{error_type} on {key}"),
        payload: json!({ "key": key }),
        at: now() - CDuration::hours(2),
    }
}

/// Behaves by key prefix; logs every call as (key, provider, tokio instant offset in ms).
#[derive(Default)]
struct FakeHandler {
    calls: Mutex<Vec<(String, Option<String>, u32)>>,
    start: Mutex<Option<tokio::time::Instant>>,
    elapsed_ms: Mutex<Vec<u128>>,
}

#[async_trait]
impl StageHandler for FakeHandler {
    async fn replay(&self, _ctx: &RunContext, r: &Replay) -> std::result::Result<(), ReplayError> {
        let start = *self
            .start
            .lock()
            .unwrap()
            .get_or_insert_with(tokio::time::Instant::now);
        self.elapsed_ms
            .lock()
            .unwrap()
            .push(start.elapsed().as_millis());
        let n_calls = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((r.key.clone(), r.provider.clone(), r.attempt));
            calls.iter().filter(|c| c.0 == r.key).count()
        };
        let k = r.key.as_str();
        if k.starts_with("ok") {
            Ok(())
        } else if k.starts_with("fb") {
            match r.provider.as_deref() {
                Some("nomic") => Ok(()),
                _ => Err(ReplayError::transient(
                    "EmbeddingAPITimeout",
                    "ChatHPE timeout after 60 s",
                )),
            }
        } else if k.starts_with("flaky") {
            // Fails the first replay, succeeds the second.
            if n_calls >= 2 {
                Ok(())
            } else {
                Err(ReplayError::transient(
                    "WeaviateTimeout",
                    "connection timeout",
                ))
            }
        } else if k.starts_with("bad") {
            Err(ReplayError::permanent(
                "MissingRequiredFields",
                "no resolution in SFDC",
            ))
        } else {
            Err(ReplayError::transient("PIIRemovalTimeout", "regex timeout"))
        }
    }
}

async fn seeded() -> Arc<MemoryFailedRecordStore> {
    let store = Arc::new(MemoryFailedRecordStore::new());
    store
        .record(
            "cases",
            &[
                failure("ok-1", "embedding_generated", "EmbeddingAPITimeout"),
                failure("ok-2", "embedding_generated", "EmbeddingAPITimeout"),
                failure("fb-1", "embedding_generated", "EmbeddingAPITimeout"),
                failure("flaky-1", "loaded", "WeaviateTimeout"),
                failure("pii-1", "pii_removed", "PIIRemovalTimeout"),
                failure("bad-1", "loaded", "MissingRequiredFields"),
            ],
        )
        .await
        .unwrap();
    store
}

fn reconciler(
    store: Arc<MemoryFailedRecordStore>,
    handler: Arc<FakeHandler>,
) -> RecoveryReconciler {
    // seed 003: pii 1 s, 2 s, 4 s; embedding primary then the nomic fallback, once per
    // run and back in 6 h; load 2 s, 4 s, 8 s.
    let pii = retry_policy::presets::api_call();
    let embed = DelaySchedule::new([Duration::from_secs(6 * 3600)], 10).unwrap();
    let load = retry_policy::presets::vector_store_load();
    RecoveryReconciler::new("cases", stages(), store)
        .unwrap()
        .stage(
            "pii_removed",
            StageRecovery::new(handler.clone(), Arc::new(pii)),
        )
        .unwrap()
        .stage(
            "embedding_generated",
            StageRecovery::new(handler.clone(), Arc::new(embed))
                .with_fallbacks(["nomic"])
                .unwrap(),
        )
        .unwrap()
        .stage("loaded", StageRecovery::new(handler, Arc::new(load)))
        .unwrap()
}

async fn all_rows(store: &MemoryFailedRecordStore) -> Vec<FailedRecord> {
    store
        .list(
            "cases",
            &ListQuery {
                state: None,
                after: None,
                limit: 100,
            },
        )
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn replays_with_policies_fallbacks_and_manual_review() {
    let store = seeded().await;
    let handler = Arc::new(FakeHandler::default());
    let lineage = Arc::new(MemoryLineageStore::new());
    let rec = reconciler(store.clone(), handler.clone()).with_lineage(lineage.clone());
    let report = rec.reconcile(&RunContext::new(now())).await.unwrap();

    assert_eq!(report.count(counters::DUE), 6);
    assert_eq!(
        report.count(counters::RECOVERED),
        4,
        "ok-1, ok-2, fb-1, flaky-1"
    );
    assert_eq!(
        report.count(counters::MANUAL_REVIEW),
        2,
        "pii-1 exhausted, bad-1 permanent"
    );
    assert_eq!(report.count(counters::RESCHEDULED), 0);
    assert_eq!(report.count(counters::STILL_FAILED), 2);
    assert_eq!(report.item_error_count(), 2);

    let summary: RecoverySummary =
        serde_json::from_value(report.details()[RECOVERY_DETAIL].clone()).unwrap();
    assert_eq!(
        summary.recovered_by_method,
        BTreeMap::from([("fallback:nomic".to_owned(), 1), ("retry".to_owned(), 3)])
    );

    let rows = all_rows(&store).await;
    let by = |k: &str| rows.iter().find(|r| r.key == k).unwrap().clone();
    assert_eq!(by("fb-1").resolution.as_deref(), Some("fallback:nomic"));
    assert_eq!(by("flaky-1").resolution.as_deref(), Some("retry"));
    assert_eq!(
        by("flaky-1").attempts,
        2,
        "one failed replay, then the successful one"
    );
    let pii = by("pii-1");
    assert_eq!(pii.state, FailureState::ManualReview);
    assert_eq!(
        pii.attempts, 4,
        "1 s, 2 s, 4 s apart, then the policy gave up"
    );
    assert!(
        pii.message.contains("gave up: 4 attempts made"),
        "{}",
        pii.message
    );
    let bad = by("bad-1");
    assert_eq!((bad.state, bad.attempts), (FailureState::ManualReview, 1));
    assert!(bad.message.contains("permanent"), "{}", bad.message);

    // The in-run waits followed the policies, on tokio's (paused) clock.
    let calls = handler.calls.lock().unwrap().clone();
    let pii_calls: Vec<u32> = calls
        .iter()
        .filter(|c| c.0 == "pii-1")
        .map(|c| c.2)
        .collect();
    assert_eq!(pii_calls, [1, 2, 3, 4]);
    let fb_calls: Vec<Option<String>> = calls
        .iter()
        .filter(|c| c.0 == "fb-1")
        .map(|c| c.1.clone())
        .collect();
    assert_eq!(
        fb_calls,
        [None, Some("nomic".to_owned())],
        "primary, then fallback"
    );
    let times = handler.elapsed_ms.lock().unwrap().clone();
    let pii_times: Vec<u128> = calls
        .iter()
        .zip(&times)
        .filter(|(c, _)| c.0 == "pii-1")
        .map(|(_, t)| *t)
        .collect();
    let gaps: Vec<u128> = pii_times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [1_000, 2_000, 4_000]);

    // The lineage says where the recovered records are now.
    let l = lineage
        .get(
            "cases",
            &["flaky-1".to_owned(), "fb-1".to_owned(), "pii-1".to_owned()],
        )
        .await
        .unwrap();
    let st = |k: &str| {
        let r = l.iter().find(|r| r.key == k).unwrap();
        (r.stage.clone(), r.status, r.retry_count)
    };
    assert_eq!(
        st("flaky-1"),
        ("loaded".into(), LineageStatus::Completed, 1)
    );
    assert_eq!(
        st("fb-1"),
        ("embedding_generated".into(), LineageStatus::InProgress, 1)
    );
    assert_eq!(
        st("pii-1"),
        ("extracted".into(), LineageStatus::Failed, 1),
        "failed again at pii_removed: failed at the stage before, not counted as reaching it"
    );

    // Idempotent: a second run finds nothing due.
    let again = rec.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(again.count(counters::DUE), 0);
    assert_eq!(again.count(counters::RECOVERED), 0);
}

#[tokio::test(start_paused = true)]
async fn a_far_retry_is_scheduled_for_a_later_run_and_recomputable() {
    let store = Arc::new(MemoryFailedRecordStore::new());
    store
        .record(
            "cases",
            &[failure(
                "down-1",
                "embedding_generated",
                "EmbeddingAPITimeout",
            )],
        )
        .await
        .unwrap();
    let handler = Arc::new(FakeHandler::default());
    let policy = DelaySchedule::new([Duration::from_secs(6 * 3600)], 10).unwrap();
    let rec = RecoveryReconciler::new("cases", stages(), store.clone())
        .unwrap()
        .stage(
            "embedding_generated",
            StageRecovery::new(handler.clone(), Arc::new(policy.clone()))
                .with_fallbacks(["nomic"])
                .unwrap(),
        )
        .unwrap();
    let report = rec.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(report.count(counters::RESCHEDULED), 1);
    let row = all_rows(&store).await.remove(0);
    let expected = policy.decide(&RetryAttempt {
        key: "down-1".into(),
        attempts_made: 1,
        first_failure_at: row.first_failed_at,
        now: now(),
        error_class: ErrorClass::Transient,
    });
    assert_eq!(
        RetryDecision::RetryAt(row.next_attempt_at.unwrap()),
        expected
    );
    assert_eq!(row.next_attempt_at, Some(now() + CDuration::hours(6)));

    // Not due an hour later; due six hours later.
    let early = rec
        .reconcile(&RunContext::new(now() + CDuration::hours(1)))
        .await
        .unwrap();
    assert_eq!(early.count(counters::DUE), 0);
    let later = rec
        .reconcile(&RunContext::new(now() + CDuration::hours(6)))
        .await
        .unwrap();
    assert_eq!(later.count(counters::DUE), 1);
    assert_eq!(all_rows(&store).await[0].attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn a_policy_that_never_waits_is_capped_per_run() {
    #[derive(Debug)]
    struct Immediately;
    impl StagePolicy for Immediately {
        fn decide(&self, a: &RetryAttempt) -> RetryDecision {
            RetryDecision::RetryAt(a.now)
        }
    }
    let store = Arc::new(MemoryFailedRecordStore::new());
    store
        .record(
            "cases",
            &[failure("pii-9", "pii_removed", "PIIRemovalTimeout")],
        )
        .await
        .unwrap();
    let handler = Arc::new(FakeHandler::default());
    let rec = RecoveryReconciler::new("cases", stages(), store.clone())
        .unwrap()
        .stage(
            "pii_removed",
            StageRecovery::new(handler.clone(), Arc::new(Immediately)),
        )
        .unwrap()
        .with_settings(RecoverySettings::new().max_inline_attempts(3))
        .unwrap();
    let report = rec.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(handler.calls.lock().unwrap().len(), 3);
    assert_eq!(report.count(counters::RESCHEDULED), 1);
}

#[tokio::test]
async fn dry_run_counts_due_records_and_replays_nothing() {
    let store = seeded().await;
    let mut handler = MockStageHandler::new();
    handler.expect_replay().never();
    let handler = Arc::new(handler);
    let policy = Arc::new(DelaySchedule::once());
    let rec = RecoveryReconciler::new("cases", stages(), store.clone())
        .unwrap()
        .stage(
            "loaded",
            StageRecovery::new(handler.clone(), policy.clone()),
        )
        .unwrap()
        .stage("pii_removed", StageRecovery::new(handler, policy))
        .unwrap();
    let before = all_rows(&store).await;
    let report = rec
        .reconcile(&RunContext::new(now()).with_dry_run(true))
        .await
        .unwrap();
    assert_eq!(report.count(counters::DUE), 6);
    assert_eq!(
        report.count(counters::UNHANDLED),
        3,
        "embedding has no handler here"
    );
    assert_eq!(report.count(counters::RECOVERED), 0);
    assert!(report.notes().iter().any(|n| n.contains("dry run")));
    assert!(
        report
            .notes()
            .iter()
            .any(|n| n.contains("embedding_generated"))
    );
    assert_eq!(all_rows(&store).await, before, "nothing written");
}

#[tokio::test]
async fn a_failure_recorded_during_the_replay_wins_over_the_outcome() {
    struct FailsAgainMeanwhile(Arc<MemoryFailedRecordStore>);
    #[async_trait]
    impl StageHandler for FailsAgainMeanwhile {
        async fn replay(&self, _: &RunContext, r: &Replay) -> std::result::Result<(), ReplayError> {
            // The live pipeline fails the same record while recovery replays it.
            let mut f = failure(&r.key, &r.stage, "WeaviateTimeout");
            f.at = now() + CDuration::seconds(1);
            self.0.record("cases", &[f]).await.unwrap();
            Ok(())
        }
    }
    let store = Arc::new(MemoryFailedRecordStore::new());
    store
        .record("cases", &[failure("k", "loaded", "WeaviateTimeout")])
        .await
        .unwrap();
    let rec = RecoveryReconciler::new("cases", stages(), store.clone())
        .unwrap()
        .stage(
            "loaded",
            StageRecovery::new(
                Arc::new(FailsAgainMeanwhile(store.clone())),
                Arc::new(DelaySchedule::once()),
            ),
        )
        .unwrap();
    let report = rec.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(report.count(counters::CONFLICTS), 1);
    let row = all_rows(&store).await.remove(0);
    assert_eq!(
        row.state,
        FailureState::Open,
        "the new failure is not hidden"
    );
}

#[tokio::test]
async fn store_errors_fail_the_step_and_keep_the_transient_flag() {
    let mut store = MockFailedRecordStore::new();
    store.expect_due().returning(|_, _| {
        Err(Error::transient(
            "read due failures",
            std::io::Error::other("connection reset"),
        ))
    });
    let rec = RecoveryReconciler::new("cases", stages(), Arc::new(store)).unwrap();
    let err = rec.reconcile(&RunContext::new(now())).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn configuration_errors_are_clear() {
    let store: Arc<dyn FailedRecordStore> = Arc::new(MemoryFailedRecordStore::new());
    let handler: Arc<dyn StageHandler> = Arc::new(FakeHandler::default());
    let once: Arc<dyn StagePolicy> = Arc::new(DelaySchedule::once());
    let r = RecoveryReconciler::new("cases", stages(), store.clone()).unwrap();
    assert!(matches!(
        r.stage(
            "weaviate_load",
            StageRecovery::new(handler.clone(), once.clone())
        ),
        Err(Error::UnknownStage { .. })
    ));
    let r = RecoveryReconciler::new("cases", stages(), store.clone())
        .unwrap()
        .stage("loaded", StageRecovery::new(handler.clone(), once.clone()))
        .unwrap();
    assert!(
        r.stage("loaded", StageRecovery::new(handler.clone(), once.clone()))
            .is_err()
    );
    assert!(
        StageRecovery::new(handler, once)
            .with_fallbacks(["nomic", "nomic"])
            .is_err()
    );
    assert!(DelaySchedule::new([], 3).is_err());
    assert!(DelaySchedule::new([Duration::from_secs(1)], 0).is_err());
    assert!(
        RecoveryReconciler::new("cases", stages(), store)
            .unwrap()
            .with_settings(RecoverySettings::new().batch_size(0))
            .is_err()
    );
}

#[test]
fn delay_schedule_is_a_pure_function_of_its_inputs() {
    let p = DelaySchedule::new([1, 2, 4].map(Duration::from_secs), 4).unwrap();
    let a = |n, class| RetryAttempt {
        key: "k".into(),
        attempts_made: n,
        first_failure_at: now(),
        now: now(),
        error_class: class,
    };
    let at = |s| RetryDecision::RetryAt(now() + CDuration::seconds(s));
    assert_eq!(p.decide(&a(1, ErrorClass::Transient)), at(1));
    assert_eq!(p.decide(&a(2, ErrorClass::Transient)), at(2));
    assert_eq!(p.decide(&a(3, ErrorClass::Transient)), at(4));
    assert_eq!(
        p.decide(&a(4, ErrorClass::Transient)),
        RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted(4))
    );
    assert_eq!(
        p.decide(&a(1, ErrorClass::Permanent)),
        RetryDecision::GiveUp(GiveUpReason::Permanent)
    );
    // Past the list the last delay repeats.
    let long = DelaySchedule::new([Duration::from_secs(5)], 100).unwrap();
    assert_eq!(long.decide(&a(50, ErrorClass::Transient)), at(5));
    assert_eq!(
        DelaySchedule::once().decide(&a(1, ErrorClass::Transient)),
        RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted(1))
    );
}

#[tokio::test]
async fn retention_prunes_old_resolved_records_and_runs_but_keeps_lineage() {
    let failures = Arc::new(MemoryFailedRecordStore::new());
    let mut old = failure("old", "loaded", "WeaviateTimeout");
    old.at = now() - CDuration::days(100);
    let mut open = failure("open", "loaded", "WeaviateTimeout");
    open.at = now() - CDuration::days(200);
    failures.record("cases", &[old, open]).await.unwrap();
    let rows = all_rows(&failures).await;
    let old_row = rows.iter().find(|r| r.key == "old").unwrap();
    failures
        .apply(
            "cases",
            &[FailureOutcome {
                id: old_row.id(),
                expected_attempts: 0,
                expected_last_failed_at: old_row.last_failed_at,
                attempts: 1,
                at: now() - CDuration::days(95),
                kind: OutcomeKind::Resolved {
                    method: "retry".into(),
                },
            }],
        )
        .await
        .unwrap();
    let runs = Arc::new(recon_core::MemoryRunLog::new());
    for days in [40, 10] {
        let t = now() - CDuration::days(days);
        runs.append(&recon_core::RunReport {
            id: recon_core::RunId::from_string(format!("run-{days}")),
            runner: "pipeline".into(),
            started_at: t,
            finished_at: t,
            duration_ms: 0,
            status: recon_core::RunStatus::Success,
            dry_run: false,
            steps: vec![],
            errors: vec![],
            notes: vec![],
        })
        .await
        .unwrap();
    }
    let lineage = MemoryLineageStore::new();
    lineage
        .upsert(
            "cases",
            &[LineageUpdate::new(
                "old",
                "loaded",
                LineageStatus::Completed,
                now() - CDuration::days(400),
            )],
        )
        .await
        .unwrap();
    let r = RetentionReconciler::new(
        "cases",
        failures.clone(),
        Some(runs.clone()),
        RetentionSettings::default(),
    )
    .unwrap();
    let dry = r
        .reconcile(&RunContext::new(now()).with_dry_run(true))
        .await
        .unwrap();
    assert_eq!(dry.count(retention_counters::FAILED_RECORDS_PRUNED), 0);
    assert_eq!(all_rows(&failures).await.len(), 2);
    let report = r.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(report.count(retention_counters::FAILED_RECORDS_PRUNED), 1);
    assert_eq!(report.count(retention_counters::RUNS_PRUNED), 1);
    let left = all_rows(&failures).await;
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].key, "open",
        "unresolved records are kept by default"
    );
    assert_eq!(runs.history("pipeline", 10).await.unwrap().len(), 1);
    assert_eq!(
        lineage
            .get("cases", &["old".to_owned()])
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn embedding_retries_the_primary_in_place_then_falls_back() {
    // seed 003: "retry embedding with ChatHPE (1 s, 2 s, 4 s); if ChatHPE still fails, use the
    // Nomic fallback" — a retry_policy::FallbackChain per replay.
    let store = Arc::new(MemoryFailedRecordStore::new());
    store
        .record(
            "cases",
            &[
                failure("fb-1", "embedding_generated", "EmbeddingAPITimeout"),
                failure("down-1", "embedding_generated", "EmbeddingAPITimeout"),
            ],
        )
        .await
        .unwrap();
    let handler = Arc::new(FakeHandler::default());
    let later = DelaySchedule::new([Duration::from_secs(6 * 3600)], 10).unwrap();
    let rec = RecoveryReconciler::new("cases", stages(), store.clone())
        .unwrap()
        .stage(
            "embedding_generated",
            StageRecovery::new(handler.clone(), Arc::new(later))
                .primary_retries(retry_policy::presets::api_call())
                .unwrap()
                .with_fallbacks(["nomic"])
                .unwrap(),
        )
        .unwrap();
    let report = rec.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(report.count(counters::RECOVERED), 1);
    assert_eq!(report.count(counters::RESCHEDULED), 1);
    assert_eq!(
        report.count(counters::REPLAYS),
        10,
        "4 ChatHPE + 1 Nomic, twice"
    );

    let calls = handler.calls.lock().unwrap().clone();
    let times = handler.elapsed_ms.lock().unwrap().clone();
    for key in ["down-1", "fb-1"] {
        let mine: Vec<(Option<String>, u128)> = calls
            .iter()
            .zip(&times)
            .filter(|(c, _)| c.0 == key)
            .map(|(c, t)| (c.1.clone(), *t))
            .collect();
        let providers: Vec<Option<&str>> = mine.iter().map(|c| c.0.as_deref()).collect();
        assert_eq!(providers, [None, None, None, None, Some("nomic")], "{key}");
        let gaps: Vec<u128> = mine.windows(2).map(|w| w[1].1 - w[0].1).collect();
        assert_eq!(
            gaps,
            [1_000, 2_000, 4_000, 0],
            "{key}: api_call in place, then Nomic"
        );
    }
    let rows = all_rows(&store).await;
    let by = |k: &str| rows.iter().find(|r| r.key == k).unwrap().clone();
    assert_eq!(by("fb-1").resolution.as_deref(), Some("fallback:nomic"));
    assert_eq!(
        by("fb-1").attempts,
        1,
        "one replay (of five provider calls)"
    );
    let down = by("down-1");
    assert_eq!(down.state, FailureState::Open);
    assert_eq!(down.next_attempt_at, Some(now() + CDuration::hours(6)));
}

#[test]
fn in_place_policies_must_end() {
    let handler: Arc<dyn StageHandler> = Arc::new(FakeHandler::default());
    let once: Arc<dyn StagePolicy> = Arc::new(DelaySchedule::once());
    let forever = retry_policy::RetryPolicy::builder().build().unwrap();
    let err = StageRecovery::new(handler.clone(), once.clone())
        .primary_retries(forever.clone())
        .unwrap_err();
    assert!(err.to_string().contains("for ever"), "{err}");
    assert!(
        StageRecovery::new(handler.clone(), once.clone())
            .with_fallback("nomic", forever)
            .is_err()
    );
    let sr = StageRecovery::new(handler, once)
        .with_fallback("nomic", retry_policy::presets::api_call())
        .unwrap();
    assert!(
        sr.clone()
            .with_fallback("nomic", retry_policy::presets::api_call())
            .is_err()
    );
    assert!(
        sr.with_fallbacks(["nomic", "other"]).is_ok(),
        "with_fallbacks replaces the list"
    );
}

#[test]
fn retry_policy_is_a_stage_policy() {
    let a = |n, class, first: DateTime<Utc>| RetryAttempt {
        key: "5007T000002AbcD".into(),
        attempts_made: n,
        first_failure_at: first,
        now: now(),
        error_class: class,
    };
    let at = |s| RetryDecision::RetryAt(now() + CDuration::seconds(s));
    let load = retry_policy::presets::vector_store_load();
    let d = |n| StagePolicy::decide(&load, &a(n, ErrorClass::Transient, now()));
    assert_eq!([d(1), d(2), d(3)], [at(2), at(4), at(8)]);
    assert_eq!(
        d(4),
        RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted(4))
    );
    // The record's first failure starts max_elapsed: two hours ago is past a one-hour limit.
    let bounded = retry_policy::RetryPolicy::builder()
        .backoff(retry_policy::Backoff::constant(Duration::from_secs(60)))
        .max_elapsed(Duration::from_secs(3600))
        .build()
        .unwrap();
    let decide = |first| StagePolicy::decide(&bounded, &a(1, ErrorClass::Transient, first));
    assert_eq!(decide(now()), at(60));
    match decide(now() - CDuration::hours(2)) {
        RetryDecision::GiveUp(GiveUpReason::Other(why)) => {
            assert!(why.contains("deadline"), "{why}")
        }
        other => panic!("expected a deadline give-up, got {other:?}"),
    }
    // Jitter comes from the key only: the same attempt gives the same decision.
    let jittered = retry_policy::presets::aws_full_jitter();
    let j = |key: &str| {
        StagePolicy::decide(
            &jittered,
            &RetryAttempt {
                key: key.into(),
                ..a(1, ErrorClass::Transient, now())
            },
        )
    };
    assert_eq!(j("a"), j("a"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_replay_never_counts_as_reaching_its_stage() {
    // Day 1: 4 records extracted; bad-1 and ok-1 got to embedding but failed the load, pii-1
    // failed PII removal, x-1 failed extraction itself (no lineage row at all).
    let lineage = Arc::new(MemoryLineageStore::new());
    let day1 = now() - CDuration::hours(2);
    let failed_at = |k: &str, stage: &str| {
        crate::LineageUpdate::new(k, stage, LineageStatus::Failed, day1).with_error("day 1")
    };
    lineage
        .upsert(
            "cases",
            &[
                failed_at("bad-1", "embedding_generated"),
                failed_at("ok-1", "embedding_generated"),
                failed_at("pii-1", "extracted"),
            ],
        )
        .await
        .unwrap();
    let store = Arc::new(MemoryFailedRecordStore::new());
    store
        .record(
            "cases",
            &[
                failure("bad-1", "loaded", "MissingRequiredFields"),
                failure("ok-1", "loaded", "WeaviateTimeout"),
                failure("pii-1", "pii_removed", "PIIRemovalTimeout"),
                failure("x-1", "extracted", "SFDCTimeout"),
            ],
        )
        .await
        .unwrap();
    let handler = Arc::new(FakeHandler::default());
    let rec = reconciler(store.clone(), handler.clone())
        .stage(
            "extracted",
            StageRecovery::new(handler.clone(), Arc::new(DelaySchedule::once())),
        )
        .unwrap()
        .with_lineage(lineage.clone());
    let report = rec.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(report.count(counters::RECOVERED), 1, "ok-1");
    assert_eq!(
        report.count(counters::MANUAL_REVIEW),
        3,
        "bad-1, pii-1, x-1"
    );

    let counts = lineage.stage_counts("cases").await.unwrap();
    let gaps = crate::analyse_gaps(&stages(), 4, &counts);
    let reached: Vec<(&str, u64)> = gaps
        .stages
        .iter()
        .map(|g| (g.stage.as_str(), g.reached))
        .collect();
    assert_eq!(
        reached,
        [
            ("extracted", 3),
            ("pii_removed", 2),
            ("embedding_generated", 2),
            ("loaded", 1),
        ],
        "only ok-1 was loaded; bad-1 failed the load again and pii-1 PII removal again"
    );
    let rows = lineage
        .get("cases", &["bad-1".into(), "pii-1".into(), "x-1".into()])
        .await
        .unwrap();
    let st = |k: &str| {
        rows.iter().find(|r| r.key == k).map(|r| {
            (
                r.stage.clone(),
                r.status,
                r.retry_count,
                r.last_error.is_some(),
            )
        })
    };
    assert_eq!(
        st("bad-1"),
        Some(("embedding_generated".into(), LineageStatus::Failed, 1, true))
    );
    assert_eq!(
        st("pii-1"),
        Some(("extracted".into(), LineageStatus::Failed, 1, true))
    );
    assert_eq!(
        st("x-1"),
        None,
        "failed at the first stage: it reached no stage"
    );
}

/// A failed-record store whose database goes away after the first page of due records.
struct DownAfterFirstPage {
    inner: Arc<MemoryFailedRecordStore>,
    dues: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl FailedRecordStore for DownAfterFirstPage {
    async fn record(&self, p: &str, f: &[NewFailure]) -> Result<u64> {
        self.inner.record(p, f).await
    }
    async fn due(&self, p: &str, q: &DueQuery) -> Result<Vec<FailedRecord>> {
        if self.dues.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
            return Err(Error::transient(
                "read due failures",
                std::io::Error::other("connection reset"),
            ));
        }
        self.inner.due(p, q).await
    }
    async fn apply(&self, p: &str, o: &[FailureOutcome]) -> Result<u64> {
        self.inner.apply(p, o).await
    }
    async fn counts_by_error_type(&self, p: &str) -> Result<Vec<crate::failed::ErrorTypeCount>> {
        self.inner.counts_by_error_type(p).await
    }
    async fn list(&self, p: &str, q: &ListQuery) -> Result<Vec<FailedRecord>> {
        self.inner.list(p, q).await
    }
    async fn prune(&self, p: &str, q: &crate::failed::PruneQuery) -> Result<u64> {
        self.inner.prune(p, q).await
    }
}

/// The store goes away after the first batch of replays was written: the runner still reports
/// the records that batch recovered (the step checkpoints every batch).
#[tokio::test]
async fn a_recovery_that_fails_half_way_reports_the_batches_it_wrote() {
    let inner = Arc::new(MemoryFailedRecordStore::new());
    let keys = ["ok-1", "ok-2", "ok-3", "ok-4"];
    let failures: Vec<NewFailure> = keys
        .iter()
        .map(|k| failure(k, "loaded", "WeaviateTimeout"))
        .collect();
    inner.record("cases", &failures).await.unwrap();
    let store = Arc::new(DownAfterFirstPage {
        inner: inner.clone(),
        dues: Default::default(),
    });
    let handler = Arc::new(FakeHandler::default());
    let load = retry_policy::presets::vector_store_load();
    let rec = RecoveryReconciler::new("cases", stages(), store)
        .unwrap()
        .stage("loaded", StageRecovery::new(handler, Arc::new(load)))
        .unwrap()
        .with_settings(RecoverySettings::new().batch_size(2))
        .unwrap();
    let s = run_alone(rec).await;
    assert_eq!(s.status, recon_core::StepStatus::Failed);
    let resolved = all_rows(&inner)
        .await
        .iter()
        .filter(|r| r.state == FailureState::Resolved)
        .count() as u64;
    assert_eq!(resolved, 2, "the first batch is written");
    assert_eq!(s.report.count(counters::RECOVERED), 2, "and reported");
}

/// Retention deletes one batch, then the store goes away: the deleted records are reported.
#[tokio::test]
async fn a_retention_that_fails_half_way_reports_what_it_deleted() {
    let mut store = MockFailedRecordStore::new();
    let mut seq = mockall::Sequence::new();
    store
        .expect_prune()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, q| Ok(q.limit as u64));
    store
        .expect_prune()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| {
            Err(Error::transient(
                "prune failed records",
                std::io::Error::other("connection reset"),
            ))
        });
    let settings = RetentionSettings {
        batch_size: 2,
        ..RetentionSettings::default()
    };
    let step = RetentionReconciler::new("cases", Arc::new(store), None, settings).unwrap();
    let s = run_alone(step).await;
    assert_eq!(s.status, recon_core::StepStatus::Failed);
    assert_eq!(s.report.count(retention_counters::FAILED_RECORDS_PRUNED), 2);
}

/// `step` run alone by a runner at `now()`: its outcome, as the run log gets it.
async fn run_alone(step: impl Reconciler + 'static) -> recon_core::StepOutcome {
    let mut report = recon_core::Runner::builder("run")
        .time_source(Arc::new(recon_core::ManualClock::at(now())))
        .step(step)
        .build()
        .unwrap()
        .run()
        .await;
    report.steps.remove(0)
}
