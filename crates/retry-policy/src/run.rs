//! Running an async operation under a policy: [`retry`], [`Retry`] and [`FallbackChain`].
//!
//! The only I/O here is `tokio::time::sleep`, so everything works under
//! `tokio::time::pause()` (tests run hours of backoff in microseconds).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;

use crate::decision::{Attempt, Decision, ErrorClass, GiveUpReason};
use crate::policy::RetryPolicy;

/// How an error tells its [`ErrorClass`]: implement it for the operation's error type
/// (or pass a closure to [`Retry::run_with`]). Classification never parses messages.
///
/// ```
/// use retry_policy::{Classify, ErrorClass};
/// use std::time::Duration;
///
/// enum ApiError { Timeout, RateLimited { retry_after: Duration }, BadRequest }
///
/// impl Classify for ApiError {
///     fn class(&self) -> ErrorClass {
///         match self {
///             ApiError::Timeout => ErrorClass::Transient,
///             ApiError::RateLimited { retry_after } => ErrorClass::throttled(*retry_after),
///             ApiError::BadRequest => ErrorClass::Permanent,
///         }
///     }
/// }
/// ```
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;
}

impl Classify for ErrorClass {
    fn class(&self) -> ErrorClass {
        *self
    }
}

/// Configuration errors never go away by retrying.
impl Classify for crate::Error {
    fn class(&self) -> ErrorClass {
        ErrorClass::Permanent
    }
}

impl<T: Classify + ?Sized> Classify for &T {
    fn class(&self) -> ErrorClass {
        (**self).class()
    }
}

impl<T: Classify + ?Sized> Classify for Box<T> {
    fn class(&self) -> ErrorClass {
        (**self).class()
    }
}

/// What the notify hook is told before each sleep.
#[derive(Debug)]
#[non_exhaustive]
pub struct Notice<'a, E> {
    /// Attempts made so far (the one that just failed included).
    pub attempt: u32,
    /// How long the helper is about to sleep.
    pub delay: Duration,
    /// When the next attempt starts (on the helper's clock, see [`Retry::starting_at`]).
    pub retry_at: DateTime<Utc>,
    /// The error of the attempt that just failed.
    pub error: &'a E,
    /// Its class.
    pub class: ErrorClass,
}

/// The policy gave up: why, and the last error.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryError<E> {
    /// Why the policy stopped.
    pub reason: GiveUpReason,
    /// The error of the last attempt.
    pub error: E,
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gave up ({}): {}", self.reason, self.error)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The result of running an operation under a policy, with the number of attempts it took.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<T, E> {
    /// Attempts started (≥ 1).
    pub attempts: u32,
    /// The operation's value, or why the policy gave up and the last error.
    pub result: Result<T, RetryError<E>>,
}

impl<T, E> Outcome<T, E> {
    /// The result without the attempt count.
    ///
    /// # Errors
    ///
    /// The [`RetryError`] when the policy gave up.
    pub fn into_result(self) -> Result<T, RetryError<E>> {
        self.result
    }

    /// Whether the operation eventually succeeded.
    #[must_use]
    pub const fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

type NotifyFn<'a, E> = Box<dyn FnMut(&Notice<'_, E>) + Send + 'a>;

/// Runs an async operation under a policy until it succeeds, fails permanently, or the policy
/// gives up. For the common case use [`retry`].
///
/// ```
/// use retry_policy::{presets, ErrorClass, Retry};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let policy = presets::api_call();
/// let outcome = Retry::new(&policy, "case-1")
///     .notify(|n| eprintln!("attempt {} failed ({}), retrying in {:?}", n.attempt, n.class, n.delay))
///     .run(|attempt| async move {
///         if attempt < 3 { Err(ErrorClass::Transient) } else { Ok("embedded") }
///     })
///     .await;
/// assert_eq!(outcome.attempts, 3);
/// assert_eq!(outcome.result, Ok("embedded"));
/// # }
/// ```
#[must_use = "a Retry does nothing until `.run(..).await`"]
pub struct Retry<'a, E> {
    policy: &'a RetryPolicy,
    key: &'a str,
    start: Option<DateTime<Utc>>,
    notify: Option<NotifyFn<'a, E>>,
}

impl<E> fmt::Debug for Retry<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("policy", &self.policy)
            .field("key", &self.key)
            .field("start", &self.start)
            .field("notify", &self.notify.is_some())
            .finish()
    }
}

impl<'a, E> Retry<'a, E> {
    /// Runs under `policy`; `key` identifies the work (a record id) and seeds the jitter.
    pub const fn new(policy: &'a RetryPolicy, key: &'a str) -> Self {
        Self {
            policy,
            key,
            start: None,
            notify: None,
        }
    }

