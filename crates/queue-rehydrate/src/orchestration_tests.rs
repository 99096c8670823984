//! Orchestration of the reconcilers against mocked stores: which calls happen, in which
//! order, and that an error stops the step before anything else is attempted.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use mockall::Sequence;
use mockall::predicate::{always, eq};
use recon_core::{Reconciler, RunContext};

use crate::conformance::{
    clear_expired_cooldowns, follow_up_eligibility, pending_orders, pin_plan, reservation,
    user_session_rows, user_sessions,
};
use crate::diff::{MockEntitySource, MockJobQueue, MockOrphanSweeper};
use crate::messages::MockMessageStore;
use crate::rebuild::{MockDerivedQueue, MockSourceStore};
use crate::{
    DiffSettings, Error, JobPlan, KeyType, MessageRecovery, Predicate, QueueDiffReconciler,
    QueuedJob, RecoverySettings, RehydrateReconciler, StatusCounts, SweepCounts,
};

fn now() -> DateTime<Utc> {
    crate::conformance::now()
}

fn outage() -> Error {
    Error::transient("db", std::io::Error::other("connection reset"))
}

fn rebuild(store: MockSourceStore, sink: MockDerivedQueue, batch: usize) -> RehydrateReconciler {
    RehydrateReconciler::builder("follow-up-queue", Arc::new(store), user_sessions())
        .maintenance(clear_expired_cooldowns())
        .candidates(follow_up_eligibility(), Arc::new(sink))
        .count(pending_orders())
        .batch_size(batch)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_maintenance_error_ends_the_step_before_anything_else() {
    let mut store = MockSourceStore::new();
    store
        .expect_apply_maintenance()
        .times(1)
        .returning(|_, _, _| Err(outage()));
    // no expectation for read/count/sink: any such call would fail the test
    let step = rebuild(store, MockDerivedQueue::new(), 10);
    let err = step.reconcile(&RunContext::new(now())).await.unwrap_err();
    assert!(err.is_transient(), "the transient flag survives: {err}");
}

#[tokio::test]
async fn a_read_error_mid_stream_stops_pushing_and_counting() {
    let rows = user_session_rows();
    let mut store = MockSourceStore::new();
    let mut seq = Sequence::new();
    store
        .expect_apply_maintenance()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(1));
    let first = rows[..2].to_vec();
    store
        .expect_read_matching()
        .with(always(), always(), eq(now()), eq(None), eq(2))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _, _, _, _| Ok(first.clone()));
    let after = Some(rows[1].key().clone());
    store
        .expect_read_matching()
        .with(always(), always(), eq(now()), eq(after), eq(2))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _, _| Err(outage()));
    let mut sink = MockDerivedQueue::new();
    sink.expect_begin_rebuild().times(1).returning(|| Ok(()));
    sink.expect_push_batch()
        .withf(|rows| rows.len() == 2)
        .times(1)
        .returning(|rows| Ok(rows.len() as u64));
    // finish_rebuild is not expected: an aborted rebuild must not prune the queue
    let step = rebuild(store, sink, 2);
    assert!(step.reconcile(&RunContext::new(now())).await.is_err());
}

#[tokio::test]
async fn one_store_call_per_rule_and_per_count_then_batches() {
    let rows = user_session_rows();
    let mut store = MockSourceStore::new();
    store
        .expect_apply_maintenance()
        .withf(|t, rule, n| {
            t == &user_sessions() && rule == &clear_expired_cooldowns() && *n == now()
        })
        .times(1)
        .returning(|_, _, _| Ok(1));
    let batch = rows[..2].to_vec();
    store
        .expect_read_matching()
        .withf(|_, p, _, _, _| p == &follow_up_eligibility())
        .times(1)
        .returning(move |_, _, _, _, _| Ok(batch.clone()));
    store
        .expect_count()
        .withf(|t, p, _| t == &pending_orders().table && p == &pending_orders().predicate)
        .times(1)
        .returning(|_, _, _| Ok(3));
    let mut sink = MockDerivedQueue::new();
    sink.expect_begin_rebuild().times(1).returning(|| Ok(()));
    sink.expect_push_batch()
        .times(1)
        .returning(|r| Ok(r.len() as u64));
    sink.expect_finish_rebuild()
        .with(eq(true))
        .times(1)
        .returning(|_| Ok(0));
    let report = rebuild(store, sink, 10)
        .reconcile(&RunContext::new(now()))
        .await
        .unwrap();
    let counters: Vec<(&str, u64)> = report.counters().iter().collect();
    assert_eq!(
        counters,
        vec![
            ("cooldowns_cleared", 1),
            ("candidates", 2),
            ("pending_orders", 3)
        ]
    );
}

