//! Crash safety: a child process repairing 100,000 stuck jobs is killed with SIGKILL at random
//! points, at least 20 times; after a final uninterrupted run every job is in exactly one valid
//! state, none is lost, and no attempt was counted twice. SQLite always; PostgreSQL when
//! `RECON_TEST_POSTGRES_URL` is set.
//!
//! A plain program (`harness = false`): run without `RECON_CRASH_CHILD` it is the test; the
//! children it starts are this same binary with `RECON_CRASH_CHILD` naming the database.

#![allow(unreachable_pub, missing_docs, dead_code)]

#[path = "../conformance/common.rs"]
mod common;
#[path = "../reliability/table.rs"]
mod table;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lease_repair::{LeaseRepair, Settings};
use recon_core::{Reconciler, RunContext};
use store_sqlx::{ConnectOptions, Db};

const JOBS: i64 = 100_000;
const KILLS: u32 = 20;

fn step(db: &Db) -> LeaseRepair<Arc<store_sqlx::SqlLeaseStore>> {
    let mut s = Settings::new(retry_policy::presets::startup_jobs());
    s.count_interrupted_attempt = true;
    LeaseRepair::new(Arc::new(db.lease_store(table::map())), s)
        .unwrap()
        .batch_size(100)
        .unwrap()
}

/// The child: connect, say so, repair until done.
async fn child(spec: &str) {
    let (url, schema) = spec.split_once('|').unwrap_or((spec, ""));
    let db = Db::connect_with(
        url,
        ConnectOptions {
            search_path: (!schema.is_empty()).then(|| schema.to_owned()),
            ..ConnectOptions::default()
        },
    )
    .await
    .expect("child connects");
    println!("ready");
    step(&db)
        .reconcile(&RunContext::new(table::now()))
        .await
        .expect("child run");
    println!("done");
}

/// A small deterministic generator for kill delays (the seed is printed, so a failing run can
/// be repeated with RECON_CRASH_SEED).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so that a panic in the
/// parent never leaves one running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn crash_test(t: &common::TestDb, spec: String, seed: u64) {
    let name = t.db.dialect().name();
    // printed first (harness = false: nothing is captured), so a failure below can be
    // repeated with RECON_CRASH_SEED
    eprintln!("crash {name}: seed {seed} (repeat with RECON_CRASH_SEED={seed})");
    table::stuck_table(t, JOBS).await;
    let exe = std::env::current_exe().unwrap();
    let mut rng = Lcg(seed);
    let (mut kills, mut hits, mut progressed) = (0, 0, 0);
    // Kills land a random 20 ms .. `longest` after the child is ready. A child killed before
    // it committed a batch proves little, so on a slow (busy) machine `longest` doubles after
    // each kill that left no committed batch. On a fast one the work could end before the
    // last kill: after a kill that did commit work, `longest` is set from the fastest rate
    // seen so far (a child's first batches run slower, and an underestimated rate would let
    // the next child finish the work), so that a kill takes on average at most half its
    // share of the jobs left (the share of the kills left), and grows at most twofold a kill.
    // The delays then depend on the machine too, not only on the seed.
    let mut longest: u64 = 250;
    let mut per_ms = 0.0_f64;
    let stuck = "SELECT COUNT(*) FROM jobs WHERE status = 'processing'";
    let mut before = table::scalar(t, stuck).await;
    let started = Instant::now();
    while kills < KILLS {
        let mut c = Child(
            Command::new(&exe)
                .env("RECON_CRASH_CHILD", &spec)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let mut out = BufReader::new(c.0.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "{name}, seed {seed}: child did not start"
        );
        let delay = rng.next(20, longest.max(21));
        std::thread::sleep(Duration::from_millis(delay));
        let finished = c.0.try_wait().unwrap().is_some();
        drop(c); // SIGKILL on Unix, then reaped
        kills += 1;
        let after = table::scalar(t, stuck).await;
        if after < before {
            progressed += 1;
            // jobs a millisecond, the fastest yet; a delay of 20 ms .. `longest` averages
            // `(20 + longest) / 2`, which is to be half of a kill's share of the time left
            per_ms = per_ms.max((before - after) as f64 / delay as f64);
            let kills_left = u64::from(KILLS - kills).max(1);
            let share_ms = (after as f64 / per_ms) / kills_left as f64;
            longest = ((share_ms - 20.0).clamp(40.0, 8000.0) as u64).min(longest * 2);
        } else {
            longest = (longest * 2).min(8000);
        }
        before = after;
        if !finished {
            hits += 1;
        } else {
            break; // the work is done: later kills would hit nothing
        }
    }
    let left = before;
    // the final, uninterrupted run
    let r = step(&t.db)
        .reconcile(&RunContext::new(table::now()))
        .await
        .unwrap();
    table::assert_each_repaired_once(t, JOBS).await;
    println!(
        "crash {name}: seed {seed}: {kills} SIGKILLs ({hits} mid-run, {progressed} after the \
         child had committed work) over {:.1?}; {left} jobs were still stuck before the final \
         run, which repaired them in {} batches; all {JOBS} jobs in one valid state, none lost, \
         no attempt counted twice",
        started.elapsed(),
        r.count(lease_repair::counters::BATCHES)
    );
    assert!(
        hits >= KILLS,
        "{name}, seed {seed}: only {hits} kills hit a running child; the work finished first"
    );
    assert!(
        progressed >= KILLS / 4,
        "{name}, seed {seed}: only {progressed} of {kills} children had committed a batch when \
         they were killed"
    );
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Ok(spec) = std::env::var("RECON_CRASH_CHILD") {
        rt.block_on(child(&spec));
        return;
    }
    let seed = std::env::var("RECON_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    if std::env::var("RECON_REQUIRE_ALL_BACKENDS").is_ok_and(|v| v == "1")
        && !cfg!(feature = "postgres")
    {
        panic!(
            "RECON_REQUIRE_ALL_BACKENDS=1, but PostgreSQL support is not compiled in: \
             run with --all-features"
        );
    }
    rt.block_on(async {
        let t = common::sqlite().await;
        let spec = format!("sqlite:{}", t.sqlite_path().unwrap().display());
        crash_test(&t, spec, seed).await;
        t.finish().await;
        #[cfg(feature = "postgres")]
        if let Some(t) = common::postgres().await {
            let url = std::env::var("RECON_TEST_POSTGRES_URL").unwrap();
            let spec = format!("{url}|{}", t.namespace().unwrap());
            crash_test(&t, spec, seed).await;
            t.finish().await;
        }
    });
    println!("crash safety: ok");
}
