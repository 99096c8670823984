//! Inputs and outputs of a decision.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::backoff::Jitter;
use crate::duration::fmt_duration;

/// What kind of failure the last attempt had. Errors tell their class through
/// [`Classify`](crate::Classify), never by having their message parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ErrorClass {
    /// May succeed if tried again later: timeouts, connection resets, 5xx.
    #[default]
    Transient,
    /// The other side asked us to slow down and said when to come back (HTTP 429/503 with
    /// `Retry-After`, gRPC `RESOURCE_EXHAUSTED` with a retry delay).
    ///
    /// The retry is scheduled no earlier than the policy's own delay and no earlier than
    /// `retry_after`, the latter capped by the policy's `max_retry_after`.
    Throttled {
        /// How long the other side asked us to wait.
        #[serde(with = "serde_duration_text")]
        retry_after: Duration,
    },
    /// Will fail the same way however often it is tried: bad input, 4xx, missing record.
    /// The policy gives up at once.
    Permanent,
}

impl ErrorClass {
    /// [`ErrorClass::Throttled`] with the given `retry_after`.
    #[must_use]
    pub const fn throttled(retry_after: Duration) -> Self {
        Self::Throttled { retry_after }
    }

    /// Whether a retry can help (transient or throttled).
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        !matches!(self, Self::Permanent)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transient => f.write_str("transient"),
            Self::Throttled { retry_after } => {
                write!(f, "throttled (retry after {})", fmt_duration(*retry_after))
            }
            Self::Permanent => f.write_str("permanent"),
        }
    }
}

/// Durations of [`ErrorClass::Throttled`] in the same text form as policies (`"30s"`).
mod serde_duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::duration::{LIMIT_NANOS, ParseError, fmt_duration, from_nanos, parse};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&fmt_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        match parse(&text) {
            Ok(n) => Ok(from_nanos(n)),
            // A retry-after beyond the limit is as good as the limit: it gets capped anyway.
            Err(ParseError::TooLarge) => Ok(from_nanos(LIMIT_NANOS)),
            Err(ParseError::Negative) => Err(serde::de::Error::custom(format!(
                "retry_after is negative ({text})"
            ))),
            Err(ParseError::Invalid(why)) => Err(serde::de::Error::custom(format!(
                "retry_after is not a duration ({text:?}): {why}"
            ))),
        }
    }
}

/// The persisted facts about one record that a decision is made from.
///
/// `now` and `key` are inputs: a decision never reads the clock or a random number generator.
///
/// ```
/// # use retry_policy::{Attempt, ErrorClass};
/// # let now = chrono::Utc::now();
/// let a = Attempt::new("job-42", 2, now).first_failure_at(now).error_class(ErrorClass::Transient);
/// assert_eq!(a.attempts_made, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempt<'a> {
    /// Stable identity of the record (job id, message id, …). Seeds the jitter draw, so that
    /// the same record at the same attempt always gets the same delay.
    pub key: &'a str,
    /// Attempts already **started**, including the one that just failed: 1 after the first
    /// failure. `0` is treated as `1` (see [the counting convention](crate#counting-attempts)).
    pub attempts_made: u32,
    /// When the first attempt failed; the start of `max_elapsed`. `None` means "now" (this is
    /// the first failure).
    pub first_failure_at: Option<DateTime<Utc>>,
    /// The current time, supplied by the caller (a clock, or the database's `now()`).
    pub now: DateTime<Utc>,
    /// How the last attempt failed.
    pub error_class: ErrorClass,
}

impl<'a> Attempt<'a> {
    /// A transient failure of `key` after `attempts_made` attempts, first failure unknown (= now).
    #[must_use]
    pub const fn new(key: &'a str, attempts_made: u32, now: DateTime<Utc>) -> Self {
        Self {
            key,
            attempts_made,
            first_failure_at: None,
            now,
            error_class: ErrorClass::Transient,
        }
    }

