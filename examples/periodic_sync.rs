//! Scenario B: a periodic upstream sync with orphan cleanup (seed 002). Every cycle reads the
//! watermark, fetches the reservations changed upstream since then (an overlap window before
//! it), creates / updates / skips them by fingerprint, schedules their PIN jobs, then removes
//! the jobs whose reservation no longer exists and logs the run in `recon_runs`.
//!
//! ```sh
//! cargo run --example periodic_sync                          # creates recon-sync.sqlite
//! cargo run --example periodic_sync -- --reset-demo          # start the story again
//! cargo run --example periodic_sync -- --now 2024-02-01T10:30:00Z --reset-demo   # reproducible
//! cargo run --example periodic_sync --features postgres -- \
//!     --database-url postgres://root@127.0.0.1:5432/test
//! ```
//!
//! Flags: `--database-url URL` (default `sqlite:recon-sync.sqlite`), `--reset-demo`, `--json`
//! (only the JSON of every cycle), `--now RFC3339` (a frozen clock that moves by one interval
//! per cycle, for reproducible runs), `--cycles N` (default 6), `--interval-ms MS` (default
//! 1000).
//!
//! **Time is compressed.** The scenario runs every 30 minutes; here `--interval-ms` of real
//! time stands for those 30 minutes, and every other duration of the scenario is scaled by the
//! same factor: the first run's 24 h lookback, the 5-minute overlap window and the upstream
//! retry backoff of 2 s, 4 s, 8 s (retry-policy's `vector_store_load` preset). So the program
//! behaves as the scenario does, only faster; `--interval-ms 1800000` runs it in real time.
//!
//! The upstream (the Stays API of seed 002) is faked in this process: a scripted change feed,
//! in scenario minutes from the start of the story (the first cycle runs at minute 0):
//!
//! | cycle (min) | what happened upstream since the previous cycle |
//! |-------------|--------------------------------------------------|
//! | 1 (0)   | four reservations changed in the last day; the local queue still holds the 2 PIN jobs of `stay-901`, deleted before the demo |
//! | 2 (30)  | `stay-654` booked; `stay-456` confirmed (it was pending) |
//! | 3 (60)  | the upstream is down from minute 50 to 75: the fetch fails after 3 retries |
//! | 4 (90)  | `stay-789` cancelled (this host then deletes it, so its jobs are orphans); `stay-987` booked; `stay-555` committed late with the watermark's exact timestamp |
//! | 5 (120) | `stay-123` stays one night longer (its `revokePin` job moves) |
//! | 6+      | nothing new |
//!
//! The demo keeps the story's start in the table `sync_demo`, so a second run continues the
//! same story from the stored watermark (at the same `--interval-ms`); `--reset-demo` starts
//! it again.
//!
//! The demo's tables (`reservations`, `sync_demo`) are created only where neither exists, and
//! recorded in `recon_demo_tables`. If one exists that this demo did not create, or that lacks
//! a column, or recon's tables already hold the demo's queue, fingerprints or watermark while
//! its tables do not exist, the example prints one `error:` line and stops without touching
//! anything; only `--reset-demo` drops and recreates them.
//!
//! The pieces are the library's: lineage-checksum's [`SyncReconciler`] (watermark, overlap,
//! fingerprints, retries), store-sqlx's SQL stores (`recon_watermarks`, `recon_fingerprints`,
//! `recon_queued_jobs`, `recon_runs`), queue-rehydrate's [`QueueDiffReconciler`] (orphans,
//! missing and drifted jobs) and recon-core's [`Runner::run_periodic`]. The host code is the
//! fake upstream, the `reservations` table and its PIN job plan.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, NaiveTime, SecondsFormat, TimeDelta, Timelike, Utc};
use lineage_checksum::{
    Change, FetchRequest, ItemResult, Schema, SyncReconciler, SyncSettings, SyncTarget,
    UpstreamPage, UpstreamRecord, UpstreamRetry, UpstreamSource,
};
use queue_rehydrate::{
    ColumnType, DesiredJob, JobQueue, KeyType, QueueDiffReconciler, QueuedJob, Row, TableMapping,
};
use recon::Runner;
use recon_core::{
    Clock, ManualClock, RunContext, RunLog, RunReport, RunStatus, StatusView, StepStatus,
    SystemClock, TimeSource, WatermarkStore, async_trait,
};
use retry_policy::{Attempt, presets};
use serde_json::json;
use store_sqlx::{Db, Dialect, SqlJobQueue, SqlRunLog, SqlWatermarkStore};
use tokio::sync::{mpsc, oneshot};

#[path = "common/demo_tables.rs"]
mod demo_tables;

/// The sync step; also the name of its watermark and fingerprint namespace.
const SYNC: &str = "stays-sync";
/// The PIN job step, and the queue in `recon_queued_jobs`.
const PIN_JOBS: &str = "pin-jobs";
/// The runner, as logged in `recon_runs`.
const RUNNER: &str = "periodic-sync";
/// The scenario's interval, which `--interval-ms` stands for.
const SCENARIO_INTERVAL_MINUTES: i64 = 30;

