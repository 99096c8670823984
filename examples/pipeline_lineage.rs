//! Scenario C (seed 003): a pipeline moves 10,000 support cases from a staging copy of
//! Salesforce through `extracted → pii_removed → embedding_generated → loaded`, and some fell out
//! on the way. The reconciliation counts every stage against the source (the gap table), groups
//! the failed records by error type, replays the due ones with each stage's retry policy (PII
//! removal 1 s, 2 s, 4 s; embeddings on ChatHPE, then the Nomic fallback; the vector-store load
//! 2 s, 4 s, 8 s), hands what cannot be repaired to people, and checks coverage and alerts. Then
//! day 2's extraction shows fingerprints at work: 50 of 10,000 cases changed → 50 updated,
//! 9,950 unchanged.
//!
//! ```sh
//! cargo run --example pipeline_lineage                      # creates recon-pipeline.sqlite
//! cargo run --example pipeline_lineage                      # again: nothing left to recover
//! cargo run --example pipeline_lineage -- --reset-demo      # put day 1's state back
//! cargo run --example pipeline_lineage -- --json            # only the JSON
//! cargo run --example pipeline_lineage --features postgres -- \
//!     --database-url postgres://root@127.0.0.1:5432/test
//! ```
//!
//! Flags: `--database-url URL` (default `sqlite:recon-pipeline.sqlite`), `--reset-demo`,
//! `--json`, `--now RFC3339` (a frozen clock for reproducible runs, to the second).
//!
//! The demo's staging table `sfdc_cases` is created only if it does not exist, and recorded in
//! `recon_demo_tables`. If an `sfdc_cases` exists that this demo did not create, or that lacks
//! a column, or recon's tables already hold the demo's pipeline or fingerprint namespace while
//! `sfdc_cases` does not exist, the example prints one `error:` line and stops without
//! touching anything; only `--reset-demo` drops and recreates it.
//!
//! **No waiting.** Seed 003 retries PII removal after 1 s, 2 s, 4 s and the load after 2 s,
//! 4 s, 8 s. A host keeps `RecoverySettings::inline_retry_limit` at its default (10 s) and one
//! run sleeps those seconds in place. Here the run's clock is a `ManualClock` and the inline
//! limit is zero, so every retry is stored as the record's `next_attempt_at`; the example then
//! starts the next recovery run with the clock set to the earliest stored `next_attempt_at`
//! (retries due within a minute; later ones wait for the next scheduled run). The records are
//! replayed at exactly the times the policies chose — the timeline shows them — without the
//! example sleeping. (ChatHPE is tried once per replay before Nomic for the same reason:
//! `StageRecovery::primary_retries` would sleep inside each replay.)
//!
//! The outside world (the PII scrubber, ChatHPE, Nomic, the vector store) is simulated: which
//! case fails how is fixed by its case number, so every run on every backend gives the same
//! figures. Everything else is the library on the real database: `SqlFingerprintStore`,
//! `SqlLineageStore`, `SqlFailedRecordStore`, the run log, and the `Runner`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use lineage_checksum::quality::{percent, thousands};
use lineage_checksum::{
    AuditReconciler, AuditSummary, Classifier, DelaySchedule, FailedRecord, FailedRecordStore,
    FailureState, GapReport, LineageStatus, LineageTracker, LineageUpdate, ListQuery,
    PipelineReport, QualityRules, RecoveryReconciler, RecoverySettings, RecoverySummary, Replay,
    ReplayError, Schema, Severity, SourceCount, StageHandler, StageRecovery, Stages,
};
use recon::{RunContext, RunReport, RunStatus, Runner, async_trait};
use recon_core::{Clock, ManualClock, RunLog, SystemClock};
use retry_policy::presets;
use store_sqlx::Db;

#[path = "common/demo_tables.rs"]
mod demo_tables;

/// The pipeline's name in `recon_lineage` and `recon_failed_records`.
const PIPELINE: &str = "cases";
/// The fingerprint namespace (and fingerprint domain) of a case.
const NAMESPACE: &str = "case";
const STAGES: [&str; 4] = ["extracted", "pii_removed", "embedding_generated", "loaded"];
/// Retries due within this long after the run's start belong to this reconciliation (seed
/// 003's in-run waits are at most 8 s apart); later ones wait for the next scheduled run.
const IN_RUN_HORIZON_SECS: i64 = 60;
/// Source rows read and classified per page (keyset pages, one fingerprint lookup each).
const PAGE: usize = 5_000;

