//! [`SqlSourceStore`] and [`SqlEntitySource`]: host tables described by a [`TableMapping`].

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use queue_rehydrate::{
    EntitySource, Key, KeyType, Maintenance, Predicate, Result as QResult, Row, SourceStore,
    TableMapping,
};

use super::predicate::compile;
use super::{Base, Mapped, QError, bind_value, count_of, limit_value, store_err};
use crate::sql::{Binds, CHUNK, with_deadlock_retry};
use crate::value::Value;
use crate::{Db, Dialect, TimestampFormat};

/// Rows per maintenance transaction.
const DEFAULT_MAINTENANCE_BATCH: usize = CHUNK;

/// [`SourceStore`] on the host's own tables, any number of them (each call names its
/// [`TableMapping`]). Create it with [`Db::source_store`]; call [`verify`](Self::verify) for
/// each mapped table at startup.
///
/// - `count`: `SELECT COUNT(*) FROM t WHERE (p)`;
/// - `read_matching`: `SELECT <mapped columns> FROM t WHERE (p) AND key > ? ORDER BY key
///   LIMIT ?`;
/// - `apply_maintenance`: in batches of [`maintenance_batch`](Self::maintenance_batch) rows,
///   one transaction each: `SELECT key … WHERE (when) AND key > ? ORDER BY key LIMIT ?`
///   (`FOR UPDATE SKIP LOCKED` on PostgreSQL and MariaDB/MySQL; SQLite's `BEGIN IMMEDIATE`
///   holds the write lock), then one `UPDATE t SET … WHERE key IN (…) AND (when)`. The count
///   is of rows *matched*: MariaDB/MySQL report rows *changed* unless the connection sets
///   `CLIENT_FOUND_ROWS` (sqlx does, a host's pool might not), so there the count is the number
///   of rows the locked `SELECT` returned, which the `UPDATE` then matches. Rows another
///   transaction holds locked at that moment are skipped, not waited for (the next run
///   finds them, since the rule's `when` still matches them).
///
/// Predicates are checked against the mapping first ([`Predicate::validate`],
/// [`Maintenance::validate`]) and those errors are returned unchanged: nothing is sent to the
/// database. On SQLite, timestamps are bound in the column's [`TimestampFormat`] (default RFC
/// 3339 text; see [`timestamps`](Self::timestamps) and
/// [`column_timestamps`](Self::column_timestamps)).
///
/// ```no_run
/// use std::sync::Arc;
/// use queue_rehydrate::memory::MemoryDerivedQueue;
/// use queue_rehydrate::{ColumnType, KeyType, Predicate, RehydrateReconciler, TableMapping};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let db = store_sqlx::Db::connect("sqlite:app.sqlite").await?;
/// let sessions = TableMapping::builder("user_sessions", "phone", KeyType::Text)
///     .column("contact_status", ColumnType::Text)
///     .build()?;
/// let store = db.source_store();
/// store.verify(&sessions).await?; // names a missing table or column
/// let follow_ups = Arc::new(MemoryDerivedQueue::new());
/// let step = RehydrateReconciler::builder("follow-up-queue", Arc::new(store), sessions)
///     .candidates(Predicate::eq("contact_status", "ACTIVE"), follow_ups)
///     .build()?;
/// # let _ = step; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqlSourceStore {
    base: Base,
    maintenance_batch: usize,
}

impl Db {
    /// A [`SourceStore`] over this database's tables.
    pub fn source_store(&self) -> SqlSourceStore {
        SqlSourceStore {
            base: Base::new(self),
            maintenance_batch: DEFAULT_MAINTENANCE_BATCH,
        }
    }
}

impl SqlSourceStore {
    /// How SQLite timestamp columns store time, unless [`column_timestamps`] says otherwise
    /// (PostgreSQL and MySQL have native types and ignore this). Default RFC 3339 text.
    ///
    /// [`column_timestamps`]: Self::column_timestamps
    #[must_use]
    pub fn timestamps(mut self, format: TimestampFormat) -> Self {
        self.base.timestamps = format;
        self
    }

    /// How SQLite stores time in `table.column` (`table` as in its [`TableMapping`]).
    #[must_use]
    pub fn column_timestamps(mut self, table: &str, column: &str, format: TimestampFormat) -> Self {
        Arc::make_mut(&mut self.base.formats).insert((table.into(), column.into()), format);
        self
    }

    /// Rows per maintenance transaction (default 2,000; at least 1, at most 2,000 so that the
    /// key list stays within every backend's bound-parameter limit).
    #[must_use]
    pub fn maintenance_batch(mut self, rows: usize) -> Self {
        self.maintenance_batch = rows.clamp(1, CHUNK);
        self
    }