    /// Sets when the first attempt failed.
    #[must_use]
    pub const fn first_failure_at(mut self, at: DateTime<Utc>) -> Self {
        self.first_failure_at = Some(at);
        self
    }

    /// Sets how the last attempt failed.
    #[must_use]
    pub const fn error_class(mut self, class: ErrorClass) -> Self {
        self.error_class = class;
        self
    }
}

/// What to do with a failed record.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Try again at this instant.
    RetryAt(DateTime<Utc>),
    /// Stop retrying, for this reason.
    GiveUp(GiveUpReason),
}

impl Decision {
    /// The retry time, if this is a retry.
    #[must_use]
    pub const fn retry_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::RetryAt(at) => Some(*at),
            Self::GiveUp(_) => None,
        }
    }

    /// The reason, if this is a give-up.
    #[must_use]
    pub const fn give_up_reason(&self) -> Option<GiveUpReason> {
        match self {
            Self::RetryAt(_) => None,
            Self::GiveUp(reason) => Some(*reason),
        }
    }

    /// Whether this is a retry.
    #[must_use]
    pub const fn is_retry(&self) -> bool {
        matches!(self, Self::RetryAt(_))
    }

    /// Whether this is a give-up.
    #[must_use]
    pub const fn is_give_up(&self) -> bool {
        matches!(self, Self::GiveUp(_))
    }

    /// How long after `now` the retry is (zero if it is not after `now`); `None` for a give-up.
    #[must_use]
    pub fn delay_after(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.retry_at()
            .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO))
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RetryAt(at) => write!(f, "retry at {}", fmt_time(*at)),
            Self::GiveUp(reason) => write!(f, "give up: {reason}"),
        }
    }
}

/// Why a policy gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The error was [`ErrorClass::Permanent`].
    Permanent,
    /// `attempts_made >= max_attempts`.
    MaxAttempts {
        /// Attempts made (as given; 0 counts as 1).
        attempts_made: u32,
        /// The policy's limit.
        max_attempts: u32,
    },
    /// The next retry would fall after `first_failure_at + max_elapsed`.
    Deadline {
        /// `first_failure_at + max_elapsed`.
        deadline: DateTime<Utc>,
        /// When the retry would have been.
        next_retry_at: DateTime<Utc>,
    },
    /// `now + delay` is beyond what `DateTime<Utc>` can represent (year 262143).
    Unrepresentable,
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Permanent => f.write_str("permanent error"),
            Self::MaxAttempts {
                attempts_made,
                max_attempts,
            } => write!(
                f,
                "{attempts_made} of at most {max_attempts} attempts already made"
            ),
            Self::Deadline {
                deadline,
                next_retry_at,
            } => write!(
                f,
                "next retry at {} would be past the deadline {}",
                fmt_time(*next_retry_at),
                fmt_time(*deadline)
            ),
            Self::Unrepresentable => f.write_str("retry time is beyond the representable range"),
        }
    }
}

/// Which bound of `[min_delay, max_delay]` cut a jitter kind's range (see
/// [`DelayBreakdown::clamp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Clamp {
    /// The range's low end was raised to `min_delay`.
    RaisedToMin,
    /// The range's high end was lowered to `max_delay`.
    LoweredToMax,
    /// Both: the range was cut to `[min_delay, max_delay]`.
    Both,
}

