//! In-memory reference implementations of every store trait of this crate.
//!
//! They define the behaviour the SQL stores must match (the [`conformance`](crate::conformance)
//! suite runs the same checks against both): byte-order keys, microsecond timestamps,
//! input checked before anything is written, one lock (≈ one transaction) per call.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use serde_json::Value as Json;

use crate::Result;
use crate::classify::{
    FingerprintStore, RecordBatch, StoredFingerprint, UnseenQuery, check_keys, check_record_batch,
    check_unseen_query,
};
use crate::failed::{
    DueQuery, ErrorTypeCount, FailedRecord, FailedRecordStore, FailureId, FailureOutcome,
    FailureState, ListQuery, NewFailure, OutcomeKind, PruneQuery, check_failures, check_outcomes,
    check_page,
};
use crate::limits::{self, store_time};
use crate::lineage::{
    LineageRecord, LineageStore, LineageUpdate, QualityCounts, QualityQuery, StageStatusCount,
    StuckQuery, check_quality_query, check_stuck_query, check_updates,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keys after `after` (exclusive) in a `BTreeMap` ordered by (namespace, key).
fn range_after<'a, V>(
    map: &'a BTreeMap<(String, String), V>,
    ns: &str,
    after: Option<&str>,
) -> impl Iterator<Item = (&'a (String, String), &'a V)> {
    let start = match after {
        Some(a) => Bound::Excluded((ns.to_owned(), a.to_owned())),
        None => Bound::Included((ns.to_owned(), String::new())),
    };
    let ns = ns.to_owned();
    map.range((start, Bound::Unbounded))
        .take_while(move |((n, _), _)| *n == ns)
}

/// A [`FingerprintStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryFingerprintStore {
    rows: Mutex<BTreeMap<(String, String), StoredFingerprint>>,
}

impl MemoryFingerprintStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl FingerprintStore for MemoryFingerprintStore {
    async fn lookup(&self, namespace: &str, keys: &[String]) -> Result<Vec<StoredFingerprint>> {
        check_keys(namespace, "lookup", keys)?;
        let rows = lock(&self.rows);
        // Each stored key once, whatever the duplicates in `keys`.
        let found: BTreeMap<String, StoredFingerprint> = keys
            .iter()
            .filter_map(|k| rows.get(&(namespace.to_owned(), k.clone())))
            .map(|r| (r.key.clone(), r.clone()))
            .collect();
        Ok(found.into_values().collect())
    }

    async fn record(&self, namespace: &str, batch: &RecordBatch) -> Result<u64> {
        check_record_batch(namespace, batch)?;
        let at = store_time(batch.at);
        let mut rows = lock(&self.rows);
        let mut n = 0;
        for e in &batch.upserts {
            rows.insert(
                (namespace.to_owned(), e.key.clone()),
                StoredFingerprint {
                    key: e.key.clone(),
                    fingerprint: e.fingerprint,
                    group: e.group.clone(),
                    seen_run: Some(batch.run.clone()),
                    seen_at: Some(at),
                },
            );
            n += 1;
        }
        for k in &batch.seen {
            if let Some(r) = rows.get_mut(&(namespace.to_owned(), k.clone())) {
                r.seen_run = Some(batch.run.clone());
                r.seen_at = Some(at);
                n += 1;
            }
        }
        Ok(n)
    }

    async fn unseen(&self, namespace: &str, query: &UnseenQuery) -> Result<Vec<StoredFingerprint>> {
        check_unseen_query(namespace, query)?;
        let rows = lock(&self.rows);
        Ok(range_after(&rows, namespace, query.after.as_deref())
            .map(|(_, r)| r)
            .filter(|r| r.seen_run.as_deref() != Some(query.run.as_str()))
            .filter(|r| query.group.is_none() || r.group == query.group)
            .take(query.limit)
            .cloned()
            .collect())
    }