#[derive(Default)]
struct Args {
    url: String,
    reset: bool,
    json: bool,
    now: Option<DateTime<Utc>>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "sqlite:recon-pipeline.sqlite".into(),
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
                    "usage: pipeline_lineage [--database-url URL] [--reset-demo] [--json] [--now RFC3339]\n\n\
                     Scenario C: gap table, failed-record recovery with retry policies and a fallback\n\
                     provider, coverage and alerts, and day 2's fingerprint classification.\n\
                     Default database: sqlite:recon-pipeline.sqlite (created with the demo data).\n\
                     --reset-demo puts day 1's state back; --json prints only the JSON;\n\
                     --now freezes the clock (the demo data is placed relative to it)."
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

/// The fingerprinted key fields of a case (seed 003).
fn case_schema() -> lineage_checksum::Result<Schema> {
    Schema::new(
        NAMESPACE,
        [
            "id",
            "last_modified",
            "subject",
            "description",
            "resolution",
            "status",
        ],
    )
}

async fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let now = args
        .now
        .unwrap_or_else(|| SystemClock.now())
        .trunc_subsecs(0);
    // Always a manual clock: recovery runs jump to the next due time instead of sleeping.
    let clock = ManualClock::at(now);

    let db = Db::connect(&args.url).await?;
    // the demo's table is checked before anything is written, and created only if absent
    let create =
        args.reset || demo_tables::needs_creating(&db, &[demo::TABLE], &demo::RECON_ROWS).await?;
    db.migrate().await?;
    let failures: Arc<dyn FailedRecordStore> = Arc::new(db.failed_records());
    let runs: Arc<dyn RunLog> = Arc::new(db.run_log());
    let stages = Stages::new(STAGES)?;
    let tracker = LineageTracker::new(Arc::new(db.lineage()), PIPELINE, stages.clone())?;
    let classifier = Classifier::new(Arc::new(db.fingerprints()), NAMESPACE)?;
    let schema = case_schema()?;

    if create {
        let created = demo::create(&db, &schema, &classifier, &tracker, &*failures, now).await?;
        if !args.json {
            println!(
                "Created scenario C in {} (now = {now}): {} source cases, day 1 fingerprinted \
                 them ({} created), {} tracked in the lineage, {} failed records logged.\n",
                args.url,
                thousands(demo::SOURCE),
                thousands(created),
                thousands(demo::TRACKED),
                demo::FAILED,
            );
        }
    }

    // The host's stage code that recovery replays, and each stage's policy (seed 003).
    let pipeline = Arc::new(Pipeline::default());
    let make_recovery = || -> lineage_checksum::Result<RecoveryReconciler> {
        let pii = StageRecovery::new(pipeline.clone(), Arc::new(presets::api_call()));
        // ChatHPE, then Nomic; when both fail, the next scheduled run (6 h) tries again, three
        // times at most; a permanent error goes to people at once.
        let next_run = DelaySchedule::new([Duration::from_secs(6 * 3600)], 3)?;
        let embedding =
            StageRecovery::new(pipeline.clone(), Arc::new(next_run)).with_fallbacks(["nomic"])?;
        let load = StageRecovery::new(pipeline.clone(), Arc::new(presets::vector_store_load()));
        // With the lineage: a recovered record reached its stage; one that failed again stays
        // `failed` at the stage before (gap analysis never counts it as having reached it).
        RecoveryReconciler::new(PIPELINE, stages.clone(), failures.clone())?
            .stage("pii_removed", pii)?
            .stage("embedding_generated", embedding)?
            .stage("loaded", load)?
            .with_lineage(tracker.store().clone())
            .with_settings(RecoverySettings::new().inline_retry_limit(Duration::ZERO))
    };
    let audit = AuditReconciler::new(
        PIPELINE,
        stages.clone(),
        tracker.store().clone(),
        QualityRules::seed_003(),
    )?
    .with_source(Arc::new(SourceCases(db.clone())))
    .with_failures(failures.clone());

    // 1. The reconciliation: audit (gap table, failures by type, coverage, alerts) as found,
    //    then recovery of what is due now.
    let reconciliation = Runner::builder("pipeline-reconciliation")
        .time_source(Arc::new(clock.clone()))
        .step(audit)
        .step(make_recovery()?)
        .run_log(runs.clone())
        .build()?;
    let mut reports = vec![reconciliation.run().await];
    let mut statuses = vec![reconciliation.status().map(|s| s.to_json())];

    // 2. Later retries of this reconciliation, each at the earliest stored next_attempt_at.
    let retries = Runner::builder("pipeline-recovery")
        .time_source(Arc::new(clock.clone()))
        .step(make_recovery()?)
        .run_log(runs.clone())
        .build()?;
    let horizon = now + chrono::Duration::seconds(IN_RUN_HORIZON_SECS);
    while reports.iter().all(|r| r.status != RunStatus::Failed) && reports.len() < 100 {
        let Some(next) = next_due(&*failures, clock.now(), horizon).await? else {
            break;
        };
        clock.set(next);
        reports.push(retries.run().await);
        statuses.push(retries.status().map(|s| s.to_json()));
    }

    let source = demo::source_count(&db).await?;
    let after = tracker.gaps(source).await?;
    let manual = list_failed(&*failures, FailureState::ManualReview, 20).await?;

    // 3. Day 2: the source changed 50 cases; fingerprints decide what is processed again.
    demo::change_day_two(&db).await?;
    let day2 = demo::extract(&db, &schema, &classifier, "day-2", now).await?;

