//! The hostile input catalogue: every case is a test, and each gives a clear error or a
//! reported anomaly; no row is lost or corrupted. `docs/reliability.md` lists them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lease_repair::counters::*;
use lease_repair::{LeaseRepair, Settings, StoredJob};
use queue_rehydrate::memory::MemoryDerivedQueue;
use queue_rehydrate::{
    ColumnType, DesiredJob, JobQueue, Key, KeyType, Maintenance, Predicate, RehydrateReconciler,
    SetValue, SourceStore, TableMapping, TableMappingSpec,
};
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

/// Scenario A's policy without its jitter, so that lease repair takes its fastest path —
/// repairs inside the database (`RepairPlan`) — and every hostile row below must still reach
/// the row-by-row path that reports it.
fn settings() -> Settings {
    let policy = retry_policy::presets::startup_jobs()
        .to_builder()
        .jitter(retry_policy::Jitter::None)
        .build()
        .unwrap();
    Settings::new(policy)
}

async fn run(step: &impl Reconciler) -> recon_core::Result<StepReport> {
    step.reconcile(&RunContext::new(now())).await
}

async fn jobs_table(t: &TestDb) -> Jobs<'_> {
    Jobs::new(&Backend::Sql(t), "processing_jobs", Shape::default()).await
}

/// Job `id`, processing under a lease that ran out an hour ago, attempts 0: the ordinary stuck
/// job the hostile rows sit next to (it must be repaired whatever they do).
fn expired_job(id: i64) -> StoredJob {
    StoredJob::new(
        id,
        "processing",
        Some("w"),
        Some(now() - chrono::Duration::hours(1)),
        Some(0),
    )
}

async fn count(t: &TestDb, table: &str) -> i64 {
    crate::jobs::count_rows(t, table).await
}

