//! [`MemoryLeaseStore`]: the in-memory reference implementation of [`LeaseStore`] and
//! [`PruneStore`]. The conformance suite checks that the SQL stores behave exactly like it.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use recon_core::{Clock, Result, SystemClock};

use crate::{
    ApplyOutcome, CandidateQuery, JobKey, JobRow, LeaseStore, PlannedBatch, PruneMode, PruneQuery,
    PruneStore, Repair, RepairPlan,
};

/// A job with every column lease repair may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredJob {
    /// The columns candidates are read from.
    pub row: JobRow,
    /// `last_error`.
    pub last_error: Option<String>,
    /// `next_run_at`.
    pub next_run_at: Option<DateTime<Utc>>,
    /// `failed_at`.
    pub failed_at: Option<DateTime<Utc>>,
    /// `updated_at`.
    pub updated_at: Option<DateTime<Utc>>,
}

impl StoredJob {
    /// A job with the given lease columns and nothing else set.
    pub fn new(
        key: impl Into<JobKey>,
        status: &str,
        owner: Option<&str>,
        expires: Option<DateTime<Utc>>,
        attempts: Option<i64>,
    ) -> Self {
        Self {
            row: JobRow {
                key: key.into(),
                status: status.into(),
                lease_owner: owner.map(str::to_owned),
                lease_expires_at: expires,
                attempts,
                unreadable: None,
            },
            last_error: None,
            next_run_at: None,
            failed_at: None,
            updated_at: None,
        }
    }
}

#[derive(Debug, Default)]
struct Tables {
    jobs: BTreeMap<JobKey, StoredJob>,
    archive: BTreeMap<JobKey, StoredJob>,
}

/// Jobs in memory. Every operation is atomic under one lock.
#[derive(Debug)]
pub struct MemoryLeaseStore {
    tables: Mutex<Tables>,
    clock: Box<dyn Clock>,
}

impl Default for MemoryLeaseStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLeaseStore {
    /// An empty table whose "database clock" is the system clock.
    pub fn new() -> Self {
        Self::with_clock(Box::new(SystemClock))
    }

    /// An empty table whose "database clock" is `clock`.
    pub fn with_clock(clock: Box<dyn Clock>) -> Self {
        Self {
            tables: Mutex::default(),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Insert or replace jobs.
    pub fn insert(&self, jobs: impl IntoIterator<Item = StoredJob>) {
        let mut t = self.lock();
        for j in jobs {
            t.jobs.insert(j.row.key.clone(), j);
        }
    }

    /// Change a job as a worker would (renew a lease, finish the job).
    pub fn update(&self, key: &JobKey, f: impl FnOnce(&mut StoredJob)) -> bool {
        match self.lock().jobs.get_mut(key) {
            Some(j) => {
                f(j);
                true
            }
            None => false,
        }
    }

    /// Every job, in key order.
    pub fn jobs(&self) -> Vec<StoredJob> {
        self.lock().jobs.values().cloned().collect()
    }

    /// Every archived job, in key order.
    pub fn archived(&self) -> Vec<StoredJob> {
        self.lock().archive.values().cloned().collect()
    }
}

#[async_trait]
impl LeaseStore for MemoryLeaseStore {
    async fn read_candidates(&self, q: CandidateQuery) -> Result<Vec<JobRow>> {
        let t = self.lock();
        let start = match &q.after {
            Some(k) => std::ops::Bound::Excluded(k.clone()),
            None => std::ops::Bound::Unbounded,
        };
        Ok(t.jobs
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, j)| &j.row)
            .filter(|r| q.kind.matches(r, &q))
            .take(q.limit)
            .cloned()
            .collect())
    }

    async fn apply(&self, repairs: &[Repair], now: DateTime<Utc>) -> Result<ApplyOutcome> {
        let mut t = self.lock();
        let mut out = ApplyOutcome::default();
        for r in repairs {
            let key = &r.expected.key;
            match t.jobs.get_mut(key) {
                Some(j) if j.row == r.expected => {
                    write(j, r, now);
                    out.applied.push(key.clone());
                }
                _ => out.skipped.push(key.clone()),
            }
        }
        Ok(out)
    }

    async fn database_now(&self) -> Result<DateTime<Utc>> {
        Ok(self.clock.now())
    }

    async fn repair_planned(
        &self,
        plans: &[RepairPlan],
        after: Option<JobKey>,
        limit: usize,
    ) -> Result<Option<PlannedBatch>> {
        let start = match after {
            Some(k) => std::ops::Bound::Excluded(k),
            None => std::ops::Bound::Unbounded,
        };
        let mut t = self.lock();
        let repairs: Vec<(usize, Repair)> = t
            .jobs
            .range((start, std::ops::Bound::Unbounded))
            .filter_map(|(_, j)| {
                plans
                    .iter()
                    .enumerate()
                    .find_map(|(i, p)| Some((i, p.repair_for(&j.row)?)))
            })
            .take(limit)
            .collect();
        let mut out = PlannedBatch::empty(plans.len());
        for (i, r) in repairs {
            if let Some(j) = t.jobs.get_mut(&r.expected.key) {
                write(j, &r, plans[i].now);
            }
            out.counts[i].add(r.failed);
            out.last = Some(r.expected.key);
        }
        out.more = out.repaired() >= limit as u64;
        Ok(Some(out))
    }
}

/// A repair as every store writes it.
fn write(j: &mut StoredJob, r: &Repair, now: DateTime<Utc>) {
    j.row.status = r.status.clone();
    j.row.lease_owner = None;
    j.row.lease_expires_at = None;
    j.row.attempts = Some(r.attempts);
    j.last_error = Some(r.last_error.clone());
    j.next_run_at = r.next_run_at;
    if r.failed {
        j.failed_at = Some(now);
    }
    j.updated_at = Some(now);
}

fn prunable(j: &StoredJob, q: &PruneQuery) -> bool {
    q.terminal_states.contains(&j.row.status) && j.updated_at.is_some_and(|u| u < q.older_than)
}

#[async_trait]
impl PruneStore for MemoryLeaseStore {
    async fn prune_batch(&self, q: PruneQuery) -> Result<u64> {
        let mut t = self.lock();
        let doomed: Vec<JobKey> = t
            .jobs
            .values()
            .filter(|j| prunable(j, &q))
            .take(q.limit)
            .map(|j| j.row.key.clone())
            .collect();
        for k in &doomed {
            if let Some(j) = t.jobs.remove(k)
                && q.mode == PruneMode::Archive
            {
                t.archive.insert(k.clone(), j);
            }
        }
        Ok(doomed.len() as u64)
    }

    async fn count_prunable(&self, q: PruneQuery) -> Result<u64> {
        Ok(self
            .lock()
            .jobs
            .values()
            .filter(|j| prunable(j, &q))
            .count() as u64)
    }
}