#[tokio::test]
async fn a_dry_run_counts_rules_and_reads_the_superset_without_writing() {
    let rows = user_session_rows();
    let mut store = MockSourceStore::new();
    store
        .expect_count()
        .withf(|_, p, _| p == &clear_expired_cooldowns().when)
        .times(1)
        .returning(|_, _, _| Ok(1));
    let superset = Predicate::Or(vec![
        clear_expired_cooldowns().when,
        follow_up_eligibility(),
    ]);
    let all = rows.clone();
    store
        .expect_read_matching()
        .withf(move |_, p, _, _, _| p == &superset)
        .times(1)
        .returning(move |_, p, n, _, _| {
            Ok(all.iter().filter(|r| p.matches(r, n)).cloned().collect())
        });
    store
        .expect_count()
        .withf(|t, _, _| t == &pending_orders().table)
        .times(1)
        .returning(|_, _, _| Ok(3));
    // no apply_maintenance, no sink calls
    let report = rebuild(store, MockDerivedQueue::new(), 10)
        .reconcile(&RunContext::new(now()).with_dry_run(true))
        .await
        .unwrap();
    assert_eq!(report.get("cooldowns_cleared"), Some(1));
    assert_eq!(
        report.get("candidates"),
        Some(2),
        "as if the cooldown were cleared"
    );
}

#[tokio::test]
async fn a_store_repeating_a_page_is_an_error_not_a_loop() {
    let rows = user_session_rows();
    let mut store = MockSourceStore::new();
    store.expect_apply_maintenance().returning(|_, _, _| Ok(0));
    let page = rows[..2].to_vec();
    store
        .expect_read_matching()
        .times(2)
        .returning(move |_, _, _, _, _| Ok(page.clone()));
    let mut sink = MockDerivedQueue::new();
    sink.expect_begin_rebuild().returning(|| Ok(()));
    sink.expect_push_batch().returning(|r| Ok(r.len() as u64));
    let err = rebuild(store, sink, 2)
        .reconcile(&RunContext::new(now()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("keyset pagination is broken"),
        "{err}"
    );
    assert!(!err.is_transient());
}

#[tokio::test(start_paused = true)]
async fn at_the_deadline_the_rebuild_stops_and_the_queue_is_not_pruned() {
    let mut store = MockSourceStore::new();
    store
        .expect_apply_maintenance()
        .times(1)
        .returning(|_, _, _| Ok(0));
    let mut sink = MockDerivedQueue::new();
    sink.expect_begin_rebuild().times(1).returning(|| Ok(()));
    sink.expect_finish_rebuild()
        .with(eq(false))
        .times(1)
        .returning(|_| Ok(0));
    let ctx = RunContext::new(now()).with_deadline(Some(tokio::time::Instant::now()));
    let report = rebuild(store, sink, 10).reconcile(&ctx).await.unwrap();
    assert_eq!(report.get("candidates"), Some(0));
    assert_eq!(report.get("pending_orders"), None, "counts skipped");
    assert!(
        report.notes().iter().any(|n| n.contains("deadline")),
        "{report:?}"
    );
}

#[test]
fn counter_names_must_be_unique_and_snake_case() {
    let build = |name: &str| {
        RehydrateReconciler::builder("q", Arc::new(MockSourceStore::new()), user_sessions())
            .maintenance(clear_expired_cooldowns())
            .candidates(follow_up_eligibility(), Arc::new(MockDerivedQueue::new()))
            .candidates_counter(name)
            .build()
    };
    assert!(build("follow_up_candidates").is_ok());
    assert!(
        build("cooldowns_cleared")
            .unwrap_err()
            .to_string()
            .contains("twice")
    );
    assert!(matches!(build("followUp"), Err(Error::Config(_))));
    let zero = RehydrateReconciler::builder("q", Arc::new(MockSourceStore::new()), user_sessions())
        .batch_size(0)
        .build();
    assert!(zero.is_err());
}

// ----- queue diff ---------------------------------------------------------------------------

fn job_of(n: u32, which: usize) -> QueuedJob {
    crate::conformance::queued(&pin_plan(&reservation(n), now()).unwrap()[which])
}

fn diff(queue: MockJobQueue, entities: MockEntitySource, batch: usize) -> QueueDiffReconciler {
    let plan: Arc<dyn JobPlan> = Arc::new(pin_plan);
    QueueDiffReconciler::new("pin-jobs", Arc::new(queue), Arc::new(entities), plan)
        .with_settings(DiffSettings::new().batch_size(batch))
        .unwrap()
}

#[tokio::test]
async fn an_entity_lookup_error_stops_the_diff_before_any_write() {
    let mut queue = MockJobQueue::new();
    queue
        .expect_page()
        .times(1)
        .returning(|_, _| Ok(vec![job_of(1, 0), job_of(2, 0)]));
    let mut entities = MockEntitySource::new();
    entities.expect_key_type().return_const(KeyType::Text);
    entities
        .expect_get_many()
        .times(1)
        .returning(|_| Err(outage()));
    // no remove / reschedule / enqueue / entity page expected
    let err = diff(queue, entities, 10)
        .reconcile(&RunContext::new(now()))
        .await
        .unwrap_err();
    assert!(err.is_transient());
}

#[tokio::test]
async fn one_lookup_per_page_with_distinct_keys_and_a_dry_run_writes_nothing() {
    let mut queue = MockJobQueue::new();
    let mut seq = Sequence::new();
    // page 1: both jobs of reservation 1, one of reservation 2 (deleted)
    queue
        .expect_page()
        .with(eq(None), eq(3))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(vec![job_of(1, 0), job_of(2, 0), job_of(1, 1)]));
    queue
        .expect_page()
        .with(eq(Some("rev-res-001".to_owned())), eq(3))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(vec![]));
    queue
        .expect_existing()
        .withf(|ids| ids == ["gen-res-001", "rev-res-001"])
        .times(1)
        .returning(|ids| Ok(ids.to_vec()));
    let mut entities = MockEntitySource::new();
    entities.expect_key_type().return_const(KeyType::Text);
    entities
        .expect_get_many()
        .withf(|keys| keys == ["res-001".into(), "res-002".into()])
        .times(1)
        .returning(|_| Ok(vec![reservation(1)]));
    entities
        .expect_page()
        .times(1)
        .returning(|_, _| Ok(vec![reservation(1)]));
    let report = diff(queue, entities, 3)
        .reconcile(&RunContext::new(now()).with_dry_run(true))
        .await
        .unwrap();
    assert_eq!(report.get("orphaned"), Some(1));
    assert_eq!(report.get("enqueued"), Some(0));
    assert_eq!(
        report.get("batches"),
        Some(2),
        "one queue page, one entity page"
    );
}

