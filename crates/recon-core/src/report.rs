//! What a step and a run did, in typed counts.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::RunId;

/// The name of a counter, declared once as a constant by the crate that counts it.
///
/// Names are `snake_case`; the [`StatusView`](crate::StatusView) shows them in camelCase.
///
/// ```
/// use recon_core::Counter;
/// pub const LEASES_REPAIRED: Counter = Counter::new("leases_repaired");
/// assert_eq!(LEASES_REPAIRED.name(), "leases_repaired");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Counter(&'static str);

impl Counter {
    /// A counter called `name` (`snake_case`).
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    /// The counter's name.
    pub const fn name(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Named counts in the order they were first touched. Serialises as a JSON object in that order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(Vec<(String, u64)>);

impl Counters {
    /// No counts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `n` to `name` (saturating), creating it at zero first.
    pub fn add(&mut self, name: &str, n: u64) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = v.saturating_add(n),
            None => self.0.push((name.to_owned(), n)),
        }
    }

    /// Set `name` to `n`.
    pub fn set(&mut self, name: &str, n: u64) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = n,
            None => self.0.push((name.to_owned(), n)),
        }
    }

    /// The count for `name`, or `None` if it was never touched.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// All counts in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Whether there are no counts.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Add every count of `other` into `self`.
    pub fn merge(&mut self, other: &Counters) {
        for (k, v) in other.iter() {
            self.add(k, v);
        }
    }
}

impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Counters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Counters;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of counter names to non-negative integers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Counters, A::Error> {
                let mut c = Counters::new();
                while let Some((k, v)) = m.next_entry::<String, u64>()? {
                    c.set(&k, v);
                }
                Ok(c)
            }
        }
        d.deserialize_map(V)
    }
}

/// One item a step could not handle, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    /// The item's key (a job id, a record key).
    pub key: String,
    /// What went wrong.
    pub reason: String,
}

/// What one step did: counts, failed items, notes and step-specific details.
///
/// A reconciler builds it; the [`Runner`](crate::Runner) stamps name, duration and dry-run.
///
/// ```
/// use recon_core::{Counter, StepReport};
/// const REPAIRED: Counter = Counter::new("leases_repaired");
/// let mut report = StepReport::new("lease-repair");
/// report.add(REPAIRED, 2);
/// report.push_error("job 7", "row locked by another worker");
/// assert_eq!(report.count(REPAIRED), 2);
/// assert_eq!(report.item_error_count(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "StoredStepReport")]
pub struct StepReport {
    name: String,
    counters: Counters,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    item_errors: Vec<ItemError>,
    #[serde(default)]
    item_error_count: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    notes_dropped: u64,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    details: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    duration_ms: u64,
    #[serde(default)]
    dry_run: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl StepReport {
    /// At most this many item errors are kept in a report; the rest are only counted.
    pub const MAX_ITEM_ERRORS: usize = 1000;

    /// An empty report for the step `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Add `n` to a counter.
    pub fn add(&mut self, counter: Counter, n: u64) -> &mut Self {
        self.counters.add(counter.name(), n);
        self
    }

    /// Set a counter (a gauge such as "candidates").
    pub fn set(&mut self, counter: Counter, n: u64) -> &mut Self {
        self.counters.set(counter.name(), n);
        self
    }

    /// Add `n` to a counter whose name is only known at run time (a host-named count).
    pub fn add_named(&mut self, name: &str, n: u64) -> &mut Self {
        self.counters.add(name, n);
        self
    }

    /// A counter's value (zero if never touched).
    pub fn count(&self, counter: Counter) -> u64 {
        self.counters.get(counter.name()).unwrap_or(0)
    }

    /// The value of a counter by name, if it was touched.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters.get(name)
    }

    /// Longest item key kept in a report, in bytes (longer ones are truncated with a marker).
    pub const MAX_KEY_BYTES: usize = 256;
    /// Longest item error reason kept in a report, in bytes (longer ones are truncated with a
    /// marker), so that one huge error message cannot bloat every stored run report.
    pub const MAX_REASON_BYTES: usize = 2048;

