//! [`SqlLeaseStore`]: lease repair on the host's own job table.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lease_repair::{
    ApplyOutcome, CandidateKind, CandidateQuery, JobKey, JobRow, LeaseStore, PruneMode, PruneQuery,
    PruneStore, Repair,
};

use crate::sql::{Binds, CHUNK, with_deadlock_retry};
use crate::value::{Kind, Value};
use crate::{Db, Dialect, Error, Ident, Result, TableName, TimestampFormat};

/// How the host's job ids are typed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyKind {
    /// An integer column (`BIGINT`, `INTEGER`, …).
    #[default]
    Integer,
    /// A text column (`TEXT`, `VARCHAR`, `CHAR(36)`, …).
    Text,
    /// A PostgreSQL `uuid` column (text elsewhere).
    Uuid,
}

/// The host's job table, mapped: names are validated at [`JobTableBuilder::build`] and quoted
/// whenever written into SQL. Defaults follow seeds 000/001: `id`, `status`, `locked_by`,
/// `locked_until`, `attempts`, `last_error`.
#[derive(Clone, Debug)]
pub struct JobTable {
    table: TableName,
    id: Ident,
    key_kind: KeyKind,
    status: Ident,
    lease_owner: Ident,
    lease_expires_at: Ident,
    attempts: Ident,
    last_error: Ident,
    next_run_at: Option<Ident>,
    updated_at: Option<Ident>,
    failed_at: Option<Ident>,
    timestamps: TimestampFormat,
    archive: Option<TableName>,
}

/// Builds a [`JobTable`].
#[derive(Clone, Debug)]
pub struct JobTableBuilder {
    table: String,
    id: String,
    key_kind: KeyKind,
    status: String,
    lease_owner: String,
    lease_expires_at: String,
    attempts: String,
    last_error: String,
    next_run_at: Option<String>,
    updated_at: Option<String>,
    failed_at: Option<String>,
    timestamps: TimestampFormat,
    archive: Option<String>,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, column: &str) -> Self {
            self.$name = column.to_owned();
            self
        }
    };
}

macro_rules! opt_setter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, column: &str) -> Self {
            self.$name = Some(column.to_owned());
            self
        }
    };
}

impl JobTable {
    /// Map the table `table` (`name` or `schema.name`).
    pub fn builder(table: &str) -> JobTableBuilder {
        JobTableBuilder {
            table: table.to_owned(),
            id: "id".into(),
            key_kind: KeyKind::Integer,
            status: "status".into(),
            lease_owner: "locked_by".into(),
            lease_expires_at: "locked_until".into(),
            attempts: "attempts".into(),
            last_error: "last_error".into(),
            next_run_at: None,
            updated_at: None,
            failed_at: None,
            timestamps: TimestampFormat::default(),
            archive: None,
        }
    }

    /// The mapped table.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    fn mapped_columns(&self) -> Vec<&Ident> {
        let mut v = vec![
            &self.id,
            &self.status,
            &self.lease_owner,
            &self.lease_expires_at,
            &self.attempts,
            &self.last_error,
        ];
        v.extend(self.next_run_at.iter());
        v.extend(self.updated_at.iter());
        v.extend(self.failed_at.iter());
        v
    }
}

impl JobTableBuilder {
    setter!(
        /// The primary key column (default `id`).
        id
    );
    setter!(
        /// The state column (default `status`).
        status
    );
    setter!(
        /// The lease owner column (default `locked_by`).
        lease_owner
    );
    setter!(
        /// The lease expiry column (default `locked_until`).
        lease_expires_at
    );
    setter!(
        /// The attempts column (default `attempts`).
        attempts
    );
    setter!(
        /// The last error column (default `last_error`).
        last_error
    );
    opt_setter!(
        /// A column that receives the retry policy's next run time.
        next_run_at
    );
    opt_setter!(
        /// A column stamped with the repair time (and used by pruning).
        updated_at
    );
    opt_setter!(
        /// A column stamped when a job is given up.
        failed_at
    );

    /// How ids are typed (default integer).
    #[must_use]
    pub fn key_kind(mut self, kind: KeyKind) -> Self {
        self.key_kind = kind;
        self
    }

