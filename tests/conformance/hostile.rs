//! The hostile input catalogue: every case is a test, and each gives a clear error or a
//! reported anomaly; no row is lost or corrupted. `docs/reliability.md` lists them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lease_repair::counters::*;
use lease_repair::{LeaseRepair, Settings, StoredJob};
use queue_rehydrate::{ColumnType, KeyType, Predicate, SourceStore, TableMapping};
use recon_core::{
    LockAttempt, ManualClock, Reconciler, RunContext, RunLock, RunLog, RunStatus, Runner,
    StepReport, WatermarkStore,
};
use store_sqlx::{Dialect, JobTable, MessageTable, Metrics};

use crate::common::TestDb;
use crate::jobs::{Jobs, Shape};
use crate::{Backend, conformance_sql};

const INJECTIONS: [&str; 8] = [
    "jobs; DROP TABLE jobs",
    "status\" OR 1=1 --",
    "x`; DROP DATABASE test; --",
    "a'b",
    "col)--",
    "1starts_with_digit",
    "jöbs",
    "",
];

fn now() -> DateTime<Utc> {
    "2024-01-24T12:00:00Z".parse().unwrap()
}

fn settings() -> Settings {
    Settings::new(retry_policy::presets::startup_jobs())
}

async fn run(step: &impl Reconciler) -> recon_core::Result<StepReport> {
    step.reconcile(&RunContext::new(now())).await
}

async fn jobs_table(t: &TestDb) -> Jobs<'_> {
    Jobs::new(&Backend::Sql(t), "processing_jobs", Shape::default()).await
}

async fn count(t: &TestDb, table: &str) -> i64 {
    crate::jobs::count_rows(t, table).await
}

// 1
async fn injection_in_every_job_table_setting_is_rejected_before_any_sql(t: &TestDb) {
    let jobs = jobs_table(t).await;
    jobs.insert(
        &[StoredJob::new(1, "processing", None, None, Some(0))],
        Shape::default(),
    )
    .await;
    for bad in INJECTIONS {
        let b = || JobTable::builder("processing_jobs");
        for (what, r) in [
            ("table", JobTable::builder(bad).build()),
            ("id", b().id(bad).build()),
            ("status", b().status(bad).build()),
            ("owner", b().lease_owner(bad).build()),
            ("expiry", b().lease_expires_at(bad).build()),
            ("attempts", b().attempts(bad).build()),
            ("last_error", b().last_error(bad).build()),
            ("next_run_at", b().next_run_at(bad).build()),
            ("updated_at", b().updated_at(bad).build()),
            ("failed_at", b().failed_at(bad).build()),
            ("archive", b().archive_table(bad).build()),
        ] {
            let err = r.expect_err(&format!("{what} accepted {bad:?}"));
            assert!(err.to_string().contains("invalid identifier"), "{err}");
        }
    }
    assert_eq!(count(t, "processing_jobs").await, 1, "the table is intact");
}

// 2
async fn injection_in_other_mappings_is_rejected(t: &TestDb) {
    for bad in INJECTIONS {
        assert!(
            MessageTable::builder(bad).build().is_err(),
            "message table {bad:?}"
        );
        assert!(
            MessageTable::builder("messages")
                .status(bad)
                .build()
                .is_err()
        );
        assert!(
            MessageTable::builder("messages")
                .session(bad)
                .build()
                .is_err()
        );
        assert!(
            TableMapping::builder(bad, "id", KeyType::Integer)
                .build()
                .is_err()
        );
        assert!(
            TableMapping::builder("t", bad, KeyType::Integer)
                .build()
                .is_err()
        );
        assert!(
            TableMapping::builder("t", "id", KeyType::Integer)
                .column(bad, ColumnType::Text)
                .build()
                .is_err()
        );
        assert!(Metrics::new(&t.db).count_by("x", bad, "status").is_err());
        assert!(Metrics::new(&t.db).sum("x", "orders", bad).is_err());
    }
}