    async fn remove(&self, namespace: &str, keys: &[String]) -> Result<u64> {
        check_keys(namespace, "remove", keys)?;
        let mut rows = lock(&self.rows);
        Ok(keys
            .iter()
            .filter(|k| rows.remove(&(namespace.to_owned(), (*k).clone())).is_some())
            .count() as u64)
    }
}

/// A [`LineageStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryLineageStore {
    rows: Mutex<BTreeMap<(String, String), LineageRecord>>,
}

impl MemoryLineageStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn apply_update(row: Option<&LineageRecord>, u: &LineageUpdate) -> Option<LineageRecord> {
    let at = store_time(u.at);
    let error = u.error.as_deref().map(limits::truncate_message);
    match row {
        None => Some(LineageRecord {
            key: u.key.clone(),
            stage: u.stage.clone(),
            status: u.status,
            stage_at: at,
            stage_times: BTreeMap::from([(u.stage.clone(), at)]),
            fingerprint: u.fingerprint,
            retry_count: u32::from(u.retry),
            last_error: error,
            metadata: u
                .metadata
                .clone()
                .unwrap_or_else(|| Json::Object(Default::default())),
            created_at: at,
            updated_at: at,
        }),
        Some(r) if r.updated_at > at => None,
        Some(r) => {
            let mut r = r.clone();
            r.stage = u.stage.clone();
            r.status = u.status;
            r.stage_at = at;
            r.stage_times.insert(u.stage.clone(), at);
            if let Some(f) = u.fingerprint {
                r.fingerprint = Some(f);
            }
            if let Some(m) = &u.metadata {
                r.metadata = m.clone();
            }
            r.last_error = error;
            if u.retry {
                r.retry_count = r.retry_count.saturating_add(1);
            }
            r.updated_at = at;
            Some(r)
        }
    }
}

/// A number > 0 at `key` of a JSON object.
fn positive(meta: &Json, key: &str) -> bool {
    meta.get(key)
        .and_then(Json::as_f64)
        .is_some_and(|v| v > 0.0)
}

#[async_trait]
impl LineageStore for MemoryLineageStore {
    async fn upsert(&self, pipeline: &str, updates: &[LineageUpdate]) -> Result<u64> {
        check_updates(pipeline, updates)?;
        let mut rows = lock(&self.rows);
        let mut n = 0;
        for u in updates {
            let id = (pipeline.to_owned(), u.key.clone());
            if let Some(new) = apply_update(rows.get(&id), u) {
                rows.insert(id, new);
                n += 1;
            }
        }
        Ok(n)
    }

    async fn get(&self, pipeline: &str, keys: &[String]) -> Result<Vec<LineageRecord>> {
        check_keys(pipeline, "get lineage", keys)?;
        let rows = lock(&self.rows);
        let mut out: Vec<LineageRecord> = keys
            .iter()
            .filter_map(|k| rows.get(&(pipeline.to_owned(), k.clone())).cloned())
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn stage_counts(&self, pipeline: &str) -> Result<Vec<StageStatusCount>> {
        limits::check_name("pipeline", pipeline)?;
        let rows = lock(&self.rows);
        let mut counts: BTreeMap<(String, crate::LineageStatus), u64> = BTreeMap::new();
        for (_, r) in range_after(&rows, pipeline, None) {
            *counts.entry((r.stage.clone(), r.status)).or_default() += 1;
        }
        Ok(counts
            .into_iter()
            .map(|((stage, status), count)| StageStatusCount {
                stage,
                status,
                count,
            })
            .collect())
    }

    async fn stuck(&self, pipeline: &str, query: &StuckQuery) -> Result<Vec<LineageRecord>> {
        check_stuck_query(pipeline, query)?;
        let rows = lock(&self.rows);
        Ok(range_after(&rows, pipeline, query.after.as_deref())
            .map(|(_, r)| r)
            .filter(|r| r.status == crate::LineageStatus::InProgress)
            .filter(|r| r.stage_at < query.entered_before)
            .filter(|r| query.stage.as_ref().is_none_or(|s| *s == r.stage))
            .take(query.limit)
            .cloned()
            .collect())
    }

    async fn quality_counts(&self, pipeline: &str, query: &QualityQuery) -> Result<QualityCounts> {
        check_quality_query(pipeline, query)?;
        let rows = lock(&self.rows);
        let mut out = QualityCounts {
            total: 0,
            present: query.present.iter().map(|k| (k.clone(), 0)).collect(),
            below: 0,
        };
        for (_, r) in range_after(&rows, pipeline, None) {
            out.total += 1;
            for (k, n) in &mut out.present {
                if positive(&r.metadata, k) {
                    *n += 1;
                }
            }
            if let Some((k, min)) = &query.below {
                let v = r.metadata.get(k).and_then(Json::as_f64);
                if v.is_none_or(|v| v < f64::from(*min)) {
                    out.below += 1;
                }
            }
        }
        Ok(out)
    }
}

/// A [`FailedRecordStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryFailedRecordStore {
    /// (pipeline, key, stage) → row.
    rows: Mutex<BTreeMap<(String, String, String), FailedRecord>>,
}

