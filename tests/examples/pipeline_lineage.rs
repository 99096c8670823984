//! Scenario C through `examples/pipeline_lineage.rs`: the gap table of seed 003, recovery with
//! the stage policies and the Nomic fallback, coverage and alerts, day 2's 50 updated / 9,950
//! unchanged, and a second run that has nothing left to recover.

use std::sync::Arc;

use lineage_checksum::{LineageStatus, LineageTracker, LineageUpdate, Stages};
use serde_json::Value;

use super::common::TestDb;
use super::periodic_sync::{
    HOST_STATE, example_url, exec_on_new_connection, host_state, refused, run_example,
    seed_host_state,
};
use super::{NOW, columns, json, results, rows, run};

const HEADLINE: [&str; 11] = [
    "sourceCount",
    "tracked",
    "loaded",
    "totalGap",
    "failedLineage",
    "failedRecords",
    "belowMinFields",
    "alerts",
    "alertsCritical",
    "alertsHigh",
    "recoveryRuns",
];

const RECOVERY: [&str; 7] = [
    "due",
    "recovered",
    "recoveredByRetry",
    "recoveredByFallback",
    "movedToManualReview",
    "stillFailed",
    "needManualReview",
];

const AFTER_AND_DAY_2: [&str; 6] = [
    "loadedAfterRecovery",
    "totalGapAfterRecovery",
    "day2Read",
    "day2Created",
    "day2Updated",
    "day2Unchanged",
];

