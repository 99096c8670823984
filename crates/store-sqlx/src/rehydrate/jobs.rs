//! [`SqlJobQueue`]: queue-rehydrate's [`JobQueue`] on recon's own `recon_queued_jobs` table.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::Utc;
use queue_rehydrate::{
    DesiredJob, JobQueue, Key, KeyType, OrphanSweeper, QueuedJob, Reschedule, Result as QResult,
    SweepCounts, TableMapping,
};

use super::{Mapped, QError, count_of, limit_value, mysql_bytes, store_err};
use crate::sql::{Binds, CHUNK, with_deadlock_retry};
use crate::value::{Kind, Value};
use crate::{Db, Dialect, Error, Ident, Result, TableName, TimestampFormat};

/// The kinds of a job row as the queue reads it: id, kind, entity key, its type, run_at.
const JOB_ROW_KINDS: [Kind; 5] = [
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Ts(TimestampFormat::Rfc3339),
];

/// A stored integer key as the reconciler sees it: an integer only in the canonical form the
/// SQL orphan sweep compares (`-?[0-9]{1,18}`, no `+`, no leading zeros); anything else stays
/// text, so the reconciler reports it as a key of the wrong type instead of judging `"007"` as
/// entity 7 while the sweep leaves it alone (it would then be neither swept nor reported).
fn integer_key(k: String) -> queue_rehydrate::Value {
    match k.parse::<i64>() {
        Ok(i) if i.to_string() == k && k.trim_start_matches('-').len() <= 18 => {
            queue_rehydrate::Value::Int(i)
        }
        _ => queue_rehydrate::Value::Text(k),
    }
}

/// The table [`SqlJobQueue`] keeps jobs in, created by [`Db::migrate`].
pub const QUEUED_JOBS_TABLE: &str = "recon_queued_jobs";

/// Longest queue name, job id, kind or entity key accepted (the columns' width on MySQL).
const MAX_TEXT: usize = 191;

/// Largest batch of [`SqlJobQueue::sweep_orphans`].
const MAX_SWEEP_BATCH: usize = 100_000;

const COLUMNS: [&str; 9] = [
    "queue",
    "id",
    "kind",
    "entity_key",
    "entity_key_type",
    "run_at",
    "state",
    "payload",
    "created_at",
];

/// The state of a job in `recon_queued_jobs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting to run: listed by `page`, removable, reschedulable.
    Waiting,
    /// Claimed by a worker: never removed or moved by recon, but its id exists.
    Running,
    /// Done and kept: its id exists, so it is not enqueued again.
    Finished,
}

impl JobState {
    /// The stored value: `waiting`, `running`, `finished`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Finished => "finished",
        }
    }
}

/// Which jobs `remove_orphans` looks at: suspects by id, or a range of ids.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Ids(&'a [String]),
    Range(Option<&'a str>, &'a str),
}

/// What [`SqlJobQueue::sweep_orphans`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrphanSweep {
    /// Waiting jobs with an entity key when the sweep started (the jobs it examines).
    pub checked: u64,
    /// Waiting jobs whose entity does not exist: removed (or, in a dry run, to be removed).
    pub orphaned: u64,
    /// Batches (transactions).
    pub batches: u64,
}

/// [`OrphanSweeper`] of a [`SqlJobQueue`] over a host entity table in the same database
/// ([`SqlJobQueue::orphan_sweeper`]): [`SqlJobQueue::sweep_orphans`] behind the trait, so a
/// [`QueueDiffReconciler`](queue_rehydrate::QueueDiffReconciler) removes orphans set-based.
#[derive(Clone, Debug)]
pub struct SqlOrphanSweeper {
    queue: SqlJobQueue,
    entities: TableMapping,
}

#[async_trait]
impl OrphanSweeper for SqlOrphanSweeper {
    async fn sweep_orphans(&self, batch_size: usize, dry_run: bool) -> QResult<SweepCounts> {
        let s = self
            .queue
            .sweep_orphans(&self.entities, batch_size, dry_run)
            .await
            .map_err(store_err(format!(
                "sweep orphans of queue {} against {}",
                self.queue.queue,
                self.entities.qualified_name()
            )))?;
        Ok(SweepCounts {
            checked: s.checked,
            orphaned: s.orphaned,
            batches: s.batches,
        })
    }

