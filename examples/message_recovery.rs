//! Scenario D: a message queue that loses nothing. The sender server crashed with messages in
//! `processing`; on start they go back to `pending` (released from their sender session),
//! failed messages older than 30 days are archived (never deleted), and the queue health is
//! reported. Then an operator lists, retries and removes failed messages.
//!
//! ```sh
//! cargo run --example message_recovery                       # creates recon-messages.sqlite
//! cargo run --example message_recovery -- --json             # only the status JSON
//! cargo run --example message_recovery -- --reset-demo       # put the crashed state back
//! ```
//!
//! Flags: `--database-url URL` (default `sqlite:recon-messages.sqlite`), `--reset-demo`,
//! `--json`, `--now RFC3339` (a frozen clock for reproducible runs).
//!
//! The demo's `messages` table is created only if it does not exist, and recorded in
//! `recon_demo_tables`. If a `messages` table exists that this demo did not create, or that
//! lacks a column, the example prints one `error:` line and stops without touching it; only
//! `--reset-demo` drops and recreates it.

use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use queue_rehydrate::{
    Key, MessageAdmin, MessageRecovery, RecoverySettings, Removal, SendFailure, after_failed_send,
    queue_health,
};
use recon::Runner;
use recon_core::{Clock, ManualClock, SystemClock, TimeSource};
use retry_policy::{Attempt, Decision, presets};
use store_sqlx::{Db, Dialect, MessageTable};

#[path = "common/demo_tables.rs"]
mod demo_tables;