#[derive(Debug)]
struct Args {
    url: String,
    reset: bool,
    json: bool,
    now: Option<DateTime<Utc>>,
    cycles: u64,
    interval_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "sqlite:recon-sync.sqlite".into(),
        reset: false,
        json: false,
        now: None,
        cycles: 6,
        interval_ms: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--database-url" => args.url = it.next().ok_or("--database-url needs a URL")?,
            "--reset-demo" => args.reset = true,
            "--json" => args.json = true,
            "--now" => {
                let v = it.next().ok_or("--now needs an RFC 3339 time")?;
                args.now = Some(v.parse().map_err(|e| format!("--now {v}: {e}"))?);
            }
            "--cycles" => {
                let v = it.next().ok_or("--cycles needs a number")?;
                args.cycles = v.parse().map_err(|e| format!("--cycles {v}: {e}"))?;
                if args.cycles == 0 {
                    return Err("--cycles must be at least 1".into());
                }
            }
            "--interval-ms" => {
                let v = it.next().ok_or("--interval-ms needs a number")?;
                args.interval_ms = v.parse().map_err(|e| format!("--interval-ms {v}: {e}"))?;
                if !(10..=86_400_000).contains(&args.interval_ms) {
                    return Err(format!(
                        "--interval-ms {v}: must be between 10 ms and one day"
                    ));
                }
            }
            "-h" | "--help" => {
                println!(
                    "usage: periodic_sync [--database-url URL] [--reset-demo] [--json] [--now RFC3339] \
                     [--cycles N] [--interval-ms MS]\n\n\
                     Runs scenario B's upstream sync N times (default 6), one cycle every MS \
                     milliseconds (default 1000),\nwhich stand for the scenario's 30 minutes: every \
                     other duration (24 h lookback, 5 min overlap,\n2 s/4 s/8 s retry backoff) is \
                     scaled by the same factor. --now freezes the clock at a start time\nand moves \
                     it by one interval per cycle, for reproducible output."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The scenario's durations in this run's compressed time.
#[derive(Clone, Copy, Debug)]
struct Scale {
    interval_ms: u64,
}

impl Scale {
    /// `d` of scenario time, scaled (to the microsecond).
    fn of(self, d: Duration) -> Duration {
        let us = d.as_micros() * u128::from(self.interval_ms)
            / (SCENARIO_INTERVAL_MINUTES as u128 * 60_000);
        Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }

    /// `minutes` of scenario time (may be negative), scaled.
    fn minutes(self, minutes: i64) -> TimeDelta {
        let d = self.of(Duration::from_secs(minutes.unsigned_abs() * 60));
        let d = TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
        if minutes < 0 { -d } else { d }
    }

    fn interval(self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// Scenario B's retry backoff, from retry-policy's preset: the delay after each failed fetch
/// until the policy gives up (2 s, 4 s, 8 s).
fn preset_backoff() -> Vec<Duration> {
    let policy = presets::vector_store_load();
    let t = DateTime::UNIX_EPOCH;
    (1..=20)
        .map_while(|n| {
            policy
                .decide(&Attempt::new("stays-api", n, t))
                .delay_after(t)
        })
        .collect()
}

async fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let scale = Scale {
        interval_ms: args.interval_ms,
    };

    // 1. The host's database: the demo's tables (checked before anything is written, and
    //    created only where they are absent), then recon's own tables from its migrations.
    let db = Db::connect(&args.url).await?;
    let create =
        args.reset || demo_tables::needs_creating(&db, &demo::TABLES, &demo::RECON_ROWS).await?;
    db.migrate().await?;
    let reservations = reservations_table()?;
    let source = db.source_store();
    let queue = db.job_queue(PIN_JOBS)?;
    queue.verify().await?;
    let watermarks = db.watermarks();

    // The clock: frozen at --now (moved one interval per cycle), or the system's.
    let start = args.now.unwrap_or_else(|| whole_millis(SystemClock.now()));
    let manual = args.now.map(ManualClock::at);
    let clock: Arc<dyn TimeSource> = match &manual {
        Some(c) => Arc::new(c.clone()),
        None => Arc::new(SystemClock),
    };

    // 2. The demo's state: made on the first run or with --reset-demo; otherwise the stored
    //    story goes on.
    let (story_start, intro) = if create {
        demo::create(&db, &queue, start, args.interval_ms).await?;
        let intro = "Created the demo: an empty `reservations` table, and 2 PIN jobs left in the \
                     queue by stay-901, deleted before the demo.";
        (start, intro.to_owned())
    } else {
        let (t, ms) = sql::story(&db)
            .await?
            .ok_or("sync_demo holds no story; --reset-demo starts it again")?;
        if ms != args.interval_ms {
            return Err(format!(
                "the stored story runs at --interval-ms {ms}: give --interval-ms {ms} to \
                 continue it, or --reset-demo to start it again at {}",
                args.interval_ms
            )
            .into());
        }
        let intro = format!(
            "Continuing the story that started at {} (--reset-demo starts it again).",
            fmt_full(t)
        );
        (t, intro)
    };
    source.verify(&reservations).await?;

    // 3. The sync step: lineage-checksum's reconciler on store-sqlx's stores.
    let upstream = Arc::new(FakeUpstream::new(story_start, scale)?);
    let backoff = preset_backoff();
    let settings = SyncSettings::new(SYNC)
        .initial_lookback(scale.of(Duration::from_secs(24 * 3600)))
        .overlap(scale.of(Duration::from_secs(5 * 60)))
        .retry(UpstreamRetry::new(backoff.iter().map(|d| scale.of(*d))))
        .page_size(100);
    let local = Arc::new(LocalReservations {
        db: db.clone(),
        queue: queue.clone(),
        table: reservations.clone(),
    });
    let sync = SyncReconciler::new(
        SYNC,
        upstream.clone(),
        local,
        Arc::new(db.fingerprints()),
        Arc::new(watermarks.clone()),
    )?
    .with_settings(settings)?;

    // 4. The PIN job step: queue-rehydrate's diff of `recon_queued_jobs` against
    //    `reservations` — removes orphans, moves drifted jobs, enqueues missing ones.
    let pin_jobs = QueueDiffReconciler::new(
        PIN_JOBS,
        Arc::new(queue.clone()),
        Arc::new(source.entities(reservations)),
        Arc::new(pin_plan),
    );

    // 5. The runner. Its run log is recon_runs, watched so that each cycle can be shown.
    let (cycles_tx, mut cycles_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    let log = CycleLog {
        log: db.run_log(),
        watermarks: watermarks.clone(),
        queue: queue.clone(),
        upstream: upstream.clone(),
        clock: manual.clone(),
        interval: TimeDelta::milliseconds(args.interval_ms as i64),
        cycles: args.cycles,
        logged: AtomicU64::new(0),
        tx: cycles_tx,
        done: Mutex::new(Some(done_tx)),
    };
    let runner = Runner::builder(RUNNER)
        .time_source(clock)
        .required_step(sync) // upstream down → the run failed, the cleanup waits
        .step(pin_jobs) // cleanup failing → the sync stands, the run is partial
        .step_timeout(Duration::from_secs(60))
        .run_timeout(Duration::from_secs(300))
        .run_log(Arc::new(log))
        .build()?;

    if !args.json {
        println!("Scenario B: periodic upstream sync with orphan cleanup (seed 002)");
        println!("{intro}");
        println!(
            "{} cycles, one every {} ms standing for the scenario's 30 min (1 min = {}); first \
             run reads back {}, overlap {},\nupstream retries after {} ({} in the scenario, \
             retry-policy's vector_store_load preset). Ctrl-C stops after the current cycle.\n",
            args.cycles,
            args.interval_ms,
            fmt_span(scale.of(Duration::from_secs(60))),
            fmt_span(scale.of(Duration::from_secs(24 * 3600))),
            fmt_span(scale.of(Duration::from_secs(5 * 60))),
            join(backoff.iter().map(|d| fmt_span(scale.of(*d)))),
            join(backoff.iter().map(|d| fmt_span(*d))),
        );
        println!(
            "{:>5}  {:<12}  {:<7}  {:<22}  {:>7}  {:>7}  {:>7}  {:>9}  {:>8}  {:>8}",
            "cycle",
            "time",
            "status",
            "watermark",
            "fetched",
            "created",
            "updated",
            "unchanged",
            "orphaned",
            "PIN jobs"
        );
    }

    // 6. What a host runs: every interval until shutdown (here: N cycles, or Ctrl-C).
    let shutdown = async move {
        tokio::select! {
            _ = done_rx => {}
            _ = ctrl_c() => {}
        }
    };
    let mut previous = watermarks.get(SYNC).await?;
    let mut cycles: Vec<Cycle> = Vec::new();
    let mut show = |c: Cycle, previous: &mut Option<DateTime<Utc>>| {
        if !args.json {
            print_row(&c, *previous);
        }
        if let Ok(w) = c.watermark {
            *previous = w;
        }
        cycles.push(c);
    };
    let periodic = runner.run_periodic(scale.interval(), shutdown);
    tokio::pin!(periodic);
    loop {
        tokio::select! {
            ran = &mut periodic => {
                ran?;
                break;
            }
            Some(c) = cycles_rx.recv() => show(c, &mut previous),
        }
    }
    while let Ok(c) = cycles_rx.try_recv() {
        show(c, &mut previous);
    }

    // 7. The queue as it is now, and the status of the last run.
    let jobs = waiting_jobs(&queue).await?;
    let status = runner.status();
    if args.json {
        let out = json!({
            "cycles": cycles.iter().map(Cycle::to_json).collect::<Vec<_>>(),
            "pinJobs": jobs.iter().map(|j| json!({
                "id": j.id,
                "kind": j.kind,
                "reservation": j.entity_key.to_string(),
                "runAt": j.run_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            })).collect::<Vec<_>>(),
            "status": status,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_notes(&cycles, &backoff, scale);
        println!(
            "\nPIN jobs waiting in recon_queued_jobs (generatePin at check-in − 2 h, revokePin \
             at check-out + 24 h):"
        );
        for j in &jobs {
            println!(
                "  {:<14} {:<12} {}",
                j.id,
                j.kind,
                j.run_at.format("%Y-%m-%d %H:%M UTC")
            );
        }
        if let Ok(Some(last)) = RunLog::latest(&db.run_log(), RUNNER).await {
            println!(
                "\n{} run(s) logged in recon_runs; the last is {}.",
                cycles.len(),
                last.id
            );
        }
        if let Some(status) = &status {
            println!("\nStatus JSON of the last run:");
            println!("{}", serde_json::to_string_pretty(status)?);
        }
    }
    db.close().await;
    Ok(match cycles.last().map(|c| c.report.status) {
        Some(RunStatus::Failed) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

/// Ctrl-C, or never if signals cannot be watched here.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The host's side: the reservations table, its PIN job plan, and the sync's apply hook
// ---------------------------------------------------------------------------------------------

/// The local `reservations` table, as queue-rehydrate reads it.
fn reservations_table() -> queue_rehydrate::Result<TableMapping> {
    TableMapping::builder("reservations", "id", KeyType::Text)
        .column("status", ColumnType::Text)
        .column("lock_id", ColumnType::Text)
        .column("check_in", ColumnType::Timestamp)
        .column("check_out", ColumnType::Timestamp)
        .build()
}

/// Seed 002's PIN jobs: a confirmed reservation has `generatePin` (`gen-<id>`) at check-in −
/// 2 h and `revokePin` (`rev-<id>`) at check-out + 24 h; other statuses have none.
fn pin_plan(r: &Row, _now: DateTime<Utc>) -> queue_rehydrate::Result<Vec<DesiredJob>> {
    if r.text("status")? != Some("confirmed") {
        return Ok(Vec::new());
    }
    let missing =
        |c: &str| queue_rehydrate::Error::config(format!("reservation {} has no {c}", r.key()));
    let check_in = r
        .timestamp("check_in")?
        .ok_or_else(|| missing("check_in"))?;
    let check_out = r
        .timestamp("check_out")?
        .ok_or_else(|| missing("check_out"))?;
    let id = r.key().to_string();
    let payload = json!({ "reservationId": id, "lockId": r.text("lock_id")? });
    Ok(vec![
        DesiredJob {
            id: format!("gen-{id}"),
            kind: "generatePin".into(),
            entity_key: r.key().clone(),
            run_at: check_in - TimeDelta::hours(2),
            payload: payload.clone(),
        },
        DesiredJob {
            id: format!("rev-{id}"),
            kind: "revokePin".into(),
            entity_key: r.key().clone(),
            run_at: check_out + TimeDelta::hours(24),
            payload,
        },
    ])
}

/// A reservation as the upstream returns it.
#[derive(Clone, Debug, PartialEq)]
struct Reservation {
    guest: String,
    status: String,
    accommodation: String,
    lock_id: String,
    check_in: DateTime<Utc>,
    check_out: DateTime<Utc>,
}

/// The sync's local side: writes `reservations` (a cancelled reservation is deleted, which
/// makes its PIN jobs orphans) and schedules the PIN jobs of the applied ones. One upsert, one
/// delete and one enqueue per page; all idempotent, as the sync asks of hooks.
struct LocalReservations {
    db: Db,
    queue: SqlJobQueue,
    table: TableMapping,
}

#[async_trait]
impl SyncTarget<Reservation> for LocalReservations {
    async fn apply(
        &self,
        ctx: &RunContext,
        changes: &[Change<Reservation>],
    ) -> lineage_checksum::Result<Vec<ItemResult>> {
        let (cancelled, kept): (Vec<_>, Vec<_>) = changes
            .iter()
            .map(|c| &c.record)
            .partition(|r| r.data.status == "cancelled");
        let db_err = |what: &str, e: sqlx::Error| {
            if store_sqlx::is_transient_sqlx(&e) {
                lineage_checksum::Error::transient(what, e)
            } else {
                lineage_checksum::Error::permanent(what, e)
            }
        };
        if !kept.is_empty() {
            sql::upsert_reservations(&self.db, &kept, ctx.now())
                .await
                .map_err(|e| db_err("write reservations", e))?;
        }
        if !cancelled.is_empty() {
            let keys: Vec<&str> = cancelled.iter().map(|r| r.key.as_str()).collect();
            sql::delete_reservations(&self.db, &keys)
                .await
                .map_err(|e| db_err("delete cancelled reservations", e))?;
        }
        let mut jobs = Vec::new();
        for r in &kept {
            let planned = self
                .table
                .row([
                    ("id", r.key.clone().into()),
                    ("status", r.data.status.clone().into()),
                    ("lock_id", r.data.lock_id.clone().into()),
                    ("check_in", r.data.check_in.into()),
                    ("check_out", r.data.check_out.into()),
                ])
                .and_then(|row| pin_plan(&row, ctx.now()))
                .map_err(|e| lineage_checksum::Error::permanent("plan PIN jobs", e))?;
            jobs.extend(planned);
        }
        if !jobs.is_empty() {
            // insert-if-absent: a job already queued keeps its place (the PIN job step moves
            // it if its time changed)
            self.queue.enqueue(&jobs).await.map_err(|e| {
                if e.is_transient() {
                    lineage_checksum::Error::transient("schedule PIN jobs", e)
                } else {
                    lineage_checksum::Error::permanent("schedule PIN jobs", e)
                }
            })?;
        }
        Ok(vec![Ok(()); changes.len()])
    }
}

// ---------------------------------------------------------------------------------------------
// The fake upstream: a scripted change feed
// ---------------------------------------------------------------------------------------------

/// One scripted change: (visible upstream from, key, updated at, guest, status, accommodation,
/// check-in in days after the story's start, nights). Times in scenario minutes from the start
/// of the story; a row visible later than its update time was committed late.
type Scripted = (
    i64,
    &'static str,
    i64,
    &'static str,
    &'static str,
    &'static str,
    i64,
    i64,
);

const STORY: [Scripted; 10] = [
    // before cycle 1 (minute 0): the last day's changes
    (
        -720,
        "stay-321",
        -720,
        "Cy Diaz",
        "confirmed",
        "acc-2",
        2,
        2,
    ),
    (-25, "stay-123", -25, "John Doe", "confirmed", "acc-1", 4, 3),
    (-20, "stay-456", -20, "Ana Lima", "pending", "acc-1", 6, 2),
    (-10, "stay-789", -10, "Bo Chen", "confirmed", "acc-2", 3, 3),
    // before cycle 2 (30)
    (12, "stay-654", 12, "Eve Park", "confirmed", "acc-3", 5, 1),
    (20, "stay-456", 20, "Ana Lima", "confirmed", "acc-1", 6, 2),
    // before cycles 3 (60, upstream down) and 4 (90)
    (45, "stay-789", 45, "Bo Chen", "cancelled", "acc-2", 3, 3),
    (55, "stay-987", 55, "Gil Reyes", "confirmed", "acc-3", 8, 4),
    (70, "stay-555", 20, "Hana Ito", "confirmed", "acc-1", 7, 2), // late, at the watermark
    // before cycle 5 (120): one more night
    (100, "stay-123", 100, "John Doe", "confirmed", "acc-1", 4, 4),
];

/// The upstream is unreachable from minute 50 to minute 75.
const OUTAGE: (i64, i64) = (50, 75);

/// The Stays API of seed 002, in process: records changed at or after `since` (inclusive), the
/// latest version of each, paged by offset tokens; down during [`OUTAGE`].
struct FakeUpstream {
    story: Vec<(DateTime<Utc>, UpstreamRecord<Reservation>)>,
    outage: (DateTime<Utc>, DateTime<Utc>),
    fetches: AtomicU64,
    failures: AtomicU64,
}

impl FakeUpstream {
    fn new(start: DateTime<Utc>, scale: Scale) -> lineage_checksum::Result<Self> {
        let at = |m: i64| start + scale.minutes(m);
        // the key fields of a reservation, fingerprinted as the host's API adapter would
        let schema = Schema::new(
            "stays-reservation",
            [
                "id",
                "guest_name",
                "status",
                "accommodation_id",
                "lock_id",
                "check_in",
                "check_out",
            ],
        )?;
        let day = start.date_naive();
        let mut story = Vec::new();
        for (visible, key, updated, guest, status, acc, in_days, nights) in STORY {
            let check_in = (day + TimeDelta::days(in_days))
                .and_time(NaiveTime::from_hms_opt(15, 0, 0).unwrap_or_default())
                .and_utc();
            let check_out = check_in + TimeDelta::days(nights) - TimeDelta::hours(4);
            let data = Reservation {
                guest: guest.into(),
                status: status.into(),
                accommodation: acc.into(),
                lock_id: format!("lock-{acc}"),
                check_in,
                check_out,
            };
            let fingerprint = schema.fingerprint(&[
                key.into(),
                data.guest.as_str().into(),
                data.status.as_str().into(),
                data.accommodation.as_str().into(),
                data.lock_id.as_str().into(),
                data.check_in.into(),
                data.check_out.into(),
            ])?;
            let record = UpstreamRecord {
                key: key.into(),
                cursor: at(updated),
                fingerprint,
                group: Some(acc.into()),
                data,
            };
            story.push((at(visible), record));
        }
        Ok(Self {
            story,
            outage: (at(OUTAGE.0), at(OUTAGE.1)),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Fetches and failed fetches since the last call.
    fn take_counts(&self) -> (u64, u64) {
        (
            self.fetches.swap(0, Ordering::Relaxed),
            self.failures.swap(0, Ordering::Relaxed),
        )
    }
}

#[async_trait]
impl UpstreamSource<Reservation> for FakeUpstream {
    async fn fetch(
        &self,
        ctx: &RunContext,
        req: &FetchRequest,
    ) -> lineage_checksum::Result<UpstreamPage<Reservation>> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let now = ctx.now();
        if (self.outage.0..self.outage.1).contains(&now) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(lineage_checksum::Error::transient(
                "GET /reservations?updated_since",
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "Stays API unreachable (connection refused)",
                ),
            ));
        }
        // the current version of every reservation, as the API would answer now
        let mut latest: Vec<&UpstreamRecord<Reservation>> = Vec::new();
        for (_, r) in self.story.iter().filter(|(visible, _)| *visible <= now) {
            match latest.iter_mut().find(|l| l.key == r.key) {
                Some(l) if l.cursor <= r.cursor => *l = r,
                Some(_) => {}
                None => latest.push(r),
            }
        }
        let mut changed: Vec<_> = latest
            .into_iter()
            .filter(|r| r.cursor >= req.since)
            .cloned()
            .collect();
        changed.sort_by(|a, b| (a.cursor, &a.key).cmp(&(b.cursor, &b.key)));
        let offset: usize = match req.page_token.as_deref() {
            None => 0,
            Some(t) => t.parse().map_err(|_| {
                lineage_checksum::Error::invalid_input(format!("bad page token {t:?}"))
            })?,
        };
        let records: Vec<_> = changed
            .iter()
            .skip(offset)
            .take(req.limit)
            .cloned()
            .collect();
        let next = (offset + req.limit < changed.len()).then(|| (offset + req.limit).to_string());
        Ok(UpstreamPage {
            records,
            next_page_token: next,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Watching the cycles
// ---------------------------------------------------------------------------------------------

/// One finished cycle, as shown.
struct Cycle {
    n: u64,
    report: RunReport,
    /// The stored watermark after the run.
    watermark: Result<Option<DateTime<Utc>>, String>,
    /// Waiting PIN jobs after the run.
    pin_jobs: Result<u64, String>,
    fetches: u64,
    failed_fetches: u64,
    /// The run log's error, if logging the run failed.
    log_error: Option<String>,
}

impl Cycle {
    fn to_json(&self) -> serde_json::Value {
        let mut v = StatusView::from_report(&self.report, 0).to_json();
        if let Some(o) = v.as_object_mut() {
            o.remove("uptime"); // the process's, not the cycle's
        }
        v["cycle"] = json!(self.n);
        v["watermark"] = match &self.watermark {
            Ok(w) => json!(w.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))),
            Err(e) => json!({ "error": e }),
        };
        v["pinJobs"] = match &self.pin_jobs {
            Ok(n) => json!(n),
            Err(e) => json!({ "error": e }),
        };
        v["steps"] = self
            .report
            .steps
            .iter()
            .map(|s| json!({ "name": s.name, "status": step_state(s.status) }))
            .collect();
        v["upstreamFetches"] = json!(self.fetches);
        v["upstreamFailures"] = json!(self.failed_fetches);
        if let Some(e) = &self.log_error {
            v["runLogError"] = json!(e);
        }
        v
    }
}

/// The run log of the runner: `recon_runs`, plus, after each run (before the next can start),
/// the cycle's watermark and PIN job count for the table, and the demo clock moved on.
///
/// The runner has no other after-run hook, so the demo watches its run log.
struct CycleLog {
    log: SqlRunLog,
    watermarks: SqlWatermarkStore,
    queue: SqlJobQueue,
    upstream: Arc<FakeUpstream>,
    clock: Option<ManualClock>,
    interval: TimeDelta,
    cycles: u64,
    logged: AtomicU64,
    tx: mpsc::UnboundedSender<Cycle>,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

#[async_trait]
impl RunLog for CycleLog {
    async fn append(&self, report: &RunReport) -> recon_core::Result<()> {
        let logged = self.log.append(report).await;
        let watermark = self.watermarks.get(SYNC).await.map_err(|e| e.to_string());
        let pin_jobs = waiting_jobs(&self.queue)
            .await
            .map(|j| j.len() as u64)
            .map_err(|e| e.to_string());
        let (fetches, failed_fetches) = self.upstream.take_counts();
        if let Some(clock) = &self.clock {
            clock.advance(self.interval);
        }
        let n = self.logged.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.tx.send(Cycle {
            n,
            report: report.clone(),
            watermark,
            pin_jobs,
            fetches,
            failed_fetches,
            log_error: logged.as_ref().err().map(ToString::to_string),
        });
        if n >= self.cycles
            && let Some(done) = self
                .done
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        {
            let _ = done.send(());
        }
        logged
    }

    async fn latest(&self, runner: &str) -> recon_core::Result<Option<RunReport>> {
        self.log.latest(runner).await
    }

    async fn history(&self, runner: &str, limit: usize) -> recon_core::Result<Vec<RunReport>> {
        self.log.history(runner, limit).await
    }

    async fn prune(&self, older_than: DateTime<Utc>) -> recon_core::Result<u64> {
        self.log.prune(older_than).await
    }
}

/// Every waiting job of the queue, by keyset pages.
async fn waiting_jobs(queue: &SqlJobQueue) -> queue_rehydrate::Result<Vec<QueuedJob>> {
    let mut all: Vec<QueuedJob> = Vec::new();
    loop {
        let page = queue.page(all.last().map(|j| j.id.clone()), 500).await?;
        let done = page.len() < 500;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

fn step_count(report: &RunReport, step: &str, counter: &str) -> Option<u64> {
    let s = report.step(step)?;
    (s.status == StepStatus::Succeeded).then(|| s.report.get(counter).unwrap_or(0))
}

fn print_row(c: &Cycle, previous: Option<DateTime<Utc>>) {
    let n = |step: &str, counter: &str| {
        step_count(&c.report, step, counter).map_or_else(|| "-".to_owned(), |v| v.to_string())
    };
    let mark = match &c.watermark {
        Ok(Some(w)) => {
            let how = match previous {
                None => "set",
                Some(p) if *w > p => "advanced",
                Some(_) => "unchanged",
            };
            format!("{} {how}", fmt_time(*w))
        }
        Ok(None) => "none".to_owned(),
        Err(_) => "? (unreadable)".to_owned(),
    };
    let jobs = c
        .pin_jobs
        .as_ref()
        .map_or_else(|_| "?".to_owned(), ToString::to_string);
    println!(
        "{:>5}  {:<12}  {:<7}  {:<22}  {:>7}  {:>7}  {:>7}  {:>9}  {:>8}  {:>8}",
        c.n,
        fmt_time(c.report.started_at),
        c.report.status.as_str(),
        mark,
        n(SYNC, "fetched"),
        n(SYNC, "created"),
        n(SYNC, "updated"),
        n(SYNC, "unchanged"),
        n(PIN_JOBS, "orphaned"),
        jobs
    );
}

/// What the table does not show: failures, retries, moved jobs, notes.
fn print_notes(cycles: &[Cycle], backoff: &[Duration], scale: Scale) {
    let mut lines = Vec::new();
    for c in cycles {
        let mut say = |s: String| lines.push(format!("  cycle {}: {s}", c.n));
        if c.failed_fetches > 0 {
            let sync_failed = c
                .report
                .step(SYNC)
                .is_some_and(|s| s.status != StepStatus::Succeeded);
            let retries = c.failed_fetches - u64::from(sync_failed);
            let delays: Vec<String> = backoff
                .iter()
                .take(retries as usize)
                .map(|d| format!("{} ({})", fmt_span(*d), fmt_span(scale.of(*d))))
                .collect();
            say(format!(
                "the upstream failed {} of {} fetches; retried after {}{}",
                c.failed_fetches,
                c.fetches,
                join(delays.into_iter()),
                if sync_failed {
                    ", then gave up until the next scheduled run"
                } else {
                    ""
                }
            ));
        }
        for s in &c.report.steps {
            match &s.error {
                Some(e) if s.status == StepStatus::NotRun => {
                    say(format!("{} {}", s.name, e.message));
                }
                Some(e) => say(format!(
                    "{} {}: {}",
                    s.name,
                    step_state(s.status),
                    e.message
                )),
                None => {}
            }
            for k in ["rescheduled", "enqueued", "obsolete"] {
                if let Some(v) = s.report.get(k).filter(|v| *v > 0) {
                    say(format!("{} {k} {v} job(s)", s.name));
                }
            }
            for e in s.report.item_errors() {
                say(format!("{}: {} failed: {}", s.name, e.key, e.reason));
            }
            for note in s.report.notes() {
                say(format!("{}: {note}", s.name));
            }
        }
        if c.report.status == RunStatus::Failed {
            say("the run failed; the watermark was not moved".to_owned());
        }
        if let Some(e) = &c.log_error {
            say(format!("could not log the run: {e}"));
        }
        if let Err(e) = &c.watermark {
            say(format!("could not read the watermark: {e}"));
        }
    }
    if !lines.is_empty() {
        println!("\nNotes:");
        for l in lines {
            println!("{l}");
        }
    }
}

fn step_state(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Succeeded => "ok",
        StepStatus::Failed => "failed",
        StepStatus::TimedOut => "timed out",
        StepStatus::NotRun => "not run",
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

fn whole_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(t)
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S%.3f").to_string()
}

fn fmt_full(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

/// `1.111 ms`, `2 s`, `48 s`.
fn fmt_span(d: Duration) -> String {
    let us = d.as_micros();
    if us >= 1_000_000 && us.is_multiple_of(1000) {
        let ms = us / 1000;
        if ms.is_multiple_of(1000) {
            format!("{} s", ms / 1000)
        } else {
            format!("{}.{:03} s", ms / 1000, ms % 1000)
        }
    } else if us.is_multiple_of(1000) {
        format!("{} ms", us / 1000)
    } else {
        format!("{}.{:03} ms", us / 1000, us % 1000)
    }
}

// ---------------------------------------------------------------------------------------------
// SQL of the host tables (and the demo's reset)
// ---------------------------------------------------------------------------------------------

/// The demo's tables: `reservations` (the host's) and `sync_demo` (when the story started).
mod demo {
    use super::*;
    use sql::{Arg, exec};

    /// The demo's tables and the columns the example uses.
    pub(super) const TABLES: [demo_tables::Table; 2] = [
        ("reservations", &sql::RESERVATION_COLUMNS),
        ("sync_demo", &["story_start", "interval_ms"]),
    ];

    /// The demo's state in recon's own tables, which may hold a host's state too. Resetting
    /// the demo deletes only these rows — the jobs of the demo's queue, the fingerprints of
    /// its namespace, its watermark — never another queue's, namespace's or watermark; a first
    /// run finds none of them (or stops). The run log (`recon_runs`) is kept.
    pub(super) const RECON_ROWS: [demo_tables::Rows; 3] = [
        ("recon_queued_jobs", "queue", PIN_JOBS),
        ("recon_fingerprints", "namespace", SYNC),
        ("recon_watermarks", "name", SYNC),
    ];

    /// Create the demo (only after [`demo_tables::needs_creating`], or on --reset-demo): an
    /// empty `reservations` table, the story's start, recon's state of this demo cleared, and
    /// the 2 PIN jobs of `stay-901` (deleted before the demo).
    pub(super) async fn create(
        db: &Db,
        queue: &SqlJobQueue,
        start: DateTime<Utc>,
        interval_ms: u64,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (ts, text, key) = match db.dialect() {
            Dialect::Postgres => ("TIMESTAMPTZ", "TEXT", "VARCHAR(64)"),
            Dialect::MySql => ("DATETIME(6)", "VARCHAR(255)", "VARCHAR(64)"),
            _ => ("TEXT", "TEXT", "TEXT"),
        };
        demo_tables::replace(db, &TABLES, &RECON_ROWS).await?;
        let ddl = [
            format!(
                "CREATE TABLE reservations (id {key} PRIMARY KEY, accommodation_id {text} NOT NULL, \
                 lock_id {text} NOT NULL, guest_name {text} NOT NULL, status {text} NOT NULL, \
                 check_in {ts} NOT NULL, check_out {ts} NOT NULL, synced_at {ts} NOT NULL)"
            ),
            format!(
                "CREATE TABLE sync_demo (story_start {ts} NOT NULL, interval_ms BIGINT NOT NULL)"
            ),
        ];
        for s in ddl {
            exec(db, &s, vec![]).await?;
        }
        exec(
            db,
            "INSERT INTO sync_demo (story_start, interval_ms) VALUES (?, ?)",
            vec![Arg::Time(start), Arg::Int(interval_ms as i64)],
        )
        .await?;
        let check_in = start + TimeDelta::days(1);
        let leftovers = [
            (
                "gen-stay-901",
                "generatePin",
                check_in - TimeDelta::hours(2),
            ),
            ("rev-stay-901", "revokePin", check_in + TimeDelta::days(3)),
        ]
        .map(|(id, kind, run_at)| DesiredJob {
            id: id.into(),
            kind: kind.into(),
            entity_key: "stay-901".into(),
            run_at,
            payload: json!({ "reservationId": "stay-901" }),
        });
        queue.enqueue(&leftovers).await?;
        Ok(())
    }
}

/// Statements with `?` placeholders (numbered for PostgreSQL) and bound values.
mod sql {
    use super::*;

    pub(super) enum Arg {
        Int(i64),
        Text(String),
        Time(DateTime<Utc>),
    }

    #[cfg(feature = "postgres")]
    fn numbered(sql: &str) -> String {
        let mut n = 0;
        sql.split('?')
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part.to_owned()
                } else {
                    n += 1;
                    format!("${n}{part}")
                }
            })
            .collect()
    }

    pub(super) async fn exec(db: &Db, sql: &str, args: Vec<Arg>) -> Result<u64, sqlx::Error> {
        macro_rules! go {
            ($pool:expr, $sql:expr) => {{
                let mut q = sqlx::query(sqlx::AssertSqlSafe($sql));
                for a in args {
                    q = match a {
                        Arg::Int(v) => q.bind(v),
                        Arg::Text(v) => q.bind(v),
                        // SQLite keeps RFC 3339 text, what queue-rehydrate reads by default
                        Arg::Time(v) => q.bind(v),
                    };
                }
                q.execute($pool).await.map(|r| r.rows_affected())
            }};
        }
        match db.dialect() {
            Dialect::Sqlite => go!(db.as_sqlite().unwrap(), sql.to_owned()),
            #[cfg(feature = "postgres")]
            Dialect::Postgres => go!(db.as_postgres().unwrap(), numbered(sql)),
            #[cfg(feature = "mysql")]
            Dialect::MySql => go!(db.as_mysql().unwrap(), sql.to_owned()),
            #[allow(unreachable_patterns)]
            d => Err(sqlx::Error::Configuration(
                format!("{} support is not compiled in", d.name()).into(),
            )),
        }
    }

    /// When the stored story started and at which `--interval-ms`, if there is one.
    pub(super) async fn story(db: &Db) -> Result<Option<(DateTime<Utc>, u64)>, sqlx::Error> {
        const Q: &str = "SELECT story_start, interval_ms FROM sync_demo";
        let row: Option<(DateTime<Utc>, i64)> = match db.dialect() {
            Dialect::Sqlite => {
                sqlx::query_as(Q)
                    .fetch_optional(db.as_sqlite().unwrap())
                    .await?
            }
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                sqlx::query_as(Q)
                    .fetch_optional(db.as_postgres().unwrap())
                    .await?
            }
            #[cfg(feature = "mysql")]
            Dialect::MySql => {
                sqlx::query_as(Q)
                    .fetch_optional(db.as_mysql().unwrap())
                    .await?
            }
            #[allow(unreachable_patterns)]
            _ => None,
        };
        Ok(row.map(|(t, ms)| (t, u64::try_from(ms).unwrap_or(0))))
    }

    /// The columns of `reservations`, the key first.
    pub(super) const RESERVATION_COLUMNS: [&str; 8] = [
        "id",
        "accommodation_id",
        "lock_id",
        "guest_name",
        "status",
        "check_in",
        "check_out",
        "synced_at",
    ];

    /// One multi-row upsert of the page's reservations.
    pub(super) async fn upsert_reservations(
        db: &Db,
        rows: &[&UpstreamRecord<Reservation>],
        now: DateTime<Utc>,
    ) -> Result<u64, sqlx::Error> {
        const COLS: [&str; 8] = RESERVATION_COLUMNS;
        let tuple = format!("({})", vec!["?"; COLS.len()].join(", "));
        let values = vec![tuple; rows.len()].join(", ");
        let set = |f: &dyn Fn(&str) -> String| {
            COLS[1..]
                .iter()
                .map(|c| format!("{c} = {}", f(c)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let conflict = match db.dialect() {
            Dialect::MySql => format!(
                "ON DUPLICATE KEY UPDATE {}",
                set(&|c| format!("VALUES({c})"))
            ),
            _ => format!(
                "ON CONFLICT (id) DO UPDATE SET {}",
                set(&|c| format!("excluded.{c}"))
            ),
        };
        let statement = format!(
            "INSERT INTO reservations ({}) VALUES {values} {conflict}",
            COLS.join(", ")
        );
        let mut args = Vec::with_capacity(rows.len() * COLS.len());
        for r in rows {
            let d = &r.data;
            args.extend([
                Arg::Text(r.key.clone()),
                Arg::Text(d.accommodation.clone()),
                Arg::Text(d.lock_id.clone()),
                Arg::Text(d.guest.clone()),
                Arg::Text(d.status.clone()),
                Arg::Time(d.check_in),
                Arg::Time(d.check_out),
                Arg::Time(now),
            ]);
        }
        exec(db, &statement, args).await
    }

    /// One `DELETE … IN (…)`.
    pub(super) async fn delete_reservations(db: &Db, keys: &[&str]) -> Result<u64, sqlx::Error> {
        let list = vec!["?"; keys.len()].join(", ");
        exec(
            db,
            &format!("DELETE FROM reservations WHERE id IN ({list})"),
            keys.iter().map(|k| Arg::Text((*k).to_owned())).collect(),
        )
        .await
    }
}