    /// An [`EntitySource`] over `table` (the entities queued jobs belong to).
    pub fn entities(&self, table: TableMapping) -> SqlEntitySource {
        SqlEntitySource {
            store: self.clone(),
            table,
        }
    }

    /// Check that `table` and every mapped column exist; the error names what is missing.
    pub async fn verify(&self, table: &TableMapping) -> crate::Result<()> {
        let m = Mapped::new(
            self.base.db.dialect(),
            table,
            self.base.timestamps,
            &self.base.formats,
        )?;
        let idents = m.idents()?;
        self.base
            .db
            .verify_columns(&m.name, &idents.iter().collect::<Vec<_>>())
            .await
    }

    fn db(&self) -> &Db {
        &self.base.db
    }

    /// `SELECT <columns> FROM t WHERE (p) [AND key > ?] ORDER BY key LIMIT ?`.
    async fn read(
        &self,
        m: &Mapped,
        predicate: Option<&Predicate>,
        now: DateTime<Utc>,
        after: Option<&Key>,
        limit: usize,
    ) -> QResult<Vec<Row>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut b = Binds::new(m.d);
        let mut conds = Vec::new();
        if let Some(p) = predicate {
            conds.push(compile(p, m, now, &mut b)?);
        }
        if let Some(k) = after {
            let v = m.key_value(k)?;
            conds.push(format!("{} > {}", m.key().quoted, b.push(v)));
        }
        let lim = b.push(limit_value(limit));
        let (cols, kinds) = m.select();
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let sql = format!(
            "SELECT {cols} FROM {t}{filter} ORDER BY {k} LIMIT {lim}",
            t = m.table,
            k = m.key().quoted
        );
        let rows = self
            .db()
            .fetch(&sql, &b.values, &kinds)
            .await
            .map_err(store_err(format!("read {}", m.name)))?;
        rows.into_iter()
            .map(|r| m.decode(r).map_err(QError::from))
            .collect()
    }

    /// One maintenance batch in one transaction: returns (rows matched, the last key, whether
    /// the batch was full).
    async fn maintenance_once(
        &self,
        m: &Mapped,
        rule: &Maintenance,
        now: DateTime<Utc>,
        after: Option<&Value>,
    ) -> crate::Result<(u64, Option<Value>, bool)> {
        // checked before the first batch; only a bug could make these fail here
        let cfg = |e: QError| crate::Error::Config(e.to_string());
        let d = m.d;
        let key = &m.key().quoted;
        let key_kind = super::kind_of(m.key());
        let mut tx = self.db().begin().await?;
        let mut b = Binds::new(d);
        let when = compile(&rule.when, m, now, &mut b).map_err(cfg)?;
        let after_sql = match after {
            Some(k) => format!(" AND {key} > {}", b.push(k.clone())),
            None => String::new(),
        };
        let lim = b.push(limit_value(self.maintenance_batch));
        let keys: Vec<Value> = tx
            .fetch(
                &format!(
                    "SELECT {key} FROM {t} WHERE ({when}){after_sql} ORDER BY {key} LIMIT {lim}{lock}",
                    t = m.table,
                    lock = d.lock_rows()
                ),
                &b.values,
                &[key_kind],
            )
            .await?
            .into_iter()
            .filter_map(|mut r| r.pop())
            .collect();
        let Some(last) = keys.last().cloned() else {
            tx.commit().await?;
            return Ok((0, None, false));
        };
        let mut b = Binds::new(d);
        let mut sets = Vec::with_capacity(rule.set.len());
        for (column, value) in &rule.set {
            let c = m.column(column).map_err(cfg)?;
            sets.push(format!(
                "{} = {}",
                c.quoted,
                b.push(bind_value(d, c, &value.resolve(now)))
            ));
        }
        let list = b.list(keys.iter().cloned());
        let when = compile(&rule.when, m, now, &mut b).map_err(cfg)?;
        let affected = tx
            .execute(
                &format!(
                    "UPDATE {t} SET {sets} WHERE {key} IN ({list}) AND ({when})",
                    t = m.table,
                    sets = sets.join(", ")
                ),
                &b.values,
            )
            .await?;
        tx.commit().await?;
        // MariaDB/MySQL may count changed rows only; the locked rows are the matched ones.
        let matched = if d == Dialect::MySql {
            keys.len() as u64
        } else {
            affected
        };
        Ok((matched, Some(last), keys.len() >= self.maintenance_batch))
    }
}

