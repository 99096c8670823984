//! Backoff kinds (how the base delay grows) and jitter kinds (how it is spread).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::{LIMIT_NANOS, to_nanos};

/// How the base delay grows with the retry index `n` (0 for the first retry, see
/// [the counting convention](crate#counting-attempts)).
///
/// Every formula is computed in integer nanoseconds (the exponential one with IEEE-754
/// multiplications only, which every platform rounds alike) and saturates instead of
/// overflowing; the result is then clamped to the policy's `[min_delay, max_delay]`.
/// Every kind is non-decreasing in `n`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// The same delay every time.
    Constant {
        /// The delay.
        delay: Duration,
    },
    /// `initial + step·n`.
    Linear {
        /// Delay before the first retry.
        initial: Duration,
        /// Added for every further retry.
        step: Duration,
    },
    /// `initial·factor^n`.
    Exponential {
        /// Delay before the first retry; above zero.
        initial: Duration,
        /// Growth per retry: exactly 1, or in `[1.001, 1000]`; kept to 6 decimal places.
        factor: f64,
    },
    /// The `n`-th entry of an explicit list, e.g. 5, 15, 30, 60, 120 minutes.
    ///
    /// Past the end, the last entry is used when `repeat_last` is set; otherwise the policy stops
    /// retrying there (its `max_attempts` is at most `delays.len() + 1`).
    Schedule {
        /// The delays, non-decreasing.
        delays: Vec<Duration>,
        /// Keep using the last entry once the list is exhausted.
        repeat_last: bool,
    },
    /// `offset + unit·(n + shift)^exponent`. Sidekiq's `15 + n^4` seconds is
    /// `{ exponent: 4, unit: 1s, offset: 15s, shift: 0 }`; River's `attempt^4` seconds, which
    /// counts the first retry as 1 (1 s, 16 s, 81 s, …), is `{ exponent: 4, unit: 1s, offset: 0s,
    /// shift: 1 }`.
    Polynomial {
        /// The power `k`.
        exponent: u32,
        /// What `(n + shift)^k` counts: usually one second.
        unit: Duration,
        /// Added to every delay.
        offset: Duration,
        /// Added to the retry index before the power: 1 makes the first retry count as 1.
        shift: u32,
    },
}

impl Backoff {
    /// [`Backoff::Constant`].
    #[must_use]
    pub const fn constant(delay: Duration) -> Self {
        Self::Constant { delay }
    }

    /// [`Backoff::Linear`]: `initial + step·n`.
    #[must_use]
    pub const fn linear(initial: Duration, step: Duration) -> Self {
        Self::Linear { initial, step }
    }

    /// [`Backoff::Exponential`]: `initial·factor^n`.
    #[must_use]
    pub const fn exponential(initial: Duration, factor: f64) -> Self {
        Self::Exponential { initial, factor }
    }

    /// [`Backoff::Schedule`] that stops retrying after its last entry.
    #[must_use]
    pub fn schedule(delays: impl IntoIterator<Item = Duration>) -> Self {
        Self::Schedule {
            delays: delays.into_iter().collect(),
            repeat_last: false,
        }
    }

    /// [`Backoff::Schedule`] that keeps using its last entry.
    #[must_use]
    pub fn schedule_repeating(delays: impl IntoIterator<Item = Duration>) -> Self {
        Self::Schedule {
            delays: delays.into_iter().collect(),
            repeat_last: true,
        }
    }

    /// [`Backoff::Polynomial`] without a shift: `offset + unit·n^exponent`.
    #[must_use]
    pub const fn polynomial(exponent: u32, unit: Duration, offset: Duration) -> Self {
        Self::polynomial_shifted(exponent, unit, offset, 0)
    }

    /// [`Backoff::Polynomial`]: `offset + unit·(n + shift)^exponent`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use retry_policy::{Backoff, RetryPolicy};
    /// // River's default: attempt^4 seconds, where the first retry is attempt 1.
    /// let river = Backoff::polynomial_shifted(4, Duration::from_secs(1), Duration::ZERO, 1);
    /// let policy = RetryPolicy::builder().backoff(river).build()?;
    /// let delays: Vec<u64> = (1..=4).map(|made| policy.base_delay(made).as_secs()).collect();
    /// assert_eq!(delays, [1, 16, 81, 256]);
    /// # Ok::<(), retry_policy::Error>(())
    /// ```
    #[must_use]
    pub const fn polynomial_shifted(
        exponent: u32,
        unit: Duration,
        offset: Duration,
        shift: u32,
    ) -> Self {
        Self::Polynomial {
            exponent,
            unit,
            offset,
            shift,
        }
    }

