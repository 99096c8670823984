//! [`SqlMessageStore`]: message recovery and operator operations on the host's messages table.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use queue_rehydrate::{
    FailedMessageStore, Key, KeyType, Message, MessageStatus, MessageStore, Result as QResult,
    StatusCounts,
};

use super::{QError, count_of, exact_eq, limit_value, store_err};
use crate::sql::{Binds, CHUNK, with_deadlock_retry};
use crate::value::{Kind, Value};
use crate::{Db, Dialect, Error, Ident, Result, TableName, TimestampFormat};

const STATUSES: [MessageStatus; 5] = [
    MessageStatus::Pending,
    MessageStatus::Processing,
    MessageStatus::Sent,
    MessageStatus::Failed,
    MessageStatus::Archived,
];

/// The host's messages table, mapped. Names are validated at [`MessageTableBuilder::build`]
/// and quoted whenever written into SQL. Defaults: key `id` (integer), `status`, `session`,
/// `attempts`, `last_attempt_at`, `next_attempt_at`, `failed_at`, `last_error`; status values
/// `pending`, `processing`, `sent`, `failed`, `archived`.
#[derive(Clone, Debug)]
pub struct MessageTable {
    table: TableName,
    key_type: KeyType,
    /// id, status, session, attempts, last_attempt_at, next_attempt_at, failed_at, last_error
    cols: [Ident; 8],
    archived_at: Option<Ident>,
    statuses: [String; 5],
    timestamps: TimestampFormat,
}

/// Builds a [`MessageTable`]; see [`MessageTable::builder`].
#[derive(Clone, Debug)]
pub struct MessageTableBuilder {
    table: String,
    key_type: KeyType,
    cols: [String; 8],
    archived_at: Option<String>,
    statuses: [String; 5],
    timestamps: TimestampFormat,
}

const ID: usize = 0;
const STATUS: usize = 1;
const SESSION: usize = 2;
const ATTEMPTS: usize = 3;
const LAST_ATTEMPT: usize = 4;
const NEXT_ATTEMPT: usize = 5;
const FAILED_AT: usize = 6;
const LAST_ERROR: usize = 7;

const WHAT: [&str; 8] = [
    "message id column",
    "message status column",
    "message session column",
    "message attempts column",
    "message last-attempt column",
    "message next-attempt column",
    "message failed-at column",
    "message last-error column",
];

macro_rules! column_setter {
    ($(#[$doc:meta])* $name:ident, $i:expr) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, column: &str) -> Self {
            self.cols[$i] = column.to_owned();
            self
        }
    };
}

impl MessageTable {
    /// Map the table `table` (`name` or `schema.name`).
    pub fn builder(table: &str) -> MessageTableBuilder {
        MessageTableBuilder {
            table: table.to_owned(),
            key_type: KeyType::Integer,
            cols: [
                "id",
                "status",
                "session",
                "attempts",
                "last_attempt_at",
                "next_attempt_at",
                "failed_at",
                "last_error",
            ]
            .map(str::to_owned),
            archived_at: None,
            statuses: STATUSES.map(|s| s.as_str().to_owned()),
            timestamps: TimestampFormat::default(),
        }
    }

    /// The mapped table.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// The stored value of `status`.
    pub fn status_value(&self, status: MessageStatus) -> &str {
        let i = STATUSES.iter().position(|s| *s == status).unwrap_or(0);
        &self.statuses[i]
    }

    fn columns(&self) -> Vec<&Ident> {
        self.cols.iter().chain(self.archived_at.iter()).collect()
    }
}

impl MessageTableBuilder {
    /// The key column and its type (default `id`, integer).
    #[must_use]
    pub fn id(mut self, column: &str, key_type: KeyType) -> Self {
        self.cols[ID] = column.to_owned();
        self.key_type = key_type;
        self
    }
    column_setter!(
        /// The status column (default `status`).
        status,
        STATUS
    );
    column_setter!(
        /// The sender session column (default `session`), cleared when a message is released.
        session,
        SESSION
    );
    column_setter!(
        /// The attempts column (default `attempts`).
        attempts,
        ATTEMPTS
    );
    column_setter!(
        /// When the message was last claimed or tried (default `last_attempt_at`).
        last_attempt_at,
        LAST_ATTEMPT
    );
    column_setter!(
        /// When the next attempt is due (default `next_attempt_at`).
        next_attempt_at,
        NEXT_ATTEMPT
    );
    column_setter!(
        /// When the message failed (default `failed_at`).
        failed_at,
        FAILED_AT
    );
    column_setter!(
        /// The last error (default `last_error`).
        last_error,
        LAST_ERROR
    );