#[async_trait]
impl SourceStore for SqlSourceStore {
    async fn apply_maintenance(
        &self,
        table: &TableMapping,
        rule: &Maintenance,
        now: DateTime<Utc>,
    ) -> QResult<u64> {
        rule.validate(table)?;
        let m = self.base.mapped(table)?;
        compile(&rule.when, &m, now, &mut Binds::new(m.d))?;
        let mut total = 0;
        let mut after: Option<Value> = None;
        loop {
            let (n, last, full) =
                with_deadlock_retry(|| self.maintenance_once(&m, rule, now, after.as_ref()))
                    .await
                    .map_err(store_err(format!(
                        "maintenance `{}` on {}",
                        rule.name, m.name
                    )))?;
            total += n;
            match last {
                Some(k) if full => after = Some(k),
                _ => break,
            }
        }
        Ok(total)
    }

    async fn count(
        &self,
        table: &TableMapping,
        predicate: &Predicate,
        now: DateTime<Utc>,
    ) -> QResult<u64> {
        predicate.validate(table)?;
        let m = self.base.mapped(table)?;
        let mut b = Binds::new(m.d);
        let p = compile(predicate, &m, now, &mut b)?;
        let rows = self
            .db()
            .fetch(
                &format!("SELECT COUNT(*) FROM {} WHERE {p}", m.table),
                &b.values,
                &[crate::value::Kind::Int],
            )
            .await
            .map_err(store_err(format!("count {}", m.name)))?;
        Ok(count_of(&rows))
    }

    async fn read_matching(
        &self,
        table: &TableMapping,
        predicate: &Predicate,
        now: DateTime<Utc>,
        after: Option<Key>,
        limit: usize,
    ) -> QResult<Vec<Row>> {
        predicate.validate(table)?;
        let m = self.base.mapped(table)?;
        let p = (predicate != &Predicate::All).then_some(predicate);
        self.read(&m, p, now, after.as_ref(), limit).await
    }
}

/// [`EntitySource`] on a host table: `page` reads every mapped column in key order (keyset);
/// `get_many` is one `SELECT … WHERE key IN (…)` per 2,000 keys (one per batch at the
/// default batch size), keys compared exactly.
#[derive(Clone, Debug)]
pub struct SqlEntitySource {
    store: SqlSourceStore,
    table: TableMapping,
}

impl SqlEntitySource {
    /// The mapped table.
    pub fn table(&self) -> &TableMapping {
        &self.table
    }

    /// The store it reads through.
    pub fn store(&self) -> &SqlSourceStore {
        &self.store
    }

    /// Check that the table and its mapped columns exist.
    pub async fn verify(&self) -> crate::Result<()> {
        self.store.verify(&self.table).await
    }
}

#[async_trait]
impl EntitySource for SqlEntitySource {
    fn key_type(&self) -> KeyType {
        self.table.key_type()
    }

    async fn page(&self, after: Option<Key>, limit: usize) -> QResult<Vec<Row>> {
        let m = self.store.base.mapped(&self.table)?;
        // no predicate, so no time is compared
        self.store
            .read(&m, None, DateTime::<Utc>::UNIX_EPOCH, after.as_ref(), limit)
            .await
    }

    async fn get_many(&self, keys: &[Key]) -> QResult<Vec<Row>> {
        let m = self.store.base.mapped(&self.table)?;
        let wanted: HashSet<&Key> = keys.iter().collect();
        let distinct: Vec<&Key> = {
            let mut seen = HashSet::new();
            keys.iter().filter(|k| seen.insert(*k)).collect()
        };
        let (cols, kinds) = m.select();
        let mut out = Vec::with_capacity(distinct.len());
        for chunk in distinct.chunks(CHUNK) {
            let mut b = Binds::new(m.d);
            let values = chunk
                .iter()
                .map(|k| m.key_value(k))
                .collect::<Result<Vec<_>, _>>()?;
            let list = b.list(values);
            let sql = format!(
                "SELECT {cols} FROM {t} WHERE {k} IN ({list})",
                t = m.table,
                k = m.key().quoted
            );
            let rows = self
                .store
                .db()
                .fetch(&sql, &b.values, &kinds)
                .await
                .map_err(store_err(format!("look up {}", m.name)))?;
            for r in rows {
                let row = m.decode(r)?;
                // exact: a case-insensitive collation may return `RES-1` for `res-1`
                if wanted.contains(row.key()) {
                    out.push(row);
                }
            }
        }
        Ok(out)
    }
}
