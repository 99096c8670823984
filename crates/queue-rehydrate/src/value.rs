//! Typed values, keys and rows of mapped tables.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The declared type of a mapped column.
///
/// Each maps to one SQL type family per backend (see `docs/queue-rehydrate.md`):
/// text → `TEXT`/`VARCHAR`, integer → `INTEGER`/`BIGINT`, boolean → `BOOLEAN`/`TINYINT(1)`,
/// timestamp → a UTC timestamp (`TIMESTAMPTZ`, `DATETIME`, or SQLite text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// Text, compared exactly (byte for byte).
    Text,
    /// A 64-bit signed integer.
    Integer,
    /// A boolean.
    Boolean,
    /// A point in time, UTC.
    Timestamp,
}

impl ColumnType {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::Timestamp => "timestamp",
        }
    }

    /// Whether `<`, `<=`, `>` and `>=` are allowed on columns of this type.
    ///
    /// Only integers and timestamps: the order of text depends on the database's collation
    /// (and MySQL's default collations ignore case), so a predicate ordering text would not
    /// mean the same on every backend.
    pub const fn is_ordered(self) -> bool {
        matches!(self, Self::Integer | Self::Timestamp)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type of a key column: the column keyset pagination orders by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// Integer keys.
    Integer,
    /// Text keys.
    Text,
}

impl KeyType {
    /// The column type of keys of this type.
    pub const fn column_type(self) -> ColumnType {
        match self {
            Self::Integer => ColumnType::Integer,
            Self::Text => ColumnType::Text,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.column_type().as_str())
    }
}

/// A value of a mapped column, or NULL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// A UTC timestamp.
    Timestamp(DateTime<Utc>),
}

impl Value {
    /// The column type this value belongs to; `None` for NULL (which fits every type).
    pub const fn column_type(&self) -> Option<ColumnType> {
        match self {
            Self::Null => None,
            Self::Int(_) => Some(ColumnType::Integer),
            Self::Text(_) => Some(ColumnType::Text),
            Self::Bool(_) => Some(ColumnType::Boolean),
            Self::Timestamp(_) => Some(ColumnType::Timestamp),
        }
    }

