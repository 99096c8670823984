//! [`SqlFailedRecordStore`]: `FailedRecordStore` on `recon_failed_records`.

use async_trait::async_trait;
use lineage_checksum::failed::{
    DueQuery, ErrorTypeCount, FailedRecord, FailedRecordStore, FailureId, FailureOutcome,
    FailureState, ListQuery, NewFailure, OutcomeKind, PruneQuery, check_failures, check_outcomes,
    check_page,
};
use lineage_checksum::limits;
use lineage_checksum::{Error, Result};

use super::{
    TS, after_key_stage, bad, count, int, json_col, json_param, opt_text, opt_ts, parse_json, text,
    ts,
};
use crate::sql::{Binds, CHUNK, RowsTable, STATEMENT_BYTES, chunks_by_size, with_deadlock_retry};
use crate::value::{Kind, Value};
use crate::{Db, Dialect};

const TABLE: &str = "recon_failed_records";
const KINDS: [Kind; 12] = [
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Int,
    TS,
    TS,
    TS,
    Kind::Text,
    TS,
    Kind::Text,
];

/// [`FailedRecordStore`] on `recon_failed_records`: one row per (pipeline, key, stage). Create
/// it with [`Db::failed_records`].
///
/// * `record`: in one transaction, one upsert per chunk (at most 2,000 rows or 4 MiB of
///   payloads) that inserts new failures, replaces the error of open ones and reopens resolved
///   ones (`CASE WHEN state = 'resolved'`; MariaDB: `IF(…)`, with `state` assigned last);
/// * `apply`: in one transaction, one `UPDATE … FROM (VALUES …)` per chunk (MariaDB: `UPDATE …
///   JOIN (SELECT … UNION ALL …)`), compare-and-set on `state = 'open'`, `attempts` and
///   `last_failed_at`; the affected-row count is what applied;
/// * `due` / `list`: keyset pages by (key, stage); `counts_by_error_type`: one `GROUP BY`;
/// * `prune`: one bounded `DELETE` (PostgreSQL and SQLite through a key subselect with
///   `LIMIT`, MariaDB with `DELETE … ORDER BY … LIMIT`).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use lineage_checksum::{RecoveryReconciler, Stages};
/// let db = store_sqlx::Db::connect("sqlite:pipeline.sqlite").await?;
/// db.migrate().await?;
/// let stages = Stages::new(["extracted", "pii_removed", "embedding_generated", "loaded"])?;
/// let recovery = RecoveryReconciler::new("cases", stages, Arc::new(db.failed_records()))?;
/// # let _ = recovery;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqlFailedRecordStore {
    db: Db,
}

impl Db {
    /// `lineage-checksum`'s failed-record store on this database (run [`Db::migrate`] first).
    pub fn failed_records(&self) -> SqlFailedRecordStore {
        SqlFailedRecordStore { db: self.clone() }
    }
}

fn decode(mut r: Vec<Value>) -> Result<FailedRecord> {
    let resolution = r.pop().and_then(Value::text);
    let resolved_at = r.pop().and_then(Value::ts);
    let state = r.pop().and_then(Value::text);
    let next_attempt_at = r.pop().and_then(Value::ts);
    let last_failed_at = r.pop().and_then(Value::ts);
    let first_failed_at = r.pop().and_then(Value::ts);
    let attempts = r.pop().and_then(Value::int);
    let payload = r.pop().and_then(Value::text);
    let message = r.pop().and_then(Value::text).unwrap_or_default();
    let error_type = r.pop().and_then(Value::text).unwrap_or_default();
    let stage = r.pop().and_then(Value::text).unwrap_or_default();
    let key = r.pop().and_then(Value::text).unwrap_or_default();
    let time = |v: Option<chrono::DateTime<chrono::Utc>>, column: &str| {
        v.ok_or_else(|| bad(TABLE, column, &key, "NULL"))
    };
    Ok(FailedRecord {
        payload: parse_json(TABLE, "payload", &key, payload)?,
        attempts: attempts.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        first_failed_at: time(first_failed_at, "first_failed_at")?,
        last_failed_at: time(last_failed_at, "last_failed_at")?,
        next_attempt_at,
        state: state
            .unwrap_or_default()
            .parse()
            .map_err(|e: Error| bad(TABLE, "state", &key, e.to_string()))?,
        resolved_at,
        resolution,
        error_type,
        message,
        stage,
        key,
    })
}

/// Bytes a failure adds to a statement, roughly.
fn failure_size(f: &(NewFailure, String)) -> usize {
    256 + f.0.key.len() + f.0.message.len().min(limits::MAX_MESSAGE_BYTES) + f.1.len()
}

