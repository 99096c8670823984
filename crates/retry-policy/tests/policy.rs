//! Decision semantics, validation and the serialised form.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use retry_policy::{
    Attempt, Backoff, Clamp, Decision, Error, ErrorClass, GiveUpReason, Jitter, RetryPolicy,
};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 24, 12, 0, 0).unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn exp(initial: u64, factor: f64) -> RetryPolicy {
    RetryPolicy::builder()
        .backoff(Backoff::exponential(secs(initial), factor))
        .build()
        .unwrap()
}

fn delay(policy: &RetryPolicy, attempt: &Attempt<'_>) -> Option<Duration> {
    policy.decide(attempt).delay_after(attempt.now)
}

/// The traits the rest of the workspace relies on (checked at compile time).
#[test]
fn public_types_have_the_promised_traits() {
    fn policy_like<T>()
    where
        T: Clone
            + std::fmt::Debug
            + PartialEq
            + serde::Serialize
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
    }
    fn value_like<T: Copy + std::fmt::Debug + PartialEq + Eq + std::hash::Hash + Send + Sync>() {}
    policy_like::<RetryPolicy>();
    policy_like::<Decision>();
    policy_like::<ErrorClass>();
    policy_like::<GiveUpReason>();
    value_like::<Decision>();
    value_like::<ErrorClass>();
    value_like::<Attempt<'static>>();
    fn error_like<T: std::error::Error + Send + Sync + 'static>() {}
    error_like::<Error>();
    error_like::<retry_policy::RetryError<Error>>();
    let e = RetryPolicy::builder().max_attempts(0).build().unwrap_err();
    assert_eq!(retry_policy::Classify::class(&e), ErrorClass::Permanent);
}

// ----- counting convention ------------------------------------------------------------------

#[test]
fn first_retry_uses_the_first_delay_and_max_attempts_counts_the_first_attempt() {
    let p = RetryPolicy::builder()
        .backoff(Backoff::schedule([10, 20, 30].map(secs)))
        .build()
        .unwrap();
    // A non-repeating schedule of 3 entries allows 3 retries: 4 attempts.
    assert_eq!(p.max_attempts(), Some(4));
    let delays: Vec<_> = (1..=4)
        .map(|made| delay(&p, &Attempt::new("k", made, t0())))
        .collect();
    assert_eq!(
        delays,
        [Some(secs(10)), Some(secs(20)), Some(secs(30)), None]
    );
    assert_eq!(
        p.decide(&Attempt::new("k", 4, t0())),
        Decision::GiveUp(GiveUpReason::MaxAttempts {
            attempts_made: 4,
            max_attempts: 4
        })
    );
}

#[test]
fn zero_attempts_is_treated_as_one() {
    let p = retry_policy::presets::aws_full_jitter();
    for key in ["a", "b", "job-42"] {
        let zero = Attempt::new(key, 0, t0());
        let one = Attempt::new(key, 1, t0());
        assert_eq!(p.decide(&zero), p.decide(&one));
        assert!(p.decide(&zero).is_retry());
    }
    // …also where one attempt is the limit.
    let once = RetryPolicy::builder().max_attempts(1).build().unwrap();
    assert!(once.decide(&Attempt::new("k", 0, t0())).is_give_up());
}

#[test]
fn repeating_schedule_keeps_its_last_entry_and_has_no_implied_limit() {
    let p = RetryPolicy::builder()
        .backoff(Backoff::schedule_repeating([1, 5].map(secs)))
        .build()
        .unwrap();
    assert_eq!(p.max_attempts(), None);
    for made in [2, 3, 100, u32::MAX] {
        assert_eq!(delay(&p, &Attempt::new("k", made, t0())), Some(secs(5)));
    }
}

#[test]
fn explicit_max_attempts_may_shorten_a_schedule() {
    let p = RetryPolicy::builder()
        .backoff(Backoff::schedule([1, 2, 3].map(secs)))
        .max_attempts(2)
        .build()
        .unwrap();
    assert_eq!(p.max_attempts(), Some(2));
    assert!(p.decide(&Attempt::new("k", 2, t0())).is_give_up());
}

// ----- error classes ------------------------------------------------------------------------

#[test]
fn permanent_gives_up_at_once() {
    let p = exp(1, 2.0);
    let a = Attempt::new("k", 1, t0()).error_class(ErrorClass::Permanent);
    assert_eq!(p.decide(&a), Decision::GiveUp(GiveUpReason::Permanent));
    assert!(p.explain(&a).delay.is_none());
}