    // The seed-003 report: the audit as found, and recovery over all runs of this reconciliation.
    let first = PipelineReport::from_run_report(&reports[0]);
    let recovery = combine(&reports);
    let report =
        PipelineReport::new(now, first.audit.clone(), Some(recovery.clone())).with_noun("cases");
    let status = reports
        .iter()
        .map(|r| r.status)
        .max_by_key(|s| match s {
            RunStatus::Success => 0,
            RunStatus::Skipped => 1,
            RunStatus::Partial => 2,
            RunStatus::Failed => 3,
        })
        .unwrap_or(RunStatus::Failed);
    let json = output_json(
        status, now, &report, &recovery, &reports, statuses, &after, &day2,
    );

    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_summary(&report, &recovery, &reports);
        print_details(&report, &reports, &pipeline, &manual, &after, &day2, now);
        println!("\n{}", report.render_text());
        println!("JSON (`--json` prints only this):");
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    db.close().await;
    Ok(if status == RunStatus::Failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

// ---------------------------------------------------------------------------------------------
// The host's side: source count, stage replays, lineage progress
// ---------------------------------------------------------------------------------------------

/// `SELECT COUNT(*)` on the staging table.
struct SourceCases(Db);

#[async_trait]
impl SourceCount for SourceCases {
    async fn source_count(&self, _: &RunContext) -> lineage_checksum::Result<u64> {
        demo::source_count(&self.0).await.map_err(|e| {
            if store_sqlx::is_transient_sqlx(&e) {
                lineage_checksum::Error::transient("count the source cases", e)
            } else {
                lineage_checksum::Error::permanent("count the source cases", e)
            }
        })
    }
}

/// One call of a stage's service during recovery.
struct Call {
    at: DateTime<Utc>,
    stage: String,
    provider: String,
    ok: bool,
}

/// The pipeline's stage code as recovery replays it (the recovery step records in the lineage
/// which stage a replayed record reached).
#[derive(Default)]
struct Pipeline {
    calls: Mutex<Vec<Call>>,
}

impl Pipeline {
    /// (stage, provider) → (calls, successes) of the run at `at`.
    fn calls_at(&self, at: DateTime<Utc>) -> BTreeMap<(usize, String), (u64, u64)> {
        let mut out = BTreeMap::new();
        for c in self
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            if c.at == at {
                let stage = STAGES.iter().position(|s| *s == c.stage).unwrap_or(0);
                let e: &mut (u64, u64) = out.entry((stage, c.provider.clone())).or_default();
                e.0 += 1;
                e.1 += u64::from(c.ok);
            }
        }
        out
    }
}

#[async_trait]
impl StageHandler for Pipeline {
    async fn replay(&self, ctx: &RunContext, r: &Replay) -> Result<(), ReplayError> {
        let provider = r
            .provider
            .clone()
            .unwrap_or_else(|| demo::primary_provider(&r.stage).to_owned());
        let result = demo::call_service(&r.key, &r.stage, r.provider.as_deref(), r.attempt);
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Call {
                at: ctx.now(),
                stage: r.stage.clone(),
                provider,
                ok: result.is_ok(),
            });
        result
    }
}