/// (stage, expected, reached, gap) of the report's gap table.
fn gap_table(v: &Value) -> Vec<(String, u64, u64, u64)> {
    v["report"]["audit"]["gaps"]["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("no gap table in {v}"))
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_owned(),
                s["expected"].as_u64().unwrap(),
                s["reached"].as_u64().unwrap(),
                s["gap"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// (error type, open, manual review) of a list of `ErrorTypeCount`s.
fn by_error_type(v: &Value) -> Vec<(String, u64, u64)> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|c| {
            (
                c["error_type"].as_str().unwrap().to_owned(),
                c["open"].as_u64().unwrap(),
                c["manual_review"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn owned<const N: usize>(rows: [(&str, u64, u64, u64); N]) -> Vec<(String, u64, u64, u64)> {
    rows.iter()
        .map(|(s, a, b, c)| ((*s).to_owned(), *a, *b, *c))
        .collect()
}

fn types<const N: usize>(rows: [(&str, u64, u64); N]) -> Vec<(String, u64, u64)> {
    rows.iter()
        .map(|(s, a, b)| ((*s).to_owned(), *a, *b))
        .collect()
}

fn pipeline_lineage_on(url: &str) {
    let args = |extra: &[&'static str]| {
        let mut a = vec!["--database-url", url, "--now", NOW];
        a.extend_from_slice(extra);
        a
    };

    // Day 1's state, reconciled.
    let first = json(&run("pipeline_lineage", &args(&["--json", "--reset-demo"])));
    assert_eq!(
        first["status"], "partial",
        "5 records went to manual review: {first}"
    );
    assert_eq!(first["timestamp"], "2024-01-24T12:00:00.000Z");
    assert_eq!(
        gap_table(&first),
        owned([
            ("extracted", 10_000, 9_950, 50),
            ("pii_removed", 9_950, 9_940, 10),
            ("embedding_generated", 9_940, 9_920, 20),
            ("loaded", 9_920, 9_900, 20),
        ]),
        "{url}: source 10,000; tracked 9,950; pii 9,940; embedded 9,920; loaded 9,900"
    );
    assert_eq!(
        results(&first, &HEADLINE),
        [10_000, 9_950, 9_900, 100, 50, 50, 297, 2, 0, 1, 7],
        "{url}: {first}"
    );
    let audit = &first["report"]["audit"];
    assert_eq!(
        by_error_type(&audit["failures_by_error_type"]),
        types([
            ("EmbeddingAPITimeout", 18, 0),
            ("MissingRequiredFields", 2, 0),
            ("PIIRemovalTimeout", 10, 0),
            ("WeaviateConnectionError", 20, 0),
        ]),
        "{url}: failed records grouped by error type, as found"
    );
    // Coverage over the 9,950 tracked cases against seed 003's thresholds.
    let coverage: Vec<(&str, u64, bool)> = audit["coverage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["table"].as_str().unwrap(),
                c["present"].as_u64().unwrap(),
                c["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        coverage,
        [
            ("Task", 7_178, true),
            ("WorkOrder", 6_485, false),
            ("Comments", 8_069, true)
        ]
    );
    // Alerts: WorkOrder below 70 % (high) and cases under 30 of 44 fields (medium); a
    // failure rate of 0.5 % and a gap of exactly 100 stay under their limits (> 10 %, > 100).
    let alerts: Vec<(&str, &str)> = audit["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["code"].as_str().unwrap(), a["severity"].as_str().unwrap()))
        .collect();
    assert_eq!(
        alerts,
        [("coverage:WorkOrder", "high"), ("min_fields", "medium")]
    );

    // Recovery: 45 of 50 recovered (39 by retry, 6 on the Nomic fallback), 5 for people.
    assert_eq!(
        results(&first, &RECOVERY),
        [50, 45, 39, 6, 5, 5, 5],
        "{url}: {first}"
    );
    let recovery = &first["report"]["recovery"];
    assert_eq!(recovery["recovered_by_method"]["fallback:nomic"], 6);
    assert_eq!(recovery["recovered_by_method"]["retry"], 39);
    assert_eq!(
        by_error_type(&recovery["still_failed_by_error_type"]),
        types([
            ("MissingRequiredFields", 0, 2),
            ("PIIRemovalTimeout", 0, 2),
            ("WeaviateTimeout", 0, 1),
        ]),
        "{url}: still failed, all in manual review"
    );
    // Each retry ran at the time its policy chose: PII removal at +1 s, +3 s, +7 s (waits of
    // 1 s, 2 s, 4 s), the load at +2 s, +6 s, +14 s (2 s, 4 s, 8 s).
    let times: Vec<&str> = first["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["timestamp"].as_str().unwrap())
        .collect();
    let want: Vec<String> = [0, 1, 2, 3, 6, 7, 14]
        .iter()
        .map(|s| format!("2024-01-24T12:00:{s:02}.000Z"))
        .collect();
    assert_eq!(times, want, "{url}");
    let due: Vec<u64> = first["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["results"]["due"].as_u64().unwrap())
        .collect();
    assert_eq!(due, [50, 4, 6, 2, 3, 2, 1], "{url}");
    // Recovered records moved on in the lineage; day 2: 50 updated, 9,950 unchanged.
    assert_eq!(
        results(&first, &AFTER_AND_DAY_2),
        [9_919, 81, 10_000, 0, 50, 9_950],
        "{url}: {first}"
    );

    // Run again: nothing is due, the lineage shows the recovered records, and day 2 again
    // finds nothing changed.
    let second = json(&run("pipeline_lineage", &args(&["--json"])));
    assert_eq!(second["status"], "success", "{second}");
    assert_eq!(
        gap_table(&second),
        owned([
            ("extracted", 10_000, 9_950, 50),
            ("pii_removed", 9_950, 9_948, 2),
            ("embedding_generated", 9_948, 9_938, 10),
            ("loaded", 9_938, 9_919, 19),
        ]),
        "{url}: second run"
    );
    assert_eq!(
        results(&second, &RECOVERY),
        [0, 0, 0, 0, 0, 5, 5],
        "{url}: second run: {second}"
    );
    assert_eq!(
        results(&second, &AFTER_AND_DAY_2),
        [9_919, 81, 10_000, 0, 0, 10_000],
        "{url}: second run: {second}"
    );
    assert_eq!(results(&second, &["recoveryRuns", "failedRecords"]), [1, 5]);

    // The text a person reads, from day 1's state again.
    let text = run("pipeline_lineage", &args(&["--reset-demo"]));
    assert!(text.status.success(), "{text:?}");
    let out = String::from_utf8_lossy(&text.stdout);
    for line in [
        "  source                    10,000",
        "  extracted (tracked)       10,000     9,950     50  (never tracked)",
        "  pii_removed                9,950     9,940     10  (10 failed)",
        "  embedding_generated        9,940     9,920     20  (20 failed)",
        "  loaded                     9,920     9,900     20  (20 failed)",
        "Recovery: 45 of 50 due failed records recovered (39 by retry, 6 with the nomic fallback) in 7 runs; 5 still failed, 5 need manual review.",
        "  [HIGH] WorkOrder coverage 65.18% is below the 70% threshold",
        "  [MEDIUM] 297 records have fewer than 30 of 44 fields populated",
        "  checked, not raised: failure rate 0.5% (critical above 10%); total gap 100 (high above 100)",
        "          embedding_generated  chathpe 20 calls, 12 ok; nomic 8 calls, 6 ok",
        "  - 6 cases: used nomic fallback",
        " Still Failed: 5 cases (5 need manual review)",
        "created 0, updated 50, unchanged 9,950",
    ] {
        assert!(out.contains(line), "{url}: missing {line:?} in:\n{out}");
    }
}

#[test]
fn pipeline_lineage_sqlite() {
    let dir = std::env::temp_dir().join(format!("recon-example-pipeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    pipeline_lineage_on(&format!("sqlite:{}", dir.join("pipeline.sqlite").display()));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn pipeline_lineage_postgres() {
    #[cfg(feature = "postgres")]
    if let Some(t) = super::common::postgres().await {
        let base = std::env::var("RECON_TEST_POSTGRES_URL").unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!(
            "{base}{sep}options=-c%20search_path%3D{}",
            t.namespace().unwrap()
        );
        tokio::task::spawn_blocking(move || pipeline_lineage_on(&url))
            .await
            .unwrap();
        t.finish().await;
    }
}

#[tokio::test]
async fn pipeline_lineage_mysql() {
    #[cfg(feature = "mysql")]
    if let Some(t) = super::common::mysql().await {
        let base = std::env::var("RECON_TEST_MYSQL_URL").unwrap();
        let root = base.rsplit_once('/').map(|(b, _)| b).unwrap().to_owned();
        let url = format!("{root}/{}", t.namespace().unwrap());
        tokio::task::spawn_blocking(move || pipeline_lineage_on(&url))
            .await
            .unwrap();
        t.finish().await;
    }
}

#[test]
fn pipeline_lineage_bad_input_is_one_clear_line() {
    for args in [
        &["--database-url", "postgres://root:secret@127.0.0.1:1/none"][..],
        &["--database-url", "oracle://nowhere"],
        &["--database-url", "sqlite:/nonexistent-dir/pipeline.sqlite"],
        &["--now", "yesterday"],
        &["--no-such-flag"],
    ] {
        let out = run("pipeline_lineage", args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("secret"), "a password was printed: {err}");
    }
}

/// pipeline_lineage pointed at a database with the host's data: lineage under the demo's
/// pipeline name, its own `sfdc_cases`, another example's table, other pipelines and
/// namespaces. Each time the example stops with one clear line and touches nothing; only
/// `--reset-demo` replaces the demo's table and state, and nothing else.
async fn pipeline_never_touches_the_hosts(t: &TestDb) {
    let url = example_url(t);
    let name = t.db.dialect().name();
    let pipeline = |extra: &[&str]| {
        let mut a = vec!["--database-url", &url, "--now", NOW, "--json"];
        a.extend_from_slice(extra);
        run_example(
            "pipeline_lineage",
            a.into_iter().map(str::to_owned).collect(),
        )
    };
    seed_host_state(t).await;

    // 1. Lineage under the demo's pipeline name while `sfdc_cases` does not exist: the host's.
    let stages = Stages::new(["extracted", "loaded"]).unwrap();
    LineageTracker::new(Arc::new(t.db.lineage()), "cases", stages)
        .unwrap()
        .record(&[LineageUpdate::new(
            "host-1",
            "extracted",
            LineageStatus::Completed,
            NOW.parse().unwrap(),
        )])
        .await
        .unwrap();
    let hosts_cases = "recon_lineage WHERE pipeline = 'cases' AND record_key = 'host-1'";
    let out = pipeline(&[]).await;
    refused(&out, "recon_lineage holds rows of pipeline \"cases\"");
    assert_eq!(rows(t, hosts_cases).await, 1, "{name}");
    for table in ["sfdc_cases", "recon_demo_tables"] {
        assert_eq!(columns(t, table).await, None, "{name}: {table} was created");
    }

    // 2. The host's own `sfdc_cases`, and a table of another example's name.
    t.exec("CREATE TABLE sfdc_cases (id INTEGER PRIMARY KEY, subject VARCHAR(40))")
        .await;
    t.exec("INSERT INTO sfdc_cases (id, subject) VALUES (1, 'the host''s case')")
        .await;
    t.exec("CREATE TABLE reservations (id INTEGER PRIMARY KEY, guest VARCHAR(40))")
        .await;
    t.exec("INSERT INTO reservations (id, guest) VALUES (1, 'acme')")
        .await;
    let out = pipeline(&[]).await;
    refused(
        &out,
        "sfdc_cases exists but is not the demo's table (it was not created by this demo)",
    );
    assert_eq!(
        columns(t, "sfdc_cases").await,
        Some(vec!["id".into(), "subject".into()]),
        "{name}"
    );
    assert_eq!(rows(t, "sfdc_cases").await, 1, "{name}");
    assert_eq!(columns(t, "recon_demo_tables").await, None, "{name}");

    // 3. --reset-demo replaces the demo's table and its state in recon's tables (9,950 tracked:
    //    the host's lineage row under the demo's name is gone) and nothing else: not another
    //    pipeline, namespace, queue or watermark, not another example's table.
    let first = json(&pipeline(&["--reset-demo"]).await);
    assert_eq!(
        results(
            &first,
            &[
                "sourceCount",
                "tracked",
                "failedRecords",
                "due",
                "recovered"
            ]
        ),
        [10_000, 9_950, 50, 50, 45],
        "{name}: {first}"
    );
    assert_eq!(rows(t, hosts_cases).await, 0, "{name}");
    assert_eq!(
        rows(t, "sfdc_cases").await,
        10_000,
        "{name}: the demo's cases"
    );
    assert_eq!(
        host_state(t).await,
        HOST_STATE,
        "{name}: the host's state in recon's tables"
    );
    assert_eq!(
        columns(t, "reservations").await,
        Some(vec!["id".into(), "guest".into()]),
        "{name}"
    );
    assert_eq!(
        rows(t, "reservations").await,
        1,
        "{name}: another example's table"
    );

    // 4. A demo table that lost a column is refused the same way.
    exec_on_new_connection(&url, "ALTER TABLE sfdc_cases DROP COLUMN resolution").await;
    let out = pipeline(&[]).await;
    refused(
        &out,
        "sfdc_cases exists but is not the demo's table (it has no column resolution)",
    );
    assert_eq!(
        rows(t, "sfdc_cases").await,
        10_000,
        "{name}: left as it was"
    );
    assert_eq!(host_state(t).await, HOST_STATE, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_lineage_never_touches_the_hosts_sqlite() {
    let t = super::common::sqlite().await;
    pipeline_never_touches_the_hosts(&t).await;
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_lineage_never_touches_the_hosts_postgres() {
    #[cfg(feature = "postgres")]
    if let Some(t) = super::common::postgres().await {
        pipeline_never_touches_the_hosts(&t).await;
        t.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_lineage_never_touches_the_hosts_mysql() {
    #[cfg(feature = "mysql")]
    if let Some(t) = super::common::mysql().await {
        pipeline_never_touches_the_hosts(&t).await;
        t.finish().await;
    }
}