#[derive(Default)]
struct Args {
    url: String,
    reset: bool,
    json: bool,
    now: Option<DateTime<Utc>>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "sqlite:recon-messages.sqlite".into(),
        ..Args::default()
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
            "-h" | "--help" => {
                println!(
                    "usage: message_recovery [--database-url URL] [--reset-demo] [--json] [--now RFC3339]"
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
    let (clock, now): (Arc<dyn TimeSource>, DateTime<Utc>) = match args.now {
        Some(t) => (Arc::new(ManualClock::at(t)), t),
        None => (Arc::new(SystemClock), SystemClock.now()),
    };
    let db = Db::connect(&args.url).await?;
    // the demo's table is checked before anything is written, and created only if absent
    let create = args.reset || demo_tables::needs_creating(&db, &[demo::TABLE], &[]).await?;
    db.migrate().await?;
    if create {
        demo::create(&db, now).await?;
    }
    let map = MessageTable::builder("messages").build()?;
    let store = Arc::new(db.message_store(map));
    store.verify().await?;

    // 1. Startup: release stuck messages, archive old failures, report the queue's health.
    let recovery = MessageRecovery::new("message-recovery", store.clone())
        .with_settings(RecoverySettings::new().archive_after_days(Some(30)))?;
    let runner = Runner::builder("sender-startup")
        .time_source(clock)
        .step(recovery)
        .run_log(Arc::new(db.run_log()))
        .build()?;
    let report = runner.run().await;
    let status = runner.status().expect("a run happened");
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        db.close().await;
        return Ok(exit(&report));
    }
    print!("{}", report.render_text());
    if let Some(level) = report
        .step("message-recovery")
        .and_then(|s| s.report.details().get("queue_health"))
        .and_then(|h| h.get("overall"))
    {
        println!("     queue health: {level}");
    }

    // 2. A send that keeps failing: the retry schedule of seed 004, from retry-policy.
    let policy = presets::message_delivery();
    println!("\nA message that fails every send (retry-policy's message_delivery preset):");
    let mut msg = queue_rehydrate::Message::pending(Key::Int(900));
    let mut at = now;
    loop {
        match after_failed_send(&msg, at, &policy) {
            SendFailure::RetryAt {
                attempts,
                next_attempt_at,
            } => {
                println!(
                    "  send {attempts} failed at +{:>3} min -> retry at +{:>3} min",
                    (at - now).num_minutes(),
                    (next_attempt_at - now).num_minutes()
                );
                msg.attempts = attempts;
                at = next_attempt_at;
            }
            SendFailure::Failed { attempts, .. } => {
                println!(
                    "  send {attempts} failed at +{} min ({}h{:02}m after the first) -> failed, kept for an operator",
                    (at - now).num_minutes(),
                    (at - now).num_hours(),
                    (at - now).num_minutes() % 60
                );
                break;
            }
        }
    }

    // 3. The operator's view of failed messages.
    let admin = MessageAdmin::new(store.clone()).archive_on_delete(true);
    let failed = admin.list_failed(None, 50).await?;
    println!("\nFailed messages an operator can act on: {}", failed.len());
    for m in &failed {
        println!(
            "  #{} after {} attempts: {}",
            m.id,
            m.attempts,
            m.last_error.as_deref().unwrap_or("-")
        );
    }
    if let Some(first) = failed.first() {
        let retried = admin.retry(&first.id, now).await?;
        println!(
            "  retry #{} -> {}",
            first.id,
            if retried {
                "pending again"
            } else {
                "not failed any more"
            }
        );
    }
    if let Some(second) = failed.get(1) {
        let removed = admin.delete(&second.id, now).await?;
        println!(
            "  delete #{} -> {}",
            second.id,
            match removed {
                Removal::Archived => "archived (kept, never silently deleted)",
                Removal::Deleted => "deleted",
                _ => "not failed any more",
            }
        );
    }
    let all = admin.retry_all(now).await?;
    println!("  retry all -> {all} more message(s) pending again");
    let health = queue_health(store.as_ref(), &Default::default()).await?;
    println!(
        "\nQueue now: pending {}, processing {}, sent {}, failed {}, archived {} -> {}",
        health.counts.pending,
        health.counts.processing,
        health.counts.sent,
        health.counts.failed,
        health.counts.archived,
        health.overall
    );

    // 4. Session reconnection (seed 004): linear 1-5 minutes, then an operator.
    let reconnect = presets::reconnect();
    print!("\nSender session reconnection: waits");
    for n in 1.. {
        match reconnect.decide(&Attempt::new("session-1", n, now)) {
            Decision::RetryAt(t) => print!(" {} min", (t - now).num_minutes()),
            Decision::GiveUp(_) => {
                println!(", then needs an operator.");
                break;
            }
        }
    }
    println!("\nStatus JSON:\n{}", serde_json::to_string_pretty(&status)?);
    db.close().await;
    Ok(exit(&report))
}

fn exit(report: &recon::RunReport) -> ExitCode {
    match report.status {
        recon::RunStatus::Failed => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

/// Scenario D's messages, placed relative to `now`.
mod demo {
    use super::*;

    /// id, status, session, attempts, time (claimed or failed), last error
    type DemoRow = (
        i64,
        &'static str,
        Option<&'static str>,
        i64,
        Option<DateTime<Utc>>,
        Option<&'static str>,
    );

    /// The demo's table and the columns the example uses.
    pub(super) const TABLE: demo_tables::Table = (
        "messages",
        &[
            "id",
            "status",
            "session",
            "attempts",
            "last_attempt_at",
            "next_attempt_at",
            "failed_at",
            "last_error",
        ],
    );

    /// Drop (only here: after [`demo_tables::needs_creating`], or on --reset-demo) and
    /// create the demo's table, and record it as the demo's.
    pub(super) async fn create(
        db: &Db,
        now: DateTime<Utc>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (ts, text) = match db.dialect() {
            Dialect::Postgres => ("TIMESTAMPTZ", "TEXT"),
            Dialect::MySql => ("DATETIME(6)", "VARCHAR(255)"),
            _ => ("TEXT", "TEXT"),
        };
        demo_tables::replace(db, &[TABLE], &[]).await?;
        let ddl = [
            format!(
                "CREATE TABLE messages (id BIGINT PRIMARY KEY, status {text} NOT NULL, session {text}, \
                 attempts INTEGER NOT NULL DEFAULT 0, last_attempt_at {ts}, next_attempt_at {ts}, \
                 failed_at {ts}, last_error {text})"
            ),
            "CREATE INDEX messages_status ON messages (status, id)".to_owned(),
        ];
        for sql in ddl {
            exec(db, sql, vec![]).await?;
        }
        let m = |mins: i64| Some(now - Duration::minutes(mins));
        let d = |days: i64| Some(now - Duration::days(days));
        let rows: Vec<DemoRow> = vec![
            (1, "processing", Some("wa-session-1"), 0, m(12), None), // stuck by the crash
            (2, "processing", Some("wa-session-1"), 1, m(11), None),
            (3, "processing", Some("wa-session-2"), 0, m(10), None),
            (4, "pending", None, 0, None, None),
            (5, "pending", None, 2, None, None),
            (6, "sent", None, 1, None, None),
            (7, "sent", None, 1, None, None),
            (8, "sent", None, 3, None, None),
            (
                9,
                "failed",
                None,
                6,
                d(45),
                Some("number is not on WhatsApp"),
            ), // old: archived
            (10, "failed", None, 6, d(2), Some("session logged out")),
            (11, "failed", None, 6, d(1), Some("rate limited")),
            (12, "failed", None, 6, m(30), Some("media upload timed out")),
        ];
        for (id, status, session, attempts, at, error) in rows {
            let failed_at = if status == "failed" { at } else { None };
            let last_attempt = if status == "processing" { at } else { None };
            exec(
                db,
                "INSERT INTO messages (id, status, session, attempts, last_attempt_at, failed_at, last_error) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)"
                    .to_owned(),
                vec![
                    Arg::Int(id),
                    Arg::Text(Some(status.to_owned())),
                    Arg::Text(session.map(str::to_owned)),
                    Arg::Int(attempts),
                    Arg::Time(last_attempt),
                    Arg::Time(failed_at),
                    Arg::Text(error.map(str::to_owned)),
                ],
            )
            .await?;
        }
        Ok(())
    }

    enum Arg {
        Int(i64),
        Text(Option<String>),
        Time(Option<DateTime<Utc>>),
    }

    /// One statement with `?` placeholders (numbered for PostgreSQL) and bound values.
    async fn exec(db: &Db, sql: String, args: Vec<Arg>) -> Result<(), sqlx::Error> {
        macro_rules! go {
            ($pool:expr, $sql:expr) => {{
                let mut q = sqlx::query(sqlx::AssertSqlSafe($sql));
                for a in args {
                    q = match a {
                        Arg::Int(v) => q.bind(v),
                        Arg::Text(v) => q.bind(v),
                        Arg::Time(v) => q.bind(v),
                    };
                }
                q.execute($pool).await.map(drop)
            }};
        }
        match db.dialect() {
            Dialect::Sqlite => go!(db.as_sqlite().unwrap(), sql),
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                let mut n = 0;
                let numbered = sql
                    .split('?')
                    .enumerate()
                    .map(|(i, part)| {
                        if i == 0 {
                            part.to_owned()
                        } else {
                            n += 1;
                            format!("${n}{part}")
                        }
                    })
                    .collect::<String>();
                go!(db.as_postgres().unwrap(), numbered)
            }
            #[cfg(feature = "mysql")]
            Dialect::MySql => go!(db.as_mysql().unwrap(), sql),
            #[allow(unreachable_patterns)]
            d => panic!("{} support is not compiled in", d.name()),
        }
    }
}
