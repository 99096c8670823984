//! In-memory implementations of every store trait of this crate, for tests, examples and
//! single-process hosts. They behave like the SQL stores (the [`conformance`](crate::conformance)
//! suite checks both) but keep nothing across restarts.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    DerivedQueue, DesiredJob, EntitySource, Error, FailedMessageStore, JobQueue, Key, KeyType,
    Maintenance, Message, MessageStatus, MessageStore, OrphanSweeper, Predicate, QueuedJob,
    Reschedule, Result, Row, SourceStore, StatusCounts, SweepCounts, TableMapping, Value,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Check that `row` fits `table`: every column mapped, every value of its column's type, the
/// key equal to the key column's value.
pub fn check_row(table: &TableMapping, row: &Row) -> Result<()> {
    for (column, value) in row.values() {
        let ty = table.require_column(column)?;
        value.check_type(column, ty)?;
    }
    let key_value = row.get(table.key_column());
    if Key::from_value(key_value, table.key_type()).as_ref() != Ok(row.key()) {
        return Err(Error::config(format!(
            "row {} of `{}`: its key column `{}` holds {key_value}",
            row.key(),
            table.qualified_name(),
            table.key_column()
        )));
    }
    Ok(())
}

/// `key` as a key of a column of type `expected`, or [`Error::TypeMismatch`] naming the
/// column — what the SQL stores answer when a key of the other type would be bound.
fn check_key(column: &str, expected: KeyType, key: &Key) -> Result<()> {
    if key.key_type() == expected {
        return Ok(());
    }
    Err(Error::TypeMismatch {
        column: column.to_owned(),
        expected: expected.column_type(),
        found: format!("the {} key {key}", key.key_type()),
    })
}

type Tables = HashMap<String, BTreeMap<Key, Row>>;

/// Host tables in memory: a [`SourceStore`] over any number of mapped tables.
///
/// Clones share the same tables (so a [`MemoryEntitySource`] can read what a test seeded).
#[derive(Clone, Debug, Default)]
pub struct MemorySourceStore {
    tables: Arc<Mutex<Tables>>,
}

impl MemorySourceStore {
    /// No tables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Insert or replace `rows` in `table` (each checked with [`check_row`]; on an error
    /// nothing is inserted).
    pub fn insert(&self, table: &TableMapping, rows: impl IntoIterator<Item = Row>) -> Result<()> {
        let rows: Vec<Row> = rows.into_iter().collect();
        rows.iter().try_for_each(|r| check_row(table, r))?;
        let mut tables = lock(&self.tables);
        let t = tables.entry(table.qualified_name()).or_default();
        for row in rows {
            t.insert(row.key().clone(), row);
        }
        Ok(())
    }

    /// Replace every row of `table` with `rows`.
    pub fn replace(&self, table: &TableMapping, rows: impl IntoIterator<Item = Row>) -> Result<()> {
        let rows: Vec<Row> = rows.into_iter().collect();
        rows.iter().try_for_each(|r| check_row(table, r))?;
        let map = rows.into_iter().map(|r| (r.key().clone(), r)).collect();
        lock(&self.tables).insert(table.qualified_name(), map);
        Ok(())
    }

    /// Delete the rows with `keys`; returns how many existed.
    pub fn delete(&self, table: &TableMapping, keys: &[Key]) -> u64 {
        let mut tables = lock(&self.tables);
        let Some(t) = tables.get_mut(&table.qualified_name()) else {
            return 0;
        };
        keys.iter().filter(|k| t.remove(k).is_some()).count() as u64
    }

    /// Every row of `table`, ascending key.
    pub fn rows(&self, table: &TableMapping) -> Vec<Row> {
        lock(&self.tables)
            .get(&table.qualified_name())
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    fn with_table<T>(
        &self,
        table: &TableMapping,
        f: impl FnOnce(&mut BTreeMap<Key, Row>) -> T,
    ) -> T {
        let mut tables = lock(&self.tables);
        f(tables.entry(table.qualified_name()).or_default())
    }
}

#[async_trait]
impl SourceStore for MemorySourceStore {
    async fn apply_maintenance(
        &self,
        table: &TableMapping,
        rule: &Maintenance,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        rule.validate(table)?;
        Ok(self.with_table(table, |rows| {
            rows.values_mut()
                .filter_map(|r| rule.apply(r, now).then_some(()))
                .count() as u64
        }))
    }