    /// Called before each sleep with the attempt number, the delay and the error. The error
    /// type is only known once [`run`](Self::run) is called, so a hook that uses the error
    /// names its type: `|n: &Notice<'_, MyError>| ...`.
    pub fn notify(mut self, hook: impl FnMut(&Notice<'_, E>) + Send + 'a) -> Self {
        self.notify = Some(Box::new(hook));
        self
    }

    /// The wall-clock time of the first attempt; later times are this plus the elapsed
    /// `tokio::time::Instant` time, so they follow paused test time. Default: `Utc::now()` when
    /// the run starts.
    pub const fn starting_at(mut self, start: DateTime<Utc>) -> Self {
        self.start = Some(start);
        self
    }

    /// Runs `op` (called with the 1-based attempt number), classifying errors with [`Classify`].
    pub async fn run<T, F, Fut>(self, op: F) -> Outcome<T, E>
    where
        E: Classify,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_with(|e: &E| e.class(), op).await
    }

    /// Runs `op` (called with the 1-based attempt number), classifying errors with `classify`.
    pub async fn run_with<T, C, F, Fut>(mut self, mut classify: C, mut op: F) -> Outcome<T, E>
    where
        C: FnMut(&E) -> ErrorClass,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let clock = Clock::new(self.start);
        let mut first_failure = None;
        let mut attempts: u32 = 0;
        loop {
            attempts = attempts.saturating_add(1);
            let error = match op(attempts).await {
                Ok(value) => {
                    return Outcome {
                        attempts,
                        result: Ok(value),
                    };
                }
                Err(error) => error,
            };
            let class = classify(&error);
            let now = clock.now();
            let first = *first_failure.get_or_insert(now);
            let attempt = Attempt {
                key: self.key,
                attempts_made: attempts,
                first_failure_at: Some(first),
                now,
                error_class: class,
            };
            match self.policy.decide(&attempt) {
                Decision::GiveUp(reason) => {
                    return Outcome {
                        attempts,
                        result: Err(RetryError { reason, error }),
                    };
                }
                Decision::RetryAt(retry_at) => {
                    let delay = (retry_at - now).to_std().unwrap_or(Duration::ZERO);
                    if let Some(hook) = self.notify.as_mut() {
                        hook(&Notice {
                            attempt: attempts,
                            delay,
                            retry_at,
                            error: &error,
                            class,
                        });
                    }
                    drop(error);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Runs `op` under `policy` until success, a permanent error or give-up; errors classify
/// themselves through [`Classify`]. Shorthand for `Retry::new(policy, key).run(op)`.
///
/// ```no_run
/// # use retry_policy::{presets, retry, ErrorClass};
/// # async fn fetch(_: &str) -> Result<String, ErrorClass> { Ok(String::new()) }
/// # async fn demo() {
/// let policy = presets::vector_store_load();
/// let outcome = retry(&policy, "record-17", |_attempt| fetch("record-17")).await;
/// println!("{} attempt(s): {:?}", outcome.attempts, outcome.result.is_ok());
/// # }
/// ```
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, key: &str, op: F) -> Outcome<T, E>
where
    E: Classify,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    Retry::new(policy, key).run(op).await
}

/// Wall-clock time that follows tokio's (pausable) clock.
struct Clock {
    start: DateTime<Utc>,
    origin: Instant,
}

impl Clock {
    fn new(start: Option<DateTime<Utc>>) -> Self {
        Self {
            start: start.unwrap_or_else(Utc::now),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        TimeDelta::from_std(self.origin.elapsed())
            .ok()
            .and_then(|elapsed| self.start.checked_add_signed(elapsed))
            .unwrap_or(self.start)
    }
}

// ---------------------------------------------------------------------------------------------
// Fallback chain
// ---------------------------------------------------------------------------------------------

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type StageOp<'a, T, E> = Box<dyn FnMut(u32) -> BoxFuture<'a, Result<T, E>> + Send + 'a>;
type ChainNotifyFn<'a, E> = Box<dyn FnMut(&str, &Notice<'_, E>) + Send + 'a>;

struct Stage<'a, T, E> {
    name: String,
    policy: RetryPolicy,
    op: StageOp<'a, T, E>,
}

/// A primary operation and one or more fallbacks, each run under its own policy: the next
/// stage starts when the previous one gave up (permanent error or policy exhausted).
///
/// Seed 003's embedding step: the primary provider with [`api_call`](crate::presets::api_call)
/// retries, then the fallback provider.
///
/// ```
/// use retry_policy::{presets, ErrorClass, FallbackChain};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let chain = FallbackChain::new("chathpe", presets::api_call(), |_attempt| async {
///         Err::<Vec<f32>, _>(ErrorClass::Transient) // the primary is down
///     })
///     .or_else("nomic", presets::api_call(), |_attempt| async { Ok(vec![0.1, 0.2]) });
/// let success = chain.run("case-7").await.expect("the fallback answers");
/// assert_eq!(success.name, "nomic");
/// assert_eq!((success.stage, success.attempts, success.total_attempts), (1, 1, 5));
/// # }
/// ```
#[must_use = "a FallbackChain does nothing until `.run(..).await`"]
pub struct FallbackChain<'a, T, E> {
    stages: Vec<Stage<'a, T, E>>,
    start: Option<DateTime<Utc>>,
    notify: Option<ChainNotifyFn<'a, E>>,
}

