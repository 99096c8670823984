//! RunLog, WatermarkStore and RunLock behave the same on every backend.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use recon_core::{
    Clock, Error, LockAttempt, ManualClock, MemoryRunLock, MemoryRunLog, MemoryWatermarkStore,
    RunId, RunLock, RunLog, RunReport, RunStatus, StepOutcome, StepReport, StepStatus,
    WatermarkStore,
};
use store_sqlx::LockMode;

use crate::Backend;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn run_log(b: &Backend) -> Arc<dyn RunLog> {
    match b {
        Backend::Memory => Arc::new(MemoryRunLog::new()),
        Backend::Sql(t) => Arc::new(t.db.run_log()),
    }
}

fn watermarks(b: &Backend) -> Arc<dyn WatermarkStore> {
    match b {
        Backend::Memory => Arc::new(MemoryWatermarkStore::new()),
        Backend::Sql(t) => Arc::new(t.db.watermarks()),
    }
}

/// Two instances of the lock (as two processes would have), and whether TTLs apply.
fn locks(b: &Backend, clock: &ManualClock, mode: LockMode) -> (Arc<dyn RunLock>, Arc<dyn RunLock>) {
    match b {
        Backend::Memory => {
            let l = MemoryRunLock::with_clock(Arc::new(clock.clone()));
            (Arc::new(l.clone()), Arc::new(l))
        }
        Backend::Sql(t) => {
            let mk = |holder: &str| {
                t.db.run_lock()
                    .mode(mode)
                    .holder(holder)
                    .clock(Arc::new(clock.clone()))
            };
            (Arc::new(mk("a")), Arc::new(mk("b")))
        }
    }
}

fn report(runner: &str, id: &str, at: &str, status: RunStatus) -> RunReport {
    let mut step = StepReport::new("lease-repair");
    step.add(recon_core::Counter::new("leases_repaired"), 2);
    step.push_error("job 7", "payload is not JSON: \"{\" …");
    RunReport {
        id: RunId::from_string(id),
        runner: runner.into(),
        started_at: t(at),
        finished_at: t(at) + chrono::Duration::milliseconds(1500),
        duration_ms: 1500,
        status,
        dry_run: false,
        steps: vec![StepOutcome {
            name: "lease-repair".into(),
            required: true,
            status: StepStatus::Succeeded,
            report: step,
            error: None,
        }],
        errors: vec!["ünïcödé error ✓".into()],
        notes: vec![],
    }
}

async fn run_log_keeps_reports_newest_first(b: &Backend<'_>) {
    let log = run_log(b);
    assert_eq!(log.latest("startup").await.unwrap(), None, "{}", b.name());
    let r1 = report("startup", "r1", "2024-01-24T10:00:00Z", RunStatus::Success);
    let r2 = report("startup", "r2", "2024-01-24T12:00:00Z", RunStatus::Partial);
    let r3 = report("startup", "r3", "2024-01-24T11:00:00Z", RunStatus::Failed);
    let other = report("sync", "s1", "2024-01-24T13:00:00Z", RunStatus::Success);
    for r in [&r1, &r2, &r3, &other] {
        log.append(r).await.unwrap();
    }
    // most recently appended first, whatever the start times say (skewed clocks)
    assert_eq!(log.latest("startup").await.unwrap(), Some(r3.clone()));
    let h = log.history("startup", 10).await.unwrap();
    assert_eq!(h, vec![r3.clone(), r2.clone(), r1.clone()], "{}", b.name());
    assert_eq!(log.history("startup", 2).await.unwrap().len(), 2);
    assert_eq!(log.latest("sync").await.unwrap(), Some(other));
    // prune removes runs of every runner started before the cut-off
    assert_eq!(log.prune(t("2024-01-24T11:30:00Z")).await.unwrap(), 2);
    assert_eq!(log.history("startup", 10).await.unwrap(), vec![r2]);
}

async fn run_log_rejects_a_duplicate_run_id(b: &Backend<'_>) {
    if matches!(b, Backend::Memory) {
        return; // the memory log keeps whatever it is given; ids are unique by construction
    }
    let log = run_log(b);
    let r = report("startup", "dup", "2024-01-24T10:00:00Z", RunStatus::Success);
    log.append(&r).await.unwrap();
    let err = log.append(&r).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(log.history("startup", 10).await.unwrap(), vec![r]);
}

