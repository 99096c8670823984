//! [`SqlLineageStore`]: `LineageStore` on `recon_lineage`.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lineage_checksum::classify::check_keys;
use lineage_checksum::limits::{self, store_time};
use lineage_checksum::lineage::{
    LineageRecord, LineageStatus, LineageStore, LineageUpdate, QualityCounts, QualityQuery,
    StageStatusCount, StuckQuery, check_quality_query, check_stuck_query, check_updates,
};
use lineage_checksum::{Error, Result};

use super::{
    KEYS_PER_STATEMENT, TS, bad, count, decode_fingerprint, fingerprint_value, int, json_col,
    json_param, json_time, key_set, opt_text, parse_json, text, ts,
};
use crate::sql::{Binds, CHUNK, STATEMENT_BYTES, chunks_by_size, with_deadlock_retry};
use crate::value::{Kind, Value};
use crate::{Db, Dialect};

const TABLE: &str = "recon_lineage";
const KINDS: [Kind; 11] = [
    Kind::Text,
    Kind::Text,
    Kind::Text,
    TS,
    Kind::Text,
    Kind::Bytes,
    Kind::Int,
    Kind::Text,
    Kind::Text,
    TS,
    TS,
];

/// [`LineageStore`] on `recon_lineage`: one row per (pipeline, key). Create it with
/// [`Db::lineage`].
///
/// * `upsert`: in one transaction, one `INSERT … ON CONFLICT DO UPDATE … WHERE
///   recon_lineage.updated_at <= excluded.updated_at` per chunk of rows (PostgreSQL, SQLite;
///   `stage_times` merged with `||` / `json_patch`). MariaDB has no guarded upsert: it reads
///   the chunk's `updated_at` under `FOR UPDATE`, leaves stale reports out, and writes the rest
///   with `ON DUPLICATE KEY UPDATE col = IF(updated_at <= VALUES(updated_at), …)`
///   (`JSON_MERGE_PATCH` for `stage_times`);
/// * `get`: one `IN (…)` on the primary key; `stage_counts`: one `GROUP BY stage, status` on
///   the `(pipeline, stage, status)` index; `stuck`: a keyset page using `(pipeline, status,
///   stage_at)`; `quality_counts`: one aggregate over the metadata JSON.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use lineage_checksum::{LineageTracker, Stages};
/// let db = store_sqlx::Db::connect("sqlite:pipeline.sqlite").await?;
/// db.migrate().await?;
/// let stages = Stages::new(["extracted", "pii_removed", "embedding_generated", "loaded"])?;
/// let tracker = LineageTracker::new(Arc::new(db.lineage()), "cases", stages)?;
/// let gaps = tracker.gaps(10_000).await?; // one GROUP BY
/// println!("total gap {}", gaps.total_gap);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqlLineageStore {
    db: Db,
}

impl Db {
    /// `lineage-checksum`'s lineage store on this database (run [`Db::migrate`] first).
    pub fn lineage(&self) -> SqlLineageStore {
        SqlLineageStore { db: self.clone() }
    }
}

/// Bytes a row adds to a statement, roughly: enough to keep statements under
/// [`STATEMENT_BYTES`].
fn row_size(u: &LineageUpdate) -> usize {
    256 + u.key.len()
        + u.error
            .as_ref()
            .map_or(0, |e| e.len().min(limits::MAX_MESSAGE_BYTES))
        + u.metadata
            .as_ref()
            .map_or(0, |m| serde_json::to_string(m).map_or(0, |s| s.len()))
}

fn parse_stage_times(key: &str, v: Option<String>) -> Result<BTreeMap<String, DateTime<Utc>>> {
    let json = parse_json(TABLE, "stage_times", key, v)?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad(TABLE, "stage_times", key, "not a JSON object"))?;
    obj.iter()
        .map(|(stage, t)| {
            let t = t
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .ok_or_else(|| bad(TABLE, "stage_times", key, format!("`{stage}`: not a time")))?;
            Ok((stage.clone(), t.with_timezone(&Utc)))
        })
        .collect()
}

fn status(key: &str, v: Option<String>) -> Result<LineageStatus> {
    v.unwrap_or_default()
        .parse()
        .map_err(|e: Error| bad(TABLE, "status", key, e.to_string()))
}

