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
    let second = json(&run(
        "startup_reconcile",
        &["--database-url", url, "--now", NOW, "--json"],
    ));
    assert_eq!(
        results(&second, &A),
        [0, 0, 0, 0, 2, 3],
        "{url}: second run: {second}"
    );
    // the text report says so
    let text = run("startup_reconcile", &["--database-url", url, "--now", NOW]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("Nothing to repair"));
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