    /// A column stamped with the time a message is archived (none by default).
    #[must_use]
    pub fn archived_at(mut self, column: &str) -> Self {
        self.archived_at = Some(column.to_owned());
        self
    }

    /// The stored value of `status` (default its lower-case name), compared exactly.
    #[must_use]
    pub fn status_value(mut self, status: MessageStatus, value: &str) -> Self {
        if let Some(i) = STATUSES.iter().position(|s| *s == status) {
            self.statuses[i] = value.to_owned();
        }
        self
    }

    /// How the SQLite table stores timestamps (default RFC 3339 text).
    #[must_use]
    pub fn timestamps(mut self, format: TimestampFormat) -> Self {
        self.timestamps = format;
        self
    }

    /// Validate every name and status value. Errors name the offending setting.
    pub fn build(self) -> Result<MessageTable> {
        let table = TableName::new(&self.table, "message table")?;
        let mut cols = Vec::with_capacity(8);
        for (c, what) in self.cols.iter().zip(WHAT) {
            cols.push(Ident::new(c, what)?);
        }
        let cols: [Ident; 8] = cols
            .try_into()
            .map_err(|_| Error::Config("eight message columns".into()))?;
        let archived_at = self
            .archived_at
            .as_deref()
            .map(|c| Ident::new(c, "message archived-at column"))
            .transpose()?;
        let all: Vec<&Ident> = cols.iter().chain(archived_at.iter()).collect();
        for (i, c) in all.iter().enumerate() {
            if all[..i]
                .iter()
                .any(|p| p.as_str().eq_ignore_ascii_case(c.as_str()))
            {
                return Err(Error::Config(format!(
                    "column `{c}` is mapped twice in the message table mapping"
                )));
            }
        }
        for (i, v) in self.statuses.iter().enumerate() {
            if v.is_empty() || self.statuses[..i].contains(v) {
                return Err(Error::Config(format!(
                    "status value {v:?} is empty or used for two statuses"
                )));
            }
        }
        Ok(MessageTable {
            table,
            key_type: self.key_type,
            cols,
            archived_at,
            statuses: self.statuses,
            timestamps: self.timestamps,
        })
    }
}

/// [`MessageStore`] and [`FailedMessageStore`] on the host's messages table. Create it with
/// [`Db::message_store`]; call [`verify`](Self::verify) at startup.
///
/// Every write is bounded and guarded: `release_stuck` and `archive_failed_before` select up to
/// `limit` ids in one transaction (`ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED` on PostgreSQL
/// and MariaDB/MySQL, under `BEGIN IMMEDIATE` on SQLite) and update exactly those, re-checking
/// the status; two instances releasing at once therefore release each message once. The
/// operator operations update or delete `WHERE id IN (…) AND status = 'failed'`. Archiving
/// sets the archived status (and stamps the optional archived-at column): nothing is deleted
/// except by [`FailedMessageStore::delete_failed`]. Status values compare exactly (bytes on
/// MariaDB/MySQL).
#[derive(Clone, Debug)]
pub struct SqlMessageStore {
    db: Db,
    map: MessageTable,
    table: String,
    q: [String; 8],
    archived_at: Option<String>,
}

impl Db {
    /// Message recovery and operator operations over the host's messages table as mapped.
    pub fn message_store(&self, map: MessageTable) -> SqlMessageStore {
        let d = self.dialect();
        SqlMessageStore {
            db: self.clone(),
            table: map.table.quoted(d),
            q: map.cols.clone().map(|c| c.quoted(d)),
            archived_at: map.archived_at.as_ref().map(|c| c.quoted(d)),
            map,
        }
    }
}

impl SqlMessageStore {
    /// Check that the mapped table and columns exist; the error names what is missing.
    pub async fn verify(&self) -> Result<()> {
        self.db
            .verify_columns(&self.map.table, &self.map.columns())
            .await
    }

    fn d(&self) -> Dialect {
        self.db.dialect()
    }

    fn ts(&self, t: Option<DateTime<Utc>>) -> Value {
        self.map.timestamps.value(self.d(), t)
    }

    fn status(&self, s: MessageStatus) -> Value {
        Value::Text(Some(self.map.status_value(s).to_owned()))
    }