fn decode(mut r: Vec<Value>) -> Result<LineageRecord> {
    let updated_at = r.pop().and_then(Value::ts);
    let created_at = r.pop().and_then(Value::ts);
    let metadata = r.pop().and_then(Value::text);
    let last_error = r.pop().and_then(Value::text);
    let retry_count = r.pop().and_then(Value::int);
    let fp = r.pop().and_then(Value::bytes);
    let stage_times = r.pop().and_then(Value::text);
    let stage_at = r.pop().and_then(Value::ts);
    let st = r.pop().and_then(Value::text);
    let stage = r.pop().and_then(Value::text).unwrap_or_default();
    let key = r.pop().and_then(Value::text).unwrap_or_default();
    let time =
        |v: Option<DateTime<Utc>>, column: &str| v.ok_or_else(|| bad(TABLE, column, &key, "NULL"));
    Ok(LineageRecord {
        status: status(&key, st)?,
        stage,
        stage_at: time(stage_at, "stage_at")?,
        stage_times: parse_stage_times(&key, stage_times)?,
        fingerprint: decode_fingerprint(TABLE, &key, fp)?,
        retry_count: retry_count.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        last_error,
        metadata: parse_json(TABLE, "metadata", &key, metadata)?,
        created_at: time(created_at, "created_at")?,
        updated_at: time(updated_at, "updated_at")?,
        key,
    })
}

impl SqlLineageStore {
    fn columns(&self) -> String {
        let d = self.db.dialect();
        format!(
            "record_key, stage, status, stage_at, {}, fingerprint, retry_count, last_error, {}, \
             created_at, updated_at",
            json_col(d, "stage_times"),
            json_col(d, "metadata")
        )
    }

