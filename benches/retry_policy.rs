//! Decisions per second of `retry-policy`, against a baseline measured in the same run.
//!
//! `cargo bench --bench retry_policy` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! shorter run). Each iteration decides a batch of `BATCH` attempts (UUID-length keys,
//! `attempts_made` cycling through the policy's retrying range), so the reported throughput is
//! decisions per second on one core.

use std::hint::black_box;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use retry_policy::{Attempt, ErrorClass, Jitter, RetryPolicy, presets};

const BATCH: usize = 1_024;

fn keys() -> Vec<String> {
    (0..BATCH as u64)
        .map(|i| {
            let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                x >> 32,
                (x >> 16) & 0xffff,
                x & 0xffff,
                i & 0xffff,
                x & 0xffff_ffff_ffff
            )
        })
        .collect()
}

fn attempts<'a>(
    keys: &'a [String],
    now: DateTime<Utc>,
    retries: u32,
    class: ErrorClass,
) -> Vec<Attempt<'a>> {
    keys.iter()
        .enumerate()
        .map(|(i, key)| Attempt {
            key,
            attempts_made: 1 + (i as u32 % retries),
            first_failure_at: Some(now - TimeDelta::minutes(i as i64 % 60)),
            now,
            error_class: class,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let now = Utc.with_ymd_and_hms(2024, 1, 24, 12, 0, 0).unwrap();
    let keys = keys();
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(BATCH as u64));

    // Baseline: the irreducible part of any decision, `now + fixed delay` with checked chrono
    // arithmetic, on the same inputs.
    let batch = attempts(&keys, now, 5, ErrorClass::Transient);
    let fixed = TimeDelta::seconds(300);
    group.bench_function("baseline_now_plus_fixed_delay", |b| {
        b.iter(|| {
            for a in &batch {
                black_box(black_box(a).now.checked_add_signed(fixed));
            }
        })
    });

    let decorrelated = RetryPolicy::builder()
        .jitter(Jitter::Decorrelated)
        .max_delay(Duration::from_secs(300))
        .max_attempts(10)
        .build()
        .expect("valid policy");
    let with_deadline = presets::aws_full_jitter()
        .to_builder()
        .max_elapsed(Duration::from_secs(3_600))
        .build()
        .expect("valid policy");
    let cases: [(&str, RetryPolicy, u32, ErrorClass); 7] = [
        (
            "message_delivery",
            presets::message_delivery(),
            5,
            ErrorClass::Transient,
        ),
        (
            "startup_jobs",
            presets::startup_jobs(),
            2,
            ErrorClass::Transient,
        ),
        (
            "aws_full_jitter",
            presets::aws_full_jitter(),
            2,
            ErrorClass::Transient,
        ),
        (
            "grpc_connection",
            presets::grpc_connection(),
            12,
            ErrorClass::Transient,
        ),
        (
            "full_jitter_with_deadline",
            with_deadline,
            2,
            ErrorClass::Transient,
        ),
        (
            "grpc_throttled",
            presets::grpc_connection(),
            12,
            ErrorClass::throttled(Duration::from_secs(5)),
        ),
        ("decorrelated", decorrelated, 9, ErrorClass::Transient),
    ];
    for (name, policy, retries, class) in &cases {
        let batch = attempts(&keys, now, *retries, *class);
        assert!(
            batch.iter().all(|a| policy.decide(a).is_retry()),
            "{name}: all retry"
        );
        group.bench_function(*name, |b| {
            b.iter(|| {
                for a in &batch {
                    let _ = black_box(policy.decide(black_box(a)));
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("explain");
    group.throughput(Throughput::Elements(BATCH as u64));
    let policy = presets::grpc_connection();
    let batch = attempts(&keys, now, 12, ErrorClass::Transient);
    group.bench_function("grpc_connection", |b| {
        b.iter(|| {
            for a in &batch {
                let _ = black_box(policy.explain(black_box(a)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