    /// Short name of the kind, as used in the serialised form.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Constant { .. } => "constant",
            Self::Linear { .. } => "linear",
            Self::Exponential { .. } => "exponential",
            Self::Schedule { .. } => "schedule",
            Self::Polynomial { .. } => "polynomial",
        }
    }

    /// The unclamped base delay for retry index `n`, in nanoseconds, saturated at the limit.
    #[inline(always)]
    pub(crate) fn base_nanos(&self, n: u32) -> u64 {
        let n64 = u64::from(n);
        match self {
            Self::Constant { delay } => to_nanos(*delay),
            Self::Linear { initial, step } => to_nanos(*initial)
                .saturating_add(to_nanos(*step).saturating_mul(n64))
                .min(LIMIT_NANOS),
            Self::Exponential { initial, factor } => {
                exponential_nanos(to_nanos(*initial), *factor, n)
            }
            Self::Schedule { delays, .. } => {
                let i = usize::try_from(n).unwrap_or(usize::MAX);
                delays
                    .get(i)
                    .or_else(|| delays.last())
                    .map_or(0, |d| to_nanos(*d))
            }
            Self::Polynomial {
                exponent,
                unit,
                offset,
                shift,
            } => {
                // n + shift <= 2·u32::MAX: no overflow in u64.
                let x = u128::from(n64 + u64::from(*shift));
                let power = x.checked_pow(*exponent).unwrap_or(u128::MAX);
                let scaled = power.saturating_mul(u128::from(to_nanos(*unit)));
                let total = scaled.saturating_add(u128::from(to_nanos(*offset)));
                // min() keeps it in u64 range.
                total.min(u128::from(LIMIT_NANOS)) as u64
            }
        }
    }
}

/// `initial·factor^n` in nanoseconds, saturated at the limit.
///
/// `factor^n` is computed by binary exponentiation with plain `f64` multiplications (correctly
/// rounded by IEEE 754 on every platform Rust supports; `powi`/`powf` are not guaranteed to be),
/// stopping early once the product can only exceed the limit. With `factor` = 1 or ≥ 1.001 the
/// rounding error stays far below one step of growth, so the result is non-decreasing in `n`.
#[inline]
fn exponential_nanos(initial: u64, factor: f64, n: u32) -> u64 {
    const LIMIT: f64 = LIMIT_NANOS as f64;
    if n == 0 || factor == 1.0 {
        return initial.min(LIMIT_NANOS);
    }
    let mut result = 1.0_f64;
    let mut base = factor;
    let mut e = n;
    loop {
        if e & 1 == 1 {
            result *= base;
            // initial >= 1 ns, so beyond this the product only grows past the limit.
            if result >= LIMIT {
                return LIMIT_NANOS;
            }
        }
        e >>= 1;
        if e == 0 {
            break;
        }
        base *= base;
    }
    let v = initial as f64 * result;
    if v >= LIMIT {
        LIMIT_NANOS
    } else {
        round_non_negative(v)
    }
}

/// `x.round() as u64` for `0 <= x < 2⁶⁴` (half away from zero), without the libm call that
/// `f64::round` compiles to on baseline x86-64: the truncating cast is one instruction, and
/// `x − trunc(x)` is exact in `f64` for non-negative `x`.
#[inline]
pub(crate) fn round_non_negative(x: f64) -> u64 {
    let t = x as u64;
    if x - t as f64 >= 0.5 { t + 1 } else { t }
}

/// How the base delay is spread so that records failing together do not retry together.
///
/// Every kind draws from a stable hash of the record key and the retry index, so the same inputs
/// always give the same delay (see `docs/retry-policy.md` for the formulas). Each kind's range is
/// first cut to the policy's `[min_delay, max_delay]` and the draw is made inside the cut range,
/// so every delay respects the bounds without being clamped onto them: at the cap, keys stay
/// spread below `max_delay` instead of all retrying at exactly `max_delay`. A jittered delay is
/// a whole number of milliseconds whenever its range holds one (rounded down, or up when down
/// would leave the range), so a retry time stored in a millisecond-precision column is
/// recomputed exactly.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Jitter {
    /// No jitter: the base delay itself.
    #[default]
    None,
    /// Uniform in `[0, base]` (AWS "full jitter").
    Full,
    /// Uniform in `[base/2, base]` (AWS "equal jitter").
    Equal,
    /// AWS "decorrelated jitter", made a pure function of (key, retry index): uniform in
    /// `[b₀, min(max_delay, 3·previous)]`, where `b₀` is the first retry's base delay and
    /// `previous` is this same formula for the retry before, recomputed (not remembered) over
    /// at most 16 previous retries. Growth comes from the jitter itself: the backoff supplies
    /// only `b₀` (AWS's `base`), so pair it with [`Backoff::Constant`]. `b₀` must be above zero
    /// (after `min_delay`), else [`Error::ZeroDecorrelatedBase`](crate::Error::ZeroDecorrelatedBase).
    Decorrelated,
    /// Uniform in `[base·(1 − fraction), base·(1 + fraction)]`, e.g. gRPC's ±20 %.
    Proportional {
        /// The spread, in `[0, 1]`; kept to 6 decimal places.
        fraction: f64,
    },
}