    /// One statement: the waiting jobs after `after` whose key is NULL or empty, whose key
    /// type is not the entity table's, or (integer keys) whose key is not an integer as the
    /// sweep reads it — the jobs the sweep skips — in id order.
    async fn unjudged(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> QResult<Option<Vec<QueuedJob>>> {
        let q = &self.queue;
        if limit == 0 {
            return Ok(Some(Vec::new()));
        }
        let d = q.db.dialect();
        let m = Mapped::new(
            d,
            &self.entities,
            TimestampFormat::default(),
            &Default::default(),
        )
        .map_err(QError::from)?;
        let key = q.c("entity_key");
        let kt = q.c("entity_key_type");
        let id = q.c("id");
        // the sweep's own test of a well-formed integer key, negated
        let (guard, _) = q.key_match(&m, "e", key);
        let not_integer = guard
            .strip_prefix(" AND ")
            .map(|g| format!(" OR NOT ({g})"))
            .unwrap_or_default();
        let mut b = Binds::new(d);
        let queue = b.push(q.queue_value());
        let st = b.push(SqlJobQueue::state_value(JobState::Waiting));
        let after_sql = match after {
            Some(a) => format!(" AND {id} > {}", b.push(Value::Text(Some(a)))),
            None => String::new(),
        };
        let ty = b.push(Value::Text(Some(m.key_type.to_string())));
        let lim = b.push(limit_value(limit));
        let sql = format!(
            "SELECT {id}, {kind}, {key}, {kt}, {run} FROM {t} WHERE {qc} = {queue} AND {s} = {st}\
             {after_sql} AND ({key} IS NULL OR length({key}) = 0 OR {kt} IS NULL OR {kt} <> {ty}\
             {not_integer}) ORDER BY {id} LIMIT {lim}",
            kind = q.c("kind"),
            run = q.c("run_at"),
            t = q.table,
            qc = q.c("queue"),
            s = q.c("state"),
        );
        let rows =
            q.db.fetch(&sql, &b.values, &JOB_ROW_KINDS)
                .await
                .map_err(store_err(format!(
                    "list jobs of queue {} that cannot be judged",
                    q.queue
                )))?;
        rows.into_iter()
            .map(|r| q.decode(r).map_err(QError::from))
            .collect::<QResult<Vec<_>>>()
            .map(Some)
    }
}

/// [`JobQueue`] on recon's own table `recon_queued_jobs` (migration `0002_queue`), one named
/// queue per store: `(queue, id)` is the primary key, `(queue, state, id)` serves the keyset
/// page of waiting jobs. Create it with [`Db::job_queue`] after [`Db::migrate`].
///
/// | method | SQL (one statement per batch of ≤ 2,000 ids) |
/// |--------|-----|
/// | `page` | `… WHERE queue = ? AND state = 'waiting' AND id > ? ORDER BY id LIMIT ?` |
/// | `existing` | `SELECT id … WHERE queue = ? AND id IN (…)` (any state) |
/// | `remove` | `DELETE … WHERE queue = ? AND state = 'waiting' AND id IN (…)` |
/// | `enqueue` | `INSERT … ON CONFLICT DO NOTHING` (PostgreSQL, SQLite) / `INSERT IGNORE` (MariaDB) |
/// | `reschedule` | `UPDATE … SET run_at = CASE id WHEN ? THEN ? … END WHERE queue = ? AND state = 'waiting' AND ((id = ? AND run_at = ?) OR …)` |
///
/// The entity key is stored as text with its type (`entity_key_type`: `integer` or `text`),
/// so a job of an integer-keyed entity reads back as an integer key on every backend, and a
/// job written by hand without a key, or with a key of the other type, is reported by the
/// diff instead of being misjudged. Host workers move jobs between states with
/// [`set_state`](Self::set_state). `created_at` is stamped with the application's clock at
/// enqueue, for people reading the table; recon never compares it.
///
/// ```no_run
/// use queue_rehydrate::{ColumnType, KeyType, TableMapping};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let db = store_sqlx::Db::connect("sqlite:app.sqlite").await?;
/// db.migrate().await?; // creates recon_queued_jobs
/// let pin_jobs = db.job_queue("pin-jobs")?;
/// pin_jobs.verify().await?;
/// let reservations = TableMapping::builder("reservations", "id", KeyType::Text)
///     .column("status", ColumnType::Text)
///     .build()?;
/// // the orphan part of the diff, inside the database
/// let swept = pin_jobs.sweep_orphans(&reservations, 10_000, false).await?;
/// println!("{} of {} jobs were orphans", swept.orphaned, swept.checked);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqlJobQueue {
    db: Db,
    queue: String,
    table: String,
    q: [String; 9],
}

