//! [`RetryPolicy`]: settings, validation, serialisation and the decision itself.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::backoff::{Backoff, Jitter, round_non_negative};
use crate::decision::{
    Attempt, Clamp, Decision, DelayBreakdown, ErrorClass, Explanation, GiveUpReason,
};
use crate::duration::{LIMIT_NANOS, from_nanos, to_nanos};
use crate::error::{Error, Result};
use crate::hash;

/// Decorrelated jitter recomputes the chain of previous delays over at most this many retries
/// before the current one (see `docs/retry-policy.md`).
pub(crate) const DECORRELATED_WINDOW: u32 = 16;

/// A validated retry policy: a pure function from the persisted facts of a failed record
/// ([`Attempt`]) to "retry at T" or "give up" ([`Decision`]).
///
/// Build one with [`RetryPolicy::builder`], take a [`preset`](crate::presets), or deserialise
/// one (deserialisation runs the same validation as [`RetryPolicyBuilder::build`]):
///
/// ```
/// # use retry_policy::RetryPolicy;
/// let policy: RetryPolicy = serde_json::from_str(r#"{
///     "backoff": { "kind": "exponential", "initial": "1s", "factor": 2.0 },
///     "jitter": { "kind": "full" },
///     "max_attempts": 4,
///     "max_delay": "30s"
/// }"#)?;
/// assert_eq!(policy.max_attempts(), Some(4));
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// Durations in the serialised form are text (`"250ms"`, `"1.5s"`, `"3h50m"`, units
/// `d h m s ms us ns`) or integer milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PolicySpec", into = "PolicySpec")]
pub struct RetryPolicy {
    backoff: Backoff,
    jitter: Jitter,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    min_delay: Duration,
    max_delay: Duration,
    max_retry_after: Duration,
    /// The same settings in nanoseconds, computed once instead of on every decision. A pure
    /// function of the fields above, so the derived `PartialEq` stays exact.
    nanos: Nanos,
}

/// A policy's settings in nanoseconds, as every decision uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Nanos {
    min_delay: u64,
    max_delay: u64,
    max_retry_after: u64,
    max_elapsed: Option<u64>,
    /// The base delay of the first retry (`n = 0`) clamped to `[min_delay, max_delay]`:
    /// decorrelated jitter's lower bound and starting point.
    first_base: u64,
}

/// Builder for [`RetryPolicy`]; every setting is optional.
///
/// Defaults: exponential backoff from 1 s with factor 2, no jitter, no attempt or time limit
/// (retry for ever, unless the backoff is a non-repeating schedule), `min_delay` 0,
/// `max_delay` [`RetryPolicy::DURATION_LIMIT`], `max_retry_after` = `max_delay`.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct RetryPolicyBuilder {
    backoff: Backoff,
    jitter: Jitter,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    min_delay: Duration,
    max_delay: Option<Duration>,
    max_retry_after: Option<Duration>,
}

impl Default for RetryPolicyBuilder {
    fn default() -> Self {
        Self {
            backoff: Backoff::exponential(Duration::from_secs(1), 2.0),
            jitter: Jitter::None,
            max_attempts: None,
            max_elapsed: None,
            min_delay: Duration::ZERO,
            max_delay: None,
            max_retry_after: None,
        }
    }
}

impl RetryPolicyBuilder {
    /// How the base delay grows.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How the base delay is spread.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Give up once this many attempts have been made (`attempts_made >= max_attempts`).
    /// 1 means: never retry. A schedule of 5 entries without repetition needs at most 6.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Give up rather than schedule a retry later than `first_failure_at + max_elapsed`.
    pub fn max_elapsed(mut self, max_elapsed: Duration) -> Self {
        self.max_elapsed = Some(max_elapsed);
        self
    }

    /// No delay is shorter than this.
    pub fn min_delay(mut self, min_delay: Duration) -> Self {
        self.min_delay = min_delay;
        self
    }