impl MemoryFailedRecordStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn failed_range<'a>(
    rows: &'a BTreeMap<(String, String, String), FailedRecord>,
    pipeline: &str,
    after: Option<&FailureId>,
) -> impl Iterator<Item = &'a FailedRecord> {
    let start = match after {
        Some(a) => Bound::Excluded((pipeline.to_owned(), a.key.clone(), a.stage.clone())),
        None => Bound::Included((pipeline.to_owned(), String::new(), String::new())),
    };
    let p = pipeline.to_owned();
    rows.range((start, Bound::Unbounded))
        .take_while(move |((q, _, _), _)| *q == p)
        .map(|(_, r)| r)
}

#[async_trait]
impl FailedRecordStore for MemoryFailedRecordStore {
    async fn record(&self, pipeline: &str, failures: &[NewFailure]) -> Result<u64> {
        check_failures(pipeline, failures)?;
        let mut rows = lock(&self.rows);
        for f in failures {
            let at = store_time(f.at);
            let message = limits::truncate_message(&f.message);
            let id = (pipeline.to_owned(), f.key.clone(), f.stage.clone());
            match rows.get_mut(&id) {
                Some(r) if r.state != FailureState::Resolved => {
                    r.error_type = f.error_type.clone();
                    r.message = message;
                    r.payload = f.payload.clone();
                    r.last_failed_at = at;
                }
                _ => {
                    rows.insert(
                        id,
                        FailedRecord {
                            key: f.key.clone(),
                            stage: f.stage.clone(),
                            error_type: f.error_type.clone(),
                            message,
                            payload: f.payload.clone(),
                            attempts: 0,
                            first_failed_at: at,
                            last_failed_at: at,
                            next_attempt_at: Some(at),
                            state: FailureState::Open,
                            resolved_at: None,
                            resolution: None,
                        },
                    );
                }
            }
        }
        Ok(failures.len() as u64)
    }

    async fn due(&self, pipeline: &str, query: &DueQuery) -> Result<Vec<FailedRecord>> {
        check_page(pipeline, query.limit)?;
        let rows = lock(&self.rows);
        Ok(failed_range(&rows, pipeline, query.after.as_ref())
            .filter(|r| r.state == FailureState::Open)
            .filter(|r| r.next_attempt_at.is_some_and(|t| t <= query.now))
            .take(query.limit)
            .cloned()
            .collect())
    }

