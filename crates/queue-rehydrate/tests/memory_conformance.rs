//! The conformance suite against the in-memory stores.

use std::sync::Arc;

use queue_rehydrate::conformance::{self, MemoryHarness};
use queue_rehydrate::{EntitySource, FailedMessageStore, JobQueue, MessageStore, SourceStore};

fn source(h: &MemoryHarness) -> Arc<dyn SourceStore> {
    Arc::new(h.source.clone())
}

#[tokio::test]
async fn scenario_a_user_sessions() {
    let h = MemoryHarness::new();
    conformance::scenario_a_user_sessions(source(&h), &h.source).await;
}

#[tokio::test]
async fn scenario_a_dry_run() {
    let h = MemoryHarness::new();
    conformance::scenario_a_dry_run(source(&h), &h.source).await;
}

#[tokio::test]
async fn predicates_match_the_reference_evaluator() {
    let h = MemoryHarness::new();
    conformance::predicates_match_the_reference_evaluator(source(&h), &h.source).await;
}

#[tokio::test]
async fn keyset_pagination() {
    let h = MemoryHarness::new();
    conformance::keyset_pagination(source(&h), &h.source).await;
}

#[tokio::test]
async fn bad_predicates_change_nothing() {
    let h = MemoryHarness::new();
    conformance::bad_predicates_change_nothing(source(&h), &h.source).await;
}

fn jobs(h: &MemoryHarness) -> (Arc<dyn JobQueue>, Arc<dyn EntitySource>) {
    (h.queue.clone(), h.reservations())
}

#[tokio::test]
async fn scenario_b_orphans() {
    let h = MemoryHarness::new();
    let (q, e) = jobs(&h);
    conformance::scenario_b_orphans(
        q,
        h.queue.as_ref(),
        e,
        &conformance::reservations(),
        &h.source,
    )
    .await;
}

#[tokio::test]
async fn scenario_b_uses_one_lookup_per_batch() {
    let h = MemoryHarness::new();
    let entities = h.reservations();
    conformance::scenario_b_orphans(
        h.queue.clone(),
        h.queue.as_ref(),
        entities.clone(),
        &conformance::reservations(),
        &h.source,
    )
    .await;
    // two runs of: 270 jobs in pages of 50 (6 pages; 5 after the first run's 296 jobs
    // → 6), 148 entities in pages of 50 (3 pages + nothing more)
    let calls = h.queue.calls();
    let (entity_pages, lookups) = entities.calls();
    assert_eq!(
        lookups, calls["page"],
        "one get_many per page of jobs: {calls:?}"
    );
    assert_eq!(
        calls["existing"], entity_pages,
        "one existence lookup per page of entities"
    );
    assert_eq!(calls["page"], 6 + 6, "{calls:?}");
    assert_eq!(entity_pages, 3 + 3);
    assert_eq!(
        calls.get("enqueue"),
        Some(&1),
        "missing jobs of one page enqueued at once"
    );
    assert_eq!(
        calls.get("remove"),
        Some(&1),
        "both orphans sat in one page"
    );
}

#[tokio::test]
async fn drift_obsolete_and_running_jobs() {
    let h = MemoryHarness::new();
    let (q, e) = jobs(&h);
    conformance::drift_obsolete_and_running_jobs(
        q,
        h.queue.as_ref(),
        e,
        &conformance::reservations(),
        &h.source,
    )
    .await;
}

#[tokio::test]
async fn queued_job_without_entity_key() {
    let h = MemoryHarness::new();
    let (q, e) = jobs(&h);
    conformance::queued_job_without_entity_key(
        q,
        h.queue.as_ref(),
        e,
        &conformance::reservations(),
        &h.source,
    )
    .await;
}

#[tokio::test]
async fn queued_job_with_wrong_key_type() {
    let h = MemoryHarness::new();
    let (q, e) = jobs(&h);
    conformance::queued_job_with_wrong_key_type(
        q,
        h.queue.as_ref(),
        e,
        &conformance::reservations(),
        &h.source,
    )
    .await;
}

fn messages(h: &MemoryHarness) -> (Arc<dyn MessageStore>, Arc<dyn FailedMessageStore>) {
    (h.messages.clone(), h.messages.clone())
}

#[tokio::test]
async fn scenario_d_stuck_messages() {
    let h = MemoryHarness::new();
    conformance::scenario_d_stuck_messages(messages(&h).0, h.messages.as_ref()).await;
}

#[tokio::test]
async fn scenario_d_operator_operations() {
    let h = MemoryHarness::new();
    conformance::scenario_d_operator_operations(messages(&h).1, h.messages.as_ref()).await;
}

#[tokio::test]
async fn status_counts() {
    let h = MemoryHarness::new();
    conformance::status_counts(messages(&h).0, h.messages.as_ref()).await;
}

#[tokio::test]
async fn maintenance_counts_matched_rows() {
    let h = MemoryHarness::new();
    conformance::maintenance_counts_matched_rows(source(&h), &h.source).await;
}
