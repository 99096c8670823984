//! In-memory stores for tests, examples and single-process hosts.
//!
//! They behave like the SQL stores in `store-sqlx` (the conformance suite checks both), but
//! keep nothing across restarts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    Clock, Error, LockAttempt, LockGuard, Result, RunLock, RunLog, RunReport, SystemClock,
    WatermarkStore,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A [`RunLog`] in memory.
#[derive(Debug, Default)]
pub struct MemoryRunLog {
    runs: Mutex<Vec<RunReport>>,
}

impl MemoryRunLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RunLog for MemoryRunLog {
    async fn append(&self, report: &RunReport) -> Result<()> {
        lock(&self.runs).push(report.clone());
        Ok(())
    }

    async fn latest(&self, runner: &str) -> Result<Option<RunReport>> {
        Ok(self.history(runner, 1).await?.pop())
    }

    async fn history(&self, runner: &str, limit: usize) -> Result<Vec<RunReport>> {
        let runs = lock(&self.runs);
        // newest first = most recently appended (see RunLog::history)
        Ok(runs
            .iter()
            .rev()
            .filter(|r| r.runner == runner)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn prune(&self, older_than: DateTime<Utc>) -> Result<u64> {
        let mut runs = lock(&self.runs);
        let before = runs.len();
        runs.retain(|r| r.started_at >= older_than);
        Ok((before - runs.len()) as u64)
    }
}

/// A [`WatermarkStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryWatermarkStore {
    marks: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl MemoryWatermarkStore {
    /// No watermarks.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl WatermarkStore for MemoryWatermarkStore {
    async fn get(&self, name: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(lock(&self.marks).get(name).copied())
    }

    async fn advance(&self, name: &str, to: DateTime<Utc>) -> Result<()> {
        let mut marks = lock(&self.marks);
        match marks.get(name) {
            Some(&current) if to < current => Err(Error::WatermarkBackwards {
                name: name.to_owned(),
                current,
                requested: to,
            }),
            _ => {
                marks.insert(name.to_owned(), to);
                Ok(())
            }
        }
    }
}

#[derive(Debug)]
struct Held {
    token: String,
    until: DateTime<Utc>,
}

/// A [`RunLock`] in memory: a lease per name with a time-to-live read from a [`Clock`].
///
/// Clones share the same locks, so clones stand in for several instances of a host.
#[derive(Clone, Debug)]
pub struct MemoryRunLock {
    held: Arc<Mutex<HashMap<String, Held>>>,
    clock: Arc<dyn Clock>,
    next_token: Arc<AtomicU64>,
}

impl Default for MemoryRunLock {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRunLock {
    /// Locks timed by the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// Locks timed by `clock` (a [`ManualClock`](crate::ManualClock) in tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            held: Arc::default(),
            clock,
            next_token: Arc::new(AtomicU64::new(1)),
        }
    }
}

#[async_trait]
impl RunLock for MemoryRunLock {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<LockAttempt> {
        if ttl.is_zero() {
            return Err(Error::invalid_input(
                "a lock needs a time-to-live above zero",
            ));
        }
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|_| Error::invalid_input(format!("lock ttl {ttl:?} is too large")))?;
        let now = self.clock.now();
        let mut held = lock(&self.held);
        if let Some(h) = held.get(name)
            && h.until > now
        {
            return Ok(LockAttempt::HeldByOther {
                holder: Some(h.token.clone()),
                until: Some(h.until),
            });
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed).to_string();
        let until = now
            .checked_add_signed(ttl)
            .ok_or_else(|| Error::invalid_input("lock ttl overflows the calendar"))?;
        held.insert(
            name.to_owned(),
            Held {
                token: token.clone(),
                until,
            },
        );
        Ok(LockAttempt::Acquired(
            LockGuard::new(name, token).with_expiry(until),
        ))
    }

