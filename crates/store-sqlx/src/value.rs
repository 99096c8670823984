//! Bound values and decoded cells, shared by every backend.

use chrono::{DateTime, TimeZone, Utc};

/// A value bound to a statement, or read from a row. Always typed, also when NULL, so that
/// PostgreSQL knows the parameter's type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Ts(Option<DateTime<Utc>>),
    Float(Option<f64>),
    /// Binary data (`BLOB` / `BYTEA` / `BINARY`), e.g. a 32-byte fingerprint.
    Bytes(Option<Vec<u8>>),
    /// A boolean, bound as the backend's boolean (PostgreSQL `boolean`; SQLite and MySQL
    /// store 0/1). Read back with [`Kind::Bool`].
    Bool(Option<bool>),
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    /// A whole column of a batch as one parameter (`unnest($1::bigint[], …)`). PostgreSQL
    /// only: binding it elsewhere is an error, and only PostgreSQL code paths build it.
    Array(Array),
}

/// A typed array parameter.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) enum Array {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Ts(Vec<Option<DateTime<Utc>>>),
    /// `bytea[]` (e.g. a batch of 32-byte fingerprints).
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Value {
    /// The one cell of a one-row, one-column answer (`None` for no row).
    pub(crate) fn single(rows: Vec<Vec<Value>>) -> Option<Value> {
        rows.into_iter().next()?.pop()
    }

    pub(crate) fn int(self) -> Option<i64> {
        match self {
            Value::Int(v) => v,
            _ => None,
        }
    }

    pub(crate) fn text(self) -> Option<String> {
        match self {
            Value::Text(v) => v,
            Value::Int(v) => v.map(|i| i.to_string()),
            _ => None,
        }
    }

    pub(crate) fn ts(self) -> Option<DateTime<Utc>> {
        match self {
            Value::Ts(v) => v,
            _ => None,
        }
    }

    /// The bytes of a binary cell.
    pub(crate) fn bytes(self) -> Option<Vec<u8>> {
        match self {
            Value::Bytes(v) => v,
            _ => None,
        }
    }

    pub(crate) fn float(self) -> Option<f64> {
        match self {
            Value::Float(v) => v,
            Value::Int(v) => v.map(|i| i as f64),
            _ => None,
        }
    }
}

/// How to decode one selected column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Text,
    /// A timestamp; on SQLite stored per the format, elsewhere native.
    Ts(crate::TimestampFormat),
    Float,
    /// A boolean: a native `boolean`, or any integer (non-zero is true).
    Bool,
    /// Binary data, decoded as `Vec<u8>`.
    Bytes,
}

/// Milliseconds since the epoch → UTC, rejecting out-of-range values instead of panicking.
pub(crate) fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}