    /// No delay is longer than this (throttled errors aside, see
    /// [`max_retry_after`](Self::max_retry_after)).
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = Some(max_delay);
        self
    }

    /// The longest `retry_after` of a throttled error that is honoured; longer ones are cut to
    /// this. Defaults to `max_delay`. Setting it above `max_delay` lets throttled errors wait
    /// longer than transient ones.
    pub fn max_retry_after(mut self, max_retry_after: Duration) -> Self {
        self.max_retry_after = Some(max_retry_after);
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroAttempts`], [`Error::DurationTooLarge`], [`Error::InvalidFactor`],
    /// [`Error::ZeroInitialDelay`], [`Error::InvalidJitterFraction`], [`Error::EmptySchedule`],
    /// [`Error::UnsortedSchedule`], [`Error::ScheduleTooShort`], [`Error::InvalidBounds`] or
    /// [`Error::ZeroDecorrelatedBase`].
    pub fn build(self) -> Result<RetryPolicy> {
        fn limit(field: &'static str, d: Duration) -> Result<Duration> {
            if d.as_nanos() > u128::from(LIMIT_NANOS) {
                Err(Error::DurationTooLarge {
                    field,
                    input: format!("{d:?}"),
                })
            } else {
                Ok(d)
            }
        }

        let mut max_attempts = self.max_attempts;
        if max_attempts == Some(0) {
            return Err(Error::ZeroAttempts);
        }
        let mut backoff = self.backoff;
        let mut jitter = self.jitter;
        match &mut backoff {
            Backoff::Constant { delay } => {
                limit("backoff.delay", *delay)?;
            }
            Backoff::Linear { initial, step } => {
                limit("backoff.initial", *initial)?;
                limit("backoff.step", *step)?;
            }
            Backoff::Exponential { initial, factor } => {
                limit("backoff.initial", *initial)?;
                if initial.is_zero() {
                    return Err(Error::ZeroInitialDelay);
                }
                let valid = factor.is_finite()
                    && (*factor == 1.0 || (MIN_FACTOR..=MAX_FACTOR).contains(factor));
                if !valid {
                    return Err(Error::InvalidFactor { factor: *factor });
                }
                *factor = six_decimals(*factor);
            }
            Backoff::Schedule {
                delays,
                repeat_last,
            } => {
                if delays.is_empty() {
                    return Err(Error::EmptySchedule);
                }
                for (index, d) in delays.iter().enumerate() {
                    limit("backoff.delays", *d)?;
                    if let Some(previous) = index.checked_sub(1).and_then(|i| delays.get(i))
                        && d < previous
                    {
                        return Err(Error::UnsortedSchedule {
                            index,
                            delay: *d,
                            previous: *previous,
                        });
                    }
                }
                if !*repeat_last {
                    let implied = u32::try_from(delays.len())
                        .unwrap_or(u32::MAX)
                        .saturating_add(1);
                    match max_attempts {
                        Some(max) if max > implied => {
                            return Err(Error::ScheduleTooShort {
                                entries: delays.len(),
                                max_attempts: max,
                            });
                        }
                        Some(_) => {}
                        None => max_attempts = Some(implied),
                    }
                }
            }
            Backoff::Polynomial { unit, offset, .. } => {
                limit("backoff.unit", *unit)?;
                limit("backoff.offset", *offset)?;
            }
        }
        if let Jitter::Proportional { fraction } = &mut jitter {
            if !(fraction.is_finite() && (0.0..=1.0).contains(fraction)) {
                return Err(Error::InvalidJitterFraction {
                    fraction: *fraction,
                });
            }
            *fraction = six_decimals(*fraction);
        }
        let max_elapsed = self
            .max_elapsed
            .map(|d| limit("max_elapsed", d))
            .transpose()?;
        let min_delay = limit("min_delay", self.min_delay)?;
        let max_delay = limit(
            "max_delay",
            self.max_delay.unwrap_or(from_nanos(LIMIT_NANOS)),
        )?;
        if min_delay > max_delay {
            return Err(Error::InvalidBounds {
                min_delay,
                max_delay,
            });
        }
        let max_retry_after = limit("max_retry_after", self.max_retry_after.unwrap_or(max_delay))?;
        let policy = RetryPolicy::from_parts(
            backoff,
            jitter,
            max_attempts,
            max_elapsed,
            min_delay,
            max_delay,
            max_retry_after,
        );
        if policy.jitter == Jitter::Decorrelated && policy.nanos.first_base == 0 {
            return Err(Error::ZeroDecorrelatedBase);
        }
        Ok(policy)
    }
}

/// Smallest exponential factor above 1: closer factors are indistinguishable from constant
/// backoff and would let rounding make the base delay dip.
const MIN_FACTOR: f64 = 1.001;
/// Largest exponential factor; anything bigger reaches any cap in one step anyway.
const MAX_FACTOR: f64 = 1000.0;

/// `x` rounded to 6 decimal places: the nearest `f64` to a decimal of at most 10 significant
/// digits (for the ranges validated here), which every JSON parser reads back exactly — serde_json
/// without its `float_roundtrip` feature misreads some 17-digit floats by one ulp, and a policy
/// must decide the same after a round trip through storage.
fn six_decimals(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Everything `decide` computes, in raw nanoseconds; `explain` turns it into an [`Explanation`].
struct Trace {
    delay: Option<DelayTrace>,
    deadline: Option<DateTime<Utc>>,
    decision: Decision,
}

struct DelayTrace {
    n: u32,
    base: u64,
    clamped_base: u64,
    jittered: Jittered,
    retry_after: Option<u64>,
    delay: u64,
}

/// A jittered delay and how it was drawn, in nanoseconds.
struct Jittered {
    /// The 64-bit draw; `None` without jitter or when the range holds a single value.
    draw: Option<u64>,
    /// Decorrelated jitter: the recomputed delay of the retry before.
    previous: Option<u64>,
    /// The range drawn from: the jitter kind's range cut to `[min_delay, max_delay]`.
    low: u64,
    high: u64,
    /// Which bound cut the jitter kind's range.
    cut: Option<Clamp>,
    /// The jittered delay, in `[low, high]`.
    value: u64,
}

impl Jittered {
    /// No draw: the single value `v`.
    const fn exactly(v: u64) -> Self {
        Self {
            draw: None,
            previous: None,
            low: v,
            high: v,
            cut: None,
            value: v,
        }
    }
}

impl RetryPolicy {
    /// The longest duration a policy accepts or produces: 100 years of 365 days.
    pub const DURATION_LIMIT: Duration = from_nanos(LIMIT_NANOS);

    /// A policy from settings known to be valid, for the [presets](crate::presets): no
    /// `max_elapsed`, `min_delay` 0, `max_retry_after` = `max_delay`. The preset tests check
    /// that [`RetryPolicyBuilder::build`] accepts each one unchanged.
    pub(crate) fn preset(
        backoff: Backoff,
        jitter: Jitter,
        max_attempts: Option<u32>,
        max_delay: Duration,
    ) -> Self {
        Self::from_parts(
            backoff,
            jitter,
            max_attempts,
            None,
            Duration::ZERO,
            max_delay,
            max_delay,
        )
    }

    /// A policy from validated settings, with their nanoseconds computed once.
    fn from_parts(
        backoff: Backoff,
        jitter: Jitter,
        max_attempts: Option<u32>,
        max_elapsed: Option<Duration>,
        min_delay: Duration,
        max_delay: Duration,
        max_retry_after: Duration,
    ) -> Self {
        let (min, max) = (to_nanos(min_delay), to_nanos(max_delay));
        let nanos = Nanos {
            min_delay: min,
            max_delay: max,
            max_retry_after: to_nanos(max_retry_after),
            max_elapsed: max_elapsed.map(to_nanos),
            first_base: backoff.base_nanos(0).max(min).min(max),
        };
        Self {
            backoff,
            jitter,
            max_attempts,
            max_elapsed,
            min_delay,
            max_delay,
            max_retry_after,
            nanos,
        }
    }

    /// A builder with the defaults listed on [`RetryPolicyBuilder`].
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder::default()
    }

    /// Decides what to do after a failed attempt. Pure: the same `attempt` always gives the
    /// same decision, and nothing here reads the clock or a random number generator.
    ///
    /// In order:
    /// 1. a [`Permanent`](ErrorClass::Permanent) error gives up;
    /// 2. `attempts_made >= max_attempts` gives up (`attempts_made` 0 counts as 1);
    /// 3. the delay is built: backoff clamped to `[min_delay, max_delay]`, then jitter drawn
    ///    from the jitter kind's range cut to `[min_delay, max_delay]`, then for a throttled
    ///    error `max(delay, min(retry_after, max_retry_after))`;
    /// 4. a retry later than `first_failure_at + max_elapsed` gives up instead.
    pub fn decide(&self, attempt: &Attempt<'_>) -> Decision {
        self.trace(attempt).decision
    }

    /// The same decision as [`decide`](Self::decide), with how it was reached: base delay,
    /// jitter range and draw, clamps, retry-after and deadline.
    pub fn explain(&self, attempt: &Attempt<'_>) -> Explanation {
        let t = self.trace(attempt);
        Explanation {
            attempts_made: attempt.attempts_made,
            error_class: attempt.error_class,
            max_attempts: self.max_attempts,
            delay: t.delay.map(|d| DelayBreakdown {
                retry_index: d.n,
                base: from_nanos(d.base),
                clamped_base: from_nanos(d.clamped_base),
                jitter: self.jitter,
                low: from_nanos(d.jittered.low),
                high: from_nanos(d.jittered.high),
                clamp: d.jittered.cut,
                draw: d.jittered.draw,
                previous: d.jittered.previous.map(from_nanos),
                jittered: from_nanos(d.jittered.value),
                retry_after: d.retry_after.map(from_nanos),
                delay: from_nanos(d.delay),
            }),
            deadline: t.deadline,
            decision: t.decision,
        }
    }

    /// The base delay (backoff formula clamped to `[min_delay, max_delay]`, before jitter)
    /// after `attempts_made` attempts. Non-decreasing in `attempts_made`.
    #[must_use]
    pub fn base_delay(&self, attempts_made: u32) -> Duration {
        let n = attempts_made.max(1) - 1;
        from_nanos(self.clamped_base(n))
    }

    /// Attempts after which the policy gives up, if limited. A non-repeating schedule of `k`
    /// entries implies `k + 1` when no smaller limit was set.
    #[must_use]
    pub const fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The backoff kind.
    #[must_use]
    pub const fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The jitter kind.
    #[must_use]
    pub const fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The time limit from the first failure, if any.
    #[must_use]
    pub const fn max_elapsed(&self) -> Option<Duration> {
        self.max_elapsed
    }

    /// The shortest delay.
    #[must_use]
    pub const fn min_delay(&self) -> Duration {
        self.min_delay
    }

    /// The longest delay for transient errors.
    #[must_use]
    pub const fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The longest `retry_after` honoured for throttled errors.
    #[must_use]
    pub const fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// A builder holding this policy's settings, to derive a variant.
    pub fn to_builder(&self) -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            backoff: self.backoff.clone(),
            jitter: self.jitter,
            max_attempts: self.max_attempts,
            max_elapsed: self.max_elapsed,
            min_delay: self.min_delay,
            max_delay: Some(self.max_delay),
            max_retry_after: Some(self.max_retry_after),
        }
    }

    /// The base delay of retry index `n` clamped to `[min_delay, max_delay]`.
    #[inline]
    fn clamped_base(&self, n: u32) -> u64 {
        // max then min, not u64::clamp: min_delay <= max_delay is validated, but a panic here
        // would be the worst possible failure.
        self.backoff
            .base_nanos(n)
            .max(self.nanos.min_delay)
            .min(self.nanos.max_delay)
    }

    /// The jittered delay of retry index `n` whose clamped base is `b`. Every kind draws from
    /// its own range cut to `[min_delay, max_delay]` (which holds `b`, so never empty): a delay
    /// never needs clamping afterwards, and keys do not pile up on a bound.
    #[inline]
    fn jittered(&self, key: &str, n: u32, b: u64) -> Jittered {
        let (low, high) = match self.jitter {
            Jitter::None => return Jittered::exactly(b),
            Jitter::Full => (0, b),
            Jitter::Equal => (b - b / 2, b),
            Jitter::Proportional { fraction } => {
                // fraction ∈ [0, 1] (validated): spread ≤ b, so low never underflows.
                let spread = round_non_negative(b as f64 * fraction).min(b);
                (b - spread, b.saturating_add(spread))
            }
            Jitter::Decorrelated => return self.decorrelated(key, n),
        };
        let (lo, hi) = (self.nanos.min_delay, self.nanos.max_delay);
        let cut = cut(low < lo, high > hi);
        let (low, high) = (low.max(lo), high.min(hi));
        if low == high {
            // One possible value: no need to hash the key.
            return Jittered {
                cut,
                ..Jittered::exactly(low)
            };
        }
        let draw = hash::draw(hash::key_hash(key.as_bytes()), n);
        Jittered {
            draw: Some(draw),
            previous: None,
            low,
            high,
            cut,
            value: in_range(draw, low, high),
        }
    }

    /// AWS's decorrelated jitter as a pure function of (key, n):
    /// `d_i = U(lo, min(max_delay, 3·d_{i−1}))` for `i` from `s = n − min(n, WINDOW)` to `n`,
    /// starting from `d_{s−1} = lo`, where `lo` is the clamped base delay of the first retry.
    /// Every step draws from `[lo, max_delay]`, so at the cap keys stay spread over that range.
    fn decorrelated(&self, key: &str, n: u32) -> Jittered {
        const MS: u64 = 1_000_000;
        let (lo, max) = (self.nanos.first_base, self.nanos.max_delay);
        if lo == max {
            // Every step's range is [max, max].
            return Jittered {
                previous: Some(max),
                cut: cut(false, max > 0),
                ..Jittered::exactly(max)
            };
        }
        let kh = hash::key_hash(key.as_bytes());
        let start = n.saturating_sub(DECORRELATED_WINDOW);
        // The chain before step n. Each step's range starts at lo and ends at
        // min(max, 3·previous) >= previous >= lo, so it is never empty.
        let previous = if lo % MS == 0 && max % MS == 0 {
            // Whole milliseconds throughout: the same values as `in_range`, computed in
            // milliseconds without a division on the chain's critical path.
            let (lo_ms, max_ms) = (lo / MS, max / MS);
            let mut d = lo_ms;
            for i in start..n {
                d = lo_ms + uniform_ms(hash::draw(kh, i), max_ms.min(d * 3) - lo_ms);
            }
            d * MS
        } else {
            let mut d = lo;
            for i in start..n {
                d = in_range(hash::draw(kh, i), lo, max.min(d.saturating_mul(3)));
            }
            d
        };
        let wide = previous.saturating_mul(3);
        let high = max.min(wide);
        let draw = hash::draw(kh, n);
        Jittered {
            draw: Some(draw),
            previous: Some(previous),
            low: lo,
            high,
            cut: cut(false, wide > max),
            value: in_range(draw, lo, high),
        }
    }

    /// Everything `decide` and `explain` compute. Always inlined: `decide` then drops what only
    /// `explain` needs instead of filling in a whole `Trace` through a call.
    #[inline(always)]
    fn trace(&self, a: &Attempt<'_>) -> Trace {
        let give_up = |reason| Trace {
            delay: None,
            deadline: None,
            decision: Decision::GiveUp(reason),
        };
        if a.error_class == ErrorClass::Permanent {
            return give_up(GiveUpReason::Permanent);
        }
        let made = a.attempts_made.max(1);
        if let Some(max) = self.max_attempts
            && made >= max
        {
            return give_up(GiveUpReason::MaxAttempts {
                attempts_made: a.attempts_made,
                max_attempts: max,
            });
        }

        let n = made - 1;
        let base = self.backoff.base_nanos(n);
        let clamped_base = base.max(self.nanos.min_delay).min(self.nanos.max_delay);
        let jittered = self.jittered(a.key, n, clamped_base);
        let mut delay = jittered.value;
        let retry_after = match a.error_class {
            ErrorClass::Throttled { retry_after } => {
                let capped = to_nanos(retry_after).min(self.nanos.max_retry_after);
                delay = delay.max(capped);
                Some(capped)
            }
            ErrorClass::Transient | ErrorClass::Permanent => None,
        };
        let trace = DelayTrace {
            n,
            base,
            clamped_base,
            jittered,
            retry_after,
            delay,
        };

        let Some(retry_at) = a.now.checked_add_signed(time_delta(delay)) else {
            return Trace {
                delay: Some(trace),
                deadline: None,
                decision: Decision::GiveUp(GiveUpReason::Unrepresentable),
            };
        };
        // A deadline beyond the representable range can never be reached: no deadline.
        let deadline = self.nanos.max_elapsed.and_then(|max| {
            a.first_failure_at
                .unwrap_or(a.now)
                .checked_add_signed(time_delta(max))
        });
        let decision = match deadline {
            Some(deadline) if retry_at > deadline => Decision::GiveUp(GiveUpReason::Deadline {
                deadline,
                next_retry_at: retry_at,
            }),
            _ => Decision::RetryAt(retry_at),
        };
        Trace {
            delay: Some(trace),
            deadline,
            decision,
        }
    }
}

/// `nanos` (at most `LIMIT_NANOS`) as a `TimeDelta`, with unsigned arithmetic
/// (`TimeDelta::nanoseconds` takes the slower signed, Euclidean route).
#[inline]
fn time_delta(nanos: u64) -> TimeDelta {
    const NS: u64 = 1_000_000_000;
    // secs <= LIMIT_NANOS / NS fits in i64 and the sub-second part is below 10⁹, so `new`
    // always succeeds; the fallback is never taken.
    TimeDelta::new((nanos / NS) as i64, (nanos % NS) as u32).unwrap_or(TimeDelta::MAX)
}

/// Which bounds of `[min_delay, max_delay]` cut a jitter range.
#[inline]
const fn cut(low: bool, high: bool) -> Option<Clamp> {
    match (low, high) {
        (false, false) => None,
        (true, false) => Some(Clamp::RaisedToMin),
        (false, true) => Some(Clamp::LoweredToMax),
        (true, true) => Some(Clamp::Both),
    }
}

/// A jittered value in `[lo, hi]` from a draw: uniform, then rounded to a whole millisecond
/// (so that persisted times survive millisecond-precision columns) while staying in range:
/// down when that stays at or above `lo`, else up when that stays at or below `hi`, else (a
/// range narrower than a millisecond with no whole millisecond inside) unrounded.
/// Requires `lo <= hi`.
#[inline]
fn in_range(draw: u64, lo: u64, hi: u64) -> u64 {
    const MS: u64 = 1_000_000;
    let v = lo + hash::uniform(draw, hi - lo);
    let down = v - v % MS;
    if down >= lo {
        down
    } else {
        match down.checked_add(MS) {
            Some(up) if up <= hi => up,
            _ => v,
        }
    }
}

/// `⌊uniform(draw, k·1 ms) / 1 ms⌋`: the whole milliseconds that `in_range` draws from a range
/// `[lo, lo + k ms]` whose ends are whole milliseconds (there `in_range` returns
/// `lo + floor_ms(uniform(draw, k ms))`, always ≥ `lo`).
///
/// With `draw·k = H·2⁶⁴ + L`: `draw·(k·10⁶ + 1) / (2⁶⁴·10⁶) = H + (L + draw/10⁶) / 2⁶⁴`, and
/// the last term is below 2, so the floor is `H`, plus 1 when `L + ⌊draw/10⁶⌋` carries past
/// 2⁶⁴ (L is an integer, so the fraction of `draw/10⁶` cannot decide it). Only a
/// multiplication depends on `k`; the division depends on the draw alone and runs in parallel.
#[inline]
fn uniform_ms(draw: u64, k: u64) -> u64 {
    let x = u128::from(draw) * u128::from(k);
    let (high, low) = ((x >> 64) as u64, x as u64);
    high + u64::from(low.overflowing_add(draw / 1_000_000).1)
}

// ---------------------------------------------------------------------------------------------
// Serialised form
// ---------------------------------------------------------------------------------------------

/// A duration as written in a serialised policy: text or integer milliseconds.
///
/// Deserialising never fails here: a value that is not a duration is kept as `Bad`, so that
/// [`parse`](Self::parse) can report it with the field's name (serde's untagged enums could only
/// say "data did not match any variant").
#[derive(Debug, Clone, PartialEq)]
enum RawDuration {
    Millis(u64),
    Text(String),
    Bad {
        why: crate::duration::ParseError,
        input: String,
    },
}

impl RawDuration {
    fn from_duration(d: Duration) -> Self {
        Self::Text(crate::duration::fmt_duration(d))
    }

    fn parse(&self, field: &'static str) -> Result<Duration> {
        use crate::duration::ParseError;
        let refuse = |why: ParseError, input: &str| match why {
            ParseError::Negative => Error::NegativeDuration {
                field,
                input: input.to_owned(),
            },
            ParseError::TooLarge => Error::DurationTooLarge {
                field,
                input: input.to_owned(),
            },
            ParseError::Invalid(reason) => Error::InvalidDuration {
                field,
                input: input.to_owned(),
                reason,
            },
        };
        match self {
            Self::Millis(ms) => match ms.checked_mul(1_000_000) {
                Some(n) if n <= LIMIT_NANOS => Ok(from_nanos(n)),
                _ => Err(refuse(ParseError::TooLarge, &format!("{ms}ms"))),
            },
            Self::Text(text) => crate::duration::parse(text)
                .map(from_nanos)
                .map_err(|why| refuse(why, text)),
            Self::Bad { why, input } => Err(refuse(*why, input)),
        }
    }
}

impl Serialize for RawDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Millis(ms) => s.serialize_u64(*ms),
            Self::Text(text) | Self::Bad { input: text, .. } => s.serialize_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(RawDurationVisitor)
    }
}

struct RawDurationVisitor;

impl<'de> serde::de::Visitor<'de> for RawDurationVisitor {
    type Value = RawDuration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration as text (\"1.5s\") or integer milliseconds")
    }

    fn visit_u64<E>(self, ms: u64) -> std::result::Result<RawDuration, E> {
        Ok(RawDuration::Millis(ms))
    }

    fn visit_i64<E>(self, ms: i64) -> std::result::Result<RawDuration, E> {
        Ok(match u64::try_from(ms) {
            Ok(ms) => RawDuration::Millis(ms),
            Err(_) => bad(crate::duration::ParseError::Negative, format!("{ms}ms")),
        })
    }

    /// Floats are never durations, but say why: negative, too large (JSON integers beyond
    /// u64 arrive as floats), or not an integer.
    fn visit_f64<E>(self, ms: f64) -> std::result::Result<RawDuration, E> {
        use crate::duration::ParseError;
        Ok(if ms < 0.0 {
            bad(ParseError::Negative, format!("{ms}ms"))
        } else if ms * 1e6 > LIMIT_NANOS as f64 {
            bad(ParseError::TooLarge, format!("{ms}ms"))
        } else {
            bad(
                ParseError::Invalid("a floating-point number; milliseconds must be an integer"),
                ms.to_string(),
            )
        })
    }

    fn visit_str<E>(self, text: &str) -> std::result::Result<RawDuration, E> {
        Ok(RawDuration::Text(text.to_owned()))
    }

    fn visit_string<E>(self, text: String) -> std::result::Result<RawDuration, E> {
        Ok(RawDuration::Text(text))
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<RawDuration, E> {
        Ok(not_a_duration("a boolean", v.to_string()))
    }

    fn visit_unit<E>(self) -> std::result::Result<RawDuration, E> {
        Ok(not_a_duration("null", "null".to_owned()))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<RawDuration, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(not_a_duration("a list", "[…]".to_owned()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<RawDuration, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(not_a_duration("an object", "{…}".to_owned()))
    }
}

fn bad(why: crate::duration::ParseError, input: String) -> RawDuration {
    RawDuration::Bad { why, input }
}

fn not_a_duration(what: &'static str, input: String) -> RawDuration {
    bad(crate::duration::ParseError::Invalid(what), input)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum BackoffSpec {
    Constant {
        delay: RawDuration,
    },
    Linear {
        initial: RawDuration,
        step: RawDuration,
    },
    Exponential {
        initial: RawDuration,
        factor: f64,
    },
    Schedule {
        delays: Vec<RawDuration>,
        #[serde(default)]
        repeat_last: bool,
    },
    Polynomial {
        #[serde(deserialize_with = "exponent")]
        exponent: u32,
        #[serde(default = "one_second")]
        unit: RawDuration,
        #[serde(default = "zero")]
        offset: RawDuration,
        #[serde(default, deserialize_with = "shift")]
        shift: u32,
    },
}

fn exponent<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u32, D::Error> {
    d.deserialize_any(WholeNumber("backoff.exponent"))
}

fn shift<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u32, D::Error> {
    d.deserialize_any(WholeNumber("backoff.shift"))
}

/// A `u32` setting whose errors name it: serde's own say only "expected u32".
struct WholeNumber(&'static str);

impl serde::de::Visitor<'_> for WholeNumber {
    type Value = u32;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` as a whole number from 0 to {}", self.0, u32::MAX)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<u32, E> {
        u32::try_from(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<u32, E> {
        u32::try_from(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<u32, E> {
        Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
    }
}

fn one_second() -> RawDuration {
    RawDuration::Text("1s".to_owned())
}

fn zero() -> RawDuration {
    RawDuration::Text("0s".to_owned())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    backoff: BackoffSpec,
    #[serde(default)]
    jitter: Jitter,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_elapsed: Option<RawDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_delay: Option<RawDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_delay: Option<RawDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_retry_after: Option<RawDuration>,
}

impl From<RetryPolicy> for PolicySpec {
    fn from(p: RetryPolicy) -> Self {
        let d = RawDuration::from_duration;
        let backoff = match p.backoff {
            Backoff::Constant { delay } => BackoffSpec::Constant { delay: d(delay) },
            Backoff::Linear { initial, step } => BackoffSpec::Linear {
                initial: d(initial),
                step: d(step),
            },
            Backoff::Exponential { initial, factor } => BackoffSpec::Exponential {
                initial: d(initial),
                factor,
            },
            Backoff::Schedule {
                delays,
                repeat_last,
            } => BackoffSpec::Schedule {
                delays: delays.into_iter().map(d).collect(),
                repeat_last,
            },
            Backoff::Polynomial {
                exponent,
                unit,
                offset,
                shift,
            } => BackoffSpec::Polynomial {
                exponent,
                unit: d(unit),
                offset: d(offset),
                shift,
            },
        };
        Self {
            backoff,
            jitter: p.jitter,
            max_attempts: p.max_attempts,
            max_elapsed: p.max_elapsed.map(d),
            min_delay: Some(d(p.min_delay)),
            max_delay: Some(d(p.max_delay)),
            max_retry_after: Some(d(p.max_retry_after)),
        }
    }
}

impl TryFrom<PolicySpec> for RetryPolicy {
    type Error = Error;

    fn try_from(s: PolicySpec) -> Result<Self> {
        let backoff = match s.backoff {
            BackoffSpec::Constant { delay } => Backoff::Constant {
                delay: delay.parse("backoff.delay")?,
            },
            BackoffSpec::Linear { initial, step } => Backoff::Linear {
                initial: initial.parse("backoff.initial")?,
                step: step.parse("backoff.step")?,
            },
            BackoffSpec::Exponential { initial, factor } => Backoff::Exponential {
                initial: initial.parse("backoff.initial")?,
                factor,
            },
            BackoffSpec::Schedule {
                delays,
                repeat_last,
            } => Backoff::Schedule {
                delays: delays
                    .iter()
                    .map(|d| d.parse("backoff.delays"))
                    .collect::<Result<_>>()?,
                repeat_last,
            },
            BackoffSpec::Polynomial {
                exponent,
                unit,
                offset,
                shift,
            } => Backoff::Polynomial {
                exponent,
                unit: unit.parse("backoff.unit")?,
                offset: offset.parse("backoff.offset")?,
                shift,
            },
        };
        let mut b = RetryPolicy::builder().backoff(backoff).jitter(s.jitter);
        if let Some(max) = s.max_attempts {
            b = b.max_attempts(max);
        }
        if let Some(v) = s.max_elapsed {
            b = b.max_elapsed(v.parse("max_elapsed")?);
        }
        if let Some(v) = s.min_delay {
            b = b.min_delay(v.parse("min_delay")?);
        }
        if let Some(v) = s.max_delay {
            b = b.max_delay(v.parse("max_delay")?);
        }
        if let Some(v) = s.max_retry_after {
            b = b.max_retry_after(v.parse("max_retry_after")?);
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decorrelated recurrence written out naively: every step through `in_range`, no
    /// millisecond path, no shortcut when the first delay is already `max_delay`.
    fn naive_decorrelated(p: &RetryPolicy, key: &str, n: u32) -> (u64, u64) {
        let kh = hash::key_hash(key.as_bytes());
        let lo = p.clamped_base(0);
        let start = n.saturating_sub(DECORRELATED_WINDOW);
        let mut previous = lo;
        let mut current = lo;
        for i in start..=n {
            previous = current;
            let hi = p.nanos.max_delay.min(previous.saturating_mul(3));
            current = in_range(hash::draw(kh, i), lo, hi);
        }
        (previous, current)
    }

    #[test]
    fn decorrelated_fast_paths_match_the_plain_recurrence() {
        let s = Duration::from_secs;
        let ns = Duration::from_nanos;
        let policies = [
            // whole milliseconds: the millisecond chain
            RetryPolicy::builder()
                .backoff(Backoff::constant(s(1)))
                .max_delay(s(30))
                .build(),
            RetryPolicy::builder().max_delay(s(100)).build(),
            RetryPolicy::builder()
                .backoff(Backoff::linear(Duration::ZERO, s(1)))
                .min_delay(s(2))
                .max_delay(s(20))
                .build(),
            RetryPolicy::builder()
                .backoff(Backoff::schedule_repeating([1, 1, 5, 60].map(s)))
                .max_delay(s(60))
                .build(),
            // not whole milliseconds: the nanosecond chain
            RetryPolicy::builder()
                .backoff(Backoff::constant(ns(1_234_567)))
                .max_delay(ns(987_654_321))
                .build(),
            RetryPolicy::builder()
                .backoff(Backoff::constant(ns(3)))
                .max_delay(ns(2_000_000))
                .build(),
            // first delay at the cap: every delay is max_delay
            RetryPolicy::builder()
                .backoff(Backoff::constant(s(10)))
                .max_delay(s(5))
                .build(),
        ];
        for p in policies {
            let p = p
                .expect("valid")
                .to_builder()
                .jitter(Jitter::Decorrelated)
                .build()
                .expect("valid");
            for key in ["a", "job-42", "message:0001"] {
                for n in (0..60).chain([1_000, u32::MAX]) {
                    let j = p.decorrelated(key, n);
                    let (previous, value) = naive_decorrelated(&p, key, n);
                    assert_eq!(
                        (j.previous, j.value),
                        (Some(previous), value),
                        "{p:?} {key} {n}"
                    );
                    assert!(j.low <= j.value && j.value <= j.high, "{p:?} {key} {n}");
                }
            }
        }
    }

    #[test]
    fn uniform_ms_is_in_range_on_whole_milliseconds() {
        const MS: u64 = 1_000_000;
        // Draws spread over the whole u64 range, plus the ends and values just around the
        // points where the carry flips.
        let mut draws: Vec<u64> = (0..2_000_u64)
            .map(|i| hash::draw(hash::key_hash(&i.to_le_bytes()), 0))
            .collect();
        draws.extend([
            0,
            1,
            MS - 1,
            MS,
            u64::MAX,
            u64::MAX - 1,
            1 << 63,
            (1 << 63) - 1,
        ]);
        for k in [0_u64, 1, 2, 3, 7, 999, 1_000, 299_000, 3_153_600_000_000] {
            // The draws where ⌊draw·(k ms + 1) / 2⁶⁴ / 1 ms⌋ steps from j − 1 to j: the carry.
            let mut edges = draws.clone();
            for j in 1..=k.min(20) {
                let edge = ((u128::from(j) << 64) * u128::from(MS)) / (u128::from(k * MS) + 1);
                let edge = u64::try_from(edge).unwrap_or(u64::MAX);
                edges.extend((0..5).map(|t| edge.saturating_add(t).saturating_sub(2)));
            }
            for &d in &edges {
                for lo_ms in [0, 1, 1_000] {
                    let (lo, hi) = (lo_ms * MS, (lo_ms + k) * MS);
                    assert_eq!(
                        (lo_ms + uniform_ms(d, k)) * MS,
                        in_range(d, lo, hi),
                        "draw {d:#x}, k {k}, lo {lo_ms} ms"
                    );
                }
            }
        }
    }
}
