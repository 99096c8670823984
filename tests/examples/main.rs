//! Every example runs here, as the built binary a user runs, so none can rot. The scenario
//! examples run with a frozen clock (`--now`) and their JSON output is checked.

#![allow(unreachable_pub, missing_docs, dead_code)]

#[path = "../conformance/common.rs"]
mod common;
mod periodic_sync;
mod pipeline_lineage;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const NOW: &str = "2024-01-24T12:00:00Z";

/// `target/<profile>/examples/<name>`, built by `cargo test` before the tests run.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn run(name: &str, args: &[&str]) -> Output {
    let out = Command::new(example(name)).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{name} panicked: {stderr}");
    out
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn results(v: &Value, keys: &[&str]) -> Vec<u64> {
    keys.iter()
        .map(|k| {
            v["results"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("no {k} in {v}"))
        })
        .collect()
}

const A: [&str; 6] = [
    "leasesRepaired",
    "jobsRequeued",
    "jobsFailed",
    "cooldownsCleared",
    "followUpCandidates",
    "pendingOrders",
];

/// Scenario A through the example: the expected figures, then a second run repairs nothing.
fn startup_reconcile_on(url: &str) {
    let first = json(&run(
        "startup_reconcile",
        &["--database-url", url, "--now", NOW, "--json"],
    ));
    assert_eq!(first["status"], "success", "{first}");
    assert_eq!(first["timestamp"], "2024-01-24T12:00:00.000Z");
    assert_eq!(results(&first, &A), [2, 1, 1, 1, 2, 3], "{url}: {first}");
    assert!(first["errors"].as_array().unwrap().is_empty());
    assert!(first["uptime"].is_u64(), "{first}");
    // the metrics step: the health query, jobs by status after the repair (42 and 43 to
    // retry, 46 failed, 45's live lease still processing), orders by status
    assert_eq!(results(&first, &["healthy"]), [1], "{url}: {first}");
    assert_eq!(
        results(&first, &METRICS),
        [1, 2, 1, 1, 2, 7, 2, 1, 2, 1, 6],
        "{url}: {first}"
    );
    let second = json(&run(
        "startup_reconcile",
        &["--database-url", url, "--now", NOW, "--json"],
    ));
    assert_eq!(
        results(&second, &A),
        [0, 0, 0, 0, 2, 3],
        "{url}: second run: {second}"
    );
    assert!(second["errors"].as_array().unwrap().is_empty(), "{second}");
    assert_eq!(
        results(&second, &METRICS),
        [1, 2, 1, 1, 2, 7, 2, 1, 2, 1, 6],
        "{url}: nothing moved"
    );
    // the text report says so
    let text = run("startup_reconcile", &["--database-url", url, "--now", NOW]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains("Nothing to repair"), "{out}");
    // the figures that are not in the status JSON: revenue 25.50 + 12.00 + 99.90 + 40.00 +
    // 15.25 + 8.00, and the average duration of jobs 47 and 48 (1200 ms, 800 ms)
    for (figure, value) in [("revenue", "200.65"), ("avg job duration ms", "1000.00")] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{figure} .")))
            .unwrap_or_else(|| panic!("{url}: no {figure} in {out}"));
        assert!(line.ends_with(&format!(" {value}")), "{url}: {line}");
    }
    // each run is recorded in recon_runs, the last one as the latest
    let logged = out
        .lines()
        .find_map(|l| l.strip_prefix("Logged in recon_runs as run "))
        .unwrap_or_else(|| panic!("{url}: the run log line is missing: {out}"))
        .trim_end_matches('.')
        .to_owned();
    let (latest, history) = in_runtime(async {
        let db = store_sqlx::Db::connect(url).await.unwrap();
        let log = db.run_log();
        let latest = recon_core::RunLog::latest(&log, "startup").await.unwrap();
        let history = recon_core::RunLog::history(&log, "startup", 10)
            .await
            .unwrap();
        db.close().await;
        (latest.expect("a run was logged"), history)
    });
    assert_eq!(latest.id.to_string(), logged, "{url}");
    assert_eq!(history.len(), 3, "{url}: one record per run");
    assert_eq!(latest.status, recon::RunStatus::Success);
    let metrics = latest.step("verify-metrics").expect("the metrics step ran");
    assert_eq!(metrics.report.get("healthy"), Some(1), "{url}");
    assert_eq!(metrics.report.get("order_status_total"), Some(6), "{url}");
}

/// The counts of the metrics step after the first run.
const METRICS: [&str; 11] = [
    "jobStatusProcessing",
    "jobStatusRetry",
    "jobStatusFailed",
    "jobStatusPending",
    "jobStatusDone",
    "jobStatusTotal",
    "orderStatusPending",
    "orderStatusProcessing",
    "orderStatusCompleted",
    "orderStatusCancelled",
    "orderStatusTotal",
];