    /// Record that the item `key` failed. Beyond [`Self::MAX_ITEM_ERRORS`] only the count grows;
    /// keys and reasons longer than [`Self::MAX_KEY_BYTES`] / [`Self::MAX_REASON_BYTES`] are cut
    /// at a character boundary and marked `…[truncated, N bytes in all]`.
    pub fn push_error(&mut self, key: impl Into<String>, reason: impl Into<String>) -> &mut Self {
        self.item_error_count = self.item_error_count.saturating_add(1);
        if self.item_errors.len() < Self::MAX_ITEM_ERRORS {
            self.item_errors.push(ItemError {
                key: truncate(key.into(), Self::MAX_KEY_BYTES),
                reason: truncate(reason.into(), Self::MAX_REASON_BYTES),
            });
        }
        self
    }

    /// At most this many notes are kept in a report; the rest are only counted.
    pub const MAX_NOTES: usize = 100;
    /// At most this many details are kept in a report.
    pub const MAX_DETAILS: usize = 256;
    /// Largest detail value kept, in bytes of JSON text.
    pub const MAX_DETAIL_BYTES: usize = 256 * 1024;

    /// Add a line of explanation for people reading the report.
    ///
    /// A note longer than [`Self::MAX_REASON_BYTES`] is cut and marked like an item error's
    /// reason; beyond [`Self::MAX_NOTES`] notes are only counted ([`Self::notes_dropped`]).
    pub fn note(&mut self, note: impl Into<String>) -> &mut Self {
        if self.notes.len() < Self::MAX_NOTES {
            self.notes
                .push(truncate(note.into(), Self::MAX_REASON_BYTES));
        } else {
            self.notes_dropped = self.notes_dropped.saturating_add(1);
        }
        self
    }

    /// Attach step-specific structured data (a gap table, metrics) under `key`, replacing an
    /// earlier value of the same key.
    ///
    /// Bounded like the rest of the report: keys are cut at [`Self::MAX_KEY_BYTES`]; a value
    /// whose JSON exceeds [`Self::MAX_DETAIL_BYTES`] is replaced by a string saying so; a new
    /// key beyond [`Self::MAX_DETAILS`] is dropped. Either way a note says what was dropped.
    pub fn detail(&mut self, key: impl Into<String>, value: serde_json::Value) -> &mut Self {
        let key = truncate(key.into(), Self::MAX_KEY_BYTES);
        if !self.details.contains_key(&key) && self.details.len() >= Self::MAX_DETAILS {
            return self.note(format!(
                "detail `{key}` dropped: a report keeps at most {} details",
                Self::MAX_DETAILS
            ));
        }
        let size = json_len(&value);
        if size > Self::MAX_DETAIL_BYTES {
            let marker = format!(
                "[dropped: {size} bytes of JSON, over the limit of {} bytes]",
                Self::MAX_DETAIL_BYTES
            );
            self.note(format!("detail `{key}` {marker}"));
            self.details.insert(key, serde_json::Value::String(marker));
        } else {
            self.details.insert(key, value);
        }
        self
    }

