//! The few places where the three SQL dialects differ. Everything else is shared.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::value::Value;

/// Which SQL dialect a [`Db`](crate::Db) speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// SQLite 3.35+ (bundled with sqlx).
    Sqlite,
    /// PostgreSQL 12+.
    Postgres,
    /// MySQL 8 / MariaDB 10.6+ (both have `SKIP LOCKED`).
    MySql,
}

impl Dialect {
    /// Placeholder for the `n`-th (1-based) bound value. SQLite's and MySQL's `?` are
    /// positional: a value used twice must be bound twice, and placeholders must appear in
    /// bind order. (SQLite's numbered `?NNN` would allow reuse, but its parser looks each one
    /// up linearly, which makes a 12,000-parameter batch statement quadratic.)
    pub(crate) fn param(self, n: usize) -> String {
        match self {
            Self::Postgres => format!("${n}"),
            Self::Sqlite | Self::MySql => "?".to_owned(),
        }
    }

    /// `FOR UPDATE SKIP LOCKED` where the database has row locks; SQLite serialises writers
    /// with `BEGIN IMMEDIATE` instead.
    pub(crate) fn lock_rows(self) -> &'static str {
        match self {
            Self::Postgres | Self::MySql => " FOR UPDATE SKIP LOCKED",
            Self::Sqlite => "",
        }
    }

    /// Name as used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
            Self::MySql => "MySQL/MariaDB",
        }
    }
}

/// How a host's SQLite column stores timestamps (PostgreSQL and MySQL have native types and
/// ignore this). Values recon writes into host columns use this format, and comparisons bind
/// `now` in it, so that comparisons stay correct and indexes stay usable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimestampFormat {
    /// RFC 3339 text as sqlx writes `DateTime<Utc>`: `2024-01-24T10:00:00+00:00`
    /// (fractional seconds only when non-zero, in groups of 3 digits).
    #[default]
    Rfc3339,
    /// SQLite's own text format, as `CURRENT_TIMESTAMP` writes it: `2024-01-24 10:00:00`
    /// (fractional seconds only when non-zero).
    SqliteText,
    /// Integer seconds since the Unix epoch.
    UnixSeconds,
    /// Integer milliseconds since the Unix epoch.
    UnixMillis,
}

impl TimestampFormat {
    /// `t` as a value to bind against a column of this format, in `dialect`.
    pub(crate) fn value(self, dialect: Dialect, t: Option<DateTime<Utc>>) -> Value {
        if dialect != Dialect::Sqlite {
            return Value::Ts(t);
        }
        match self {
            Self::Rfc3339 => {
                Value::Text(t.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, false)))
            }
            Self::SqliteText => {
                Value::Text(t.map(|t| t.format("%Y-%m-%d %H:%M:%S%.f").to_string()))
            }
            Self::UnixSeconds => Value::Int(t.map(|t| t.timestamp())),
            Self::UnixMillis => Value::Int(t.map(|t| t.timestamp_millis())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_timestamp_formats() {
        let t: DateTime<Utc> = "2024-01-24T10:00:00.5Z".parse().unwrap();
        let v = |f: TimestampFormat| f.value(Dialect::Sqlite, Some(t));
        assert_eq!(
            v(TimestampFormat::Rfc3339),
            Value::Text(Some("2024-01-24T10:00:00.500+00:00".into()))
        );
        assert_eq!(
            v(TimestampFormat::SqliteText),
            Value::Text(Some("2024-01-24 10:00:00.500".into()))
        );
        assert_eq!(
            v(TimestampFormat::UnixSeconds),
            Value::Int(Some(1_706_090_400))
        );
        assert_eq!(
            v(TimestampFormat::UnixMillis),
            Value::Int(Some(1_706_090_400_500))
        );
        assert_eq!(
            TimestampFormat::UnixMillis.value(Dialect::Postgres, Some(t)),
            Value::Ts(Some(t))
        );
        let whole: DateTime<Utc> = "2024-01-24T10:00:00Z".parse().unwrap();
        assert_eq!(
            TimestampFormat::SqliteText.value(Dialect::Sqlite, Some(whole)),
            Value::Text(Some("2024-01-24 10:00:00".into()))
        );
    }
}
