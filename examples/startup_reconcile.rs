//! Scenario A: a chat bot was down for two hours. Before it accepts messages, `reconcile()`
//! repairs leases and jobs, rebuilds the follow-up queue, and verifies the metrics — then the
//! run is logged in `recon_runs` and its status JSON printed.
//!
//! ```sh
//! cargo run --example startup_reconcile                      # creates recon-demo.sqlite
//! cargo run --example startup_reconcile                      # again: nothing to repair
//! cargo run --example startup_reconcile -- --reset-demo      # put the crashed state back
//! cargo run --example startup_reconcile --features postgres -- \
//!     --database-url postgres://root@127.0.0.1:5432/test
//! ```
//!
//! Flags: `--database-url URL` (default `sqlite:recon-demo.sqlite`), `--dry-run`,
//! `--reset-demo`, `--json` (only the status JSON), `--now RFC3339` (a frozen clock, for
//! reproducible runs; the demo rows are placed relative to it).
//!
//! The demo's tables (`processing_jobs`, `user_sessions`, `orders`) are created only where
//! none of them exists, and recorded in `recon_demo_tables`. If one exists that this demo did
//! not create, or that lacks a column, the example prints one `error:` line and stops without
//! touching anything; only `--reset-demo` drops and recreates them.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lease_repair::{LeaseRepair, Settings};
use queue_rehydrate::{
    ColumnType, KeyType, Maintenance, NamedCount, Operand, Predicate, RehydrateReconciler,
    SetValue, TableMapping, memory::MemoryDerivedQueue,
};
use recon::{RunOptions, Runner};
use recon_core::{Clock, ManualClock, SystemClock, TimeSource};
use store_sqlx::{Db, Dialect, JobTable, Metrics};

#[path = "common/demo_tables.rs"]
mod demo_tables;