    /// Whether this is NULL.
    pub const fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The type's name for error messages: `integer`, `text`, ..., or `NULL`.
    pub fn type_name(&self) -> &'static str {
        self.column_type().map_or("NULL", ColumnType::as_str)
    }

    /// Check that the value may be stored in a column of type `ty` (NULL always may).
    pub fn check_type(&self, column: &str, ty: ColumnType) -> Result<()> {
        match self.column_type() {
            None => Ok(()),
            Some(t) if t == ty => Ok(()),
            Some(t) => Err(Error::TypeMismatch {
                column: column.to_owned(),
                expected: ty,
                found: t.as_str().to_owned(),
            }),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("NULL"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Text(s) => write!(f, "{s:?}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Timestamp(t) => write!(f, "{}", t.to_rfc3339()),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Self::Int(v.into())
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<DateTime<Utc>> for Value {
    fn from(v: DateTime<Utc>) -> Self {
        Self::Timestamp(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

impl From<Key> for Value {
    fn from(k: Key) -> Self {
        match k {
            Key::Int(i) => Self::Int(i),
            Key::Text(s) => Self::Text(s),
        }
    }
}

/// The key of a row: the value of its table's key column. Keyset pagination passes the last
/// key of a batch back as `after`.
///
/// The order of `Key` (integers by value, text byte by byte) is the order of the in-memory
/// stores. SQL stores page in the database's own order of the key column; callers never
/// compare keys from two different stores.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    /// An integer key.
    Int(i64),
    /// A text key.
    Text(String),
}

impl Key {
    /// The key's type.
    pub const fn key_type(&self) -> KeyType {
        match self {
            Self::Int(_) => KeyType::Integer,
            Self::Text(_) => KeyType::Text,
        }
    }

    /// Read a key of type `expected` from a stored value.
    ///
    /// Errors (as text, for a per-item report): NULL (no key), a value of another type, or
    /// empty text.
    pub fn from_value(v: &Value, expected: KeyType) -> std::result::Result<Key, String> {
        match (v, expected) {
            (Value::Null, _) => Err("no entity key (NULL or missing)".to_owned()),
            (Value::Int(i), KeyType::Integer) => Ok(Key::Int(*i)),
            (Value::Text(s), KeyType::Text) if s.is_empty() => {
                Err("the entity key is empty text".to_owned())
            }
            (Value::Text(s), KeyType::Text) => Ok(Key::Text(s.clone())),
            (other, expected) => Err(format!(
                "the entity key {other} is {}, but keys are {expected}",
                other.type_name()
            )),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Text(s) => f.write_str(s),
        }
    }
}

impl From<i64> for Key {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<&str> for Key {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<String> for Key {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

static NULL: Value = Value::Null;

/// One row of a mapped table: its key and the values of its mapped columns (the key column
/// included). A column that is absent reads as NULL.
///
/// Build checked rows with [`TableMapping::row`](crate::TableMapping::row); stores that read
/// rows the mapping already describes may use [`Row::new`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    key: Key,
    values: BTreeMap<String, Value>,
}

impl Row {
    /// A row with `key` and `values` (which should contain the key column too, so that
    /// predicates on the key column see it). Not checked against a mapping.
    pub fn new(key: Key, values: BTreeMap<String, Value>) -> Self {
        Self { key, values }
    }

    /// The row's key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The value of `column`; NULL when the row has no such column.
    pub fn get(&self, column: &str) -> &Value {
        self.values.get(column).unwrap_or(&NULL)
    }

    /// Set `column` to `value` (no type check).
    pub fn set(&mut self, column: &str, value: Value) {
        self.values.insert(column.to_owned(), value);
    }

    /// All values, by column name.
    pub fn values(&self) -> &BTreeMap<String, Value> {
        &self.values
    }

    fn typed<'a, T>(
        &'a self,
        column: &str,
        expected: ColumnType,
        pick: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        let v = self.get(column);
        if v.is_null() {
            return Ok(None);
        }
        pick(v).map(Some).ok_or_else(|| Error::TypeMismatch {
            column: column.to_owned(),
            expected,
            found: v.type_name().to_owned(),
        })
    }

    /// `column` as text: `Ok(None)` for NULL, an error for another type.
    pub fn text(&self, column: &str) -> Result<Option<&str>> {
        self.typed(column, ColumnType::Text, |v| match v {
            Value::Text(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// `column` as an integer: `Ok(None)` for NULL, an error for another type.
    pub fn int(&self, column: &str) -> Result<Option<i64>> {
        self.typed(column, ColumnType::Integer, |v| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        })
    }

    /// `column` as a boolean: `Ok(None)` for NULL, an error for another type.
    pub fn bool(&self, column: &str) -> Result<Option<bool>> {
        self.typed(column, ColumnType::Boolean, |v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })
    }

    /// `column` as a timestamp: `Ok(None)` for NULL, an error for another type.
    pub fn timestamp(&self, column: &str) -> Result<Option<DateTime<Utc>>> {
        self.typed(column, ColumnType::Timestamp, |v| match v {
            Value::Timestamp(t) => Some(*t),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_values_are_strict() {
        assert_eq!(
            Key::from_value(&Value::Int(7), KeyType::Integer),
            Ok(Key::Int(7))
        );
        assert_eq!(
            Key::from_value(&"res-1".into(), KeyType::Text),
            Ok(Key::from("res-1"))
        );
        let no_key = Key::from_value(&Value::Null, KeyType::Text).unwrap_err();
        assert!(no_key.contains("no entity key"), "{no_key}");
        let wrong = Key::from_value(&"12".into(), KeyType::Integer).unwrap_err();
        assert!(
            wrong.contains("is text, but keys are integer"),
            "wrong: {wrong}"
        );
        assert!(Key::from_value(&"".into(), KeyType::Text).is_err());
        assert!(Key::from_value(&Value::Bool(true), KeyType::Text).is_err());
    }

    #[test]
    fn typed_getters_read_null_as_none_and_reject_other_types() {
        let mut row = Row::new(Key::from("a"), BTreeMap::new());
        row.set("n", Value::Int(3));
        row.set("t", Value::Null);
        assert_eq!(row.int("n").unwrap(), Some(3));
        assert_eq!(row.timestamp("t").unwrap(), None);
        assert_eq!(row.text("missing").unwrap(), None);
        let e = row.text("n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "column `n` is declared text, but the value is integer"
        );
    }
}
