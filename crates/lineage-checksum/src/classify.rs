//! Create / update / unchanged / delete classification against stored fingerprints.
//!
//! The decision is a pure function ([`classify`]) of the incoming batch and the fingerprints
//! stored for exactly those keys. [`Classifier`] asks the [`FingerprintStore`] **once** per
//! batch, for the batch's differences only ([`FingerprintStore::differences`]): SQL stores
//! compare in the database, so a batch with 1 % changes brings back 1 % of its rows.
//!
//! # Deletes without loading the table
//!
//! A key that the run did not see may have been deleted at the source. To find those keys
//! without holding the table in memory, every batch of the run is committed with
//! [`FingerprintStore::record`], which stamps the rows of the keys it saw with the run's id
//! (`seen_run`). Once the run has seen its whole scope, [`FingerprintStore::unseen`] walks the
//! rows whose `seen_run` is another run (or none) in keyset pages (`key > after ORDER BY key
//! LIMIT n`): memory stays bounded by the page size, whatever the table size. The scope decides
//! which rows are candidates ([`CleanupScope`]): none, the source groups the run fetched
//! completely, or the whole namespace.
//!
//! A failed apply must not record the new fingerprint (the next run would call the record
//! unchanged and never retry it), so [`RecordBatch`] separates `upserts` (applied: new
//! fingerprint) from `seen` (unchanged or failed: only the seen stamp).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Fingerprint, Result, limits};

/// One incoming record: its key and the fingerprint of its key fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// The record's key.
    pub key: String,
    /// Its fingerprint now.
    pub fingerprint: Fingerprint,
}

impl Incoming {
    /// An incoming record.
    pub fn new(key: impl Into<String>, fingerprint: Fingerprint) -> Self {
        Self {
            key: key.into(),
            fingerprint,
        }
    }
}

/// What to do with one incoming record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
#[must_use]
pub enum Action {
    /// The key is not stored: create it.
    Create,
    /// The key is stored with another fingerprint: update it.
    Update {
        /// The fingerprint stored so far.
        previous: Fingerprint,
    },
    /// The key is stored with this fingerprint: nothing to do.
    Unchanged,
    /// The same key appears again later in the batch; that later occurrence is classified
    /// and this one is skipped.
    Superseded,
}

/// The actions for one batch, aligned with the input, and their counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    /// `actions[i]` is the action for `batch[i]`.
    pub actions: Vec<Action>,
    /// How many are [`Action::Create`].
    pub created: u64,
    /// How many are [`Action::Update`].
    pub updated: u64,
    /// How many are [`Action::Unchanged`].
    pub unchanged: u64,
    /// How many are [`Action::Superseded`].
    pub superseded: u64,
}

/// Classify a batch against the fingerprints stored for its keys.
///
/// `stored` needs to hold only the batch's keys (what [`FingerprintStore::lookup`] returns).
/// If a key appears more than once in the batch, its **last** occurrence is classified and
/// the earlier ones are [`Action::Superseded`] (the later record is the newer one).
///
/// ```
/// use std::collections::HashMap;
/// use lineage_checksum::{classify, fingerprint, Action, Incoming};
/// let v1 = fingerprint("case", &[("status", "Open".into())]).unwrap();
/// let v2 = fingerprint("case", &[("status", "Closed".into())]).unwrap();
/// let stored = HashMap::from([("a".to_owned(), v1), ("b".to_owned(), v1)]);
/// let batch = [Incoming::new("a", v1), Incoming::new("b", v2), Incoming::new("c", v1)];
/// let c = classify(&batch, &stored);
/// assert_eq!(c.actions, [Action::Unchanged, Action::Update { previous: v1 }, Action::Create]);
/// assert_eq!((c.created, c.updated, c.unchanged), (1, 1, 1));
/// ```
pub fn classify(batch: &[Incoming], stored: &HashMap<String, Fingerprint>) -> Classification {
    classify_with(batch, &last_occurrences(batch), |r| {
        match stored.get(&r.key) {
            None => Stored::Missing,
            Some(p) if *p == r.fingerprint => Stored::Same,
            Some(p) => Stored::Other(*p),
        }
    })
}

/// What is stored for an incoming record.
enum Stored {
    Missing,
    Same,
    Other(Fingerprint),
}

/// The index of each key's last occurrence in `batch`.
fn last_occurrences(batch: &[Incoming]) -> HashMap<&str, usize> {
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    for (i, r) in batch.iter().enumerate() {
        last.insert(r.key.as_str(), i);
    }
    last
}