    /// Fold another report's counters, errors, notes and details into this one.
    pub fn absorb(&mut self, other: StepReport) -> &mut Self {
        self.counters.merge(&other.counters);
        for e in other.item_errors {
            if self.item_errors.len() < Self::MAX_ITEM_ERRORS {
                self.item_errors.push(e);
            }
        }
        self.item_error_count = self.item_error_count.saturating_add(other.item_error_count);
        for note in other.notes {
            self.note(note);
        }
        self.notes_dropped = self.notes_dropped.saturating_add(other.notes_dropped);
        for (key, value) in other.details {
            self.detail(key, value);
        }
        self
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// All counters in order.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The item errors kept (at most [`Self::MAX_ITEM_ERRORS`]).
    pub fn item_errors(&self) -> &[ItemError] {
        &self.item_errors
    }

    /// How many items failed in all (may exceed the errors kept).
    pub fn item_error_count(&self) -> u64 {
        self.item_error_count
    }

    /// Notes for people (at most [`Self::MAX_NOTES`]).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// How many notes were not kept because the report already had [`Self::MAX_NOTES`].
    pub fn notes_dropped(&self) -> u64 {
        self.notes_dropped
    }

    /// Step-specific structured data.
    pub fn details(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.details
    }

    /// How long the step took, in milliseconds (stamped by the runner).
    pub fn duration_ms(&self) -> u64 {
        self.duration_ms
    }

    /// Whether the step ran as a dry run (stamped by the runner).
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    pub(crate) fn stamp(&mut self, name: &str, duration_ms: u64, dry_run: bool) {
        if self.name.is_empty() {
            self.name = name.to_owned();
        }
        self.duration_ms = duration_ms;
        self.dry_run = dry_run;
    }
}

/// A [`StepReport`] as read back from JSON (a run log, another version). Turned into a
/// `StepReport` through `From`, which restores the report's invariants, so that a stored report
/// can never make [`RunReport::all_errors`] or the status view misbehave.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredStepReport {
    name: String,
    counters: Counters,
    #[serde(default)]
    item_errors: Vec<ItemError>,
    #[serde(default)]
    item_error_count: u64,
    #[serde(default)]
    notes: Vec<String>,
    #[serde(default)]
    notes_dropped: u64,
    #[serde(default)]
    details: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    duration_ms: u64,
    #[serde(default)]
    dry_run: bool,
}

impl From<StoredStepReport> for StepReport {
    fn from(s: StoredStepReport) -> Self {
        let mut item_errors = s.item_errors;
        // Every kept error was counted: the count is at least the number of kept errors, even
        // when the JSON lacks `itemErrorCount` or understates it.
        let item_error_count = s.item_error_count.max(item_errors.len() as u64);
        item_errors.truncate(Self::MAX_ITEM_ERRORS);
        let mut notes = s.notes;
        let extra = notes.len().saturating_sub(Self::MAX_NOTES) as u64;
        notes.truncate(Self::MAX_NOTES);
        Self {
            name: s.name,
            counters: s.counters,
            item_errors,
            item_error_count,
            notes,
            notes_dropped: s.notes_dropped.saturating_add(extra),
            details: s.details,
            duration_ms: s.duration_ms,
            dry_run: s.dry_run,
        }
    }
}

/// The length of `value` as JSON text, without building the text.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Value to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// `s` cut to at most `max` bytes at a character boundary, with a marker saying so.
pub fn truncate(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let total = s.len();
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated, {total} bytes in all]", &s[..end])
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// The step returned a report.
    Succeeded,
    /// The step returned an error (or panicked).
    Failed,
    /// The step did not finish within its timeout or the run's.
    TimedOut,
    /// The step was not started: a required step before it failed, or the run ran out of time.
    NotRun,
}

impl StepStatus {
    /// Lower-case name, as in the JSON report and the `recon.step` span.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::NotRun => "not_run",
        }
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a step failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// The error, as text.
    pub message: String,
    /// Whether the next run may succeed without anyone doing anything.
    pub transient: bool,
}

/// One step of a run: its status, its report and its error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepOutcome {
    /// Step name.
    pub name: String,
    /// Whether the run stops when this step does not succeed.
    pub required: bool,
    /// How it ended.
    pub status: StepStatus,
    /// What it did (empty when it failed before reporting).
    pub report: StepReport,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
}

/// The overall result of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every step succeeded and no item failed.
    Success,
    /// Some steps or items failed; the rest was done.
    Partial,
    /// A required step failed, or no step succeeded.
    Failed,
    /// Another instance holds the run lock; nothing ran.
    Skipped,
}