    async fn release(&self, guard: LockGuard) -> Result<()> {
        let mut held = lock(&self.held);
        match held.get(guard.name()) {
            Some(h) if h.token == guard.token() => {
                held.remove(guard.name());
                Ok(())
            }
            _ => Err(Error::LockNotHeld {
                name: guard.name().to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ManualClock, RunId, RunStatus};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn run(runner: &str, at: &str) -> RunReport {
        RunReport {
            id: RunId::from_string(format!("{runner}-{at}")),
            runner: runner.into(),
            started_at: t(at),
            finished_at: t(at),
            duration_ms: 0,
            status: RunStatus::Success,
            dry_run: false,
            steps: vec![],
            errors: vec![],
            notes: vec![],
        }
    }

    #[tokio::test]
    async fn watermark_never_moves_back() {
        let w = MemoryWatermarkStore::new();
        assert_eq!(w.get("sync").await.unwrap(), None);
        w.advance("sync", t("2024-01-24T10:00:00Z")).await.unwrap();
        w.advance("sync", t("2024-01-24T10:00:00Z")).await.unwrap();
        let err = w
            .advance("sync", t("2024-01-24T09:59:59Z"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::WatermarkBackwards { .. }), "{err}");
        assert!(!err.is_transient());
        assert_eq!(
            w.get("sync").await.unwrap(),
            Some(t("2024-01-24T10:00:00Z"))
        );
        w.advance("sync", t("2024-01-24T10:30:00Z")).await.unwrap();
        assert_eq!(
            w.get("sync").await.unwrap(),
            Some(t("2024-01-24T10:30:00Z"))
        );
        assert_eq!(w.get("other").await.unwrap(), None, "names are independent");
    }

    #[tokio::test]
    async fn run_log_history_is_newest_first_per_runner_and_prunes() {
        let log = MemoryRunLog::new();
        for at in [
            "2024-01-01T00:00:00Z",
            "2024-01-03T00:00:00Z",
            "2024-01-02T00:00:00Z",
        ] {
            log.append(&run("a", at)).await.unwrap();
        }
        log.append(&run("b", "2024-01-04T00:00:00Z")).await.unwrap();
        let h = log.history("a", 10).await.unwrap();
        let ids: Vec<_> = h.iter().map(|r| r.id.as_str()).collect();
        // most recently appended first, whatever the clocks said
        assert_eq!(
            ids,
            [
                "a-2024-01-02T00:00:00Z",
                "a-2024-01-03T00:00:00Z",
                "a-2024-01-01T00:00:00Z"
            ]
        );
        assert_eq!(log.history("a", 1).await.unwrap().len(), 1);
        assert_eq!(log.latest("b").await.unwrap().unwrap().runner, "b");
        assert_eq!(log.prune(t("2024-01-02T12:00:00Z")).await.unwrap(), 2);
        assert_eq!(log.history("a", 10).await.unwrap().len(), 1);
        assert_eq!(log.latest("c").await.unwrap(), None);
    }

    #[tokio::test]
    async fn run_lock_excludes_until_release_or_ttl() {
        let clock = ManualClock::at(t("2024-01-24T12:00:00Z"));
        let a = MemoryRunLock::with_clock(Arc::new(clock.clone()));
        let b = a.clone();
        let ttl = Duration::from_secs(60);
        let LockAttempt::Acquired(g1) = a.try_acquire("sync", ttl).await.unwrap() else {
            panic!("free lock not acquired")
        };
        assert_eq!(g1.expires_at(), Some(t("2024-01-24T12:01:00Z")));
        let LockAttempt::HeldByOther { until, .. } = b.try_acquire("sync", ttl).await.unwrap()
        else {
            panic!("held lock acquired twice")
        };
        assert_eq!(until, Some(t("2024-01-24T12:01:00Z")));
        assert!(matches!(
            b.try_acquire("other", ttl).await.unwrap(),
            LockAttempt::Acquired(_)
        ));
        // the holder crashes: after the ttl another instance takes over ...
        clock.advance(chrono::Duration::seconds(61));
        let LockAttempt::Acquired(g2) = b.try_acquire("sync", ttl).await.unwrap() else {
            panic!("lapsed lock not taken over")
        };
        // ... and the late release of the first holder must not free the new holder's lock
        let err = a.release(g1).await.unwrap_err();
        assert!(matches!(err, Error::LockNotHeld { .. }));
        assert!(matches!(
            a.try_acquire("sync", ttl).await.unwrap(),
            LockAttempt::HeldByOther { .. }
        ));
        b.release(g2).await.unwrap();
        assert!(matches!(
            a.try_acquire("sync", ttl).await.unwrap(),
            LockAttempt::Acquired(_)
        ));
    }

    #[tokio::test]
    async fn absurd_ttl_is_an_error_not_a_panic() {
        let l = MemoryRunLock::new();
        let err = l.try_acquire("x", Duration::MAX).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
    }
}
