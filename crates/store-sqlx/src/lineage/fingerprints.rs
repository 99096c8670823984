//! [`SqlFingerprintStore`]: `FingerprintStore` on `recon_fingerprints`.

use async_trait::async_trait;
use lineage_checksum::Result;
use lineage_checksum::classify::{
    Difference, FingerprintStore, Incoming, RecordBatch, StoredFingerprint, UnseenQuery,
    check_incoming, check_keys, check_record_batch, check_unseen_query,
};

use super::{
    KEYS_PER_STATEMENT, TS, decode_fingerprint, fingerprint_value, int, key_set, text, ts,
};
use crate::sql::{Binds, CHUNK, with_deadlock_retry};
use crate::value::{Array, Kind, Value};
use crate::{Db, Dialect};

const TABLE: &str = "recon_fingerprints";
// `differences` on SQLite binds two values per key and the namespace.
const _: () = assert!(2 * KEYS_PER_STATEMENT < 32_766);
const COLS: &str = "record_key, fingerprint, source_group, seen_run, seen_at";
const KINDS: [Kind; 5] = [Kind::Text, Kind::Bytes, Kind::Text, Kind::Text, TS];

/// [`FingerprintStore`] on `recon_fingerprints`: one row per (namespace, key). Create it with
/// [`Db::fingerprints`].
///
/// * `differences` (what `Classifier` calls, once per batch of up to 10,000 records): on
///   SQLite the batch is a `VALUES` list joined to the primary key and only missing or
///   changed rows come back; on PostgreSQL keys and fingerprints are two typed arrays
///   (`unnest($1::text[], $2::bytea[]) WITH ORDINALITY`) joined to the primary key, compared
///   in the server, and only missing and changed rows come back, tagged with their position;
///   on MariaDB an `IN (…)` list, compared here;
/// * `lookup`: one `SELECT … WHERE namespace = ? AND record_key IN (…)` per call (PostgreSQL:
///   the keys as one JSON array);
/// * `record`: in one transaction, one `INSERT … ON CONFLICT DO UPDATE` (MariaDB: `ON
///   DUPLICATE KEY UPDATE`) per 2,000 upserts and one `UPDATE … WHERE record_key IN (…)` for
///   the seen stamps;
/// * `unseen`: a keyset page on the primary key, or on `(namespace, source_group,
///   record_key)` for one group;
/// * `remove`: one `DELETE … IN (…)`.
///
/// ```no_run
/// # async fn demo(batch: Vec<lineage_checksum::Incoming>) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// let db = store_sqlx::Db::connect("sqlite:pipeline.sqlite").await?;
/// db.migrate().await?;
/// let classifier = lineage_checksum::Classifier::new(Arc::new(db.fingerprints()), "case")?;
/// let c = classifier.classify(&batch).await?; // one query per batch
/// println!("{} new, {} changed, {} unchanged", c.created, c.updated, c.unchanged);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqlFingerprintStore {
    db: Db,
}

impl Db {
    /// `lineage-checksum`'s fingerprint store on this database (run [`Db::migrate`] first).
    pub fn fingerprints(&self) -> SqlFingerprintStore {
        SqlFingerprintStore { db: self.clone() }
    }
}

fn decode(mut r: Vec<Value>) -> Result<StoredFingerprint> {
    let seen_at = r.pop().and_then(Value::ts);
    let seen_run = r.pop().and_then(Value::text);
    let group = r.pop().and_then(Value::text);
    let fp = r.pop().and_then(Value::bytes);
    let key = r.pop().and_then(Value::text).unwrap_or_default();
    let fingerprint = decode_fingerprint(TABLE, &key, fp)?
        .ok_or_else(|| super::bad(TABLE, "fingerprint", &key, "NULL"))?;
    Ok(StoredFingerprint {
        key,
        fingerprint,
        group,
        seen_run,
        seen_at,
    })
}