// 3
async fn reserved_words_and_mixed_case_names_work_because_they_are_quoted(t: &TestDb) {
    let (q, ts) = match t.db.dialect() {
        Dialect::MySql => ('`', "DATETIME(6)"),
        Dialect::Postgres => ('"', "TIMESTAMPTZ"),
        _ => ('"', "TEXT"),
    };
    t.exec(&format!(
        "CREATE TABLE {q}order{q} ({q}select{q} BIGINT PRIMARY KEY, {q}From{q} VARCHAR(20) NOT NULL, \
         {q}where{q} VARCHAR(20), {q}group{q} {ts}, {q}limit{q} INTEGER, {q}table{q} TEXT)"
    ))
    .await;
    t.exec(&format!(
        "INSERT INTO {q}order{q} ({q}select{q}, {q}From{q}, {q}limit{q}) VALUES (1, 'processing', 0)"
    ))
    .await;
    let map = JobTable::builder("order")
        .id("select")
        .status("From")
        .lease_owner("where")
        .lease_expires_at("group")
        .attempts("limit")
        .last_error("table")
        .build()
        .unwrap();
    let store = t.db.lease_store(map);
    store.verify().await.unwrap();
    let r = run(&LeaseRepair::new(store, settings()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.count(JOBS_REQUEUED), 1, "{}", t.db.dialect().name());
}

// 4
async fn hostile_values_are_bound_never_executed(t: &TestDb) {
    let evil = "x'); DROP TABLE recon_runs; --";
    // lock, watermark and runner names, and a job's status value, are values: bound
    let lock = t.db.run_lock();
    let LockAttempt::Acquired(g) = lock
        .try_acquire(evil, Duration::from_secs(5))
        .await
        .unwrap()
    else {
        panic!("lock")
    };
    lock.release(g).await.unwrap();
    let w = t.db.watermarks();
    w.advance(evil, now()).await.unwrap();
    assert_eq!(w.get(evil).await.unwrap(), Some(now()));
    let runner = Runner::builder(evil)
        .time_source(Arc::new(ManualClock::at(now())))
        .step(Metrics::new(&t.db))
        .run_log(Arc::new(t.db.run_log()))
        .build()
        .unwrap();
    assert_eq!(runner.run().await.status, RunStatus::Success);
    assert_eq!(
        t.db.run_log().latest(evil).await.unwrap().unwrap().runner,
        evil
    );
    let jobs = jobs_table(t).await;
    jobs.insert(
        &[StoredJob::new(1, "processing", None, None, Some(0))],
        Shape::default(),
    )
    .await;
    let mut s = settings();
    s.states.processing = evil.into();
    s.states.retry = format!("{evil} retry");
    let r = run(&LeaseRepair::new(jobs.lease.clone(), s).unwrap())
        .await
        .unwrap();
    assert_eq!(r.count(JOBS_REQUEUED), 0, "no row has that status");
    assert_eq!(count(t, "recon_runs").await, 1, "recon_runs is still there");
}

// 5
async fn unknown_status_values_are_left_alone(t: &TestDb) {
    let jobs = jobs_table(t).await;
    let rows: Vec<_> = ["procesing", "PROCESSING", " processing", "processing ", ""]
        .iter()
        .enumerate()
        .map(|(i, st)| StoredJob::new(i as i64 + 1, st, None, None, Some(0)))
        .collect();
    jobs.insert(&rows, Shape::default()).await;
    let before = jobs.all().await;
    let r = run(&LeaseRepair::new(jobs.lease.clone(), settings()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        r.count(JOBS_REQUEUED) + r.count(LEASES_REPAIRED),
        0,
        "{}",
        t.db.dialect().name()
    );
    assert_eq!(jobs.all().await, before);
}

// 6
async fn null_negative_and_huge_attempts_are_anomalies(t: &TestDb) {
    let jobs = jobs_table(t).await;
    let expired = Some(now() - chrono::Duration::hours(1));
    jobs.insert(
        &[
            StoredJob::new(1, "processing", Some("w"), expired, None),
            StoredJob::new(2, "processing", Some("w"), expired, Some(-1)),
            StoredJob::new(
                3,
                "processing",
                Some("w"),
                expired,
                Some(i64::from(i32::MAX)),
            ),
            StoredJob::new(4, "processing", None, None, Some(i64::from(i32::MIN))),
            StoredJob::new(
                5,
                "processing",
                Some("w"),
                expired,
                Some(lease_repair::MAX_ATTEMPTS),
            ),
        ],
        Shape::default(),
    )
    .await;
    let before = jobs.all().await;
    let mut s = settings();
    s.count_interrupted_attempt = true; // attempts + 1 must never overflow the INTEGER column
    let r = run(&LeaseRepair::new(jobs.lease.clone(), s).unwrap())
        .await
        .unwrap();
    assert_eq!(r.count(ANOMALIES), 4, "{}", t.db.dialect().name());
    assert_eq!(r.count(JOBS_FAILED), 1, "the maximum itself is repaired");
    let after = jobs.all().await;
    assert_eq!(after[..4], before[..4], "anomalies are left alone");
    assert_eq!(after[4].row.attempts, Some(lease_repair::MAX_ATTEMPTS + 1));
}

// 7
async fn lease_expiry_in_year_9999_and_before_1970(t: &TestDb) {
    let jobs = jobs_table(t).await;
    let at = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
    jobs.insert(
        &[
            StoredJob::new(
                1,
                "processing",
                Some("w"),
                at("9999-12-31T23:59:59Z"),
                Some(0),
            ),
            StoredJob::new(
                2,
                "processing",
                Some("w"),
                at("1969-07-20T20:17:40Z"),
                Some(0),
            ),
            StoredJob::new(
                3,
                "processing",
                Some("w"),
                at("1000-01-01T00:00:00Z"),
                Some(0),
            ),
        ],
        Shape::default(),
    )
    .await;
    let r = run(&LeaseRepair::new(jobs.lease.clone(), settings()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        r.count(ANOMALIES),
        1,
        "year 9999 is an expiry too far ahead"
    );
    assert_eq!(
        r.count(LEASES_REPAIRED),
        2,
        "leases that ended before 1970 are expired"
    );
    assert_eq!(jobs.all().await[0].row.status, "processing");
}

// 8
async fn a_timestamp_in_an_unknown_format_is_reported_and_the_rest_go_on(t: &TestDb) {
    if t.db.dialect() != Dialect::Sqlite {
        return; // typed columns cannot hold such text on PostgreSQL and MySQL
    }
    let jobs = jobs_table(t).await;
    jobs.insert(
        &[StoredJob::new(1, "processing", None, None, Some(0))],
        Shape::default(),
    )
    .await;
    t.exec("INSERT INTO processing_jobs (id, status, locked_by, locked_until, attempts) VALUES (2, 'processing', 'w', 'next tuesday', 0)").await;
    t.exec("INSERT INTO processing_jobs (id, status, locked_by, locked_until, attempts) VALUES (3, 'processing', 'w', '0000 not a time', 0)").await;
    t.exec("INSERT INTO processing_jobs (id, status, locked_by, locked_until, attempts) VALUES (4, 'processing', NULL, NULL, 1)").await;
    let r = run(&LeaseRepair::new(jobs.lease.clone(), settings()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        r.count(JOBS_REQUEUED),
        2,
        "the readable orphans are repaired"
    );
    assert_unreadable_reported(&r, &["2", "3"], "locked_until");
    let after = jobs.all_raw_status().await;
    assert_eq!(after[1].1, "processing");
    assert_eq!(
        after[2].1, "processing",
        "unreadable rows are never changed"
    );
}

fn assert_unreadable_reported(r: &StepReport, keys: &[&str], column: &str) {
    let listed = r.details()["anomalies"]
        .as_array()
        .expect("anomalies listed");
    for key in keys {
        let a = listed
            .iter()
            .find(|a| a["key"] == *key)
            .unwrap_or_else(|| panic!("{key} not reported: {listed:?}"));
        assert_eq!(a["kind"], "unreadable_value");
        assert!(a["reason"].as_str().unwrap().contains(column), "{a}");
    }
}

// 9
async fn non_utf8_text_is_reported_and_the_rest_go_on(t: &TestDb) {
    if t.db.dialect() != Dialect::Sqlite {
        return; // PostgreSQL and MariaDB refuse invalid UTF-8 on insert
    }
    let jobs = jobs_table(t).await;
    t.exec("INSERT INTO processing_jobs (id, status, locked_by, locked_until, attempts) VALUES (1, 'processing', CAST(X'FFFE41' AS TEXT), '2024-01-24T10:00:00+00:00', 0)").await;
    jobs.insert(
        &[StoredJob::new(
            2,
            "processing",
            Some("w"),
            Some(now() - chrono::Duration::hours(1)),
            Some(0),
        )],
        Shape::default(),
    )
    .await;
    let r = run(&LeaseRepair::new(jobs.lease.clone(), settings()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.count(LEASES_REPAIRED), 1);
    assert_unreadable_reported(&r, &["1"], "locked_by");
    assert_eq!(jobs.all_raw_status().await[0].1, "processing");
}

// 10
async fn text_keys_with_quotes_and_comment_markers_are_bound(t: &TestDb) {
    let shape = Shape {
        key: store_sqlx::KeyKind::Text,
        ..Shape::default()
    };
    let jobs = Jobs::new(&Backend::Sql(t), "text_jobs", shape).await;
    let keys = ["o''neil", "a--b", "x;y", "\\\\n", "a b"];
    let rows: Vec<_> = keys
        .iter()
        .map(|k| StoredJob::new(*k, "processing", None, None, Some(0)))
        .collect();
    jobs.insert(&rows, shape).await;
    let r = run(&LeaseRepair::new(jobs.lease.clone(), settings())
        .unwrap()
        .batch_size(2)
        .unwrap())
    .await
    .unwrap();
    assert_eq!(r.count(JOBS_REQUEUED), 5, "{}", t.db.dialect().name());
}

// 11
async fn predicate_values_with_sql_in_them_are_bound(t: &TestDb) {
    t.exec("CREATE TABLE sessions (phone VARCHAR(40) PRIMARY KEY, contact_status VARCHAR(40) NOT NULL)").await;
    t.exec("INSERT INTO sessions VALUES ('+1', 'ACTIVE'), ('+2', 'INACTIVE')")
        .await;
    let map = TableMapping::builder("sessions", "phone", KeyType::Text)
        .column("contact_status", ColumnType::Text)
        .build()
        .unwrap();
    let store = t.db.source_store();
    let evil = Predicate::eq("contact_status", "ACTIVE' OR '1'='1");
    assert_eq!(store.count(&map, &evil, now()).await.unwrap(), 0);
    let fine = Predicate::eq("contact_status", "ACTIVE");
    assert_eq!(store.count(&map, &fine, now()).await.unwrap(), 1);
    assert_eq!(count(t, "sessions").await, 2);
}

// 12
async fn hostile_data_makes_plain_counter_names(t: &TestDb) {
    t.exec("CREATE TABLE orders (id INTEGER PRIMARY KEY, st VARCHAR(60))")
        .await;
    t.exec(
        "INSERT INTO orders VALUES (1, 'x''); DROP TABLE orders; --'), (2, '✓ done'), (3, NULL)",
    )
    .await;
    let r = run(&Metrics::new(&t.db)
        .count_by("orders", "orders", "st")
        .unwrap())
    .await
    .unwrap();
    for (k, _) in r.counters().iter() {
        assert!(
            k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{k}"
        );
    }
    assert_eq!(r.get("orders_total"), Some(3));
    assert_eq!(count(t, "orders").await, 3);
}

// 13
async fn a_huge_error_message_is_stored_truncated_with_a_marker(t: &TestDb) {
    struct Loud;
    #[recon_core::async_trait]
    impl Reconciler for Loud {
        fn name(&self) -> &str {
            "loud"
        }
        async fn reconcile(&self, _: &RunContext) -> recon_core::Result<StepReport> {
            let mut r = StepReport::new("loud");
            r.push_error("job-1", "x".repeat(10 * 1024 * 1024));
            Err(recon_core::Error::permanent(
                "upstream said",
                std::io::Error::other("é".repeat(5 * 1024 * 1024)),
            ))
            .or(Ok::<_, recon_core::Error>(r))
        }
    }
    struct Fails;
    #[recon_core::async_trait]
    impl Reconciler for Fails {
        fn name(&self) -> &str {
            "fails"
        }
        async fn reconcile(&self, _: &RunContext) -> recon_core::Result<StepReport> {
            Err(recon_core::Error::permanent(
                "upstream said",
                std::io::Error::other("é".repeat(5 * 1024 * 1024)),
            ))
        }
    }
    let runner = Runner::builder("loud")
        .time_source(Arc::new(ManualClock::at(now())))
        .step(Loud)
        .step(Fails)
        .run_log(Arc::new(t.db.run_log()))
        .build()
        .unwrap();
    let report = runner.run().await;
    let stored = t.db.run_log().latest("loud").await.unwrap().unwrap();
    assert_eq!(stored, report, "stored as reported");
    let json = serde_json::to_string(&stored).unwrap();
    assert!(json.len() < 16 * 1024, "{} bytes", json.len());
    assert!(json.contains("truncated, 10485760 bytes in all"));
    assert!(
        json.contains("bytes in all"),
        "the step error is truncated too"
    );
}

// 14
async fn a_clock_that_goes_backwards_between_runs(t: &TestDb) {
    let jobs = jobs_table(t).await;
    jobs.insert(
        &[StoredJob::new(
            1,
            "processing",
            Some("w"),
            Some(now() - chrono::Duration::minutes(30)),
            Some(0),
        )],
        Shape::default(),
    )
    .await;
    let clock = ManualClock::at(now());
    let runner = Runner::builder("startup")
        .time_source(Arc::new(clock.clone()))
        .step(LeaseRepair::new(jobs.lease.clone(), settings()).unwrap())
        .run_log(Arc::new(t.db.run_log()))
        .build()
        .unwrap();
    let first = runner.run().await;
    assert_eq!(first.count(LEASES_REPAIRED), 1);
    clock.advance(-chrono::Duration::hours(2));
    let second = runner.run().await;
    assert_eq!(
        second.status,
        RunStatus::Success,
        "an earlier now is not an error"
    );
    assert_eq!(
        second.count(LEASES_REPAIRED),
        0,
        "and repairs nothing twice"
    );
    let last = t.db.run_log().latest("startup").await.unwrap().unwrap();
    assert_eq!(
        last.id, second.id,
        "the run that happened last is the latest, whatever its clock"
    );
}

// 15
async fn a_watermark_in_the_future_and_one_moved_back(t: &TestDb) {
    let w = t.db.watermarks();
    let far: DateTime<Utc> = "9999-12-31T23:59:59Z".parse().unwrap();
    w.advance("sync", far).await.unwrap();
    assert_eq!(w.get("sync").await.unwrap(), Some(far));
    let err = w.advance("sync", now()).await.unwrap_err();
    assert!(
        matches!(err, recon_core::Error::WatermarkBackwards { .. }),
        "{err}"
    );
    assert_eq!(w.get("sync").await.unwrap(), Some(far), "unchanged");
}

// 16
async fn extreme_lock_ttls(t: &TestDb) {
    let lock = t.db.run_lock().mode(store_sqlx::LockMode::LeaseRow);
    assert!(
        lock.try_acquire("x", Duration::ZERO).await.is_err(),
        "zero TTL"
    );
    assert!(
        lock.try_acquire("x", Duration::MAX).await.is_err(),
        "a TTL past the calendar"
    );
    let LockAttempt::Acquired(g) = lock.try_acquire("x", Duration::from_secs(1)).await.unwrap()
    else {
        panic!()
    };
    lock.release(g).await.unwrap();
}

// 17
async fn a_column_holding_text_where_attempts_should_be(t: &TestDb) {
    if t.db.dialect() != Dialect::Sqlite {
        return; // typed columns refuse it
    }
    let jobs = jobs_table(t).await;
    t.exec("INSERT INTO processing_jobs (id, status, locked_by, locked_until, attempts) VALUES (1, 'processing', NULL, NULL, 'three')").await;
    let r = run(&LeaseRepair::new(jobs.lease.clone(), settings()).unwrap())
        .await
        .unwrap();
    assert_unreadable_reported(&r, &["1"], "attempts");
    assert_eq!(
        jobs.all_raw_status().await[0],
        ("1".into(), "processing".into(), Some("three".into()))
    );
}

// 18
async fn schema_qualified_and_overlong_names(t: &TestDb) {
    assert!(
        JobTable::builder(&"j".repeat(64)).build().is_err(),
        "64-byte name"
    );
    assert!(JobTable::builder("a.b.c").build().is_err());
    assert!(JobTable::builder(".jobs").build().is_err());
    if t.db.dialect() == Dialect::Postgres {
        let schema = t.namespace().unwrap();
        let jobs = jobs_table(t).await;
        jobs.insert(
            &[StoredJob::new(1, "processing", None, None, Some(0))],
            Shape::default(),
        )
        .await;
        let store = t.db.lease_store(
            JobTable::builder(&format!("{schema}.processing_jobs"))
                .build()
                .unwrap(),
        );
        store.verify().await.unwrap();
        let r = run(&LeaseRepair::new(store, settings()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.count(JOBS_REQUEUED), 1, "a schema-qualified table works");
    }
}

conformance_sql!(
    injection_in_every_job_table_setting_is_rejected_before_any_sql,
    injection_in_other_mappings_is_rejected,
    reserved_words_and_mixed_case_names_work_because_they_are_quoted,
    hostile_values_are_bound_never_executed,
    unknown_status_values_are_left_alone,
    null_negative_and_huge_attempts_are_anomalies,
    lease_expiry_in_year_9999_and_before_1970,
    a_timestamp_in_an_unknown_format_is_reported_and_the_rest_go_on,
    non_utf8_text_is_reported_and_the_rest_go_on,
    text_keys_with_quotes_and_comment_markers_are_bound,
    predicate_values_with_sql_in_them_are_bound,
    hostile_data_makes_plain_counter_names,
    a_huge_error_message_is_stored_truncated_with_a_marker,
    a_clock_that_goes_backwards_between_runs,
    a_watermark_in_the_future_and_one_moved_back,
    extreme_lock_ttls,
    a_column_holding_text_where_attempts_should_be,
    schema_qualified_and_overlong_names,
);

mod pure {
    //! Cases that need no database.
    use super::*;

    // 19
    #[test]
    fn colliding_or_empty_states_are_rejected() {
        for (field, value) in [
            ("retry", "processing"),
            ("failed", "processing"),
            ("orphaned_to", "processing"),
            ("failed", ""),
            ("processing", "  "),
        ] {
            let mut s = settings();
            match field {
                "retry" => s.states.retry = value.into(),
                "failed" => s.states.failed = value.into(),
                "orphaned_to" => s.states.orphaned_to = value.into(),
                _ => s.states.processing = value.into(),
            }
            assert!(s.validate().is_err(), "{field} = {value:?}");
        }
    }

    // 20
    #[test]
    fn a_10_mb_last_error_message_is_refused() {
        let mut s = settings();
        s.messages.orphaned = "x".repeat(10 * 1024 * 1024);
        let err = s.validate().unwrap_err();
        assert!(err.to_string().contains("10485760 bytes"), "{err}");
    }

    // 21
    #[test]
    fn batch_sizes_outside_the_bounds_are_refused() {
        let store = lease_repair::MemoryLeaseStore::new();
        assert!(
            LeaseRepair::new(store, settings())
                .unwrap()
                .batch_size(0)
                .is_err()
        );
        let store = lease_repair::MemoryLeaseStore::new();
        assert!(
            LeaseRepair::new(store, settings())
                .unwrap()
                .batch_size(usize::MAX)
                .is_err()
        );
    }

    // 22
    #[test]
    fn runner_configurations_that_cannot_work_are_refused() {
        assert!(Runner::builder("r").build().is_err(), "no steps");
        let lock = Arc::new(recon_core::MemoryRunLock::new());
        let r = Runner::builder("r")
            .step(
                lease_repair::LeaseRepair::new(lease_repair::MemoryLeaseStore::new(), settings())
                    .unwrap(),
            )
            .lock(lock, Duration::ZERO)
            .build();
        assert!(r.is_err(), "zero lock TTL");
    }

    // 23
    #[test]
    fn retry_policies_that_cannot_work_are_refused() {
        use retry_policy::{Backoff, RetryPolicy};
        assert!(RetryPolicy::builder().max_attempts(0).build().is_err());
        assert!(
            RetryPolicy::builder()
                .backoff(Backoff::exponential(Duration::from_secs(1), 0.5))
                .build()
                .is_err()
        );
        assert!(
            RetryPolicy::builder()
                .backoff(Backoff::schedule([]))
                .build()
                .is_err()
        );
        assert!(
            RetryPolicy::builder()
                .min_delay(Duration::from_secs(10))
                .max_delay(Duration::from_secs(1))
                .build()
                .is_err()
        );
    }

    // 24
    #[test]
    fn predicates_over_unknown_columns_or_empty_lists_are_refused() {
        let map = TableMapping::builder("t", "id", KeyType::Integer)
            .column("status", ColumnType::Text)
            .column("n", ColumnType::Integer)
            .build()
            .unwrap();
        assert!(Predicate::eq("nope", "x").validate(&map).is_err());
        assert!(
            Predicate::is_in("status", Vec::<&str>::new())
                .validate(&map)
                .is_err()
        );
        assert!(
            Predicate::eq("n", "not a number").validate(&map).is_err(),
            "type mismatch"
        );
    }

    // 25
    #[test]
    fn absurd_durations_in_settings_are_refused() {
        let mut s = settings();
        s.max_lease = Some(chrono::Duration::seconds(-1));
        assert!(s.validate().is_err());
        assert!(
            lease_repair::LeasePrune::new(
                lease_repair::MemoryLeaseStore::new(),
                vec!["done".into()],
                chrono::Duration::zero(),
                lease_repair::PruneMode::Delete
            )
            .is_err()
        );
    }
}