impl<T, E> fmt::Debug for FallbackChain<'_, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackChain")
            .field(
                "stages",
                &self
                    .stages
                    .iter()
                    .map(|s| (&s.name, &s.policy))
                    .collect::<Vec<_>>(),
            )
            .field("start", &self.start)
            .field("notify", &self.notify.is_some())
            .finish()
    }
}

/// Which stage of a [`FallbackChain`] succeeded, and its value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FallbackSuccess<T> {
    /// The value.
    pub value: T,
    /// Index of the stage that succeeded: 0 for the primary.
    pub stage: usize,
    /// Its name.
    pub name: String,
    /// Attempts made by that stage.
    pub attempts: u32,
    /// Attempts made by all stages together.
    pub total_attempts: u32,
}

/// One stage of a [`FallbackChain`] that gave up.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StageFailure<E> {
    /// The stage's name.
    pub name: String,
    /// Attempts it made.
    pub attempts: u32,
    /// Why it gave up, and its last error.
    pub error: RetryError<E>,
}

/// Every stage of a [`FallbackChain`] gave up.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FallbackError<E> {
    /// One entry per stage, in order.
    pub failures: Vec<StageFailure<E>>,
}

impl<E: fmt::Display> fmt::Display for FallbackError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all {} stage(s) failed", self.failures.len())?;
        for s in &self.failures {
            write!(
                f,
                "; {} after {} attempt(s): {}",
                s.name, s.attempts, s.error
            )?;
        }
        Ok(())
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for FallbackError<E> {}

impl<'a, T, E> FallbackChain<'a, T, E> {
    /// A chain whose primary stage is `op` under `policy`.
    pub fn new<F, Fut>(name: impl Into<String>, policy: RetryPolicy, op: F) -> Self
    where
        F: FnMut(u32) -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, E>> + Send + 'a,
    {
        Self {
            stages: Vec::new(),
            start: None,
            notify: None,
        }
        .or_else(name, policy, op)
    }

    /// Adds a fallback stage, tried when every stage before it gave up.
    pub fn or_else<F, Fut>(
        mut self,
        name: impl Into<String>,
        policy: RetryPolicy,
        mut op: F,
    ) -> Self
    where
        F: FnMut(u32) -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, E>> + Send + 'a,
    {
        self.stages.push(Stage {
            name: name.into(),
            policy,
            op: Box::new(move |attempt| Box::pin(op(attempt))),
        });
        self
    }

    /// Called before each sleep, in any stage, with the stage's name.
    pub fn notify(mut self, hook: impl FnMut(&str, &Notice<'_, E>) + Send + 'a) -> Self {
        self.notify = Some(Box::new(hook));
        self
    }

    /// See [`Retry::starting_at`].
    pub const fn starting_at(mut self, start: DateTime<Utc>) -> Self {
        self.start = Some(start);
        self
    }

    /// The stage names, in order.
    pub fn stage_names(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|s| s.name.as_str())
    }

    /// Runs the stages in order, classifying errors with [`Classify`]. `key` seeds every stage's
    /// jitter; each stage counts its attempts and its `max_elapsed` from its own first failure.
    ///
    /// # Errors
    ///
    /// [`FallbackError`] with every stage's failure when none succeeded.
    pub async fn run(self, key: &str) -> Result<FallbackSuccess<T>, FallbackError<E>>
    where
        E: Classify,
    {
        self.run_with(key, |e: &E| e.class()).await
    }

    /// [`run`](Self::run) with a classifying closure instead of [`Classify`].
    ///
    /// # Errors
    ///
    /// [`FallbackError`] with every stage's failure when none succeeded.
    pub async fn run_with<C>(
        mut self,
        key: &str,
        mut classify: C,
    ) -> Result<FallbackSuccess<T>, FallbackError<E>>
    where
        C: FnMut(&E) -> ErrorClass,
    {
        let start = self.start.unwrap_or_else(Utc::now);
        let clock = Clock::new(Some(start));
        let mut failures = Vec::with_capacity(self.stages.len());
        let mut total: u32 = 0;
        for (index, stage) in self.stages.into_iter().enumerate() {
            let Stage {
                name,
                policy,
                mut op,
            } = stage;
            let mut retry = Retry::new(&policy, key).starting_at(clock.now());
            if let Some(hook) = self.notify.as_mut() {
                let name = name.as_str();
                retry = retry.notify(move |n: &Notice<'_, E>| hook(name, n));
            }
            let outcome = retry.run_with(&mut classify, &mut op).await;
            total = total.saturating_add(outcome.attempts);
            match outcome.result {
                Ok(value) => {
                    return Ok(FallbackSuccess {
                        value,
                        stage: index,
                        name,
                        attempts: outcome.attempts,
                        total_attempts: total,
                    });
                }
                Err(error) => failures.push(StageFailure {
                    name,
                    attempts: outcome.attempts,
                    error,
                }),
            }
        }
        Err(FallbackError { failures })
    }
}