/// How the delay was built, step by step (see [`Explanation`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DelayBreakdown {
    /// The retry index `n` used in the formulas: `attempts_made − 1` (0 for the first retry).
    pub retry_index: u32,
    /// The backoff formula's value, before any clamp.
    pub base: Duration,
    /// `base` clamped to `[min_delay, max_delay]`: what the jitter spreads.
    pub clamped_base: Duration,
    /// The jitter kind.
    pub jitter: Jitter,
    /// Low end of the range the jittered delay was drawn from: the jitter kind's range cut to
    /// `[min_delay, max_delay]`. Without jitter, `clamped_base`.
    pub low: Duration,
    /// High end of that range. Without jitter, `clamped_base`.
    pub high: Duration,
    /// Which bound, if any, cut the jitter kind's range to `[low, high]`. The draw is made
    /// inside the cut range, so no bound ever moves the jittered delay itself (and keys do not
    /// pile up on it).
    pub clamp: Option<Clamp>,
    /// The 64-bit draw from hash(key, retry index); `None` without jitter, or when
    /// `low == high` (nothing to draw).
    pub draw: Option<u64>,
    /// Decorrelated jitter only: the recomputed delay of the retry before.
    pub previous: Option<Duration>,
    /// The jittered delay, in `[low, high]`.
    pub jittered: Duration,
    /// Throttled errors only: the requested `retry_after` after capping by `max_retry_after`.
    pub retry_after: Option<Duration>,
    /// The final delay: `max(jittered, retry_after)`.
    pub delay: Duration,
}

/// A decision together with how it was reached. Produced by
/// [`RetryPolicy::explain`](crate::RetryPolicy::explain); its `Display` is one readable line.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Explanation {
    /// As given.
    pub attempts_made: u32,
    /// As given.
    pub error_class: ErrorClass,
    /// The policy's `max_attempts`, if any.
    pub max_attempts: Option<u32>,
    /// How the delay was built; `None` when the policy gave up before computing one
    /// (permanent error, attempts exhausted).
    pub delay: Option<DelayBreakdown>,
    /// `first_failure_at + max_elapsed`, if the policy has `max_elapsed`.
    pub deadline: Option<DateTime<Utc>>,
    /// The outcome, identical to what [`decide`](crate::RetryPolicy::decide) returns.
    pub decision: Decision,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempts made {}", self.attempts_made)?;
        if let Some(max) = self.max_attempts {
            write!(f, " of {max}")?;
        }
        write!(f, ", last error {}", self.error_class)?;
        if let Some(d) = &self.delay {
            write!(
                f,
                "; retry #{}: base {}",
                d.retry_index + 1,
                fmt_duration(d.base)
            )?;
            if d.clamped_base != d.base {
                write!(f, " clamped to {}", fmt_duration(d.clamped_base))?;
            }
            match d.jitter {
                Jitter::None => f.write_str(", no jitter")?,
                jitter => {
                    write!(f, ", {} jitter", jitter.kind())?;
                    if let Jitter::Proportional { fraction } = jitter {
                        write!(f, " ±{fraction}")?;
                    }
                    if let Some(prev) = d.previous {
                        write!(f, " from previous {}", fmt_duration(prev))?;
                    }
                    write!(
                        f,
                        " over [{}, {}]",
                        fmt_duration(d.low),
                        fmt_duration(d.high)
                    )?;
                    match d.clamp {
                        Some(Clamp::RaisedToMin) => f.write_str(" (raised to min_delay)")?,
                        Some(Clamp::LoweredToMax) => f.write_str(" (cut at max_delay)")?,
                        Some(Clamp::Both) => f.write_str(" (cut to [min_delay, max_delay])")?,
                        None => {}
                    }
                    if let Some(draw) = d.draw {
                        // The draw as a fraction of 2^64, which is what scales the range.
                        write!(
                            f,
                            " (draw {:.6})",
                            draw as f64 / 18_446_744_073_709_551_616.0
                        )?;
                    }
                    write!(f, " → {}", fmt_duration(d.jittered))?;
                }
            }
            if let Some(ra) = d.retry_after {
                write!(f, ", retry-after {}", fmt_duration(ra))?;
            }
            write!(f, "; delay {}", fmt_duration(d.delay))?;
        }
        if let Some(deadline) = self.deadline {
            write!(f, "; deadline {}", fmt_time(deadline))?;
        }
        write!(f, " ⇒ {}", self.decision)
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
