//! `queue-rehydrate`'s store traits on SQL: [`SqlSourceStore`] and [`SqlEntitySource`] over
//! host tables described by a [`TableMapping`], [`SqlJobQueue`] over recon's own
//! `recon_queued_jobs` table, and [`SqlMessageStore`] over the host's messages table.
//!
//! Shared rules: identifiers come only from validated [`Ident`]s / [`TableName`]s and are
//! quoted; every value is bound. Reads page by key (`key > ? ORDER BY key LIMIT ?`, never
//! OFFSET). Writes run in bounded batches, one transaction per batch, guarded: the rows of a
//! batch are selected with `FOR UPDATE SKIP LOCKED` (PostgreSQL, MariaDB/MySQL) or under
//! SQLite's `BEGIN IMMEDIATE`, and the `UPDATE` re-checks its condition. Text compares exactly:
//! on MariaDB/MySQL, whose default collations ignore case (and trailing spaces), text
//! comparisons are made on the UTF-8 bytes (see `crate::sql::exact_eq`).

mod jobs;
mod messages;
mod predicate;
mod source;

use std::collections::HashMap;

use queue_rehydrate::{ColumnType, Key, KeyType, Row, TableMapping};

pub(super) use crate::sql::{exact_eq, exact_in, mysql_bytes};
use crate::value::{Kind, Value};
use crate::{Db, Dialect, Error, Ident, TableName, TimestampFormat};

pub use jobs::{JobState, OrphanSweep, QUEUED_JOBS_TABLE, SqlJobQueue, SqlOrphanSweeper};
pub use messages::{MessageTable, MessageTableBuilder, SqlMessageStore};
pub use source::{SqlEntitySource, SqlSourceStore};

type QError = queue_rehydrate::Error;

impl From<Error> for queue_rehydrate::Error {
    /// Configuration errors stay configuration errors; database errors keep their cause and
    /// their transient flag (so retry logic never parses messages).
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidIdentifier { .. } | Error::Config(_) | Error::UnsupportedUrl { .. } => {
                QError::Config(e.to_string())
            }
            other if other.is_transient() => QError::transient("database", other),
            other => QError::permanent("database", other),
        }
    }
}

/// One column of a mapped host table, quoted for the backend.
#[derive(Clone, Debug)]
struct MappedColumn {
    name: String,
    quoted: String,
    ty: ColumnType,
    format: TimestampFormat,
}

/// A [`TableMapping`] turned into validated, quoted identifiers for one dialect.
#[derive(Clone, Debug)]
struct Mapped {
    d: Dialect,
    name: TableName,
    table: String,
    key_type: KeyType,
    /// Every mapped column, the key column first.
    columns: Vec<MappedColumn>,
}

/// Per-column SQLite timestamp formats: `(qualified table, column) → format`.
type Formats = HashMap<(String, String), TimestampFormat>;

impl Mapped {
    fn new(
        d: Dialect,
        table: &TableMapping,
        default: TimestampFormat,
        formats: &Formats,
    ) -> crate::Result<Self> {
        let name = TableName::new(&table.qualified_name(), "mapped table")?;
        let columns = table
            .columns()
            .iter()
            .map(|c| {
                let ident = Ident::new(&c.name, "mapped column")?;
                let format = formats
                    .get(&(table.qualified_name(), c.name.clone()))
                    .copied()
                    .unwrap_or(default);
                Ok(MappedColumn {
                    name: c.name.clone(),
                    quoted: ident.quoted(d),
                    ty: c.ty,
                    format,
                })
            })
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(Self {
            d,
            table: name.quoted(d),
            name,
            key_type: table.key_type(),
            columns,
        })
    }

    fn key(&self) -> &MappedColumn {
        &self.columns[0]
    }