fn classify_with(
    batch: &[Incoming],
    last: &HashMap<&str, usize>,
    stored: impl Fn(&Incoming) -> Stored,
) -> Classification {
    let mut out = Classification {
        actions: Vec::with_capacity(batch.len()),
        ..Classification::default()
    };
    for (i, r) in batch.iter().enumerate() {
        let action = if last.get(r.key.as_str()) != Some(&i) {
            out.superseded += 1;
            Action::Superseded
        } else {
            match stored(r) {
                Stored::Missing => {
                    out.created += 1;
                    Action::Create
                }
                Stored::Same => {
                    out.unchanged += 1;
                    Action::Unchanged
                }
                Stored::Other(previous) => {
                    out.updated += 1;
                    Action::Update { previous }
                }
            }
        };
        out.actions.push(action);
    }
    out
}

/// Which stored keys a run may delete when it did not see them.
///
/// "Not seen" means "gone" only if the run saw a complete snapshot of the scope:
/// [`SyncReconciler`](crate::SyncReconciler) turns a scope other than `None` into snapshot runs
/// ([`UpstreamSource::fetch_snapshot`](crate::UpstreamSource::fetch_snapshot)) and deletes only
/// when every page arrived and no record failed. A host that calls
/// [`FingerprintStore::unseen`] itself must apply the same rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope", content = "groups")]
pub enum CleanupScope {
    /// Never delete (incremental runs: an unseen key was simply not changed).
    #[default]
    None,
    /// The run fetched these source groups completely: unseen keys of these groups go.
    Groups(Vec<String>),
    /// The run fetched the whole source: every unseen key of the namespace goes.
    Full,
}

/// Whether a cleanup may delete at all, given how many records the run saw in its scope.
///
/// An empty snapshot is far more often an upstream bug (an empty page, a wrong filter) than a
/// source that really lost every record, so it deletes nothing unless `allow_empty`.
#[must_use]
pub fn cleanup_allowed(seen_in_scope: u64, allow_empty: bool) -> bool {
    seen_in_scope > 0 || allow_empty
}

/// A fingerprint as stored, with its bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFingerprint {
    /// The record's key.
    pub key: String,
    /// The fingerprint of the last applied version.
    pub fingerprint: Fingerprint,
    /// The source group the record belongs to, if the host uses groups.
    pub group: Option<String>,
    /// The id of the last run that saw the key.
    pub seen_run: Option<String>,
    /// When that run saw it (the run's `now`, microsecond precision).
    pub seen_at: Option<DateTime<Utc>>,
}

/// A fingerprint to store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerprintEntry {
    /// The record's key.
    pub key: String,
    /// The fingerprint of the version just applied.
    pub fingerprint: Fingerprint,
    /// Its source group (replaces the stored one).
    pub group: Option<String>,
}

/// What one batch of a run writes, in one call and one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBatch {
    /// The run's id; every key below is stamped `seen_run = run`.
    pub run: String,
    /// The run's `now`; stamped as `seen_at`.
    pub at: DateTime<Utc>,
    /// Applied records: insert or replace fingerprint and group, and stamp them seen.
    pub upserts: Vec<FingerprintEntry>,
    /// Unchanged or failed records: stamp seen only; keys not stored are ignored.
    pub seen: Vec<String>,
}

/// A keyset page of keys the run did not see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnseenQuery {
    /// The current run's id.
    pub run: String,
    /// Only this source group (`None`: the whole namespace).
    pub group: Option<String>,
    /// Keys strictly after this one (`None`: from the start).
    pub after: Option<String>,
    /// At most this many rows (1..=[`limits::MAX_BATCH`]).
    pub limit: usize,
}

/// An incoming record whose fingerprint is not the stored one (see
/// [`FingerprintStore::differences`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// The record's key.
    pub key: String,
    /// The fingerprint stored for it; `None` when the key is not stored.
    pub stored: Option<Fingerprint>,
}

