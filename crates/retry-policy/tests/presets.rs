//! Golden vectors for every preset.
//!
//! The unjittered presets are checked against the timelines of the seed documents. The jittered
//! ones are checked against numbers computed by an independent implementation of the documented
//! formulas (hash, draw, jitter ranges, millisecond rounding) written in Python; if one of these
//! changes, every persisted retry time of that preset would be recomputed differently.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use retry_policy::{Attempt, Decision, GiveUpReason, RetryPolicy, presets};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 24, 12, 0, 0).unwrap()
}

/// Delays in ms for attempts_made = 1, 2, … until the policy gives up; the give-up reason.
fn timeline(policy: &RetryPolicy, key: &str) -> (Vec<u64>, u32) {
    let mut delays = Vec::new();
    for made in 1..=100 {
        match policy.decide(&Attempt::new(key, made, t0())) {
            Decision::RetryAt(at) => delays.push((at - t0()).num_milliseconds() as u64),
            Decision::GiveUp(GiveUpReason::MaxAttempts {
                attempts_made,
                max_attempts,
            }) => {
                assert_eq!(attempts_made, max_attempts);
                return (delays, made);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no give-up within 100 attempts")
}

fn min(m: u64) -> u64 {
    m * 60_000
}

#[test]
fn every_preset_is_accepted_by_the_builder_unchanged() {
    for p in [
        presets::startup_jobs(),
        presets::message_delivery(),
        presets::reconnect(),
        presets::api_call(),
        presets::vector_store_load(),
        presets::aws_full_jitter(),
        presets::grpc_connection(),
    ] {
        assert_eq!(p.to_builder().build().as_ref(), Ok(&p));
    }
}

#[test]
fn message_delivery_is_five_retries_over_three_hours_fifty() {
    let p = presets::message_delivery();
    assert_eq!(p.max_attempts(), Some(6));
    let (delays, gave_up_at) = timeline(&p, "msg-1");
    assert_eq!(delays, [5, 15, 30, 60, 120].map(min));
    assert_eq!(gave_up_at, 6, "the 6th failure gives up");

    // Seed 004's timeline: attempt k+1 starts when retry k is due.
    let mut now = t0();
    let mut starts = vec![now];
    for made in 1.. {
        match p.decide(&Attempt::new("msg-1", made, now).first_failure_at(t0())) {
            Decision::RetryAt(at) => {
                now = at;
                starts.push(at);
            }
            Decision::GiveUp(_) => break,
        }
    }
    let offsets: Vec<i64> = starts.iter().map(|s| (*s - t0()).num_minutes()).collect();
    assert_eq!(offsets, [0, 5, 20, 50, 110, 230]);
    assert_eq!(starts[5] - starts[0], TimeDelta::minutes(3 * 60 + 50));
}

#[test]
fn reconnect_waits_one_to_five_minutes() {
    let p = presets::reconnect();
    let (delays, gave_up_at) = timeline(&p, "session-default");
    assert_eq!(delays, [1, 2, 3, 4, 5].map(min));
    assert_eq!(
        gave_up_at, 6,
        "five reconnections after the drop, then an operator"
    );
    assert_eq!(
        p.base_delay(50),
        Duration::from_secs(300),
        "capped at 5 min"
    );
}

#[test]
fn api_call_and_vector_store_load_double_three_times() {
    assert_eq!(
        timeline(&presets::api_call(), "case-1"),
        (vec![1_000, 2_000, 4_000], 4)
    );
    assert_eq!(
        timeline(&presets::vector_store_load(), "case-1"),
        (vec![2_000, 4_000, 8_000], 4)
    );
}

#[test]
fn startup_jobs_follow_scenario_a() {
    let p = presets::startup_jobs();
    // Scenario A: attempts 1 and 2 go back to `retry`, attempts 3 becomes `failed`.
    let decide = |made| p.decide(&Attempt::new("job", made, t0()));
    assert!(decide(1).is_retry());
    assert!(decide(2).is_retry());
    assert_eq!(
        decide(3),
        Decision::GiveUp(GiveUpReason::MaxAttempts {
            attempts_made: 3,
            max_attempts: 3
        })
    );
    // Golden vectors: equal jitter over [5 s, 10 s] then [10 s, 20 s].
    let golden = [
        ("job-42", [8_483, 19_039]),
        ("msg-7", [5_792, 19_417]),
        ("conn-a", [5_211, 17_777]),
    ];
    for (key, want) in golden {
        assert_eq!(timeline(&p, key), (want.to_vec(), 3), "{key}");
        assert!((5_000..=10_000).contains(&want[0]) && (10_000..=20_000).contains(&want[1]));
    }
}

#[test]
fn aws_full_jitter_golden_vectors() {
    let p = presets::aws_full_jitter();
    let golden = [
        ("job-42", [696, 1_807]),
        ("msg-7", [158, 1_883]),
        ("conn-a", [42, 1_555]),
    ];
    for (key, want) in golden {
        assert_eq!(timeline(&p, key), (want.to_vec(), 3), "{key}");
        assert!(
            want[0] <= 1_000 && want[1] <= 2_000,
            "full jitter: [0, 2^n s]"
        );
    }
}

#[test]
fn grpc_connection_golden_vectors() {
    let p = presets::grpc_connection();
    assert_eq!(p.max_attempts(), None, "gRPC reconnects for ever");
    // Attempts 1..=11, then 40 (long capped). From attempt 11 on (base 1.6^10 s ≈ 110 s) the
    // ±20 % range reaches past 120 s and is cut to max_delay before drawing, so no key lands
    // on exactly 120 s. (Earlier builds drew the whole range and clamped afterwards: about
    // half of all capped retries were exactly 120 s, and attempts 11 and 40 read 113_158 and
    // 120_000, 120_000 and 120_000, 91_090 and 116_895.)
    let golden: [(&str, [u64; 12]); 3] = [
        (
            "job-42",
            [
                1_078, 1_858, 2_785, 4_551, 7_362, 9_656, 19_951, 28_998, 41_283, 77_309, 106_316,
                108_106,
            ],
        ),
        (
            "msg-7",
            [
                863, 1_882, 2_271, 3_896, 7_023, 11_824, 13_896, 22_127, 43_752, 75_555, 118_462,
                118_068,
            ],
        ),
        (
            "conn-a",
            [
                816, 1_777, 2_895, 4_414, 7_242, 12_119, 15_729, 30_296, 39_842, 79_260, 90_241,
                106_447,
            ],
        ),
    ];
    let attempts: Vec<u32> = (1..=11).chain([40]).collect();
    for (key, want) in golden {
        let got: Vec<u64> = attempts
            .iter()
            .map(|&made| {
                let d = p.decide(&Attempt::new(key, made, t0()));
                d.delay_after(t0()).unwrap().as_millis() as u64
            })
            .collect();
        assert_eq!(got, want, "{key}");
        // Each lies within ±20 % of 1.6^n s, and never above 120 s.
        for (made, ms) in attempts.iter().zip(want) {
            let base = (1.6_f64.powi(*made as i32 - 1) * 1_000.0).min(120_000.0);
            assert!(ms as f64 >= base * 0.8 - 1.0 && ms as f64 <= (base * 1.2).min(120_000.0));
        }
    }
}