    /// How the SQLite table stores timestamps (default RFC 3339 text).
    #[must_use]
    pub fn timestamps(mut self, format: TimestampFormat) -> Self {
        self.timestamps = format;
        self
    }

    /// Prune into this table (same columns as the job table) instead of deleting.
    #[must_use]
    pub fn archive_table(mut self, table: &str) -> Self {
        self.archive = Some(table.to_owned());
        self
    }

    /// Validate every name. Errors name the offending setting; nothing touches the database.
    pub fn build(self) -> Result<JobTable> {
        let opt =
            |v: &Option<String>, what: &str| v.as_deref().map(|c| Ident::new(c, what)).transpose();
        let t = JobTable {
            table: TableName::new(&self.table, "job table")?,
            id: Ident::new(&self.id, "id column")?,
            key_kind: self.key_kind,
            status: Ident::new(&self.status, "status column")?,
            lease_owner: Ident::new(&self.lease_owner, "lease owner column")?,
            lease_expires_at: Ident::new(&self.lease_expires_at, "lease expiry column")?,
            attempts: Ident::new(&self.attempts, "attempts column")?,
            last_error: Ident::new(&self.last_error, "last error column")?,
            next_run_at: opt(&self.next_run_at, "next run column")?,
            updated_at: opt(&self.updated_at, "updated-at column")?,
            failed_at: opt(&self.failed_at, "failed-at column")?,
            timestamps: self.timestamps,
            archive: self
                .archive
                .as_deref()
                .map(|a| TableName::new(a, "archive table"))
                .transpose()?,
        };
        let cols = t.mapped_columns();
        for (i, c) in cols.iter().enumerate() {
            if cols[..i].contains(c) {
                return Err(Error::Config(format!(
                    "column `{c}` is mapped twice in the job table mapping"
                )));
            }
        }
        Ok(t)
    }
}

/// [`LeaseStore`] and [`PruneStore`] on a host's job table. Create it with
/// [`Db::lease_store`], then call [`SqlLeaseStore::verify`] at startup.
#[derive(Clone, Debug)]
pub struct SqlLeaseStore {
    db: Db,
    map: JobTable,
    q: Quoted,
}

/// The mapping's names, quoted once for the dialect.
#[derive(Clone, Debug)]
struct Quoted {
    table: String,
    id: String,
    status: String,
    owner: String,
    expiry: String,
    attempts: String,
    last_error: String,
    next_run_at: Option<String>,
    updated_at: Option<String>,
    failed_at: Option<String>,
}

impl Db {
    /// Lease repair over the host's job table as mapped.
    pub fn lease_store(&self, map: JobTable) -> SqlLeaseStore {
        let d = self.dialect();
        let qi = |i: &Ident| i.quoted(d);
        let q = Quoted {
            table: map.table.quoted(d),
            id: qi(&map.id),
            status: qi(&map.status),
            owner: qi(&map.lease_owner),
            expiry: qi(&map.lease_expires_at),
            attempts: qi(&map.attempts),
            last_error: qi(&map.last_error),
            next_run_at: map.next_run_at.as_ref().map(qi),
            updated_at: map.updated_at.as_ref().map(qi),
            failed_at: map.failed_at.as_ref().map(qi),
        };
        SqlLeaseStore {
            db: self.clone(),
            map,
            q,
        }
    }
}

impl SqlLeaseStore {
    /// Check that the mapped table and columns (and the archive table, with every column of
    /// the job table) exist. Call it at startup: the error names exactly what is missing.
    pub async fn verify(&self) -> Result<()> {
        self.db
            .verify_columns(&self.map.table, &self.map.mapped_columns())
            .await?;
        if let Some(archive) = &self.map.archive {
            let cols = self.db.columns(&self.map.table).await?.unwrap_or_default();
            let idents = cols
                .iter()
                .map(|c| Ident::new(c, "job table column"))
                .collect::<Result<Vec<_>>>()?;
            self.db
                .verify_columns(archive, &idents.iter().collect::<Vec<_>>())
                .await?;
        }
        Ok(())
    }

    fn ts(&self, t: Option<DateTime<Utc>>) -> Value {
        self.map.timestamps.value(self.db.dialect(), t)
    }

