//! The status JSON of a `/reconciliation/status` endpoint, and the plain-text report.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use crate::{Counters, RunReport, RunStatus, StepStatus};

/// At most this many errors are listed in a [`StatusView`]; a last line counts the rest.
pub const STATUS_MAX_ERRORS: usize = 50;

/// The last run as a monitoring endpoint shows it (the shape of seed 001):
///
/// ```json
/// {
///   "status": "success",
///   "timestamp": "2024-01-24T12:00:00.000Z",
///   "results": { "leasesRepaired": 2, "jobsRequeued": 1, "followUpCandidates": 2 },
///   "errors": [],
///   "uptime": 3600
/// }
/// ```
///
/// `results` holds every counter of every step in camelCase, in the order the steps produced
/// them. A counter reported by two steps is summed, and so are counters whose names differ but
/// camel-case alike (`jobs_requeued` and `jobsRequeued`): the object never repeats a key. `timestamp` is the run's frozen `now`,
/// `uptime` is in seconds, and `nextRun` appears only while the runner runs periodically.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// `success`, `partial`, `failed` or `skipped`.
    pub status: RunStatus,
    /// When the run started, in UTC with milliseconds.
    #[serde(serialize_with = "millis")]
    pub timestamp: DateTime<Utc>,
    /// Every counter of the run, summed over the steps; serialised under camelCase names, with
    /// names that camel-case alike summed into one key.
    #[serde(serialize_with = "camel_counters")]
    pub results: Counters,
    /// Errors of the run, at most [`STATUS_MAX_ERRORS`] lines.
    pub errors: Vec<String>,
    /// Seconds since the runner was built.
    pub uptime: u64,
    /// When the next periodic run is due.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_millis")]
    pub next_run: Option<DateTime<Utc>>,
}

impl StatusView {
    /// The status of `report`, for a process that has been up `uptime_secs` seconds.
    pub fn from_report(report: &RunReport, uptime_secs: u64) -> Self {
        let mut errors = report.all_errors();
        if errors.len() > STATUS_MAX_ERRORS {
            let more = errors.len() - (STATUS_MAX_ERRORS - 1);
            errors.truncate(STATUS_MAX_ERRORS - 1);
            errors.push(format!("... and {more} more"));
        }
        Self {
            status: report.status,
            timestamp: report.started_at,
            results: report.totals(),
            errors,
            uptime: uptime_secs,
            next_run: None,
        }
    }

    /// Set when the next run is due.
    #[must_use]
    pub fn with_next_run(mut self, next_run: Option<DateTime<Utc>>) -> Self {
        self.next_run = next_run;
        self
    }

    /// The view as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

fn millis<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn opt_millis<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => millis(t, s),
        None => s.serialize_none(),
    }
}

fn camel_counters<S: Serializer>(c: &Counters, s: S) -> Result<S::Ok, S::Error> {
    camel_results(c).serialize(s)
}

/// The counters under their camelCase names, one entry per name: counters whose names differ
/// but camel-case alike (`jobs_requeued`, a host's `jobsRequeued`) are summed (saturating) at
/// the position of the first, so the JSON object never has a duplicate key.
fn camel_results(c: &Counters) -> Counters {
    let mut out = Counters::new();
    for (k, v) in c.iter() {
        out.add(&camel_case(k), v);
    }
    out
}

/// `leases_repaired` → `leasesRepaired`.
pub fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for ch in snake.chars() {
        if ch == '_' || ch == '-' || ch == ' ' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(ch.to_uppercase());
            upper = false;
        } else {
            out.push(ch);
        }
    }
    out
}