impl RunStatus {
    /// Lower-case name, as in the status JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    /// The status of a run whose steps ended as `steps`, with `run_errors` run-level errors.
    ///
    /// Failed when a required step did not succeed or when no step succeeded; partial when a
    /// step did not succeed, an item failed or the run itself recorded an error; else success.
    pub fn from_steps(steps: &[StepOutcome], run_errors: usize) -> Self {
        let ok = |s: &StepOutcome| s.status == StepStatus::Succeeded;
        if steps.iter().any(|s| s.required && !ok(s)) || !steps.iter().any(ok) {
            return Self::Failed;
        }
        let degraded = steps
            .iter()
            .any(|s| !ok(s) || s.report.item_error_count() > 0);
        if degraded || run_errors > 0 {
            Self::Partial
        } else {
            Self::Success
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything one run did. Serialises with serde; [`RunReport::render_text`] is for people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    /// The run's id.
    pub id: RunId,
    /// Name of the runner (e.g. `startup`, `upstream-sync`).
    pub runner: String,
    /// The run's frozen `now`.
    pub started_at: DateTime<Utc>,
    /// `started_at` plus the measured duration.
    pub finished_at: DateTime<Utc>,
    /// Wall time the run took, in milliseconds.
    pub duration_ms: u64,
    /// Overall result.
    pub status: RunStatus,
    /// Whether nothing was changed on purpose.
    pub dry_run: bool,
    /// Steps in the order they were configured.
    pub steps: Vec<StepOutcome>,
    /// Run-level errors and the errors of failed steps, as `step: message`.
    pub errors: Vec<String>,
    /// Remarks that are not errors (why a run was skipped, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl RunReport {
    /// The outcome of the step called `name`.
    pub fn step(&self, name: &str) -> Option<&StepOutcome> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// All steps' counters added together, in first-seen order.
    pub fn totals(&self) -> Counters {
        let mut all = Counters::new();
        for s in &self.steps {
            all.merge(s.report.counters());
        }
        all
    }

    /// A counter summed over all steps (zero if no step touched it).
    pub fn count(&self, counter: Counter) -> u64 {
        self.steps
            .iter()
            .map(|s| s.report.count(counter))
            .fold(0, u64::saturating_add)
    }

    /// Every error of the run: run-level errors, failed steps and failed items, as text.
    pub fn all_errors(&self) -> Vec<String> {
        let mut out = self.errors.clone();
        for s in &self.steps {
            for e in s.report.item_errors() {
                out.push(format!("{}: {}: {}", s.name, e.key, e.reason));
            }
            let hidden = s
                .report
                .item_error_count()
                .saturating_sub(s.report.item_errors().len() as u64);
            if hidden > 0 {
                out.push(format!("{}: {hidden} more item errors not kept", s.name));
            }
        }
        out
    }

    /// The plain-text report (see [`crate::render_text`]).
    pub fn render_text(&self) -> String {
        crate::status::render_text(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Counter = Counter::new("a");

    fn outcome(status: StepStatus, required: bool, item_errors: usize) -> StepOutcome {
        let mut report = StepReport::new("s");
        for i in 0..item_errors {
            report.push_error(i.to_string(), "bad");
        }
        StepOutcome {
            name: "s".into(),
            required,
            status,
            report,
            error: None,
        }
    }

    #[test]
    fn status_rules() {
        use StepStatus::*;
        let st = |v: Vec<StepOutcome>| RunStatus::from_steps(&v, 0);
        assert_eq!(st(vec![outcome(Succeeded, false, 0)]), RunStatus::Success);
        assert_eq!(st(vec![outcome(Succeeded, false, 1)]), RunStatus::Partial);
        assert_eq!(
            st(vec![
                outcome(Succeeded, false, 0),
                outcome(Failed, false, 0)
            ]),
            RunStatus::Partial
        );
        assert_eq!(
            st(vec![outcome(Failed, true, 0), outcome(NotRun, false, 0)]),
            RunStatus::Failed
        );
        assert_eq!(st(vec![outcome(TimedOut, false, 0)]), RunStatus::Failed);
        assert_eq!(st(vec![]), RunStatus::Failed);
        assert_eq!(
            RunStatus::from_steps(&[outcome(Succeeded, false, 0)], 1),
            RunStatus::Partial
        );
    }

    #[test]
    fn step_status_names_match_the_json() {
        use StepStatus::*;
        for s in [Succeeded, Failed, TimedOut, NotRun] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
            assert_eq!(s.to_string(), s.as_str());
        }
    }

    #[test]
    fn counters_keep_order_and_round_trip() {
        let mut r = StepReport::new("x");
        r.add(Counter::new("zeta"), 1)
            .add(A, 2)
            .add(Counter::new("zeta"), 3);
        let json = serde_json::to_string(r.counters()).unwrap();
        assert_eq!(json, r#"{"zeta":4,"a":2}"#);
        let back: Counters = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, r.counters());
        r.add(A, u64::MAX);
        assert_eq!(r.count(A), u64::MAX, "counters saturate");
    }

    #[test]
    fn huge_keys_and_reasons_are_truncated_with_a_marker() {
        let mut r = StepReport::new("x");
        let reason = "é".repeat(5 * 1024 * 1024); // 10 MB of two-byte characters
        r.push_error("k".repeat(1000), reason);
        let e = &r.item_errors()[0];
        assert!(e.reason.len() < StepReport::MAX_REASON_BYTES + 64);
        assert!(
            e.reason.ends_with("…[truncated, 10485760 bytes in all]"),
            "{}",
            &e.reason[e.reason.len() - 60..]
        );
        assert!(e.key.ends_with("…[truncated, 1000 bytes in all]"));
        assert_eq!(truncate("short".into(), 10), "short");
    }

    #[test]
    fn stored_reports_keep_item_error_counts_consistent() {
        // `itemErrorCount` missing (an older writer, a hand-edited log): the count covers the
        // kept errors instead of underflowing in `all_errors` and the status view.
        let json = r#"{
            "id": "20240124T120000Z-0000abcd", "runner": "startup",
            "startedAt": "2024-01-24T12:00:00Z", "finishedAt": "2024-01-24T12:00:00Z",
            "durationMs": 0, "status": "partial", "dryRun": false, "errors": [],
            "steps": [{ "name": "s", "required": false, "status": "succeeded",
                "report": { "name": "s", "counters": {},
                    "itemErrors": [{ "key": "k", "reason": "r" }, { "key": "k2", "reason": "r2" }],
                    "itemErrorCount": 1 } }]
        }"#;
        let report: RunReport = serde_json::from_str(json).unwrap();
        let step = &report.steps[0].report;
        assert_eq!(step.item_error_count(), 2);
        assert_eq!(report.all_errors(), ["s: k: r", "s: k2: r2"]);
        let view = crate::StatusView::from_report(&report, 0);
        assert_eq!(view.errors, ["s: k: r", "s: k2: r2"]);

        let no_count = r#"{"name":"s","counters":{},"itemErrors":[{"key":"k","reason":"r"}]}"#;
        let step: StepReport = serde_json::from_str(no_count).unwrap();
        assert_eq!(step.item_error_count(), 1);

        // more kept errors than a report may keep: capped, all counted
        let many: Vec<_> = (0..StepReport::MAX_ITEM_ERRORS + 3)
            .map(|i| serde_json::json!({"key": i.to_string(), "reason": "bad"}))
            .collect();
        let json = serde_json::json!({"name": "s", "counters": {}, "itemErrors": many});
        let step: StepReport = serde_json::from_value(json).unwrap();
        assert_eq!(step.item_errors().len(), StepReport::MAX_ITEM_ERRORS);
        assert_eq!(
            step.item_error_count(),
            StepReport::MAX_ITEM_ERRORS as u64 + 3
        );
    }

    #[test]
    fn a_report_built_by_hand_never_underflows_the_hidden_count() {
        // StepOutcome and RunReport have public fields; a report whose count is below its
        // kept errors (built by hand, or by a future bug) must still render.
        let mut step = StepReport::new("s");
        step.push_error("k", "r");
        step.item_error_count = 0;
        let report = RunReport {
            id: RunId::from_string("x"),
            runner: "r".into(),
            started_at: DateTime::<Utc>::MIN_UTC,
            finished_at: DateTime::<Utc>::MIN_UTC,
            duration_ms: 0,
            status: RunStatus::Partial,
            dry_run: false,
            steps: vec![StepOutcome {
                name: "s".into(),
                required: false,
                status: StepStatus::Succeeded,
                report: step,
                error: None,
            }],
            errors: vec![],
            notes: vec![],
        };
        assert_eq!(report.all_errors(), ["s: k: r"]);
    }

    #[test]
    fn notes_are_capped_truncated_and_counted() {
        let mut r = StepReport::new("x");
        r.note("é".repeat(5_000));
        for i in 1..(StepReport::MAX_NOTES + 50) {
            r.note(format!("note {i}"));
        }
        assert_eq!(r.notes().len(), StepReport::MAX_NOTES);
        assert_eq!(r.notes_dropped(), 50);
        assert!(r.notes()[0].len() < StepReport::MAX_REASON_BYTES + 64);
        assert!(r.notes()[0].ends_with("…[truncated, 10000 bytes in all]"));
        // the count survives JSON, and a stored report with too many notes is capped
        let back: StepReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let json = serde_json::json!({
            "name": "x", "counters": {},
            "notes": (0..StepReport::MAX_NOTES + 7).map(|i| i.to_string()).collect::<Vec<_>>(),
        });
        let stored: StepReport = serde_json::from_value(json).unwrap();
        assert_eq!(stored.notes().len(), StepReport::MAX_NOTES);
        assert_eq!(stored.notes_dropped(), 7);
        // absorbing respects the cap and keeps counting
        let mut sum = StepReport::new("sum");
        sum.absorb(r.clone()).absorb(r);
        assert_eq!(sum.notes().len(), StepReport::MAX_NOTES);
        assert_eq!(sum.notes_dropped(), 200);
        assert!(
            crate::render_text(&RunReport {
                id: RunId::from_string("x"),
                runner: "r".into(),
                started_at: DateTime::<Utc>::MIN_UTC,
                finished_at: DateTime::<Utc>::MIN_UTC,
                duration_ms: 0,
                status: RunStatus::Success,
                dry_run: false,
                steps: vec![StepOutcome {
                    name: "sum".into(),
                    required: false,
                    status: StepStatus::Succeeded,
                    report: sum,
                    error: None,
                }],
                errors: vec![],
                notes: vec![],
            })
            .contains("note: ... and 200 more notes not kept")
        );
    }

    #[test]
    fn details_are_bounded() {
        let mut r = StepReport::new("x");
        r.detail("small", serde_json::json!({"a": [1, 2, 3]}));
        let huge = serde_json::json!(vec!["0123456789"; 30_000]); // ~390 KB of JSON
        r.detail("gaps", huge);
        assert_eq!(r.details()["small"], serde_json::json!({"a": [1, 2, 3]}));
        let gaps = r.details()["gaps"].as_str().unwrap();
        assert!(gaps.starts_with("[dropped: 390001 bytes of JSON"), "{gaps}");
        assert!(
            r.notes()[0].starts_with("detail `gaps` [dropped: "),
            "{:?}",
            r.notes()
        );
        // a long key is cut like an item key
        r.detail("k".repeat(1000), serde_json::json!(1));
        assert!(
            r.details()
                .keys()
                .any(|k| k.ends_with("…[truncated, 1000 bytes in all]"))
        );
        for i in 0..StepReport::MAX_DETAILS + 10 {
            r.detail(format!("metric_{i}"), serde_json::json!(i));
        }
        assert_eq!(r.details().len(), StepReport::MAX_DETAILS);
        // replacing an existing key is still allowed when full
        r.detail("small", serde_json::json!(2));
        assert_eq!(r.details()["small"], serde_json::json!(2));
        assert!(
            r.notes()
                .iter()
                .any(|n| n.contains("a report keeps at most 256 details"))
        );
    }

    #[test]
    fn item_errors_are_capped_but_counted() {
        let mut r = StepReport::new("x");
        for i in 0..(StepReport::MAX_ITEM_ERRORS + 5) {
            r.push_error(i.to_string(), "bad");
        }
        assert_eq!(r.item_errors().len(), StepReport::MAX_ITEM_ERRORS);
        assert_eq!(r.item_error_count(), StepReport::MAX_ITEM_ERRORS as u64 + 5);
    }
}
