//! Properties that hold for every valid policy and every input.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use retry_policy::{Attempt, Backoff, Decision, Error, ErrorClass, Jitter, RetryPolicy};

const LIMIT_NANOS: u64 = 100 * 365 * 86_400 * 1_000_000_000;

/// Durations from nothing to the limit, weighted towards realistic values.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => (0_u64..=3_600_000).prop_map(Duration::from_millis),
        1 => (0_u64..=LIMIT_NANOS).prop_map(Duration::from_nanos),
        1 => Just(Duration::ZERO),
        1 => Just(RetryPolicy::DURATION_LIMIT),
    ]
}

fn factor() -> impl Strategy<Value = f64> {
    prop_oneof![Just(1.0), 1.001_f64..1.01, 1.01_f64..4.0, 4.0_f64..=1000.0,]
}

fn backoff() -> impl Strategy<Value = Backoff> {
    prop_oneof![
        duration().prop_map(Backoff::constant),
        (duration(), duration()).prop_map(|(i, s)| Backoff::linear(i, s)),
        (duration(), factor())
            .prop_map(|(i, f)| Backoff::exponential(i.max(Duration::from_nanos(1)), f)),
        (prop::collection::vec(duration(), 1..8), any::<bool>()).prop_map(|(mut d, repeat)| {
            d.sort();
            Backoff::Schedule {
                delays: d,
                repeat_last: repeat,
            }
        }),
        (
            0_u32..12,
            duration(),
            duration(),
            prop_oneof![Just(0_u32), 0_u32..5, any::<u32>()]
        )
            .prop_map(|(k, u, o, s)| Backoff::polynomial_shifted(k, u, o, s)),
    ]
}

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated),
        (0.0_f64..=1.0).prop_map(|fraction| Jitter::Proportional { fraction }),
    ]
}

prop_compose! {
    fn policy()(
        backoff in backoff(),
        jitter in jitter(),
        max_attempts in prop::option::of(prop_oneof![1_u32..20, Just(u32::MAX)]),
        max_elapsed in prop::option::of(duration()),
        a in duration(),
        b in prop::option::of(duration()),
        max_retry_after in prop::option::of(duration()),
    ) -> RetryPolicy {
        let mut builder = RetryPolicy::builder().backoff(backoff.clone()).jitter(jitter);
        if let Some(m) = max_attempts {
            // A non-repeating schedule cannot take more attempts than it has entries + 1.
            let m = match &backoff {
                Backoff::Schedule { delays, repeat_last: false } => m.min(delays.len() as u32 + 1),
                _ => m,
            };
            builder = builder.max_attempts(m);
        }
        if let Some(e) = max_elapsed {
            builder = builder.max_elapsed(e);
        }
        let (min, max) = match b {
            Some(b) => (a.min(b), Some(a.max(b))),
            None => (a.min(Duration::from_secs(1)), None),
        };
        builder = builder.min_delay(min);
        if let Some(max) = max {
            builder = builder.max_delay(max);
        }
        if let Some(r) = max_retry_after {
            builder = builder.max_retry_after(r);
        }
        match builder.clone().build() {
            // Decorrelated jitter from a first delay of zero is refused (it would stay at
            // zero); the same settings with full jitter instead.
            Err(Error::ZeroDecorrelatedBase) => builder.jitter(Jitter::Full).build(),
            other => other,
        }
        .expect("the strategy only builds valid policies")
    }
}

/// Any instant from 1970 to about 2500, at nanosecond precision.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (0_i64..16_725_225_600, 0_u32..1_000_000_000)
        .prop_map(|(s, ns)| DateTime::from_timestamp(s, ns).expect("in range"))
}

fn error_class() -> impl Strategy<Value = ErrorClass> {
    prop_oneof![
        3 => Just(ErrorClass::Transient),
        1 => duration().prop_map(ErrorClass::throttled),
        1 => Just(ErrorClass::throttled(Duration::MAX)),
        1 => Just(ErrorClass::Permanent),
    ]
}

fn attempts() -> impl Strategy<Value = u32> {
    prop_oneof![0_u32..30, any::<u32>(), Just(u32::MAX)]
}