    async fn count(
        &self,
        table: &TableMapping,
        predicate: &Predicate,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        predicate.validate(table)?;
        Ok(self.with_table(table, |rows| {
            rows.values().filter(|r| predicate.matches(r, now)).count() as u64
        }))
    }

    async fn read_matching(
        &self,
        table: &TableMapping,
        predicate: &Predicate,
        now: DateTime<Utc>,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<Row>> {
        predicate.validate(table)?;
        if let Some(k) = &after {
            check_key(table.key_column(), table.key_type(), k)?;
        }
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(self.with_table(table, |rows| {
            rows.range((lower, Bound::Unbounded))
                .map(|(_, r)| r)
                .filter(|r| predicate.matches(r, now))
                .take(limit)
                .cloned()
                .collect()
        }))
    }
}

/// A de-duplicating in-memory [`DerivedQueue`] (the follow-up queue of seed 001).
///
/// Entries are keyed by [`Row::key`]: a row pushed twice is queued once. A complete rebuild
/// drops the entries it did not push (no longer eligible); an incomplete one drops nothing.
/// Consumers take entries in key order with [`pop`](Self::pop).
#[derive(Debug, Default)]
pub struct MemoryDerivedQueue {
    inner: Mutex<QueueInner>,
}

#[derive(Debug, Default)]
struct QueueInner {
    entries: BTreeMap<Key, (Row, u64)>,
    generation: u64,
}

impl MemoryDerivedQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries are queued.
    pub fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` is queued.
    pub fn contains(&self, key: &Key) -> bool {
        lock(&self.inner).entries.contains_key(key)
    }

    /// The queued keys, ascending.
    pub fn keys(&self) -> Vec<Key> {
        lock(&self.inner).entries.keys().cloned().collect()
    }

    /// Take the first entry.
    pub fn pop(&self) -> Option<Row> {
        lock(&self.inner).entries.pop_first().map(|(_, (r, _))| r)
    }
}

#[async_trait]
impl DerivedQueue for MemoryDerivedQueue {
    async fn begin_rebuild(&self) -> Result<()> {
        lock(&self.inner).generation += 1;
        Ok(())
    }

    async fn push_batch(&self, rows: &[Row]) -> Result<u64> {
        let mut inner = lock(&self.inner);
        let generation = inner.generation;
        let mut added = 0;
        for row in rows {
            if inner
                .entries
                .insert(row.key().clone(), (row.clone(), generation))
                .is_none()
            {
                added += 1;
            }
        }
        Ok(added)
    }

    async fn finish_rebuild(&self, complete: bool) -> Result<u64> {
        if !complete {
            return Ok(0);
        }
        let mut inner = lock(&self.inner);
        let generation = inner.generation;
        let before = inner.entries.len();
        inner.entries.retain(|_, (_, g)| *g == generation);
        Ok((before - inner.entries.len()) as u64)
    }
}

/// An [`EntitySource`] over one table of a [`MemorySourceStore`]. Counts its calls.
#[derive(Debug)]
pub struct MemoryEntitySource {
    store: MemorySourceStore,
    table: TableMapping,
    pages: AtomicU64,
    lookups: AtomicU64,
}

impl MemoryEntitySource {
    /// Entities are the rows of `table` in `store`.
    pub fn new(store: MemorySourceStore, table: TableMapping) -> Self {
        Self {
            store,
            table,
            pages: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
        }
    }

    /// The store (to seed or delete entities).
    pub fn store(&self) -> &MemorySourceStore {
        &self.store
    }

    /// The mapped table.
    pub fn table(&self) -> &TableMapping {
        &self.table
    }

    /// How many `page` and `get_many` calls were made.
    pub fn calls(&self) -> (u64, u64) {
        (
            self.pages.load(Ordering::Relaxed),
            self.lookups.load(Ordering::Relaxed),
        )
    }
}

#[async_trait]
impl EntitySource for MemoryEntitySource {
    fn key_type(&self) -> KeyType {
        self.table.key_type()
    }

    async fn page(&self, after: Option<Key>, limit: usize) -> Result<Vec<Row>> {
        self.pages.fetch_add(1, Ordering::Relaxed);
        if let Some(k) = &after {
            check_key(self.table.key_column(), self.table.key_type(), k)?;
        }
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(self.store.with_table(&self.table, |rows| {
            rows.range((lower, Bound::Unbounded))
                .take(limit)
                .map(|(_, r)| r.clone())
                .collect()
        }))
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Row>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        for k in keys {
            check_key(self.table.key_column(), self.table.key_type(), k)?;
        }
        Ok(self.store.with_table(&self.table, |rows| {
            keys.iter().filter_map(|k| rows.get(k).cloned()).collect()
        }))
    }
}

/// The state of a job in a [`MemoryJobQueue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting to run: listed, removable, reschedulable.
    Waiting,
    /// Running: not listed, not removed, but its id exists.
    Running,
    /// Finished and kept: its id exists.
    Finished,
}

#[derive(Clone, Debug)]
struct StoredJob {
    job: QueuedJob,
    state: JobState,
    payload: serde_json::Value,
}

/// A [`JobQueue`] in memory (what BullMQ or a jobs table does). Counts its calls.
#[derive(Debug, Default)]
pub struct MemoryJobQueue {
    jobs: Mutex<BTreeMap<String, StoredJob>>,
    calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl MemoryJobQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn called(&self, method: &'static str) {
        *lock(&self.calls).entry(method).or_default() += 1;
    }