#[derive(Debug, Default)]
struct Args {
    url: String,
    dry_run: bool,
    reset: bool,
    json: bool,
    now: Option<DateTime<Utc>>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "sqlite:recon-demo.sqlite".into(),
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--database-url" => args.url = it.next().ok_or("--database-url needs a URL")?,
            "--dry-run" => args.dry_run = true,
            "--reset-demo" => args.reset = true,
            "--json" => args.json = true,
            "--now" => {
                let v = it.next().ok_or("--now needs an RFC 3339 time")?;
                args.now = Some(v.parse().map_err(|e| format!("--now {v}: {e}"))?);
            }
            "-h" | "--help" => {
                println!(
                    "usage: startup_reconcile [--database-url URL] [--dry-run] [--reset-demo] [--json] [--now RFC3339]"
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

async fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let args = parse_args()?;
    // The runner's clock: the system's, or a frozen one for reproducible runs.
    let (clock, now): (Arc<dyn TimeSource>, DateTime<Utc>) = match args.now {
        Some(t) => (Arc::new(ManualClock::at(t)), t),
        None => (Arc::new(SystemClock), SystemClock.now()),
    };

    // 1. The host's database: the demo's tables (checked before anything is written, and
    // created only where they are absent), then recon's own tables from its migrations.
    let db = Db::connect(&args.url).await?;
    let created = args.reset || demo_tables::needs_creating(&db, &demo::TABLES, &[]).await?;
    db.migrate().await?;
    if created {
        demo::create(&db, now).await?;
        if !args.json {
            println!(
                "Created scenario A's tables in {} (now = {now}).\n",
                args.url
            );
        }
    }
    let jobs_table = JobTable::builder("processing_jobs")
        .next_run_at("next_run_at")
        .updated_at("updated_at")
        .build()?;
    let jobs = db.lease_store(jobs_table);
    jobs.verify().await?;

    // 2. The three steps of seed 001, in order.
    let mut settings = Settings::new(retry_policy::presets::startup_jobs());
    settings.states.orphaned_to = "retry".into();
    let lease_repair = LeaseRepair::new(jobs, settings)?;

    let sessions = TableMapping::builder("user_sessions", "phone", KeyType::Text)
        .column("contact_status", ColumnType::Text)
        .column("follow_up_attempts", ColumnType::Integer)
        .column("cooldown_until", ColumnType::Timestamp)
        .column("last_activity", ColumnType::Timestamp)
        .build()?;
    let orders = TableMapping::builder("orders", "id", KeyType::Integer)
        .column("processing_status", ColumnType::Text)
        .build()?;
    let follow_up_queue = Arc::new(MemoryDerivedQueue::new()); // the bot's in-memory queue
    let rehydrate =
        RehydrateReconciler::builder("queue-rehydrate", Arc::new(db.source_store()), sessions)
            .maintenance(
                Maintenance::new(
                    "cooldowns_cleared",
                    Predicate::lt("cooldown_until", Operand::now()),
                )
                .set("cooldown_until", SetValue::Null)
                .set("follow_up_attempts", SetValue::Int(0)),
            )
            .candidates(
                Predicate::and([
                    Predicate::eq("contact_status", "ACTIVE"),
                    Predicate::or([
                        Predicate::is_null("cooldown_until"),
                        Predicate::lt("cooldown_until", Operand::now()),
                    ]),
                    Predicate::lt("follow_up_attempts", 3),
                    Predicate::within_days("last_activity", 365),
                ]),
                follow_up_queue.clone(),
            )
            .candidates_counter("follow_up_candidates")
            .count(NamedCount::new(
                "pending_orders",
                orders,
                Predicate::is_in("processing_status", ["pending", "processing"]),
            ))
            .build()?;

    let metrics = Metrics::new(&db)
        .count_by("job_status", "processing_jobs", "status")?
        .average("avg_job_duration_ms", "processing_jobs", "duration_ms")?
        .count_by("order_status", "orders", "processing_status")?
        .sum("revenue", "orders", "total_amount")?;

    let runner = Runner::builder("startup")
        .time_source(clock)
        .step(lease_repair)
        .step(rehydrate)
        .step(metrics)
        .step_timeout(Duration::from_secs(60))
        .run_timeout(Duration::from_secs(300))
        .run_log(Arc::new(db.run_log()))
        .lock(Arc::new(db.run_lock()), Duration::from_secs(600))
        .build()?;

    // 3. reconcile() — what the host calls from its init, before serving.
    let report = runner.run_with(RunOptions::dry_run(args.dry_run)).await;
    let status = runner.status().expect("a run happened");

    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", report.render_text());
        let repaired: u64 = [
            "leases_repaired",
            "jobs_requeued",
            "jobs_failed",
            "cooldowns_cleared",
        ]
        .iter()
        .map(|c| report.totals().get(c).unwrap_or(0))
        .sum();
        println!();
        if repaired == 0 && report.status == recon::RunStatus::Success {
            println!("Nothing to repair: the database was already consistent.");
        }
        if args.dry_run {
            let setup = match (args.reset, created) {
                (true, _) => "the demo tables (recreated by --reset-demo) and ",
                (false, true) => "the demo tables (they did not exist) and ",
                _ => "",
            };
            println!(
                "Dry run: the figures above are what a real run would change. No job, session \
                 or order was changed; the only writes were {setup}recon's own tables \
                 (migrations, run lock, this run's record in recon_runs)."
            );
        }
        if args.dry_run {
            println!(
                "Follow-up queue: {} user(s) would be queued (not rebuilt in a dry run).",
                report.totals().get("follow_up_candidates").unwrap_or(0)
            );
        } else {
            println!(
                "Follow-up queue rebuilt with {} user(s).",
                follow_up_queue.len()
            );
        }
        println!("\nStatus JSON (GET /v1/reconciliation/status):");
        println!("{}", serde_json::to_string_pretty(&status)?);
        if let Ok(Some(last)) = recon_core::RunLog::latest(&db.run_log(), "startup").await {
            println!("\nLogged in recon_runs as run {}.", last.id);
        }
    }
    db.close().await;
    Ok(match report.status {
        recon::RunStatus::Failed => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

/// Scenario A's tables and rows, placed relative to `now` (SCENARIOS.md uses
/// now = 2024-01-24 12:00: job 42's lease ended at 10:00, that is `now - 2h`).
mod demo {
    use super::*;

    enum Arg {
        Int(Option<i64>),
        Text(Option<&'static str>),
        Time(Option<DateTime<Utc>>),
        Money(f64),
    }

    /// Run one statement with `?` placeholders (numbered for PostgreSQL) and bound values.
    async fn exec(db: &Db, sql: &'static str, args: Vec<Arg>) -> Result<(), sqlx::Error> {
        macro_rules! go {
            ($pool:expr, $sql:expr) => {{
                let mut q = sqlx::query(sqlx::AssertSqlSafe($sql));
                for a in args {
                    q = match a {
                        Arg::Int(v) => q.bind(v),
                        Arg::Text(v) => q.bind(v),
                        // SQLite stores RFC 3339 text (what sqlx writes for DateTime<Utc>)
                        Arg::Time(v) => q.bind(v),
                        Arg::Money(v) => q.bind(v),
                    };
                }
                q.execute($pool).await.map(drop)
            }};
        }
        match db.dialect() {
            Dialect::Sqlite => go!(db.as_sqlite().unwrap(), sql.to_owned()),
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                let mut n = 0;
                let numbered: String = sql
                    .chars()
                    .flat_map(|c| {
                        if c == '?' {
                            n += 1;
                            format!("${n}").chars().collect::<Vec<_>>()
                        } else {
                            vec![c]
                        }
                    })
                    .collect();
                go!(db.as_postgres().unwrap(), numbered)
            }
            #[cfg(feature = "mysql")]
            Dialect::MySql => go!(db.as_mysql().unwrap(), sql.to_owned()),
            #[allow(unreachable_patterns)]
            d => panic!("{} support is not compiled in", d.name()),
        }
    }

    /// The demo's tables and the columns the example uses.
    pub(super) const TABLES: [demo_tables::Table; 3] = [
        (
            "processing_jobs",
            &[
                "id",
                "status",
                "locked_by",
                "locked_until",
                "attempts",
                "last_error",
                "next_run_at",
                "updated_at",
                "duration_ms",
            ],
        ),
        (
            "user_sessions",
            &[
                "phone",
                "contact_status",
                "follow_up_attempts",
                "cooldown_until",
                "last_activity",
            ],
        ),
        ("orders", &["id", "processing_status", "total_amount"]),
    ];

    /// Drop (only here: after [`demo_tables::needs_creating`], or on --reset-demo) and
    /// create the demo's tables, and record them as the demo's.
    pub(super) async fn create(
        db: &Db,
        now: DateTime<Utc>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (ts, text, key) = match db.dialect() {
            Dialect::Postgres => ("TIMESTAMPTZ", "TEXT", "VARCHAR(32)"),
            Dialect::MySql => ("DATETIME(6)", "VARCHAR(255)", "VARCHAR(32)"),
            _ => ("TEXT", "TEXT", "TEXT"),
        };
        demo_tables::replace(db, &TABLES, &[]).await?;
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        exec(
            db,
            leak(format!(
                "CREATE TABLE processing_jobs (id BIGINT PRIMARY KEY, status {text} NOT NULL, \
             locked_by {text}, locked_until {ts}, attempts INTEGER NOT NULL DEFAULT 0, \
             last_error {text}, next_run_at {ts}, updated_at {ts}, duration_ms BIGINT)"
            )),
            vec![],
        )
        .await?;
        exec(
            db,
            "CREATE INDEX processing_jobs_keyset ON processing_jobs (status, id)",
            vec![],
        )
        .await?;
        exec(db, leak(format!(
            "CREATE TABLE user_sessions (phone {key} PRIMARY KEY, contact_status {text} NOT NULL, \
             follow_up_attempts INTEGER NOT NULL, cooldown_until {ts}, last_activity {ts})"
        )), vec![]).await?;
        exec(
            db,
            leak(format!(
                "CREATE TABLE orders (id BIGINT PRIMARY KEY, processing_status {text} NOT NULL, \
             total_amount DECIMAL(10,2) NOT NULL)"
            )),
            vec![],
        )
        .await?;

        let h = |hours: i64| Some(now + chrono::Duration::hours(hours));
        let d = |days: i64| Some(now - chrono::Duration::days(days));
        use Arg::*;
        let job = "INSERT INTO processing_jobs (id, status, locked_by, locked_until, attempts, duration_ms) VALUES (?, ?, ?, ?, ?, ?)";
        for (id, status, owner, until, attempts, ms) in [
            (42, "processing", Some("worker-001"), h(-2), 1, None), // lease expired at 10:00
            (43, "processing", None, None, 2, None),                // orphaned
            (44, "pending", None, None, 0, None),
            (45, "processing", Some("worker-002"), h(1), 0, None), // live lease until 13:00
            (46, "processing", Some("worker-003"), h(-3), 3, None), // expired, attempts used up
            (47, "done", None, None, 1, Some(1200)),
            (48, "done", None, None, 1, Some(800)),
        ] {
            exec(
                db,
                job,
                vec![
                    Int(Some(id)),
                    Text(Some(status)),
                    Text(owner),
                    Time(until),
                    Int(Some(attempts)),
                    Int(ms),
                ],
            )
            .await?;
        }
        let session = "INSERT INTO user_sessions (phone, contact_status, follow_up_attempts, cooldown_until, last_activity) VALUES (?, ?, ?, ?, ?)";
        for (phone, status, attempts, cooldown, activity) in [
            ("+573001234567", "ACTIVE", 3, h(-1), d(1)), // cooldown expired at 11:00
            ("+573007654321", "ACTIVE", 1, None, d(2)),
            ("+573000000001", "ACTIVE", 1, h(6), d(1)), // cooling down until 18:00
            ("+573000000002", "INACTIVE", 0, None, d(1)),
            ("+573000000003", "ACTIVE", 0, None, d(400)), // stale
        ] {
            exec(
                db,
                session,
                vec![
                    Text(Some(phone)),
                    Text(Some(status)),
                    Int(Some(attempts)),
                    Time(cooldown),
                    Time(activity),
                ],
            )
            .await?;
        }
        let order = "INSERT INTO orders (id, processing_status, total_amount) VALUES (?, ?, ?)";
        for (id, status, amount) in [
            (1, "pending", 25.50),
            (2, "pending", 12.00),
            (3, "processing", 99.90),
            (4, "completed", 40.00),
            (5, "completed", 15.25),
            (6, "cancelled", 8.00),
        ] {
            exec(
                db,
                order,
                vec![Int(Some(id)), Text(Some(status)), Money(amount)],
            )
            .await?;
        }
        Ok(())
    }
}
