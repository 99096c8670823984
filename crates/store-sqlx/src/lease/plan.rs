//! [`LeaseStore::repair_planned`](lease_repair::LeaseStore::repair_planned): a
//! [`RepairPlan`] applied inside the database, one guarded statement per batch, no row sent
//! out and back.
//!
//! Every backend writes the plan with `CASE attempts …` and picks its batch with the same
//! condition the row-by-row read uses, narrowed to rows whose every column the row-by-row path
//! could read (anything else is left to it, so that it is reported exactly as before):
//!
//! - PostgreSQL: one statement, `WITH picked AS (SELECT … ORDER BY id LIMIT n FOR UPDATE SKIP
//!   LOCKED), done AS (UPDATE … FROM picked … RETURNING …) SELECT COUNT(*), …, MAX(id) FROM
//!   done`. Rows another transaction holds are skipped; a row changed and committed since the
//!   statement's snapshot is re-checked against the condition when it is locked.
//! - SQLite: the batch is a key range (up to the `limit`-th processing job, from the
//!   `(status, id)` index alone), repaired by one `UPDATE … WHERE <condition> AND id > after AND
//!   id <= upper RETURNING attempts`, atomic under SQLite's one writer lock.
//! - MariaDB/MySQL: `SELECT id, attempts … FOR UPDATE SKIP LOCKED`, then one `UPDATE … WHERE
//!   id IN (…)` of exactly the locked rows (MariaDB has no `UPDATE … RETURNING`).

use chrono::{DateTime, Utc};
use lease_repair::{CandidateKind, JobKey, PlannedBatch, RepairPlan};

use super::{KeyKind, SqlLeaseStore};
use crate::sql::{Binds, exact_eq};
use crate::value::{Kind, Value};
use crate::{Dialect, Error, Result, TimestampFormat};

/// A SQLite text timestamp the row-by-row path reads too: a full date, `T` or a space, a
/// time with seconds, and nothing after but fractions and a zone (SQLite's own date functions
/// also take trailing spaces, which the row-by-row path does not).
const SQLITE_TS_SHAPE: &str =
    "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9]*[0-9Z]";

impl SqlLeaseStore {
    /// The rows `plan` covers with keys after `after`: the row-by-row read's condition for
    /// the plan's kind, attempts in the plan's range, and values the row-by-row path could
    /// decode.
    fn plan_where(
        &self,
        plan: &RepairPlan,
        after: Option<&JobKey>,
        b: &mut Binds,
    ) -> Result<String> {
        let d = self.db.dialect();
        let s = &self.q;
        let mut w = vec![exact_eq(
            d,
            &s.status,
            b,
            Value::Text(Some(plan.processing_state.clone())),
        )];
        let e = self.expiry_for_filter();
        match plan.kind {
            CandidateKind::ExpiredLease => {
                let now = b.push(self.ts(Some(plan.now)));
                w.push(format!("{e} IS NOT NULL AND {e} < {now}"));
                match (d, self.map.timestamps) {
                    (Dialect::Postgres, _) => w.push(format!("isfinite({})", s.expiry)),
                    // Zero dates and dates with a zero month or day read as no date at all.
                    // (and `ALLOW_INVALID_DATES` stores a 30 February): a real calendar date.
                    (Dialect::MySql, _) => w.push(format!(
                        "MONTH({x}) > 0 AND DAYOFMONTH({x}) > 0 \
                         AND DAYOFMONTH({x}) <= DAYOFMONTH(LAST_DAY({x}))",
                        x = s.expiry
                    )),
                    (
                        Dialect::Sqlite,
                        TimestampFormat::UnixSeconds | TimestampFormat::UnixMillis,
                    ) => {
                        let min = b.push(self.ts(Some(DateTime::<Utc>::MIN_UTC)));
                        w.push(format!("typeof({e}) = 'integer' AND {e} >= {min}"));
                    }
                    // Text: compared as text like the row-by-row read, and then as the instant
                    // SQLite reads (a time with an offset may sort before `now` as text and
                    // still lie ahead).
                    (Dialect::Sqlite, _) => {
                        let now = b.push(self.ts(Some(plan.now)));
                        // SQLite's date functions roll a 30 February over into March and take
                        // hour 24; the row-by-row path reads neither.
                        w.push(format!(
                            "typeof({e}) = 'text' AND julianday({e}) < julianday({now}) \
                             AND {e} GLOB '{SQLITE_TS_SHAPE}' \
                             AND date(substr({e}, 1, 10)) = substr({e}, 1, 10) \
                             AND substr({e}, 12, 2) < '24'"
                        ));
                    }
                }
                if d == Dialect::Sqlite {
                    // An owner the row-by-row path might not read (not text, not UTF-8) is
                    // left to it: it reports such rows instead of repairing them. Printable
                    // ASCII always reads. (Comparing `length` in characters and in bytes is
                    // not enough: SQLite counts a stray 0xFF byte as one character.)
                    w.push(format!(
                        "({o} IS NULL OR (typeof({o}) = 'text' AND {o} NOT GLOB '*[^ -~]*'))",
                        o = s.owner
                    ));
                }
            }
            CandidateKind::Orphaned => {
                w.push(format!("{} IS NULL AND {e} IS NULL", s.owner));
            }
            other => {
                return Err(Error::Config(format!(
                    "a repair plan is for expired leases or orphans, not {other:?}"
                )));
            }
        }
        let a = &s.attempts;
        if d == Dialect::Sqlite {
            w.push(format!("typeof({a}) = 'integer'"));
            let id_type = if self.map.key_kind == KeyKind::Integer {
                "integer"
            } else {
                "text"
            };
            w.push(format!("typeof({}) = '{id_type}'", s.id));
        }
        let max = b.push(Value::Int(Some(plan.max_attempts)));
        w.push(format!("{a} >= 0 AND {a} <= {max}"));
        if let Some(k) = after {
            w.push(format!("{} > {}", s.id, self.id_param(b, k)?));
        }
        Ok(w.join(" AND "))
    }

