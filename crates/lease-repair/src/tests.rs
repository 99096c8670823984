//! Unit tests: the decision on scenario A's rows, properties of the decision, and the
//! reconciler's orchestration against the memory store and mocks.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use recon_core::{Reconciler, RunContext};
use retry_policy::presets;

use crate::counters::*;
use crate::*;

/// The error of a database that went away during `what`.
fn connection_reset(what: &str) -> recon_core::Error {
    recon_core::Error::transient(what, std::io::Error::other("connection reset"))
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn now() -> DateTime<Utc> {
    t("2024-01-24T12:00:00Z")
}

fn row(
    key: i64,
    status: &str,
    owner: Option<&str>,
    until: Option<&str>,
    attempts: Option<i64>,
) -> JobRow {
    JobRow {
        key: JobKey::Int(key),
        status: status.into(),
        lease_owner: owner.map(Into::into),
        lease_expires_at: until.map(t),
        attempts,
        unreadable: None,
    }
}

fn settings(count_interrupted: bool) -> Settings {
    let mut s = Settings::new(presets::startup_jobs());
    s.count_interrupted_attempt = count_interrupted;
    s
}

/// Scenario A's five jobs.
fn scenario_a() -> Vec<StoredJob> {
    let j = |k: i64, st: &str, o: Option<&str>, u: Option<&str>, a: i64| {
        StoredJob::new(k, st, o, u.map(t), Some(a))
    };
    vec![
        j(
            42,
            "processing",
            Some("worker-001"),
            Some("2024-01-24T10:00:00Z"),
            1,
        ),
        j(43, "processing", None, None, 2),
        j(44, "pending", None, None, 0),
        j(
            45,
            "processing",
            Some("worker-002"),
            Some("2024-01-24T13:00:00Z"),
            0,
        ),
        j(
            46,
            "processing",
            Some("worker-003"),
            Some("2024-01-24T09:00:00Z"),
            3,
        ),
    ]
}

fn expect_repair(a: Action) -> (Repair, Outcome) {
    match a {
        Action::Repair { repair, outcome } => (repair, outcome),
        other => panic!("expected a repair, got {other:?}"),
    }
}

#[test]
fn scenario_a_decisions_with_stored_attempts() {
    let s = settings(false);
    let (r42, o42) = expect_repair(decide(
        &row(
            42,
            "processing",
            Some("worker-001"),
            Some("2024-01-24T10:00:00Z"),
            Some(1),
        ),
        CandidateKind::ExpiredLease,
        now(),
        &s,
    ));
    assert_eq!(
        (r42.status.as_str(), r42.attempts, o42),
        ("retry", 1, Outcome::Requeued)
    );
    assert_eq!(
        r42.last_error,
        "Lease expired - worker crashed or timed out"
    );
    assert!(
        r42.next_run_at.unwrap() > now(),
        "retry time comes from the policy"
    );

    let (r43, o43) = expect_repair(decide(
        &row(43, "processing", None, None, Some(2)),
        CandidateKind::Orphaned,
        now(),
        &s,
    ));
    assert_eq!(
        (r43.status.as_str(), r43.attempts, o43),
        ("retry", 2, Outcome::Requeued)
    );
    assert_eq!(r43.last_error, "Orphaned job recovered");

    assert_eq!(
        decide(
            &row(
                45,
                "processing",
                Some("worker-002"),
                Some("2024-01-24T13:00:00Z"),
                Some(0)
            ),
            CandidateKind::ExpiredLease,
            now(),
            &s
        ),
        Action::Leave(LeaveReason::LiveLease)
    );
    assert_eq!(
        decide(
            &row(44, "pending", None, None, Some(0)),
            CandidateKind::Orphaned,
            now(),
            &s
        ),
        Action::Leave(LeaveReason::NotProcessing)
    );

    let (r46, o46) = expect_repair(decide(
        &row(
            46,
            "processing",
            Some("worker-003"),
            Some("2024-01-24T09:00:00Z"),
            Some(3),
        ),
        CandidateKind::ExpiredLease,
        now(),
        &s,
    ));
    assert_eq!(
        (r46.status.as_str(), r46.attempts, o46),
        ("failed", 3, Outcome::Failed)
    );
    assert!(r46.failed && r46.next_run_at.is_none());
}

#[test]
fn scenario_a_decisions_counting_the_interrupted_attempt() {
    let s = settings(true);
    let d = |r: JobRow, k| expect_repair(decide(&r, k, now(), &s));
    let (r42, o) = d(
        row(
            42,
            "processing",
            Some("worker-001"),
            Some("2024-01-24T10:00:00Z"),
            Some(1),
        ),
        CandidateKind::ExpiredLease,
    );
    assert_eq!(
        (r42.status.as_str(), r42.attempts, o),
        ("retry", 2, Outcome::Requeued)
    );
    let (r43, o) = d(
        row(43, "processing", None, None, Some(2)),
        CandidateKind::Orphaned,
    );
    assert_eq!(
        (r43.status.as_str(), r43.attempts, o),
        ("failed", 3, Outcome::Failed)
    );
    let (r46, _) = d(
        row(
            46,
            "processing",
            Some("worker-003"),
            Some("2024-01-24T09:00:00Z"),
            Some(3),
        ),
        CandidateKind::ExpiredLease,
    );
    assert_eq!((r46.status.as_str(), r46.attempts), ("failed", 4));
}

#[test]
fn anomalies_are_reported_not_repaired_by_default() {
    let s = settings(false);
    let k = CandidateKind::Anomaly;
    assert_eq!(
        decide(
            &row(1, "processing", Some("w"), None, Some(0)),
            k,
            now(),
            &s
        ),
        Action::Anomaly(AnomalyKind::OwnerWithoutExpiry)
    );
    assert_eq!(
        decide(
            &row(
                2,
                "processing",
                Some("w"),
                Some("2024-02-24T12:00:00Z"),
                Some(0)
            ),
            k,
            now(),
            &s
        ),
        Action::Anomaly(AnomalyKind::ExpiryTooFarAhead)
    );
    for bad in [None, Some(-1), Some(i64::MIN)] {
        assert_eq!(
            decide(
                &row(
                    3,
                    "processing",
                    Some("w"),
                    Some("2024-01-24T10:00:00Z"),
                    bad
                ),
                CandidateKind::ExpiredLease,
                now(),
                &s
            ),
            Action::Anomaly(AnomalyKind::InvalidAttempts)
        );
    }
    // opting in repairs the safe ones
    let mut s = s;
    s.repair_anomalies = true;
    let (r, _) = expect_repair(decide(
        &row(1, "processing", Some("w"), None, None),
        k,
        now(),
        &s,
    ));
    assert_eq!((r.status.as_str(), r.attempts), ("retry", 0));
    assert_eq!(
        decide(
            &row(
                2,
                "processing",
                Some("w"),
                Some("9999-01-01T00:00:00Z"),
                Some(0)
            ),
            k,
            now(),
            &s
        ),
        Action::Anomaly(AnomalyKind::ExpiryTooFarAhead)
    );
}

#[test]
fn absurd_attempts_are_anomalies_and_the_maximum_still_repairs() {
    let s = settings(true);
    for absurd in [MAX_ATTEMPTS + 1, i64::from(i32::MAX), i64::MAX] {
        assert_eq!(
            decide(
                &row(1, "processing", None, None, Some(absurd)),
                CandidateKind::Orphaned,
                now(),
                &s
            ),
            Action::Anomaly(AnomalyKind::InvalidAttempts),
            "{absurd}"
        );
    }
    let (r, o) = expect_repair(decide(
        &row(1, "processing", None, None, Some(MAX_ATTEMPTS)),
        CandidateKind::Orphaned,
        now(),
        &s,
    ));
    assert_eq!((o, r.attempts), (Outcome::Failed, MAX_ATTEMPTS + 1));
}

#[test]
fn settings_are_validated() {
    let mut s = settings(false);
    s.states.retry = "processing".into();
    assert!(s.validate().unwrap_err().to_string().contains("stay stuck"));
    let mut s = settings(false);
    s.states.failed = " ".into();
    assert!(LeaseRepair::new(MemoryLeaseStore::new(), s).is_err());
    let mut s = settings(false);
    s.max_lease = Some(Duration::zero());
    assert!(s.validate().is_err());
    let step = LeaseRepair::new(MemoryLeaseStore::new(), settings(false)).unwrap();
    assert!(step.batch_size(0).is_err());
    let step = LeaseRepair::new(MemoryLeaseStore::new(), settings(false)).unwrap();
    assert!(step.batch_size(MAX_BATCH_SIZE + 1).is_err());
}

fn arb_row() -> impl Strategy<Value = JobRow> {
    (
        0_i64..50,
        prop::sample::select(vec!["processing", "retry", "pending", "done"]),
        prop::option::of(prop::sample::select(vec!["w1", "w2"])),
        prop::option::of(-3 * 3600_i64..3 * 24 * 3600),
        prop::option::of(-2_i64..6),
    )
        .prop_map(|(k, st, o, off, a)| JobRow {
            key: JobKey::Int(k),
            status: st.into(),
            lease_owner: o.map(Into::into),
            lease_expires_at: off.map(|s| now() + Duration::seconds(s)),
            attempts: a,
            unreadable: None,
        })
}

proptest! {
    #[test]
    fn a_live_lease_is_never_repaired(r in arb_row(), count in any::<bool>()) {
        let s = settings(count);
        for kind in CandidateKind::ALL {
            if let Action::Repair { repair, .. } = decide(&r, kind, now(), &s) {
                prop_assert_eq!(&r.status, "processing");
                let expired = r.lease_expires_at.is_some_and(|e| e < now());
                let orphan = r.lease_owner.is_none() && r.lease_expires_at.is_none();
                prop_assert!(expired || orphan, "repaired a live job: {:?}", r);
                prop_assert!(repair.attempts >= r.attempts.unwrap());
                prop_assert!(repair.status != "processing");
                // failed exactly when the attempts that count reach the maximum
                prop_assert_eq!(repair.failed, repair.attempts >= 3);
            }
        }
    }

    #[test]
    fn decisions_are_deterministic(r in arb_row()) {
        let s = settings(false);
        for kind in CandidateKind::ALL {
            prop_assert_eq!(decide(&r, kind, now(), &s), decide(&r, kind, now(), &s));
        }
    }

    #[test]
    fn every_processing_row_falls_in_at_most_one_candidate_kind(r in arb_row()) {
        let q = |kind| CandidateQuery {
            kind, processing_state: "processing".into(), now: now(),
            max_lease: Some(Duration::hours(24)), after: None, limit: 10,
            known_states: vec!["processing".into(), "retry".into(), "pending".into()],
        };
        let n = CandidateKind::ALL.iter().filter(|k| k.matches(&r, &q(**k))).count();
        prop_assert!(n <= 1, "{:?} matched {} kinds", r, n);
    }
}

async fn run(step: &impl Reconciler, dry: bool) -> recon_core::StepReport {
    step.reconcile(&RunContext::new(now()).with_dry_run(dry))
        .await
        .unwrap()
}

#[tokio::test]
async fn scenario_a_end_to_end_on_the_memory_store() {
    let store = Arc::new(MemoryLeaseStore::new());
    store.insert(scenario_a());
    let step = LeaseRepair::new(store.clone(), settings(false)).unwrap();
    let r = run(&step, false).await;
    assert_eq!(r.count(LEASES_REPAIRED), 2);
    assert_eq!(r.count(JOBS_REQUEUED), 1);
    assert_eq!(r.count(JOBS_FAILED), 1);
    assert_eq!(r.count(ANOMALIES), 0);
    assert_eq!(r.count(SKIPPED_CHANGED), 0);
    let jobs = store.jobs();
    let st: Vec<_> = jobs
        .iter()
        .map(|j| (j.row.status.as_str(), j.row.attempts))
        .collect();
    assert_eq!(
        st,
        [
            ("retry", Some(1)),
            ("retry", Some(2)),
            ("pending", Some(0)),
            ("processing", Some(0)),
            ("failed", Some(3))
        ]
    );
    // a second run right after repairs nothing
    let again = run(&step, false).await;
    for c in [LEASES_REPAIRED, JOBS_REQUEUED, JOBS_FAILED, SKIPPED_CHANGED] {
        assert_eq!(again.count(c), 0, "{c}");
    }
    assert_eq!(store.jobs(), jobs, "second run changed something");
}

#[tokio::test]
async fn dry_run_counts_but_never_applies() {
    let mut store = MockLeaseStore::new();
    let rows = vec![row(
        42,
        "processing",
        Some("w"),
        Some("2024-01-24T10:00:00Z"),
        Some(1),
    )];
    store.expect_read_candidates().returning(move |q| {
        Ok(
            if q.kind == CandidateKind::ExpiredLease && q.after.is_none() {
                rows.clone()
            } else {
                vec![]
            },
        )
    });
    store.expect_any_stuck().returning(|_| Ok(true));
    store.expect_apply().never();
    let step = LeaseRepair::new(store, settings(false)).unwrap();
    let r = run(&step, true).await;
    assert_eq!(
        r.count(LEASES_REPAIRED),
        1,
        "dry run reports what would happen"
    );
}

#[tokio::test]
async fn batches_follow_the_keyset_and_skips_are_counted() {
    let mut store = MockLeaseStore::new();
    let stuck: Vec<JobRow> = (1..=5)
        .map(|k| {
            row(
                k,
                "processing",
                Some("w"),
                Some("2024-01-24T10:00:00Z"),
                Some(0),
            )
        })
        .collect();
    store.expect_read_candidates().returning(move |q| {
        if q.kind != CandidateKind::ExpiredLease {
            return Ok(vec![]);
        }
        let after = match q.after {
            Some(JobKey::Int(k)) => k,
            _ => 0,
        };
        Ok(stuck
            .iter()
            .filter(|r| r.key > JobKey::Int(after))
            .take(q.limit)
            .cloned()
            .collect())
    });
    store.expect_any_stuck().returning(|_| Ok(true));
    // key 3 was renewed by its worker between read and write
    store.expect_apply().times(3).returning(|repairs, _| {
        let mut out = ApplyOutcome::default();
        for r in repairs {
            if r.expected.key == JobKey::Int(3) {
                out.skipped.push(r.expected.key.clone())
            } else {
                out.applied.push(r.expected.key.clone())
            }
        }
        Ok(out)
    });
    let step = LeaseRepair::new(store, settings(false))
        .unwrap()
        .batch_size(2)
        .unwrap();
    let r = run(&step, false).await;
    assert_eq!(r.count(BATCHES), 3);
    assert_eq!(r.count(LEASES_REPAIRED), 4);
    assert_eq!(r.count(SKIPPED_CHANGED), 1);
}

#[tokio::test]
async fn a_store_failure_mid_run_says_what_was_done() {
    let mut store = MockLeaseStore::new();
    let mut calls = 0;
    store.expect_any_stuck().returning(|_| Ok(true));
    store.expect_read_candidates().returning(move |_| {
        calls += 1;
        if calls == 1 {
            Ok(vec![row(1, "processing", None, None, Some(0))])
        } else {
            Err(connection_reset("read"))
        }
    });
    store.expect_apply().times(1).returning(|r, _| {
        Ok(ApplyOutcome {
            applied: vec![r[0].expected.key.clone()],
            skipped: vec![],
        })
    });
    let step = LeaseRepair::new(store, settings(false))
        .unwrap()
        .batch_size(1)
        .unwrap();
    let err = step.reconcile(&RunContext::new(now())).await.unwrap_err();
    assert!(err.is_transient());
    assert!(
        err.to_string().contains("after 1 repairs in 1 batches"),
        "{err}"
    );
}

#[tokio::test]
async fn anomalies_are_listed_in_the_report() {
    let store = MemoryLeaseStore::new();
    store.insert([
        StoredJob::new(1, "processing", Some("w"), None, Some(0)),
        StoredJob::new(
            2,
            "processing",
            Some("w"),
            Some(t("2030-01-01T00:00:00Z")),
            Some(0),
        ),
        StoredJob::new(
            3,
            "processing",
            Some("w"),
            Some(t("2024-01-24T13:00:00Z")),
            None,
        ),
        StoredJob::new(
            4,
            "processing",
            Some("w"),
            Some(t("2024-01-24T10:00:00Z")),
            Some(-1),
        ),
    ]);
    let step = LeaseRepair::new(store, settings(false)).unwrap();
    let r = run(&step, false).await;
    assert_eq!(r.count(ANOMALIES), 4);
    assert_eq!(r.count(LEASES_REPAIRED), 0);
    let listed = r.details()["anomalies"].as_array().unwrap();
    let kinds: Vec<_> = listed.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "invalid_attempts",
            "owner_without_expiry",
            "expiry_too_far_ahead",
            "invalid_attempts"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_step_stops_between_batches_at_the_deadline() {
    let store = MemoryLeaseStore::new();
    store.insert((1..=10).map(|k| StoredJob::new(k, "processing", None, None, Some(0))));
    let step = LeaseRepair::new(store, settings(false))
        .unwrap()
        .batch_size(3)
        .unwrap();
    let ctx = RunContext::new(now()).with_deadline(Some(tokio::time::Instant::now()));
    let r = step.reconcile(&ctx).await.unwrap();
    assert_eq!(r.count(BATCHES), 0);
    assert!(r.notes()[0].contains("deadline"));
}

#[tokio::test]
async fn prune_deletes_or_archives_old_terminal_jobs_in_batches() {
    let store = Arc::new(MemoryLeaseStore::new());
    let old = |k, st: &str| {
        let mut j = StoredJob::new(k, st, None, None, Some(1));
        j.updated_at = Some(t("2023-12-01T00:00:00Z"));
        j
    };
    let mut recent = StoredJob::new(9, "done", None, None, Some(1));
    recent.updated_at = Some(t("2024-01-23T00:00:00Z"));
    store.insert([
        old(1, "done"),
        old(2, "failed"),
        old(3, "done"),
        old(4, "processing"),
        recent,
    ]);
    let step = LeasePrune::new(
        store.clone(),
        vec!["done".into(), "failed".into()],
        Duration::days(30),
        PruneMode::Archive,
    )
    .unwrap()
    .batch_size(2)
    .unwrap();
    let dry = run(&step, true).await;
    assert_eq!(dry.count(ARCHIVED), 3);
    assert_eq!(store.jobs().len(), 5, "dry run keeps everything");
    let r = run(&step, false).await;
    assert_eq!(r.count(ARCHIVED), 3);
    assert_eq!(r.count(BATCHES), 2);
    let left: Vec<_> = store.jobs().iter().map(|j| j.row.key.clone()).collect();
    assert_eq!(left, [JobKey::Int(4), JobKey::Int(9)]);
    assert_eq!(store.archived().len(), 3, "archived, not lost");
    assert!(
        LeasePrune::new(
            MemoryLeaseStore::new(),
            vec![],
            Duration::days(1),
            PruneMode::Delete
        )
        .is_err()
    );
}

#[test]
fn unknown_status_is_an_anomaly_compared_exactly() {
    let mut s = settings(false);
    s.report_unknown_status = Some(vec!["pending".into(), "done".into()]);
    assert_eq!(
        s.known_states(),
        ["processing", "retry", "failed", "pending", "done"]
    );
    let k = CandidateKind::UnknownStatus;
    for unknown in ["procesing", "PROCESSING", "processing ", " pending", ""] {
        assert_eq!(
            decide(&row(1, unknown, None, None, Some(0)), k, now(), &s),
            Action::Anomaly(AnomalyKind::UnknownStatus),
            "{unknown:?}"
        );
    }
    for known in ["processing", "retry", "failed", "pending", "done"] {
        assert_eq!(
            decide(&row(1, known, None, None, Some(0)), k, now(), &s),
            Action::Leave(LeaveReason::KnownStatus),
            "{known:?}"
        );
    }
    let mut s = settings(false);
    s.report_unknown_status = Some(vec!["x".into(); MAX_KNOWN_STATES + 1]);
    assert!(s.validate().unwrap_err().to_string().contains("at most"));
}

#[tokio::test]
async fn unknown_status_is_reported_only_when_asked_and_never_changed() {
    let store = Arc::new(MemoryLeaseStore::new());
    store.insert([
        StoredJob::new(1, "procesing", None, None, Some(0)),
        StoredJob::new(2, "pending", None, None, Some(0)),
        StoredJob::new(
            3,
            "PROCESSING",
            Some("w"),
            Some(t("2024-01-24T10:00:00Z")),
            Some(0),
        ),
        StoredJob::new(4, "processing", None, None, Some(0)),
        StoredJob::new(5, "done", None, None, Some(0)),
    ]);
    let before = store.jobs();
    // off by default: not read, not reported
    let mut reads = MockLeaseStore::new();
    reads.expect_any_stuck().returning(|_| Ok(true));
    reads
        .expect_read_candidates()
        .withf(|q| q.kind != CandidateKind::UnknownStatus)
        .returning(|_| Ok(vec![]));
    let r = run(&LeaseRepair::new(reads, settings(false)).unwrap(), false).await;
    assert_eq!(r.count(ANOMALIES), 0);

    let mut s = settings(false);
    s.report_unknown_status = Some(vec!["pending".into(), "done".into()]);
    let step = LeaseRepair::new(store.clone(), s)
        .unwrap()
        .batch_size(1)
        .unwrap();
    let r = run(&step, false).await;
    assert_eq!(r.count(ANOMALIES), 2);
    assert_eq!(r.count(JOBS_REQUEUED), 1, "job 4 is an ordinary orphan");
    let listed = r.details()["anomalies"].as_array().unwrap();
    let got: Vec<_> = listed
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap(),
                a["kind"].as_str().unwrap(),
                a["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("1", "unknown_status", "procesing"),
            ("3", "unknown_status", "PROCESSING")
        ]
    );
    let after = store.jobs();
    for i in [0, 1, 2, 4] {
        assert_eq!(after[i], before[i], "job {} changed", i + 1);
    }
}

#[test]
fn keys_order_and_display() {
    assert!(JobKey::Int(9) < JobKey::Int(10));
    assert!(JobKey::Int(i64::MAX) < JobKey::Text(String::new()));
    assert_eq!(JobKey::from("a1").to_string(), "a1");
}

// ---- repair plans: `decide` evaluated per attempts count, applied inside the store ----

fn secs(s: u64) -> std::time::Duration {
    std::time::Duration::from_secs(s)
}

/// Policies without jitter, of every backoff kind, with and without limits.
fn arb_plain_policy() -> impl Strategy<Value = retry_policy::RetryPolicy> {
    use retry_policy::{Backoff, RetryPolicy};
    (
        0_u8..5,
        1_u64..120,
        prop::option::of(1_u32..12),
        prop::option::of(1_u64..4000),
        0_u64..3,
    )
        .prop_filter_map(
            "a policy the builder accepts",
            |(kind, base, max_attempts, max_delay, min_delay)| {
                let backoff = match kind {
                    0 => Backoff::constant(secs(base)),
                    1 => Backoff::linear(secs(base), secs(base / 2 + 1)),
                    2 => Backoff::exponential(secs(base), 1.7),
                    3 => Backoff::schedule([secs(base), secs(base * 3), secs(base * 7)]),
                    _ => Backoff::schedule_repeating([secs(base), secs(base + 5)]),
                };
                let mut b = RetryPolicy::builder()
                    .backoff(backoff)
                    .min_delay(secs(min_delay));
                if let Some(m) = max_attempts {
                    b = b.max_attempts(m);
                }
                if let Some(d) = max_delay {
                    b = b.max_delay(secs(d.max(min_delay)));
                }
                b.build().ok()
            },
        )
}

fn arb_stuck_row() -> impl Strategy<Value = (JobRow, CandidateKind)> {
    (
        0_i64..1000,
        any::<bool>(),
        prop_oneof![
            0_i64..20,
            20_i64..200,
            Just(MAX_ATTEMPTS - 1),
            Just(MAX_ATTEMPTS),
            Just(MAX_ATTEMPTS + 1),
            Just(-1_i64),
        ],
        1_i64..100_000,
    )
        .prop_map(|(k, expired, a, ago)| {
            let kind = if expired {
                CandidateKind::ExpiredLease
            } else {
                CandidateKind::Orphaned
            };
            let row = JobRow {
                key: JobKey::Int(k),
                status: "processing".into(),
                lease_owner: expired.then(|| "w".into()),
                lease_expires_at: expired.then(|| now() - Duration::seconds(ago)),
                attempts: Some(a),
                unreadable: None,
            };
            (row, kind)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The plan is `decide`, row for row: every row it covers gets exactly `decide`'s
    /// repair, and every row `decide` repairs with readable, in-range attempts within the
    /// plan's range is covered.
    #[test]
    fn a_plan_repairs_every_row_it_covers_exactly_as_decide_does(
        policy in arb_plain_policy(),
        count in any::<bool>(),
        (r, kind) in arb_stuck_row(),
    ) {
        let mut s = Settings::new(policy);
        s.count_interrupted_attempt = count;
        let plan = RepairPlan::new(kind, now(), &s).expect("a policy without jitter is plannable");
        prop_assert!(!plan.retry_at.is_empty() || plan.fail_from == Some(0));
        let decided = match decide(&r, kind, now(), &s) {
            Action::Repair { repair, .. } => Some(repair),
            _ => None,
        };
        match plan.repair_for(&r) {
            Some(p) => prop_assert_eq!(Some(p), decided, "plan {:?}", plan),
            None => {
                let a = r.attempts.unwrap();
                prop_assert!(
                    decided.is_none() || a > plan.max_attempts,
                    "{:?} not covered by {:?}", r, plan
                );
            }
        }
    }

    /// Rows that are not candidates of the plan's kind are never covered.
    #[test]
    fn a_plan_covers_only_candidates_of_its_kind(
        policy in arb_plain_policy(),
        r in arb_row(),
    ) {
        let s = Settings::new(policy);
        for kind in [CandidateKind::ExpiredLease, CandidateKind::Orphaned] {
            let plan = RepairPlan::new(kind, now(), &s).unwrap();
            if let Some(p) = plan.repair_for(&r) {
                let decided = decide(&r, kind, now(), &s);
                prop_assert!(
                    matches!(&decided, Action::Repair { repair, .. } if *repair == p),
                    "{:?}: plan {:?}, decide {:?}", r, p, decided
                );
            }
        }
    }
}

#[test]
fn no_plan_for_jitter_or_for_anomalies() {
    for policy in [
        presets::startup_jobs(),
        presets::aws_full_jitter(),
        presets::grpc_connection(),
    ] {
        let s = Settings::new(policy);
        assert_eq!(
            RepairPlan::new(CandidateKind::ExpiredLease, now(), &s),
            None
        );
    }
    let s = Settings::new(presets::api_call());
    for kind in [CandidateKind::Anomaly, CandidateKind::UnknownStatus] {
        assert_eq!(RepairPlan::new(kind, now(), &s), None);
    }
    let plan = RepairPlan::new(CandidateKind::ExpiredLease, now(), &s).unwrap();
    // api_call: 1 s, 2 s, 4 s, then give up at 4 attempts.
    assert_eq!(plan.fail_from, Some(4));
    assert_eq!(plan.max_attempts, MAX_ATTEMPTS);
    assert_eq!(
        plan.retry_at,
        [1, 1, 2, 4].map(|s| now() + Duration::seconds(s))
    );
}

#[test]
fn an_unlimited_policy_that_keeps_growing_is_planned_for_the_first_counts_only() {
    let policy = retry_policy::RetryPolicy::builder()
        .backoff(retry_policy::Backoff::linear(secs(1), secs(1)))
        .build()
        .unwrap();
    let plan = RepairPlan::new(CandidateKind::Orphaned, now(), &Settings::new(policy)).unwrap();
    assert_eq!(plan.fail_from, None);
    assert_eq!(plan.retry_at.len(), MAX_PLAN_STEPS);
    assert_eq!(plan.max_attempts, MAX_PLAN_STEPS as i64 - 1);
    let beyond = row(1, "processing", None, None, Some(MAX_PLAN_STEPS as i64));
    assert_eq!(
        plan.repair_for(&beyond),
        None,
        "left to the row-by-row path"
    );
}

/// Stuck jobs of every sort, including ones only the row-by-row path can judge.
fn mixed_jobs(n: i64) -> Vec<StoredJob> {
    (1..=n)
        .map(|k| {
            let attempts = match k % 13 {
                0 => None,
                1 => Some(-1),
                _ => Some(k % 5),
            };
            match k % 4 {
                0 => StoredJob::new(
                    k,
                    "processing",
                    Some("w"),
                    Some(now() - Duration::minutes(k)),
                    attempts,
                ),
                1 => StoredJob::new(k, "processing", None, None, attempts),
                2 => StoredJob::new(
                    k,
                    "processing",
                    Some("w"),
                    Some(now() + Duration::minutes(5)),
                    attempts,
                ),
                _ => StoredJob::new(k, "done", None, None, attempts),
            }
        })
        .collect()
}

#[tokio::test]
async fn in_the_database_or_row_by_row_the_outcome_is_the_same() {
    for count in [false, true] {
        let mut s = Settings::new(presets::api_call());
        s.count_interrupted_attempt = count;
        let mut outcomes = Vec::new();
        for in_db in [true, false] {
            let store = Arc::new(MemoryLeaseStore::new());
            store.insert(mixed_jobs(2_000));
            let step = LeaseRepair::new(store.clone(), s.clone())
                .unwrap()
                .batch_size(97)
                .unwrap()
                .plan_batch_size(41)
                .unwrap()
                .in_database(in_db);
            let r = run(&step, false).await;
            let counts: Vec<u64> = OUTCOME.map(|c| r.count(c)).to_vec();
            assert!(
                counts[0] > 0 && counts[1] > 0 && counts[2] > 0 && counts[3] > 0,
                "{counts:?}"
            );
            outcomes.push((counts, store.jobs(), r.details().get("anomalies").cloned()));
        }
        assert_eq!(
            outcomes[0], outcomes[1],
            "count_interrupted_attempt = {count}"
        );
    }
}

#[tokio::test]
async fn a_clean_table_costs_one_read() {
    let mut store = MockLeaseStore::new();
    store.expect_any_stuck().times(1).returning(|_| Ok(false));
    store.expect_read_candidates().never();
    store.expect_apply().never();
    store.expect_repair_planned().never();
    let step = LeaseRepair::new(store, settings(false)).unwrap();
    let r = run(&step, false).await;
    assert_eq!(r.count(BATCHES), 0);
}

proptest! {
    #[test]
    fn is_known_state_agrees_with_the_list(
        extra in prop::collection::vec("[a-z]{0,3}", 0..5),
        status in "[a-z]{0,3}|processing|retry|failed",
    ) {
        let mut s = settings(false);
        s.report_unknown_status = Some(extra);
        prop_assert_eq!(s.is_known_state(&status), s.known_states().contains(&status));
    }
}

/// A mock store that says something is stuck (a candidate of each kind for the one-row look)
/// and reads nothing row by row: the in-database pass is left to `repair_planned`.
fn stuck_in_the_database() -> MockLeaseStore {
    let mut store = MockLeaseStore::new();
    store.expect_any_stuck().returning(|_| Ok(true));
    store.expect_read_candidates().returning(|q| {
        Ok(if q.limit == 1 {
            vec![row(1, "processing", None, None, Some(0))]
        } else {
            vec![]
        })
    });
    store.expect_apply().never();
    store
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

/// A mock store that says something is stuck, reads nothing row by row, and answers every
/// planned batch with `counts` (one batch, nothing after it).
fn planning_store(counts: Vec<PlannedCounts>) -> MockLeaseStore {
    let mut store = stuck_in_the_database();
    store
        .expect_repair_planned()
        .times(1)
        .withf(|plans, after, _| {
            let kinds: Vec<CandidateKind> = plans.iter().map(|p| p.kind).collect();
            kinds == [CandidateKind::ExpiredLease, CandidateKind::Orphaned] && after.is_none()
        })
        .returning(move |_, _, _| {
            Ok(Some(PlannedBatch {
                counts: counts.clone(),
                last: Some(JobKey::Int(9)),
                more: false,
            }))
        });
    store
}

#[tokio::test]
async fn expired_leases_and_orphans_are_repaired_in_one_pass_and_counted_by_kind() {
    let store = planning_store(vec![
        PlannedCounts {
            requeued: 2,
            failed: 1,
        },
        PlannedCounts {
            requeued: 3,
            failed: 4,
        },
    ]);
    let step = LeaseRepair::new(store, Settings::new(presets::api_call())).unwrap();
    let r = run(&step, false).await;
    assert_eq!(r.count(LEASES_REPAIRED), 3, "expired: requeued and failed");
    assert_eq!(r.count(JOBS_REQUEUED), 3, "orphans requeued");
    assert_eq!(r.count(JOBS_FAILED), 5, "failed, of either kind");
    assert_eq!(r.count(BATCHES), 1);
}

#[tokio::test]
async fn a_planned_batch_without_a_count_per_plan_is_an_error_not_a_guess() {
    let store = planning_store(vec![PlannedCounts {
        requeued: 2,
        failed: 0,
    }]);
    let step = LeaseRepair::new(store, Settings::new(presets::api_call())).unwrap();
    let e = step
        .reconcile(&RunContext::new(now()))
        .await
        .expect_err("one count for two plans");
    assert!(
        format!("{e:#}").contains("1 counts for 2 repair plans"),
        "{e:#}"
    );
}

#[tokio::test]
async fn no_pass_in_the_database_when_only_anomalies_are_stuck() {
    let mut store = MockLeaseStore::new();
    store.expect_any_stuck().returning(|_| Ok(true));
    store.expect_read_candidates().returning(|_| Ok(vec![]));
    store.expect_apply().never();
    store.expect_repair_planned().never();
    let step = LeaseRepair::new(store, Settings::new(presets::api_call())).unwrap();
    let r = run(&step, false).await;
    assert_eq!(r.count(BATCHES), 0);
}

/// The in-database pass follows the store's positions in the store's order: a key that sorts
/// lower in Rust (`"B"` < `"a"` in bytes, not in a `NOCASE` column) goes on; a position the
/// store answered before is an error instead of batches repeated for ever.
#[tokio::test]
async fn the_in_database_pass_goes_on_in_the_store_order_and_a_repeated_position_is_an_error() {
    let mut store = stuck_in_the_database();
    let text = |s: &str| Some(JobKey::Text(s.to_owned()));
    let mut seq = mockall::Sequence::new();
    for (after, last) in [(None, "a"), (text("a"), "B"), (text("B"), "a")] {
        store
            .expect_repair_planned()
            .times(1)
            .in_sequence(&mut seq)
            .withf(move |_, a, _| *a == after)
            .returning(move |plans, _, _| {
                let mut b = PlannedBatch::empty(plans.len());
                b.counts[0].requeued = 1;
                b.last = Some(JobKey::Text(last.to_owned()));
                b.more = true;
                Ok(Some(b))
            });
    }
    let step = LeaseRepair::new(store, Settings::new(presets::api_call())).unwrap();
    let e = step
        .reconcile(&RunContext::new(now()))
        .await
        .expect_err("`a` came back");
    assert!(format!("{e:#}").contains("position a came back"), "{e:#}");
    assert!(
        format!("{e:#}").contains("after 3 repairs in 3 batches"),
        "{e:#}"
    );
}

/// The database goes away after the first batch was written: the runner still reports what
/// that batch repaired, with the error (the step checkpoints every committed batch).
#[tokio::test]
async fn a_run_that_fails_half_way_reports_the_batches_it_wrote() {
    let mut store = stuck_in_the_database();
    let mut seq = mockall::Sequence::new();
    store
        .expect_repair_planned()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|plans, _, _| {
            let mut b = PlannedBatch::empty(plans.len());
            b.counts[0].requeued = 40;
            b.counts[1].failed = 2;
            b.last = Some(JobKey::Int(50));
            b.more = true;
            Ok(Some(b))
        });
    store
        .expect_repair_planned()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Err(connection_reset("repair batch")));
    let step = LeaseRepair::new(store, Settings::new(presets::api_call())).unwrap();
    let s = run_alone(step).await;
    assert_eq!(s.status, recon_core::StepStatus::Failed);
    assert!(
        s.error
            .as_ref()
            .unwrap()
            .message
            .contains("connection reset")
    );
    assert_eq!(
        OUTCOME.map(|c| s.report.count(c)),
        [40, 0, 2, 0, 0],
        "the first batch, as written"
    );
    assert_eq!(s.report.count(BATCHES), 1);
}

/// Row by row: the first batch is read and written, then the database goes away on the next
/// read; the runner still reports the first batch.
#[tokio::test]
async fn a_row_by_row_run_that_fails_half_way_reports_the_batch_it_wrote() {
    let mut store = MockLeaseStore::new();
    store.expect_any_stuck().returning(|_| Ok(true));
    let mut seq = mockall::Sequence::new();
    store
        .expect_read_candidates()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|q| {
            Ok((1..=q.limit as i64)
                .map(|k| {
                    row(
                        k,
                        "processing",
                        Some("w"),
                        Some("2024-01-24T11:00:00Z"),
                        Some(0),
                    )
                })
                .collect())
        });
    store
        .expect_apply()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|r, _| {
            Ok(ApplyOutcome {
                applied: r.iter().map(|r| r.expected.key.clone()).collect(),
                skipped: vec![],
            })
        });
    store
        .expect_read_candidates()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(connection_reset("read stuck jobs")));
    let step = LeaseRepair::new(store, Settings::new(presets::api_call()))
        .unwrap()
        .in_database(false)
        .batch_size(3)
        .unwrap();
    let s = run_alone(step).await;
    assert_eq!(s.status, recon_core::StepStatus::Failed);
    assert_eq!(
        s.report.count(LEASES_REPAIRED),
        3,
        "the first batch, as written"
    );
}

/// Prune: one batch deleted, then the database goes away: that batch is reported.
#[tokio::test]
async fn a_prune_that_fails_half_way_reports_the_batch_it_deleted() {
    let mut store = MockPruneStore::new();
    let mut seq = mockall::Sequence::new();
    store
        .expect_prune_batch()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|q| Ok(q.limit as u64));
    store
        .expect_prune_batch()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(connection_reset("prune")));
    let step = LeasePrune::new(
        store,
        vec!["done".into()],
        Duration::days(30),
        PruneMode::Delete,
    )
    .unwrap()
    .batch_size(10)
    .unwrap();
    let s = run_alone(step).await;
    assert_eq!(s.status, recon_core::StepStatus::Failed);
    assert_eq!(s.report.count(BATCHES), 1);
    assert_eq!(s.report.count(PRUNED), 10, "the first batch, as deleted");
}
