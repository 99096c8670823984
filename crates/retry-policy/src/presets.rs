//! Ready-made policies for the reference scenarios (`shared/docs/SCENARIOS.md`) and two
//! well-known external ones.
//!
//! All follow [the counting convention](crate#counting-attempts): `max_attempts` counts the
//! first attempt too, so "N retries" means `max_attempts = N + 1`.
//!
//! | preset | backoff | jitter | attempts | source |
//! |--------|---------|--------|----------|--------|
//! | [`startup_jobs`] | 10 s × 2, max 60 s | equal | 3 | seeds 000/001 (scenario A) |
//! | [`message_delivery`] | 5, 15, 30, 60, 120 min | none | 6 (5 retries, 3h50m) | seed 004 (scenario D) |
//! | [`reconnect`] | linear 1, 2, 3, 4, 5 min | none | 6 (5 reconnections) | seed 004 (scenario D) |
//! | [`api_call`] | 1 s, 2 s, 4 s | none | 4 (3 retries) | seed 003 (scenario C, PII) |
//! | [`vector_store_load`] | 2 s, 4 s, 8 s | none | 4 (3 retries) | seeds 002/003 (scenarios B, C) |
//! | [`aws_full_jitter`] | 1 s × 2, max 20 s | full | 3 | AWS SDKs' "standard" mode |
//! | [`grpc_connection`] | 1 s × 1.6, max 120 s | ±20 % | unlimited | gRPC connection backoff |

use std::time::Duration;

use crate::{Backoff, Jitter, RetryPolicy};

/// "No limit on attempts".
const UNLIMITED: Option<u32> = None;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const fn mins(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

/// Scenario A (seeds 000/001): jobs found stuck at startup and put back to `retry`.
/// At most 3 attempts (`attempts >= 3` → failed, as the seeds' lease repair does), waiting
/// 10 s then 20 s, with equal jitter so that the many jobs requeued by one restart do not all
/// come back in the same second.
#[must_use]
pub fn startup_jobs() -> RetryPolicy {
    RetryPolicy::preset(
        Backoff::exponential(secs(10), 2.0),
        Jitter::Equal,
        Some(3),
        secs(60),
    )
}

/// Scenario D (seed 004): a failed message send is retried after 5, 15, 30, 60 and 120 minutes
/// — five retries after the first attempt, a 3h50m window — and the sixth failure gives up
/// (the message becomes `failed` and is kept). No jitter: the seed's timeline is exact.
#[must_use]
pub fn message_delivery() -> RetryPolicy {
    RetryPolicy::preset(
        Backoff::schedule([5, 15, 30, 60, 120].map(mins)),
        Jitter::None,
        Some(6),
        RetryPolicy::DURATION_LIMIT,
    )
}

/// Scenario D (seed 004): a dropped session reconnects after 1, 2, 3, 4 and 5 minutes (linear,
/// capped at 5 min); after those five reconnection attempts it needs an operator.
///
/// The dropped connection is the first attempt, so the five reconnections are five retries and
/// `max_attempts` is 6: the sixth failure gives up.
///
/// A host that counts *reconnection attempts* from 0 after the drop must add 1: `attempts_made`
/// counts the drop too. Passing the raw counter gives no error (0 is read as 1) but shifts the
/// timeline by one: 1, 1, 2, 3, 4, 5 minutes and six reconnections.
///
/// ```
/// # use std::time::Duration;
/// # use retry_policy::{presets, Attempt};
/// let policy = presets::reconnect();
/// let now = chrono::Utc::now();
/// let wait = |attempts_made| policy.decide(&Attempt::new("session-1", attempts_made, now)).delay_after(now);
/// let minutes = |m: u64| Some(Duration::from_secs(m * 60));
///
/// // Right: the counter of reconnections tried so far, plus the drop itself.
/// let right: Vec<_> = (0..6).map(|reconnect_attempts| wait(reconnect_attempts + 1)).collect();
/// assert_eq!(right, [minutes(1), minutes(2), minutes(3), minutes(4), minutes(5), None]);
///
/// // Wrong: the raw 0-based counter waits 1 minute twice and reconnects a sixth time.
/// let wrong: Vec<_> = (0..7).map(|reconnect_attempts| wait(reconnect_attempts)).collect();
/// assert_eq!(wrong, [minutes(1), minutes(1), minutes(2), minutes(3), minutes(4), minutes(5), None]);
/// ```
#[must_use]
pub fn reconnect() -> RetryPolicy {
    RetryPolicy::preset(
        Backoff::linear(mins(1), mins(1)),
        Jitter::None,
        Some(6),
        mins(5),
    )
}

/// Scenario C (seed 003, PII removal and the embedding provider): three retries after 1 s,
/// 2 s and 4 s, then give up (4 attempts in all, matching the seed's "attempt 1 immediate,
/// attempt 2 after 1 s, 3 after 2 s, 4 after 4 s").
#[must_use]
pub fn api_call() -> RetryPolicy {
    RetryPolicy::preset(
        Backoff::exponential(secs(1), 2.0),
        Jitter::None,
        Some(4),
        secs(4),
    )
}

/// Scenarios B and C (seeds 002/003: upstream fetch, vector-store load): three retries after
/// 2 s, 4 s and 8 s, then give up until the next scheduled run.
#[must_use]
pub fn vector_store_load() -> RetryPolicy {
    RetryPolicy::preset(
        Backoff::exponential(secs(2), 2.0),
        Jitter::None,
        Some(4),
        secs(8),
    )
}

/// The AWS SDKs' "standard" retry mode: 3 attempts, each retry after
/// `uniform[0, min(1 s·2^n, 20 s)]` (exponential backoff with full jitter).
#[must_use]
pub fn aws_full_jitter() -> RetryPolicy {
    RetryPolicy::preset(
        Backoff::exponential(secs(1), 2.0),
        Jitter::Full,
        Some(3),
        secs(20),
    )
}

/// gRPC's connection backoff: 1 s, × 1.6 per retry, ±20 % jitter, at most 120 s, retrying for
/// ever. Two deliberate differences from gRPC's reference algorithm: the first delay is
/// jittered too, and the jittered delay never exceeds 120 s (gRPC lets it reach 144 s): once
/// the base is capped, delays are drawn from [96 s, 120 s].
#[must_use]
pub fn grpc_connection() -> RetryPolicy {
    RetryPolicy::preset(
        Backoff::exponential(secs(1), 1.6),
        Jitter::Proportional { fraction: 0.2 },
        UNLIMITED,
        secs(120),
    )
}