    /// The SET list that writes `plan` on the job table aliased `t`, with `a` the attempts
    /// as stored before the repair.
    /// `attempts` is assigned last: MariaDB evaluates assignments left to right, each seeing
    /// the ones before it.
    fn plan_sets(&self, plan: &RepairPlan, a: &str, b: &mut Binds) -> String {
        let s = &self.q;
        let fails = |b: &mut Binds| -> Option<String> {
            plan.fail_from
                .map(|f| format!("{a} >= {}", b.push(Value::Int(Some(f)))))
        };
        let text = |v: &str| Value::Text(Some(v.to_owned()));
        let status = match fails(b) {
            Some(cond) => format!(
                "CASE WHEN {cond} THEN {} ELSE {} END",
                b.push(text(&plan.failed_state)),
                b.push(text(&plan.retry_state))
            ),
            None => b.push(text(&plan.retry_state)),
        };
        let mut sets = vec![
            format!("{} = {status}", s.status),
            format!("{} = NULL", s.owner),
            format!("{} = NULL", s.expiry),
            format!("{} = {}", s.last_error, b.push(text(&plan.last_error))),
        ];
        if let Some(c) = &s.next_run_at {
            // NULLs are bound as timestamps: a CASE whose every arm is a bare NULL is text on
            // PostgreSQL, which it will not assign to a timestamp column.
            let mut arms = Vec::new();
            if let Some(cond) = fails(b) {
                arms.push(format!("WHEN {cond} THEN {}", b.push(self.ts(None))));
            }
            // `retry_at` never decreases: one arm per distinct time, `a <= last index`.
            let last = plan.retry_at.len().saturating_sub(1);
            for (i, t) in plan.retry_at.iter().enumerate() {
                if i < last && plan.retry_at[i + 1] == *t {
                    continue;
                }
                // (positional placeholders: pushed in text order)
                if i == last {
                    arms.push(format!("ELSE {}", b.push(self.ts(Some(*t)))));
                } else {
                    let upto = b.push(Value::Int(Some(i as i64)));
                    let v = b.push(self.ts(Some(*t)));
                    arms.push(format!("WHEN {a} <= {upto} THEN {v}"));
                }
            }
            if plan.retry_at.is_empty() {
                arms.push(format!("ELSE {}", b.push(self.ts(None))));
            }
            sets.push(format!("{c} = CASE {} END", arms.join(" ")));
        }
        if let Some(c) = &s.failed_at
            && let Some(cond) = fails(b)
        {
            let now = b.push(self.ts(Some(plan.now)));
            sets.push(format!("{c} = CASE WHEN {cond} THEN {now} ELSE t.{c} END"));
        }
        if let Some(c) = &s.updated_at {
            sets.push(format!("{c} = {}", b.push(self.ts(Some(plan.now)))));
        }
        sets.push(format!(
            "{} = {a} + {}",
            s.attempts,
            b.push(Value::Int(Some(plan.increment)))
        ));
        sets.join(", ")
    }