impl SqlFingerprintStore {
    async fn record_once(&self, namespace: &str, batch: &RecordBatch) -> crate::Result<u64> {
        let d = self.db.dialect();
        let mut tx = self.db.begin().await?;
        for chunk in batch.upserts.chunks(CHUNK) {
            let mut b = Binds::new(d);
            let rows = chunk
                .iter()
                .map(|e| {
                    let vals = [
                        text(namespace),
                        text(&e.key),
                        fingerprint_value(Some(&e.fingerprint)),
                        Value::Text(e.group.clone()),
                        text(&batch.run),
                        ts(batch.at),
                    ];
                    format!("({})", b.list(vals))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let on_conflict = match d {
                Dialect::Postgres | Dialect::Sqlite => {
                    "ON CONFLICT (namespace, record_key) DO UPDATE SET \
                     fingerprint = excluded.fingerprint, source_group = excluded.source_group, \
                     seen_run = excluded.seen_run, seen_at = excluded.seen_at"
                }
                Dialect::MySql => {
                    "ON DUPLICATE KEY UPDATE fingerprint = VALUES(fingerprint), \
                     source_group = VALUES(source_group), seen_run = VALUES(seen_run), \
                     seen_at = VALUES(seen_at)"
                }
            };
            let sql = format!(
                "INSERT INTO {TABLE} (namespace, record_key, fingerprint, source_group, seen_run, \
                 seen_at) VALUES {rows} {on_conflict}"
            );
            tx.execute(&sql, &b.values).await?;
        }
        let mut stamped = 0;
        for chunk in batch.seen.chunks(KEYS_PER_STATEMENT) {
            let mut b = Binds::new(d);
            let run = b.push(text(&batch.run));
            let at = b.push(ts(batch.at));
            let ns = b.push(text(namespace));
            let set = key_set(&mut b, d, chunk);
            let sql = format!(
                "UPDATE {TABLE} SET seen_run = {run}, seen_at = {at} \
                 WHERE namespace = {ns} AND record_key IN {set}"
            );
            // MySQL reports matched rows (sqlx sets CLIENT_FOUND_ROWS), like the others.
            stamped += tx.execute(&sql, &b.values).await?;
        }
        tx.commit().await?;
        Ok(batch.upserts.len() as u64 + stamped)
    }

    async fn remove_once(&self, namespace: &str, keys: &[String]) -> crate::Result<u64> {
        let d = self.db.dialect();
        let mut tx = self.db.begin().await?;
        let mut n = 0;
        for chunk in keys.chunks(KEYS_PER_STATEMENT) {
            let mut b = Binds::new(d);
            let ns = b.push(text(namespace));
            let set = key_set(&mut b, d, chunk);
            n += tx
                .execute(
                    &format!("DELETE FROM {TABLE} WHERE namespace = {ns} AND record_key IN {set}"),
                    &b.values,
                )
                .await?;
        }
        tx.commit().await?;
        Ok(n)
    }
}

#[async_trait]
impl FingerprintStore for SqlFingerprintStore {
    async fn lookup(&self, namespace: &str, keys: &[String]) -> Result<Vec<StoredFingerprint>> {
        check_keys(namespace, "lookup", keys)?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(KEYS_PER_STATEMENT) {
            let d = self.db.dialect();
            let mut b = Binds::new(d);
            let ns = b.push(text(namespace));
            let set = key_set(&mut b, d, chunk);
            let sql = format!(
                "SELECT {COLS} FROM {TABLE} WHERE namespace = {ns} AND record_key IN {set}"
            );
            for r in self.db.fetch(&sql, &b.values, &KINDS).await? {
                out.push(decode(r)?);
            }
        }
        Ok(out)
    }

    /// SQLite and PostgreSQL compare in the database — SQLite: the batch as a `VALUES` list
    /// `LEFT JOIN`ed to the table on its primary key, `WHERE fingerprint IS NOT` the incoming
    /// one; PostgreSQL: keys and fingerprints as two typed arrays (`unnest(text[], bytea[])
    /// WITH ORDINALITY`) `LEFT JOIN`ed the same way, `WHERE … IS DISTINCT FROM …` — so only
    /// missing and changed rows come back. MariaDB reads the stored fingerprints of the
    /// batch's keys in one query and compares here.
    async fn differences(&self, namespace: &str, batch: &[Incoming]) -> Result<Vec<Difference>> {
        check_incoming(namespace, batch)?;
        let d = self.db.dialect();
        let mut out = Vec::new();
        for chunk in batch.chunks(KEYS_PER_STATEMENT) {
            match d {
                Dialect::Sqlite => {
                    // Written without `Binds`: 20,000 placeholders per batch are all `?`, bound
                    // in text order (the rows, then the namespace).
                    let mut values = Vec::with_capacity(2 * chunk.len() + 1);
                    for r in chunk {
                        values.push(text(&r.key));
                        values.push(fingerprint_value(Some(&r.fingerprint)));
                    }
                    values.push(text(namespace));
                    let rows = vec!["(?, ?)"; chunk.len()].join(", ");
                    let sql = format!(
                        "SELECT v.column1, f.fingerprint FROM (VALUES {rows}) AS v \
                         LEFT JOIN {TABLE} AS f ON f.namespace = ? AND f.record_key = v.column1 \
                         WHERE f.fingerprint IS NOT v.column2"
                    );
                    for mut r in self
                        .db
                        .fetch(&sql, &values, &[Kind::Text, Kind::Bytes])
                        .await?
                    {
                        let stored = r.pop().and_then(Value::bytes);
                        let key = r.pop().and_then(Value::text).unwrap_or_default();
                        let stored = decode_fingerprint(TABLE, &key, stored)?;
                        out.push(Difference { key, stored });
                    }
                }
                Dialect::Postgres => {
                    // Keys and fingerprints as two typed arrays (one bound value each, sent
                    // in binary), unnested side by side and joined to the primary key (one
                    // probe per key); PostgreSQL compares and returns only the missing and
                    // changed rows, each tagged with its position in the batch.
                    let mut b = Binds::new(d);
                    let keys = b.push(Value::Array(Array::Text(
                        chunk.iter().map(|r| Some(r.key.clone())).collect(),
                    )));
                    let fps = b.push(Value::Array(Array::Bytes(
                        chunk
                            .iter()
                            .map(|r| Some(r.fingerprint.as_bytes().to_vec()))
                            .collect(),
                    )));
                    let ns = b.push(text(namespace));
                    let sql = format!(
                        "SELECT k.i, f.fingerprint \
                         FROM unnest(CAST({keys} AS text[]), CAST({fps} AS bytea[])) \
                         WITH ORDINALITY AS k(record_key, fingerprint, i) \
                         LEFT JOIN {TABLE} AS f \
                         ON f.namespace = {ns} AND f.record_key = k.record_key \
                         WHERE f.fingerprint IS DISTINCT FROM k.fingerprint"
                    );
                    for mut r in self
                        .db
                        .fetch(&sql, &b.values, &[Kind::Int, Kind::Bytes])
                        .await?
                    {
                        let fp = r.pop().and_then(Value::bytes);
                        let i = r.pop().and_then(Value::int).unwrap_or(0);
                        let idx = usize::try_from(i.saturating_sub(1))
                            .ok()
                            .filter(|idx| *idx < chunk.len())
                            .ok_or_else(|| {
                                super::bad(TABLE, "ordinality", &i.to_string(), "out of range")
                            })?;
                        let key = chunk[idx].key.clone();
                        let stored = decode_fingerprint(TABLE, &key, fp)?;
                        out.push(Difference { key, stored });
                    }
                }
                Dialect::MySql => {
                    let mut b = Binds::new(d);
                    let ns = b.push(text(namespace));
                    let list = b.list(chunk.iter().map(|r| text(&r.key)));
                    let sql = format!(
                        "SELECT record_key, fingerprint FROM {TABLE} \
                         WHERE namespace = {ns} AND record_key IN ({list})"
                    );
                    let rows = self
                        .db
                        .fetch(&sql, &b.values, &[Kind::Text, Kind::Bytes])
                        .await?;
                    let mut stored = std::collections::HashMap::with_capacity(rows.len());
                    for mut r in rows {
                        let fp = r.pop().and_then(Value::bytes);
                        let key = r.pop().and_then(Value::text).unwrap_or_default();
                        let fp = decode_fingerprint(TABLE, &key, fp)?;
                        stored.insert(key, fp);
                    }
                    out.extend(chunk.iter().filter_map(|r| match stored.get(&r.key) {
                        Some(Some(f)) if *f == r.fingerprint => None,
                        other => Some(Difference {
                            key: r.key.clone(),
                            stored: other.copied().flatten(),
                        }),
                    }));
                }
            }
        }
        Ok(out)
    }

    async fn record(&self, namespace: &str, batch: &RecordBatch) -> Result<u64> {
        check_record_batch(namespace, batch)?;
        if batch.upserts.is_empty() && batch.seen.is_empty() {
            return Ok(0);
        }
        Ok(with_deadlock_retry(|| self.record_once(namespace, batch)).await?)
    }

    async fn unseen(&self, namespace: &str, query: &UnseenQuery) -> Result<Vec<StoredFingerprint>> {
        check_unseen_query(namespace, query)?;
        let mut b = Binds::new(self.db.dialect());
        let mut sql = format!(
            "SELECT {COLS} FROM {TABLE} WHERE namespace = {}",
            b.push(text(namespace))
        );
        if let Some(g) = &query.group {
            sql += &format!(" AND source_group = {}", b.push(text(g)));
        }
        sql += &format!(
            " AND (seen_run IS NULL OR seen_run <> {})",
            b.push(text(&query.run))
        );
        if let Some(a) = &query.after {
            sql += &format!(" AND record_key > {}", b.push(text(a)));
        }
        sql += &format!(" ORDER BY record_key LIMIT {}", b.push(int(query.limit)));
        self.db
            .fetch(&sql, &b.values, &KINDS)
            .await?
            .into_iter()
            .map(decode)
            .collect()
    }

    async fn remove(&self, namespace: &str, keys: &[String]) -> Result<u64> {
        check_keys(namespace, "remove", keys)?;
        if keys.is_empty() {
            return Ok(0);
        }
        Ok(with_deadlock_retry(|| self.remove_once(namespace, keys)).await?)
    }
}