async fn watermarks_only_move_forward(b: &Backend<'_>) {
    let w = watermarks(b);
    assert_eq!(w.get("reservations").await.unwrap(), None);
    let t1 = t("2024-01-24T10:00:00.123456Z");
    w.advance("reservations", t1).await.unwrap();
    assert_eq!(
        w.get("reservations").await.unwrap(),
        Some(t1),
        "{}",
        b.name()
    );
    w.advance("reservations", t1).await.unwrap();
    let err = w
        .advance("reservations", t("2024-01-24T09:00:00Z"))
        .await
        .unwrap_err();
    match err {
        Error::WatermarkBackwards {
            current, requested, ..
        } => {
            assert_eq!(current, t1);
            assert_eq!(requested, t("2024-01-24T09:00:00Z"));
        }
        other => panic!("{}: expected WatermarkBackwards, got {other}", b.name()),
    }
    assert_eq!(w.get("reservations").await.unwrap(), Some(t1), "unchanged");
    let t2 = t("2024-01-24T10:30:00Z");
    w.advance("reservations", t2).await.unwrap();
    assert_eq!(w.get("reservations").await.unwrap(), Some(t2));
    assert_eq!(w.get("other").await.unwrap(), None);
}

async fn lock_excludes_others_until_released(b: &Backend<'_>) {
    let clock = ManualClock::at(t("2024-01-24T12:00:00Z"));
    for mode in [LockMode::Session, LockMode::LeaseRow] {
        let (a, other) = locks(b, &clock, mode);
        let ttl = Duration::from_secs(60);
        let LockAttempt::Acquired(g) = a.try_acquire("startup", ttl).await.unwrap() else {
            panic!("{}: a free lock was not acquired", b.name())
        };
        assert!(
            matches!(
                other.try_acquire("startup", ttl).await.unwrap(),
                LockAttempt::HeldByOther { .. }
            ),
            "{}: {mode:?} lock acquired twice",
            b.name()
        );
        let LockAttempt::Acquired(g2) = other.try_acquire("sync", ttl).await.unwrap() else {
            panic!("locks of other names are independent")
        };
        a.release(g).await.unwrap();
        let LockAttempt::Acquired(g3) = other.try_acquire("startup", ttl).await.unwrap() else {
            panic!("{}: a released lock was not free", b.name())
        };
        other.release(g3).await.unwrap();
        other.release(g2).await.unwrap();
    }
}

async fn lease_row_lock_lapses_after_its_ttl(b: &Backend<'_>) {
    let clock = ManualClock::at(t("2024-01-24T12:00:00Z"));
    let (a, other) = locks(b, &clock, LockMode::LeaseRow);
    let ttl = Duration::from_secs(60);
    let LockAttempt::Acquired(stale) = a.try_acquire("startup", ttl).await.unwrap() else {
        panic!("free lock")
    };
    clock.advance(chrono::Duration::seconds(59));
    assert!(matches!(
        other.try_acquire("startup", ttl).await.unwrap(),
        LockAttempt::HeldByOther { .. }
    ));
    // the holder crashed: after the TTL another instance takes over
    clock.advance(chrono::Duration::seconds(2));
    let LockAttempt::Acquired(fresh) = other.try_acquire("startup", ttl).await.unwrap() else {
        panic!("{}: a lapsed lease was not taken over", b.name())
    };
    // the old holder's late release must not free the new holder's lock
    let err = a.release(stale).await.unwrap_err();
    assert!(matches!(err, Error::LockNotHeld { .. }), "{err}");
    assert!(matches!(
        a.try_acquire("startup", ttl).await.unwrap(),
        LockAttempt::HeldByOther { .. }
    ));
    other.release(fresh).await.unwrap();
    let _ = clock.now();
}

async fn migrations_are_idempotent(b: &Backend<'_>) {
    if let Backend::Sql(t) = b {
        t.db.migrate().await.unwrap();
        t.db.migrate().await.unwrap();
        let log = t.db.run_log();
        log.append(&report(
            "x",
            "after-remigrate",
            "2024-01-01T00:00:00Z",
            RunStatus::Success,
        ))
        .await
        .unwrap();
    }
}

async fn database_clock_is_close_to_ours(b: &Backend<'_>) {
    if let Backend::Sql(t) = b {
        let db_now = t.db.now().await.unwrap();
        let skew = (db_now - Utc::now()).num_seconds().abs();
        assert!(skew < 5, "{}: database clock is {skew}s away", b.name());
        t.db.ping().await.unwrap();
        // the database as the runner's clock
        let source: Arc<dyn recon_core::TimeSource> = Arc::new(t.db.clone());
        let via_runner = source.fetch_now().await.unwrap();
        assert!((via_runner - db_now).num_seconds().abs() < 5);
    }
}

crate::conformance!(
    run_log_keeps_reports_newest_first,
    run_log_rejects_a_duplicate_run_id,
    watermarks_only_move_forward,
    lock_excludes_others_until_released,
    lease_row_lock_lapses_after_its_ttl,
    migrations_are_idempotent,
    database_clock_is_close_to_ours,
);