/// The report for people, in the spirit of seed 003:
///
/// ```text
/// === Reconciliation Run: 2024-01-24 12:00 UTC (startup) ===
/// Run 20240124T120000Z-1a2b3c4d · status: success · 12 ms
///
/// 1. lease-repair: ok (4 ms)
///      leases repaired ....... 2
///      jobs requeued ......... 1
/// ```
pub fn render_text(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "=== Reconciliation Run: {} ({}) ===",
        report.started_at.format("%Y-%m-%d %H:%M UTC"),
        report.runner
    );
    let _ = writeln!(
        out,
        "Run {} · status: {} · {} ms{}",
        report.id,
        report.status,
        report.duration_ms,
        if report.dry_run {
            " · DRY RUN (nothing was changed)"
        } else {
            ""
        }
    );
    for note in &report.notes {
        let _ = writeln!(out, "Note: {note}");
    }
    for (i, step) in report.steps.iter().enumerate() {
        let state = match step.status {
            StepStatus::Succeeded => "ok",
            StepStatus::Failed => "FAILED",
            StepStatus::TimedOut => "TIMED OUT",
            StepStatus::NotRun => "not run",
        };
        let _ = write!(out, "\n{}. {}: {state}", i + 1, step.name);
        if step.status != StepStatus::NotRun {
            let _ = write!(out, " ({} ms)", step.report.duration_ms());
        }
        if step.required {
            out.push_str(" [required]");
        }
        out.push('\n');
        if let Some(e) = &step.error {
            let _ = writeln!(
                out,
                "     error: {}{}",
                e.message,
                if e.transient {
                    " (transient: the next run may succeed)"
                } else {
                    ""
                }
            );
        }
        for (k, v) in step.report.counters().iter() {
            let label = k.replace('_', " ");
            let dots = ".".repeat(24usize.saturating_sub(label.len()).max(2));
            let _ = writeln!(out, "     {label} {dots} {v}");
        }
        for (k, v) in step.report.details() {
            let shown = match v {
                serde_json::Value::Number(n) => match n.as_f64() {
                    Some(f) if n.is_f64() => format!("{f:.2}"),
                    _ => n.to_string(),
                },
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => "none".into(),
                // tables and lists stay in the JSON report
                _ => continue,
            };
            let label = k.replace('_', " ");
            let dots = ".".repeat(24usize.saturating_sub(label.len()).max(2));
            let _ = writeln!(out, "     {label} {dots} {shown}");
        }
        for note in step.report.notes() {
            let _ = writeln!(out, "     note: {note}");
        }
        if step.report.notes_dropped() > 0 {
            let _ = writeln!(
                out,
                "     note: ... and {} more notes not kept",
                step.report.notes_dropped()
            );
        }
        let shown = step.report.item_errors().iter().take(10);
        for e in shown {
            let _ = writeln!(out, "     ! {}: {}", e.key, e.reason);
        }
        let hidden = step.report.item_error_count().saturating_sub(10);
        if hidden > 0 {
            let _ = writeln!(out, "     ! ... and {hidden} more failed items");
        }
    }
    if !report.errors.is_empty() {
        let _ = writeln!(out, "\nErrors ({}):", report.errors.len());
        for e in &report.errors {
            let _ = writeln!(out, "  - {e}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_of_counter_names() {
        assert_eq!(camel_case("leases_repaired"), "leasesRepaired");
        assert_eq!(camel_case("follow_up_candidates"), "followUpCandidates");
        assert_eq!(camel_case("pending"), "pending");
        assert_eq!(camel_case("_x__y"), "xY");
    }

    #[test]
    fn counters_that_camel_case_alike_are_one_key() {
        let mut results = Counters::new();
        results.add("jobs_requeued", 2);
        results.add("leases_repaired", 1);
        results.add("jobsRequeued", 3); // a host counter, via StepReport::add_named
        results.add("jobs-requeued", u64::MAX);
        let view = StatusView {
            status: RunStatus::Success,
            timestamp: DateTime::<Utc>::MIN_UTC,
            results,
            errors: vec![],
            uptime: 0,
            next_run: None,
        };
        let text = serde_json::to_string(&view).unwrap();
        assert_eq!(
            text.matches("\"jobsRequeued\"").count(),
            1,
            "duplicate key in {text}"
        );
        assert!(
            text.contains(r#""results":{"jobsRequeued":18446744073709551615,"leasesRepaired":1}"#),
            "{text}"
        );
    }
}
