#![doc = include_str!("../README.md")]

mod backoff;
mod decision;
mod duration;
mod error;
mod hash;
mod policy;
pub mod presets;
mod run;

pub use backoff::{Backoff, Jitter};
pub use decision::{
    Attempt, Clamp, Decision, DelayBreakdown, ErrorClass, Explanation, GiveUpReason,
};
pub use error::{Error, Result};
pub use policy::{RetryPolicy, RetryPolicyBuilder};
pub use run::{
    Classify, FallbackChain, FallbackError, FallbackSuccess, Notice, Outcome, Retry, RetryError,
    StageFailure, retry,
};

/// The design guide's examples (`docs/retry-policy.md`) are compiled as doctests, so the guide
/// cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/retry-policy.md")]
struct DesignGuide;
