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
    /// A boolean, bound as the backend's boolean (PostgreSQL `boolean`; SQLite and MySQL
    /// store 0/1). Read back with [`Kind::Bool`].
    Bool(Option<bool>),
}

impl Value {
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

    #[allow(dead_code)] // for aggregate metrics (sums, averages) of the host-table stores
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
    #[allow(dead_code)] // for aggregate metrics (sums, averages) of the host-table stores
    Float,
    /// A boolean: a native `boolean`, or any integer (non-zero is true).
    Bool,
}

/// Milliseconds since the epoch → UTC, rejecting out-of-range values instead of panicking.
pub(crate) fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}