    fn key_value(&self, k: &JobKey) -> Result<Value> {
        match (self.map.key_kind, k) {
            (KeyKind::Integer, JobKey::Int(i)) => Ok(Value::Int(Some(*i))),
            (KeyKind::Text | KeyKind::Uuid, JobKey::Text(s)) => Ok(Value::Text(Some(s.clone()))),
            (kind, k) => Err(Error::Config(format!(
                "key {k} does not match the table's {kind:?} id column"
            ))),
        }
    }

    /// The id as selected (uuid as text on PostgreSQL).
    fn id_select(&self) -> String {
        match (self.db.dialect(), self.map.key_kind) {
            (Dialect::Postgres, KeyKind::Uuid) => format!("CAST({} AS TEXT)", self.q.id),
            _ => self.q.id.clone(),
        }
    }

    /// A placeholder for an id, cast to uuid on PostgreSQL where needed.
    fn id_param(&self, b: &mut Binds, k: &JobKey) -> Result<String> {
        let p = b.push(self.key_value(k)?);
        Ok(match (self.db.dialect(), self.map.key_kind) {
            (Dialect::Postgres, KeyKind::Uuid) => format!("CAST({p} AS uuid)"),
            _ => p,
        })
    }

    fn expiry_select(&self) -> String {
        match self.db.dialect() {
            Dialect::Postgres => format!("CAST({} AS timestamptz)", self.q.expiry),
            _ => self.q.expiry.clone(),
        }
    }

    fn row_columns(&self) -> (String, [Kind; 5]) {
        let key = match self.map.key_kind {
            KeyKind::Integer => Kind::Int,
            _ => Kind::Text,
        };
        (
            format!(
                "{}, {}, {}, {}, {}",
                self.id_select(),
                self.q.status,
                self.q.owner,
                self.expiry_select(),
                self.q.attempts
            ),
            [
                key,
                Kind::Text,
                Kind::Text,
                Kind::Ts(self.map.timestamps),
                Kind::Int,
            ],
        )
    }

    fn decode_row(&self, mut r: Vec<Value>) -> Result<JobRow> {
        let attempts = r.pop().and_then(Value::int);
        let expiry = r.pop().and_then(Value::ts);
        let owner = r.pop().and_then(Value::text);
        let status = r.pop().and_then(Value::text);
        let key = match r.pop() {
            Some(Value::Int(Some(i))) => JobKey::Int(i),
            Some(Value::Text(Some(s))) => JobKey::Text(s),
            _ => {
                return Err(Error::BadValue {
                    table: self.map.table.to_string(),
                    column: self.map.id.to_string(),
                    key: "?".into(),
                    reason: "NULL primary key".into(),
                });
            }
        };
        Ok(JobRow {
            key,
            status: status.unwrap_or_default(),
            lease_owner: owner,
            lease_expires_at: expiry,
            attempts,
        })
    }

    async fn read(&self, q: &CandidateQuery) -> Result<Vec<JobRow>> {
        let d = self.db.dialect();
        let s = &self.q;
        let mut b = Binds::new(d);
        let processing = b.push(Value::Text(Some(q.processing_state.clone())));
        let kind = match q.kind {
            CandidateKind::ExpiredLease => {
                let now = b.push(self.ts(Some(q.now)));
                format!("{e} IS NOT NULL AND {e} < {now}", e = s.expiry)
            }
            CandidateKind::Orphaned => format!("{} IS NULL AND {} IS NULL", s.owner, s.expiry),
            CandidateKind::Anomaly => {
                let mut parts = vec![format!(
                    "({} IS NOT NULL AND {} IS NULL)",
                    s.owner, s.expiry
                )];
                if let Some(h) = q.max_lease_horizon() {
                    let h = b.push(self.ts(Some(h)));
                    parts.push(format!("{} > {h}", s.expiry));
                }
                let now = b.push(self.ts(Some(q.now)));
                parts.push(format!(
                    "(({a} IS NULL OR {a} < 0) AND {e} >= {now})",
                    a = s.attempts,
                    e = s.expiry
                ));
                format!("({})", parts.join(" OR "))
            }
        };
        let after = match &q.after {
            Some(k) => format!(" AND {} > {}", s.id, self.id_param(&mut b, k)?),
            None => String::new(),
        };
        let limit = b.push(Value::Int(Some(i64::try_from(q.limit).unwrap_or(i64::MAX))));
        let (cols, kinds) = self.row_columns();
        let sql = format!(
            "SELECT {cols} FROM {t} WHERE {st} = {processing} AND {kind}{after} ORDER BY {id} LIMIT {limit}",
            t = s.table,
            st = s.status,
            id = s.id,
        );
        self.db
            .fetch(&sql, &b.values, &kinds)
            .await?
            .into_iter()
            .map(|r| self.decode_row(r))
            .collect()
    }