/// Every table in the test's database or schema, with its row count: what "no SQL ran and
/// nothing changed" is checked against.
async fn catalogue(t: &TestDb) -> Vec<(String, i64)> {
    let sql = match t.db.dialect() {
        Dialect::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
        Dialect::Postgres => {
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
             WHERE table_schema = current_schema()"
        }
        Dialect::MySql => {
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
             WHERE table_schema = DATABASE()"
        }
    };
    let names: Vec<String> = match t.db.dialect() {
        Dialect::Sqlite => sqlx::query_scalar(sql)
            .fetch_all(t.db.as_sqlite().unwrap())
            .await
            .unwrap(),
        #[cfg(feature = "postgres")]
        Dialect::Postgres => sqlx::query_scalar(sql)
            .fetch_all(t.db.as_postgres().unwrap())
            .await
            .unwrap(),
        #[cfg(feature = "mysql")]
        Dialect::MySql => sqlx::query_scalar(sql)
            .fetch_all(t.db.as_mysql().unwrap())
            .await
            .unwrap(),
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    for n in names {
        let rows = count(t, &n).await;
        out.push((n, rows));
    }
    out.sort();
    out
}

/// Each injection as a bare name and as either half of `schema.table`.
fn table_injections() -> Vec<String> {
    INJECTIONS
        .iter()
        .flat_map(|bad| [bad.to_string(), format!("{bad}.t"), format!("public.{bad}")])
        .collect()
}

/// One identifier setting: builds a mapping (or a step) with `name` in that one place and
/// nowhere else. `Ok` = accepted.
type Setter = (&'static str, Box<dyn Fn(&str) -> Result<(), String>>);

// 1
async fn injection_in_every_job_table_setting_is_rejected_before_any_sql(t: &TestDb) {
    let jobs = jobs_table(t).await;
    jobs.insert(
        &[StoredJob::new(1, "processing", None, None, Some(0))],
        Shape::default(),
    )
    .await;
    let before = catalogue(t).await;
    let b = || JobTable::builder("processing_jobs");
    let ok = |r: store_sqlx::Result<JobTable>| r.map(drop).map_err(|e| e.to_string());
    let settings: Vec<Setter> = vec![
        ("table", Box::new(move |n| ok(JobTable::builder(n).build()))),
        ("id", Box::new(move |n| ok(b().id(n).build()))),
        ("status", Box::new(move |n| ok(b().status(n).build()))),
        ("owner", Box::new(move |n| ok(b().lease_owner(n).build()))),
        (
            "expiry",
            Box::new(move |n| ok(b().lease_expires_at(n).build())),
        ),
        ("attempts", Box::new(move |n| ok(b().attempts(n).build()))),
        (
            "last_error",
            Box::new(move |n| ok(b().last_error(n).build())),
        ),
        (
            "next_run_at",
            Box::new(move |n| ok(b().next_run_at(n).build())),
        ),
        (
            "updated_at",
            Box::new(move |n| ok(b().updated_at(n).build())),
        ),
        ("failed_at", Box::new(move |n| ok(b().failed_at(n).build()))),
        (
            "archive",
            Box::new(move |n| ok(b().archive_table(n).build())),
        ),
    ];
    assert_rejected(&settings, &["table", "archive"], "plain_name");
    assert_eq!(
        catalogue(t).await,
        before,
        "no table created, dropped or changed"
    );
    assert_eq!(count(t, "processing_jobs").await, 1, "the table is intact");
}

/// For each setting: a plain name is accepted (so a rejection is about the name), and every
/// injection is rejected with an error that says the identifier is invalid. The builders are
/// synchronous and hold no connection, so a rejection means no SQL ran; the callers also check
/// that the database is unchanged.
fn assert_rejected(settings: &[Setter], table_settings: &[&str], good: &str) {
    for (what, set) in settings {
        set(good).unwrap_or_else(|e| panic!("{what} refused the plain name {good:?}: {e}"));
        let bad: Vec<String> = if table_settings.contains(what) {
            table_injections()
        } else {
            INJECTIONS.iter().map(|s| s.to_string()).collect()
        };
        for bad in bad {
            let err = set(&bad)
                .err()
                .unwrap_or_else(|| panic!("{what} accepted {bad:?}"));
            assert!(
                err.to_lowercase().contains("invalid identifier"),
                "{what} = {bad:?}: {err}"
            );
        }
    }
}

// 2
async fn injection_in_other_mappings_is_rejected(t: &TestDb) {
    let before = catalogue(t).await;
    let msg = || MessageTable::builder("messages");
    let m = |r: store_sqlx::Result<MessageTable>| r.map(drop).map_err(|e| e.to_string());
    let q = |r: queue_rehydrate::Result<TableMapping>| r.map(drop).map_err(|e| e.to_string());
    let x = |r: store_sqlx::Result<Metrics>| r.map(drop).map_err(|e| e.to_string());
    let tm = || TableMapping::builder("sessions", "phone", KeyType::Text);
    let spec = |table: &str, key: &str, column: &str| TableMappingSpec {
        table: table.into(),
        key: key.into(),
        key_type: KeyType::Integer,
        columns: vec![queue_rehydrate::Column {
            name: column.into(),
            ty: ColumnType::Text,
        }],
    };
    let db = t.db.clone();
    let metrics = move || Metrics::new(&db);
    let (m1, m2, m3, m4, m5, m6) = (
        metrics.clone(),
        metrics.clone(),
        metrics.clone(),
        metrics.clone(),
        metrics.clone(),
        metrics,
    );
    let settings: Vec<Setter> = vec![
        // message tables (queue-rehydrate's messages, store-sqlx's mapping)
        (
            "message table",
            Box::new(move |n| m(MessageTable::builder(n).build())),
        ),
        (
            "message id",
            Box::new(move |n| m(msg().id(n, KeyType::Integer).build())),
        ),
        (
            "message status",
            Box::new(move |n| m(msg().status(n).build())),
        ),
        (
            "message session",
            Box::new(move |n| m(msg().session(n).build())),
        ),
        (
            "message attempts",
            Box::new(move |n| m(msg().attempts(n).build())),
        ),
        (
            "message last_attempt_at",
            Box::new(move |n| m(msg().last_attempt_at(n).build())),
        ),
        (
            "message next_attempt_at",
            Box::new(move |n| m(msg().next_attempt_at(n).build())),
        ),
        (
            "message failed_at",
            Box::new(move |n| m(msg().failed_at(n).build())),
        ),
        (
            "message last_error",
            Box::new(move |n| m(msg().last_error(n).build())),
        ),
        (
            "message archived_at",
            Box::new(move |n| m(msg().archived_at(n).build())),
        ),
        // source tables (queue rehydrate's TableMapping), by builder, spec and configuration
        (
            "source table",
            Box::new(move |n| q(TableMapping::builder(n, "id", KeyType::Integer).build())),
        ),
        (
            "source key",
            Box::new(move |n| q(TableMapping::builder("t", n, KeyType::Integer).build())),
        ),
        (
            "source column",
            Box::new(move |n| q(tm().column(n, ColumnType::Text).build())),
        ),
        (
            "spec table",
            Box::new(move |n| q(TableMapping::from_spec(spec(n, "id", "status")))),
        ),
        (
            "spec key",
            Box::new(move |n| q(TableMapping::from_spec(spec("t", n, "status")))),
        ),
        (
            "spec column",
            Box::new(move |n| q(TableMapping::from_spec(spec("t", "id", n)))),
        ),
        (
            "configuration file table",
            Box::new(move |n| {
                let json = serde_json::json!({
                    "table": n, "key": "id", "key_type": "integer", "columns": []
                });
                serde_json::from_value::<TableMapping>(json)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
        ),
        // metrics
        (
            "count_by table",
            Box::new(move |n| x(m1().count_by("c", n, "status"))),
        ),
        (
            "count_by column",
            Box::new(move |n| x(m2().count_by("c", "orders", n))),
        ),
        (
            "average table",
            Box::new(move |n| x(m3().average("a", n, "total"))),
        ),
        (
            "average column",
            Box::new(move |n| x(m4().average("a", "orders", n))),
        ),
        ("sum table", Box::new(move |n| x(m5().sum("s", n, "total")))),
        (
            "sum column",
            Box::new(move |n| x(m6().sum("s", "orders", n))),
        ),
    ];
    let tables = [
        "message table",
        "source table",
        "spec table",
        "configuration file table",
        "count_by table",
        "average table",
        "sum table",
    ];
    assert_rejected(&settings, &tables, "plain_name");

    // Columns named in predicates and maintenance rules are never used as identifiers on
    // their own: they must be columns of the (validated) mapping.
    let sessions = tm()
        .column("contact_status", ColumnType::Text)
        .build()
        .unwrap();
    for bad in INJECTIONS {
        let build = |p: Predicate, rule: Option<Maintenance>| {
            let mut b = RehydrateReconciler::builder(
                "rehydrate",
                Arc::new(t.db.source_store()),
                sessions.clone(),
            )
            .candidates(p, Arc::new(MemoryDerivedQueue::new()));
            if let Some(rule) = rule {
                b = b.maintenance(rule);
            }
            b.build().map(drop).map_err(|e| e.to_string())
        };
        let fine = Predicate::eq("contact_status", "ACTIVE");
        for (what, r) in [
            (
                "predicate column",
                build(Predicate::eq(bad, "ACTIVE"), None),
            ),
            (
                "maintenance column",
                build(
                    fine.clone(),
                    Some(Maintenance::new("m", fine.clone()).set(bad, SetValue::Null)),
                ),
            ),
            (
                "maintenance condition",
                build(
                    fine.clone(),
                    Some(
                        Maintenance::new("m", Predicate::is_null(bad))
                            .set("contact_status", SetValue::Null),
                    ),
                ),
            ),
        ] {
            let err = r.err().unwrap_or_else(|| panic!("{what} accepted {bad:?}"));
            assert!(
                err.contains("has no mapped column"),
                "{what} = {bad:?}: {err}"
            );
        }
    }
    assert!(
        RehydrateReconciler::builder("ok", Arc::new(t.db.source_store()), sessions)
            .candidates(
                Predicate::eq("contact_status", "ACTIVE"),
                Arc::new(MemoryDerivedQueue::new())
            )
            .build()
            .is_ok(),
        "the control builds"
    );
    assert_eq!(
        catalogue(t).await,
        before,
        "no table created, dropped or changed"
    );
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
    // a queue name is a value too: bound, and kept apart from every other queue
    let queue = t.db.job_queue(evil).unwrap();
    queue.verify().await.unwrap();
    let job = DesiredJob {
        id: evil.into(),
        kind: evil.into(),
        entity_key: Key::Int(1),
        run_at: now(),
        payload: serde_json::json!({ "note": evil }),
    };
    assert_eq!(queue.enqueue(&[job]).await.unwrap(), 1);
    let listed = queue.page(None, 10).await.unwrap();
    assert_eq!((listed.len(), listed[0].id.as_str()), (1, evil));
    let other = t.db.job_queue("other").unwrap();
    assert!(
        other.page(None, 10).await.unwrap().is_empty(),
        "queues apart"
    );
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

// 8 (SQLite: a timestamp column is text there and can hold anything)
async fn a_timestamp_in_an_unknown_format_is_reported_and_the_rest_go_on(t: &TestDb) {
    assert_eq!(t.db.dialect(), Dialect::Sqlite);
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

/// SQLite keeps whatever text a host writes. Expiries spelled every way SQLite's date
/// functions or a host's formatter might (an offset, a space before it, fractions, a lower-case
/// `t` or `z`, no seconds, no time, hour 24, 30 February, trailing and leading spaces, a
/// Julian day number): whatever the row-by-row path makes of each — repaired, or reported as
/// unreadable or as a live lease — the in-database repair makes the same.
async fn text_expiries_in_any_spelling_come_out_alike_both_ways(t: &TestDb) {
    assert_eq!(t.db.dialect(), Dialect::Sqlite);
    let spellings = [
        "2024-01-24T11:00:00+00:00",
        "2024-01-24 11:00:00",
        "2024-01-24T11:00:00Z",
        "2024-01-24T11:00:00z",
        "2024-01-24t11:00:00Z",
        "2024-01-24T11:00:00.5+00:00",
        "2024-01-24T11:00:00.123456789+00:00",
        "2024-01-24T11:00:00 +00:00",
        "2024-01-24T11:00:00 Z",
        "2024-01-24T11:00:00+0000",
        "2024-01-24T13:00:00+02:00",
        "2024-01-24T11:30:00+01:00",
        "2024-01-24T11:00:00-01:00",
        "2024-01-24T11:00:00 ",
        " 2024-01-24T11:00:00+00:00",
        "2024-01-24T11:00",
        "2024-01-24",
        "2024-01-24T24:00:00+00:00",
        "2023-02-30T11:00:00+00:00",
        "2460334.0",
        "2024-01-24T11:00:00  +00:00",
        "2024-01-24T11:00:00.+00:00",
        "2024-01-24T11:00:00.Z",
        "2024-01-24T11:00:00+00",
        "2024-01-24T11:00:00+00:00:00",
        "2024-01-24T11:00:00+00:00Z",
        "2024-01-24T11:00:00+01:30",
        "2024-01-24T11:00:00+24:00",
        "2024-01-24T11:00:00.1234567890123+00:00",
        "2024-01-24 11:00:00.000",
        "2024-1-24T11:00:00+00:00",
        "+2024-01-24T11:00:00+00:00",
        "2024-01-24T11:00:60+00:00",
        "2024-01-24T11:60:00+00:00",
    ];
    expiries_alike_both_ways(t, "spelled", &quoted(spellings)).await;
}

/// Every spelling one character off a few readable ones (each character replaced by, or
/// preceded by, a digit, a separator, a letter or a non-ASCII character; one dropped), and
/// days 29 to 31 of every month: the in-database repair takes none the row-by-row path would
/// not read. (Rows it leaves to the row-by-row path come out alike either way; this catches a
/// check that lets through what the row-by-row path reports.)
async fn text_expiries_one_character_off_come_out_alike_both_ways(t: &TestDb) {
    assert_eq!(t.db.dialect(), Dialect::Sqlite);
    let bases = [
        "2024-01-24T11:00:00.5+01:00",
        "2024-01-24 11:00:00Z",
        "2023-02-28T11:00:00-00:30",
    ];
    let chars = [
        '0', '9', '-', ':', 'T', 't', ' ', 'Z', 'z', '+', '.', '/', '\u{e9}',
    ];
    let mut spellings = std::collections::BTreeSet::new();
    for base in bases {
        let b: Vec<char> = base.chars().collect();
        for i in 0..=b.len() {
            let (head, tail) = b.split_at(i);
            let word = |mid: &[char], rest: &[char]| -> String {
                head.iter().chain(mid).chain(rest).collect()
            };
            if let Some((_, after)) = tail.split_first() {
                spellings.insert(word(&[], after));
                for c in chars {
                    spellings.insert(word(&[c], after));
                }
            }
            for c in chars {
                spellings.insert(word(&[c], tail));
            }
        }
    }
    for year in [2023, 2024] {
        for month in 1..=12 {
            for day in 28..=31 {
                spellings.insert(format!("{year}-{month:02}-{day:02}T11:00:00+00:00"));
            }
        }
    }
    let mut spellings = quoted(spellings);
    // a NUL and what follows: SQLite's own date functions stop at it, the row-by-row read
    // (and so the in-database check, which decodes the same way) reads on
    for base in bases {
        for tail in ["char(0)", "char(0) || 'junk'", "char(0) || '+05:00'"] {
            spellings.push(format!("'{base}' || {tail}"));
        }
    }
    expiries_alike_both_ways(t, "one_off", &spellings).await;
}

/// Text values as SQL string literals.
fn quoted<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| format!("'{}'", v.as_ref().replace('\'', "''")))
        .collect()
}

/// Repairs a table of processing jobs with these text expiries (one each, owned; SQL
/// expressions) in the database and then, a copy, row by row: the counters and every row come
/// out the same.
async fn expiries_alike_both_ways(t: &TestDb, prefix: &str, spellings: &[String]) {
    let mut outcomes = Vec::new();
    for in_db in [true, false] {
        let table = format!("{prefix}_{}", u8::from(in_db));
        let jobs = Jobs::new(&Backend::Sql(t), &table, Shape::default()).await;
        for (n, chunk) in spellings.chunks(200).enumerate() {
            let rows: Vec<String> = chunk
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let i = n * 200 + i;
                    format!("({}, 'processing', 'w', {e}, {})", i + 1, i % 4)
                })
                .collect();
            t.exec(&format!(
                "INSERT INTO {table} (id, status, locked_by, locked_until, attempts) VALUES {}",
                rows.join(", ")
            ))
            .await;
        }
        outcomes.push(repaired_one_way(&jobs, in_db).await);
    }
    assert!(outcomes[0].0[0] > 0, "some are repaired: {:?}", outcomes[0]);
    assert_eq!(outcomes[0], outcomes[1], "in the database, then row by row");
}

/// One repair of `jobs` with scenario A's settings, inside the database or row by row: the
/// outcome counters and the anomalies, then every row as stored.
async fn repaired_one_way(
    jobs: &Jobs<'_>,
    in_db: bool,
) -> (Vec<u64>, Vec<(String, String, Option<String>)>) {
    let step = LeaseRepair::new(jobs.lease.clone(), settings())
        .unwrap()
        .in_database(in_db);
    let r = run(&step).await.unwrap();
    let mut counters: Vec<u64> = OUTCOME.map(|c| r.count(c)).to_vec();
    counters.push(r.count(ANOMALIES));
    (counters, jobs.all_raw_status().await)
}

/// A host trigger that keeps a tally with `INSERT OR REPLACE` (one row per state, replaced as
/// jobs move): SQLite lets an outer `UPDATE OR …` override a trigger's own conflict clause,
/// so the repair must write such a table with a plain `UPDATE`. Both ways repair every stuck
/// job and the tally holds what the trigger wrote.
async fn a_trigger_that_inserts_or_replaces_does_not_stop_the_repair(t: &TestDb) {
    assert_eq!(t.db.dialect(), Dialect::Sqlite);
    let mut outcomes = Vec::new();
    for in_db in [true, false] {
        let table = format!("tallied_{}", u8::from(in_db));
        let jobs = Jobs::new(&Backend::Sql(t), &table, Shape::default()).await;
        for i in 1..=40 {
            let (owner, until) = if i % 4 == 0 {
                ("NULL", "NULL")
            } else {
                ("'w'", "'2024-01-24T11:00:00+00:00'")
            };
            t.exec(&format!(
                "INSERT INTO {table} (id, status, locked_by, locked_until, attempts) \
                 VALUES ({i}, 'processing', {owner}, {until}, {})",
                i % 5
            ))
            .await;
        }
        t.exec(&format!(
            "CREATE TABLE {table}_tally (status TEXT PRIMARY KEY, last_id INTEGER)"
        ))
        .await;
        t.exec(&format!(
            "CREATE TRIGGER {table}_tally AFTER UPDATE OF status ON {table} FOR EACH ROW \
             BEGIN INSERT OR REPLACE INTO {table}_tally VALUES (NEW.status, NEW.id); END"
        ))
        .await;
        let (counters, rows) = repaired_one_way(&jobs, in_db).await;
        let tally = count(t, &format!("{table}_tally")).await;
        outcomes.push((counters, rows, tally));
    }
    assert_eq!(
        outcomes[0].0[0], 30,
        "every expired lease: {:?}",
        outcomes[0]
    );
    assert_eq!(outcomes[0].2, 2, "retry and failed tallied");
    assert_eq!(outcomes[0], outcomes[1], "in the database, then row by row");
}

/// Text keys in a column declared `COLLATE NOCASE`, whose order is not the bytes' order
/// (`a-…` < `B-…` there, `B-…` < `a-…` in bytes): both ways page through every stuck job, in
/// small batches, and repair each once; the in-database pass does not take a key that sorts
/// lower in Rust for one that did not move on.
async fn text_keys_in_a_nocase_column_are_all_repaired_both_ways(t: &TestDb) {
    assert_eq!(t.db.dialect(), Dialect::Sqlite);
    let letters = ["a", "B", "c", "D", "e", "F"];
    let mut outcomes = Vec::new();
    for in_db in [true, false] {
        let table = format!("nocase_{}", u8::from(in_db));
        t.exec(&format!(
            "CREATE TABLE {table} (id TEXT PRIMARY KEY COLLATE NOCASE, status TEXT NOT NULL, \
             locked_by TEXT, locked_until TEXT, attempts INTEGER, last_error TEXT)"
        ))
        .await;
        t.exec(&format!(
            "CREATE INDEX {table}_keyset ON {table} (status, id)"
        ))
        .await;
        for i in 0..60 {
            let (owner, until) = if i % 3 == 0 {
                ("NULL", "NULL".to_owned())
            } else {
                ("'w'", "'2024-01-24T11:00:00+00:00'".to_owned())
            };
            t.exec(&format!(
                "INSERT INTO {table} (id, status, locked_by, locked_until, attempts) \
                 VALUES ('{}-{i:03}', 'processing', {owner}, {until}, {})",
                letters[i % letters.len()],
                i % 4
            ))
            .await;
        }
        let map = JobTable::builder(&table)
            .key_kind(store_sqlx::KeyKind::Text)
            .build()
            .unwrap();
        let store = Arc::new(crate::lease::CountPlanned::new(Arc::new(
            t.db.lease_store(map),
        )));
        let step = LeaseRepair::new(store.clone(), settings())
            .unwrap()
            .batch_size(7)
            .unwrap()
            .plan_batch_size(5)
            .unwrap()
            .in_database(in_db);
        let r = run(&step).await.unwrap();
        if in_db {
            // the pass itself goes on to the end, in the column's order (12 batches of 5), and
            // leaves nothing to the row-by-row path
            assert_eq!(store.planned(), 12, "batches repaired in the database");
        }
        let counters: Vec<u64> = OUTCOME.map(|c| r.count(c)).to_vec();
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE status = 'processing'"
        )))
        .fetch_one(t.db.as_sqlite().unwrap())
        .await
        .unwrap();
        outcomes.push((counters, left));
    }
    assert_eq!(outcomes[0].1, 0, "every job repaired: {outcomes:?}");
    assert_eq!(outcomes[0], outcomes[1], "in the database, then row by row");
    // and the in-database pass alone pages through all of them (nothing left to the row path)
    t.exec(
        "UPDATE nocase_1 SET status = 'processing', \
         locked_by = CASE WHEN CAST(substr(id, 3) AS INTEGER) % 3 = 0 THEN NULL ELSE 'w' END, \
         locked_until = CASE WHEN CAST(substr(id, 3) AS INTEGER) % 3 = 0 THEN NULL \
                        ELSE '2024-01-24T11:00:00+00:00' END",
    )
    .await;
    let map = JobTable::builder("nocase_1")
        .key_kind(store_sqlx::KeyKind::Text)
        .build()
        .unwrap();
    let store = t.db.lease_store(map);
    let plans = [
        lease_repair::CandidateKind::ExpiredLease,
        lease_repair::CandidateKind::Orphaned,
    ]
    .map(|k| lease_repair::RepairPlan::new(k, now(), &settings()).unwrap());
    let (mut after, mut repaired, mut batches) = (None, 0, 0);
    loop {
        let b = lease_repair::LeaseStore::repair_planned(&store, &plans, after, 5)
            .await
            .unwrap()
            .expect("SQLite repairs in the database");
        repaired += b.repaired();
        batches += 1;
        if !b.more {
            break;
        }
        assert!(batches < 13, "more batches than 60 jobs need");
        after = b.last;
    }
    assert_eq!(repaired, 60, "in {batches} batches");
    // twelve ranges of 5 processing jobs, then the one that finds none left
    assert_eq!(batches, 13);
}