    fn column(&self, name: &str) -> Result<&MappedColumn, QError> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| QError::UnknownColumn {
                table: self.name.to_string(),
                column: name.to_owned(),
            })
    }

    fn idents(&self) -> crate::Result<Vec<Ident>> {
        self.columns
            .iter()
            .map(|c| Ident::new(&c.name, "mapped column"))
            .collect()
    }

    /// The select list (timestamps as `timestamptz` on PostgreSQL, whatever the column's
    /// exact type) and how to decode it.
    fn select(&self) -> (String, Vec<Kind>) {
        let list = self
            .columns
            .iter()
            .map(|c| match (self.d, c.ty) {
                (Dialect::Postgres, ColumnType::Timestamp) => {
                    format!("CAST({} AS timestamptz)", c.quoted)
                }
                _ => c.quoted.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let kinds = self.columns.iter().map(kind_of).collect();
        (list, kinds)
    }

    /// Decode one selected row into a [`Row`] carrying every mapped column.
    fn decode(&self, cells: Vec<Value>) -> crate::Result<Row> {
        let mut values = std::collections::BTreeMap::new();
        for (c, cell) in self.columns.iter().zip(cells) {
            values.insert(c.name.clone(), to_q(cell));
        }
        let key_value = values
            .get(&self.key().name)
            .cloned()
            .unwrap_or(queue_rehydrate::Value::Null);
        let key = Key::from_value(&key_value, self.key_type).map_err(|reason| Error::BadValue {
            table: self.name.to_string(),
            column: self.key().name.clone(),
            key: key_value.to_string(),
            reason,
        })?;
        Ok(Row::new(key, values))
    }

    /// A key as a bound value; a key of the other type is [`QError::TypeMismatch`].
    fn key_value(&self, k: &Key) -> Result<Value, QError> {
        match (self.key_type, k) {
            (KeyType::Integer, Key::Int(i)) => Ok(Value::Int(Some(*i))),
            (KeyType::Text, Key::Text(s)) => Ok(Value::Text(Some(s.clone()))),
            (expected, k) => Err(QError::TypeMismatch {
                column: self.key().name.clone(),
                expected: expected.column_type(),
                found: format!("the {} key {k}", k.key_type()),
            }),
        }
    }
}

fn kind_of(c: &MappedColumn) -> Kind {
    match c.ty {
        ColumnType::Text => Kind::Text,
        ColumnType::Integer => Kind::Int,
        ColumnType::Boolean => Kind::Bool,
        ColumnType::Timestamp => Kind::Ts(c.format),
    }
}

/// A decoded cell as a `queue-rehydrate` value.
fn to_q(v: Value) -> queue_rehydrate::Value {
    use queue_rehydrate::Value as Q;
    match v {
        Value::Int(Some(i)) => Q::Int(i),
        Value::Text(Some(s)) => Q::Text(s),
        Value::Ts(Some(t)) => Q::Timestamp(t),
        Value::Bool(Some(b)) => Q::Bool(b),
        Value::Float(Some(f)) => Q::Int(f as i64),
        _ => Q::Null,
    }
}

/// `v` bound for column `c` (NULL typed as the column; SQLite timestamps in its format).
fn bind_value(d: Dialect, c: &MappedColumn, v: &queue_rehydrate::Value) -> Value {
    use queue_rehydrate::Value as Q;
    match v {
        Q::Null => match c.ty {
            ColumnType::Text => Value::Text(None),
            ColumnType::Integer => Value::Int(None),
            ColumnType::Boolean => Value::Bool(None),
            ColumnType::Timestamp => c.format.value(d, None),
        },
        Q::Int(i) => Value::Int(Some(*i)),
        Q::Text(s) => Value::Text(Some(s.clone())),
        Q::Bool(b) => Value::Bool(Some(*b)),
        Q::Timestamp(t) => c.format.value(d, Some(*t)),
    }
}

fn limit_value(n: usize) -> Value {
    Value::Int(Some(i64::try_from(n).unwrap_or(i64::MAX)))
}

fn count_of(rows: &[Vec<Value>]) -> u64 {
    rows.first()
        .and_then(|r| r.first().cloned())
        .and_then(Value::int)
        .map_or(0, |n| u64::try_from(n).unwrap_or(0))
}

/// A store error with what was being done.
fn store_err(what: impl Into<String>) -> impl FnOnce(Error) -> QError {
    let what = what.into();
    move |e| match e {
        Error::InvalidIdentifier { .. } | Error::Config(_) | Error::UnsupportedUrl { .. } => {
            QError::Config(e.to_string())
        }
        other if other.is_transient() => QError::transient(what, other),
        other => QError::permanent(what, other),
    }
}

/// The shared handle of the stores: the pool and the SQLite timestamp formats.
#[derive(Clone, Debug)]
struct Base {
    db: Db,
    timestamps: TimestampFormat,
    formats: std::sync::Arc<Formats>,
}

impl Base {
    fn new(db: &Db) -> Self {
        Self {
            db: db.clone(),
            timestamps: TimestampFormat::default(),
            formats: Default::default(),
        }
    }

    fn mapped(&self, table: &TableMapping) -> Result<Mapped, QError> {
        Mapped::new(self.db.dialect(), table, self.timestamps, &self.formats).map_err(QError::from)
    }
}