/// Where fingerprints of applied records live: one row per (namespace, key).
///
/// A namespace is the record type or sync name (`case`, `stays-reservations`). Keys order by
/// their UTF-8 bytes (SQL: binary collation). Timestamps are kept at microsecond precision
/// ([`limits::store_time`]). Every method is one round trip and, when it writes, one
/// transaction. Implementations validate input with [`limits`] before writing and reject a
/// bad batch whole.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait FingerprintStore: Send + Sync {
    /// The stored rows for those of `keys` that exist (any order; missing keys are absent).
    async fn lookup(&self, namespace: &str, keys: &[String]) -> Result<Vec<StoredFingerprint>>;

    /// The records of `batch` (unique keys) that are not stored, or stored with another
    /// fingerprint, with what is stored; records stored with the same fingerprint are left
    /// out, so a batch with 1 % changes returns 1 % of its rows. Any order. Check the input
    /// with [`check_incoming`].
    ///
    /// The default asks [`lookup`](Self::lookup) and compares; stores that can compare where
    /// the data is (SQL) override it. [`Classifier`] calls this, once per batch.
    async fn differences(&self, namespace: &str, batch: &[Incoming]) -> Result<Vec<Difference>> {
        check_incoming(namespace, batch)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = batch.iter().map(|r| r.key.clone()).collect();
        let stored: HashMap<String, Fingerprint> = self
            .lookup(namespace, &keys)
            .await?
            .into_iter()
            .map(|s| (s.key, s.fingerprint))
            .collect();
        Ok(batch
            .iter()
            .filter_map(|r| match stored.get(&r.key) {
                Some(f) if *f == r.fingerprint => None,
                other => Some(Difference {
                    key: r.key.clone(),
                    stored: other.copied(),
                }),
            })
            .collect())
    }

    /// Apply one batch: upsert `upserts` (fingerprint, group, `seen_run`, `seen_at`) and stamp
    /// the existing rows of `seen`. A key may appear once in the whole batch. Returns the number
    /// of rows inserted, updated or stamped.
    async fn record(&self, namespace: &str, batch: &RecordBatch) -> Result<u64>;

    /// Rows of the namespace (and group, if given) whose `seen_run` is not `query.run` (or is
    /// null), with key `> after`, in ascending key order, at most `limit`.
    async fn unseen(&self, namespace: &str, query: &UnseenQuery) -> Result<Vec<StoredFingerprint>>;

    /// Delete the rows of `keys` (after the host deleted the records). Returns how many existed.
    async fn remove(&self, namespace: &str, keys: &[String]) -> Result<u64>;
}

/// Check a [`RecordBatch`] the way every [`FingerprintStore`] must before writing.
pub fn check_record_batch(namespace: &str, batch: &RecordBatch) -> Result<()> {
    limits::check_name("namespace", namespace)?;
    limits::check_name("run id", &batch.run)?;
    limits::check_batch("record", batch.upserts.len() + batch.seen.len())?;
    for e in &batch.upserts {
        limits::check_key(&e.key)?;
        if let Some(g) = &e.group {
            limits::check_name("source group", g)?;
        }
    }
    for k in &batch.seen {
        limits::check_key(k)?;
    }
    limits::check_unique(
        "record",
        batch
            .upserts
            .iter()
            .map(|e| e.key.as_str())
            .chain(batch.seen.iter().map(String::as_str)),
    )
}

/// Check the arguments of [`FingerprintStore::lookup`] / [`FingerprintStore::remove`].
pub fn check_keys(namespace: &str, what: &str, keys: &[String]) -> Result<()> {
    limits::check_name("namespace", namespace)?;
    limits::check_batch(what, keys.len())?;
    keys.iter().try_for_each(|k| limits::check_key(k))
}

/// Check the arguments of [`FingerprintStore::differences`]: a valid namespace, at most
/// [`limits::MAX_BATCH`] records, valid and unique keys.
pub fn check_incoming(namespace: &str, batch: &[Incoming]) -> Result<()> {
    limits::check_name("namespace", namespace)?;
    limits::check_batch("differences", batch.len())?;
    batch.iter().try_for_each(|r| limits::check_key(&r.key))?;
    limits::check_unique("differences", batch.iter().map(|r| r.key.as_str()))
}

/// Check an [`UnseenQuery`].
pub fn check_unseen_query(namespace: &str, q: &UnseenQuery) -> Result<()> {
    limits::check_name("namespace", namespace)?;
    limits::check_name("run id", &q.run)?;
    limits::check_limit(q.limit)?;
    if let Some(g) = &q.group {
        limits::check_name("source group", g)?;
    }
    Ok(())
}

