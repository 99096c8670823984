//! Where "now" comes from.
//!
//! Decisions never read the system clock themselves: the [`Runner`](crate::Runner) reads a
//! [`TimeSource`] once at the start of a run and freezes that instant in the
//! [`RunContext`](crate::RunContext). A [`Clock`] is a synchronous time source (the system
//! clock, or a [`ManualClock`] in tests); a store may also offer the database's own `now()` as
//! an asynchronous [`TimeSource`], so that hosts with skewed clocks agree on lease expiry.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;

/// A synchronous source of the current UTC time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Clones share the same time.
///
/// ```
/// use recon_core::{Clock, ManualClock};
/// let clock = ManualClock::at("2024-01-24T12:00:00Z".parse().unwrap());
/// clock.advance(chrono::Duration::minutes(5));
/// assert_eq!(clock.now().to_rfc3339(), "2024-01-24T12:05:00+00:00");
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock stopped at `now`.
    pub fn at(now: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(now)),
        }
    }

    /// Set the time (it may move backwards: tests of skewed clocks need that).
    pub fn set(&self, now: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = now;
    }

    /// Move the time by `by` (negative moves it backwards).
    ///
    /// A move past the range chrono can represent stops at its end
    /// (`DateTime::<Utc>::MAX_UTC` or `MIN_UTC`) instead of panicking.
    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now
            .checked_add_signed(by)
            .unwrap_or(if by < chrono::Duration::zero() {
                DateTime::<Utc>::MIN_UTC
            } else {
                DateTime::<Utc>::MAX_UTC
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An asynchronous source of the current time: a [`Clock`], or a database's `now()`.
///
/// Every [`Clock`] is a `TimeSource`.
#[async_trait]
pub trait TimeSource: Send + Sync + fmt::Debug {
    /// Read the current time. A database source may fail (connection lost).
    async fn fetch_now(&self) -> Result<DateTime<Utc>>;
}

#[async_trait]
impl<C: Clock + ?Sized> TimeSource for C {
    async fn fetch_now(&self) -> Result<DateTime<Utc>> {
        Ok(self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_is_shared_by_clones_and_is_a_time_source() {
        let t0: DateTime<Utc> = "2024-01-24T12:00:00Z".parse().unwrap();
        let a = ManualClock::at(t0);
        let b = a.clone();
        b.advance(chrono::Duration::hours(-1));
        assert_eq!(a.now(), t0 - chrono::Duration::hours(1));
        let source: Arc<dyn TimeSource> = Arc::new(a.clone());
        assert_eq!(source.fetch_now().await.unwrap(), a.now());
    }

    #[test]
    fn advancing_past_the_representable_range_saturates_instead_of_panicking() {
        let t0: DateTime<Utc> = "9999-12-31T00:00:00Z".parse().unwrap();
        let clock = ManualClock::at(t0);
        clock.advance(chrono::Duration::MAX);
        assert_eq!(clock.now(), DateTime::<Utc>::MAX_UTC);
        clock.advance(chrono::Duration::MIN);
        clock.advance(chrono::Duration::MIN);
        assert_eq!(clock.now(), DateTime::<Utc>::MIN_UTC);
        clock.set(t0);
        clock.advance(chrono::Duration::days(1));
        assert_eq!(clock.now(), t0 + chrono::Duration::days(1));
    }
}
