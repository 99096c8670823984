//! Scenario B through `examples/periodic_sync.rs`: six cycles of the upstream sync at 60 ms
//! (standing for 30 min, so one scenario minute is 2 ms) on a frozen clock, with the exact
//! figures of every cycle; then a restart that continues from the stored watermark.

use std::process::Output;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use lineage_checksum::{
    FailedRecordStore, Fingerprint, FingerprintEntry, FingerprintStore, LineageStatus,
    LineageTracker, LineageUpdate, NewFailure, RecordBatch, Stages,
};
use queue_rehydrate::{DesiredJob, JobQueue};
use recon_core::WatermarkStore;
use serde_json::Value;

use super::common::TestDb;
use super::{NOW, columns, json, results, rows, run};

const INTERVAL_MS: &str = "60";

/// `minutes` of scenario time after `NOW`, at 60 ms per 30 minutes.
fn at(minutes: i64) -> DateTime<Utc> {
    NOW.parse::<DateTime<Utc>>().unwrap() + TimeDelta::milliseconds(2 * minutes)
}

fn watermark(cycle: &Value) -> DateTime<Utc> {
    cycle["watermark"]
        .as_str()
        .unwrap_or_else(|| panic!("no watermark in {cycle}"))
        .parse()
        .unwrap()
}

const COUNTS: [&str; 5] = ["fetched", "created", "updated", "unchanged", "orphaned"];