    async fn apply_once(&self, repairs: &[Repair], now: DateTime<Utc>) -> Result<ApplyOutcome> {
        let d = self.db.dialect();
        let s = &self.q;
        let mut tx = self.db.begin().await?;
        // 1. Re-read the batch under lock: rows another repairer holds are skipped, not waited on.
        let mut current: HashMap<JobKey, JobRow> = HashMap::with_capacity(repairs.len());
        let (cols, kinds) = self.row_columns();
        for chunk in repairs.chunks(CHUNK) {
            let mut b = Binds::new(d);
            let ids = chunk
                .iter()
                .map(|r| self.id_param(&mut b, &r.expected.key))
                .collect::<Result<Vec<_>>>()?;
            let sql = format!(
                "SELECT {cols} FROM {t} WHERE {id} IN ({list}) ORDER BY {id}{lock}",
                t = s.table,
                id = s.id,
                list = ids.join(", "),
                lock = d.lock_rows(),
            );
            for r in tx.fetch(&sql, &b.values, &kinds).await? {
                let row = self.decode_row(r)?;
                current.insert(row.key.clone(), row);
            }
        }
        // 2. Compare-and-set: only jobs that still look exactly as they were read.
        let (ok, changed): (Vec<&Repair>, Vec<&Repair>) = repairs
            .iter()
            .partition(|r| current.get(&r.expected.key) == Some(&r.expected));
        // 3. One set-based UPDATE per chunk.
        let processing = &repairs
            .first()
            .map(|r| r.expected.status.clone())
            .unwrap_or_default();
        for chunk in ok.chunks(CHUNK) {
            let (sql, values) = self.update_sql(chunk, processing, now)?;
            let n = tx.execute(&sql, &values).await?;
            // The rows are locked and were just compared: every one must be updated. Anything
            // else is a bug; roll back rather than report repairs that did not happen.
            if n != chunk.len() as u64 {
                return Err(Error::Config(format!(
                    "internal error: the repair of {} locked jobs in {} updated {n} rows; nothing was changed",
                    chunk.len(),
                    self.map.table
                )));
            }
        }
        tx.commit().await?;
        Ok(ApplyOutcome {
            applied: ok.iter().map(|r| r.expected.key.clone()).collect(),
            skipped: changed.iter().map(|r| r.expected.key.clone()).collect(),
        })
    }