#[test]
fn throttled_waits_for_retry_after_but_never_less_than_the_policy_delay() {
    let p = RetryPolicy::builder()
        .backoff(Backoff::constant(secs(10)))
        .max_delay(secs(60))
        .max_retry_after(secs(300))
        .build()
        .unwrap();
    let with = |ra: u64| {
        let a = Attempt::new("k", 1, t0()).error_class(ErrorClass::throttled(secs(ra)));
        delay(&p, &a).unwrap()
    };
    assert_eq!(
        with(3),
        secs(10),
        "shorter retry-after: the policy's delay wins"
    );
    assert_eq!(
        with(120),
        secs(120),
        "longer retry-after: honoured beyond max_delay"
    );
    assert_eq!(with(3_600), secs(300), "capped at max_retry_after");
    assert_eq!(with(u64::MAX), secs(300), "absurd values are capped too");
}

#[test]
fn max_retry_after_defaults_to_max_delay() {
    let p = RetryPolicy::builder()
        .backoff(Backoff::constant(secs(1)))
        .max_delay(secs(30))
        .build()
        .unwrap();
    assert_eq!(p.max_retry_after(), secs(30));
    let a = Attempt::new("k", 1, t0()).error_class(ErrorClass::throttled(secs(90)));
    assert_eq!(delay(&p, &a), Some(secs(30)));
}

// ----- deadline -----------------------------------------------------------------------------

#[test]
fn never_schedules_past_the_deadline() {
    let p = RetryPolicy::builder()
        .backoff(Backoff::constant(secs(60)))
        .max_elapsed(secs(150))
        .build()
        .unwrap();
    let first = t0();
    // 60 s after the first failure: the retry at 120 s is within 150 s.
    let ok = Attempt::new("k", 2, first + TimeDelta::seconds(60)).first_failure_at(first);
    assert_eq!(
        p.decide(&ok),
        Decision::RetryAt(first + TimeDelta::seconds(120))
    );
    // Exactly at the deadline is allowed.
    let edge = Attempt::new("k", 2, first + TimeDelta::seconds(90)).first_failure_at(first);
    assert_eq!(
        p.decide(&edge),
        Decision::RetryAt(first + TimeDelta::seconds(150))
    );
    // 100 s after: the retry at 160 s would be past it.
    let late = Attempt::new("k", 3, first + TimeDelta::seconds(100)).first_failure_at(first);
    assert_eq!(
        p.decide(&late),
        Decision::GiveUp(GiveUpReason::Deadline {
            deadline: first + TimeDelta::seconds(150),
            next_retry_at: first + TimeDelta::seconds(160),
        })
    );
    // Without first_failure_at the deadline runs from now.
    assert_eq!(
        p.explain(&Attempt::new("k", 1, first)).deadline,
        Some(first + TimeDelta::seconds(150))
    );
}

#[test]
fn time_overflow_gives_up_instead_of_panicking() {
    let p = RetryPolicy::builder()
        .backoff(Backoff::constant(RetryPolicy::DURATION_LIMIT))
        .max_elapsed(RetryPolicy::DURATION_LIMIT)
        .build()
        .unwrap();
    let a =
        Attempt::new("k", 1, DateTime::<Utc>::MAX_UTC).first_failure_at(DateTime::<Utc>::MAX_UTC);
    assert_eq!(
        p.decide(&a),
        Decision::GiveUp(GiveUpReason::Unrepresentable)
    );
    // A deadline beyond the representable range is simply never reached.
    let near_end = DateTime::<Utc>::MAX_UTC - TimeDelta::days(365 * 101);
    let b = Attempt::new("k", 1, near_end).first_failure_at(DateTime::<Utc>::MAX_UTC);
    assert!(p.decide(&b).is_retry());
}

// ----- bounds and jitter ----------------------------------------------------------------------

#[test]
fn min_and_max_delay_clamp_and_explain_says_so() {
    let p = RetryPolicy::builder()
        .backoff(Backoff::exponential(secs(1), 2.0))
        .min_delay(secs(2))
        .max_delay(secs(10))
        .build()
        .unwrap();
    let first = p.explain(&Attempt::new("k", 1, t0()));
    let d = first.delay.unwrap();
    assert_eq!(
        (d.base, d.clamped_base, d.delay),
        (secs(1), secs(2), secs(2))
    );
    let late = p.explain(&Attempt::new("k", 10, t0())).delay.unwrap();
    assert_eq!((late.base, late.delay), (secs(512), secs(10)));

    // Full jitter's range [0, b] is cut to [min_delay, b] before drawing: no key lands below
    // min_delay, and none is pushed onto it either.
    let full = p.to_builder().jitter(Jitter::Full).build().unwrap();
    let third: Vec<_> = (0..200)
        .map(|i| {
            full.explain(&Attempt::new(&format!("key-{i}"), 3, t0()))
                .delay
                .unwrap()
        })
        .collect();
    for d in &third {
        assert_eq!((d.clamped_base, d.low, d.high), (secs(4), secs(2), secs(4)));
        assert_eq!(d.clamp, Some(Clamp::RaisedToMin));
        assert!(d.delay >= secs(2) && d.delay <= secs(4), "{d:?}");
    }
    let at_min = third.iter().filter(|d| d.delay == secs(2)).count();
    assert!(at_min <= 1, "{at_min} of 200 keys exactly at min_delay");
}