#[derive(Debug, Clone)]
struct Facts {
    key: String,
    attempts_made: u32,
    first_failure_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    error_class: ErrorClass,
}

impl Facts {
    fn attempt(&self) -> Attempt<'_> {
        Attempt {
            key: &self.key,
            attempts_made: self.attempts_made,
            first_failure_at: self.first_failure_at,
            now: self.now,
            error_class: self.error_class,
        }
    }
}

prop_compose! {
    fn facts()(
        key in "\\PC{0,40}",
        attempts_made in attempts(),
        now in instant(),
        since_first in prop::option::of(0_i64..10_000_000),
        error_class in error_class(),
    ) -> Facts {
        Facts {
            key,
            attempts_made,
            first_failure_at: since_first.map(|s| now - TimeDelta::seconds(s)),
            now,
            error_class,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_delay_lies_within_the_bounds(p in policy(), f in facts()) {
        if let Decision::RetryAt(at) = p.decide(&f.attempt()) {
            let delay = (at - f.now).to_std().expect("never in the past");
            let upper = match f.error_class {
                ErrorClass::Throttled { .. } => p.max_delay().max(p.max_retry_after()),
                _ => p.max_delay(),
            };
            prop_assert!(delay >= p.min_delay(), "{delay:?} < {:?}", p.min_delay());
            prop_assert!(delay <= upper, "{delay:?} > {upper:?}");
        }
    }

    #[test]
    fn base_delay_is_non_decreasing_in_attempts(p in policy(), made in attempts()) {
        let next = made.saturating_add(1);
        prop_assert!(p.base_delay(made) <= p.base_delay(next), "{:?} > {:?}", p.base_delay(made), p.base_delay(next));
    }

    #[test]
    fn exponential_base_is_non_decreasing_even_for_factors_near_one(
        factor in prop_oneof![Just(1.001), 1.001_f64..1.002, 1.002_f64..2.0],
        initial_ns in 1_u64..=LIMIT_NANOS,
        made in attempts(),
    ) {
        let p = RetryPolicy::builder()
            .backoff(Backoff::exponential(Duration::from_nanos(initial_ns), factor))
            .build()
            .unwrap();
        prop_assert!(p.base_delay(made) <= p.base_delay(made.saturating_add(1)));
    }

    #[test]
    fn same_inputs_give_the_same_decision(p in policy(), f in facts()) {
        let a = f.attempt();
        let first = p.decide(&a);
        prop_assert_eq!(first, p.decide(&a));
        prop_assert_eq!(first, p.clone().decide(&a));
        // A policy that went through storage decides the same.
        let stored: RetryPolicy = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        prop_assert_eq!(&stored, &p);
        prop_assert_eq!(first, stored.decide(&a));
        // And explain() explains exactly that decision.
        prop_assert_eq!(p.explain(&a).decision, first);
    }

    #[test]
    fn never_past_the_deadline(p in policy(), f in facts()) {
        let a = f.attempt();
        if let (Some(max), Decision::RetryAt(at)) = (p.max_elapsed(), p.decide(&a)) {
            let start = a.first_failure_at.unwrap_or(a.now);
            let deadline = start + TimeDelta::from_std(max).unwrap();
            prop_assert!(at <= deadline, "{at} > {deadline}");
        }
    }

    #[test]
    fn permanent_never_retries(p in policy(), f in facts()) {
        let a = f.attempt().error_class(ErrorClass::Permanent);
        prop_assert!(p.decide(&a).is_give_up());
    }

    #[test]
    fn attempts_at_or_over_the_limit_never_retry(p in policy(), f in facts()) {
        if let Some(max) = p.max_attempts() {
            let a = Attempt { attempts_made: max.max(f.attempts_made), ..f.attempt() };
            prop_assert!(p.decide(&a).is_give_up());
        }
    }

    #[test]
    fn different_keys_spread_out(
        prefix in "[a-z]{0,12}",
        made in 1_u32..10,
        jitter in prop_oneof![Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::Decorrelated), Just(Jitter::Proportional { fraction: 0.5 })],
        now in instant(),
    ) {
        let p = RetryPolicy::builder()
            .backoff(Backoff::constant(Duration::from_secs(100)))
            .jitter(jitter)
            .build()
            .unwrap();
        let delays: Vec<Duration> = (0..200)
            .map(|i| {
                let key = format!("{prefix}{i}");
                p.decide(&Attempt::new(&key, made, now)).delay_after(now).unwrap()
            })
            .collect();
        // Practically every key gets its own delay (ms resolution over ≥ 50 s)…
        let distinct: HashSet<&Duration> = delays.iter().collect();
        prop_assert!(distinct.len() >= 190, "{jitter:?}: {} distinct", distinct.len());
        // …and the middle half of them spans a good part of the range, not a cluster.
        let mut sorted = delays.clone();
        sorted.sort();
        let iqr = sorted[150] - sorted[50];
        prop_assert!(iqr >= Duration::from_secs(10), "{jitter:?}: interquartile range {iqr:?}");
        // The uniform kinds fill their range evenly: all ten buckets of it are hit.
        if jitter != Jitter::Decorrelated {
            let (lo, hi) = (sorted[0], sorted[199]);
            let width = (hi - lo).as_secs_f64();
            let buckets: HashSet<u64> = delays
                .iter()
                .map(|d| (((*d - lo).as_secs_f64() / width) * 9.999) as u64)
                .collect();
            prop_assert_eq!(buckets.len(), 10, "{:?}", jitter);
        }
    }

    /// Once the backoff is capped, jitter still spreads keys over a range: none piles up on
    /// `max_delay` (or on `min_delay`), which would bring back the thundering herd.
    #[test]
    fn keys_stay_spread_at_the_cap(
        prefix in "[a-z]{0,12}",
        made in prop_oneof![8_u32..40, Just(u32::MAX)],
        jitter in prop_oneof![
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
            (0.2_f64..=1.0).prop_map(|fraction| Jitter::Proportional { fraction }),
        ],
        now in instant(),
    ) {
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(60));
        let p = RetryPolicy::builder()
            .backoff(Backoff::exponential(Duration::from_secs(1), 2.0))
            .jitter(jitter)
            .min_delay(min)
            .max_delay(max)
            .build()
            .unwrap();
        prop_assert_eq!(p.base_delay(made), max, "the base is capped from the 7th attempt");
        let delays: Vec<Duration> = (0..200)
            .map(|i| {
                let key = format!("{prefix}{i}");
                p.decide(&Attempt::new(&key, made, now)).delay_after(now).unwrap()
            })
            .collect();
        let distinct: HashSet<&Duration> = delays.iter().collect();
        prop_assert!(distinct.len() >= 190, "{jitter:?}: {} distinct", distinct.len());
        let on_a_bound = delays.iter().filter(|d| **d == max || **d == min).count();
        prop_assert!(on_a_bound <= 2, "{jitter:?}: {on_a_bound} of 200 exactly on a bound");
        // The middle half covers a good part of the range the kind draws from at the cap:
        // [min, max] for full and decorrelated, [max/2, max] for equal, [max − f·max, max] for
        // proportional (half of it for the uniform kinds, on average).
        let low = match jitter {
            Jitter::Equal => max / 2,
            Jitter::Proportional { fraction } => max.mul_f64(1.0 - fraction).max(min),
            _ => min,
        };
        let mut sorted = delays.clone();
        sorted.sort();
        let iqr = sorted[150] - sorted[50];
        prop_assert!(iqr >= (max - low) / 6, "{jitter:?}: interquartile range {iqr:?}");
    }

    #[test]
    fn jitter_draws_from_its_documented_range_in_whole_milliseconds(p in policy(), f in facts()) {
        let e = p.explain(&f.attempt());
        if let Some(d) = e.delay {
            // explain() reports the documented range, and the jittered delay lies inside it…
            let (lo, hi) = jitter_range(&p, &d);
            prop_assert_eq!((d.low.as_nanos(), d.high.as_nanos()), (lo, hi), "{:?}", d);
            let j = d.jittered.as_nanos();
            prop_assert!(lo <= j && j <= hi, "{:?}", d);
            // …and is a whole millisecond whenever the range holds one.
            let whole_inside = lo.div_ceil(1_000_000) * 1_000_000 <= hi;
            if whole_inside {
                prop_assert_eq!(j % 1_000_000, 0, "{:?}", d);
            }
            // A draw is made exactly when there is a choice.
            prop_assert_eq!(d.draw.is_some(), lo < hi, "{:?}", d);
        }
    }

    #[test]
    fn no_panic_on_any_serialised_duration(
        text in "\\PC{0,24}",
        ms in any::<i64>(),
        big in any::<u64>(),
        float in any::<f64>(),
    ) {
        for value in [
            serde_json::json!(text),
            serde_json::json!(ms),
            serde_json::json!(big),
            serde_json::json!(float),
        ] {
            let json = serde_json::json!({
                "backoff": { "kind": "constant", "delay": value.clone() },
                "max_delay": value,
            });
            // Either a policy or an error; never a panic.
            let _ = serde_json::from_value::<RetryPolicy>(json).map(|p| {
                p.decide(&Attempt::new("k", u32::MAX, DateTime::<Utc>::MAX_UTC))
            });
        }
    }
}

