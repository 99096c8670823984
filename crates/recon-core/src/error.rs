//! The one error type of `recon-core`.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A boxed error from a store, a host callback or another crate of the workspace.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `recon-core` and in the reconcilers built on it.
///
/// Retry logic asks [`Error::is_transient`]; it never parses messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The runner or a reconciler was configured in a way that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An argument or a stored value is not acceptable; nothing was changed.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A watermark may only move forwards.
    #[error("watermark `{name}` cannot move backwards from {current} to {requested}")]
    WatermarkBackwards {
        /// Name of the watermark.
        name: String,
        /// The stored position.
        current: DateTime<Utc>,
        /// The position that was asked for.
        requested: DateTime<Utc>,
    },

    /// A lock guard was released that is no longer (or never was) held by its owner.
    #[error("lock `{name}` is not held by this guard")]
    LockNotHeld {
        /// Name of the lock.
        name: String,
    },

    /// An operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// A failure reported by a store or another component, with its cause.
    #[error("{context}: {source}")]
    Source {
        /// What was being done, e.g. `"read expired leases"`.
        context: String,
        /// Whether trying again later may succeed (connection lost, lock timeout, deadlock).
        transient: bool,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A configuration error.
    pub fn config(msg: impl Into<String>) -> Self {
        Self::Config(msg.into())
    }

    /// An invalid-input error.
    pub fn invalid_input(msg: impl Into<String>) -> Self {
        Self::InvalidInput(msg.into())
    }

    /// Wrap an error that may go away when retried later.
    pub fn transient(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Source {
            context: context.into(),
            transient: true,
            source: source.into(),
        }
    }

    /// Wrap an error that will not go away by retrying.
    pub fn permanent(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Source {
            context: context.into(),
            transient: false,
            source: source.into(),
        }
    }

    /// Whether retrying the same operation later may succeed.
    ///
    /// Timeouts and errors wrapped with [`Error::transient`] are transient; configuration,
    /// input and watermark errors are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::Source { transient, .. } => *transient,
            Self::Config(_)
            | Self::InvalidInput(_)
            | Self::WatermarkBackwards { .. }
            | Self::LockNotHeld { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_flag_follows_the_constructor() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(Error::transient("read batch", io).is_transient());
        let io = std::io::Error::other("bad");
        let e = Error::permanent("read batch", io);
        assert!(!e.is_transient());
        assert_eq!(e.to_string(), "read batch: bad");
        assert!(Error::Timeout(Duration::from_secs(1)).is_transient());
        assert!(!Error::config("x").is_transient());
        assert!(!Error::invalid_input("x").is_transient());
        assert!(!Error::LockNotHeld { name: "l".into() }.is_transient());
    }
}