    /// `status = ?`, exactly.
    fn status_is(&self, b: &mut Binds, s: MessageStatus) -> String {
        exact_eq(self.d(), &self.q[STATUS], b, self.status(s))
    }

    fn key_value(&self, k: &Key) -> QResult<Value> {
        match (self.map.key_type, k) {
            (KeyType::Integer, Key::Int(i)) => Ok(Value::Int(Some(*i))),
            (KeyType::Text, Key::Text(s)) => Ok(Value::Text(Some(s.clone()))),
            (expected, k) => Err(QError::TypeMismatch {
                column: self.map.cols[ID].to_string(),
                expected: expected.column_type(),
                found: format!("the {} key {k}", k.key_type()),
            }),
        }
    }

    fn key_kind(&self) -> Kind {
        match self.map.key_type {
            KeyType::Integer => Kind::Int,
            KeyType::Text => Kind::Text,
        }
    }

    fn select_list(&self) -> (String, Vec<Kind>) {
        let ts = |c: &str| match self.d() {
            Dialect::Postgres => format!("CAST({c} AS timestamptz)"),
            _ => c.to_owned(),
        };
        let q = &self.q;
        let list = format!(
            "{}, {}, {}, {}, {}, {}, {}, {}",
            q[ID],
            q[STATUS],
            q[SESSION],
            q[ATTEMPTS],
            ts(&q[LAST_ATTEMPT]),
            ts(&q[NEXT_ATTEMPT]),
            ts(&q[FAILED_AT]),
            q[LAST_ERROR]
        );
        let t = Kind::Ts(self.map.timestamps);
        (
            list,
            vec![
                self.key_kind(),
                Kind::Text,
                Kind::Text,
                Kind::Int,
                t,
                t,
                t,
                Kind::Text,
            ],
        )
    }

    fn decode(&self, r: Vec<Value>) -> Result<Message> {
        let mut it = r.into_iter();
        let mut next = || it.next().unwrap_or(Value::Text(None));
        let id = match next() {
            Value::Int(Some(i)) => Key::Int(i),
            Value::Text(Some(s)) => Key::Text(s),
            _ => {
                return Err(self.bad("?", ID, "NULL key".into()));
            }
        };
        let status_text = next().text().unwrap_or_default();
        let status = STATUSES
            .into_iter()
            .find(|s| self.map.status_value(*s) == status_text)
            .ok_or_else(|| {
                self.bad(
                    &id.to_string(),
                    STATUS,
                    format!("unknown status {status_text:?}"),
                )
            })?;
        let session = next().text();
        let attempts = next().int().unwrap_or(0);
        let attempts = u32::try_from(attempts)
            .map_err(|_| self.bad(&id.to_string(), ATTEMPTS, format!("{attempts} attempts")))?;
        Ok(Message {
            id,
            status,
            session,
            attempts,
            last_attempt_at: next().ts(),
            next_attempt_at: next().ts(),
            failed_at: next().ts(),
            last_error: next().text(),
        })
    }

    fn bad(&self, key: &str, col: usize, reason: String) -> Error {
        Error::BadValue {
            table: self.map.table.to_string(),
            column: self.map.cols[col].to_string(),
            key: key.to_owned(),
            reason,
        }
    }

    /// `WHERE` of the stuck messages.
    fn stuck_filter(&self, b: &mut Binds, claimed_before: Option<DateTime<Utc>>) -> String {
        let processing = self.status_is(b, MessageStatus::Processing);
        match claimed_before {
            None => processing,
            Some(t) => format!(
                "{processing} AND ({l} IS NULL OR {l} < {p})",
                l = self.q[LAST_ATTEMPT],
                p = b.push(self.ts(Some(t)))
            ),
        }
    }

    /// `WHERE` of the failed messages older than `cutoff`.
    fn old_failed_filter(&self, b: &mut Binds, cutoff: DateTime<Utc>) -> String {
        let failed = self.status_is(b, MessageStatus::Failed);
        format!(
            "{failed} AND {f} IS NOT NULL AND {f} < {p}",
            f = self.q[FAILED_AT],
            p = b.push(self.ts(Some(cutoff)))
        )
    }

    async fn count_where(&self, filter: String, values: Vec<Value>) -> Result<u64> {
        let rows = self
            .db
            .fetch(
                &format!("SELECT COUNT(*) FROM {} WHERE {filter}", self.table),
                &values,
                &[Kind::Int],
            )
            .await?;
        Ok(count_of(&rows))
    }