    /// Add or replace waiting jobs (as a host would have enqueued them).
    pub fn insert(&self, jobs: impl IntoIterator<Item = QueuedJob>) {
        let mut map = lock(&self.jobs);
        for job in jobs {
            map.insert(
                job.id.clone(),
                StoredJob {
                    job,
                    state: JobState::Waiting,
                    payload: serde_json::Value::Null,
                },
            );
        }
    }

    /// Replace every job with `jobs` (all waiting).
    pub fn replace(&self, jobs: impl IntoIterator<Item = QueuedJob>) {
        lock(&self.jobs).clear();
        self.insert(jobs);
    }

    /// Put job `id` in `state`; `false` if there is no such job.
    pub fn set_state(&self, id: &str, state: JobState) -> bool {
        match lock(&self.jobs).get_mut(id) {
            Some(j) => {
                j.state = state;
                true
            }
            None => false,
        }
    }

    /// The waiting jobs, ascending id.
    pub fn waiting(&self) -> Vec<QueuedJob> {
        lock(&self.jobs)
            .values()
            .filter(|j| j.state == JobState::Waiting)
            .map(|j| j.job.clone())
            .collect()
    }

    /// Every job with its state, ascending id.
    pub fn all(&self) -> Vec<(QueuedJob, JobState)> {
        lock(&self.jobs)
            .values()
            .map(|j| (j.job.clone(), j.state))
            .collect()
    }

    /// The payload job `id` was enqueued with.
    pub fn payload(&self, id: &str) -> Option<serde_json::Value> {
        lock(&self.jobs).get(id).map(|j| j.payload.clone())
    }

    /// How many calls of each method were made.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.calls).clone()
    }
}

#[async_trait]
impl JobQueue for MemoryJobQueue {
    async fn page(&self, after: Option<String>, limit: usize) -> Result<Vec<QueuedJob>> {
        self.called("page");
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(lock(&self.jobs)
            .range::<String, _>((lower, Bound::Unbounded))
            .map(|(_, j)| j)
            .filter(|j| j.state == JobState::Waiting)
            .take(limit)
            .map(|j| j.job.clone())
            .collect())
    }

    async fn existing(&self, ids: &[String]) -> Result<Vec<String>> {
        self.called("existing");
        let jobs = lock(&self.jobs);
        Ok(ids
            .iter()
            .filter(|id| jobs.contains_key(*id))
            .cloned()
            .collect())
    }

    async fn remove(&self, ids: &[String]) -> Result<u64> {
        self.called("remove");
        let mut jobs = lock(&self.jobs);
        let mut n = 0;
        for id in ids {
            if jobs.get(id).is_some_and(|j| j.state == JobState::Waiting) {
                jobs.remove(id);
                n += 1;
            }
        }
        Ok(n)
    }

    async fn enqueue(&self, new: &[DesiredJob]) -> Result<u64> {
        self.called("enqueue");
        // the whole batch is refused, as the SQL queue refuses it before its first statement
        if new.iter().any(|d| d.id.is_empty() || d.kind.is_empty()) {
            return Err(Error::config("a job needs a non-empty id and kind"));
        }
        let mut jobs = lock(&self.jobs);
        let mut n = 0;
        for d in new {
            if !jobs.contains_key(&d.id) {
                jobs.insert(
                    d.id.clone(),
                    StoredJob {
                        job: QueuedJob {
                            id: d.id.clone(),
                            kind: d.kind.clone(),
                            entity_key: Value::from(d.entity_key.clone()),
                            run_at: d.run_at,
                        },
                        state: JobState::Waiting,
                        payload: d.payload.clone(),
                    },
                );
                n += 1;
            }
        }
        Ok(n)
    }