#[test]
fn jitter_at_the_cap_draws_below_max_delay_instead_of_piling_onto_it() {
    // gRPC's preset: base 1.6^n s capped at 120 s, ±20 %. The range [96 s, 144 s] is cut to
    // [96 s, 120 s] before drawing; clamping afterwards put half of all keys on exactly 120 s.
    let p = retry_policy::presets::grpc_connection();
    let capped: Vec<_> = (0..1_000)
        .map(|i| {
            p.explain(&Attempt::new(&format!("conn-{i}"), 40, t0()))
                .delay
                .unwrap()
        })
        .collect();
    for d in &capped {
        assert_eq!((d.low, d.high), (secs(96), secs(120)));
        assert_eq!(d.clamp, Some(Clamp::LoweredToMax));
        assert!(d.delay >= secs(96) && d.delay <= secs(120));
    }
    let at_cap = capped.iter().filter(|d| d.delay == secs(120)).count();
    assert!(at_cap <= 1, "{at_cap} of 1000 keys exactly at max_delay");
    // Both bounds at once: ±100 % of a capped base, with a floor.
    let both = RetryPolicy::builder()
        .backoff(Backoff::constant(secs(100)))
        .jitter(Jitter::Proportional { fraction: 1.0 })
        .min_delay(secs(10))
        .max_delay(secs(60))
        .build()
        .unwrap();
    let d = both.explain(&Attempt::new("k", 1, t0())).delay.unwrap();
    assert_eq!(
        (d.low, d.high, d.clamp),
        (secs(10), secs(60), Some(Clamp::Both))
    );
}

#[test]
fn jitter_kinds_stay_in_their_ranges() {
    let base = secs(100);
    let check = |jitter: Jitter, lo: Duration, hi: Duration| {
        let p = RetryPolicy::builder()
            .backoff(Backoff::constant(base))
            .jitter(jitter)
            .build()
            .unwrap();
        let mut seen = Vec::new();
        for i in 0..500 {
            let d = delay(&p, &Attempt::new(&format!("rec-{i}"), 1, t0())).unwrap();
            assert!(
                d >= lo && d <= hi,
                "{jitter:?}: {d:?} not in [{lo:?}, {hi:?}]"
            );
            seen.push(d);
        }
        // Spread over the range: both the lowest and highest tenth are hit.
        let tenth = (hi - lo) / 10;
        assert!(seen.iter().any(|d| *d < lo + tenth), "{jitter:?} never low");
        assert!(
            seen.iter().any(|d| *d > hi - tenth),
            "{jitter:?} never high"
        );
    };
    check(Jitter::Full, Duration::ZERO, base);
    check(Jitter::Equal, base / 2, base);
    check(Jitter::Proportional { fraction: 0.2 }, secs(80), secs(120));
    check(Jitter::Decorrelated, base, base * 3);
}

#[test]
fn decorrelated_recomputes_the_previous_delay() {
    let p = RetryPolicy::builder()
        .backoff(Backoff::constant(secs(1)))
        .jitter(Jitter::Decorrelated)
        .max_delay(secs(1_000))
        .build()
        .unwrap();
    for key in ["a", "b", "c", "d"] {
        // Within the window, the "previous" of retry n is exactly the delay of retry n−1.
        for made in 2..=16 {
            let prev = p
                .explain(&Attempt::new(key, made - 1, t0()))
                .delay
                .unwrap()
                .delay;
            let now = p.explain(&Attempt::new(key, made, t0())).delay.unwrap();
            assert_eq!(now.previous, Some(prev), "{key} at {made}");
            assert!(now.delay >= secs(1) && now.delay <= (prev * 3).max(secs(1)));
        }
    }
}