    /// The upsert of one chunk whose rows all carry metadata (`with_metadata`) or none do.
    fn upsert_sql(
        &self,
        pipeline: &str,
        chunk: &[&LineageUpdate],
        with_metadata: bool,
    ) -> (String, Vec<Value>) {
        let d = self.db.dialect();
        let mut b = Binds::new(d);
        let rows = chunk
            .iter()
            .map(|u| {
                let at = store_time(u.at);
                let times = serde_json::json!({ &u.stage: json_time(at) }).to_string();
                let metadata = u
                    .metadata
                    .as_ref()
                    .map_or_else(|| "{}".to_owned(), serde_json::Value::to_string);
                let mut p = vec![
                    b.push(text(pipeline)),
                    b.push(text(&u.key)),
                    b.push(text(&u.stage)),
                    b.push(text(u.status.as_str())),
                    b.push(ts(at)),
                ];
                p.push(json_param(d, b.push(Value::Text(Some(times)))));
                p.push(b.push(fingerprint_value(u.fingerprint.as_ref())));
                p.push(b.push(int(u8::from(u.retry))));
                p.push(b.push(opt_text(
                    u.error.as_deref().map(limits::truncate_message).as_deref(),
                )));
                p.push(json_param(d, b.push(Value::Text(Some(metadata)))));
                p.push(b.push(ts(at)));
                p.push(b.push(ts(at)));
                format!("({})", p.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let on_conflict = match d {
            Dialect::Postgres | Dialect::Sqlite => {
                let merge = if d == Dialect::Postgres {
                    "recon_lineage.stage_times || excluded.stage_times"
                } else {
                    "json_patch(recon_lineage.stage_times, excluded.stage_times)"
                };
                let metadata = if with_metadata {
                    "metadata = excluded.metadata, "
                } else {
                    ""
                };
                format!(
                    "ON CONFLICT (pipeline, record_key) DO UPDATE SET stage = excluded.stage, \
                     status = excluded.status, stage_at = excluded.stage_at, \
                     stage_times = {merge}, \
                     fingerprint = COALESCE(excluded.fingerprint, recon_lineage.fingerprint), \
                     retry_count = recon_lineage.retry_count + excluded.retry_count, \
                     last_error = excluded.last_error, {metadata}updated_at = excluded.updated_at \
                     WHERE recon_lineage.updated_at <= excluded.updated_at"
                )
            }
            Dialect::MySql => {
                // Assignments run left to right and see the values already assigned, so the
                // guard column `updated_at` is assigned last.
                let guard = "updated_at <= VALUES(updated_at)";
                let mut sets = vec![
                    format!("stage = IF({guard}, VALUES(stage), stage)"),
                    format!("status = IF({guard}, VALUES(status), status)"),
                    format!("stage_at = IF({guard}, VALUES(stage_at), stage_at)"),
                    format!(
                        "stage_times = IF({guard}, JSON_MERGE_PATCH(stage_times, VALUES(stage_times)), stage_times)"
                    ),
                    format!(
                        "fingerprint = IF({guard}, COALESCE(VALUES(fingerprint), fingerprint), fingerprint)"
                    ),
                    format!(
                        "retry_count = IF({guard}, retry_count + VALUES(retry_count), retry_count)"
                    ),
                    format!("last_error = IF({guard}, VALUES(last_error), last_error)"),
                ];
                if with_metadata {
                    sets.push(format!(
                        "metadata = IF({guard}, VALUES(metadata), metadata)"
                    ));
                }
                sets.push(format!(
                    "updated_at = IF({guard}, VALUES(updated_at), updated_at)"
                ));
                format!("ON DUPLICATE KEY UPDATE {}", sets.join(", "))
            }
        };
        (
            format!(
                "INSERT INTO {TABLE} (pipeline, record_key, stage, status, stage_at, stage_times, \
                 fingerprint, retry_count, last_error, metadata, created_at, updated_at) \
                 VALUES {rows} {on_conflict}"
            ),
            b.values,
        )
    }

    async fn upsert_once(&self, pipeline: &str, updates: &[LineageUpdate]) -> crate::Result<u64> {
        let d = self.db.dialect();
        let mut tx = self.db.begin().await?;
        let mut n = 0;
        // Rows without metadata keep the stored object: they need an upsert that does not
        // assign it. One statement per kind and chunk.
        let (with, without): (Vec<&LineageUpdate>, Vec<&LineageUpdate>) =
            updates.iter().partition(|u| u.metadata.is_some());
        for (group, with_metadata) in [(with, true), (without, false)] {
            for chunk in chunks_by_size(&group, CHUNK, STATEMENT_BYTES, |u| row_size(u)) {
                let fresh: Vec<&LineageUpdate> = if d == Dialect::MySql {
                    // ON DUPLICATE KEY UPDATE counts a guarded no-op like an insert, so find the
                    // stale reports first, under lock, and leave them out.
                    let mut b = Binds::new(d);
                    let p = b.push(text(pipeline));
                    let list = b.list(chunk.iter().map(|u| text(&u.key)));
                    let stored: HashMap<String, DateTime<Utc>> = tx
                        .fetch(
                            &format!(
                                "SELECT record_key, updated_at FROM {TABLE} \
                                 WHERE pipeline = {p} AND record_key IN ({list}) FOR UPDATE"
                            ),
                            &b.values,
                            &[Kind::Text, TS],
                        )
                        .await?
                        .into_iter()
                        .filter_map(|mut r| {
                            let t = r.pop()?.ts()?;
                            Some((r.pop()?.text()?, t))
                        })
                        .collect();
                    chunk
                        .iter()
                        .copied()
                        .filter(|u| stored.get(&u.key).is_none_or(|t| *t <= store_time(u.at)))
                        .collect()
                } else {
                    chunk.to_vec()
                };
                if fresh.is_empty() {
                    continue;
                }
                let (sql, values) = self.upsert_sql(pipeline, &fresh, with_metadata);
                let affected = tx.execute(&sql, &values).await?;
                n += if d == Dialect::MySql {
                    fresh.len() as u64
                } else {
                    affected
                };
            }
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn select(&self, sql: &str, values: &[Value]) -> Result<Vec<LineageRecord>> {
        self.db
            .fetch(sql, values, &KINDS)
            .await?
            .into_iter()
            .map(decode)
            .collect()
    }
}

/// The SQL of "the metadata has a JSON number at `key`" and "that number", per dialect.
/// `key` is a checked identifier (ASCII letters, digits, `_`); it is still bound, as a JSON
/// path (`$."key"`) or a `jsonb` member name.
fn json_number(d: Dialect, b: &mut Binds, key: &str) -> (String, String) {
    match d {
        Dialect::Sqlite => {
            let path = format!("$.\"{key}\"");
            let p1 = b.push(text(&path));
            let p2 = b.push(text(&path));
            (
                format!("json_type(metadata, {p1}) IN ('integer', 'real')"),
                format!("json_extract(metadata, {p2})"),
            )
        }
        Dialect::Postgres => {
            let p1 = b.push(text(key));
            let p2 = b.push(text(key));
            (
                format!("jsonb_typeof(metadata -> {p1}) = 'number'"),
                format!("CAST(metadata ->> {p2} AS numeric)"),
            )
        }
        Dialect::MySql => {
            let path = format!("$.\"{key}\"");
            let p1 = b.push(text(&path));
            let p2 = b.push(text(&path));
            (
                format!(
                    "JSON_TYPE(JSON_EXTRACT(metadata, {p1})) IN ('INTEGER', 'DOUBLE', 'DECIMAL')"
                ),
                format!("CAST(JSON_EXTRACT(metadata, {p2}) AS DOUBLE)"),
            )
        }
    }
}

#[async_trait]
impl LineageStore for SqlLineageStore {
    async fn upsert(&self, pipeline: &str, updates: &[LineageUpdate]) -> Result<u64> {
        check_updates(pipeline, updates)?;
        if updates.is_empty() {
            return Ok(0);
        }
        Ok(with_deadlock_retry(|| self.upsert_once(pipeline, updates)).await?)
    }

    async fn get(&self, pipeline: &str, keys: &[String]) -> Result<Vec<LineageRecord>> {
        check_keys(pipeline, "get lineage", keys)?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(KEYS_PER_STATEMENT) {
            let d = self.db.dialect();
            let mut b = Binds::new(d);
            let p = b.push(text(pipeline));
            let set = key_set(&mut b, d, chunk);
            let sql = format!(
                "SELECT {} FROM {TABLE} WHERE pipeline = {p} AND record_key IN {set} \
                 ORDER BY record_key",
                self.columns()
            );
            out.extend(self.select(&sql, &b.values).await?);
        }
        Ok(out)
    }

    async fn stage_counts(&self, pipeline: &str) -> Result<Vec<StageStatusCount>> {
        limits::check_name("pipeline", pipeline)?;
        let mut b = Binds::new(self.db.dialect());
        let p = b.push(text(pipeline));
        let rows = self
            .db
            .fetch(
                &format!(
                    "SELECT stage, status, COUNT(*) FROM {TABLE} WHERE pipeline = {p} \
                     GROUP BY stage, status ORDER BY stage, status"
                ),
                &b.values,
                &[Kind::Text, Kind::Text, Kind::Int],
            )
            .await?;
        rows.into_iter()
            .map(|mut r| {
                let n = r.pop().and_then(Value::int);
                let st = r.pop().and_then(Value::text);
                let stage = r.pop().and_then(Value::text).unwrap_or_default();
                Ok(StageStatusCount {
                    status: status(&format!("(stage {stage})"), st)?,
                    stage,
                    count: count(n),
                })
            })
            .collect()
    }

    async fn stuck(&self, pipeline: &str, query: &StuckQuery) -> Result<Vec<LineageRecord>> {
        check_stuck_query(pipeline, query)?;
        let mut b = Binds::new(self.db.dialect());
        let mut sql = format!(
            "SELECT {} FROM {TABLE} WHERE pipeline = {} AND status = 'in_progress' \
             AND stage_at < {}",
            self.columns(),
            b.push(text(pipeline)),
            b.push(ts(query.entered_before)),
        );
        if let Some(s) = &query.stage {
            sql += &format!(" AND stage = {}", b.push(text(s)));
        }
        if let Some(a) = &query.after {
            sql += &format!(" AND record_key > {}", b.push(text(a)));
        }
        sql += &format!(" ORDER BY record_key LIMIT {}", b.push(int(query.limit)));
        self.select(&sql, &b.values).await
    }

    async fn quality_counts(&self, pipeline: &str, query: &QualityQuery) -> Result<QualityCounts> {
        check_quality_query(pipeline, query)?;
        let d = self.db.dialect();
        let mut b = Binds::new(d);
        // COUNT, never SUM: MariaDB sums to DECIMAL.
        let mut cols = vec!["COUNT(*)".to_owned()];
        for k in &query.present {
            let (is_number, number) = json_number(d, &mut b, k);
            cols.push(format!(
                "COUNT(CASE WHEN {is_number} THEN CASE WHEN {number} > 0 THEN 1 END END)"
            ));
        }
        if let Some((k, min)) = &query.below {
            let (is_number, number) = json_number(d, &mut b, k);
            let min = b.push(int(*min));
            cols.push(format!(
                "COUNT(CASE WHEN {is_number} THEN CASE WHEN {number} < {min} THEN 1 END ELSE 1 END)"
            ));
        }
        let p = b.push(text(pipeline));
        let kinds = vec![Kind::Int; cols.len()];
        let row = self
            .db
            .fetch(
                &format!(
                    "SELECT {} FROM {TABLE} WHERE pipeline = {p}",
                    cols.join(", ")
                ),
                &b.values,
                &kinds,
            )
            .await?
            .pop()
            .unwrap_or_default();
        let mut counts = row.into_iter().map(|v| count(v.int()));
        let total = counts.next().unwrap_or(0);
        let present = query
            .present
            .iter()
            .map(|k| (k.clone(), counts.next().unwrap_or(0)))
            .collect();
        let below = if query.below.is_some() {
            counts.next().unwrap_or(0)
        } else {
            0
        };
        Ok(QualityCounts {
            total,
            present,
            below,
        })
    }
}
