//! The crate's single error type.

use std::time::Duration;

use crate::duration::fmt_nanos;

/// Everything that can go wrong in this crate: building or deserialising a [`RetryPolicy`]
/// whose settings make no sense.
///
/// Deciding never fails (every input gives a [`Decision`]); only configuration does. These errors
/// are therefore never transient: retrying the same configuration gives the same error.
///
/// [`RetryPolicy`]: crate::RetryPolicy
/// [`Decision`]: crate::Decision
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `max_attempts` was 0. The smallest meaningful value is 1: one attempt, never retried.
    #[error("max_attempts must be at least 1 (1 means: run once, never retry)")]
    ZeroAttempts,

    /// A duration in a serialised policy was negative.
    #[error("`{field}` is negative ({input}); durations must be zero or positive")]
    NegativeDuration {
        /// The setting, e.g. `backoff.initial`.
        field: &'static str,
        /// The value as given.
        input: String,
    },

    /// A duration exceeds [`RetryPolicy::DURATION_LIMIT`] (100 years), or overflows while being
    /// parsed.
    ///
    /// [`RetryPolicy::DURATION_LIMIT`]: crate::RetryPolicy::DURATION_LIMIT
    #[error("`{field}` is {input}, more than the limit of 100 years (876000h)")]
    DurationTooLarge {
        /// The setting, e.g. `max_delay`.
        field: &'static str,
        /// The value as given.
        input: String,
    },

    /// A duration in a serialised policy could not be read.
    #[error(
        "`{field}` is not a duration ({input:?}): {reason}; write e.g. \"250ms\", \"1.5s\", \"1h30m\" or an integer number of milliseconds"
    )]
    InvalidDuration {
        /// The setting, e.g. `max_elapsed`.
        field: &'static str,
        /// The value as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The exponential factor is neither exactly 1 nor in `[1.001, 1000]`.
    #[error(
        "exponential factor must be exactly 1 or between 1.001 and 1000, got {factor}{}",
        if *factor < 1.0 { " (a factor below 1 would shrink the delay)" } else { "" }
    )]
    InvalidFactor {
        /// The factor given.
        factor: f64,
    },

    /// The exponential backoff starts at zero, so it would stay at zero for ever.
    #[error("exponential backoff needs an initial delay above zero (0 × factor^n is always 0)")]
    ZeroInitialDelay,

    /// Decorrelated jitter would start from a delay of zero, and three times zero is zero: every
    /// delay would be zero.
    #[error(
        "decorrelated jitter grows from the first retry's delay (the backoff at n = 0, raised to \
         min_delay), which is zero here, so every delay would be zero; give the backoff a first \
         delay above zero or set min_delay"
    )]
    ZeroDecorrelatedBase,

    /// The proportional jitter fraction is not a finite number in `[0, 1]`.
    #[error("proportional jitter fraction must be a finite number in [0, 1], got {fraction}")]
    InvalidJitterFraction {
        /// The fraction given.
        fraction: f64,
    },

    /// An explicit schedule has no entries.
    #[error("an explicit schedule needs at least one delay")]
    EmptySchedule,

    /// An explicit schedule's delays go down somewhere.
    #[error(
        "schedule delays must be non-decreasing, but entry {index} ({}) is shorter than the one before ({})",
        fmt_nanos(duration_nanos(*delay)),
        fmt_nanos(duration_nanos(*previous))
    )]
    UnsortedSchedule {
        /// Index of the offending entry.
        index: usize,
        /// Its delay.
        delay: Duration,
        /// The delay of the entry before it.
        previous: Duration,
    },

    /// `max_attempts` asks for more retries than a non-repeating schedule has entries.
    #[error(
        "max_attempts {max_attempts} allows {} retries but the schedule has only {entries} delay(s); \
         lower max_attempts to {} or let the schedule repeat its last entry",
        max_attempts.saturating_sub(1),
        entries.saturating_add(1)
    )]
    ScheduleTooShort {
        /// Entries in the schedule.
        entries: usize,
        /// The `max_attempts` given.
        max_attempts: u32,
    },

    /// `min_delay` is above `max_delay`.
    #[error(
        "min_delay ({}) is above max_delay ({})",
        fmt_nanos(duration_nanos(*min_delay)),
        fmt_nanos(duration_nanos(*max_delay))
    )]
    InvalidBounds {
        /// The lower bound given.
        min_delay: Duration,
        /// The upper bound given.
        max_delay: Duration,
    },
}

impl Error {
    /// Whether retrying could help. Always `false`: these are configuration errors.
    #[must_use]
    pub const fn is_transient(&self) -> bool {
        false
    }
}

/// A `Duration` as saturated nanoseconds, for messages.
fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `Result` with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