#[test]
fn extreme_inputs_do_not_panic() {
    let extremes = [
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::UNIX_EPOCH,
        DateTime::<Utc>::MAX_UTC,
    ];
    let policies = [
        RetryPolicy::builder()
            .backoff(Backoff::polynomial(
                u32::MAX,
                RetryPolicy::DURATION_LIMIT,
                RetryPolicy::DURATION_LIMIT,
            ))
            .jitter(Jitter::Decorrelated)
            .max_elapsed(RetryPolicy::DURATION_LIMIT)
            .build()
            .unwrap(),
        RetryPolicy::builder()
            .backoff(Backoff::exponential(Duration::from_nanos(1), 1000.0))
            .jitter(Jitter::Proportional { fraction: 1.0 })
            .min_delay(RetryPolicy::DURATION_LIMIT)
            .build()
            .unwrap(),
    ];
    let mut decided = 0;
    for p in &policies {
        for now in extremes {
            for first in [
                None,
                Some(DateTime::<Utc>::MIN_UTC),
                Some(DateTime::<Utc>::MAX_UTC),
            ] {
                for made in [0, 1, u32::MAX - 1, u32::MAX] {
                    for class in [ErrorClass::Transient, ErrorClass::throttled(Duration::MAX)] {
                        let a = Attempt {
                            key: "",
                            attempts_made: made,
                            first_failure_at: first,
                            now,
                            error_class: class,
                        };
                        let d = p.decide(&a);
                        assert_eq!(d, p.explain(&a).decision);
                        let _ = p.explain(&a).to_string();
                        decided += 1;
                    }
                }
            }
        }
    }
    assert_eq!(decided, 2 * 3 * 3 * 4 * 2);
}

/// The documented range each jitter kind draws from, in nanoseconds: the kind's own range
/// (full `[0, b]`, equal `[b − ⌊b/2⌋, b]`, proportional `[b − s, b + s]` with `s = round(b·f)`,
/// decorrelated `[b₀, 3·previous]` with `b₀` the clamped base of the first retry) cut to
/// `[min_delay, max_delay]`.
fn jitter_range(p: &RetryPolicy, d: &retry_policy::DelayBreakdown) -> (u128, u128) {
    let b = d.clamped_base.as_nanos();
    let (lo, hi) = match d.jitter {
        Jitter::Full => (0, b),
        Jitter::Equal => (b - b / 2, b),
        Jitter::Proportional { fraction } => {
            let s = ((b as f64 * fraction).round() as u128).min(b);
            (b - s, b + s)
        }
        Jitter::Decorrelated => (
            p.base_delay(1).as_nanos(),
            d.previous
                .expect("decorrelated reports its previous delay")
                .as_nanos()
                * 3,
        ),
        _ => (b, b),
    };
    (
        lo.max(p.min_delay().as_nanos()),
        hi.min(p.max_delay().as_nanos()),
    )
}