/// The earliest `next_attempt_at` of an open failed record, if it is after `after` and not
/// after `until` (keyset pages over the open records).
async fn next_due(
    failures: &dyn FailedRecordStore,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> lineage_checksum::Result<Option<DateTime<Utc>>> {
    let open = list_failed(failures, FailureState::Open, usize::MAX).await?;
    Ok(open
        .iter()
        .filter_map(|r| r.next_attempt_at)
        .filter(|t| *t > after && *t <= until)
        .min())
}

/// The first `max` failed records in `state`, in keyset pages of at most 1,000.
async fn list_failed(
    failures: &dyn FailedRecordStore,
    state: FailureState,
    max: usize,
) -> lineage_checksum::Result<Vec<FailedRecord>> {
    let mut all = Vec::new();
    let mut after = None;
    while all.len() < max {
        let limit = (max - all.len()).min(1_000);
        let page = failures
            .list(
                PIPELINE,
                &ListQuery {
                    state: Some(state),
                    after: after.take(),
                    limit,
                },
            )
            .await?;
        after = page.last().map(FailedRecord::id);
        let done = page.len() < limit;
        all.extend(page);
        if done {
            break;
        }
    }
    Ok(all)
}

/// Recovery over every run of this reconciliation: what was due at the start, what was
/// recovered (by method) or handed to people in any run, and what is still unresolved after
/// the last run (still open = rescheduled for a later scheduled run).
fn combine(reports: &[RunReport]) -> RecoverySummary {
    let mut all = RecoverySummary::default();
    for (i, run) in reports.iter().enumerate() {
        let Some(r) = PipelineReport::from_run_report(run).recovery else {
            continue;
        };
        if i == 0 {
            all.due = r.due;
        }
        all.recovered += r.recovered;
        for (method, n) in r.recovered_by_method {
            *all.recovered_by_method.entry(method).or_default() += n;
        }
        all.manual_review += r.manual_review;
        all.unhandled += r.unhandled;
        all.conflicts += r.conflicts;
        all.still_failed_by_error_type = r.still_failed_by_error_type;
    }
    all.rescheduled = all.still_failed_by_error_type.iter().map(|c| c.open).sum();
    all
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

fn offset(at: DateTime<Utc>, from: DateTime<Utc>) -> String {
    format!("+{} s", (at - from).num_seconds())
}

/// What a person wants first: the gap table, what recovery did, the alerts.
fn print_summary(report: &PipelineReport, recovery: &RecoverySummary, reports: &[RunReport]) {
    if let Some(a) = &report.audit {
        print_gap_table(
            &format!("Gap table ({})", report.run_at.format("%Y-%m-%d %H:%M UTC")),
            &a.gaps,
        );
    } else {
        println!(
            "The audit did not run: {}",
            reports[0].all_errors().join("; ")
        );
    }
    let by = |m: &str| recovery.recovered_by_method.get(m).copied().unwrap_or(0);
    let fallback: u64 = recovery
        .recovered_by_method
        .iter()
        .filter(|(m, _)| m.starts_with("fallback:"))
        .map(|(_, n)| n)
        .sum();
    let still: u64 = recovery.still_failed();
    let people: u64 = recovery
        .still_failed_by_error_type
        .iter()
        .map(|c| c.manual_review)
        .sum();
    let runs = plural(reports.len() as u64, "run", "runs");
    let waiting = if recovery.rescheduled > 0 {
        format!(
            ", {} wait for the next run",
            thousands(recovery.rescheduled)
        )
    } else {
        String::new()
    };
    if recovery.due == 0 {
        println!(
            "\nRecovery: nothing was due ({} {runs}); {} still failed, {} need manual review{waiting}.",
            reports.len(),
            thousands(still),
            thousands(people),
        );
    } else {
        println!(
            "\nRecovery: {} of {} due failed records recovered ({} by retry, {} with the nomic \
             fallback) in {} {runs}; {} still failed, {} need manual review{waiting}.",
            thousands(recovery.recovered),
            thousands(recovery.due),
            thousands(by("retry")),
            thousands(fallback),
            reports.len(),
            thousands(still),
            thousands(people),
        );
    }
    if let Some(a) = &report.audit {
        println!("\nAlerts:");
        if a.alerts.is_empty() {
            println!("  none");
        }
        for al in &a.alerts {
            println!("  [{}] {}", al.severity, al.message);
        }
        let rules = QualityRules::seed_003();
        let codes: Vec<&str> = a.alerts.iter().map(|al| al.code.as_str()).collect();
        let mut quiet = Vec::new();
        if !codes.contains(&"failure_rate") {
            quiet.push(format!(
                "failure rate {} (critical above {})",
                percent(a.gaps.failure_rate()),
                percent(rules.max_failure_rate)
            ));
        }
        if !codes.contains(&"gap") {
            quiet.push(format!(
                "total gap {} (high above {})",
                thousands(a.gaps.total_gap),
                thousands(rules.max_gap)
            ));
        }
        if !quiet.is_empty() {
            println!("  checked, not raised: {}", quiet.join("; "));
        }
    }
}

fn print_gap_table(title: &str, g: &GapReport) {
    println!("{title}:");
    println!(
        "  {:<22} {:>9} {:>9} {:>6}",
        "stage", "expected", "reached", "gap"
    );
    println!("  {:<22} {:>9}", "source", thousands(g.source_count));
    for (i, s) in g.stages.iter().enumerate() {
        let name = if i == 0 {
            format!("{} (tracked)", s.stage)
        } else {
            s.stage.clone()
        };
        // The gap of a stage is the records still at the stage before it.
        let why = if i == 0 {
            (s.gap > 0).then(|| "never tracked".to_owned())
        } else {
            let prev = &g.stages[i - 1];
            let mut parts = Vec::new();
            if prev.failed_here > 0 {
                parts.push(format!("{} failed", thousands(prev.failed_here)));
            }
            if prev.in_progress_here > 0 {
                parts.push(format!("{} in progress", thousands(prev.in_progress_here)));
            }
            (!parts.is_empty() && s.gap > 0).then(|| parts.join(", "))
        };
        println!(
            "  {:<22} {:>9} {:>9} {:>6}{}",
            name,
            thousands(s.expected),
            thousands(s.reached),
            thousands(s.gap),
            why.map(|w| format!("  ({w})")).unwrap_or_default()
        );
    }
    println!(
        "  {:<22} {:>9} {:>9} {:>6}",
        "total gap",
        "",
        "",
        thousands(g.total_gap)
    );
}

fn print_details(
    report: &PipelineReport,
    reports: &[RunReport],
    pipeline: &Pipeline,
    manual: &[FailedRecord],
    after: &GapReport,
    day2: &demo::DayRun,
    now: DateTime<Utc>,
) {
    if let Some(a) = &report.audit {
        println!("\nFailed records by error type, as found:");
        let mut types: Vec<_> = a.failures_by_error_type.iter().collect();
        types.sort_by(|x, y| {
            (y.open + y.manual_review)
                .cmp(&(x.open + x.manual_review))
                .then(x.error_type.cmp(&y.error_type))
        });
        for c in types {
            println!(
                "  {:>5}  {}",
                thousands(c.open + c.manual_review),
                c.error_type
            );
        }
    }

    println!(
        "\nRecovery runs (frozen clock: each run starts at the earliest stored next_attempt_at):"
    );
    for r in reports {
        let at = r.started_at;
        println!(
            "  {:>6}  {:<24} due {:>2}  recovered {:>2}  rescheduled {:>2}  manual review {}",
            offset(at, now),
            r.runner,
            r.count(lineage_checksum::recovery::counters::DUE),
            r.count(lineage_checksum::recovery::counters::RECOVERED),
            r.count(lineage_checksum::recovery::counters::RESCHEDULED),
            r.count(lineage_checksum::recovery::counters::MANUAL_REVIEW),
        );
        let calls = pipeline.calls_at(at);
        let mut by_stage: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for ((stage, provider), (n, ok)) in calls {
            by_stage.entry(stage).or_default().push(format!(
                "{provider} {n} {}, {ok} ok",
                plural(n, "call", "calls")
            ));
        }
        for (stage, parts) in by_stage {
            println!("          {:<20} {}", STAGES[stage], parts.join("; "));
        }
    }
    println!(
        "  policies: pii_removed api_call (+1 s, +2 s, +4 s), embedding_generated chathpe then \
         nomic (next run in 6 h), loaded vector_store_load (+2 s, +4 s, +8 s)"
    );

    let people: u64 = report.recovery.as_ref().map_or(0, |r| {
        r.still_failed_by_error_type
            .iter()
            .map(|c| c.manual_review)
            .sum()
    });
    println!("\nFor people (manual review): {}", thousands(people));
    for r in manual {
        println!(
            "  {}  {:<20} {:<22} {} {}: {}",
            r.key,
            r.stage,
            r.error_type,
            r.attempts,
            plural(u64::from(r.attempts), "attempt", "attempts"),
            r.message
        );
    }
    if people > manual.len() as u64 {
        println!("  … and {} more", thousands(people - manual.len() as u64));
    }

    let in_progress: u64 = after.stages.iter().map(|s| s.in_progress_here).sum();
    println!(
        "\nAfter recovery: {} of {} cases loaded (total gap {}): {} back in the pipeline at the \
         stage they reached, {} failed, {} never tracked.",
        thousands(after.stages.last().map_or(0, |s| s.reached)),
        thousands(after.source_count),
        thousands(after.total_gap),
        thousands(in_progress),
        thousands(after.failed),
        thousands(after.source_count.saturating_sub(after.tracked)),
    );

    let again = day2.created + day2.updated;
    println!(
        "\nDay 2 (fingerprints): read {} source cases → created {}, updated {}, unchanged {}; {}.",
        thousands(day2.read),
        thousands(day2.created),
        thousands(day2.updated),
        thousands(day2.unchanged),
        if again == 0 {
            "nothing to embed again".to_owned()
        } else {
            format!(
                "only those {} go through PII removal and embedding again",
                thousands(again)
            )
        }
    );
}

#[allow(clippy::too_many_arguments)]
fn output_json(
    status: RunStatus,
    now: DateTime<Utc>,
    report: &PipelineReport,
    recovery: &RecoverySummary,
    reports: &[RunReport],
    statuses: Vec<Option<serde_json::Value>>,
    after: &GapReport,
    day2: &demo::DayRun,
) -> serde_json::Value {
    let audit: Option<&AuditSummary> = report.audit.as_ref();
    let g = audit.map(|a| &a.gaps);
    let count = |severity: Severity| {
        audit.map_or(0, |a| {
            a.alerts.iter().filter(|al| al.severity == severity).count() as u64
        })
    };
    let fallback: u64 = recovery
        .recovered_by_method
        .iter()
        .filter(|(m, _)| m.starts_with("fallback:"))
        .map(|(_, n)| n)
        .sum();
    let errors: Vec<String> = reports.iter().flat_map(RunReport::all_errors).collect();
    serde_json::json!({
        "status": status,
        "timestamp": now.to_rfc3339_opts(SecondsFormat::Millis, true),
        "results": {
            "sourceCount": g.map_or(0, |g| g.source_count),
            "tracked": g.map_or(0, |g| g.tracked),
            "loaded": g.and_then(|g| g.stages.last()).map_or(0, |s| s.reached),
            "totalGap": g.map_or(0, |g| g.total_gap),
            "failedLineage": g.map_or(0, |g| g.failed),
            "failedRecords": audit.map_or(0, |a| a.failures_by_error_type.iter().map(|c| c.open + c.manual_review).sum::<u64>()),
            "due": recovery.due,
            "recovered": recovery.recovered,
            "recoveredByRetry": recovery.recovered_by_method.get("retry").copied().unwrap_or(0),
            "recoveredByFallback": fallback,
            "movedToManualReview": recovery.manual_review,
            "stillFailed": recovery.still_failed(),
            "needManualReview": recovery.still_failed_by_error_type.iter().map(|c| c.manual_review).sum::<u64>(),
            "waitingForNextRun": recovery.rescheduled,
            "belowMinFields": audit.and_then(|a| a.fields.as_ref()).map_or(0, |f| f.below),
            "alerts": audit.map_or(0, |a| a.alerts.len() as u64),
            "alertsCritical": count(Severity::Critical),
            "alertsHigh": count(Severity::High),
            "recoveryRuns": reports.len(),
            "loadedAfterRecovery": after.stages.last().map_or(0, |s| s.reached),
            "totalGapAfterRecovery": after.total_gap,
            "day2Read": day2.read,
            "day2Created": day2.created,
            "day2Updated": day2.updated,
            "day2Unchanged": day2.unchanged,
        },
        "errors": errors,
        "runs": statuses,
        "afterRecovery": after,
        "report": report,
    })
}

// ---------------------------------------------------------------------------------------------
// The demo: the staging table, day 1's pipeline state, the simulated services
// ---------------------------------------------------------------------------------------------

mod demo {
    use super::*;
    use lineage_checksum::{
        Action, FingerprintEntry, Incoming, NewFailure, RecordBatch, Value as FpValue,
    };
    use store_sqlx::Dialect;

    /// The staging table, and the columns the example uses.
    pub(super) const TABLE: demo_tables::Table = (
        "sfdc_cases",
        &[
            "id",
            "n",
            "last_modified",
            "subject",
            "description",
            "resolution",
            "status",
        ],
    );

    /// The demo's state in recon's own tables, which may hold a host's pipelines too.
    /// Resetting the demo deletes only these rows — the lineage and failed records of the
    /// demo's pipeline, the fingerprints of its namespace — never another pipeline's or
    /// namespace's (lineage is never pruned by the library, so the reset deletes it here); a
    /// first run finds none of them (or stops). The run log (`recon_runs`) is kept.
    pub(super) const RECON_ROWS: [demo_tables::Rows; 3] = [
        ("recon_lineage", "pipeline", PIPELINE),
        ("recon_failed_records", "pipeline", PIPELINE),
        ("recon_fingerprints", "namespace", NAMESPACE),
    ];

    /// Cases at the source.
    pub(super) const SOURCE: u64 = 10_000;
    /// Cases with a lineage row (the last 50 extracted were never tracked).
    pub(super) const TRACKED: u64 = 9_950;
    /// Failed records on day 1: 10 at PII removal, 20 at embedding, 20 at the load.
    pub(super) const FAILED: u64 = 50;

    pub(super) fn key(n: u64) -> String {
        format!("5007T{n:010}")
    }

    /// The j-th failed case (j < 50): spread over the tracked cases.
    fn failed_case(j: u64) -> u64 {
        42 + 199 * j
    }

    /// Which failed case (j) `key` is, if any.
    fn failure_index(key: &str) -> Option<u64> {
        let n: u64 = key.strip_prefix("5007T")?.parse().ok()?;
        let j = n.checked_sub(42)?;
        (j % 199 == 0 && j / 199 < FAILED).then_some(j / 199)
    }

    /// Day 1: the stage a failed case did not get through, its error type and message.
    fn day_one_failure(j: u64) -> (&'static str, &'static str, &'static str) {
        match j {
            0..10 => (
                "pii_removed",
                "PIIRemovalTimeout",
                "PII regex timed out after 30 s",
            ),
            10..28 => (
                "embedding_generated",
                "EmbeddingAPITimeout",
                "ChatHPE API timeout after 60 seconds",
            ),
            28..30 => (
                "embedding_generated",
                "MissingRequiredFields",
                "subject and description are empty in SFDC: nothing to embed",
            ),
            _ => (
                "loaded",
                "WeaviateConnectionError",
                "connection refused by weaviate-0:8080",
            ),
        }
    }

    pub(super) fn primary_provider(stage: &str) -> &'static str {
        match stage {
            "pii_removed" => "scrubber",
            "embedding_generated" => "chathpe",
            _ => "weaviate",
        }
    }

    /// The outside world during recovery, fixed by case: the scrubber's CPU spike is over for
    /// most cases; ChatHPE answers again for 12 of 20 embeddings and Nomic for 6 more; the
    /// vector store needs one to three more tries; 5 cases cannot be repaired by retrying.
    pub(super) fn call_service(
        key: &str,
        stage: &str,
        provider: Option<&str>,
        attempt: u32,
    ) -> Result<(), ReplayError> {
        let Some(j) = failure_index(key) else {
            return Ok(());
        };
        let pii = || ReplayError::transient("PIIRemovalTimeout", "PII regex timed out after 30 s");
        match (stage, j) {
            ("pii_removed", 0..6) => Ok(()),
            ("pii_removed", 6..8) if attempt >= 2 => Ok(()),
            ("pii_removed", _) => Err(pii()),
            ("embedding_generated", 10..22) => Ok(()),
            ("embedding_generated", 22..28) => match provider {
                None => Err(ReplayError::transient(
                    "EmbeddingAPITimeout",
                    "ChatHPE API timeout after 60 seconds",
                )),
                Some(_) => Ok(()),
            },
            ("embedding_generated", _) => Err(ReplayError::permanent(
                "MissingRequiredFields",
                "subject and description are empty in SFDC: nothing to embed",
            )),
            ("loaded", 30..44) => Ok(()),
            ("loaded", 44..47) if attempt >= 2 => Ok(()),
            ("loaded", 47..49) if attempt >= 3 => Ok(()),
            ("loaded", _) => Err(ReplayError::transient(
                "WeaviateTimeout",
                "Weaviate cluster timeout after 30 s",
            )),
            _ => Ok(()),
        }
    }

    /// Lineage metadata of case `n`: child-row counts and fields populated (of 44). Task on
    /// 72 % of the cases, WorkOrder on 65 %, Comments on 81 %; cases without any child row have
    /// only the 21 Case fields.
    fn metadata(n: u64) -> serde_json::Value {
        let pct = n % 100;
        let fields = match pct {
            0..65 => 38,
            65..72 => 35,
            72..81 => 31,
            81..97 => 30,
            _ => 21,
        };
        serde_json::json!({
            "task_count": if pct < 72 { 2 } else { 0 },
            "workorder_count": u32::from(pct < 65),
            "comment_count": if pct < 81 { 3 } else { 0 },
            "fields_populated": fields,
        })
    }

    // --- SQL on the host's staging table -------------------------------------------------

    pub(super) enum Arg {
        Int(i64),
        Text(Option<String>),
        Time(DateTime<Utc>),
    }

    use crate::demo_tables::on_backend;

    pub(super) async fn exec(db: &Db, sql: &str, args: Vec<Arg>) -> Result<u64, sqlx::Error> {
        on_backend!(db, sql, |pool, sql| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for a in args {
                q = match a {
                    Arg::Int(v) => q.bind(v),
                    Arg::Text(v) => q.bind(v),
                    Arg::Time(v) => q.bind(v),
                };
            }
            q.execute(pool).await.map(|r| r.rows_affected())
        })
    }

    /// Cases at the source; an error if the staging table does not exist.
    pub(super) async fn source_count(db: &Db) -> Result<u64, sqlx::Error> {
        let n: i64 = on_backend!(db, "SELECT COUNT(*) FROM sfdc_cases", |pool, sql| {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
        })?;
        Ok(n.max(0) as u64)
    }

    type CaseRow = (
        String,
        DateTime<Utc>,
        String,
        String,
        Option<String>,
        String,
    );

    /// One keyset page of source cases, by id.
    async fn page(db: &Db, after: &str, limit: usize) -> Result<Vec<CaseRow>, sqlx::Error> {
        let sql = "SELECT id, last_modified, subject, description, resolution, status \
                   FROM sfdc_cases WHERE id > ? ORDER BY id LIMIT ?";
        on_backend!(db, sql, |pool, sql| {
            sqlx::query_as::<_, CaseRow>(sqlx::AssertSqlSafe(sql))
                .bind(after.to_owned())
                .bind(limit as i64)
                .fetch_all(pool)
                .await
        })
    }

    /// What one extraction run found.
    #[derive(Clone, Debug, Default)]
    pub(super) struct DayRun {
        pub(super) read: u64,
        pub(super) created: u64,
        pub(super) updated: u64,
        pub(super) unchanged: u64,
    }

    /// An extraction run: read the source in keyset pages, fingerprint each case, classify a
    /// page with one lookup, record the applied fingerprints and stamp the rest seen.
    pub(super) async fn extract(
        db: &Db,
        schema: &Schema,
        classifier: &Classifier,
        run: &str,
        at: DateTime<Utc>,
    ) -> Result<DayRun, Box<dyn std::error::Error>> {
        let mut day = DayRun::default();
        let mut after = String::new();
        loop {
            let rows = page(db, &after, PAGE).await?;
            let Some(last) = rows.last() else { break };
            after = last.0.clone();
            let mut batch = Vec::with_capacity(rows.len());
            for (id, modified, subject, description, resolution, status) in &rows {
                let fp = schema.fingerprint(&[
                    id.as_str().into(),
                    (*modified).into(),
                    subject.as_str().into(),
                    description.as_str().into(),
                    resolution.as_deref().map_or(FpValue::Null, FpValue::from),
                    status.as_str().into(),
                ])?;
                batch.push(Incoming::new(id.clone(), fp));
            }
            let c = classifier.classify(&batch).await?;
            day.read += rows.len() as u64;
            day.created += c.created;
            day.updated += c.updated;
            day.unchanged += c.unchanged;
            let mut record = RecordBatch {
                run: run.into(),
                at,
                upserts: vec![],
                seen: vec![],
            };
            for (r, a) in batch.into_iter().zip(&c.actions) {
                match a {
                    Action::Create | Action::Update { .. } => {
                        record.upserts.push(FingerprintEntry {
                            key: r.key,
                            fingerprint: r.fingerprint,
                            group: None,
                        })
                    }
                    _ => record.seen.push(r.key),
                }
            }
            classifier
                .store()
                .record(classifier.namespace(), &record)
                .await?;
            if rows.len() < PAGE {
                break;
            }
        }
        Ok(day)
    }

    /// Day 2 upstream: 50 of the 10,000 cases (every 200th) were closed with a resolution.
    /// Setting the same values again changes nothing, so a second day 2 finds no change.
    pub(super) async fn change_day_two(db: &Db) -> Result<u64, sqlx::Error> {
        exec(
            db,
            "UPDATE sfdc_cases SET status = ?, resolution = ? WHERE n % 200 = 7",
            vec![
                Arg::Text(Some("Closed".into())),
                Arg::Text(Some(
                    "Replaced the DIMM in slot 4; memory errors cleared".into(),
                )),
            ],
        )
        .await
    }

    /// Day 1's state, placed relative to `now`: the staging table with 10,000 cases, their
    /// fingerprints, 9,950 lineage rows and 50 failed records. Returns the fingerprints created.
    pub(super) async fn create(
        db: &Db,
        schema: &Schema,
        classifier: &Classifier,
        tracker: &LineageTracker,
        failures: &dyn FailedRecordStore,
        now: DateTime<Utc>,
    ) -> Result<u64, Box<dyn std::error::Error>> {
        let day1 = now - chrono::Duration::hours(6);
        let (ts, text, short) = match db.dialect() {
            Dialect::Postgres => ("TIMESTAMPTZ", "TEXT", "VARCHAR(255)"),
            Dialect::MySql => ("DATETIME(6)", "TEXT", "VARCHAR(255)"),
            _ => ("TEXT", "TEXT", "TEXT"),
        };
        // Only here (after `demo_tables::needs_creating`, or on --reset-demo): the staging
        // table is dropped and the demo's rows in recon's tables deleted ([`RECON_ROWS`]).
        demo_tables::replace(db, &[TABLE], &RECON_ROWS).await?;
        exec(
            db,
            &format!(
                "CREATE TABLE sfdc_cases (id VARCHAR(32) PRIMARY KEY, n BIGINT NOT NULL, \
                 last_modified {ts} NOT NULL, subject {short} NOT NULL, description {text} NOT NULL, \
                 resolution {text}, status VARCHAR(32) NOT NULL)"
            ),
            vec![],
        )
        .await?;
        const ROWS: u64 = 500;
        for start in (0..SOURCE).step_by(ROWS as usize) {
            let end = (start + ROWS).min(SOURCE);
            let mut sql = String::from(
                "INSERT INTO sfdc_cases (id, n, last_modified, subject, description, resolution, status) VALUES ",
            );
            let mut args = Vec::with_capacity(7 * ROWS as usize);
            for n in start..end {
                if n > start {
                    sql.push_str(", ");
                }
                sql.push_str("(?, ?, ?, ?, ?, ?, ?)");
                // The two cases that cannot be embedded have no subject or description.
                let empty = matches!(failure_index(&key(n)), Some(28..30));
                let text = |s: String| Arg::Text(Some(if empty { String::new() } else { s }));
                let modified = day1 - chrono::Duration::seconds(1_800 + n as i64);
                args.extend([
                    Arg::Text(Some(key(n))),
                    Arg::Int(n as i64),
                    Arg::Time(modified),
                    text(format!("ProLiant DL380 Gen11 #{n} won't boot")),
                    text("iLO_400_MemoryErrors after a firmware update".to_owned()),
                    Arg::Text((n % 3 == 0).then(|| "Reseated the memory module".to_owned())),
                    Arg::Text(Some("Open".into())),
                ]);
            }
            exec(db, &sql, args).await?;
        }

        // Day 1's extraction fingerprinted every case.
        let day = extract(db, schema, classifier, "day-1", day1).await?;

        // Its lineage: 9,950 tracked; a failed case stays at the stage before the one it
        // failed (status failed), the others were loaded.
        let mut updates = Vec::with_capacity(TRACKED as usize);
        for n in 0..TRACKED {
            let k = key(n);
            let (stage, status, error) = match failure_index(&k) {
                Some(j) => {
                    let (failed, error_type, message) = day_one_failure(j);
                    let i = STAGES.iter().position(|s| *s == failed).unwrap_or(1);
                    (
                        STAGES[i - 1],
                        LineageStatus::Failed,
                        Some(format!("{error_type}: {message}")),
                    )
                }
                None => ("loaded", LineageStatus::Completed, None),
            };
            let mut u = LineageUpdate::new(k, stage, status, day1).with_metadata(metadata(n));
            if let Some(e) = error {
                u = u.with_error(e);
            }
            updates.push(u);
        }
        tracker.record(&updates).await?;

        // And its failed-record log, with the payload a replay needs.
        let log: Vec<NewFailure> = (0..FAILED)
            .map(|j| {
                let n = failed_case(j);
                let (stage, error_type, message) = day_one_failure(j);
                NewFailure {
                    key: key(n),
                    stage: stage.into(),
                    error_type: error_type.into(),
                    message: message.into(),
                    payload: serde_json::json!({ "case": key(n), "case_number": 12_340_000 + n }),
                    at: day1,
                }
            })
            .collect();
        failures.record(PIPELINE, &log).await?;
        Ok(day.created)
    }
}