impl Db {
    /// The job queue called `queue` (1 to 191 characters) in `recon_queued_jobs`.
    pub fn job_queue(&self, queue: &str) -> Result<SqlJobQueue> {
        if queue.is_empty() || queue.chars().count() > MAX_TEXT {
            return Err(Error::Config(format!(
                "queue name {queue:?} must have 1 to {MAX_TEXT} characters"
            )));
        }
        let d = self.dialect();
        let quote = |c: &str| Ident::new(c, "queue column").map(|i| i.quoted(d));
        let mut cols: [String; 9] = Default::default();
        for (slot, c) in cols.iter_mut().zip(COLUMNS) {
            *slot = quote(c)?;
        }
        Ok(SqlJobQueue {
            db: self.clone(),
            queue: queue.to_owned(),
            table: TableName::new(QUEUED_JOBS_TABLE, "queue table")?.quoted(d),
            q: cols,
        })
    }
}

fn check_len(what: &str, s: &str) -> Result<()> {
    if s.chars().count() > MAX_TEXT {
        return Err(Error::Config(format!(
            "{what} {s:?} is longer than {MAX_TEXT} characters"
        )));
    }
    Ok(())
}

impl SqlJobQueue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.queue
    }

    /// The [`OrphanSweeper`] of this queue over `entities`, a host table in the same
    /// database (the table and its key column are checked here; their existence by
    /// [`SqlEntitySource::verify`](crate::SqlEntitySource::verify)). Give it to
    /// [`QueueDiffReconciler::with_orphan_sweeper`](queue_rehydrate::QueueDiffReconciler::with_orphan_sweeper)
    /// together with this queue and `db.source_store().entities(entities)`.
    pub fn orphan_sweeper(&self, entities: TableMapping) -> Result<SqlOrphanSweeper> {
        Mapped::new(
            self.db.dialect(),
            &entities,
            TimestampFormat::default(),
            &Default::default(),
        )?;
        Ok(SqlOrphanSweeper {
            queue: self.clone(),
            entities,
        })
    }

    /// Check that `recon_queued_jobs` exists with its columns (run [`Db::migrate`] first).
    pub async fn verify(&self) -> Result<()> {
        let table = TableName::new(QUEUED_JOBS_TABLE, "queue table")?;
        let cols = COLUMNS
            .iter()
            .map(|c| Ident::new(c, "queue column"))
            .collect::<Result<Vec<_>>>()?;
        match self
            .db
            .verify_columns(&table, &cols.iter().collect::<Vec<_>>())
            .await
        {
            Err(Error::MissingTable { table, .. }) => Err(Error::MissingTable {
                table,
                hint: " (it is recon's own table: run Db::migrate first)".into(),
            }),
            other => other,
        }
    }

    fn c(&self, name: &str) -> &str {
        let i = COLUMNS.iter().position(|c| *c == name).unwrap_or(0);
        &self.q[i]
    }

    fn queue_value(&self) -> Value {
        Value::Text(Some(self.queue.clone()))
    }

    fn state_value(s: JobState) -> Value {
        Value::Text(Some(s.as_str().to_owned()))
    }

    /// Put the jobs among `ids` in `state` (what a host worker does when it claims or
    /// finishes a job); returns how many exist.
    pub async fn set_state(&self, ids: &[String], state: JobState) -> Result<u64> {
        let mut tx = self.db.begin().await?;
        let mut n = 0;
        for chunk in ids.chunks(CHUNK) {
            let mut b = Binds::new(self.db.dialect());
            let st = b.push(Self::state_value(state));
            let queue = b.push(self.queue_value());
            let list = b.list(chunk.iter().map(|i| Value::Text(Some(i.clone()))));
            n += tx
                .execute(
                    &format!(
                        "UPDATE {t} SET {s} = {st} WHERE {qc} = {queue} AND {id} IN ({list})",
                        t = self.table,
                        s = self.c("state"),
                        qc = self.c("queue"),
                        id = self.c("id"),
                    ),
                    &b.values,
                )
                .await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    fn decode(&self, mut r: Vec<Value>) -> Result<QueuedJob> {
        let run_at = r.pop().and_then(Value::ts);
        let key_type = r.pop().and_then(Value::text);
        let key = r.pop().and_then(Value::text);
        let kind = r.pop().and_then(Value::text).unwrap_or_default();
        let id = r.pop().and_then(Value::text).unwrap_or_default();
        let bad = |reason: &str| Error::BadValue {
            table: QUEUED_JOBS_TABLE.into(),
            column: "run_at".into(),
            key: id.clone(),
            reason: reason.into(),
        };
        let run_at = run_at.ok_or_else(|| bad("NULL run time"))?;
        let entity_key = match (key, key_type.as_deref()) {
            (None, _) => queue_rehydrate::Value::Null,
            (Some(k), Some("integer")) => integer_key(k),
            (Some(k), _) => queue_rehydrate::Value::Text(k),
        };
        Ok(QueuedJob {
            id,
            kind,
            entity_key,
            run_at,
        })
    }

    /// Remove the waiting jobs whose entity row no longer exists in `entities` — set-based,
    /// inside the database, for a queue and an entity table in the same database (where
    /// [`QueueDiffReconciler`](queue_rehydrate::QueueDiffReconciler)'s batched lookups would
    /// carry every job and entity through the application).
    ///
    /// The waiting jobs are walked in keyset batches of about `batch_size`. Per batch:
    /// 1. one statement finds the batch's upper bound `hi` (entity-key order on PostgreSQL
    ///    with text keys, through the index `(queue, state, entity_key, id)`; id order
    ///    otherwise, through `(queue, state, id)`);
    /// 2. PostgreSQL, text keys: one statement finds the *suspects*: `SELECT j.id … WHERE key
    ///    in the range AND NOT EXISTS (SELECT 1 FROM entities e WHERE e.key = j.entity_key AND
    ///    e.key in the same range)` — both sides are index ranges, so PostgreSQL merges them
    ///    instead of probing the entity index once per job; then one transaction deletes the
    ///    suspects that are still waiting and whose entity does not exist, checked again
    ///    without the range (so a host key column whose collation orders differently from
    ///    `recon_queued_jobs.entity_key` can only add suspects, never remove a job that has
    ///    its entity);
    /// 3. SQLite, MariaDB/MySQL and integer keys (no merge join, or no common order): one
    ///    transaction, `DELETE … WHERE id in the batch's range AND NOT EXISTS (SELECT 1 FROM
    ///    entities e WHERE e.key = job.entity_key)` — one entity index probe per job, in the
    ///    table's own order.
    ///
    /// Jobs without an entity key, or with a key of the other type, are left alone (the diff
    /// reconciler reports them). `dry_run` counts instead of deleting.
    pub async fn sweep_orphans(
        &self,
        entities: &TableMapping,
        batch_size: usize,
        dry_run: bool,
    ) -> Result<OrphanSweep> {
        let d = self.db.dialect();
        let m = Mapped::new(d, entities, TimestampFormat::default(), &Default::default())?;
        let batch_size = batch_size.clamp(1, MAX_SWEEP_BATCH);
        let key = self.c("entity_key");
        let mut out = OrphanSweep::default();

        let mut b = Binds::new(d);
        let queue = b.push(self.queue_value());
        let st = b.push(Self::state_value(JobState::Waiting));
        let rows = self
            .db
            .fetch(
                &format!(
                    "SELECT COUNT(*) FROM {t} WHERE {qc} = {queue} AND {s} = {st} AND {key} IS NOT NULL",
                    t = self.table,
                    qc = self.c("queue"),
                    s = self.c("state"),
                ),
                &b.values,
                &[Kind::Int],
            )
            .await?;
        out.checked = count_of(&rows);

        // PostgreSQL merges two key-ordered index ranges; the others probe per job, which is
        // cheapest in the table's own (id) order
        let merge = d == Dialect::Postgres && m.key_type == KeyType::Text;
        let order = if merge { key } else { self.c("id") };
        let mut lo: Option<String> = None;
        loop {
            // 1. the batch's upper bound
            let mut b = Binds::new(d);
            let queue = b.push(self.queue_value());
            let st = b.push(Self::state_value(JobState::Waiting));
            let after = match &lo {
                Some(k) => format!(" AND {order} > {}", b.push(Value::Text(Some(k.clone())))),
                None => format!(" AND {order} IS NOT NULL"),
            };
            let lim = b.push(limit_value(batch_size));
            let rows = self
                .db
                .fetch(
                    &format!(
                        "SELECT COUNT(*), MAX(p.k) FROM (SELECT {order} AS k FROM {t} WHERE {qc} = \
                         {queue} AND {s} = {st}{after} ORDER BY {order} LIMIT {lim}) p",
                        t = self.table,
                        qc = self.c("queue"),
                        s = self.c("state"),
                    ),
                    &b.values,
                    &[Kind::Int, Kind::Text],
                )
                .await?;
            let n = count_of(&rows);
            let hi = rows.into_iter().next().and_then(|mut r| r.pop()?.text());
            let Some(hi) = hi.filter(|_| n > 0) else {
                break;
            };
            out.batches += 1;
            out.orphaned += if merge {
                // 2. suspects through a merge of two index ranges, 3. the checked delete
                let suspects = self.suspects(&m, lo.as_deref(), &hi).await?;
                if suspects.is_empty() {
                    0
                } else {
                    with_deadlock_retry(|| self.remove_orphans(&m, Scope::Ids(&suspects), dry_run))
                        .await?
                }
            } else {
                // one statement per batch of ids
                let range = Scope::Range(lo.as_deref(), &hi);
                with_deadlock_retry(|| self.remove_orphans(&m, range, dry_run)).await?
            };
            if n < batch_size as u64 {
                break;
            }
            lo = Some(hi);
        }
        Ok(out)
    }

    /// `e.key = <the job's key>` for the entity key type, exact on every backend.
    fn key_match(&self, m: &Mapped, e: &str, job_key: &str) -> (String, String) {
        let d = self.db.dialect();
        let ek = format!("{e}.{}", m.key().quoted);
        let digits = "'^-?[0-9]{1,18}$'";
        match (d, m.key_type) {
            (Dialect::Postgres, KeyType::Integer) => (
                format!(" AND {job_key} ~ {digits}"),
                format!("{ek} = CAST(CASE WHEN {job_key} ~ {digits} THEN {job_key} END AS BIGINT)"),
            ),
            (Dialect::MySql, KeyType::Integer) => (
                format!(" AND {job_key} REGEXP {digits}"),
                format!(
                    "{ek} = CAST(CASE WHEN {job_key} REGEXP {digits} THEN {job_key} END AS SIGNED)"
                ),
            ),
            (Dialect::Sqlite, KeyType::Integer) => (
                format!(" AND CAST(CAST({job_key} AS INTEGER) AS TEXT) = {job_key}"),
                format!("{ek} = CAST({job_key} AS INTEGER)"),
            ),
            (Dialect::MySql, KeyType::Text) => (
                String::new(),
                format!(
                    "{ek} = {job_key} AND {} = {}",
                    mysql_bytes(&ek),
                    mysql_bytes(job_key)
                ),
            ),
            (_, KeyType::Text) => (String::new(), format!("{ek} = {job_key}")),
        }
    }

    /// The waiting jobs with a key in `(lo, hi]` whose entity is not found in the same key
    /// range of the entity table (text keys), or not found at all (integer keys).
    async fn suspects(&self, m: &Mapped, lo: Option<&str>, hi: &str) -> Result<Vec<String>> {
        let d = self.db.dialect();
        let key = format!("j.{}", self.c("entity_key"));
        let ek = format!("e.{}", m.key().quoted);
        let (_, matches) = self.key_match(m, "e", &key);
        let mut b = Binds::new(d);
        let queue = b.push(self.queue_value());
        let st = b.push(Self::state_value(JobState::Waiting));
        let text = m.key_type == KeyType::Text;
        let range = |b: &mut Binds, col: &str| {
            let lower =
                lo.map(|lo| format!(" AND {col} > {}", b.push(Value::Text(Some(lo.into())))));
            format!(
                "{} AND {col} <= {}",
                lower.unwrap_or_default(),
                b.push(Value::Text(Some(hi.into())))
            )
        };
        let job_range = range(&mut b, &key);
        let entity_range = if text {
            range(&mut b, &ek)
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT j.{id} FROM {t} j WHERE j.{qc} = {queue} AND j.{s} = {st}{job_range} AND NOT \
             EXISTS (SELECT 1 FROM {et} e WHERE {matches}{entity_range})",
            id = self.c("id"),
            t = self.table,
            qc = self.c("queue"),
            s = self.c("state"),
            et = m.table,
        );
        Ok(self
            .db
            .fetch(&sql, &b.values, &[Kind::Text])
            .await?
            .into_iter()
            .filter_map(|mut r| r.pop()?.text())
            .collect())
    }

    /// Delete (or count) the `suspects` that are still waiting, have a key of the entity
    /// type, and whose entity does not exist — one transaction. (`length(key) > 0` rather
    /// than `key IS NOT NULL`: SQLite without statistics would take the latter for a range
    /// on the entity index and scan every waiting job instead of looking the ids up.)
    async fn remove_orphans(&self, m: &Mapped, scope: Scope<'_>, dry_run: bool) -> Result<u64> {
        let d = self.db.dialect();
        let t = &self.table;
        let key = format!("{t}.{}", self.c("entity_key"));
        let (guard, matches) = self.key_match(m, "e", &key);
        let mut tx = self.db.begin().await?;
        let mut n = 0;
        let one = [String::new()];
        let chunks: Vec<&[String]> = match scope {
            Scope::Ids(ids) => ids.chunks(CHUNK).collect(),
            Scope::Range(..) => vec![&one[..]],
        };
        for chunk in chunks {
            let mut b = Binds::new(d);
            let queue = b.push(self.queue_value());
            let st = b.push(Self::state_value(JobState::Waiting));
            let ty = b.push(Value::Text(Some(m.key_type.to_string())));
            let which = match scope {
                Scope::Ids(_) => {
                    let list = b.list(chunk.iter().map(|i| Value::Text(Some(i.clone()))));
                    format!("{t}.{} IN ({list})", self.c("id"))
                }
                Scope::Range(lo, hi) => {
                    let id = format!("{t}.{}", self.c("id"));
                    let lower = lo
                        .map(|lo| format!("{id} > {} AND ", b.push(Value::Text(Some(lo.into())))))
                        .unwrap_or_default();
                    format!("{lower}{id} <= {}", b.push(Value::Text(Some(hi.into()))))
                }
            };
            let filter = format!(
                "{t}.{qc} = {queue} AND {t}.{s} = {st} AND {t}.{kt} = {ty} AND {which} \
                 AND length({key}) > 0{guard} AND NOT EXISTS (SELECT 1 FROM {et} e WHERE {matches})",
                qc = self.c("queue"),
                s = self.c("state"),
                kt = self.c("entity_key_type"),
                et = m.table,
            );
            n += if dry_run {
                count_of(
                    &tx.fetch(
                        &format!("SELECT COUNT(*) FROM {t} WHERE {filter}"),
                        &b.values,
                        &[Kind::Int],
                    )
                    .await?,
                )
            } else {
                tx.execute(&format!("DELETE FROM {t} WHERE {filter}"), &b.values)
                    .await?
            };
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn enqueue_chunk(&self, jobs: &[&DesiredJob], now: chrono::DateTime<Utc>) -> Result<u64> {
        let d = self.db.dialect();
        let mut b = Binds::new(d);
        let mut rows = Vec::with_capacity(jobs.len());
        for j in jobs {
            let (key, key_type) = match &j.entity_key {
                Key::Int(i) => (i.to_string(), "integer"),
                Key::Text(s) => (s.clone(), "text"),
            };
            let payload = if j.payload.is_null() {
                None
            } else {
                Some(
                    serde_json::to_string(&j.payload)
                        .map_err(|e| Error::Config(format!("payload of job {}: {e}", j.id)))?,
                )
            };
            let vals = [
                self.queue_value(),
                Value::Text(Some(j.id.clone())),
                Value::Text(Some(j.kind.clone())),
                Value::Text(Some(key)),
                Value::Text(Some(key_type.into())),
                Value::Ts(Some(j.run_at)),
                Self::state_value(JobState::Waiting),
                Value::Text(payload),
                Value::Ts(Some(now)),
            ];
            rows.push(format!("({})", b.list(vals)));
        }
        let cols = self.q.join(", ");
        let sql = match d {
            Dialect::MySql => format!(
                "INSERT IGNORE INTO {t} ({cols}) VALUES {rows}",
                t = self.table,
                rows = rows.join(", ")
            ),
            Dialect::Postgres | Dialect::Sqlite => format!(
                "INSERT INTO {t} ({cols}) VALUES {rows} ON CONFLICT ({qc}, {id}) DO NOTHING",
                t = self.table,
                rows = rows.join(", "),
                qc = self.c("queue"),
                id = self.c("id"),
            ),
        };
        self.db.execute(&sql, &b.values).await
    }

    async fn reschedule_chunk(&self, changes: &[Reschedule]) -> Result<u64> {
        let d = self.db.dialect();
        let mut b = Binds::new(d);
        let id = self.c("id");
        let run_at = self.c("run_at");
        let whens = changes
            .iter()
            .map(|c| {
                let i = b.push(Value::Text(Some(c.id.clone())));
                let to = b.push(Value::Ts(Some(c.to)));
                format!("WHEN {i} THEN {to}")
            })
            .collect::<Vec<_>>()
            .join(" ");
        let queue = b.push(self.queue_value());
        let st = b.push(Self::state_value(JobState::Waiting));
        let cas = changes
            .iter()
            .map(|c| {
                let i = b.push(Value::Text(Some(c.id.clone())));
                let from = b.push(Value::Ts(Some(c.from)));
                format!("({id} = {i} AND {run_at} = {from})")
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!(
            "UPDATE {t} SET {run_at} = CASE {id} {whens} ELSE {run_at} END \
             WHERE {qc} = {queue} AND {s} = {st} AND ({cas})",
            t = self.table,
            qc = self.c("queue"),
            s = self.c("state"),
        );
        let mut tx = self.db.begin().await?;
        let n = tx.execute(&sql, &b.values).await?;
        tx.commit().await?;
        Ok(n)
    }
}

#[async_trait]
impl JobQueue for SqlJobQueue {
    async fn page(&self, after: Option<String>, limit: usize) -> QResult<Vec<QueuedJob>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut b = Binds::new(self.db.dialect());
        let queue = b.push(self.queue_value());
        let st = b.push(Self::state_value(JobState::Waiting));
        let after_sql = match after {
            Some(a) => format!(" AND {} > {}", self.c("id"), b.push(Value::Text(Some(a)))),
            None => String::new(),
        };
        let lim = b.push(limit_value(limit));
        let sql = format!(
            "SELECT {id}, {kind}, {key}, {kt}, {run} FROM {t} WHERE {qc} = {queue} AND {s} = {st}\
             {after_sql} ORDER BY {id} LIMIT {lim}",
            id = self.c("id"),
            kind = self.c("kind"),
            key = self.c("entity_key"),
            kt = self.c("entity_key_type"),
            run = self.c("run_at"),
            t = self.table,
            qc = self.c("queue"),
            s = self.c("state"),
        );
        let rows = self
            .db
            .fetch(&sql, &b.values, &JOB_ROW_KINDS)
            .await
            .map_err(store_err(format!("read queue {}", self.queue)))?;
        rows.into_iter()
            .map(|r| self.decode(r).map_err(QError::from))
            .collect()
    }

    async fn existing(&self, ids: &[String]) -> QResult<Vec<String>> {
        let mut found = HashSet::new();
        for chunk in ids.chunks(CHUNK) {
            let mut b = Binds::new(self.db.dialect());
            let queue = b.push(self.queue_value());
            let list = b.list(chunk.iter().map(|i| Value::Text(Some(i.clone()))));
            let rows = self
                .db
                .fetch(
                    &format!(
                        "SELECT {id} FROM {t} WHERE {qc} = {queue} AND {id} IN ({list})",
                        id = self.c("id"),
                        t = self.table,
                        qc = self.c("queue"),
                    ),
                    &b.values,
                    &[Kind::Text],
                )
                .await
                .map_err(store_err(format!("look up jobs of queue {}", self.queue)))?;
            found.extend(rows.into_iter().filter_map(|mut r| r.pop()?.text()));
        }
        // exact: MariaDB's _bin collations ignore trailing spaces
        Ok(ids.iter().filter(|i| found.contains(*i)).cloned().collect())
    }

    async fn remove(&self, ids: &[String]) -> QResult<u64> {
        let op = || async {
            let mut tx = self.db.begin().await?;
            let mut n = 0;
            for chunk in ids.chunks(CHUNK) {
                let mut b = Binds::new(self.db.dialect());
                let queue = b.push(self.queue_value());
                let st = b.push(Self::state_value(JobState::Waiting));
                let list = b.list(chunk.iter().map(|i| Value::Text(Some(i.clone()))));
                n += tx
                    .execute(
                        &format!(
                            "DELETE FROM {t} WHERE {qc} = {queue} AND {s} = {st} AND {id} IN ({list})",
                            t = self.table,
                            qc = self.c("queue"),
                            s = self.c("state"),
                            id = self.c("id"),
                        ),
                        &b.values,
                    )
                    .await?;
            }
            tx.commit().await?;
            Ok(n)
        };
        with_deadlock_retry(op)
            .await
            .map_err(store_err(format!("remove jobs of queue {}", self.queue)))
    }

    async fn enqueue(&self, jobs: &[DesiredJob]) -> QResult<u64> {
        for j in jobs {
            let bad = |e: Error| QError::Config(e.to_string());
            check_len("job id", &j.id).map_err(bad)?;
            check_len("job kind", &j.kind).map_err(bad)?;
            if let Key::Text(k) = &j.entity_key {
                check_len("entity key", k).map_err(bad)?;
            }
            if j.id.is_empty() || j.kind.is_empty() {
                return Err(QError::config("a job needs a non-empty id and kind"));
            }
        }
        let now = Utc::now();
        let refs: Vec<&DesiredJob> = jobs.iter().collect();
        let mut n = 0;
        // each chunk is one statement, atomic by itself; a retry inserts only what is missing
        for chunk in refs.chunks(CHUNK) {
            n += with_deadlock_retry(|| self.enqueue_chunk(chunk, now))
                .await
                .map_err(store_err(format!("enqueue into queue {}", self.queue)))?;
        }
        Ok(n)
    }

    async fn reschedule(&self, changes: &[Reschedule]) -> QResult<u64> {
        let mut n = 0;
        // ids and times twice per change: stay well within every parameter limit
        for chunk in changes.chunks(CHUNK / 2) {
            n += with_deadlock_retry(|| self.reschedule_chunk(chunk))
                .await
                .map_err(store_err(format!(
                    "reschedule jobs of queue {}",
                    self.queue
                )))?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::integer_key;
    use queue_rehydrate::Value;

    #[test]
    fn only_canonical_integer_keys_decode_as_integers() {
        for (k, int) in [("7", Some(7)), ("-42", Some(-42)), ("0", Some(0))] {
            assert_eq!(integer_key(k.into()), Value::Int(int.unwrap()), "{k}");
        }
        let longest = "999999999999999999"; // 18 digits: the sweep compares it
        assert_eq!(
            integer_key(longest.into()),
            Value::Int(999_999_999_999_999_999)
        );
        for k in [
            "+7",
            "007",
            "-0",
            " 7",
            "7 ",
            "1000000000000000000",
            "x",
            "",
        ] {
            assert_eq!(integer_key(k.into()), Value::Text(k.into()), "{k:?}");
        }
    }
}
