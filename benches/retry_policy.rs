//! Decisions per second of `retry-policy`, against a baseline measured in the same run.
//!
//! `cargo bench --bench retry_policy` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! shorter run). Each iteration decides a batch of `BATCH` attempts (UUID-length keys,
//! `attempts_made` cycling through a range of attempts the policy retries), so the reported
//! throughput is decisions per second on one core. `docs/benchmarks.md` divides each case's
//! time per decision by the baseline's, measured in the same run.
//!
//! After criterion, the same cases run again in interleaved passes and the **fastest batch** of
//! each is printed, with its ratio to the fastest baseline batch: on a machine shared with other
//! jobs, the fastest of a few thousand batches is the best estimate of what a decision costs on
//! a core of its own, and interleaving exposes every case to the same load.

use std::hint::black_box;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use retry_policy::{Attempt, Backoff, ErrorClass, Jitter, RetryPolicy, presets};

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

/// One attempt per key, `attempts_made` cycling through `made` (inclusive).
fn attempts<'a>(
    keys: &'a [String],
    now: DateTime<Utc>,
    made: RangeInclusive<u32>,
    class: ErrorClass,
) -> Vec<Attempt<'a>> {
    let (first, count) = (*made.start(), made.end() - made.start() + 1);
    keys.iter()
        .enumerate()
        .map(|(i, key)| Attempt {
            key,
            attempts_made: first + (i as u32 % count),
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
    let batch = attempts(&keys, now, 1..=5, ErrorClass::Transient);
    let fixed = TimeDelta::seconds(300);
    let baseline = || {
        for a in &batch {
            black_box(black_box(a).now.checked_add_signed(fixed));
        }
    };
    group.bench_function("baseline_now_plus_fixed_delay", |b| b.iter(baseline));

    // AWS's decorrelated jitter over an exponential backoff, first to ninth attempt: the chain of
    // previous delays it recomputes is 1 to 9 steps long.
    let decorrelated = RetryPolicy::builder()
        .jitter(Jitter::Decorrelated)
        .max_delay(Duration::from_secs(300))
        .max_attempts(10)
        .build()
        .expect("valid policy");
    // Its worst case: a constant base far below max_delay, from the 17th attempt on, where every
    // decision recomputes the whole window of previous delays.
    let decorrelated_full_window = RetryPolicy::builder()
        .backoff(Backoff::constant(Duration::from_secs(1)))
        .jitter(Jitter::Decorrelated)
        .max_delay(Duration::from_secs(1_000))
        .build()
        .expect("valid policy");
    let with_deadline = presets::aws_full_jitter()
        .to_builder()
        .max_elapsed(Duration::from_secs(3_600))
        .build()
        .expect("valid policy");
    // The AWS preset without its jitter: the difference to `aws_full_jitter` is what the jitter
    // (key hash, draw, range) costs.
    let aws_without_jitter = presets::aws_full_jitter()
        .to_builder()
        .jitter(Jitter::None)
        .build()
        .expect("valid policy");
    let transient = ErrorClass::Transient;
    let cases: [(&str, RetryPolicy, RangeInclusive<u32>, ErrorClass); 10] = [
        (
            "message_delivery",
            presets::message_delivery(),
            1..=5,
            transient,
        ),
        ("reconnect", presets::reconnect(), 1..=5, transient),
        ("startup_jobs", presets::startup_jobs(), 1..=2, transient),
        ("aws_without_jitter", aws_without_jitter, 1..=2, transient),
        (
            "aws_full_jitter",
            presets::aws_full_jitter(),
            1..=2,
            transient,
        ),
        (
            "grpc_connection",
            presets::grpc_connection(),
            1..=12,
            transient,
        ),
        ("full_jitter_with_deadline", with_deadline, 1..=2, transient),
        (
            "grpc_throttled",
            presets::grpc_connection(),
            1..=12,
            ErrorClass::throttled(Duration::from_secs(5)),
        ),
        ("decorrelated", decorrelated, 1..=9, transient),
        (
            "decorrelated_full_window",
            decorrelated_full_window,
            17..=40,
            transient,
        ),
    ];
    let batches: Vec<Vec<Attempt<'_>>> = cases
        .iter()
        .map(|(name, policy, made, class)| {
            let batch = attempts(&keys, now, made.clone(), *class);
            assert!(
                batch.iter().all(|a| policy.decide(a).is_retry()),
                "{name}: all retry"
            );
            batch
        })
        .collect();
    let grpc = presets::grpc_connection();
    let explain_batch = attempts(&keys, now, 1..=12, ErrorClass::Transient);
    let mut runs: Vec<Run<'_>> = vec![(
        "decide/baseline_now_plus_fixed_delay".into(),
        Box::new(baseline),
    )];
    for ((name, policy, _, _), batch) in cases.iter().zip(&batches) {
        let run = move || {
            for a in batch {
                let _ = black_box(policy.decide(black_box(a)));
            }
        };
        group.bench_function(*name, |b| b.iter(run));
        runs.push((format!("decide/{name}"), Box::new(run)));
    }
    group.finish();

    let mut group = c.benchmark_group("explain");
    group.throughput(Throughput::Elements(BATCH as u64));
    let explain = || {
        for a in &explain_batch {
            let _ = black_box(grpc.explain(black_box(a)));
        }
    };
    group.bench_function("grpc_connection", |b| b.iter(explain));
    runs.push(("explain/grpc_connection".into(), Box::new(explain)));
    group.finish();

    fastest_batches(&runs);
}

/// A named case that decides one batch per call.
type Run<'a> = (String, Box<dyn Fn() + 'a>);

/// Runs every case in `PASSES` interleaved passes of `ROUNDS` batches and prints each one's
/// fastest batch per decision, and its ratio to the baseline's (the first run).
fn fastest_batches(runs: &[Run<'_>]) {
    const PASSES: usize = 10;
    const ROUNDS: usize = 200;
    let mut best = vec![Duration::MAX; runs.len()];
    for _ in 0..PASSES {
        for ((_, run), best) in runs.iter().zip(&mut best) {
            for _ in 0..ROUNDS {
                let start = Instant::now();
                run();
                *best = (*best).min(start.elapsed());
            }
        }
    }
    let per_decision = |d: Duration| d.as_secs_f64() * 1e9 / BATCH as f64;
    let baseline = per_decision(best[0]);
    println!(
        "\nfastest of {} batches of {BATCH} per case ({PASSES} interleaved passes):",
        PASSES * ROUNDS
    );
    println!(
        "{:<38} {:>12} {:>14} {:>13}",
        "case", "ns/decision", "decisions/s", "vs baseline"
    );
    for ((name, _), best) in runs.iter().zip(&best) {
        let ns = per_decision(*best);
        println!(
            "{name:<38} {ns:>12.1} {:>12.1} M {:>12.2}×",
            1e3 / ns,
            ns / baseline
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