// ----- message recovery ---------------------------------------------------------------------

#[tokio::test]
async fn a_sweep_error_stops_the_diff_before_anything_else() {
    let mut sweeper = MockOrphanSweeper::new();
    sweeper
        .expect_sweep_orphans()
        .with(eq(7), eq(false))
        .times(1)
        .returning(|_, _| Err(outage()));
    // no queue or entity call expected
    let err = diff(MockJobQueue::new(), MockEntitySource::new(), 7)
        .with_orphan_sweeper(Arc::new(sweeper))
        .reconcile(&RunContext::new(now()))
        .await
        .unwrap_err();
    assert!(err.is_transient());
}

fn sweep_only(
    queue: MockJobQueue,
    entities: MockEntitySource,
    sweeper: MockOrphanSweeper,
) -> QueueDiffReconciler {
    let plan: Arc<dyn JobPlan> = Arc::new(pin_plan);
    QueueDiffReconciler::new("pin-jobs", Arc::new(queue), Arc::new(entities), plan)
        .with_settings(
            DiffSettings::new()
                .batch_size(2)
                .remove_obsolete(false)
                .reschedule_drifted(false),
        )
        .unwrap()
        .with_orphan_sweeper(Arc::new(sweeper))
}

#[tokio::test]
async fn after_a_sweep_the_sweeper_lists_the_unjudged_jobs_and_the_queue_is_not_read() {
    let mut sweeper = MockOrphanSweeper::new();
    let mut seq = Sequence::new();
    sweeper
        .expect_sweep_orphans()
        .with(eq(2), eq(false))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| {
            Ok(SweepCounts {
                checked: 9,
                orphaned: 3,
                batches: 5,
            })
        });
    let mut keyless = job_of(2, 0);
    keyless.entity_key = crate::Value::Null;
    let mut wrong = job_of(5, 0);
    wrong.entity_key = crate::Value::Int(5);
    // a full page (a candidate that turns out fine is not reported), then a short one
    let first = vec![keyless, job_of(4, 0)];
    sweeper
        .expect_unjudged()
        .with(eq(None), eq(2))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(Some(first.clone())));
    sweeper
        .expect_unjudged()
        .with(eq(Some("gen-res-004".to_owned())), eq(2))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(Some(vec![wrong.clone()])));
    // no queue page, no get_many, no remove; pass 2 pages the (empty) entities
    let mut entities = MockEntitySource::new();
    entities.expect_key_type().return_const(KeyType::Text);
    entities.expect_page().times(1).returning(|_, _| Ok(vec![]));
    let report = sweep_only(MockJobQueue::new(), entities, sweeper)
        .reconcile(&RunContext::new(now()))
        .await
        .unwrap();
    assert_eq!(report.get("orphaned"), Some(3), "{report:?}");
    assert_eq!(report.get("batches"), Some(5 + 2), "{report:?}");
    let keys: Vec<&str> = report
        .item_errors()
        .iter()
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(keys, ["job gen-res-002", "job gen-res-005"], "{report:?}");
}