#[test]
fn decorrelated_jitter_golden_vectors() {
    // Computed by an independent implementation of the documented formulas (hash, draw,
    // d_i = U(b₀, min(max_delay, 3·d_(i−1))) over a window of 16 previous retries, millisecond
    // rounding) written in Python. Retry indices n = 0, 1, 5, 15, 16 (first with a full
    // window), 17 (first whose chain no longer starts at retry 0) and 40.
    let ms = Duration::from_millis;
    let ns = Duration::from_nanos;
    let decorrelated = |backoff, max| {
        RetryPolicy::builder()
            .backoff(backoff)
            .jitter(Jitter::Decorrelated)
            .max_delay(max)
            .build()
            .unwrap()
    };
    // (policy, per key the delays at the retry indices below, their unit)
    type Case = (
        RetryPolicy,
        [(&'static str, [u64; 7]); 3],
        fn(u64) -> Duration,
    );
    let cases: [Case; 4] = [
        (
            decorrelated(Backoff::constant(secs(1)), secs(1_000)),
            [
                (
                    "job-42",
                    [2_393, 6_585, 75_878, 97_539, 41_410, 74_136, 10_452],
                ),
                (
                    "msg-7",
                    [1_317, 3_779, 22_586, 11_436, 31_527, 54_553, 92_058],
                ),
                (
                    "conn-a",
                    [1_084, 2_751, 91_647, 2_760, 5_689, 4_248, 57_294],
                ),
            ],
            ms,
        ),
        (
            // Only the first delay of the backoff (500 ms) matters: growth comes from the jitter.
            decorrelated(Backoff::exponential(ms(500), 2.0), secs(60)),
            [
                ("job-42", [1_196, 3_291, 18_491, 6_442, 3_108, 5_737, 5_223]),
                ("msg-7", [658, 1_888, 11_285, 2_816, 7_784, 14_140, 5_923]),
                ("conn-a", [542, 1_375, 45_795, 781, 1_687, 1_422, 6_057]),
            ],
            ms,
        ),
        (
            // Bounds that are not whole milliseconds: the nanosecond chain.
            decorrelated(Backoff::constant(ns(1_234_567)), ns(987_654_321)),
            [
                ("job-42", [2, 5, 55, 96, 40, 71, 11]),
                ("msg-7", [2, 5, 24, 9, 24, 43, 91]),
                ("conn-a", [2, 4, 128, 2, 4, 3, 53]),
            ],
            ms,
        ),
        (
            // Ranges without a whole millisecond inside stay in nanoseconds.
            decorrelated(Backoff::constant(ns(3)), ms(2)),
            [
                ("job-42", [7, 20, 231, 21_458, 8_923, 7_796, 32]),
                ("msg-7", [4, 12, 70, 31, 86, 155, 2_375]),
                ("conn-a", [3, 8, 278, 11, 22, 15, 178]),
            ],
            ns,
        ),
    ];
    for (p, golden, unit) in cases {
        for (key, want) in golden {
            let got: Vec<Duration> = [0, 1, 5, 15, 16, 17, 40]
                .map(|n| delay(&p, &Attempt::new(key, n + 1, t0())).unwrap())
                .to_vec();
            assert_eq!(got, want.map(unit), "{key} {p:?}");
        }
    }
}

#[test]
fn decorrelated_jitter_needs_a_first_delay_above_zero() {
    let b = || RetryPolicy::builder().jitter(Jitter::Decorrelated);
    for backoff in [
        Backoff::constant(Duration::ZERO),
        Backoff::linear(Duration::ZERO, secs(1)),
        Backoff::polynomial(4, secs(1), Duration::ZERO),
    ] {
        assert_eq!(
            b().backoff(backoff.clone()).build(),
            Err(Error::ZeroDecorrelatedBase),
            "{backoff:?}"
        );
        // A min_delay gives it somewhere to start.
        let p = b().backoff(backoff).min_delay(secs(1)).build().unwrap();
        let d = delay(&p, &Attempt::new("k", 3, t0())).unwrap();
        assert!(d >= secs(1), "{d:?}");
    }
}

#[test]
fn explain_agrees_with_decide_and_reads_well() {
    let p = retry_policy::presets::grpc_connection();
    let a = Attempt::new("conn-1", 3, t0());
    let e = p.explain(&a);
    assert_eq!(e.decision, p.decide(&a));
    let d = e.delay.as_ref().unwrap();
    assert_eq!(d.retry_index, 2);
    assert_eq!(d.base, Duration::from_millis(2_560));
    assert!(d.draw.is_some());
    let text = e.to_string();
    for part in [
        "attempts made 3",
        "retry #3",
        "base 2s560ms",
        "proportional jitter ±0.2 over [2s48ms, 3s72ms]",
        "⇒ retry at 2024-01-24T12:00:0",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text:?}");
    }
}

#[test]
fn explain_at_the_cap_shows_the_cut_range() {
    // Proportional: gRPC's preset long after the base reached 120 s.
    let grpc = retry_policy::presets::grpc_connection();
    let text = grpc.explain(&Attempt::new("job-42", 40, t0())).to_string();
    assert!(
        text.starts_with("attempts made 40, last error transient; retry #40: base "),
        "{text}"
    );
    let want =
        " clamped to 2m, proportional jitter ±0.2 over [1m36s, 2m] (cut at max_delay) (draw 0.";
    assert!(text.contains(want), "{text}");
    // 108106 ms is the golden vector of grpc_connection for this key and attempt.
    assert!(
        text.ends_with(") → 1m48s106ms; delay 1m48s106ms ⇒ retry at 2024-01-24T12:01:48.106Z"),
        "{text}"
    );

    // Decorrelated: the range starts at the first delay and ends at 3 × previous or the cap.
    let p = RetryPolicy::builder()
        .backoff(Backoff::exponential(secs(1), 2.0))
        .jitter(Jitter::Decorrelated)
        .min_delay(secs(2))
        .max_delay(secs(60))
        .build()
        .unwrap();
    let mut saw_cut = false;
    for i in 0..50 {
        let key = format!("job-{i}");
        let e = p.explain(&Attempt::new(&key, 30, t0()));
        let d = e.delay.as_ref().unwrap();
        let previous = d.previous.unwrap();
        assert_eq!(d.clamped_base, secs(60), "the base itself is capped");
        assert_eq!(
            d.low,
            secs(2),
            "every step starts at the first delay, raised to min_delay"
        );
        assert_eq!(d.high, (previous * 3).min(secs(60)));
        let text = e.to_string();
        let head = format!(
            "retry #30: base 149130h48m32s clamped to 1m, decorrelated jitter from previous {} over [2s, {}]",
            fmt(previous),
            fmt(d.high)
        );
        assert!(text.contains(&head), "{text}\n{head}");
        if previous * 3 > secs(60) {
            saw_cut = true;
            assert_eq!(d.clamp, Some(Clamp::LoweredToMax));
            assert!(text.contains(" (cut at max_delay) (draw 0."), "{text}");
        } else {
            assert_eq!(d.clamp, None);
        }
        assert!(
            text.contains(&format!("→ {}; delay", fmt(d.delay))),
            "{text}"
        );
    }
    assert!(saw_cut, "some of 50 keys reach the cap");
}

/// The canonical text of a duration, as `Display` prints it (whole milliseconds here).
fn fmt(d: Duration) -> String {
    let ms = d.as_millis();
    let (m, s, ms) = (ms / 60_000, ms / 1_000 % 60, ms % 1_000);
    let mut out = String::new();
    if m > 0 {
        out += &format!("{m}m");
    }
    if s > 0 {
        out += &format!("{s}s");
    }
    if ms > 0 {
        out += &format!("{ms}ms");
    }
    if out.is_empty() { "0s".to_owned() } else { out }
}

// ----- validation -----------------------------------------------------------------------------

#[test]
fn invalid_settings_are_refused_with_a_clear_error() {
    let b = RetryPolicy::builder;
    let cases: Vec<(retry_policy::Result<RetryPolicy>, Error)> = vec![
        (b().max_attempts(0).build(), Error::ZeroAttempts),
        (
            b().backoff(Backoff::exponential(secs(1), 0.5)).build(),
            Error::InvalidFactor { factor: 0.5 },
        ),
        (
            b().backoff(Backoff::exponential(secs(1), 1.0005)).build(),
            Error::InvalidFactor { factor: 1.0005 },
        ),
        (
            b().backoff(Backoff::exponential(secs(1), f64::INFINITY))
                .build(),
            Error::InvalidFactor {
                factor: f64::INFINITY,
            },
        ),
        (
            b().backoff(Backoff::exponential(secs(1), 1000.5)).build(),
            Error::InvalidFactor { factor: 1000.5 },
        ),
        (
            b().backoff(Backoff::exponential(Duration::ZERO, 2.0))
                .build(),
            Error::ZeroInitialDelay,
        ),
        (
            b().jitter(Jitter::Proportional { fraction: 1.5 }).build(),
            Error::InvalidJitterFraction { fraction: 1.5 },
        ),
        (
            b().backoff(Backoff::schedule([])).build(),
            Error::EmptySchedule,
        ),
        (
            b().backoff(Backoff::schedule([5, 3].map(secs))).build(),
            Error::UnsortedSchedule {
                index: 1,
                delay: secs(3),
                previous: secs(5),
            },
        ),
        (
            b().backoff(Backoff::schedule([1, 2].map(secs)))
                .max_attempts(4)
                .build(),
            Error::ScheduleTooShort {
                entries: 2,
                max_attempts: 4,
            },
        ),
        (
            b().min_delay(secs(10)).max_delay(secs(5)).build(),
            Error::InvalidBounds {
                min_delay: secs(10),
                max_delay: secs(5),
            },
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got.as_ref().err(), Some(&want), "{got:?}");
        assert!(!want.to_string().is_empty());
        assert!(!want.is_transient());
    }
    // NaN never equals itself, so match on the variant.
    assert!(matches!(
        b().backoff(Backoff::exponential(secs(1), f64::NAN)).build(),
        Err(Error::InvalidFactor { .. })
    ));
    assert!(matches!(
        b().max_delay(Duration::MAX).build(),
        Err(Error::DurationTooLarge {
            field: "max_delay",
            ..
        })
    ));
    assert_eq!(
        b().backoff(Backoff::exponential(secs(1), 0.5))
            .build()
            .unwrap_err()
            .to_string(),
        "exponential factor must be exactly 1 or between 1.001 and 1000, got 0.5 \
         (a factor below 1 would shrink the delay)"
    );
}

#[test]
fn every_duration_setting_refuses_more_than_100_years_by_name() {
    let over = RetryPolicy::DURATION_LIMIT + Duration::from_nanos(1);
    let b = RetryPolicy::builder;
    let cases: Vec<(&str, retry_policy::Result<RetryPolicy>)> = vec![
        (
            "backoff.delay",
            b().backoff(Backoff::constant(over)).build(),
        ),
        (
            "backoff.initial",
            b().backoff(Backoff::linear(over, secs(1))).build(),
        ),
        (
            "backoff.step",
            b().backoff(Backoff::linear(secs(1), over)).build(),
        ),
        (
            "backoff.initial",
            b().backoff(Backoff::exponential(over, 2.0)).build(),
        ),
        (
            "backoff.delays",
            b().backoff(Backoff::schedule([secs(1), over])).build(),
        ),
        (
            "backoff.unit",
            b().backoff(Backoff::polynomial(2, over, secs(1))).build(),
        ),
        (
            "backoff.offset",
            b().backoff(Backoff::polynomial(2, secs(1), over)).build(),
        ),
        ("min_delay", b().min_delay(over).build()),
        ("max_delay", b().max_delay(over).build()),
        ("max_elapsed", b().max_elapsed(over).build()),
        ("max_retry_after", b().max_retry_after(over).build()),
    ];
    for (field, got) in cases {
        match got {
            Err(Error::DurationTooLarge { field: f, input }) => {
                assert_eq!(f, field);
                assert_eq!(input, format!("{over:?}"));
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    // Exactly the limit is fine everywhere.
    let limit = RetryPolicy::DURATION_LIMIT;
    assert!(
        b().backoff(Backoff::schedule([limit]))
            .min_delay(limit)
            .max_delay(limit)
            .max_elapsed(limit)
            .max_retry_after(limit)
            .build()
            .is_ok()
    );
}

#[test]
fn proportional_fraction_must_be_a_finite_number_in_zero_to_one() {
    let build = |fraction| {
        RetryPolicy::builder()
            .jitter(Jitter::Proportional { fraction })
            .build()
    };
    for bad in [
        1.5,
        -0.1,
        -0.0 - f64::MIN_POSITIVE,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ] {
        assert_eq!(
            build(bad),
            Err(Error::InvalidJitterFraction { fraction: bad }),
            "{bad}"
        );
    }
    // NaN never equals itself, so match on the variant.
    assert!(matches!(
        build(f64::NAN),
        Err(Error::InvalidJitterFraction { fraction }) if fraction.is_nan()
    ));
    assert_eq!(
        build(f64::NAN).unwrap_err().to_string(),
        "proportional jitter fraction must be a finite number in [0, 1], got NaN"
    );
    for good in [0.0, 0.2, 1.0] {
        assert!(build(good).is_ok(), "{good}");
    }
}

// ----- serde ----------------------------------------------------------------------------------

#[test]
fn every_preset_round_trips_through_json() {
    use retry_policy::presets::*;
    for p in [
        startup_jobs(),
        message_delivery(),
        reconnect(),
        api_call(),
        vector_store_load(),
        aws_full_jitter(),
        grpc_connection(),
    ] {
        let json = serde_json::to_string(&p).unwrap();
        let back: RetryPolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p, "{json}");
    }
}

#[test]
fn serialised_form_is_readable() {
    let json = serde_json::to_value(retry_policy::presets::message_delivery()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "backoff": {
                "kind": "schedule",
                "delays": ["5m", "15m", "30m", "1h", "2h"],
                "repeat_last": false
            },
            "jitter": { "kind": "none" },
            "max_attempts": 6,
            "min_delay": "0s",
            "max_delay": "876000h",
            "max_retry_after": "876000h"
        })
    );
}

#[test]
fn deserialising_accepts_text_and_milliseconds_and_applies_defaults() {
    let p: RetryPolicy = serde_json::from_str(
        r#"{ "backoff": { "kind": "linear", "initial": 60000, "step": "1m" }, "max_delay": "5m" }"#,
    )
    .unwrap();
    let built = RetryPolicy::builder()
        .backoff(Backoff::linear(secs(60), secs(60)))
        .max_delay(secs(300))
        .build()
        .unwrap();
    assert_eq!(p, built);

    let poly: RetryPolicy = serde_json::from_str(
        r#"{ "backoff": { "kind": "polynomial", "exponent": 4, "offset": "15s" } }"#,
    )
    .unwrap();
    assert_eq!(poly.backoff(), &Backoff::polynomial(4, secs(1), secs(15)));
}

#[test]
fn polynomial_shift_expresses_rivers_curve_and_round_trips() {
    // River's default retry policy: attempt^4 seconds, counting the first retry as attempt 1.
    let river = RetryPolicy::builder()
        .backoff(Backoff::polynomial_shifted(4, secs(1), Duration::ZERO, 1))
        .max_attempts(5)
        .build()
        .unwrap();
    let delays: Vec<_> = (1..=5)
        .map(|made| delay(&river, &Attempt::new("job", made, t0())))
        .collect();
    assert_eq!(
        delays,
        [
            Some(secs(1)),
            Some(secs(16)),
            Some(secs(81)),
            Some(secs(256)),
            None
        ]
    );
    // Sidekiq's 15 + n^4 is the same kind without a shift.
    let sidekiq = Backoff::polynomial(4, secs(1), secs(15));
    assert_eq!(
        sidekiq,
        Backoff::polynomial_shifted(4, secs(1), secs(15), 0)
    );

    let json = serde_json::to_value(&river).unwrap();
    assert_eq!(
        json["backoff"],
        serde_json::json!({ "kind": "polynomial", "exponent": 4, "unit": "1s", "offset": "0s", "shift": 1 })
    );
    let back: RetryPolicy = serde_json::from_value(json).unwrap();
    assert_eq!(back, river);
    // The shift defaults to 0 (stored policies written before it existed read back unchanged).
    let old: RetryPolicy = serde_json::from_str(
        r#"{ "backoff": { "kind": "polynomial", "exponent": 4, "offset": "15s" } }"#,
    )
    .unwrap();
    assert_eq!(old.backoff(), &sidekiq);
    let from_text: RetryPolicy = serde_json::from_str(
        r#"{ "backoff": { "kind": "polynomial", "exponent": 4, "shift": 1 } }"#,
    )
    .unwrap();
    assert_eq!(from_text.base_delay(3), secs(81));
}

#[test]
fn polynomial_counts_that_are_not_whole_numbers_name_their_field() {
    let err = |field: &str, value: &str| {
        let other = if field == "shift" {
            "exponent"
        } else {
            "shift"
        };
        let json = format!(
            r#"{{ "backoff": {{ "kind": "polynomial", "{other}": 1, "{field}": {value} }} }}"#
        );
        serde_json::from_str::<RetryPolicy>(&json)
            .unwrap_err()
            .to_string()
    };
    for (field, value, want) in [
        ("shift", "-1", "invalid value: integer `-1`"),
        ("shift", "1.5", "invalid type: floating point `1.5`"),
        ("shift", "4294967296", "invalid value: integer `4294967296`"),
        ("shift", "\"1\"", "invalid type: string \"1\""),
        ("exponent", "-4", "invalid value: integer `-4`"),
    ] {
        let got = err(field, value);
        let named = format!("expected `backoff.{field}` as a whole number from 0 to 4294967295");
        assert!(
            got.contains(want) && got.contains(&named),
            "{field} = {value}: {got}"
        );
    }
}

#[test]
fn deserialising_validates_like_the_builder() {
    let err = |json: &str| {
        serde_json::from_str::<RetryPolicy>(json)
            .unwrap_err()
            .to_string()
    };
    let cases = [
        (
            r#"{ "backoff": { "kind": "constant", "delay": "-5s" } }"#,
            "`backoff.delay` is negative (-5s)",
        ),
        (
            r#"{ "backoff": { "kind": "constant", "delay": -5000 } }"#,
            "`backoff.delay` is negative (-5000ms)",
        ),
        (
            r#"{ "backoff": { "kind": "constant", "delay": "1s" }, "max_delay": "200y" }"#,
            "`max_delay` is not a duration (\"200y\"): unknown unit",
        ),
        (
            r#"{ "backoff": { "kind": "constant", "delay": "1s" }, "max_elapsed": "40000d" }"#,
            "`max_elapsed` is 40000d, more than the limit of 100 years",
        ),
        (
            r#"{ "backoff": { "kind": "constant", "delay": 9223372036854775807 } }"#,
            "`backoff.delay` is 9223372036854775807ms, more than the limit",
        ),
        // Beyond i64 and beyond u64 (serde_json reads the latter as a float).
        (
            r#"{ "backoff": { "kind": "constant", "delay": 18446744073709551615 } }"#,
            "`backoff.delay` is 18446744073709551615ms, more than the limit",
        ),
        (
            r#"{ "backoff": { "kind": "constant", "delay": "1s" }, "max_elapsed": 100000000000000000000000 }"#,
            "`max_elapsed` is 100000000000000000000000ms, more than the limit",
        ),
        (
            r#"{ "backoff": { "kind": "constant", "delay": 1500.5 } }"#,
            "`backoff.delay` is not a duration (\"1500.5\"): a floating-point number; milliseconds must be an integer",
        ),
        (
            r#"{ "backoff": { "kind": "constant", "delay": "1s" }, "min_delay": -1.5 }"#,
            "`min_delay` is negative (-1.5ms)",
        ),
        (
            r#"{ "backoff": { "kind": "schedule", "delays": ["1s", true] } }"#,
            "`backoff.delays` is not a duration (\"true\"): a boolean",
        ),
        (
            r#"{ "backoff": { "kind": "schedule", "delays": ["1s", null] } }"#,
            "`backoff.delays` is not a duration (\"null\"): null",
        ),
        (
            r#"{ "backoff": { "kind": "linear", "initial": "1s", "step": [1] } }"#,
            "`backoff.step` is not a duration (\"[…]\"): a list",
        ),
        (
            r#"{ "backoff": { "kind": "constant", "delay": "1s" }, "max_retry_after": { "s": 1 } }"#,
            "`max_retry_after` is not a duration (\"{…}\"): an object",
        ),
        (
            r#"{ "backoff": { "kind": "exponential", "initial": "1s", "factor": 0.9 } }"#,
            "exponential factor must be exactly 1 or between 1.001 and 1000",
        ),
        (
            r#"{ "backoff": { "kind": "constant", "delay": "1s" }, "max_attempts": 0 }"#,
            "max_attempts must be at least 1",
        ),
        (
            r#"{ "backoff": { "kind": "constant", "delay": "1s" }, "max_atempts": 3 }"#,
            "unknown field `max_atempts`",
        ),
    ];
    for (json, want) in cases {
        let got = err(json);
        assert!(got.contains(want), "{json}\n  got:  {got}\n  want: {want}");
    }
}

#[test]
fn decisions_and_classes_serialise() {
    let d = Decision::GiveUp(GiveUpReason::MaxAttempts {
        attempts_made: 6,
        max_attempts: 6,
    });
    let json = serde_json::to_string(&d).unwrap();
    assert_eq!(
        json,
        r#"{"give_up":{"reason":"max_attempts","attempts_made":6,"max_attempts":6}}"#
    );
    assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), d);

    let c = ErrorClass::throttled(Duration::from_millis(1_500));
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(json, r#"{"kind":"throttled","retry_after":"1s500ms"}"#);
    assert_eq!(serde_json::from_str::<ErrorClass>(&json).unwrap(), c);
}

#[test]
fn factors_and_fractions_are_kept_to_six_decimals_so_storage_cannot_change_them() {
    // 17 significant digits: some JSON parsers read such numbers back one ulp off.
    let p = RetryPolicy::builder()
        .backoff(Backoff::exponential(secs(1), 1.618_033_988_749_895))
        .jitter(Jitter::Proportional {
            fraction: 0.123_456_789_012_345_67,
        })
        .build()
        .unwrap();
    assert_eq!(p.backoff(), &Backoff::exponential(secs(1), 1.618_034));
    assert_eq!(
        p.jitter(),
        Jitter::Proportional {
            fraction: 0.123_457
        }
    );
    let json = serde_json::to_string(&p).unwrap();
    assert!(json.contains(r#""factor":1.618034"#), "{json}");
    let back: RetryPolicy = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    let a = Attempt::new("k", 7, t0());
    assert_eq!(back.decide(&a), p.decide(&a));
}