    /// In one transaction: lock up to `limit` ids matching `filter`, then update exactly those
    /// (re-checking `guard`); returns how many were updated.
    async fn update_locked(
        &self,
        filter: &(dyn Fn(&mut Binds) -> String + Sync),
        sets: &(dyn Fn(&mut Binds) -> String + Sync),
        guard: MessageStatus,
        limit: usize,
    ) -> Result<u64> {
        let d = self.d();
        let id = &self.q[ID];
        let mut tx = self.db.begin().await?;
        let mut b = Binds::new(d);
        let f = filter(&mut b);
        let lim = b.push(limit_value(limit.min(CHUNK)));
        let ids: Vec<Value> = tx
            .fetch(
                &format!(
                    "SELECT {id} FROM {t} WHERE {f} ORDER BY {id} LIMIT {lim}{lock}",
                    t = self.table,
                    lock = d.lock_rows()
                ),
                &b.values,
                &[self.key_kind()],
            )
            .await?
            .into_iter()
            .filter_map(|mut r| r.pop())
            .collect();
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let mut b = Binds::new(d);
        let s = sets(&mut b);
        let list = b.list(ids.iter().cloned());
        let g = self.status_is(&mut b, guard);
        let n = tx
            .execute(
                &format!(
                    "UPDATE {t} SET {s} WHERE {id} IN ({list}) AND {g}",
                    t = self.table
                ),
                &b.values,
            )
            .await?;
        tx.commit().await?;
        // the status changes, so changed rows are matched rows on every backend
        Ok(n)
    }

    /// Repeat [`update_locked`](Self::update_locked) in chunks of at most 2,000 until `limit`
    /// rows are done or none is left.
    async fn update_bounded(
        &self,
        filter: &(dyn Fn(&mut Binds) -> String + Sync),
        sets: &(dyn Fn(&mut Binds) -> String + Sync),
        guard: MessageStatus,
        limit: usize,
        what: &str,
    ) -> QResult<u64> {
        let mut done = 0_u64;
        while (done as usize) < limit {
            let want = (limit - done as usize).min(CHUNK);
            let n = with_deadlock_retry(|| self.update_locked(filter, sets, guard, want))
                .await
                .map_err(store_err(what))?;
            done += n;
            if (n as usize) < want {
                break;
            }
        }
        Ok(done)
    }

    /// One guarded statement per chunk of ids, in one transaction.
    async fn by_ids(
        &self,
        ids: &[Key],
        what: &str,
        stmt: &(dyn Fn(&mut Binds, &[Value]) -> String + Sync),
    ) -> QResult<u64> {
        let values = ids
            .iter()
            .map(|k| self.key_value(k))
            .collect::<QResult<Vec<_>>>()?;
        if values.is_empty() {
            return Ok(0);
        }
        let op = || async {
            let mut tx = self.db.begin().await?;
            let mut n = 0;
            for chunk in values.chunks(CHUNK) {
                let mut b = Binds::new(self.d());
                let sql = stmt(&mut b, chunk);
                n += tx.execute(&sql, &b.values).await?;
            }
            tx.commit().await?;
            Ok(n)
        };
        with_deadlock_retry(op).await.map_err(store_err(what))
    }
}