// 8 (PostgreSQL and MariaDB: a typed column refuses `next tuesday`, but holds times no calendar
// has: PostgreSQL's `infinity` and `-infinity`, MariaDB's zero date and, with
// ALLOW_INVALID_DATES, 30 February)
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn a_time_the_server_holds_but_no_calendar_has_is_reported(t: &TestDb) {
    let jobs = jobs_table(t).await;
    jobs.insert(
        &[
            StoredJob::new(1, "processing", None, None, Some(0)),
            expired_job(4),
        ],
        Shape::default(),
    )
    .await;
    // 2 is selected as an expired lease, 3 as a lease too far ahead: both paths decode
    let insert =
        "INSERT INTO processing_jobs (id, status, locked_by, locked_until, attempts) VALUES";
    match t.db.dialect() {
        Dialect::Postgres => {
            t.exec(&format!(
                "{insert} (2, 'processing', 'w', '-infinity', 0), (3, 'processing', 'w', 'infinity', 0)"
            ))
            .await
        }
        Dialect::MySql => {
            t.exec(&format!(
                "SET STATEMENT sql_mode = 'ALLOW_INVALID_DATES' FOR {insert} \
                 (2, 'processing', 'w', '0000-00-00 00:00:00', 0), \
                 (3, 'processing', 'w', '2024-02-30 10:00:00', 0)"
            ))
            .await
        }
        Dialect::Sqlite => unreachable!("SQLite has its own case"),
    }
    let r = run(&LeaseRepair::new(jobs.lease.clone(), settings()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.count(JOBS_REQUEUED), 1, "the orphan is repaired");
    assert_eq!(
        r.count(LEASES_REPAIRED),
        1,
        "the readable expired lease is repaired"
    );
    if t.db.dialect() == Dialect::MySql {
        // MySQL's convention: the zero date is a "dummy date" that reads as no time at all, so
        // the row is an owner without an expiry — reported, and left alone like the other
        let listed = r.details()["anomalies"].as_array().unwrap();
        assert!(
            listed
                .iter()
                .any(|a| a["key"] == "2" && a["kind"] == "owner_without_expiry"),
            "{listed:?}"
        );
        assert_unreadable_reported(&r, &["3"], "locked_until");
    } else {
        assert_unreadable_reported(&r, &["2", "3"], "locked_until");
    }
    let after = statuses(t).await;
    assert_eq!(
        after,
        [
            (1, "retry".to_owned()),
            (2, "processing".to_owned()),
            (3, "processing".to_owned()),
            (4, "retry".to_owned())
        ],
        "unreadable rows are never changed"
    );
}

/// `sql` run as it is; the server's error if it refuses it.
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn try_exec(t: &TestDb, sql: &str) -> Result<(), String> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match t.db.dialect() {
        #[cfg(feature = "postgres")]
        Dialect::Postgres => sqlx::raw_sql(sql)
            .execute(t.db.as_postgres().unwrap())
            .await
            .map(drop),
        #[cfg(feature = "mysql")]
        Dialect::MySql => sqlx::raw_sql(sql)
            .execute(t.db.as_mysql().unwrap())
            .await
            .map(drop),
        _ => sqlx::raw_sql(sql)
            .execute(t.db.as_sqlite().unwrap())
            .await
            .map(drop),
    }
    .map_err(|e| e.to_string())
}

