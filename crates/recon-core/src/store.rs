//! Capability-sized store traits the runner and the reconcilers persist through.
//!
//! `recon-core` ships in-memory implementations ([`crate::memory`]); `store-sqlx` implements
//! them on SQLite, PostgreSQL and MySQL/MariaDB. Each trait is object safe.

use std::any::Any;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{Result, RunReport};

/// Where finished [`RunReport`]s are kept.
#[async_trait]
pub trait RunLog: Send + Sync {
    /// Store a finished run.
    async fn append(&self, report: &RunReport) -> Result<()>;

    /// The most recently appended run of `runner`, if any.
    async fn latest(&self, runner: &str) -> Result<Option<RunReport>>;

    /// Up to `limit` runs of `runner`, most recently appended first. Order of appending, not of
    /// start times: instances with skewed clocks, or a clock that went back, cannot hide the
    /// run that happened last.
    async fn history(&self, runner: &str, limit: usize) -> Result<Vec<RunReport>>;

    /// Delete runs (of every runner) that started before `older_than`; returns how many.
    async fn prune(&self, older_than: DateTime<Utc>) -> Result<u64>;
}

/// Named positions that only move forwards (the "last synced up to" of an upstream sync).
#[async_trait]
pub trait WatermarkStore: Send + Sync {
    /// The stored position of `name`, if it was ever set.
    async fn get(&self, name: &str) -> Result<Option<DateTime<Utc>>>;

    /// Move `name` to `to`. Advancing to the current position is a no-op; moving backwards is
    /// [`Error::WatermarkBackwards`](crate::Error::WatermarkBackwards) and changes nothing.
    async fn advance(&self, name: &str, to: DateTime<Utc>) -> Result<()>;
}

/// Proof that a [`RunLock`] was taken. Hand it back to [`RunLock::release`].
///
/// A store may keep a connection or other state in the guard (an advisory lock lives as long
/// as its session); dropping the guard without releasing it must still free the lock, at the
/// latest when its time-to-live runs out.
pub struct LockGuard {
    name: String,
    token: String,
    expires_at: Option<DateTime<Utc>>,
    handle: Option<Box<dyn Any + Send>>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// A guard for lock `name`, identified by `token` (unique per acquisition).
    pub fn new(name: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            token: token.into(),
            expires_at: None,
            handle: None,
        }
    }

    /// When the lock lapses if not released (for leases with a time-to-live).
    #[must_use]
    pub fn with_expiry(mut self, expires_at: DateTime<Utc>) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Keep store state (a dedicated connection, say) alive as long as the guard.
    #[must_use]
    pub fn with_handle(mut self, handle: Box<dyn Any + Send>) -> Self {
        self.handle = Some(handle);
        self
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token of this acquisition.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// When the lock lapses, if it has a time-to-live.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// Take the store state back out (for the store's own `release`).
    pub fn take_handle<T: Any>(&mut self) -> Option<Box<T>> {
        match self.handle.take()?.downcast::<T>() {
            Ok(h) => Some(h),
            Err(other) => {
                self.handle = Some(other);
                None
            }
        }
    }
}

/// The answer of [`RunLock::try_acquire`].
#[derive(Debug)]
pub enum LockAttempt {
    /// The lock is ours until released (or until its time-to-live runs out).
    Acquired(LockGuard),
    /// Another instance holds it.
    HeldByOther {
        /// Who holds it, when the store knows.
        holder: Option<String>,
        /// Until when, when the store knows.
        until: Option<DateTime<Utc>>,
    },
}

/// A named lock shared by every instance of the host, so that only one runs at a time.
#[async_trait]
pub trait RunLock: Send + Sync {
    /// Take `name` without waiting. `ttl` bounds how long a crashed holder can keep it; a zero
    /// TTL is an invalid-input error.
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<LockAttempt>;

    /// Give the lock back. Releasing a lock that lapsed and was taken by another instance is
    /// [`Error::LockNotHeld`](crate::Error::LockNotHeld) and leaves the other holder alone.
    async fn release(&self, guard: LockGuard) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_handle_round_trips_by_type() {
        let mut g = LockGuard::new("n", "t").with_handle(Box::new(42_u32));
        assert!(
            g.take_handle::<String>().is_none(),
            "wrong type keeps the handle"
        );
        assert_eq!(*g.take_handle::<u32>().unwrap(), 42);
        assert!(g.take_handle::<u32>().is_none());
    }
}