#[tokio::test]
async fn a_sweeper_repeating_an_unjudged_page_is_an_error() {
    let mut sweeper = MockOrphanSweeper::new();
    sweeper
        .expect_sweep_orphans()
        .returning(|_, _| Ok(SweepCounts::default()));
    let mut keyless = job_of(2, 0);
    keyless.entity_key = crate::Value::Null;
    sweeper
        .expect_unjudged()
        .times(2)
        .returning(move |_, _| Ok(Some(vec![keyless.clone(), keyless.clone()])));
    let mut entities = MockEntitySource::new();
    entities.expect_key_type().return_const(KeyType::Text);
    let err = sweep_only(MockJobQueue::new(), entities, sweeper)
        .reconcile(&RunContext::new(now()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("keyset pagination is broken"),
        "{err}"
    );
}

#[tokio::test]
async fn after_a_sweep_without_obsolete_or_drift_the_queue_is_read_but_no_entity_looked_up() {
    let mut sweeper = MockOrphanSweeper::new();
    sweeper
        .expect_sweep_orphans()
        .with(eq(2), eq(true))
        .times(1)
        .returning(|_, _| {
            Ok(SweepCounts {
                checked: 2,
                orphaned: 1,
                batches: 1,
            })
        });
    // this sweeper cannot list the jobs it skips: the reconciler reads the queue instead
    sweeper
        .expect_unjudged()
        .times(1)
        .returning(|_, _| Ok(None));
    let mut queue = MockJobQueue::new();
    let mut seq = Sequence::new();
    let mut keyless = job_of(2, 0);
    keyless.entity_key = crate::Value::Null;
    // the queue is read page by page (to find the keyless job); no entity is looked up, so
    // nothing is judged orphaned a second time after the dry-run sweep
    let page = [job_of(1, 0), keyless];
    queue
        .expect_page()
        .with(eq(None), eq(2))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(page.to_vec()));
    queue
        .expect_page()
        .with(eq(Some("gen-res-002".to_owned())), eq(2))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(vec![job_of(3, 0)]));
    let mut entities = MockEntitySource::new();
    entities.expect_key_type().return_const(KeyType::Text);
    // no get_many, no remove; pass 2 pages the (empty) entities
    entities.expect_page().times(1).returning(|_, _| Ok(vec![]));
    let plan: Arc<dyn JobPlan> = Arc::new(pin_plan);
    let step = QueueDiffReconciler::new("pin-jobs", Arc::new(queue), Arc::new(entities), plan)
        .with_settings(
            DiffSettings::new()
                .batch_size(2)
                .remove_obsolete(false)
                .reschedule_drifted(false),
        )
        .unwrap()
        .with_orphan_sweeper(Arc::new(sweeper));
    let report = step
        .reconcile(&RunContext::new(now()).with_dry_run(true))
        .await
        .unwrap();
    assert_eq!(report.get("orphaned"), Some(1), "{report:?}");
    assert_eq!(report.get("jobs_checked"), Some(3), "{report:?}");
    assert_eq!(report.item_error_count(), 1, "{:?}", report.item_errors());
    assert_eq!(report.item_errors()[0].key, "job gen-res-002");
    assert_eq!(report.details()["orphan_sweep"]["orphaned"], 1);
}

#[tokio::test]
async fn a_release_error_stops_recovery() {
    let mut store = MockMessageStore::new();
    store.expect_count_stuck().returning(|_| Ok(3));
    store
        .expect_release_stuck()
        .times(1)
        .returning(|_, _| Err(outage()));
    // no archive, no counts
    let step = MessageRecovery::new("messages", Arc::new(store));
    assert!(step.reconcile(&RunContext::new(now())).await.is_err());
}