    fn fails(plan: &RepairPlan, a: i64) -> bool {
        plan.fail_from.is_some_and(|f| a >= f)
    }

    fn count_of(v: Option<&Value>) -> u64 {
        v.cloned()
            .and_then(Value::int)
            .map_or(0, |n| u64::try_from(n).unwrap_or(0))
    }

    pub(super) async fn repair_planned_once(
        &self,
        plan: &RepairPlan,
        after: Option<&JobKey>,
        limit: usize,
    ) -> Result<PlannedBatch> {
        let d = self.db.dialect();
        let s = &self.q;
        let limit_v = Value::Int(Some(i64::try_from(limit).unwrap_or(i64::MAX)));
        let key = self.key_kind();
        match d {
            Dialect::Postgres => {
                let mut b = Binds::new(d);
                let w = self.plan_where(plan, after, &mut b)?;
                let n = b.push(limit_v);
                let sets = self.plan_sets(plan, "picked.recon_attempts", &mut b);
                let failed = match plan.fail_from {
                    Some(f) => format!(
                        "COUNT(CASE WHEN recon_attempts >= {} THEN 1 END)",
                        b.push(Value::Int(Some(f)))
                    ),
                    None => "0".into(),
                };
                let last = match self.map.key_kind {
                    KeyKind::Uuid => "MAX(CAST(recon_key AS TEXT))",
                    _ => "MAX(recon_key)",
                };
                let sql = format!(
                    "WITH picked AS (\
                       SELECT {id} AS recon_key, {att} AS recon_attempts FROM {t} \
                       WHERE {w} ORDER BY {id} LIMIT {n} FOR UPDATE SKIP LOCKED), \
                     done AS (\
                       UPDATE {t} AS t SET {sets} FROM picked WHERE t.{id} = picked.recon_key \
                       RETURNING picked.recon_key, picked.recon_attempts) \
                     SELECT COUNT(*), {failed}, {last} FROM done",
                    id = s.id,
                    att = s.attempts,
                    t = s.table,
                );
                // Planned with its values every time and walking `(status, id)`, like the
                // reads (see `Db::fetch_lenient_walking`).
                let row = self
                    .db
                    .fetch_lenient_walking(&sql, &b.values, &[Kind::Int, Kind::Int, key])
                    .await?
                    .pop()
                    .unwrap_or_default();
                let mut cells = row.into_iter().map(|c| c.ok());
                let total = Self::count_of(cells.next().flatten().as_ref());
                let failed = Self::count_of(cells.next().flatten().as_ref());
                let last = match cells.next().flatten() {
                    Some(v @ (Value::Int(Some(_)) | Value::Text(Some(_)))) => {
                        Some(self.decode_key(Some(v))?)
                    }
                    _ => None,
                };
                Ok(PlannedBatch {
                    requeued: total.saturating_sub(failed),
                    failed,
                    more: total >= limit as u64,
                    last,
                })
            }
            // One pass: the batch is the key range up to the `limit`-th processing job (found
            // on the `(status, id)` index alone), updated by one statement that tests the
            // condition and returns each repaired job's attempts; atomic under SQLite's one
            // writer lock. (Picking the rows first and updating them by key looked every
            // row up twice: about twice the plain statement.)
            Dialect::Sqlite => {
                let mut b = Binds::new(d);
                let st = exact_eq(
                    d,
                    &s.status,
                    &mut b,
                    Value::Text(Some(plan.processing_state.clone())),
                );
                let after_sql = match after {
                    Some(k) => format!(" AND {} > {}", s.id, self.id_param(&mut b, k)?),
                    None => String::new(),
                };
                let offset = b.push(Value::Int(Some(
                    i64::try_from(limit.saturating_sub(1)).unwrap_or(i64::MAX),
                )));
                let upper = self
                    .db
                    .fetch(
                        &format!(
                            "SELECT {id} FROM {t} WHERE {st}{after_sql} \
                             ORDER BY {id} LIMIT 1 OFFSET {offset}",
                            id = s.id,
                            t = s.table,
                        ),
                        &b.values,
                        &[key],
                    )
                    .await?
                    .pop()
                    .and_then(|mut r| r.pop());
                let upper = match upper {
                    Some(v @ (Value::Int(Some(_)) | Value::Text(Some(_)))) => {
                        Some(self.decode_key(Some(v))?)
                    }
                    _ => None,
                };
                let mut b = Binds::new(d);
                let sets = self.plan_sets(plan, &format!("t.{}", s.attempts), &mut b);
                let w = self.plan_where(plan, after, &mut b)?;
                let upto = match &upper {
                    Some(k) => format!(" AND {} <= {}", s.id, self.id_param(&mut b, k)?),
                    None => String::new(),
                };
                let rows = self
                    .db
                    .fetch(
                        &format!(
                            "UPDATE {t} AS t SET {sets} WHERE {w}{upto} RETURNING {att}",
                            t = s.table,
                            att = s.attempts,
                        ),
                        &b.values,
                        &[Kind::Int],
                    )
                    .await?;
                let mut out = PlannedBatch::default();
                for mut r in rows {
                    // the attempts as written: stored + increment
                    let a = r.pop().and_then(Value::int).unwrap_or(0) - plan.increment;
                    if Self::fails(plan, a) {
                        out.failed += 1;
                    } else {
                        out.requeued += 1;
                    }
                }
                // the range's end is the keyset position, whatever in it was repaired
                out.more = upper.is_some();
                out.last = upper;
                Ok(out)
            }
            Dialect::MySql => {
                let mut tx = self.db.begin().await?;
                let mut b = Binds::new(d);
                let w = self.plan_where(plan, after, &mut b)?;
                let n = b.push(limit_v);
                // `ORDER BY status, id` and the hint: see the row-by-row read.
                let sql = format!(
                    "SELECT {id}, {att} FROM {t} IGNORE INDEX FOR ORDER BY (PRIMARY) \
                     WHERE {w} ORDER BY {st}, {id} LIMIT {n} FOR UPDATE SKIP LOCKED",
                    id = s.id,
                    att = s.attempts,
                    t = s.table,
                    st = s.status,
                );
                let rows = tx.fetch(&sql, &b.values, &[key, Kind::Int]).await?;
                if rows.is_empty() {
                    return Ok(PlannedBatch::default());
                }
                let mut out = PlannedBatch::default();
                let mut b = Binds::new(d);
                let sets = self.plan_sets(plan, &format!("t.{}", s.attempts), &mut b);
                let mut ids = Vec::with_capacity(rows.len());
                for mut r in rows {
                    let a = r.pop().and_then(Value::int).unwrap_or(-1);
                    let k = self.decode_key(r.pop())?;
                    if Self::fails(plan, a) {
                        out.failed += 1;
                    } else {
                        out.requeued += 1;
                    }
                    ids.push(self.id_param(&mut b, &k)?);
                    out.last = Some(k);
                }
                let changed = tx
                    .execute(
                        &format!(
                            "UPDATE {t} AS t SET {sets} WHERE {id} IN ({list})",
                            t = s.table,
                            id = s.id,
                            list = ids.join(", ")
                        ),
                        &b.values,
                    )
                    .await?;
                if changed != out.repaired() {
                    return Err(Error::Config(format!(
                        "internal error: a planned repair of {} locked jobs in {} updated {changed} rows; nothing was changed",
                        out.repaired(),
                        self.map.table
                    )));
                }
                tx.commit().await?;
                out.more = out.repaired() >= limit as u64;
                Ok(out)
            }
        }
    }
}