    /// `UPDATE … FROM (VALUES …)` (PostgreSQL, SQLite) or `UPDATE … JOIN (SELECT … UNION ALL
    /// …)` (MySQL): one statement for the whole chunk.
    fn update_sql(
        &self,
        chunk: &[&Repair],
        processing: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, Vec<Value>)> {
        let d = self.db.dialect();
        let s = &self.q;
        let mut b = Binds::new(d);
        // Positional placeholders (SQLite, MySQL) must be pushed in text order: MySQL's
        // `UPDATE … JOIN (rows) … SET … WHERE` has the rows first, PostgreSQL's and SQLite's
        // `UPDATE … SET … FROM (rows) … WHERE` has them after SET.
        let push_rows = |b: &mut Binds| -> Result<Vec<[String; 6]>> {
            let mut rows = Vec::with_capacity(chunk.len());
            for r in chunk {
                let id = b.push(self.key_value(&r.expected.key)?);
                let status = b.push(Value::Text(Some(r.status.clone())));
                let attempts = b.push(Value::Int(Some(r.attempts)));
                let err = b.push(Value::Text(Some(r.last_error.clone())));
                let next = b.push(self.ts(r.next_run_at));
                let failed = b.push(Value::Int(Some(i64::from(r.failed))));
                rows.push([id, status, attempts, err, next, failed]);
            }
            Ok(rows)
        };
        let mut rows = if d == Dialect::MySql {
            push_rows(&mut b)?
        } else {
            Vec::new()
        };

        // SQLite cannot name the columns of a VALUES list (and a CTE over VALUES makes
        // UPDATE … FROM quadratic there), so it refers to them as column1, column2, …
        let names = [
            "id",
            "new_status",
            "new_attempts",
            "new_error",
            "new_next_run",
            "new_failed",
        ];
        let v = |name: &str| match d {
            Dialect::Sqlite => {
                let i = names.iter().position(|n| *n == name).unwrap_or(0);
                format!("v.column{}", i + 1)
            }
            _ => format!("v.{name}"),
        };
        let target = |c: &str| match d {
            Dialect::MySql => format!("t.{c}"),
            _ => c.to_owned(),
        };
        let mut sets = vec![
            format!("{} = {}", target(&s.status), v("new_status")),
            format!("{} = NULL", target(&s.owner)),
            format!("{} = NULL", target(&s.expiry)),
            format!("{} = {}", target(&s.attempts), v("new_attempts")),
            format!("{} = {}", target(&s.last_error), v("new_error")),
        ];
        if let Some(c) = &s.next_run_at {
            sets.push(format!("{} = {}", target(c), v("new_next_run")));
        }
        // Placeholders are pushed in the order they appear in the text (MySQL's `?` is
        // positional): the VALUES rows first, then SET, then WHERE.
        if let Some(c) = &s.failed_at {
            let now_p = b.push(self.ts(Some(now)));
            sets.push(format!(
                "{} = CASE WHEN {} = 1 THEN {now_p} ELSE t.{c} END",
                target(c),
                v("new_failed")
            ));
        }
        if let Some(c) = &s.updated_at {
            let now_p = b.push(self.ts(Some(now)));
            sets.push(format!("{} = {now_p}", target(c)));
        }
        if d != Dialect::MySql {
            rows = push_rows(&mut b)?;
        }
        let proc_p = b.push(Value::Text(Some(processing.to_owned())));
        let id_match = match (d, self.map.key_kind) {
            (Dialect::Postgres, KeyKind::Uuid) => format!("t.{} = CAST(v.id AS uuid)", s.id),
            _ => format!("t.{} = {}", s.id, v("id")),
        };
        let cols = "id, new_status, new_attempts, new_error, new_next_run, new_failed";
        let sql = match d {
            Dialect::Postgres | Dialect::Sqlite => {
                let values = rows
                    .iter()
                    .map(|r| format!("({})", r.join(", ")))
                    .collect::<Vec<_>>()
                    .join(", ");
                let from = if d == Dialect::Sqlite {
                    format!("(VALUES {values}) AS v")
                } else {
                    format!("(VALUES {values}) AS v({cols})")
                };
                format!(
                    "UPDATE {t} AS t SET {sets} FROM {from} WHERE {id_match} AND t.{st} = {proc_p}",
                    t = s.table,
                    sets = sets.join(", "),
                    st = s.status,
                )
            }
            Dialect::MySql => {
                let names = [
                    "id",
                    "new_status",
                    "new_attempts",
                    "new_error",
                    "new_next_run",
                    "new_failed",
                ];
                let selects = rows
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let items = r
                            .iter()
                            .zip(names)
                            .map(|(p, n)| {
                                if i == 0 {
                                    format!("{p} AS {n}")
                                } else {
                                    p.clone()
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(", ");
                        format!("SELECT {items}")
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                format!(
                    "UPDATE {t} AS t JOIN ({selects}) AS v ON {id_match} SET {sets} WHERE t.{st} = {proc_p}",
                    t = s.table,
                    sets = sets.join(", "),
                    st = s.status,
                )
            }
        };
        Ok((sql, b.values))
    }

    fn prune_filter(&self, q: &PruneQuery, b: &mut Binds) -> Result<String> {
        let Some(updated) = &self.q.updated_at else {
            return Err(Error::Config(
                "pruning needs the job table's updated_at column mapped".into(),
            ));
        };
        if q.terminal_states.is_empty() {
            return Err(Error::Config(
                "pruning needs at least one terminal state".into(),
            ));
        }
        let states = b.list(
            q.terminal_states
                .iter()
                .map(|st| Value::Text(Some(st.clone()))),
        );
        let cut = b.push(self.ts(Some(q.older_than)));
        Ok(format!(
            "{} IN ({states}) AND {updated} < {cut}",
            self.q.status
        ))
    }

    async fn prune_once(&self, q: &PruneQuery) -> Result<u64> {
        let d = self.db.dialect();
        let s = &self.q;
        let archive = match (&q.mode, &self.map.archive) {
            (PruneMode::Delete, _) => None,
            (PruneMode::Archive, Some(a)) => Some(a.quoted(d)),
            (PruneMode::Archive, None) => {
                return Err(Error::Config(
                    "archive pruning needs an archive table in the job table mapping".into(),
                ));
            }
        };
        let mut tx = self.db.begin().await?;
        let mut b = Binds::new(d);
        let filter = self.prune_filter(q, &mut b)?;
        let limit = b.push(Value::Int(Some(i64::try_from(q.limit).unwrap_or(i64::MAX))));
        let key_kind = if self.map.key_kind == KeyKind::Integer {
            Kind::Int
        } else {
            Kind::Text
        };
        let ids: Vec<JobKey> = tx
            .fetch(
                &format!(
                    "SELECT {id} FROM {t} WHERE {filter} ORDER BY {id} LIMIT {limit}{lock}",
                    id = self.id_select(),
                    t = s.table,
                    lock = d.lock_rows()
                ),
                &b.values,
                &[key_kind],
            )
            .await?
            .into_iter()
            .filter_map(|mut r| match r.pop()? {
                Value::Int(Some(i)) => Some(JobKey::Int(i)),
                Value::Text(Some(t)) => Some(JobKey::Text(t)),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        for chunk in ids.chunks(CHUNK) {
            let mut b = Binds::new(d);
            let list = chunk
                .iter()
                .map(|k| self.id_param(&mut b, k))
                .collect::<Result<Vec<_>>>()?
                .join(", ");
            if let Some(archive) = &archive {
                let cols = self
                    .db
                    .columns(&self.map.table)
                    .await?
                    .unwrap_or_default()
                    .iter()
                    .map(|c| Ident::new(c, "job table column").map(|i| i.quoted(d)))
                    .collect::<Result<Vec<_>>>()?
                    .join(", ");
                tx.execute(
                    &format!(
                        "INSERT INTO {archive} ({cols}) SELECT {cols} FROM {t} WHERE {id} IN ({list})",
                        t = s.table,
                        id = s.id
                    ),
                    &b.values,
                )
                .await?;
            }
            tx.execute(
                &format!(
                    "DELETE FROM {t} WHERE {id} IN ({list})",
                    t = s.table,
                    id = s.id
                ),
                &b.values,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }
}

#[async_trait]
impl LeaseStore for SqlLeaseStore {
    async fn read_candidates(&self, query: CandidateQuery) -> recon_core::Result<Vec<JobRow>> {
        Ok(self.read(&query).await?)
    }

    async fn apply(
        &self,
        repairs: &[Repair],
        now: DateTime<Utc>,
    ) -> recon_core::Result<ApplyOutcome> {
        if repairs.is_empty() {
            return Ok(ApplyOutcome::default());
        }
        let processing = &repairs[0].expected.status;
        if repairs.iter().any(|r| &r.expected.status != processing) {
            return Err(recon_core::Error::invalid_input(
                "one batch of repairs must come from one processing state",
            ));
        }
        Ok(with_deadlock_retry(|| self.apply_once(repairs, now)).await?)
    }

    async fn database_now(&self) -> recon_core::Result<DateTime<Utc>> {
        Ok(self.db.now().await?)
    }
}

#[async_trait]
impl PruneStore for SqlLeaseStore {
    async fn prune_batch(&self, query: PruneQuery) -> recon_core::Result<u64> {
        Ok(with_deadlock_retry(|| self.prune_once(&query)).await?)
    }

    async fn count_prunable(&self, query: PruneQuery) -> recon_core::Result<u64> {
        let mut b = Binds::new(self.db.dialect());
        let filter = self.prune_filter(&query, &mut b)?;
        let rows = self
            .db
            .fetch(
                &format!("SELECT COUNT(*) FROM {} WHERE {filter}", self.q.table),
                &b.values,
                &[Kind::Int],
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r[0].clone().int())
            .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }
}
