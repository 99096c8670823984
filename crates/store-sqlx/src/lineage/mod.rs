//! `lineage-checksum`'s three stores on recon's own tables (migration `0003_lineage`):
//! [`SqlFingerprintStore`] (`recon_fingerprints`), [`SqlLineageStore`] (`recon_lineage`) and
//! [`SqlFailedRecordStore`] (`recon_failed_records`).
//!
//! They behave exactly like the crate's memory stores (the crate's conformance suite runs
//! against all of them): input is checked with the crate's `check_*` functions before anything
//! is sent; every write call is one transaction of set-based statements (one per chunk of
//! rows, never one per row); keys compare by bytes (`COLLATE "C"` on PostgreSQL,
//! `utf8mb4_nopad_bin` on MariaDB, `BINARY` on SQLite); timestamps are kept to the
//! microsecond; pages are keyset pages.

mod failed;
mod fingerprints;
mod records;

pub use failed::SqlFailedRecordStore;
pub use fingerprints::SqlFingerprintStore;
pub use records::SqlLineageStore;

use chrono::{DateTime, SecondsFormat, Utc};
use lineage_checksum::Fingerprint;
use lineage_checksum::limits::{self, store_time};

use crate::value::Value;
use crate::{Dialect, TimestampFormat};

/// Keys in one `IN (…)` list: a whole batch (the crate caps batches at `MAX_BATCH`), so a
/// lookup is one statement. Plus a few other parameters it stays far below SQLite's 32,766.
const KEYS_PER_STATEMENT: usize = limits::MAX_BATCH;
const _: () = assert!(KEYS_PER_STATEMENT + 16 <= 32_766);

/// How recon's own timestamp columns decode (fixed-width RFC 3339 text on SQLite, native
/// elsewhere).
const TS: crate::value::Kind = crate::value::Kind::Ts(TimestampFormat::Rfc3339);

impl From<crate::Error> for lineage_checksum::Error {
    /// Keeps the transient flag, so the crate's retry logic can ask the error.
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::InvalidIdentifier { .. }
            | crate::Error::Config(_)
            | crate::Error::UnsupportedUrl { .. } => lineage_checksum::Error::config(e.to_string()),
            other => {
                if other.is_transient() {
                    lineage_checksum::Error::transient("database", other)
                } else {
                    lineage_checksum::Error::permanent("database", other)
                }
            }
        }
    }
}

/// A timestamp as stored: microseconds, finer digits dropped.
fn ts(t: DateTime<Utc>) -> Value {
    Value::Ts(Some(store_time(t)))
}

fn opt_ts(t: Option<DateTime<Utc>>) -> Value {
    Value::Ts(t.map(store_time))
}

fn text(s: &str) -> Value {
    Value::Text(Some(s.to_owned()))
}

fn opt_text(s: Option<&str>) -> Value {
    Value::Text(s.map(str::to_owned))
}

fn int(n: impl TryInto<i64>) -> Value {
    Value::Int(Some(n.try_into().unwrap_or(i64::MAX)))
}

fn fingerprint_value(f: Option<&Fingerprint>) -> Value {
    Value::Bytes(f.map(|f| f.as_bytes().to_vec()))
}

/// A timestamp inside a JSON document (`stage_times`): fixed-width RFC 3339 in UTC, the same
/// text on every backend.
fn json_time(t: DateTime<Utc>) -> String {
    store_time(t).to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A value read back that cannot be used: a permanent error naming the row.
fn bad(table: &str, column: &str, key: &str, reason: impl Into<String>) -> lineage_checksum::Error {
    crate::Error::BadValue {
        table: table.into(),
        column: column.into(),
        key: key.into(),
        reason: reason.into(),
    }
    .into()
}

fn decode_fingerprint(
    table: &str,
    key: &str,
    v: Option<Vec<u8>>,
) -> lineage_checksum::Result<Option<Fingerprint>> {
    v.map(|b| {
        <[u8; 32]>::try_from(b.as_slice())
            .map(Fingerprint::from_bytes)
            .map_err(|_| {
                bad(
                    table,
                    "fingerprint",
                    key,
                    format!("{} bytes, not 32", b.len()),
                )
            })
    })
    .transpose()
}

fn count(v: Option<i64>) -> u64 {
    v.map_or(0, |n| u64::try_from(n).unwrap_or(0))
}

/// A JSON column as selected: text everywhere (PostgreSQL's `jsonb` is cast).
fn json_col(d: Dialect, column: &str) -> String {
    match d {
        Dialect::Postgres => format!("CAST({column} AS TEXT)"),
        Dialect::Sqlite | Dialect::MySql => column.to_owned(),
    }
}

/// A placeholder for JSON text written into a JSON column.
fn json_param(d: Dialect, placeholder: String) -> String {
    match d {
        Dialect::Postgres => format!("CAST({placeholder} AS jsonb)"),
        Dialect::Sqlite | Dialect::MySql => placeholder,
    }
}

fn parse_json(
    table: &str,
    column: &str,
    key: &str,
    v: Option<String>,
) -> lineage_checksum::Result<serde_json::Value> {
    let s = v.ok_or_else(|| bad(table, column, key, "NULL"))?;
    serde_json::from_str(&s).map_err(|e| bad(table, column, key, e.to_string()))
}

/// The set of `keys` for `record_key IN <set>`: a list of placeholders on SQLite and MySQL;
/// on PostgreSQL one JSON array (`SELECT json_array_elements_text(…)`), which is one bound
/// value instead of 10,000 and lets the planner probe the primary key per key (with a long
/// `IN` list it estimates enough rows to prefer a parallel scan of the whole table).
fn key_set(b: &mut crate::sql::Binds, d: Dialect, keys: &[String]) -> String {
    match d {
        Dialect::Postgres => {
            let json = serde_json::to_string(keys).unwrap_or_default();
            format!(
                "(SELECT json_array_elements_text(CAST({} AS json)))",
                b.push(Value::Text(Some(json)))
            )
        }
        Dialect::Sqlite | Dialect::MySql => format!("({})", b.list(keys.iter().map(|k| text(k)))),
    }
}

/// `record_key > ? OR (record_key = ? AND stage > ?)`: the keyset condition of pages ordered by
/// (key, stage), written out so that every backend can use the primary key.
fn after_key_stage(b: &mut crate::sql::Binds, key: &str, stage: &str) -> String {
    let k1 = b.push(text(key));
    let k2 = b.push(text(key));
    let s = b.push(text(stage));
    format!("(record_key > {k1} OR (record_key = {k2} AND stage > {s}))")
}