/// A batch classifier bound to one store and namespace: one store call per batch
/// ([`FingerprintStore::differences`]).
///
/// ```no_run
/// # use std::sync::Arc;
/// # use lineage_checksum::{Classifier, Incoming, memory::MemoryFingerprintStore};
/// # async fn f(batch: Vec<Incoming>) -> lineage_checksum::Result<()> {
/// let classifier = Classifier::new(Arc::new(MemoryFingerprintStore::new()), "case")?;
/// let c = classifier.classify(&batch).await?; // one store round trip
/// println!("{} new, {} changed, {} unchanged", c.created, c.updated, c.unchanged);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Classifier {
    store: std::sync::Arc<dyn FingerprintStore>,
    namespace: String,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// A classifier for `namespace` in `store`.
    pub fn new(
        store: std::sync::Arc<dyn FingerprintStore>,
        namespace: impl Into<String>,
    ) -> Result<Self> {
        let namespace = namespace.into();
        limits::check_name("namespace", &namespace)?;
        Ok(Self { store, namespace })
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The store.
    pub fn store(&self) -> &std::sync::Arc<dyn FingerprintStore> {
        &self.store
    }

    /// Classify `batch` with one [`FingerprintStore::differences`] call for the last
    /// occurrence of each key (the one that is classified; earlier ones are superseded).
    pub async fn classify(&self, batch: &[Incoming]) -> Result<Classification> {
        for r in batch {
            limits::check_key(&r.key)?;
        }
        let last = last_occurrences(batch);
        if batch.is_empty() {
            return Ok(Classification::default());
        }
        let diffs = if last.len() == batch.len() {
            self.store.differences(&self.namespace, batch).await?
        } else {
            let unique: Vec<Incoming> = batch
                .iter()
                .enumerate()
                .filter(|(i, r)| last.get(r.key.as_str()) == Some(i))
                .map(|(_, r)| r.clone())
                .collect();
            self.store.differences(&self.namespace, &unique).await?
        };
        let diffs: HashMap<String, Option<Fingerprint>> =
            diffs.into_iter().map(|d| (d.key, d.stored)).collect();
        Ok(classify_with(batch, &last, |r| match diffs.get(&r.key) {
            None => Stored::Same,
            Some(None) => Stored::Missing,
            // A store that reports an equal fingerprint as a difference: still unchanged.
            Some(Some(p)) if *p == r.fingerprint => Stored::Same,
            Some(Some(p)) => Stored::Other(*p),
        }))
    }

    /// Classify `records` in chunks of `chunk` records, keeping **two chunks' lookups in
    /// flight** at once, and hand each chunk's [`Classification`] to `each` in input order.
    ///
    /// Each chunk is classified exactly as [`classify`](Self::classify) would classify it on
    /// its own (one [`FingerprintStore::differences`] call; duplicates resolved within the
    /// chunk), so the result is the same as calling `classify` chunk after chunk; only the
    /// store's round trips overlap. A SQL store then works on two connections: 1,000,000
    /// records in chunks of 10,000 take about 2 s instead of about 3 s on SQLite and
    /// PostgreSQL (`docs/benchmarks.md`, classify). The first error stops the work and is
    /// returned; chunks already handed to `each` stay handed.
    ///
    /// ```
    /// # async fn demo() -> lineage_checksum::Result<()> {
    /// use std::sync::Arc;
    /// use lineage_checksum::{Classifier, Fingerprint, Incoming, memory::MemoryFingerprintStore};
    /// let classifier = Classifier::new(Arc::new(MemoryFingerprintStore::new()), "cases")?;
    /// let records: Vec<Incoming> = (0..25)
    ///     .map(|i| Incoming::new(format!("case-{i}"), Fingerprint::from_bytes([i as u8; 32])))
    ///     .collect();
    /// let mut created = 0;
    /// classifier
    ///     .classify_in_chunks(&records, 10, |chunk, c| {
    ///         assert!(chunk.len() <= 10);
    ///         created += c.created;
    ///         Ok(())
    ///     })
    ///     .await?;
    /// assert_eq!(created, 25);
    /// # Ok(()) }
    /// ```
    pub async fn classify_in_chunks<F>(
        &self,
        records: &[Incoming],
        chunk: usize,
        mut each: F,
    ) -> Result<()>
    where
        F: FnMut(&[Incoming], Classification) -> Result<()>,
    {
        if chunk == 0 {
            return Err(Error::config(
                "classify_in_chunks: the chunk size must be at least 1",
            ));
        }
        let mut chunks = records.chunks(chunk);
        while let Some(a) = chunks.next() {
            match chunks.next() {
                Some(b) => {
                    let (ca, cb) = tokio::try_join!(self.classify(a), self.classify(b))?;
                    each(a, ca)?;
                    each(b, cb)?;
                }
                None => {
                    let ca = self.classify(a).await?;
                    each(a, ca)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(n: u8) -> Fingerprint {
        Fingerprint::from_bytes([n; 32])
    }

    #[test]
    fn duplicates_in_a_batch_keep_the_last_occurrence() {
        let stored = HashMap::from([("a".to_owned(), f(1))]);
        let batch = [
            Incoming::new("a", f(2)),
            Incoming::new("b", f(1)),
            Incoming::new("a", f(1)),
            Incoming::new("b", f(3)),
        ];
        let c = classify(&batch, &stored);
        assert_eq!(
            c.actions,
            [
                Action::Superseded,
                Action::Superseded,
                Action::Unchanged,
                Action::Create
            ]
        );
        assert_eq!(
            (c.created, c.updated, c.unchanged, c.superseded),
            (1, 0, 1, 2)
        );
    }

    #[test]
    fn scenario_c_day_two_fifty_changed() {
        let schema = crate::Schema::new("case", ["id", "status"]).unwrap();
        let day1: Vec<Incoming> = (0..10_000)
            .map(|i| {
                let id = format!("case-{i:05}");
                let fp = schema.fingerprint(&[id.as_str().into(), "Open".into()]);
                Incoming::new(id, fp.unwrap())
            })
            .collect();
        let first = classify(&day1, &HashMap::new());
        assert_eq!(first.created, 10_000);
        let stored: HashMap<String, Fingerprint> = day1
            .iter()
            .map(|r| (r.key.clone(), r.fingerprint))
            .collect();
        let day2: Vec<Incoming> = day1
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if i % 200 == 7 {
                    let fp = schema.fingerprint(&[r.key.as_str().into(), "Closed".into()]);
                    Incoming::new(r.key.clone(), fp.unwrap())
                } else {
                    r.clone()
                }
            })
            .collect();
        let second = classify(&day2, &stored);
        assert_eq!(
            (second.created, second.updated, second.unchanged),
            (0, 50, 9_950)
        );
    }

    #[test]
    fn cleanup_refuses_an_empty_snapshot_unless_allowed() {
        assert!(!cleanup_allowed(0, false));
        assert!(cleanup_allowed(0, true));
        assert!(cleanup_allowed(1, false));
    }

    #[test]
    fn batch_checks() {
        let ok = RecordBatch {
            run: "r1".into(),
            at: Utc::now(),
            upserts: vec![FingerprintEntry {
                key: "a".into(),
                fingerprint: f(1),
                group: Some("g".into()),
            }],
            seen: vec!["b".into()],
        };
        assert!(check_record_batch("ns", &ok).is_ok());
        let mut dup = ok.clone();
        dup.seen.push("a".into());
        assert!(check_record_batch("ns", &dup).is_err());
        let mut empty_key = ok.clone();
        empty_key.seen = vec![String::new()];
        assert!(check_record_batch("ns", &empty_key).is_err());
        assert!(check_record_batch("", &ok).is_err());
    }

    #[tokio::test]
    async fn classifier_makes_one_store_call_per_batch_with_distinct_keys() {
        let mut store = MockFingerprintStore::new();
        store.expect_lookup().never();
        store
            .expect_differences()
            .times(1)
            .withf(|ns, batch| {
                let keys: Vec<&str> = batch.iter().map(|r| r.key.as_str()).collect();
                ns == "case" && keys == ["b", "a"]
            })
            .returning(|_, _| {
                Ok(vec![Difference {
                    key: "b".into(),
                    stored: None,
                }])
            });
        let c = Classifier::new(std::sync::Arc::new(store), "case").unwrap();
        let batch = [
            Incoming::new("a", f(1)),
            Incoming::new("b", f(1)),
            Incoming::new("a", f(1)),
        ];
        let out = c.classify(&batch).await.unwrap();
        assert_eq!(
            out.actions,
            [Action::Superseded, Action::Create, Action::Unchanged]
        );
        // Bad keys are refused before the store is asked.
        let bad = [Incoming::new("", f(1))];
        assert!(c.classify(&bad).await.is_err());
        // An empty batch does not touch the store (times(1) above would fail otherwise).
        assert_eq!(c.classify(&[]).await.unwrap(), Classification::default());
    }

    #[tokio::test]
    async fn classify_in_chunks_matches_classify_chunk_by_chunk() {
        let store = std::sync::Arc::new(crate::memory::MemoryFingerprintStore::new());
        let at: DateTime<Utc> = "2024-01-24T12:00:00Z".parse().unwrap();
        // stored: keys 0..30, fingerprint f(1)
        let upserts = (0..30)
            .map(|i| FingerprintEntry {
                key: format!("k{i}"),
                fingerprint: f(1),
                group: None,
            })
            .collect();
        let batch = RecordBatch {
            run: "r1".into(),
            at,
            upserts,
            seen: vec![],
        };
        store.record("ns", &batch).await.unwrap();
        let c = Classifier::new(store, "ns").unwrap();
        // incoming: keys 0..45 (15 new), every 3rd changed, and duplicates inside chunks
        let mut records: Vec<Incoming> = (0..45)
            .map(|i| Incoming::new(format!("k{i}"), f(if i % 3 == 0 { 2 } else { 1 })))
            .collect();
        records.insert(5, Incoming::new("k7", f(9)));
        records.insert(21, Incoming::new("k20", f(9)));
        for chunk in [1, 4, 7, 10, 46, 100] {
            let mut expected = Vec::new();
            for part in records.chunks(chunk) {
                expected.push((part.to_vec(), c.classify(part).await.unwrap()));
            }
            let mut got = Vec::new();
            c.classify_in_chunks(&records, chunk, |part, out| {
                got.push((part.to_vec(), out));
                Ok(())
            })
            .await
            .unwrap();
            assert_eq!(got, expected, "chunk size {chunk}");
        }
        // a chunk size of 0 is a clear error; an error from `each` stops the work
        assert!(
            c.classify_in_chunks(&records, 0, |_, _| Ok(()))
                .await
                .is_err()
        );
        let mut calls = 0;
        let err = c
            .classify_in_chunks(&records, 10, |_, _| {
                calls += 1;
                Err(Error::config("host refused"))
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("host refused"), "{err}");
        assert_eq!(calls, 1);
        // a bad key anywhere fails its pair before `each` sees it
        let mut bad = records.clone();
        bad.push(Incoming::new("", f(1)));
        let mut seen = 0;
        assert!(
            c.classify_in_chunks(&bad, 10, |part, _| {
                seen += part.len();
                Ok(())
            })
            .await
            .is_err()
        );
        assert_eq!(seen, 40, "the first two pairs of chunks were handed over");
    }

    type Pairs = Vec<(u8, u8)>;

    fn batch_strategy() -> impl Strategy<Value = (Pairs, Pairs)> {
        (
            proptest::collection::vec((0u8..20, 0u8..3), 0..40),
            proptest::collection::vec((0u8..20, 0u8..3), 0..20),
        )
    }

    proptest! {
        #[test]
        fn classification_matches_its_definition((incoming, stored) in batch_strategy()) {
            let batch: Vec<Incoming> =
                incoming.iter().map(|(k, v)| Incoming::new(k.to_string(), f(*v))).collect();
            let stored: HashMap<String, Fingerprint> =
                stored.iter().map(|(k, v)| (k.to_string(), f(*v))).collect();
            let c = classify(&batch, &stored);
            prop_assert_eq!(c.actions.len(), batch.len());
            let distinct: std::collections::HashSet<&str> =
                batch.iter().map(|r| r.key.as_str()).collect();
            // Exactly one non-superseded action per distinct key; the counts add up.
            prop_assert_eq!(c.created + c.updated + c.unchanged, distinct.len() as u64);
            prop_assert_eq!(c.superseded, (batch.len() - distinct.len()) as u64);
            for (i, (r, a)) in batch.iter().zip(&c.actions).enumerate() {
                let later = batch[i + 1..].iter().any(|o| o.key == r.key);
                let expected = if later {
                    Action::Superseded
                } else {
                    match stored.get(&r.key) {
                        None => Action::Create,
                        Some(p) if *p == r.fingerprint => Action::Unchanged,
                        Some(p) => Action::Update { previous: *p },
                    }
                };
                prop_assert_eq!(*a, expected);
            }
            // Idempotent: after applying the batch, the same batch is all unchanged.
            let mut after = stored.clone();
            for r in &batch {
                after.insert(r.key.clone(), r.fingerprint);
            }
            let again = classify(&batch, &after);
            prop_assert_eq!(again.created + again.updated, 0);
        }
    }
}