#[tokio::test]
async fn recovery_works_in_bounded_statements() {
    let mut store = MockMessageStore::new();
    store
        .expect_count_stuck()
        .with(eq(Some(now() - TimeDelta::minutes(15))))
        .returning(|_| Ok(5));
    let mut left = 5_u64;
    store
        .expect_release_stuck()
        .with(eq(Some(now() - TimeDelta::minutes(15))), eq(2))
        .times(3)
        .returning(move |_, limit| {
            let n = left.min(limit as u64);
            left -= n;
            Ok(n)
        });
    let cutoff = now() - TimeDelta::days(7);
    store
        .expect_count_failed_before()
        .with(eq(cutoff))
        .returning(|_| Ok(0));
    store.expect_status_counts().times(1).returning(|| {
        Ok(StatusCounts {
            pending: 600,
            failed: 12,
            ..StatusCounts::default()
        })
    });
    let step = MessageRecovery::new("messages", Arc::new(store))
        .with_settings(
            RecoverySettings::new()
                .batch_size(2)
                .stuck_after(Some(TimeDelta::minutes(15)))
                .archive_after_days(Some(7)),
        )
        .unwrap();
    let report = step.reconcile(&RunContext::new(now())).await.unwrap();
    assert_eq!(report.get("stuck_released"), Some(5));
    assert_eq!(report.get("failed_archived"), Some(0));
    assert_eq!(report.details()["queue_health"]["overall"], "warning");
    assert!(report.notes().iter().any(|n| n == "queue health: warning"));
}

/// The queue goes away on its second page, after the first page's orphan was removed: the
/// runner still reports that removal with the error (the step checkpoints every write).
#[tokio::test]
async fn a_diff_that_fails_half_way_reports_what_it_removed() {
    let mut queue = MockJobQueue::new();
    let mut seq = Sequence::new();
    queue
        .expect_page()
        .with(eq(None), eq(2))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(vec![job_of(1, 0), job_of(2, 0)]));
    queue
        .expect_remove()
        .withf(|ids| ids == ["gen-res-002"])
        .times(1)
        .in_sequence(&mut seq)
        .returning(|ids| Ok(ids.len() as u64));
    queue
        .expect_page()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(outage()));
    let mut entities = MockEntitySource::new();
    entities.expect_key_type().return_const(KeyType::Text);
    entities
        .expect_get_many()
        .times(1)
        .returning(|_| Ok(vec![reservation(1)]));
    let s = run_alone(diff(queue, entities, 2)).await;
    assert_eq!(s.status, recon_core::StepStatus::Failed);
    assert_eq!(s.report.get("orphaned"), Some(1), "{:?}", s.report);
    assert_eq!(s.report.get("batches"), Some(1));
}

/// The sweep removed orphans, then the queue goes away: the sweep's removals are reported.
#[tokio::test]
async fn a_diff_that_fails_after_its_sweep_reports_the_sweep() {
    let mut sweeper = MockOrphanSweeper::new();
    sweeper.expect_sweep_orphans().times(1).returning(|_, _| {
        Ok(SweepCounts {
            orphaned: 7,
            batches: 1,
            ..Default::default()
        })
    });
    let mut queue = MockJobQueue::new();
    queue.expect_page().returning(|_, _| Err(outage()));
    let mut entities = MockEntitySource::new();
    entities.expect_key_type().return_const(KeyType::Text);
    let s = run_alone(sweep_only(queue, entities, sweeper)).await;
    assert_eq!(s.status, recon_core::StepStatus::Failed);
    assert_eq!(s.report.get("orphaned"), Some(7), "{:?}", s.report);
}

/// Message recovery releases one batch of stuck messages, then the store goes away: that
/// batch is reported.
#[tokio::test]
async fn a_message_recovery_that_fails_half_way_reports_what_it_released() {
    let mut store = MockMessageStore::new();
    store.expect_count_stuck().returning(|_| Ok(5));
    let mut seq = Sequence::new();
    store
        .expect_release_stuck()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, limit| Ok(limit as u64));
    store
        .expect_release_stuck()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(outage()));
    let step = MessageRecovery::new("messages", Arc::new(store))
        .with_settings(RecoverySettings::new().batch_size(2))
        .unwrap();
    let s = run_alone(step).await;
    assert_eq!(s.status, recon_core::StepStatus::Failed);
    assert_eq!(s.report.get("stuck_released"), Some(2), "{:?}", s.report);
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