fn periodic_sync_on(url: &str) {
    let out = json(&run(
        "periodic_sync",
        &[
            "--database-url",
            url,
            "--now",
            NOW,
            "--interval-ms",
            INTERVAL_MS,
            "--reset-demo",
            "--json",
        ],
    ));
    let cycles = out["cycles"].as_array().expect("cycles");
    assert_eq!(cycles.len(), 6, "{url}: {out}");
    for (i, c) in cycles.iter().enumerate() {
        assert_eq!(c["cycle"], i as u64 + 1);
        let expected = at(30 * i as i64).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        assert_eq!(
            c["timestamp"],
            expected.as_str(),
            "the clock moves one interval a cycle"
        );
    }
    let c = |n: usize| &cycles[n - 1];

    // 1. First run (reads back 24 h): four reservations created, the 2 PIN jobs of the
    //    reservation deleted before the demo removed; 3 confirmed reservations have 6 jobs.
    assert_eq!(c(1)["status"], "success", "{url}: {}", c(1));
    assert_eq!(results(c(1), &COUNTS), [4, 4, 0, 0, 2], "{url}: {}", c(1));
    assert_eq!(watermark(c(1)), at(-10), "the highest update time seen");
    assert_eq!(c(1)["pinJobs"], 6);

    // 2. One booking, one confirmation; stay-789 re-read in the overlap costs nothing.
    assert_eq!(c(2)["status"], "success", "{url}: {}", c(2));
    assert_eq!(results(c(2), &COUNTS), [3, 1, 1, 1, 0], "{url}: {}", c(2));
    assert_eq!(watermark(c(2)), at(20));
    assert_eq!(c(2)["pinJobs"], 10);

    // 3. The upstream is down: the first fetch and 3 retries (2 s, 4 s, 8 s scaled) fail, the
    //    run fails, the watermark stays, the cleanup step does not run.
    assert_eq!(c(3)["status"], "failed", "{url}: {}", c(3));
    assert_eq!(
        watermark(c(3)),
        watermark(c(2)),
        "watermark unchanged after an outage"
    );
    assert_eq!(c(3)["upstreamFetches"], 4, "{}", c(3));
    assert_eq!(c(3)["upstreamFailures"], 4, "{}", c(3));
    for k in COUNTS {
        assert!(
            c(3)["results"].get(k).is_none(),
            "{k} in a failed run: {}",
            c(3)
        );
    }
    let errors = c(3)["errors"].to_string();
    assert!(errors.contains("Stays API unreachable"), "{errors}");
    assert_eq!(
        c(3)["steps"],
        serde_json::json!([
            { "name": "stays-sync", "status": "failed" },
            { "name": "pin-jobs", "status": "not run" },
        ]),
        "the cleanup waits for the next run"
    );
    assert_eq!(c(3)["pinJobs"], 10);

    // 4. Back up: what changed during the outage is caught up — stay-555, committed late
    //    with the watermark's exact timestamp, is not missed; stay-789 was cancelled and
    //    deleted, so its 2 PIN jobs are orphans.
    assert_eq!(c(4)["status"], "success", "{url}: {}", c(4));
    assert_eq!(results(c(4), &COUNTS), [4, 2, 1, 1, 2], "{url}: {}", c(4));
    assert_eq!(watermark(c(4)), at(55), "advanced after the outage");
    assert!(watermark(c(4)) > watermark(c(3)));
    assert_eq!(c(4)["pinJobs"], 12);

    // 5. stay-123 stays one night longer: updated, its revokePin job moved.
    assert_eq!(results(c(5), &COUNTS), [2, 0, 1, 1, 0], "{url}: {}", c(5));
    assert_eq!(results(c(5), &["rescheduled", "enqueued"]), [1, 0]);
    assert_eq!(watermark(c(5)), at(100));

    // 6. Nothing new: one overlap re-read, the watermark stays.
    assert_eq!(c(6)["status"], "success", "{url}: {}", c(6));
    assert_eq!(results(c(6), &COUNTS), [1, 0, 0, 1, 0], "{url}: {}", c(6));
    assert_eq!(watermark(c(6)), at(100));
    assert_eq!(c(6)["pinJobs"], 12);

    let jobs: Vec<&str> = out["pinJobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(jobs.len(), 12, "{jobs:?}");
    for gone in [
        "gen-stay-901",
        "rev-stay-901",
        "gen-stay-789",
        "rev-stay-789",
    ] {
        assert!(
            !jobs.contains(&gone),
            "orphan {gone} still queued: {jobs:?}"
        );
    }
    let rev_123 = out["pinJobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == "rev-stay-123")
        .unwrap();
    // check-in NOW's date + 4 days at 15:00, 4 nights → check-out 2024-02-01 11:00, + 24 h
    assert_eq!(rev_123["runAt"], "2024-02-02T11:00:00Z", "{rev_123}");

    // A restart an hour later continues from the stored watermark: the overlap re-reads one
    // reservation, nothing is applied again.
    let later = at(0) + TimeDelta::hours(1);
    let again = json(&run(
        "periodic_sync",
        &[
            "--database-url",
            url,
            "--now",
            &later.to_rfc3339(),
            "--interval-ms",
            INTERVAL_MS,
            "--cycles",
            "2",
            "--json",
        ],
    ));
    let cycles = again["cycles"].as_array().unwrap();
    assert_eq!(cycles.len(), 2);
    for c in cycles {
        assert_eq!(c["status"], "success", "{url}: restart: {c}");
        assert_eq!(results(c, &COUNTS), [1, 0, 0, 1, 0], "{url}: restart: {c}");
        assert_eq!(watermark(c), at(100));
        assert_eq!(c["pinJobs"], 12);
    }
}

#[test]
fn periodic_sync_sqlite() {
    let dir = std::env::temp_dir().join(format!("recon-example-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("sync.sqlite").display());
    periodic_sync_on(&url);

    // The table a person reads: one row per cycle, the outage and its retries explained.
    let text = run(
        "periodic_sync",
        &[
            "--database-url",
            &url,
            "--now",
            NOW,
            "--interval-ms",
            INTERVAL_MS,
            "--reset-demo",
        ],
    );
    assert!(text.status.success(), "{text:?}");
    let out = String::from_utf8_lossy(&text.stdout);
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("cycle"))
        .skip(1)
        .take(6)
        .collect();
    assert_eq!(rows.len(), 6, "{out}");
    let cells = |row: &str| {
        row.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(rows[0]),
        [
            "1",
            "12:00:00.000",
            "success",
            "11:59:59.980",
            "set",
            "4",
            "4",
            "0",
            "0",
            "2",
            "6"
        ],
        "{out}"
    );
    assert_eq!(
        cells(rows[2]),
        [
            "3",
            "12:00:00.120",
            "failed",
            "12:00:00.040",
            "unchanged",
            "-",
            "-",
            "-",
            "-",
            "-",
            "10"
        ],
        "{out}"
    );
    assert!(
        out.contains("the upstream failed 4 of 4 fetches; retried after 2 s"),
        "{out}"
    );
    assert!(out.contains("pin-jobs rescheduled 1 job(s)"), "{out}");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn periodic_sync_postgres() {
    #[cfg(feature = "postgres")]
    if let Some(t) = super::common::postgres().await {
        let base = std::env::var("RECON_TEST_POSTGRES_URL").unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!(
            "{base}{sep}options=-c%20search_path%3D{}",
            t.namespace().unwrap()
        );
        tokio::task::spawn_blocking(move || periodic_sync_on(&url))
            .await
            .unwrap();
        t.finish().await;
    }
}

#[tokio::test]
async fn periodic_sync_mysql() {
    #[cfg(feature = "mysql")]
    if let Some(t) = super::common::mysql().await {
        let base = std::env::var("RECON_TEST_MYSQL_URL").unwrap();
        let root = base.rsplit_once('/').map(|(b, _)| b).unwrap().to_owned();
        let url = format!("{root}/{}", t.namespace().unwrap());
        tokio::task::spawn_blocking(move || periodic_sync_on(&url))
            .await
            .unwrap();
        t.finish().await;
    }
}

#[test]
fn periodic_sync_bad_input_is_one_clear_line() {
    for args in [
        &["--database-url", "oracle://nowhere"][..],
        &["--database-url", "postgres://root:secret@127.0.0.1:1/none"],
        &["--database-url", "sqlite:/nonexistent-dir/sync.sqlite"],
        &["--cycles", "0"],
        &["--interval-ms", "abc"],
        &["--now", "yesterday"],
        &["--no-such-flag"],
    ] {
        let out = run("periodic_sync", args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("secret"), "a password was printed: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// The host's data in the database the example is pointed at
// ---------------------------------------------------------------------------------------------

/// The name of the host's own state in recon's tables (not a demo's).
const HOST: &str = "host";

/// The host's own state in recon's tables, next to a demo's: a watermark, a queued job, a
/// fingerprint, a lineage row and a failed record, each under the name [`HOST`].
pub(super) async fn seed_host_state(t: &TestDb) {
    let at: DateTime<Utc> = NOW.parse().unwrap();
    t.db.watermarks().advance(HOST, at).await.unwrap();
    let job = DesiredJob {
        id: "host-job".into(),
        kind: "email".into(),
        entity_key: "1".into(),
        run_at: at,
        payload: serde_json::json!({}),
    };
    t.db.job_queue(HOST).unwrap().enqueue(&[job]).await.unwrap();
    let batch = RecordBatch {
        run: "host-run".into(),
        at,
        upserts: vec![FingerprintEntry {
            key: "host-1".into(),
            fingerprint: Fingerprint::from_hex(&"ab".repeat(32)).unwrap(),
            group: None,
        }],
        seen: vec![],
    };
    t.db.fingerprints().record(HOST, &batch).await.unwrap();
    let stages = Stages::new(["extracted", "loaded"]).unwrap();
    LineageTracker::new(Arc::new(t.db.lineage()), HOST, stages)
        .unwrap()
        .record(&[LineageUpdate::new(
            "host-1",
            "extracted",
            LineageStatus::Completed,
            at,
        )])
        .await
        .unwrap();
    let failure = NewFailure {
        key: "host-1".into(),
        stage: "loaded".into(),
        error_type: "HostError".into(),
        message: "the host's own failure".into(),
        payload: serde_json::json!({}),
        at,
    };
    t.db.failed_records()
        .record(HOST, &[failure])
        .await
        .unwrap();
}

/// The rows of the host's state (see [`seed_host_state`]) in each of recon's tables.
pub(super) async fn host_state(t: &TestDb) -> Vec<(&'static str, i64)> {
    let mut counts = Vec::new();
    for (table, column) in [
        ("recon_watermarks", "name"),
        ("recon_queued_jobs", "queue"),
        ("recon_fingerprints", "namespace"),
        ("recon_lineage", "pipeline"),
        ("recon_failed_records", "pipeline"),
    ] {
        counts.push((
            table,
            rows(t, &format!("{table} WHERE {column} = '{HOST}'")).await,
        ));
    }
    counts
}

/// What [`host_state`] counts right after [`seed_host_state`].
pub(super) const HOST_STATE: [(&str, i64); 5] = [
    ("recon_watermarks", 1),
    ("recon_queued_jobs", 1),
    ("recon_fingerprints", 1),
    ("recon_lineage", 1),
    ("recon_failed_records", 1),
];

/// The URL an example is given for the test's database.
pub(super) fn example_url(t: &TestDb) -> String {
    if let Some(path) = t.sqlite_path() {
        return format!("sqlite:{}", path.display());
    }
    match t.db.dialect() {
        store_sqlx::Dialect::Postgres => {
            let base = std::env::var("RECON_TEST_POSTGRES_URL").unwrap();
            let sep = if base.contains('?') { '&' } else { '?' };
            format!(
                "{base}{sep}options=-c%20search_path%3D{}",
                t.namespace().unwrap()
            )
        }
        _ => {
            let base = std::env::var("RECON_TEST_MYSQL_URL").unwrap();
            let root = base.rsplit_once('/').map(|(b, _)| b).unwrap();
            format!("{root}/{}", t.namespace().unwrap())
        }
    }
}

/// Run an example off the test's runtime.
pub(super) async fn run_example(name: &'static str, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(name, &args)
    })
    .await
    .unwrap()
}

/// The example stopped with exit code 1 and one line, `error: <start>…`, that points to
/// `--reset-demo`, and printed nothing else.
pub(super) fn refused(out: &Output, start: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("error: {start}")), "{err}");
    assert!(err.contains("--reset-demo"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Run `sql` over a new connection (a pooled SQLite connection of the test may still hold the
/// schema from before an example changed it).
pub(super) async fn exec_on_new_connection(url: &str, sql: &'static str) {
    let db = store_sqlx::Db::connect(url).await.unwrap();
    let sql = sqlx::AssertSqlSafe(sql);
    match db.dialect() {
        #[cfg(feature = "postgres")]
        store_sqlx::Dialect::Postgres => sqlx::raw_sql(sql)
            .execute(db.as_postgres().unwrap())
            .await
            .map(drop),
        #[cfg(feature = "mysql")]
        store_sqlx::Dialect::MySql => sqlx::raw_sql(sql)
            .execute(db.as_mysql().unwrap())
            .await
            .map(drop),
        _ => sqlx::raw_sql(sql)
            .execute(db.as_sqlite().unwrap())
            .await
            .map(drop),
    }
    .unwrap();
    db.close().await;
}

/// periodic_sync pointed at a database with the host's data: recon state under the demo's
/// names, its own `reservations`, another example's table, other queues and pipelines. Each
/// time the example stops with one clear line and touches nothing; only `--reset-demo`
/// replaces the demo's tables and state, and nothing else.
async fn sync_never_touches_the_hosts(t: &TestDb) {
    let url = example_url(t);
    let name = t.db.dialect().name();
    let sync = |extra: &[&str]| {
        let mut a = vec!["--database-url", &url, "--now", NOW, "--interval-ms", "60"];
        a.extend_from_slice(extra);
        a.push("--json");
        run_example("periodic_sync", a.into_iter().map(str::to_owned).collect())
    };
    let demo_tables = ["reservations", "sync_demo", "recon_demo_tables"];
    seed_host_state(t).await;

    // 1. A watermark under the demo's name while the demo's tables do not exist: the host's.
    let host_mark = at(-5000);
    t.db.watermarks()
        .advance("stays-sync", host_mark)
        .await
        .unwrap();
    let out = sync(&["--cycles", "1"]).await;
    refused(&out, "recon_watermarks holds rows of name \"stays-sync\"");
    assert_eq!(
        t.db.watermarks().get("stays-sync").await.unwrap(),
        Some(host_mark),
        "{name}"
    );
    for table in demo_tables {
        assert_eq!(columns(t, table).await, None, "{name}: {table} was created");
    }

    // 2. The host's own `reservations`, and a table of another example's name.
    t.exec("CREATE TABLE reservations (id INTEGER PRIMARY KEY, guest VARCHAR(40))")
        .await;
    t.exec("INSERT INTO reservations (id, guest) VALUES (1, 'acme')")
        .await;
    t.exec("CREATE TABLE sfdc_cases (id INTEGER PRIMARY KEY, subject VARCHAR(40))")
        .await;
    t.exec("INSERT INTO sfdc_cases (id, subject) VALUES (1, 'the host''s case')")
        .await;
    let out = sync(&["--cycles", "1"]).await;
    refused(
        &out,
        "reservations exists but is not the demo's table (it was not created by this demo)",
    );
    assert_eq!(
        columns(t, "reservations").await,
        Some(vec!["id".into(), "guest".into()]),
        "{name}"
    );
    assert_eq!(rows(t, "reservations").await, 1, "{name}");
    for table in ["sync_demo", "recon_demo_tables"] {
        assert_eq!(columns(t, table).await, None, "{name}: {table} was created");
    }

    // 3. --reset-demo replaces the demo's tables and its state in recon's tables (the first
    //    cycle's figures are those of a new story: the host's watermark under the demo's name
    //    is gone) and nothing else: not another queue, namespace, watermark or pipeline, not
    //    another example's table.
    let first = json(&sync(&["--cycles", "1", "--reset-demo"]).await);
    let c1 = &first["cycles"][0];
    assert_eq!(c1["status"], "success", "{name}: {c1}");
    assert_eq!(results(c1, &COUNTS), [4, 4, 0, 0, 2], "{name}: {c1}");
    assert_eq!(watermark(c1), at(-10), "{name}");
    assert_eq!(
        rows(t, "reservations").await,
        4,
        "{name}: the demo's reservations"
    );
    assert_eq!(
        host_state(t).await,
        HOST_STATE,
        "{name}: the host's state in recon's tables"
    );
    assert_eq!(
        columns(t, "sfdc_cases").await,
        Some(vec!["id".into(), "subject".into()]),
        "{name}"
    );
    assert_eq!(
        rows(t, "sfdc_cases").await,
        1,
        "{name}: another example's table"
    );

    // 4. The next run uses the demo's tables: the story goes on from the stored watermark.
    let again = json(&sync(&["--cycles", "1"]).await);
    let c = &again["cycles"][0];
    assert_eq!(c["status"], "success", "{name}: {c}");
    assert_eq!(results(c, &COUNTS), [1, 0, 0, 1, 0], "{name}: {c}");
    // Another speed would be another story: refused, not replaced.
    let out = run_example(
        "periodic_sync",
        ["--database-url", &url, "--interval-ms", "80", "--json"]
            .map(str::to_owned)
            .to_vec(),
    )
    .await;
    refused(&out, "the stored story runs at --interval-ms 60");
    assert_eq!(rows(t, "reservations").await, 4, "{name}");

    // 5. A demo table that lost a column is refused the same way.
    exec_on_new_connection(&url, "ALTER TABLE reservations DROP COLUMN synced_at").await;
    let out = sync(&["--cycles", "1"]).await;
    refused(
        &out,
        "reservations exists but is not the demo's table (it has no column synced_at)",
    );
    assert_eq!(rows(t, "reservations").await, 4, "{name}: left as it was");
    assert_eq!(host_state(t).await, HOST_STATE, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_sync_never_touches_the_hosts_sqlite() {
    let t = super::common::sqlite().await;
    sync_never_touches_the_hosts(&t).await;
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_sync_never_touches_the_hosts_postgres() {
    #[cfg(feature = "postgres")]
    if let Some(t) = super::common::postgres().await {
        sync_never_touches_the_hosts(&t).await;
        t.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_sync_never_touches_the_hosts_mysql() {
    #[cfg(feature = "mysql")]
    if let Some(t) = super::common::mysql().await {
        sync_never_touches_the_hosts(&t).await;
        t.finish().await;
    }
}