#[async_trait]
impl MessageStore for SqlMessageStore {
    async fn status_counts(&self) -> QResult<StatusCounts> {
        let mut b = Binds::new(self.d());
        let sums = STATUSES
            .iter()
            .map(|s| {
                let is = self.status_is(&mut b, *s);
                format!("COUNT(CASE WHEN {is} THEN 1 END)")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let rows = self
            .db
            .fetch(
                &format!("SELECT {sums} FROM {}", self.table),
                &b.values,
                &[Kind::Int; 5],
            )
            .await
            .map_err(store_err("count messages by status"))?;
        let r = rows.into_iter().next().unwrap_or_default();
        let n = |i: usize| {
            r.get(i)
                .cloned()
                .and_then(Value::int)
                .map_or(0, |v| u64::try_from(v).unwrap_or(0))
        };
        Ok(StatusCounts {
            pending: n(0),
            processing: n(1),
            sent: n(2),
            failed: n(3),
            archived: n(4),
        })
    }

    async fn count_stuck(&self, claimed_before: Option<DateTime<Utc>>) -> QResult<u64> {
        let mut b = Binds::new(self.d());
        let f = self.stuck_filter(&mut b, claimed_before);
        self.count_where(f, b.values)
            .await
            .map_err(store_err("count stuck messages"))
    }

    async fn release_stuck(
        &self,
        claimed_before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> QResult<u64> {
        let filter = |b: &mut Binds| self.stuck_filter(b, claimed_before);
        let sets = |b: &mut Binds| {
            format!(
                "{} = {}, {} = NULL",
                self.q[STATUS],
                b.push(self.status(MessageStatus::Pending)),
                self.q[SESSION]
            )
        };
        self.update_bounded(
            &filter,
            &sets,
            MessageStatus::Processing,
            limit,
            "release stuck messages",
        )
        .await
    }

    async fn count_failed_before(&self, cutoff: DateTime<Utc>) -> QResult<u64> {
        let mut b = Binds::new(self.d());
        let f = self.old_failed_filter(&mut b, cutoff);
        self.count_where(f, b.values)
            .await
            .map_err(store_err("count old failed messages"))
    }

    async fn archive_failed_before(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> QResult<u64> {
        let filter = |b: &mut Binds| self.old_failed_filter(b, cutoff);
        let sets = |b: &mut Binds| self.archive_sets(b, now);
        self.update_bounded(
            &filter,
            &sets,
            MessageStatus::Failed,
            limit,
            "archive old failed messages",
        )
        .await
    }
}

impl SqlMessageStore {
    fn archive_sets(&self, b: &mut Binds, now: DateTime<Utc>) -> String {
        let mut s = format!(
            "{} = {}",
            self.q[STATUS],
            b.push(self.status(MessageStatus::Archived))
        );
        if let Some(c) = &self.archived_at {
            s.push_str(&format!(", {c} = {}", b.push(self.ts(Some(now)))));
        }
        s
    }

    fn failed_ids(&self, b: &mut Binds, ids: &[Value]) -> String {
        let list = b.list(ids.iter().cloned());
        let failed = self.status_is(b, MessageStatus::Failed);
        format!("{} IN ({list}) AND {failed}", self.q[ID])
    }
}

#[async_trait]
impl FailedMessageStore for SqlMessageStore {
    async fn list_failed(&self, after: Option<Key>, limit: usize) -> QResult<Vec<Message>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut b = Binds::new(self.d());
        let failed = self.status_is(&mut b, MessageStatus::Failed);
        let after_sql = match &after {
            Some(k) => format!(" AND {} > {}", self.q[ID], b.push(self.key_value(k)?)),
            None => String::new(),
        };
        let lim = b.push(limit_value(limit));
        let (cols, kinds) = self.select_list();
        let rows = self
            .db
            .fetch(
                &format!(
                    "SELECT {cols} FROM {t} WHERE {failed}{after_sql} ORDER BY {id} LIMIT {lim}",
                    t = self.table,
                    id = self.q[ID]
                ),
                &b.values,
                &kinds,
            )
            .await
            .map_err(store_err("list failed messages"))?;
        rows.into_iter()
            .map(|r| self.decode(r).map_err(QError::from))
            .collect()
    }

    async fn retry_failed(&self, ids: &[Key], _now: DateTime<Utc>) -> QResult<u64> {
        let stmt = |b: &mut Binds, chunk: &[Value]| {
            let pending = b.push(self.status(MessageStatus::Pending));
            let zero = b.push(Value::Int(Some(0)));
            let q = &self.q;
            let sets = format!(
                "{} = {pending}, {} = {zero}, {} = NULL, {} = NULL, {} = NULL",
                q[STATUS], q[ATTEMPTS], q[FAILED_AT], q[NEXT_ATTEMPT], q[SESSION]
            );
            let w = self.failed_ids(b, chunk);
            format!("UPDATE {} SET {sets} WHERE {w}", self.table)
        };
        self.by_ids(ids, "retry failed messages", &stmt).await
    }

    async fn delete_failed(&self, ids: &[Key]) -> QResult<u64> {
        let stmt = |b: &mut Binds, chunk: &[Value]| {
            let w = self.failed_ids(b, chunk);
            format!("DELETE FROM {} WHERE {w}", self.table)
        };
        self.by_ids(ids, "delete failed messages", &stmt).await
    }

    async fn archive_failed(&self, ids: &[Key], now: DateTime<Utc>) -> QResult<u64> {
        let stmt = |b: &mut Binds, chunk: &[Value]| {
            let sets = self.archive_sets(b, now);
            let w = self.failed_ids(b, chunk);
            format!("UPDATE {} SET {sets} WHERE {w}", self.table)
        };
        self.by_ids(ids, "archive failed messages", &stmt).await
    }
}