/// `(id, status)` of every job, read without touching the columns that may be unreadable.
async fn statuses(t: &TestDb) -> Vec<(i64, String)> {
    let sql = "SELECT id, status FROM processing_jobs ORDER BY id";
    match t.db.dialect() {
        #[cfg(feature = "postgres")]
        Dialect::Postgres => {
            sqlx::query_as(sql)
                .fetch_all(t.db.as_postgres().unwrap())
                .await
        }
        #[cfg(feature = "mysql")]
        Dialect::MySql => {
            sqlx::query_as(sql)
                .fetch_all(t.db.as_mysql().unwrap())
                .await
        }
        _ => {
            sqlx::query_as(sql)
                .fetch_all(t.db.as_sqlite().unwrap())
                .await
        }
    }
    .unwrap()
}

/// PostgreSQL and MariaDB refuse a hostile value on insert (with the error `refused[0]` or
/// `refused[1]`), so it can never reach recon; the row next to it is repaired as usual.
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn refused_on_insert(t: &TestDb, owner: &str, attempts: &str, refused: [&str; 2]) {
    let jobs = jobs_table(t).await;
    jobs.insert(
        &[StoredJob::new(1, "processing", None, None, Some(0))],
        Shape::default(),
    )
    .await;
    let err = try_exec(
        t,
        &format!(
            "INSERT INTO processing_jobs (id, status, locked_by, locked_until, attempts) \
             VALUES (2, 'processing', {owner}, NULL, {attempts})"
        ),
    )
    .await
    .expect_err("the server stored the hostile value");
    let want = refused[usize::from(t.db.dialect() == Dialect::MySql)];
    assert!(err.contains(want), "{err}");
    let r = run(&LeaseRepair::new(jobs.lease.clone(), settings()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.count(JOBS_REQUEUED), 1);
    assert_eq!(statuses(t).await, [(1, "retry".to_owned())]);
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

/// Dates that only look like dates, in the past: SQLite's own date functions roll 30 February
/// over into March, take hour 24 and trailing spaces; MariaDB stores 30 February under
/// `ALLOW_INVALID_DATES`. The row-by-row path reads none of them, so they are reported and left
/// alone — also when the repair runs inside the database, which must leave them to it.
async fn impossible_past_dates_are_reported_not_repaired(t: &TestDb) {
    let jobs = jobs_table(t).await;
    jobs.insert(&[expired_job(1)], Shape::default()).await;
    let insert =
        "INSERT INTO processing_jobs (id, status, locked_by, locked_until, attempts) VALUES";
    let bad: &[&str] = match t.db.dialect() {
        Dialect::Sqlite => {
            t.exec(&format!(
                "{insert} (2, 'processing', 'w', '2023-02-30 10:00:00', 0), \
                 (3, 'processing', 'w', '2023-01-10 24:00:00', 0), \
                 (4, 'processing', 'w', '2023-01-10 10:00:00 ', 0)"
            ))
            .await;
            &["2", "3", "4"]
        }
        Dialect::MySql => {
            t.exec(&format!(
                "SET STATEMENT sql_mode = 'ALLOW_INVALID_DATES' FOR {insert} \
                 (2, 'processing', 'w', '2023-02-30 10:00:00', 0)"
            ))
            .await;
            &["2"]
        }
        // a timestamptz column refuses them
        _ => {
            #[cfg(feature = "postgres")]
            assert!(
                try_exec(
                    t,
                    &format!("{insert} (2, 'processing', 'w', '2023-02-30 10:00:00', 0)")
                )
                .await
                .is_err(),
                "PostgreSQL took 30 February"
            );
            &[]
        }
    };
    let r = run(&LeaseRepair::new(jobs.lease.clone(), settings()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.count(LEASES_REPAIRED), 1, "only job 1 is repaired");
    if !bad.is_empty() {
        assert_unreadable_reported(&r, bad, "locked_until");
    }
    let after = statuses(t).await;
    for (id, status) in &after[1..] {
        assert_eq!(status, "processing", "job {id} was changed");
    }
    assert_eq!(after.len(), bad.len() + 1);
}

// 9 (SQLite: text columns hold any bytes)
async fn non_utf8_text_is_reported_and_the_rest_go_on(t: &TestDb) {
    assert_eq!(t.db.dialect(), Dialect::Sqlite);
    let jobs = jobs_table(t).await;
    t.exec("INSERT INTO processing_jobs (id, status, locked_by, locked_until, attempts) VALUES (1, 'processing', CAST(X'FFFE41' AS TEXT), '2024-01-24T10:00:00+00:00', 0)").await;
    jobs.insert(&[expired_job(2)], Shape::default()).await;
    let r = run(&LeaseRepair::new(jobs.lease.clone(), settings()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.count(LEASES_REPAIRED), 1);
    assert_unreadable_reported(&r, &["1"], "locked_by");
    assert_eq!(jobs.all_raw_status().await[0].1, "processing");
}

// 9 (PostgreSQL and MariaDB: refused on insert, so it never reaches recon)
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn non_utf8_text_is_refused_by_the_server(t: &TestDb) {
    let bytes = match t.db.dialect() {
        Dialect::Postgres => "convert_from('\\xfffe41'::bytea, 'UTF8')",
        _ => "X'FFFE41'",
    };
    refused_on_insert(
        t,
        bytes,
        "0",
        ["invalid byte sequence", "Incorrect string value"],
    )
    .await;
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
    // 'a' then 2-byte characters: the 2,048-byte cut falls inside a character
    let item = format!("a{}", "é".repeat(5 * 1024 * 1024));
    let upstream = || {
        recon_core::Error::permanent(
            "upstream said",
            std::io::Error::other("é".repeat(5 * 1024 * 1024)),
        )
    };
    struct Loud(String);
    #[recon_core::async_trait]
    impl Reconciler for Loud {
        fn name(&self) -> &str {
            "loud"
        }
        async fn reconcile(&self, _: &RunContext) -> recon_core::Result<StepReport> {
            let mut r = StepReport::new("loud");
            r.push_error("job-1", self.0.clone());
            Ok(r)
        }
    }
    struct Fails(fn() -> recon_core::Error);
    #[recon_core::async_trait]
    impl Reconciler for Fails {
        fn name(&self) -> &str {
            "fails"
        }
        async fn reconcile(&self, _: &RunContext) -> recon_core::Result<StepReport> {
            Err((self.0)())
        }
    }
    let runner = Runner::builder("loud")
        .time_source(Arc::new(ManualClock::at(now())))
        .step(Loud(item.clone()))
        .step(Fails(upstream))
        .run_log(Arc::new(t.db.run_log()))
        .build()
        .unwrap();
    let report = runner.run().await;
    let stored = t.db.run_log().latest("loud").await.unwrap().unwrap();
    assert_eq!(stored, report, "stored as reported");
    let json = serde_json::to_string(&stored).unwrap();
    assert!(json.len() < 16 * 1024, "{} bytes", json.len());

    // Each kept part is a prefix of the original, cut at a character boundary just under the
    // limit, followed by the marker with the original length.
    let check = |what: &str, kept: &str, full: &str| {
        let marker = format!("…[truncated, {} bytes in all]", full.len());
        let head = kept.strip_suffix(&marker).unwrap_or_else(|| {
            panic!(
                "{what}: no {marker:?} at the end of {:?}",
                &kept[kept.len().saturating_sub(80)..]
            )
        });
        assert!(
            full.starts_with(head),
            "{what}: not a prefix of the original"
        );
        let max = StepReport::MAX_REASON_BYTES;
        assert!(
            head.len() <= max && head.len() > max - 4,
            "{what}: kept {} bytes",
            head.len()
        );
    };
    let loud = &stored.step("loud").unwrap().report;
    assert_eq!(loud.item_errors().len(), 1);
    let kept = &loud.item_errors()[0].reason;
    check("item error", kept, &item);
    assert_eq!(
        kept.len(),
        StepReport::MAX_REASON_BYTES - 1 + "…[truncated, 10485761 bytes in all]".len(),
        "the cut moved back to the character boundary"
    );
    let fails = stored.step("fails").unwrap();
    assert_eq!(fails.status, recon_core::StepStatus::Failed);
    let message = &fails.error.as_ref().expect("the step error").message;
    check("step error", message, &upstream().to_string());
}

// 14
async fn a_clock_that_goes_backwards_between_runs(t: &TestDb) {
    let jobs = jobs_table(t).await;
    let ended = |minutes: i64| Some(now() - chrono::Duration::minutes(minutes));
    jobs.insert(
        &[StoredJob::new(
            1,
            "processing",
            Some("w"),
            ended(30),
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
    // Written after the first run: job 2's lease ended an hour before the first run's `now`,
    // so it is expired by that clock but still live two hours earlier; job 3's ended three
    // hours before, expired by either clock.
    jobs.insert(
        &[
            StoredJob::new(2, "processing", Some("w"), ended(60), Some(0)),
            StoredJob::new(3, "processing", Some("w"), ended(180), Some(0)),
        ],
        Shape::default(),
    )
    .await;
    let job1 = jobs.all().await[0].clone();

    clock.advance(-chrono::Duration::hours(2));
    let second = runner.run().await;
    assert_eq!(
        second.status,
        RunStatus::Success,
        "an earlier now is not an error"
    );
    assert_eq!(
        second.count(LEASES_REPAIRED),
        1,
        "the earlier now decides: job 3 only"
    );
    let rows = jobs.all().await;
    assert_eq!(rows[0], job1, "job 1 is not repaired twice");
    assert_eq!(
        (
            rows[1].row.status.as_str(),
            rows[1].row.lease_owner.as_deref()
        ),
        ("processing", Some("w")),
        "job 2's lease is live by the earlier clock: a run that ignored it would break a live worker"
    );
    assert_eq!(rows[2].row.status, "retry");
    let last = t.db.run_log().latest("startup").await.unwrap().unwrap();
    assert_eq!(
        last.id, second.id,
        "the run that happened last is the latest, whatever its clock"
    );

    // back at the first run's time: job 2 is repaired, once, and nothing else
    clock.advance(chrono::Duration::hours(2));
    let third = runner.run().await;
    assert_eq!(third.count(LEASES_REPAIRED), 1);
    let after = jobs.all().await;
    assert_eq!((&after[0], &after[2]), (&rows[0], &rows[2]));
    assert_eq!(after[1].row.status, "retry");
    assert_eq!(after[1].row.attempts, Some(0));

    // A lease-row run lock across the step back: it holds until its expiry whatever the
    // clock says (not stolen early), and ends at that expiry (not held forever).
    let lock_clock = ManualClock::at(now());
    let lock = |holder: &str| {
        t.db.run_lock()
            .mode(store_sqlx::LockMode::LeaseRow)
            .holder(holder)
            .clock(Arc::new(lock_clock.clone()))
    };
    let ttl = Duration::from_secs(600);
    let LockAttempt::Acquired(a) = lock("a").try_acquire("startup", ttl).await.unwrap() else {
        panic!("the first instance takes the lock")
    };
    lock_clock.advance(-chrono::Duration::hours(2));
    assert!(
        matches!(
            lock("b").try_acquire("startup", ttl).await.unwrap(),
            LockAttempt::HeldByOther { .. }
        ),
        "stolen when the clock went back"
    );
    lock_clock.set(now() + chrono::Duration::seconds(599));
    assert!(
        matches!(
            lock("b").try_acquire("startup", ttl).await.unwrap(),
            LockAttempt::HeldByOther { .. }
        ),
        "stolen before its expiry"
    );
    lock_clock.set(now() + chrono::Duration::seconds(601));
    let LockAttempt::Acquired(b) = lock("b").try_acquire("startup", ttl).await.unwrap() else {
        panic!("the lock outlived its expiry")
    };
    assert!(
        lock("a").release(a).await.is_err(),
        "the old holder cannot release the new holder's lock"
    );
    lock("b").release(b).await.unwrap();
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

/// A table's own `ON CONFLICT` clause acts alike both ways. Here the second expired job's
/// message would break `UNIQUE ON CONFLICT REPLACE`, and so would the second orphan's: the
/// in-database `UPDATE OR IGNORE` would leave those jobs as they were, so its batch is refused
/// and done with a plain `UPDATE`, which lets the clause replace the first of each — as the
/// row-by-row repair does. Every row and counter comes out the same (each job counted once).
async fn a_tables_own_conflict_clause_acts_alike_both_ways(t: &TestDb) {
    assert_eq!(t.db.dialect(), Dialect::Sqlite);
    let outcomes = alike_both_ways(
        t,
        "replace",
        "last_error TEXT UNIQUE ON CONFLICT REPLACE",
        "(1, 'processing', 'w', '2024-01-24T11:00:00+00:00', 0), \
         (2, 'processing', 'w', '2024-01-24T11:00:00+00:00', 1), \
         (3, 'processing', NULL, NULL, 0), (4, 'done', NULL, NULL, 0), \
         (5, 'processing', NULL, NULL, 2)",
    )
    .await;
    let ids: Vec<i64> = outcomes.1.iter().map(|r| r.0).collect();
    assert_eq!(
        ids,
        [2, 4, 5],
        "the clause replaced jobs 1 and 3: {outcomes:?}"
    );
}

/// A number where a text expiry is mapped is read as sqlx reads it (an integer as Unix
/// seconds, a real as a Julian day), so the row-by-row guard must match it as such: both
/// jobs are repaired, both ways, none "changed".
async fn numbers_in_a_text_expiry_column_are_repaired_both_ways(t: &TestDb) {
    assert_eq!(t.db.dialect(), Dialect::Sqlite);
    let (counters, rows) = alike_both_ways(
        t,
        "numbers",
        "last_error TEXT",
        "(1, 'processing', 'w', julianday('2024-01-24 11:00:00'), 0), \
         (2, 'processing', 'w', 1706094000, 1), \
         (3, 'processing', 'w', julianday('2024-01-24 13:00:00'), 0)",
    )
    .await;
    assert_eq!(counters, [2, 0, 0, 0, 0], "{rows:?}");
    let statuses: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(statuses, ["retry", "retry", "processing"]);
}

/// Runs the whole step on a fresh SQLite job table (`id`, `status NOT NULL`, `locked_by`,
/// `locked_until DATETIME`, `attempts NOT NULL`, then `extra` columns) holding `rows` (`id,
/// status, locked_by, locked_until, attempts`), inside the database and then, on a copy,
/// row by row: asserts both come out alike and returns the outcome counters and every row
/// (`id, status, last_error`).
async fn alike_both_ways(
    t: &TestDb,
    prefix: &str,
    extra: &str,
    rows: &str,
) -> (Vec<u64>, Vec<(i64, String, Option<String>)>) {
    let mut outcomes = Vec::new();
    for in_db in [true, false] {
        let table = format!("{prefix}_{}", u8::from(in_db));
        t.exec(&format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, status TEXT NOT NULL, \
             locked_by TEXT, locked_until DATETIME, attempts INTEGER NOT NULL, {extra})"
        ))
        .await;
        t.exec(&format!(
            "INSERT INTO {table} (id, status, locked_by, locked_until, attempts) VALUES {rows}"
        ))
        .await;
        let store = t.db.lease_store(JobTable::builder(&table).build().unwrap());
        let step = LeaseRepair::new(store, settings())
            .unwrap()
            .in_database(in_db);
        let r = run(&step).await.unwrap();
        let counters: Vec<u64> = OUTCOME.map(|c| r.count(c)).to_vec();
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(
            format!("SELECT id, status, last_error FROM {table} ORDER BY id"),
        ))
        .fetch_all(t.db.as_sqlite().unwrap())
        .await
        .unwrap();
        outcomes.push((counters, rows));
    }
    assert_eq!(outcomes[0], outcomes[1], "in the database, then row by row");
    outcomes.pop().unwrap()
}

/// The row-by-row repair's guard compares a text expiry by the instant the read decoded,
/// exactly: a lease renewed by a fraction of a millisecond between the read and the write is
/// left alone (SQLite's `strftime`, which the guard used before, reads milliseconds only),
/// and a job whose expiry SQLite's date functions cannot read but the read decodes (a
/// `+0000` offset) is repaired, not "changed" at every run.
async fn a_lease_renewed_by_a_fraction_of_a_millisecond_is_not_clobbered(t: &TestDb) {
    assert_eq!(t.db.dialect(), Dialect::Sqlite);
    let jobs = Jobs::new(&Backend::Sql(t), "submilli", Shape::default()).await;
    t.exec(
        "INSERT INTO submilli (id, status, locked_by, locked_until, attempts) VALUES \
         (1, 'processing', 'w', '2024-01-24T11:00:00.000100+00:00', 0), \
         (2, 'processing', 'w', '2024-01-24T11:00:00+0000', 0)",
    )
    .await;
    let (rows, repairs) = jobs.read_expired_and_decide(now(), &settings()).await;
    assert_eq!(repairs.len(), 2, "both read and decided: {rows:?}");
    // job 1's worker renews its lease by 300 µs, spelled its own way
    t.exec("UPDATE submilli SET locked_until = '2024-01-24 11:00:00.0004' WHERE id = 1")
        .await;
    let out = jobs.lease.apply(&repairs, now()).await.unwrap();
    assert_eq!(
        out.skipped,
        [lease_repair::JobKey::Int(1)],
        "the renewed lease"
    );
    assert_eq!(
        out.applied,
        [lease_repair::JobKey::Int(2)],
        "the +0000 spelling"
    );
    assert_eq!(
        jobs.all_raw_status().await,
        [
            (
                "1".to_owned(),
                "processing".to_owned(),
                Some("0".to_owned())
            ),
            ("2".to_owned(), "retry".to_owned(), Some("0".to_owned())),
        ]
    );
}

// 17 (SQLite: an INTEGER column holds text)
async fn a_column_holding_text_where_attempts_should_be(t: &TestDb) {
    assert_eq!(t.db.dialect(), Dialect::Sqlite);
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

// 17 (PostgreSQL and MariaDB: refused on insert, so it never reaches recon)
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn text_in_the_attempts_column_is_refused_by_the_server(t: &TestDb) {
    refused_on_insert(
        t,
        "NULL",
        "'three'",
        ["invalid input syntax", "Incorrect integer value"],
    )
    .await;
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
    text_keys_with_quotes_and_comment_markers_are_bound,
    predicate_values_with_sql_in_them_are_bound,
    hostile_data_makes_plain_counter_names,
    impossible_past_dates_are_reported_not_repaired,
    a_huge_error_message_is_stored_truncated_with_a_marker,
    a_clock_that_goes_backwards_between_runs,
    a_watermark_in_the_future_and_one_moved_back,
    extreme_lock_ttls,
    schema_qualified_and_overlong_names,
);

/// Cases 8, 9 and 17 on SQLite, whose columns hold any value: the hostile value is stored and
/// recon reports it.
mod sqlite_only {
    macro_rules! cases {
        ($($case:ident),*) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let t = crate::common::sqlite().await;
                super::$case(&t).await;
                t.finish().await;
            }
        )*};
    }
    cases!(
        text_keys_in_a_nocase_column_are_all_repaired_both_ways,
        text_expiries_in_any_spelling_come_out_alike_both_ways,
        text_expiries_one_character_off_come_out_alike_both_ways,
        a_trigger_that_inserts_or_replaces_does_not_stop_the_repair,
        a_timestamp_in_an_unknown_format_is_reported_and_the_rest_go_on,
        non_utf8_text_is_reported_and_the_rest_go_on,
        a_column_holding_text_where_attempts_should_be,
        a_lease_renewed_by_a_fraction_of_a_millisecond_is_not_clobbered,
        a_tables_own_conflict_clause_acts_alike_both_ways,
        numbers_in_a_text_expiry_column_are_repaired_both_ways
    );
}

/// Cases 8, 9 and 17 on PostgreSQL and MariaDB, whose typed columns refuse those values: what
/// a hostile host can store there instead, or proof that the server refuses it.
mod servers {
    macro_rules! cases {
        ($($case:ident),*) => {
            #[cfg(feature = "postgres")]
            mod postgres {$(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(t) = crate::common::postgres().await else { return };
                    super::super::$case(&t).await;
                    t.finish().await;
                }
            )*}
            #[cfg(feature = "mysql")]
            mod mysql {$(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(t) = crate::common::mysql().await else { return };
                    super::super::$case(&t).await;
                    t.finish().await;
                }
            )*}
        };
    }
    cases!(
        a_time_the_server_holds_but_no_calendar_has_is_reported,
        non_utf8_text_is_refused_by_the_server,
        text_in_the_attempts_column_is_refused_by_the_server
    );
}

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
