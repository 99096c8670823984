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