/// Run `f` on a runtime of its own, on a thread of its own (callable from a plain test and
/// from `spawn_blocking`).
fn in_runtime<F: std::future::Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f)
        })
        .join()
        .unwrap()
    })
}

#[test]
fn startup_reconcile_sqlite() {
    let dir = std::env::temp_dir().join(format!("recon-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("demo.sqlite").display());
    startup_reconcile_on(&url);
    // --reset-demo puts the crashed state back; --dry-run reports without writing
    let dry = json(&run(
        "startup_reconcile",
        &[
            "--database-url",
            &url,
            "--now",
            NOW,
            "--json",
            "--reset-demo",
            "--dry-run",
        ],
    ));
    assert_eq!(results(&dry, &A)[..4], [2, 1, 1, 1]);
    let real = json(&run(
        "startup_reconcile",
        &["--database-url", &url, "--now", NOW, "--json"],
    ));
    assert_eq!(
        results(&real, &A)[..4],
        [2, 1, 1, 1],
        "the dry run changed something"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn startup_reconcile_postgres() {
    #[cfg(feature = "postgres")]
    if let Some(t) = common::postgres().await {
        let base = std::env::var("RECON_TEST_POSTGRES_URL").unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!(
            "{base}{sep}options=-c%20search_path%3D{}",
            t.namespace().unwrap()
        );
        tokio::task::spawn_blocking(move || startup_reconcile_on(&url))
            .await
            .unwrap();
        t.finish().await;
    }
}

#[tokio::test]
async fn startup_reconcile_mysql() {
    #[cfg(feature = "mysql")]
    if let Some(t) = common::mysql().await {
        let base = std::env::var("RECON_TEST_MYSQL_URL").unwrap();
        let root = base.rsplit_once('/').map(|(b, _)| b).unwrap().to_owned();
        let url = format!("{root}/{}", t.namespace().unwrap());
        tokio::task::spawn_blocking(move || startup_reconcile_on(&url))
            .await
            .unwrap();
        t.finish().await;
    }
}

#[test]
fn a_wrong_url_is_one_clear_line_not_a_panic() {
    for url in [
        "postgres://root:secret@127.0.0.1:1/none",
        "oracle://nowhere",
        "sqlite:/nonexistent-dir/demo.sqlite",
    ] {
        let out = run("startup_reconcile", &["--database-url", url]);
        assert_eq!(out.status.code(), Some(1), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{url}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("secret"), "a password was printed: {err}");
    }
    let out = run("startup_reconcile", &["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: unknown argument"), "{err}");
}

/// Scenario D through the example: 3 stuck messages released, 1 old failure archived, and a
/// second run has nothing left to do.
fn message_recovery_on(url: &str) {
    let keys = [
        "stuckReleased",
        "failedArchived",
        "queuePending",
        "queueProcessing",
        "queueSent",
        "queueFailed",
    ];
    let first = json(&run(
        "message_recovery",
        &[
            "--database-url",
            url,
            "--now",
            NOW,
            "--json",
            "--reset-demo",
        ],
    ));
    assert_eq!(first["status"], "success", "{first}");
    assert_eq!(results(&first, &keys), [3, 1, 5, 0, 3, 3], "{url}: {first}");
    let second = json(&run(
        "message_recovery",
        &["--database-url", url, "--now", NOW, "--json"],
    ));
    assert_eq!(
        results(&second, &keys),
        [0, 0, 5, 0, 3, 3],
        "{url}: second run: {second}"
    );
    // the full run: operator operations leave nothing failed and nothing deleted
    let text = run("message_recovery", &["--database-url", url, "--now", NOW]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains("3h50m after the first"), "{out}");
    assert!(
        out.contains("archived (kept, never silently deleted)"),
        "{out}"
    );
    assert!(out.contains("failed 0, archived 2"), "{out}");
    assert!(
        out.contains("waits 1 min 2 min 3 min 4 min 5 min, then needs an operator"),
        "{out}"
    );
}

#[test]
fn message_recovery_sqlite() {
    let dir = std::env::temp_dir().join(format!("recon-example-msg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    message_recovery_on(&format!("sqlite:{}", dir.join("messages.sqlite").display()));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn message_recovery_postgres() {
    #[cfg(feature = "postgres")]
    if let Some(t) = common::postgres().await {
        let base = std::env::var("RECON_TEST_POSTGRES_URL").unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!(
            "{base}{sep}options=-c%20search_path%3D{}",
            t.namespace().unwrap()
        );
        tokio::task::spawn_blocking(move || message_recovery_on(&url))
            .await
            .unwrap();
        t.finish().await;
    }
}

#[tokio::test]
async fn message_recovery_mysql() {
    #[cfg(feature = "mysql")]
    if let Some(t) = common::mysql().await {
        let base = std::env::var("RECON_TEST_MYSQL_URL").unwrap();
        let root = base.rsplit_once('/').map(|(b, _)| b).unwrap().to_owned();
        let url = format!("{root}/{}", t.namespace().unwrap());
        tokio::task::spawn_blocking(move || message_recovery_on(&url))
            .await
            .unwrap();
        t.finish().await;
    }
}

/// `SELECT COUNT(*) FROM table` on the test's database.
async fn rows(t: &common::TestDb, table: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
    match t.db.dialect() {
        #[cfg(feature = "postgres")]
        store_sqlx::Dialect::Postgres => {
            sqlx::query_scalar(sql)
                .fetch_one(t.db.as_postgres().unwrap())
                .await
        }
        #[cfg(feature = "mysql")]
        store_sqlx::Dialect::MySql => {
            sqlx::query_scalar(sql)
                .fetch_one(t.db.as_mysql().unwrap())
                .await
        }
        _ => {
            sqlx::query_scalar(sql)
                .fetch_one(t.db.as_sqlite().unwrap())
                .await
        }
    }
    .unwrap()
}

async fn columns(t: &common::TestDb, table: &str) -> Option<Vec<String>> {
    let name = store_sqlx::TableName::new(table, "table").unwrap();
    t.db.columns(&name)
        .await
        .unwrap()
        .map(|c| c.into_iter().map(|c| c.to_lowercase()).collect())
}

/// The host's own `orders` and `messages` (other columns, data) in the database an example is
/// pointed at: each example stops with one clear line and leaves them as they were, creates
/// nothing; only `--reset-demo` replaces them.
async fn foreign_tables_survive(t: &common::TestDb, url: String) {
    t.exec("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer VARCHAR(40))")
        .await;
    t.exec("INSERT INTO orders (id, customer) VALUES (1, 'acme')")
        .await;
    t.exec("CREATE TABLE messages (id INTEGER PRIMARY KEY, body VARCHAR(40))")
        .await;
    t.exec("INSERT INTO messages (id, body) VALUES (7, 'hello')")
        .await;
    let u = url.clone();
    let outs = tokio::task::spawn_blocking(move || {
        ["startup_reconcile", "message_recovery"]
            .map(|e| run(e, &["--database-url", &u, "--now", NOW, "--json"]))
    })
    .await
    .unwrap();
    for (out, table) in outs.iter().zip(["orders", "messages"]) {
        assert_eq!(out.status.code(), Some(1), "{table}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!(
                "error: {table} exists but is not the demo's table (it was not created by this demo)"
            )),
            "{err}"
        );
        assert!(err.contains("--reset-demo"), "{err}");
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let name = t.db.dialect().name();
    assert_eq!(
        columns(t, "orders").await,
        Some(vec!["id".into(), "customer".into()]),
        "{name}"
    );
    assert_eq!(
        columns(t, "messages").await,
        Some(vec!["id".into(), "body".into()]),
        "{name}"
    );
    assert_eq!(
        (rows(t, "orders").await, rows(t, "messages").await),
        (1, 1),
        "{name}"
    );
    for table in ["processing_jobs", "user_sessions", "recon_demo_tables"] {
        assert_eq!(columns(t, table).await, None, "{name}: {table} was created");
    }

    // --reset-demo replaces them (and only the tables of the example it is given to)
    let u = url.clone();
    let reset = tokio::task::spawn_blocking(move || {
        run(
            "startup_reconcile",
            &["--database-url", &u, "--now", NOW, "--json", "--reset-demo"],
        )
    })
    .await
    .unwrap();
    assert_eq!(
        results(&json(&reset), &A)[..4],
        [2, 1, 1, 1],
        "{name}: --reset-demo replaces them"
    );
    assert_eq!(rows(t, "orders").await, 6, "{name}: the demo's orders");
    assert_eq!(
        rows(t, "messages").await,
        1,
        "{name}: the other example's table is not touched"
    );
    // a demo table that lost a column is refused the same way (altered over a new connection:
    // the test pool's SQLite connections may still hold the schema from before the reset)
    let db = store_sqlx::Db::connect(&url).await.unwrap();
    let alter = sqlx::AssertSqlSafe("ALTER TABLE orders DROP COLUMN total_amount");
    match db.dialect() {
        #[cfg(feature = "postgres")]
        store_sqlx::Dialect::Postgres => sqlx::raw_sql(alter)
            .execute(db.as_postgres().unwrap())
            .await
            .map(drop),
        #[cfg(feature = "mysql")]
        store_sqlx::Dialect::MySql => sqlx::raw_sql(alter)
            .execute(db.as_mysql().unwrap())
            .await
            .map(drop),
        _ => sqlx::raw_sql(alter)
            .execute(db.as_sqlite().unwrap())
            .await
            .map(drop),
    }
    .unwrap();
    db.close().await;
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run("startup_reconcile", &["--database-url", &u, "--now", NOW])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(
            "error: orders exists but is not the demo's table (it has no column total_amount)"
        ),
        "{err}"
    );
    assert_eq!(rows(t, "orders").await, 6, "{name}: left as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_tables_survive_sqlite() {
    let t = common::sqlite().await;
    let url = format!("sqlite:{}", t.sqlite_path().unwrap().display());
    foreign_tables_survive(&t, url).await;
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_tables_survive_postgres() {
    #[cfg(feature = "postgres")]
    if let Some(t) = common::postgres().await {
        let base = std::env::var("RECON_TEST_POSTGRES_URL").unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!(
            "{base}{sep}options=-c%20search_path%3D{}",
            t.namespace().unwrap()
        );
        foreign_tables_survive(&t, url).await;
        t.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_tables_survive_mysql() {
    #[cfg(feature = "mysql")]
    if let Some(t) = common::mysql().await {
        let base = std::env::var("RECON_TEST_MYSQL_URL").unwrap();
        let root = base.rsplit_once('/').map(|(b, _)| b).unwrap().to_owned();
        let url = format!("{root}/{}", t.namespace().unwrap());
        foreign_tables_survive(&t, url).await;
        t.finish().await;
    }
}

/// A dry run says what it wrote: the demo tables when it had to create them, and recon's own
/// bookkeeping; never a job, session or order.
#[test]
fn a_dry_run_says_what_it_wrote() {
    let dir = std::env::temp_dir().join(format!("recon-example-dry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("demo.sqlite").display());
    let args = ["--database-url", &url, "--now", NOW, "--dry-run"];
    let first = run("startup_reconcile", &args);
    assert!(first.status.success());
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        out.contains(
            "No job, session or order was changed; the only writes were the demo tables \
             (they did not exist) and recon's own tables (migrations, run lock, this run's \
             record in recon_runs)."
        ),
        "{out}"
    );
    assert!(!out.contains("nothing was written"), "{out}");
    assert!(out.contains("2 user(s) would be queued"), "{out}");
    let second = String::from_utf8_lossy(&run("startup_reconcile", &args).stdout).into_owned();
    assert!(
        second.contains("the only writes were recon's own tables"),
        "the tables existed: {second}"
    );
    let logged = in_runtime(async {
        let db = store_sqlx::Db::connect(&url).await.unwrap();
        let h = recon_core::RunLog::history(&db.run_log(), "startup", 10)
            .await
            .unwrap();
        db.close().await;
        h
    });
    assert_eq!(logged.len(), 2, "each dry run is recorded");
    assert!(logged.iter().all(|r| r.dry_run));
    let real = json(&run(
        "startup_reconcile",
        &["--database-url", &url, "--now", NOW, "--json"],
    ));
    assert_eq!(
        results(&real, &A)[..4],
        [2, 1, 1, 1],
        "the dry runs changed a job"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Every program in `examples/` is run by a test here (through [`run`] or [`example`]), and
/// the binaries tested are not older than their sources: `cargo test --test examples` alone
/// does not rebuild the examples (`cargo test` or `cargo build --examples` does).
#[test]
fn every_example_is_run_by_a_test() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut tests = String::new();
    for entry in std::fs::read_dir(root.join("tests/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            tests.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    let tests: String = tests.chars().filter(|c| !c.is_whitespace()).collect();
    let mut examples = Vec::new();
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let (stem, source) = if path.is_dir() {
            let main = path.join("main.rs");
            if !main.exists() {
                continue;
            }
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                main,
            )
        } else if path.extension().is_some_and(|e| e == "rs") {
            (
                path.file_stem().unwrap().to_string_lossy().into_owned(),
                path,
            )
        } else {
            continue;
        };
        assert!(
            tests.contains(&format!("run(\"{stem}\""))
                || tests.contains(&format!("example(\"{stem}\"")),
            "examples/{stem} is not run by any test in tests/examples"
        );
        let built = std::fs::metadata(example(&stem))
            .unwrap()
            .modified()
            .unwrap();
        let written = std::fs::metadata(&source).unwrap().modified().unwrap();
        assert!(
            built >= written,
            "the {stem} binary is older than its source: run `cargo build --all-features --examples` \
             (or the whole `cargo test`) first"
        );
        examples.push(stem);
    }
    assert!(examples.len() >= 2, "{examples:?}");
}