impl SqlFailedRecordStore {
    fn columns(&self) -> String {
        format!(
            "record_key, stage, error_type, message, {}, attempts, first_failed_at, \
             last_failed_at, next_attempt_at, state, resolved_at, resolution",
            json_col(self.db.dialect(), "payload")
        )
    }

    async fn select(&self, sql: &str, values: &[Value]) -> Result<Vec<FailedRecord>> {
        self.db
            .fetch(sql, values, &KINDS)
            .await?
            .into_iter()
            .map(decode)
            .collect()
    }

    async fn record_once(
        &self,
        pipeline: &str,
        failures: &[(NewFailure, String)],
    ) -> crate::Result<u64> {
        let d = self.db.dialect();
        let mut tx = self.db.begin().await?;
        for chunk in chunks_by_size(failures, CHUNK, STATEMENT_BYTES, failure_size) {
            let mut b = Binds::new(d);
            let rows = chunk
                .iter()
                .map(|(f, payload)| {
                    let p = [
                        b.push(text(pipeline)),
                        b.push(text(&f.key)),
                        b.push(text(&f.stage)),
                        b.push(text(&f.error_type)),
                        b.push(text(&limits::truncate_message(&f.message))),
                        json_param(d, b.push(text(payload))),
                        b.push(int(0)),
                        b.push(ts(f.at)),
                        b.push(ts(f.at)),
                        b.push(ts(f.at)),
                        b.push(text(FailureState::Open.as_str())),
                        b.push(opt_ts(None)),
                        b.push(opt_text(None)),
                    ];
                    format!("({})", p.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let on_conflict = match d {
                Dialect::Postgres | Dialect::Sqlite => {
                    let when = |new: &str, old: &str| {
                        format!(
                            "CASE WHEN {TABLE}.state = 'resolved' THEN {new} ELSE {TABLE}.{old} END"
                        )
                    };
                    format!(
                        "ON CONFLICT (pipeline, record_key, stage) DO UPDATE SET \
                         error_type = excluded.error_type, message = excluded.message, \
                         payload = excluded.payload, last_failed_at = excluded.last_failed_at, \
                         attempts = {}, first_failed_at = {}, next_attempt_at = {}, \
                         resolved_at = {}, resolution = {}, state = {}",
                        when("0", "attempts"),
                        when("excluded.first_failed_at", "first_failed_at"),
                        when("excluded.next_attempt_at", "next_attempt_at"),
                        when("NULL", "resolved_at"),
                        when("NULL", "resolution"),
                        when("'open'", "state"),
                    )
                }
                Dialect::MySql => {
                    // Left to right, each assignment seeing the ones before: `state` last.
                    let when =
                        |new: &str, old: &str| format!("IF(state = 'resolved', {new}, {old})");
                    format!(
                        "ON DUPLICATE KEY UPDATE error_type = VALUES(error_type), \
                         message = VALUES(message), payload = VALUES(payload), \
                         last_failed_at = VALUES(last_failed_at), attempts = {}, \
                         first_failed_at = {}, next_attempt_at = {}, resolved_at = {}, \
                         resolution = {}, state = {}",
                        when("0", "attempts"),
                        when("VALUES(first_failed_at)", "first_failed_at"),
                        when("VALUES(next_attempt_at)", "next_attempt_at"),
                        when("NULL", "resolved_at"),
                        when("NULL", "resolution"),
                        when("'open'", "state"),
                    )
                }
            };
            let sql = format!(
                "INSERT INTO {TABLE} (pipeline, record_key, stage, error_type, message, payload, \
                 attempts, first_failed_at, last_failed_at, next_attempt_at, state, resolved_at, \
                 resolution) VALUES {rows} {on_conflict}"
            );
            tx.execute(&sql, &b.values).await?;
        }
        tx.commit().await?;
        Ok(failures.len() as u64)
    }

    async fn apply_once(&self, pipeline: &str, outcomes: &[FailureOutcome]) -> crate::Result<u64> {
        const NAMES: &[&str] = &[
            "record_key",
            "stage",
            "expected_attempts",
            "expected_last_failed_at",
            "attempts",
            "state",
            "resolved_at",
            "resolution",
            "next_attempt_at",
            "error_type",
            "message",
            "last_failed_at",
        ];
        let d = self.db.dialect();
        let mut tx = self.db.begin().await?;
        let mut applied = 0;
        for chunk in outcomes.chunks(CHUNK) {
            let mut b = Binds::new(d);
            let mut rows = RowsTable::new(d, NAMES);
            for o in chunk {
                let at = o.at;
                // (state, resolved_at, resolution, next_attempt_at, error_type, message,
                // last_failed_at); NULL error fields keep the stored ones.
                let (state, resolved_at, resolution, next, error_type, message, last) =
                    match &o.kind {
                        OutcomeKind::Resolved { method } => (
                            FailureState::Resolved,
                            Some(at),
                            Some(method.clone()),
                            None,
                            None,
                            None,
                            None,
                        ),
                        OutcomeKind::Retry {
                            next_attempt_at,
                            error_type,
                            message,
                        } => (
                            FailureState::Open,
                            None,
                            None,
                            Some(*next_attempt_at),
                            Some(error_type.clone()),
                            Some(limits::truncate_message(message)),
                            Some(at),
                        ),
                        OutcomeKind::ManualReview {
                            error_type,
                            message,
                        } => (
                            FailureState::ManualReview,
                            None,
                            None,
                            None,
                            Some(error_type.clone()),
                            Some(limits::truncate_message(message)),
                            Some(at),
                        ),
                    };
                rows.row(vec![
                    b.push(text(&o.id.key)),
                    b.push(text(&o.id.stage)),
                    b.push(int(o.expected_attempts)),
                    b.push(ts(o.expected_last_failed_at)),
                    b.push(int(o.attempts)),
                    b.push(text(state.as_str())),
                    b.push(opt_ts(resolved_at)),
                    b.push(Value::Text(resolution)),
                    b.push(opt_ts(next)),
                    b.push(Value::Text(error_type)),
                    b.push(Value::Text(message)),
                    b.push(opt_ts(last)),
                ]);
            }
            let v = |n: &str| rows.col(n);
            let target = |c: &str| match d {
                Dialect::MySql => format!("t.{c}"),
                Dialect::Postgres | Dialect::Sqlite => c.to_owned(),
            };
            let sets = [
                format!("{} = {}", target("attempts"), v("attempts")),
                format!("{} = {}", target("state"), v("state")),
                format!("{} = {}", target("resolved_at"), v("resolved_at")),
                format!("{} = {}", target("resolution"), v("resolution")),
                format!("{} = {}", target("next_attempt_at"), v("next_attempt_at")),
                format!(
                    "{} = COALESCE({}, t.error_type)",
                    target("error_type"),
                    v("error_type")
                ),
                format!(
                    "{} = COALESCE({}, t.message)",
                    target("message"),
                    v("message")
                ),
                format!(
                    "{} = COALESCE({}, t.last_failed_at)",
                    target("last_failed_at"),
                    v("last_failed_at")
                ),
            ]
            .join(", ");
            // Rows first (they come first in the text on MySQL, and there are no SET
            // placeholders before them elsewhere), then the pipeline.
            let table = rows.sql();
            let p = b.push(text(pipeline));
            let matched = format!(
                "t.pipeline = {p} AND t.record_key = {} AND t.stage = {}",
                v("record_key"),
                v("stage")
            );
            let guard = format!(
                "t.state = 'open' AND t.attempts = {} AND t.last_failed_at = {}",
                v("expected_attempts"),
                v("expected_last_failed_at")
            );
            let sql = match d {
                Dialect::Postgres | Dialect::Sqlite => format!(
                    "UPDATE {TABLE} AS t SET {sets} FROM {table} WHERE {matched} AND {guard}"
                ),
                Dialect::MySql => format!(
                    "UPDATE {TABLE} AS t JOIN {table} ON {matched} SET {sets} WHERE {guard}"
                ),
            };
            applied += tx.execute(&sql, &b.values).await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn prune_once(&self, pipeline: &str, q: &PruneQuery) -> crate::Result<u64> {
        let d = self.db.dialect();
        let mut b = Binds::new(d);
        let filter = |b: &mut Binds| {
            let p = b.push(text(pipeline));
            let resolved = b.push(ts(q.resolved_before));
            let mut f =
                format!("pipeline = {p} AND ((state = 'resolved' AND resolved_at < {resolved})");
            if let Some(t) = q.unresolved_before {
                f += &format!(
                    " OR (state <> 'resolved' AND last_failed_at < {})",
                    b.push(ts(t))
                );
            }
            f.push(')');
            f
        };
        let sql = match d {
            Dialect::MySql => {
                let f = filter(&mut b);
                let limit = b.push(int(q.limit));
                format!("DELETE FROM {TABLE} WHERE {f} ORDER BY record_key, stage LIMIT {limit}")
            }
            Dialect::Postgres | Dialect::Sqlite => {
                let p = b.push(text(pipeline));
                let f = filter(&mut b);
                let limit = b.push(int(q.limit));
                format!(
                    "DELETE FROM {TABLE} WHERE pipeline = {p} AND (record_key, stage) IN \
                     (SELECT record_key, stage FROM {TABLE} WHERE {f} \
                     ORDER BY record_key, stage LIMIT {limit})"
                )
            }
        };
        self.db.execute(&sql, &b.values).await
    }
}

#[async_trait]
impl FailedRecordStore for SqlFailedRecordStore {
    async fn record(&self, pipeline: &str, failures: &[NewFailure]) -> Result<u64> {
        check_failures(pipeline, failures)?;
        if failures.is_empty() {
            return Ok(0);
        }
        // Serialise every payload before the transaction (check_failures proved they fit).
        let rows = failures
            .iter()
            .map(|f| {
                serde_json::to_string(&f.payload)
                    .map(|p| (f.clone(), p))
                    .map_err(|e| Error::invalid_input(format!("payload of `{}`: {e}", f.key)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(with_deadlock_retry(|| self.record_once(pipeline, &rows)).await?)
    }

    async fn due(&self, pipeline: &str, query: &DueQuery) -> Result<Vec<FailedRecord>> {
        check_page(pipeline, query.limit)?;
        let mut b = Binds::new(self.db.dialect());
        let mut sql = format!(
            "SELECT {} FROM {TABLE} WHERE pipeline = {} AND state = 'open' \
             AND next_attempt_at <= {}",
            self.columns(),
            b.push(text(pipeline)),
            b.push(ts(query.now)),
        );
        if let Some(FailureId { key, stage }) = &query.after {
            sql += &format!(" AND {}", after_key_stage(&mut b, key, stage));
        }
        sql += &format!(
            " ORDER BY record_key, stage LIMIT {}",
            b.push(int(query.limit))
        );
        self.select(&sql, &b.values).await
    }

    async fn apply(&self, pipeline: &str, outcomes: &[FailureOutcome]) -> Result<u64> {
        check_outcomes(pipeline, outcomes)?;
        if outcomes.is_empty() {
            return Ok(0);
        }
        Ok(with_deadlock_retry(|| self.apply_once(pipeline, outcomes)).await?)
    }

    async fn counts_by_error_type(&self, pipeline: &str) -> Result<Vec<ErrorTypeCount>> {
        limits::check_name("pipeline", pipeline)?;
        let mut b = Binds::new(self.db.dialect());
        let p = b.push(text(pipeline));
        // COUNT, never SUM: MariaDB sums to DECIMAL.
        let sql = format!(
            "SELECT error_type, COUNT(CASE WHEN state = 'open' THEN 1 END), \
             COUNT(CASE WHEN state = 'manual_review' THEN 1 END) FROM {TABLE} \
             WHERE pipeline = {p} AND state IN ('open', 'manual_review') \
             GROUP BY error_type ORDER BY error_type"
        );
        Ok(self
            .db
            .fetch(&sql, &b.values, &[Kind::Text, Kind::Int, Kind::Int])
            .await?
            .into_iter()
            .map(|mut r| {
                let manual_review = count(r.pop().and_then(Value::int));
                let open = count(r.pop().and_then(Value::int));
                ErrorTypeCount {
                    error_type: r.pop().and_then(Value::text).unwrap_or_default(),
                    open,
                    manual_review,
                }
            })
            .collect())
    }

    async fn list(&self, pipeline: &str, query: &ListQuery) -> Result<Vec<FailedRecord>> {
        check_page(pipeline, query.limit)?;
        let mut b = Binds::new(self.db.dialect());
        let mut sql = format!(
            "SELECT {} FROM {TABLE} WHERE pipeline = {}",
            self.columns(),
            b.push(text(pipeline))
        );
        if let Some(s) = query.state {
            sql += &format!(" AND state = {}", b.push(text(s.as_str())));
        }
        if let Some(FailureId { key, stage }) = &query.after {
            sql += &format!(" AND {}", after_key_stage(&mut b, key, stage));
        }
        sql += &format!(
            " ORDER BY record_key, stage LIMIT {}",
            b.push(int(query.limit))
        );
        self.select(&sql, &b.values).await
    }

    async fn prune(&self, pipeline: &str, query: &PruneQuery) -> Result<u64> {
        check_page(pipeline, query.limit)?;
        Ok(with_deadlock_retry(|| self.prune_once(pipeline, query)).await?)
    }
}