impl Jitter {
    /// Short name of the kind, as used in the serialised form.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Full => "full",
            Self::Equal => "equal",
            Self::Decorrelated => "decorrelated",
            Self::Proportional { .. } => "proportional",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn formulas() {
        let c = Backoff::constant(Duration::from_secs(7));
        assert_eq!([c.base_nanos(0), c.base_nanos(9)], [7 * S, 7 * S]);

        let l = Backoff::linear(Duration::from_secs(60), Duration::from_secs(60));
        let got: Vec<u64> = (0..5).map(|n| l.base_nanos(n) / S).collect();
        assert_eq!(got, [60, 120, 180, 240, 300]);

        let e = Backoff::exponential(Duration::from_secs(1), 2.0);
        let got: Vec<u64> = (0..5).map(|n| e.base_nanos(n) / S).collect();
        assert_eq!(got, [1, 2, 4, 8, 16]);

        let g = Backoff::exponential(Duration::from_secs(1), 1.6);
        // 1.6^3 = 4.096 exactly in decimal; the f64 product rounds to the nearest nanosecond.
        assert_eq!(g.base_nanos(3), 4_096_000_000);

        let s = Backoff::schedule([5, 15, 30].map(|m| Duration::from_secs(m * 60)));
        let got: Vec<u64> = (0..5).map(|n| s.base_nanos(n) / S / 60).collect();
        assert_eq!(got, [5, 15, 30, 30, 30]);

        let p = Backoff::polynomial(4, Duration::from_secs(1), Duration::from_secs(15));
        let got: Vec<u64> = (0..4).map(|n| p.base_nanos(n) / S).collect();
        assert_eq!(got, [15, 16, 31, 96]);

        // River: attempt^4 seconds with the first retry counted as 1.
        let r = Backoff::polynomial_shifted(4, Duration::from_secs(1), Duration::ZERO, 1);
        let got: Vec<u64> = (0..5).map(|n| r.base_nanos(n) / S).collect();
        assert_eq!(got, [1, 16, 81, 256, 625]);

        // A shift applies before the power, the offset after it.
        let q =
            Backoff::polynomial_shifted(2, Duration::from_millis(10), Duration::from_secs(1), 3);
        let got: Vec<u64> = (0..3).map(|n| q.base_nanos(n) / 1_000_000).collect();
        assert_eq!(got, [1_090, 1_160, 1_250]);
    }

    #[test]
    fn round_non_negative_is_f64_round() {
        let mut xs = vec![
            0.0,
            0.49999999999999994,
            0.5,
            1.5,
            2.5,
            4_503_599_627_370_495.5,
        ];
        xs.extend((0..10_000).map(|i| f64::from(i) * 0.123_456_7));
        xs.extend((0..200).map(|i| 1.6_f64.powi(i) * 1e9));
        xs.extend((0..64).map(|i| 2_f64.powi(i) - 0.5));
        for x in xs.into_iter().filter(|x| *x < 1.8e19) {
            assert_eq!(round_non_negative(x), x.round() as u64, "{x}");
        }
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let huge = Duration::from_secs(u64::MAX);
        for b in [
            Backoff::constant(huge),
            Backoff::linear(huge, huge),
            Backoff::exponential(Duration::from_nanos(1), 1e300), // unvalidated: saturates anyway
            Backoff::exponential(Duration::from_secs(1), 2.0),
            Backoff::polynomial(u32::MAX, huge, huge),
            Backoff::polynomial_shifted(u32::MAX, huge, huge, u32::MAX),
            Backoff::polynomial_shifted(2, Duration::from_nanos(1), Duration::ZERO, u32::MAX),
        ] {
            assert_eq!(b.base_nanos(u32::MAX), LIMIT_NANOS, "{b:?}");
        }
        assert_eq!(Backoff::schedule([]).base_nanos(3), 0);
    }
}