    async fn reschedule(&self, changes: &[Reschedule]) -> Result<u64> {
        self.called("reschedule");
        let mut jobs = lock(&self.jobs);
        let mut n = 0;
        for c in changes {
            if let Some(j) = jobs.get_mut(&c.id)
                && j.state == JobState::Waiting
                && j.job.run_at == c.from
            {
                j.job.run_at = c.to;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The [`OrphanSweeper`] of a [`MemoryJobQueue`] over a [`MemoryEntitySource`]: removes, under
/// the queue's lock, the waiting jobs with a key of the entity type whose entity is absent.
#[derive(Debug)]
pub struct MemoryOrphanSweeper {
    queue: Arc<MemoryJobQueue>,
    entities: Arc<MemoryEntitySource>,
}

impl MemoryOrphanSweeper {
    /// Sweep `queue` against `entities`.
    pub fn new(queue: Arc<MemoryJobQueue>, entities: Arc<MemoryEntitySource>) -> Self {
        Self { queue, entities }
    }
}

#[async_trait]
impl OrphanSweeper for MemoryOrphanSweeper {
    async fn sweep_orphans(&self, batch_size: usize, dry_run: bool) -> Result<SweepCounts> {
        self.queue.called("sweep_orphans");
        let table = self.entities.table();
        let existing: std::collections::BTreeSet<Key> = self
            .entities
            .store()
            .rows(table)
            .into_iter()
            .map(|r| r.key().clone())
            .collect();
        let mut jobs = lock(&self.queue.jobs);
        let mut out = SweepCounts::default();
        let mut orphans = Vec::new();
        for (id, j) in jobs.iter() {
            if j.state != JobState::Waiting || j.job.entity_key.is_null() {
                continue;
            }
            out.checked += 1;
            if let Ok(k) = Key::from_value(&j.job.entity_key, table.key_type())
                && !existing.contains(&k)
            {
                orphans.push(id.clone());
            }
        }
        out.batches = out.checked.div_ceil(batch_size.max(1) as u64);
        out.orphaned = orphans.len() as u64;
        if !dry_run {
            for id in orphans {
                jobs.remove(&id);
            }
        }
        Ok(out)
    }

    async fn unjudged(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Option<Vec<QueuedJob>>> {
        self.queue.called("unjudged");
        let key_type = self.entities.table().key_type();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(Some(
            lock(&self.queue.jobs)
                .range::<String, _>((lower, Bound::Unbounded))
                .map(|(_, j)| j)
                .filter(|j| j.state == JobState::Waiting)
                .filter(|j| Key::from_value(&j.job.entity_key, key_type).is_err())
                .take(limit)
                .map(|j| j.job.clone())
                .collect(),
        ))
    }
}

/// A message queue in memory: [`MessageStore`] and [`FailedMessageStore`].
///
/// Message ids are integers unless [`with_key_type`](Self::with_key_type) says otherwise (as
/// `store_sqlx::MessageTable`'s default `id` column); an operator operation given an id of
/// the other type is [`Error::TypeMismatch`] and changes nothing.
#[derive(Debug)]
pub struct MemoryMessageStore {
    messages: Mutex<BTreeMap<Key, Message>>,
    key_type: KeyType,
}

impl Default for MemoryMessageStore {
    fn default() -> Self {
        Self {
            messages: Mutex::default(),
            key_type: KeyType::Integer,
        }
    }
}

impl MemoryMessageStore {
    /// No messages; integer ids.
    pub fn new() -> Self {
        Self::default()
    }

    /// No messages; ids of type `key_type`.
    pub fn with_key_type(key_type: KeyType) -> Self {
        Self {
            key_type,
            ..Self::default()
        }
    }

    /// The type of message ids.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    fn check_ids<'a>(&self, ids: impl IntoIterator<Item = &'a Key>) -> Result<()> {
        ids.into_iter()
            .try_for_each(|k| check_key("id", self.key_type, k))
    }

    /// Add or replace messages.
    pub fn insert(&self, messages: impl IntoIterator<Item = Message>) {
        let mut map = lock(&self.messages);
        for m in messages {
            map.insert(m.id.clone(), m);
        }
    }

    /// Replace every message with `messages`.
    pub fn replace(&self, messages: impl IntoIterator<Item = Message>) {
        lock(&self.messages).clear();
        self.insert(messages);
    }

    /// Every message, ascending id.
    pub fn all(&self) -> Vec<Message> {
        lock(&self.messages).values().cloned().collect()
    }

    /// Message `id`.
    pub fn get(&self, id: &Key) -> Option<Message> {
        lock(&self.messages).get(id).cloned()
    }

    fn update_failed(&self, ids: &[Key], f: impl Fn(&mut Message)) -> u64 {
        let mut map = lock(&self.messages);
        let mut n = 0;
        for id in ids {
            if let Some(m) = map.get_mut(id)
                && m.status == MessageStatus::Failed
            {
                f(m);
                n += 1;
            }
        }
        n
    }
}

fn is_stuck(m: &Message, claimed_before: Option<DateTime<Utc>>) -> bool {
    m.status == MessageStatus::Processing
        && match (claimed_before, m.last_attempt_at) {
            (None, _) | (Some(_), None) => true,
            (Some(cutoff), Some(at)) => at < cutoff,
        }
}

fn is_old_failure(m: &Message, cutoff: DateTime<Utc>) -> bool {
    m.status == MessageStatus::Failed && m.failed_at.is_some_and(|t| t < cutoff)
}

#[async_trait]
impl MessageStore for MemoryMessageStore {
    async fn status_counts(&self) -> Result<StatusCounts> {
        let mut c = StatusCounts::default();
        for m in lock(&self.messages).values() {
            let slot = match m.status {
                MessageStatus::Pending => &mut c.pending,
                MessageStatus::Processing => &mut c.processing,
                MessageStatus::Sent => &mut c.sent,
                MessageStatus::Failed => &mut c.failed,
                MessageStatus::Archived => &mut c.archived,
            };
            *slot += 1;
        }
        Ok(c)
    }

    async fn count_stuck(&self, claimed_before: Option<DateTime<Utc>>) -> Result<u64> {
        Ok(lock(&self.messages)
            .values()
            .filter(|m| is_stuck(m, claimed_before))
            .count() as u64)
    }

    async fn release_stuck(
        &self,
        claimed_before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<u64> {
        let mut map = lock(&self.messages);
        let mut n = 0;
        for m in map
            .values_mut()
            .filter(|m| is_stuck(m, claimed_before))
            .take(limit)
        {
            m.status = MessageStatus::Pending;
            m.session = None;
            n += 1;
        }
        Ok(n)
    }

    async fn count_failed_before(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        Ok(lock(&self.messages)
            .values()
            .filter(|m| is_old_failure(m, cutoff))
            .count() as u64)
    }

    async fn archive_failed_before(
        &self,
        cutoff: DateTime<Utc>,
        _now: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64> {
        let mut map = lock(&self.messages);
        let mut n = 0;
        for m in map
            .values_mut()
            .filter(|m| is_old_failure(m, cutoff))
            .take(limit)
        {
            m.status = MessageStatus::Archived;
            n += 1;
        }
        Ok(n)
    }
}

#[async_trait]
impl FailedMessageStore for MemoryMessageStore {
    async fn list_failed(&self, after: Option<Key>, limit: usize) -> Result<Vec<Message>> {
        self.check_ids(&after)?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(lock(&self.messages)
            .range((lower, Bound::Unbounded))
            .map(|(_, m)| m)
            .filter(|m| m.status == MessageStatus::Failed)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn retry_failed(&self, ids: &[Key], _now: DateTime<Utc>) -> Result<u64> {
        self.check_ids(ids)?;
        Ok(self.update_failed(ids, |m| {
            m.status = MessageStatus::Pending;
            m.attempts = 0;
            m.failed_at = None;
            m.next_attempt_at = None;
            m.session = None;
        }))
    }

    async fn delete_failed(&self, ids: &[Key]) -> Result<u64> {
        self.check_ids(ids)?;
        let mut map = lock(&self.messages);
        let mut n = 0;
        for id in ids {
            if map
                .get(id)
                .is_some_and(|m| m.status == MessageStatus::Failed)
            {
                map.remove(id);
                n += 1;
            }
        }
        Ok(n)
    }

    async fn archive_failed(&self, ids: &[Key], _now: DateTime<Utc>) -> Result<u64> {
        self.check_ids(ids)?;
        Ok(self.update_failed(ids, |m| m.status = MessageStatus::Archived))
    }
}