    async fn apply(&self, pipeline: &str, outcomes: &[FailureOutcome]) -> Result<u64> {
        check_outcomes(pipeline, outcomes)?;
        let mut rows = lock(&self.rows);
        let mut n = 0;
        for o in outcomes {
            let id = (pipeline.to_owned(), o.id.key.clone(), o.id.stage.clone());
            let Some(r) = rows.get_mut(&id) else { continue };
            if r.state != FailureState::Open
                || r.attempts != o.expected_attempts
                || r.last_failed_at != store_time(o.expected_last_failed_at)
            {
                continue;
            }
            let at = store_time(o.at);
            r.attempts = o.attempts;
            match &o.kind {
                OutcomeKind::Resolved { method } => {
                    r.state = FailureState::Resolved;
                    r.resolved_at = Some(at);
                    r.resolution = Some(method.clone());
                    r.next_attempt_at = None;
                }
                OutcomeKind::Retry {
                    next_attempt_at,
                    error_type,
                    message,
                } => {
                    r.next_attempt_at = Some(store_time(*next_attempt_at));
                    r.error_type = error_type.clone();
                    r.message = limits::truncate_message(message);
                    r.last_failed_at = at;
                }
                OutcomeKind::ManualReview {
                    error_type,
                    message,
                } => {
                    r.state = FailureState::ManualReview;
                    r.next_attempt_at = None;
                    r.error_type = error_type.clone();
                    r.message = limits::truncate_message(message);
                    r.last_failed_at = at;
                }
            }
            n += 1;
        }
        Ok(n)
    }

    async fn counts_by_error_type(&self, pipeline: &str) -> Result<Vec<ErrorTypeCount>> {
        limits::check_name("pipeline", pipeline)?;
        let rows = lock(&self.rows);
        let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for r in failed_range(&rows, pipeline, None) {
            let e = by.entry(r.error_type.clone()).or_default();
            match r.state {
                FailureState::Open => e.0 += 1,
                FailureState::ManualReview => e.1 += 1,
                FailureState::Resolved => {}
            }
        }
        Ok(by
            .into_iter()
            .filter(|(_, (o, m))| o + m > 0)
            .map(|(error_type, (open, manual_review))| ErrorTypeCount {
                error_type,
                open,
                manual_review,
            })
            .collect())
    }

    async fn list(&self, pipeline: &str, query: &ListQuery) -> Result<Vec<FailedRecord>> {
        check_page(pipeline, query.limit)?;
        let rows = lock(&self.rows);
        Ok(failed_range(&rows, pipeline, query.after.as_ref())
            .filter(|r| query.state.is_none_or(|s| r.state == s))
            .take(query.limit)
            .cloned()
            .collect())
    }

    async fn prune(&self, pipeline: &str, query: &PruneQuery) -> Result<u64> {
        check_page(pipeline, query.limit)?;
        let mut rows = lock(&self.rows);
        let doomed: Vec<(String, String, String)> = failed_range(&rows, pipeline, None)
            .filter(|r| match r.state {
                FailureState::Resolved => r.resolved_at.is_some_and(|t| t < query.resolved_before),
                _ => query
                    .unresolved_before
                    .is_some_and(|t| r.last_failed_at < t),
            })
            .take(query.limit)
            .map(|r| (pipeline.to_owned(), r.key.clone(), r.stage.clone()))
            .collect();
        for id in &doomed {
            rows.remove(id);
        }
        Ok(doomed.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[tokio::test]
    async fn memory_fingerprint_store_conforms() {
        conformance::fingerprint_store(&MemoryFingerprintStore::new(), "mem").await;
    }

    #[tokio::test]
    async fn memory_lineage_store_conforms() {
        conformance::lineage_store(&MemoryLineageStore::new(), "mem").await;
    }

    #[tokio::test]
    async fn memory_failed_record_store_conforms() {
        conformance::failed_record_store(&MemoryFailedRecordStore::new(), "mem").await;
    }

    #[tokio::test]
    async fn one_store_holds_many_prefixes() {
        // The suite isolates itself by prefix, so backends can share a database.
        let s = MemoryFingerprintStore::new();
        conformance::fingerprint_store(&s, "a").await;
        conformance::fingerprint_store(&s, "b").await;
    }

    fn _object_safe(_: &dyn FingerprintStore, _: &dyn LineageStore, _: &dyn FailedRecordStore) {}
}
