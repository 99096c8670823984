//! The async helper and the fallback chain, under paused tokio time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use retry_policy::{
    Backoff, Classify, ErrorClass, FallbackChain, GiveUpReason, Notice, Retry, RetryPolicy,
    presets, retry,
};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
enum ProviderError {
    Timeout,
    RateLimited(Duration),
    Rejected,
}

impl Classify for ProviderError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Timeout => ErrorClass::Transient,
            Self::RateLimited(after) => ErrorClass::throttled(*after),
            Self::Rejected => ErrorClass::Permanent,
        }
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 24, 8, 10, 0).unwrap()
}

/// Records (attempt, elapsed since start) of every call.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<(u32, Duration)>>>);

impl Calls {
    fn record(&self, attempt: u32, start: Instant) {
        self.0.lock().unwrap().push((attempt, start.elapsed()));
    }
    fn elapsed(&self) -> Vec<Duration> {
        self.0.lock().unwrap().iter().map(|c| c.1).collect()
    }
    fn attempts(&self) -> Vec<u32> {
        self.0.lock().unwrap().iter().map(|c| c.0).collect()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn sleeps_the_policy_delays_and_reports_the_attempt_count() {
    let policy = presets::api_call();
    let calls = Calls::default();
    let start = Instant::now();
    let outcome = retry(&policy, "case-1", |attempt| {
        calls.record(attempt, start);
        async move {
            if attempt < 4 {
                Err(ProviderError::Timeout)
            } else {
                Ok(attempt * 10)
            }
        }
    })
    .await;
    assert_eq!(outcome.attempts, 4);
    assert_eq!(outcome.result, Ok(40));
    assert_eq!(calls.attempts(), [1, 2, 3, 4]);
    // 1 s, 2 s, 4 s of (virtual) sleep between the attempts.
    assert_eq!(calls.elapsed(), [secs(0), secs(1), secs(3), secs(7)]);
}

#[tokio::test(start_paused = true)]
async fn gives_up_when_the_policy_does_and_keeps_the_last_error() {
    let policy = presets::vector_store_load();
    let start = Instant::now();
    let outcome = retry(&policy, "case-2", |_| async {
        Err::<(), _>(ProviderError::Timeout)
    })
    .await;
    assert_eq!(outcome.attempts, 4);
    let err = outcome.into_result().unwrap_err();
    assert_eq!(err.error, ProviderError::Timeout);
    assert_eq!(
        err.reason,
        GiveUpReason::MaxAttempts {
            attempts_made: 4,
            max_attempts: 4
        }
    );
    // Slept 2 + 4 + 8 s, and not after the last failure.
    assert_eq!(start.elapsed(), secs(14));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_stops_at_once_without_sleeping() {
    let policy = presets::grpc_connection(); // would retry for ever
    let start = Instant::now();
    let outcome = retry(&policy, "k", |_| async {
        Err::<(), _>(ProviderError::Rejected)
    })
    .await;
    assert_eq!(outcome.attempts, 1);
    assert_eq!(outcome.result.unwrap_err().reason, GiveUpReason::Permanent);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn honours_retry_after_and_notifies_before_each_sleep() {
    let policy = RetryPolicy::builder()
        .backoff(Backoff::constant(secs(1)))
        .max_delay(secs(10))
        .max_retry_after(secs(60))
        .max_attempts(5)
        .build()
        .unwrap();
    let notices = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&notices);
    let calls = Calls::default();
    let start = Instant::now();
    let outcome = Retry::new(&policy, "k")
        .starting_at(t0())
        .notify(move |n: &Notice<'_, ProviderError>| {
            seen.lock()
                .unwrap()
                .push((n.attempt, n.delay, n.class, n.error.clone(), n.retry_at))
        })
        .run(|attempt| {
            calls.record(attempt, start);
            async move {
                match attempt {
                    1 => Err(ProviderError::RateLimited(secs(30))),
                    2 => Err(ProviderError::RateLimited(secs(600))), // capped at 60 s
                    3 => Err(ProviderError::Timeout),
                    _ => Ok("done"),
                }
            }
        })
        .await;
    assert_eq!((outcome.attempts, outcome.result), (4, Ok("done")));
    assert_eq!(calls.elapsed(), [secs(0), secs(30), secs(90), secs(91)]);
    let notices = notices.lock().unwrap().clone();
    assert_eq!(notices.len(), 3, "one notice per sleep, none after success");
    assert_eq!(
        notices[0],
        (
            1,
            secs(30),
            ErrorClass::throttled(secs(30)),
            ProviderError::RateLimited(secs(30)),
            t0() + chrono::TimeDelta::seconds(30)
        )
    );
    assert_eq!((notices[1].0, notices[1].1), (2, secs(60)));
    assert_eq!(
        (notices[2].0, notices[2].1, notices[2].2),
        (3, secs(1), ErrorClass::Transient)
    );
    // retry_at follows the paused clock from the given start.
    assert_eq!(notices[2].4, t0() + chrono::TimeDelta::seconds(91));
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_is_measured_on_the_paused_clock() {
    let policy = RetryPolicy::builder()
        .backoff(Backoff::constant(secs(60)))
        .max_elapsed(secs(150))
        .build()
        .unwrap();
    let start = Instant::now();
    let outcome = retry(&policy, "k", |_| async {
        tokio::time::sleep(secs(10)).await; // each attempt takes 10 s
        Err::<(), _>(ProviderError::Timeout)
    })
    .await;
    // Failures at 10 s (first), 80 s, 150 s; from 150 s the retry at 210 s would be past
    // 10 s + 150 s = 160 s.
    assert_eq!(outcome.attempts, 3);
    assert!(matches!(
        outcome.result.unwrap_err().reason,
        GiveUpReason::Deadline { .. }
    ));
    assert_eq!(start.elapsed(), secs(150));
}

#[tokio::test(start_paused = true)]
async fn classification_by_closure() {
    let policy = presets::api_call();
    // An HTTP status as the error: classified by a closure on its value, never by parsing text.
    let outcome = Retry::new(&policy, "k")
        .run_with(
            |code: &u16| {
                if *code >= 500 {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Permanent
                }
            },
            |attempt| async move { Err::<(), u16>(if attempt == 1 { 503 } else { 404 }) },
        )
        .await;
    assert_eq!(outcome.attempts, 2);
    assert_eq!(outcome.result.unwrap_err().error, 404);
}

#[tokio::test(start_paused = true)]
async fn the_helper_future_is_send() {
    fn assert_send<T: Send>(t: T) -> T {
        t
    }
    let policy = presets::api_call();
    let outcome = assert_send(
        Retry::new(&policy, "k")
            .notify(|_| {})
            .run(|_| async { Ok::<_, ProviderError>(1) }),
    )
    .await;
    assert_eq!(outcome.attempts, 1);
}

// ----- fallback chain -------------------------------------------------------------------------

struct Provider {
    name: &'static str,
    fail_times: u32,
    error: ProviderError,
    calls: Mutex<u32>,
}

impl Provider {
    fn new(name: &'static str, fail_times: u32, error: ProviderError) -> Self {
        Self {
            name,
            fail_times,
            error,
            calls: Mutex::new(0),
        }
    }

    async fn embed(&self, text: &str) -> Result<String, ProviderError> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut calls = self.calls.lock().unwrap();
        *calls += 1;
        if *calls <= self.fail_times {
            Err(self.error.clone())
        } else {
            Ok(format!("{}:{text}", self.name))
        }
    }

    fn calls(&self) -> u32 {
        *self.calls.lock().unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn seed_003_primary_embedding_provider_then_fallback() {
    let chathpe = Provider::new("chathpe", u32::MAX, ProviderError::Timeout);
    let nomic = Provider::new("nomic", 0, ProviderError::Timeout);
    let notices = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&notices);
    let start = Instant::now();
    let (primary, fallback) = (&chathpe, &nomic);
    let success = FallbackChain::new("chathpe", presets::api_call(), move |_| {
        primary.embed("case-7")
    })
    .or_else("nomic", presets::api_call(), move |_| {
        fallback.embed("case-7")
    })
    .notify(move |stage, n| seen.lock().unwrap().push((stage.to_owned(), n.attempt)))
    .run("case-7")
    .await
    .unwrap();
    assert_eq!(success.value, "nomic:case-7");
    assert_eq!((success.stage, success.name.as_str()), (1, "nomic"));
    assert_eq!((success.attempts, success.total_attempts), (1, 5));
    assert_eq!((chathpe.calls(), nomic.calls()), (4, 1));
    // 4 primary calls of 100 ms, sleeps of 1 + 2 + 4 s, one fallback call.
    assert_eq!(start.elapsed(), Duration::from_millis(7_500));
    let notices = notices.lock().unwrap().clone();
    let chathpe_notices: Vec<(String, u32)> = (1..=3).map(|a| ("chathpe".to_owned(), a)).collect();
    assert_eq!(notices, chathpe_notices);
}

#[tokio::test(start_paused = true)]
async fn the_primary_wins_when_its_retries_succeed() {
    let chathpe = Provider::new("chathpe", 2, ProviderError::Timeout);
    let nomic = Provider::new("nomic", 0, ProviderError::Timeout);
    let (primary, fallback) = (&chathpe, &nomic);
    let success = FallbackChain::new("chathpe", presets::api_call(), move |_| primary.embed("x"))
        .or_else("nomic", presets::api_call(), move |_| fallback.embed("x"))
        .run("x")
        .await
        .unwrap();
    assert_eq!(
        (success.stage, success.attempts, success.total_attempts),
        (0, 3, 3)
    );
    assert_eq!(nomic.calls(), 0, "the fallback is not touched");
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_moves_to_the_fallback_at_once() {
    let chathpe = Provider::new("chathpe", u32::MAX, ProviderError::Rejected);
    let nomic = Provider::new("nomic", 1, ProviderError::RateLimited(secs(3)));
    let (primary, fallback) = (&chathpe, &nomic);
    let start = Instant::now();
    let success = FallbackChain::new("chathpe", presets::api_call(), move |_| primary.embed("x"))
        .or_else("nomic", presets::vector_store_load(), move |_| {
            fallback.embed("x")
        })
        .run("x")
        .await
        .unwrap();
    assert_eq!(
        (
            success.name.as_str(),
            success.attempts,
            success.total_attempts
        ),
        ("nomic", 2, 3)
    );
    assert_eq!(chathpe.calls(), 1);
    // 100 ms primary, 100 ms fallback, max(2 s policy, 3 s retry-after), 100 ms fallback.
    assert_eq!(start.elapsed(), Duration::from_millis(3_300));
}

#[tokio::test(start_paused = true)]
async fn reports_every_stage_error_when_none_succeeds() {
    let a = Provider::new("a", u32::MAX, ProviderError::Timeout);
    let b = Provider::new("b", u32::MAX, ProviderError::Rejected);
    let c = Provider::new("c", u32::MAX, ProviderError::RateLimited(secs(1)));
    let (pa, pb, pc) = (&a, &b, &c);
    let err = FallbackChain::new("a", presets::api_call(), move |_| pa.embed("x"))
        .or_else("b", presets::api_call(), move |_| pb.embed("x"))
        .or_else("c", presets::vector_store_load(), move |_| pc.embed("x"))
        .run("x")
        .await
        .unwrap_err();
    let summary: Vec<(&str, u32, ProviderError, GiveUpReason)> = err
        .failures
        .iter()
        .map(|f| {
            (
                f.name.as_str(),
                f.attempts,
                f.error.error.clone(),
                f.error.reason,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "a",
                4,
                ProviderError::Timeout,
                GiveUpReason::MaxAttempts {
                    attempts_made: 4,
                    max_attempts: 4
                }
            ),
            ("b", 1, ProviderError::Rejected, GiveUpReason::Permanent),
            (
                "c",
                4,
                ProviderError::RateLimited(secs(1)),
                GiveUpReason::MaxAttempts {
                    attempts_made: 4,
                    max_attempts: 4
                }
            ),
        ]
    );
    assert_eq!((a.calls(), b.calls(), c.calls()), (4, 1, 4));
    assert!(
        err.to_string()
            .starts_with("all 3 stage(s) failed; a after 4 attempt(s)")
    );
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

#[tokio::test(start_paused = true)]
async fn the_chain_can_be_spawned() {
    // 'static operations: the chain's future is Send and can go to tokio::spawn.
    let primary = Arc::new(Provider::new("p", 1, ProviderError::Timeout));
    let p = Arc::clone(&primary);
    let handle = tokio::spawn(async move {
        FallbackChain::new("p", presets::api_call(), move |_| {
            let p = Arc::clone(&p);
            async move { p.embed("x").await }
        })
        .run("x")
        .await
    });
    let success = handle.await.unwrap().unwrap();
    assert_eq!((success.value.as_str(), success.attempts), ("p:x", 2));
}
