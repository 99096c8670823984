//! Scenario B through `examples/periodic_sync.rs`: six cycles of the upstream sync at 60 ms
//! (standing for 30 min, so one scenario minute is 2 ms) on a frozen clock, with the exact
//! figures of every cycle; then a restart that continues from the stored watermark.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use super::{NOW, json, results, run};

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
