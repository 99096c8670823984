//! [`LeaseStore::repair_planned`](lease_repair::LeaseStore::repair_planned): a
//! [`RepairPlan`] applied inside the database, a few guarded statements per batch, no row
//! sent out and back.
//!
//! The plans of a run (expired leases, orphans) are applied together, in one pass: their
//! kinds are disjoint (an expired lease has an expiry, an orphan has none), so one batch picks
//! the rows any plan covers and writes each with its own plan (a `CASE` on the kind for a
//! column the plans write differently). One pass matters on PostgreSQL: a second pass would step over every row version
//! the first one left behind in the `(status, id)` index.
//!
//! Every backend writes a plan with `CASE attempts …` and picks its batch with the same
//! condition the row-by-row read uses, narrowed to rows whose every column the row-by-row path
//! could read (anything else is left to it, so that it is reported exactly as before):
//!
//! - PostgreSQL: the batch is a key range (up to the `limit`-th processing job), repaired by
//!   one `UPDATE … WHERE <condition> AND id > after AND id <= upper RETURNING last_error,
//!   attempts` counted in the same statement by the message each plan writes, with
//!   `lock_timeout` set: a row another transaction holds makes it give up after
//!   [`PG_LOCK_WAIT`], and the batch is then repaired the locking way — `WITH picked AS
//!   (SELECT … ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED), done AS (UPDATE … FROM picked …
//!   RETURNING …) SELECT COUNT(*), …, MAX(id) FROM done` — which skips held rows (as when two
//!   plans write the same message). Either way a row changed and committed since the
//!   statement's snapshot is re-checked against the condition when it is locked.
//! - SQLite: the same key range in one `BEGIN IMMEDIATE` transaction: one guarded `UPDATE OR
//!   IGNORE` of every plan with no row sent back and no SQL function called (so SQLite keeps
//!   no statement journal for it, unless the table has foreign keys; the checks compare
//!   under the collations of [`collate`]),
//!   counted by how many rows of the range each
//!   state the plans write gained (before and after, on the `(status, id)` index) less the
//!   orphans, counted before it with their own condition ([`StateGains`]); after it no job
//!   of the range may still meet a plan's condition (else `OR IGNORE` left it: the batch is
//!   rolled back and done the uncounted way). On a table with
//!   triggers, or plans whose states cannot tell the counts apart, the batch is instead one
//!   `UPDATE … RETURNING last_error, attempts`, counted in Rust by the same message rule — or,
//!   when plans write the same message, one statement per plan and outcome (given up,
//!   retried), each counted by the rows it changed.
//! - MariaDB/MySQL: `SELECT id, attempts, <plan> … FOR UPDATE SKIP LOCKED`, then one `UPDATE …
//!   WHERE id IN (…)` of exactly the locked rows (MariaDB has no `UPDATE … RETURNING`).

use chrono::{DateTime, Utc};
use lease_repair::{CandidateKind, JobKey, PlannedBatch, PlannedCounts, RepairPlan};

use super::{KeyKind, SqlLeaseStore, collate};
use crate::sql::{Binds, exact_eq};
use crate::value::{Kind, Value};
use crate::{Dialect, Error, Result, TimestampFormat};

/// How long a PostgreSQL key-range batch waits for a row another transaction holds before it
/// hands the batch to the statement that locks rows first and skips held ones.
const PG_LOCK_WAIT: &str = "200ms";

/// `x` (SQL) is an integer, in SQL that calls no function (see [`collate`]): `typeof(x) =
/// 'integer'`. `+x` has no affinity, so nothing is converted: a number sorts before any text
/// (blobs after; the collation is named, as a host's own could put text before `''`), and of
/// numbers only an integer reads back the same through `CAST(… AS INTEGER)` as text (`5.0 ||
/// ''` is `'5.0'`). A unit test holds it to `typeof` on every
/// storage class in columns of every affinity.
fn sqlite_is_integer(x: &str) -> String {
    format!("(+{x} COLLATE BINARY < '' AND (+{x} || '') = (CAST(+{x} AS INTEGER) || ''))")
}

/// `x` (SQL) is text, in SQL that calls no function: `typeof(x) = 'text'`. Text sorts after
/// every number and before every blob, whatever the collation (so it is named: a host's
/// own collation could put text before `''`).
fn sqlite_is_text(x: &str) -> String {
    format!("({x} COLLATE BINARY >= '' AND {x} < x'')")
}

/// Whether every plan writes its own message, so that a repaired row tells its plan by its
/// new `last_error` (used where `RETURNING` sees only the new row).
fn distinct_messages(plans: &[RepairPlan]) -> bool {
    plans
        .iter()
        .enumerate()
        .all(|(i, p)| plans[..i].iter().all(|q| q.last_error != p.last_error))
}

/// The statement [`key_range_update`](SqlLeaseStore::key_range_update) writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RangeUpdate {
    /// `UPDATE … RETURNING last_error, attempts`.
    Returning,
    /// SQLite's `UPDATE OR IGNORE`, nothing returned, for a table without triggers (see
    /// [`sqlite_counted`](SqlLeaseStore::sqlite_counted)). Inside a transaction SQLite keeps
    /// a statement journal for a multi-row statement that might abort: one that calls an SQL
    /// function (the checks call none, see [`collate`]) or whose conflict resolution is
    /// `ABORT`, which a `NOT NULL` status column has by default. `OR IGNORE` is only there to
    /// spare the journal: a batch in which it left a job as it was (its write would break a
    /// constraint, or meet a table's own `ON CONFLICT` clause) is rolled back and done the
    /// uncounted way, whose plain `UPDATE` fails with the error (the batch rolled back whole)
    /// or lets the clause act.
    Counted,
}

/// How SQLite's counted batch ([`sqlite_counted`](SqlLeaseStore::sqlite_counted)) tells
/// its counts: the states the plans write, and the plan whose counts are what those states
/// gained in the key range less the other plans' jobs, counted before the `UPDATE`.
#[derive(Debug, PartialEq, Eq)]
struct StateGains {
    /// The plan not counted before: the expired leases when there are any (their condition is
    /// the costly one), else the last.
    derived: usize,
    /// Every state a plan writes, once each.
    states: Vec<String>,
}

impl StateGains {
    /// `None` when the states cannot tell the counts: a plan writes the processing state (a
    /// written row would not show), or the derived plan retries and gives up into one state.
    fn new(plans: &[RepairPlan]) -> Option<Self> {
        let derived = plans
            .iter()
            .position(|p| p.kind == CandidateKind::ExpiredLease)
            .or_else(|| plans.len().checked_sub(1))?;
        let mut states: Vec<String> = Vec::new();
        for p in plans {
            for (st, _) in Self::written(p) {
                if *st == p.processing_state {
                    return None;
                }
                if !states.contains(st) {
                    states.push(st.clone());
                }
            }
        }
        let d = &plans[derived];
        if d.fail_from.is_some() && d.retry_state == d.failed_state {
            return None;
        }
        Some(Self { derived, states })
    }

    /// The states `plan` writes: `(state, given up)`.
    fn written(plan: &RepairPlan) -> impl Iterator<Item = (&String, bool)> {
        std::iter::once((&plan.retry_state, false))
            .chain(plan.fail_from.map(|_| (&plan.failed_state, true)))
    }

    /// Every plan's counts from what each of [`states`](Self::states) gained and the other
    /// plans' counts (`None` at the derived plan): `None` when they do not add up (a count
    /// the states did not gain, or a gain no plan explains).
    fn derive(
        &self,
        plans: &[RepairPlan],
        mut gained: Vec<u64>,
        counted: &[Option<PlannedCounts>],
    ) -> Option<Vec<PlannedCounts>> {
        let at = |st: &String| self.states.iter().position(|s| s == st);
        let mut out = vec![PlannedCounts::default(); plans.len()];
        for (i, p) in plans.iter().enumerate() {
            if i == self.derived {
                continue;
            }
            let c = (*counted.get(i)?)?;
            for (st, failed) in Self::written(p) {
                let g = &mut gained[at(st)?];
                *g = g.checked_sub(if failed { c.failed } else { c.requeued })?;
            }
            if p.fail_from.is_none() && c.failed > 0 {
                return None;
            }
            out[i] = c;
        }
        let d = &plans[self.derived];
        for (st, failed) in Self::written(d) {
            let g = std::mem::take(&mut gained[at(st)?]);
            if failed {
                out[self.derived].failed = g;
            } else {
                out[self.derived].requeued = g;
            }
        }
        gained.iter().all(|g| *g == 0).then_some(out)
    }
}

impl SqlLeaseStore {
    /// Whether a row (as stored before the repair, unqualified columns) is of `kind`; within
    /// the rows [`plan_where`](Self::plan_where) picks, this tells the plans apart.
    fn of_kind(&self, kind: CandidateKind) -> String {
        match kind {
            CandidateKind::Orphaned => format!("{} IS NULL", self.q.expiry),
            _ => format!("{} IS NOT NULL", self.q.expiry),
        }
    }

    /// The condition of the rows `plan` covers, without the status and key parts
    /// [`plan_where`](Self::plan_where) adds for every plan.
    fn plan_condition(&self, plan: &RepairPlan, b: &mut Binds) -> Result<String> {
        let d = self.db.dialect();
        let s = &self.q;
        let mut w = Vec::new();
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
                        w.push(format!("{} AND {e} >= {min}", sqlite_is_integer(&e)));
                    }
                    // Text: compared as text like the row-by-row read, and then as the instant
                    // it reads (a time with an offset may sort before `now` as text and still
                    // lie ahead): by the row-by-row read's own decoding (`collate::INSTANT`;
                    // an unreadable one sorts after `now`, and is left to that path).
                    (Dialect::Sqlite, _) => {
                        let now = b.push(self.ts(Some(plan.now)));
                        w.push(format!(
                            "{} AND {e} COLLATE {} < {now}",
                            sqlite_is_text(&e),
                            collate::INSTANT
                        ));
                    }
                }
                if d == Dialect::Sqlite {
                    // An owner the row-by-row path might not read (not text, not UTF-8) is
                    // left to it: it reports such rows instead of repairing them.
                    w.push(format!(
                        "({o} IS NULL OR {o} COLLATE {} = '')",
                        collate::READABLE,
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
        let max = b.push(Value::Int(Some(plan.max_attempts)));
        w.push(format!("{a} >= 0 AND {a} <= {max}"));
        Ok(w.join(" AND "))
    }

    /// `status = <the plans' processing state>` (exact: no collation folds it).
    fn processing(&self, plans: &[RepairPlan], b: &mut Binds) -> Result<String> {
        let Some(first) = plans.first() else {
            return Err(Error::Config("no repair plan to apply".into()));
        };
        if let Some(p) = plans
            .iter()
            .find(|p| p.processing_state != first.processing_state)
        {
            return Err(Error::Config(format!(
                "repair plans for two processing states ({:?} and {:?})",
                first.processing_state, p.processing_state
            )));
        }
        Ok(exact_eq(
            self.db.dialect(),
            &self.q.status,
            b,
            Value::Text(Some(first.processing_state.clone())),
        ))
    }

    /// The rows `plans` cover with keys after `after`: the row-by-row read's condition for
    /// each plan's kind, attempts in the plan's range, and (on SQLite) values the row-by-row
    /// path could decode.
    fn plan_where(
        &self,
        plans: &[RepairPlan],
        after: Option<&JobKey>,
        b: &mut Binds,
    ) -> Result<String> {
        let d = self.db.dialect();
        let s = &self.q;
        let mut w = vec![self.processing(plans, b)?];
        let mut each = Vec::with_capacity(plans.len());
        for p in plans {
            each.push(format!("({})", self.plan_condition(p, b)?));
        }
        w.push(format!("({})", each.join(" OR ")));
        if d == Dialect::Sqlite {
            w.push(sqlite_is_integer(&s.attempts));
            w.push(if self.map.key_kind == KeyKind::Integer {
                sqlite_is_integer(&s.id)
            } else {
                sqlite_is_text(&s.id)
            });
        }
        if let Some(k) = after {
            w.push(format!("{} > {}", s.id, self.id_param(b, k)?));
        }
        Ok(w.join(" AND "))
    }

    /// `value(plan)` for the row's plan: the value itself when every plan has the same one
    /// (the same SQL and bound values; e.g. `updated_at`, or the status when the plans give
    /// up alike), else a `CASE` over `is_plan(i)` (true for rows of the `i`-th plan), the last
    /// plan taking the rest.
    fn per_plan(
        plans: &[RepairPlan],
        is_plan: &dyn Fn(usize) -> String,
        b: &mut Binds,
        mut value: impl FnMut(&RepairPlan, &mut Binds) -> String,
    ) -> String {
        let Some((first, rest)) = plans.split_first() else {
            return String::new();
        };
        let mut one = b.fork();
        let sql = value(first, &mut one);
        let same = rest.iter().all(|p| {
            let mut other = b.fork();
            value(p, &mut other) == sql && other.values == one.values
        });
        if same {
            *b = one;
            return sql;
        }
        let last = plans.len() - 1;
        let mut arms = Vec::with_capacity(plans.len());
        for (i, p) in plans.iter().enumerate() {
            // (positional placeholders: pushed in text order)
            if i == last {
                arms.push(format!("ELSE {}", value(p, b)));
            } else {
                let when = is_plan(i);
                arms.push(format!("WHEN {when} THEN {}", value(p, b)));
            }
        }
        format!("CASE {} END", arms.join(" "))
    }

    /// The SET list that writes `plans` on the job table aliased `t`, with `a` the attempts
    /// as stored before the repair and `is_plan(i)` true for rows of the `i`-th plan (judged
    /// on the row as stored before the repair).
    ///
    /// MariaDB evaluates assignments left to right, each seeing the ones before it: `attempts`
    /// comes after everything that reads it, and the lease columns (which tell the kinds
    /// apart) after everything else.
    fn plan_sets(
        &self,
        plans: &[RepairPlan],
        a: &str,
        is_plan: &dyn Fn(usize) -> String,
        b: &mut Binds,
    ) -> String {
        let s = &self.q;
        let fails = |plan: &RepairPlan, b: &mut Binds| -> Option<String> {
            plan.fail_from
                .map(|f| format!("{a} >= {}", b.push(Value::Int(Some(f)))))
        };
        let text = |v: &str| Value::Text(Some(v.to_owned()));
        let status = Self::per_plan(plans, is_plan, b, |plan, b| match fails(plan, b) {
            Some(cond) => format!(
                "CASE WHEN {cond} THEN {} ELSE {} END",
                b.push(text(&plan.failed_state)),
                b.push(text(&plan.retry_state))
            ),
            None => b.push(text(&plan.retry_state)),
        });
        let last_error =
            Self::per_plan(plans, is_plan, b, |plan, b| b.push(text(&plan.last_error)));
        let mut sets = vec![
            format!("{} = {status}", s.status),
            format!("{} = {last_error}", s.last_error),
        ];
        if let Some(c) = &s.next_run_at {
            let next = Self::per_plan(plans, is_plan, b, |plan, b| {
                // NULLs are bound as timestamps: a CASE whose every arm is a bare NULL is
                // text on PostgreSQL, which it will not assign to a timestamp column.
                let mut arms = Vec::new();
                if let Some(cond) = fails(plan, b) {
                    arms.push(format!("WHEN {cond} THEN {}", b.push(self.ts(None))));
                }
                // `retry_at` never decreases: one arm per distinct time, `a <= last index`.
                let last = plan.retry_at.len().saturating_sub(1);
                for (i, t) in plan.retry_at.iter().enumerate() {
                    if i < last && plan.retry_at[i + 1] == *t {
                        continue;
                    }
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
                format!("CASE {} END", arms.join(" "))
            });
            sets.push(format!("{c} = {next}"));
        }
        if let Some(c) = &s.failed_at
            && plans.iter().any(|p| p.fail_from.is_some())
        {
            let failed_at = Self::per_plan(plans, is_plan, b, |plan, b| match fails(plan, b) {
                Some(cond) => format!(
                    "CASE WHEN {cond} THEN {} ELSE t.{c} END",
                    b.push(self.ts(Some(plan.now)))
                ),
                None => format!("t.{c}"),
            });
            sets.push(format!("{c} = {failed_at}"));
        }
        if let Some(c) = &s.updated_at {
            let now = Self::per_plan(plans, is_plan, b, |plan, b| b.push(self.ts(Some(plan.now))));
            sets.push(format!("{c} = {now}"));
        }
        // (written even when no plan counts the interrupted attempt: a host trigger `UPDATE
        // OF attempts` fires on both ways alike)
        let attempts = Self::per_plan(plans, is_plan, b, |plan, b| {
            format!("{a} + {}", b.push(Value::Int(Some(plan.increment))))
        });
        sets.push(format!("{} = {attempts}", s.attempts));
        sets.push(format!("{} = NULL", s.owner));
        sets.push(format!("{} = NULL", s.expiry));
        sets.join(", ")
    }

    fn fails(plan: &RepairPlan, a: i64) -> bool {
        plan.fail_from.is_some_and(|f| a >= f)
    }

    fn count_of(v: Option<Value>) -> u64 {
        v.and_then(Value::int)
            .map_or(0, |n| u64::try_from(n).unwrap_or(0))
    }

    /// `CASE WHEN <of plan 0's kind> THEN 0 WHEN … END`: which plan a row (as stored before
    /// the repair) belongs to.
    fn plan_index(&self, plans: &[RepairPlan]) -> String {
        let arms: Vec<String> = plans
            .iter()
            .enumerate()
            .map(|(i, p)| format!("WHEN {} THEN {i}", self.of_kind(p.kind)))
            .collect();
        format!("CASE {} END", arms.join(" "))
    }

    /// A key cell as the keyset position, `None` for SQL NULL.
    fn position(&self, v: Option<Value>) -> Result<Option<JobKey>> {
        match v {
            Some(v @ (Value::Int(Some(_)) | Value::Text(Some(_)))) => {
                Ok(Some(self.decode_key(Some(v))?))
            }
            _ => Ok(None),
        }
    }

    /// `UPDATE … SET <every plan> WHERE <condition> AND id > after [AND id <= upper]`: one key
    /// range of every plan in one statement. [`RangeUpdate::Returning`] adds `RETURNING
    /// last_error, attempts` (the new rows tell their plan by the message written; see
    /// [`distinct_messages`]); [`RangeUpdate::Counted`] returns nothing.
    fn key_range_update(
        &self,
        plans: &[RepairPlan],
        after: Option<&JobKey>,
        upper: Option<&JobKey>,
        how: RangeUpdate,
        b: &mut Binds,
    ) -> Result<String> {
        let s = &self.q;
        let sets = self.plan_sets(
            plans,
            &format!("t.{}", s.attempts),
            &|i| self.of_kind(plans[i].kind),
            b,
        );
        let w = self.plan_where(plans, after, b)?;
        let upto = self.up_to(upper, b)?;
        Ok(match how {
            RangeUpdate::Returning => format!(
                "UPDATE {t} AS t SET {sets} WHERE {w}{upto} RETURNING {}, {}",
                s.last_error,
                s.attempts,
                t = s.table
            ),
            RangeUpdate::Counted => format!(
                "UPDATE OR IGNORE {t} AS t SET {sets} WHERE {w}{upto}",
                t = s.table
            ),
        })
    }

    /// ` AND id <= upper`, or nothing when the range runs to the end.
    fn up_to(&self, upper: Option<&JobKey>, b: &mut Binds) -> Result<String> {
        Ok(match upper {
            Some(k) => format!(" AND {} <= {}", self.q.id, self.id_param(b, k)?),
            None => String::new(),
        })
    }

    /// `COUNT(<rows of plan i>), COUNT(<of those, given up>)` for every plan, then
    /// `COUNT(*)`: the columns [`read_counts`](Self::read_counts) reads. `conds(i, plan, b)`
    /// gives the condition of the `i`-th plan's rows and, if the plan gives up on any, the
    /// condition of those (binds pushed in that order).
    fn count_columns(
        plans: &[RepairPlan],
        b: &mut Binds,
        mut conds: impl FnMut(usize, &RepairPlan, &mut Binds) -> (String, Option<String>),
    ) -> String {
        let mut cols = Vec::with_capacity(2 * plans.len() + 1);
        for (i, p) in plans.iter().enumerate() {
            let (rows, given_up) = conds(i, p, b);
            cols.push(format!("COUNT(CASE WHEN {rows} THEN 1 END)"));
            cols.push(given_up.map_or_else(
                || "0".to_owned(),
                |c| format!("COUNT(CASE WHEN {c} THEN 1 END)"),
            ));
        }
        cols.push("COUNT(*)".into());
        cols.join(", ")
    }

    /// The per-plan counts of a statement that selected, for each plan, the rows it repaired
    /// and of those the ones given up, and then all rows: `None` when the per-plan counts do
    /// not add up to all rows (a cell that did not read, or a row of no plan).
    fn read_counts(
        plans: &[RepairPlan],
        cells: &mut impl Iterator<Item = Option<Value>>,
    ) -> Option<PlannedBatch> {
        let mut out = PlannedBatch::empty(plans.len());
        for c in &mut out.counts {
            let total = Self::count_of(cells.next().flatten());
            c.failed = Self::count_of(cells.next().flatten());
            c.requeued = total.checked_sub(c.failed)?;
        }
        let all = Self::count_of(cells.next().flatten());
        (all == out.repaired()).then_some(out)
    }

    /// `SELECT id … LIMIT 1 OFFSET limit - 1` over the processing jobs after `after`: the end
    /// of the next key range that holds at most `limit` of them (found on the `(status, id)`
    /// index alone), or no row when fewer are left.
    fn range_upper(
        &self,
        plans: &[RepairPlan],
        after: Option<&JobKey>,
        limit: usize,
        b: &mut Binds,
    ) -> Result<String> {
        let s = &self.q;
        let st = self.processing(plans, b)?;
        let after_sql = self.after_key(after, b)?;
        let offset = b.push(Value::Int(Some(
            i64::try_from(limit.saturating_sub(1)).unwrap_or(i64::MAX),
        )));
        Ok(format!(
            "SELECT {sel} FROM {t} WHERE {st}{after_sql} ORDER BY {id} LIMIT 1 OFFSET {offset}",
            sel = self.id_select(),
            id = s.id,
            t = s.table,
        ))
    }

    /// PostgreSQL's batch as a key range, like SQLite's: one `UPDATE … WHERE <condition> AND
    /// id > after AND id <= upper` of every plan at once, no row locked first and no second
    /// look-up by key (the locking statement costs about a quarter more), counted by the message
    /// each plan writes. A row another transaction holds would make it wait, so it waits at
    /// most [`PG_LOCK_WAIT`]: then the batch is rolled back and `None` returned, and the
    /// caller repairs it the locking way, which skips held rows. `None` too when two plans
    /// write the same message, or when a repaired row comes out with no plan's message (a
    /// trigger rewrote it): the new rows could not be told apart.
    async fn pg_key_range(
        &self,
        plans: &[RepairPlan],
        after: Option<&JobKey>,
        limit: usize,
    ) -> Result<Option<PlannedBatch>> {
        if !distinct_messages(plans) {
            return Ok(None);
        }
        let d = self.db.dialect();
        let mut tx = self.db.begin_walking(Some(PG_LOCK_WAIT)).await?;
        let mut b = Binds::new(d);
        let upper_sql = self.range_upper(plans, after, limit, &mut b)?;
        let upper = match tx
            .fetch_unprepared(&upper_sql, &b.values, &[self.key_kind()])
            .await
        {
            Ok(mut rows) => match rows.pop().and_then(|mut r| r.pop()) {
                Some(Err(why)) => {
                    return Err(Error::Config(format!(
                        "the end of a key range in {} could not be read: {why}",
                        self.map.table
                    )));
                }
                cell => cell.and_then(|c| c.ok()),
            },
            Err(e) if e.is_pg_lock_timeout() => {
                tx.rollback().await?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let upper = self.position(upper)?;
        let mut b = Binds::new(d);
        let update =
            self.key_range_update(plans, after, upper.as_ref(), RangeUpdate::Returning, &mut b)?;
        // (and every row: one with no plan's message, say a trigger rewrote it, is in no count)
        let counts = Self::count_columns(plans, &mut b, |_, p, b| {
            let m = b.push(Value::Text(Some(p.last_error.clone())));
            // written attempts = stored + increment
            let given_up = p.fail_from.map(|f| {
                let f = b.push(Value::Int(Some(f.saturating_add(p.increment))));
                format!("recon_error = {m} AND recon_attempts >= {f}")
            });
            (format!("recon_error = {m}"), given_up)
        });
        let sql = format!(
            "WITH done (recon_error, recon_attempts) AS ({update}) SELECT {counts} FROM done"
        );
        let row = match tx
            .fetch_unprepared(&sql, &b.values, &vec![Kind::Int; 2 * plans.len() + 1])
            .await
        {
            Ok(mut rows) => rows.pop().unwrap_or_default(),
            // (rolled back before the caller goes on: on another connection, the locking way
            // would skip the rows this transaction still held)
            Err(e) if e.is_pg_lock_timeout() => {
                tx.rollback().await?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut cells = row.into_iter().map(|c| c.ok());
        let Some(out) = Self::read_counts(plans, &mut cells) else {
            // A row came out with no plan's message (a trigger rewrote it): rolled back, and
            // done the locking way, which does not count by message.
            tracing::debug!(
                table = %self.map.table,
                "a key-range repair wrote messages of no plan; the batch goes the locking way"
            );
            tx.rollback().await?;
            return Ok(None);
        };
        tx.commit().await?;
        Ok(Some(Self::ending_at(out, upper)))
    }

    /// `out` as the batch of a key range ending at `upper`: the range's end is the keyset
    /// position, whatever in it was repaired; `None` (the range ran to the table's end) is the
    /// last batch.
    fn ending_at(mut out: PlannedBatch, upper: Option<JobKey>) -> PlannedBatch {
        out.more = upper.is_some();
        out.last = upper;
        out
    }

    /// The end of SQLite's next key range (see [`range_upper`](Self::range_upper)), read in
    /// the batch's transaction.
    async fn sqlite_range_end(
        &self,
        tx: &mut crate::db::Tx,
        plans: &[RepairPlan],
        after: Option<&JobKey>,
        limit: usize,
    ) -> Result<Option<JobKey>> {
        let mut b = Binds::new(self.db.dialect());
        let sql = self.range_upper(plans, after, limit, &mut b)?;
        let end = Value::single(tx.fetch(&sql, &b.values, &[self.key_kind()]).await?);
        self.position(end)
    }

    /// SQLite's usual batch, without a row sent back: in one `BEGIN IMMEDIATE` transaction
    /// (nothing else writes while it holds SQLite's write lock), the guarded `UPDATE` of every
    /// plan with no `RETURNING` (SQLite hands every returned row over one by one: the slower
    /// part of the batch), counted by what it did to the key range. Before and after it, how
    /// many rows of the range hold each state the plans write (on the `(status, id)` index
    /// alone, when there is one); before it, the jobs of every plan but one, each with its
    /// plan's own condition; after it, every plan's, which must be none (a job still meeting
    /// its condition is one `OR IGNORE` left as it was; after the `UPDATE` the range's
    /// processing jobs are few, so this count is cheap). What each state gained, less those
    /// counted before, is the one plan left's — the expired leases, whose condition checks
    /// every value and would cost the most to test twice. See [`StateGains`].
    ///
    /// `None` (nothing done) when the plans' states cannot tell the counts apart (see
    /// [`StateGains::new`]) or the table has triggers (a trigger could change other jobs'
    /// states): the batch then goes the `RETURNING` way. As a net for triggers the catalogue
    /// lookup misses, `total_changes()` must move by exactly the rows the `UPDATE` changed and
    /// the gains must add up to them, else the transaction is rolled back and `None` returned.
    async fn sqlite_counted(
        &self,
        plans: &[RepairPlan],
        after: Option<&JobKey>,
        limit: usize,
    ) -> Result<Option<PlannedBatch>> {
        let Some(gains) = StateGains::new(plans) else {
            return Ok(None);
        };
        let mut tx = self.begin_collated().await?;
        // (rolled back before the uncounted way begins on another connection: it holds
        // SQLite's write lock)
        match self
            .sqlite_counted_in(&mut tx, &gains, plans, after, limit)
            .await?
        {
            Some(out) => {
                tx.commit().await?;
                Ok(Some(out))
            }
            None => {
                tx.rollback().await?;
                Ok(None)
            }
        }
    }

    /// [`sqlite_counted`](Self::sqlite_counted)'s batch in `tx`: `None` when it cannot be
    /// counted (the caller rolls back).
    async fn sqlite_counted_in(
        &self,
        tx: &mut crate::db::Tx,
        gains: &StateGains,
        plans: &[RepairPlan],
        after: Option<&JobKey>,
        limit: usize,
    ) -> Result<Option<PlannedBatch>> {
        let d = self.db.dialect();
        if self.sqlite_has_triggers(tx).await? {
            return Ok(None);
        }
        let upper = self.sqlite_range_end(tx, plans, after, limit).await?;
        // Before the UPDATE: the states' rows, the other plans' jobs (given up, all),
        // total_changes(); after it the same, with every plan's jobs.
        let width = |plans_counted: usize| gains.states.len() + 2 * plans_counted + 1;
        let (sql, values) = self.counted_snapshot(gains, plans, after, upper.as_ref(), false)?;
        let kinds = vec![Kind::Int; width(plans.len() - 1)];
        // (a row of another width than asked for is not read: the uncounted way)
        let Some(before) =
            Self::ints(tx.fetch(&sql, &values, &kinds).await?).filter(|c| c.len() == kinds.len())
        else {
            return Ok(None);
        };
        let mut ub = Binds::new(d);
        let update =
            self.key_range_update(plans, after, upper.as_ref(), RangeUpdate::Counted, &mut ub)?;
        // (an error is the data's — say, a foreign key the repair breaks: the batch is
        // rolled back whole)
        let changed = tx.execute(&update, &ub.values).await?;
        let (sql, values) = self.counted_snapshot(gains, plans, after, upper.as_ref(), true)?;
        let kinds = vec![Kind::Int; width(plans.len())];
        let Some(after_counts) =
            Self::ints(tx.fetch(&sql, &values, &kinds).await?).filter(|c| c.len() == kinds.len())
        else {
            return Ok(None);
        };
        let split = |c: &[u64]| {
            let (held, rest) = c.split_at(gains.states.len());
            let (plans, total) = rest.split_at(rest.len() - 1);
            (held.to_vec(), plans.to_vec(), total[0])
        };
        let (held, others, total_before) = split(&before);
        let (now_held, left, total_after) = split(&after_counts);
        // A job still meeting its plan's condition is one `OR IGNORE` left as it was (its
        // write would break a constraint, or meet a table's own conflict clause): rolled back,
        // and the batch done the uncounted way, whose plain `UPDATE` fails with the error or
        // lets the clause act.
        if left.iter().any(|n| *n != 0) {
            tracing::debug!(
                table = %self.map.table,
                "a counted repair left jobs as they were (a constraint); the batch goes the uncounted way"
            );
            return Ok(None);
        }
        let gained: Option<Vec<u64>> = now_held
            .iter()
            .zip(&held)
            .map(|(a, b)| a.checked_sub(*b))
            .collect();
        let mut counted = others.chunks_exact(2).map(|c| PlannedCounts {
            failed: c[0],
            requeued: c[1].saturating_sub(c[0]),
        });
        let counted: Vec<Option<PlannedCounts>> = (0..plans.len())
            .map(|i| {
                if i == gains.derived {
                    None
                } else {
                    counted.next()
                }
            })
            .collect();
        let by_others = total_after
            .checked_sub(total_before)
            .and_then(|t| t.checked_sub(changed));
        let counts = gained
            .filter(|g| g.iter().sum::<u64>() == changed)
            .and_then(|g| gains.derive(plans, g, &counted));
        match counts {
            Some(counts) if by_others == Some(0) => Ok(Some(Self::ending_at(
                PlannedBatch {
                    counts,
                    ..PlannedBatch::empty(plans.len())
                },
                upper,
            ))),
            _ => {
                tracing::debug!(
                    table = %self.map.table,
                    changed,
                    ?by_others,
                    "a counted repair could not tell what it wrote; the batch goes the uncounted way"
                );
                Ok(None)
            }
        }
    }

    /// The counted batch's snapshot of its key range, taken before and after its `UPDATE`
    /// (see [`sqlite_counted`](Self::sqlite_counted)): how many rows hold each of the states
    /// the plans write, then for every plan (but the derived one, unless `with_derived`) its
    /// jobs given up and all of them, by its own condition, then `total_changes()`. SQL and
    /// bound values.
    fn counted_snapshot(
        &self,
        gains: &StateGains,
        plans: &[RepairPlan],
        after: Option<&JobKey>,
        upper: Option<&JobKey>,
        with_derived: bool,
    ) -> Result<(String, Vec<Value>)> {
        let mut b = Binds::new(self.db.dialect());
        let mut cols = self.state_counts(&gains.states, after, upper, &mut b)?;
        let mut from = Vec::new();
        for (i, p) in plans.iter().enumerate() {
            if i == gains.derived && !with_derived {
                continue;
            }
            let given_up = match p.fail_from {
                Some(f) => format!(
                    "COUNT(CASE WHEN {} >= {} THEN 1 END)",
                    self.q.attempts,
                    b.push(Value::Int(Some(f)))
                ),
                None => "0".to_owned(),
            };
            let w = self.plan_where(std::slice::from_ref(p), after, &mut b)?;
            let upto = self.up_to(upper, &mut b)?;
            from.push(format!(
                "(SELECT {given_up} AS f, COUNT(*) AS n FROM {t} AS t WHERE {w}{upto}) AS p{i}",
                t = self.q.table
            ));
            cols.push(format!("p{i}.f, p{i}.n"));
        }
        cols.push("total_changes()".to_owned());
        let mut sql = format!("SELECT {}", cols.join(", "));
        if !from.is_empty() {
            sql.push_str(&format!(" FROM {}", from.join(", ")));
        }
        Ok((sql, b.values))
    }

    /// `(SELECT COUNT(*) FROM <table> WHERE status = <state> AND <key range>)` for each of
    /// `states`: a count the `(status, id)` index answers alone.
    fn state_counts(
        &self,
        states: &[String],
        after: Option<&JobKey>,
        upper: Option<&JobKey>,
        b: &mut Binds,
    ) -> Result<Vec<String>> {
        states
            .iter()
            .map(|st| {
                let st = exact_eq(
                    self.db.dialect(),
                    &self.q.status,
                    b,
                    Value::Text(Some(st.clone())),
                );
                let from = self.after_key(after, b)?;
                let upto = self.up_to(upper, b)?;
                Ok(format!(
                    "(SELECT COUNT(*) FROM {t} WHERE {st}{from}{upto})",
                    t = self.q.table
                ))
            })
            .collect()
    }

    /// ` AND id > after`, or nothing for the first batch.
    fn after_key(&self, after: Option<&JobKey>, b: &mut Binds) -> Result<String> {
        Ok(match after {
            Some(k) => format!(" AND {} > {}", self.q.id, self.id_param(b, k)?),
            None => String::new(),
        })
    }

    /// The cells of a one-row answer as counts: `None` when a cell is not a count.
    fn ints(rows: Vec<Vec<Value>>) -> Option<Vec<u64>> {
        rows.into_iter()
            .next()?
            .into_iter()
            .map(|v| v.int().and_then(|n| u64::try_from(n).ok()))
            .collect()
    }

    /// The integer of a one-row, one-column answer.
    fn single_int(rows: Vec<Vec<Value>>) -> Option<i64> {
        Value::single(rows)?.int()
    }

    /// Whether SQLite knows a trigger on the job table (in its schema, or a temporary one) —
    /// or cannot tell: an unqualified table in neither `main` nor `temp` is one found through
    /// an attached database, whose triggers live there (a `BEFORE` trigger that skips a row
    /// with `RAISE(IGNORE)` would change neither the rows changed nor `total_changes()`, and
    /// the orphans counted before the `UPDATE` would be off).
    async fn sqlite_has_triggers(&self, tx: &mut crate::db::Tx) -> Result<bool> {
        let table = &self.map.table;
        let name = Value::Text(Some(table.table().to_string()));
        let found = |schema: &str, kind: &str, column: &str| {
            format!(
                "EXISTS (SELECT 1 FROM {schema}.sqlite_master WHERE type = '{kind}' \
                   AND {column} = ? COLLATE NOCASE)"
            )
        };
        let (sql, binds) = match table.schema() {
            Some(schema) => (
                format!(
                    "SELECT {} OR {}",
                    found(&schema.quoted(Dialect::Sqlite), "trigger", "tbl_name"),
                    found("temp", "trigger", "tbl_name")
                ),
                2,
            ),
            None => (
                format!(
                    "SELECT {} OR {} OR NOT ({} OR {})",
                    found("main", "trigger", "tbl_name"),
                    found("temp", "trigger", "tbl_name"),
                    found("main", "table", "name"),
                    found("temp", "table", "name")
                ),
                4,
            ),
        };
        let any = Self::single_int(tx.fetch(&sql, &vec![name; binds], &[Kind::Int]).await?);
        Ok(any != Some(0))
    }

    /// SQLite's key range when the plans write the same message: plan by plan and outcome by
    /// outcome (given up, retried), each statement counted by the rows it changed.
    async fn sqlite_plan_by_plan(
        &self,
        tx: &mut crate::db::Tx,
        plans: &[RepairPlan],
        after: Option<&JobKey>,
        upper: Option<&JobKey>,
        out: &mut PlannedBatch,
    ) -> Result<()> {
        let d = self.db.dialect();
        let s = &self.q;
        for (i, plan) in plans.iter().enumerate() {
            let one = std::slice::from_ref(plan);
            let outcomes: &[(Option<&str>, bool)] = match plan.fail_from {
                None => &[(None, false)],
                // every covered count fails (`attempts >= 0` is in the condition)
                Some(0) => &[(None, true)],
                Some(_) => &[(Some(">="), true), (Some("<"), false)],
            };
            for &(op, failed) in outcomes {
                let mut b = Binds::new(d);
                let sets = self.plan_sets(
                    one,
                    &format!("t.{}", s.attempts),
                    &|_| String::new(),
                    &mut b,
                );
                let w = self.plan_where(one, after, &mut b)?;
                let split = match (op, plan.fail_from) {
                    (Some(op), Some(f)) => {
                        format!(" AND {} {op} {}", s.attempts, b.push(Value::Int(Some(f))))
                    }
                    _ => String::new(),
                };
                let upto = self.up_to(upper, &mut b)?;
                let n = tx
                    .execute(
                        &format!(
                            "UPDATE {t} AS t SET {sets} WHERE {w}{split}{upto}",
                            t = s.table,
                        ),
                        &b.values,
                    )
                    .await?;
                out.counts[i].add_n(failed, n);
            }
        }
        Ok(())
    }

    pub(super) async fn repair_planned_once(
        &self,
        plans: &[RepairPlan],
        after: Option<&JobKey>,
        limit: usize,
    ) -> Result<PlannedBatch> {
        let d = self.db.dialect();
        let s = &self.q;
        let limit_v = Value::Int(Some(i64::try_from(limit).unwrap_or(i64::MAX)));
        let key = self.key_kind();
        match d {
            Dialect::Postgres => {
                if let Some(out) = self.pg_key_range(plans, after, limit).await? {
                    return Ok(out);
                }
                // Rows another transaction holds (or plans the new rows cannot tell apart):
                // lock the batch's rows first, skipping held ones, then update them.
                let mut b = Binds::new(d);
                let w = self.plan_where(plans, after, &mut b)?;
                let n = b.push(limit_v);
                let sets = self.plan_sets(
                    plans,
                    "picked.recon_attempts",
                    &|i| format!("picked.recon_plan = {i}"),
                    &mut b,
                );
                let counts = Self::count_columns(plans, &mut b, |i, p, b| {
                    let given_up = p.fail_from.map(|f| {
                        let f = b.push(Value::Int(Some(f)));
                        format!("recon_plan = {i} AND recon_attempts >= {f}")
                    });
                    (format!("recon_plan = {i}"), given_up)
                });
                let last = match self.map.key_kind {
                    KeyKind::Uuid => "MAX(CAST(recon_key AS TEXT))",
                    _ => "MAX(recon_key)",
                };
                let sql = format!(
                    "WITH picked AS (\
                       SELECT {id} AS recon_key, {att} AS recon_attempts, {which} AS recon_plan \
                       FROM {t} WHERE {w} ORDER BY {id} LIMIT {n} FOR UPDATE SKIP LOCKED), \
                     done AS (\
                       UPDATE {t} AS t SET {sets} FROM picked WHERE t.{id} = picked.recon_key \
                       RETURNING picked.recon_key, picked.recon_attempts, picked.recon_plan) \
                     SELECT {counts}, {last} FROM done",
                    id = s.id,
                    att = s.attempts,
                    t = s.table,
                    which = self.plan_index(plans),
                );
                let mut kinds = vec![Kind::Int; 2 * plans.len() + 1];
                kinds.push(key);
                // Planned with its values every time and walking `(status, id)`, like the
                // reads (see `Db::fetch_lenient_walking`).
                let row = self
                    .db
                    .fetch_lenient_walking(&sql, &b.values, &kinds)
                    .await?
                    .pop()
                    .unwrap_or_default();
                let mut cells = row.into_iter().map(|c| c.ok());
                // (the statement has committed: counts that do not add up are reported, not
                // guessed)
                let Some(mut out) = Self::read_counts(plans, &mut cells) else {
                    return Err(Error::Config(format!(
                        "internal error: the counts of a planned repair in {} do not add up; the batch was written",
                        self.map.table
                    )));
                };
                out.last = self.position(cells.next().flatten())?;
                out.more = out.repaired() >= limit as u64;
                Ok(out)
            }
            // The batch is the key range up to the `limit`-th processing job (found on the
            // `(status, id)` index alone), repaired by statements that test the condition, in
            // one transaction: updated and counted by what the written states gained (see
            // `sqlite_counted`), or, on a table with triggers, updated with `RETURNING` and
            // counted in Rust.
            // (Picking the rows first and updating them by key looked every row up twice:
            // about twice the plain statement.)
            Dialect::Sqlite => {
                if let Some(out) = self.sqlite_counted(plans, after, limit).await? {
                    return Ok(out);
                }
                let mut tx = self.begin_collated().await?;
                let upper = self.sqlite_range_end(&mut tx, plans, after, limit).await?;
                let mut out = PlannedBatch::empty(plans.len());
                if distinct_messages(plans) {
                    // Every plan in one statement; the new rows tell their plan by the message
                    // written and their outcome by the attempts written.
                    let mut b = Binds::new(d);
                    let update = self.key_range_update(
                        plans,
                        after,
                        upper.as_ref(),
                        RangeUpdate::Returning,
                        &mut b,
                    )?;
                    let rows = tx
                        .fetch(&update, &b.values, &[Kind::Text, Kind::Int])
                        .await?;
                    for r in rows {
                        let mut r = r.into_iter();
                        let (Some(Value::Text(Some(msg))), Some(Value::Int(Some(a)))) =
                            (r.next(), r.next())
                        else {
                            return Err(Error::Config(format!(
                                "internal error: a planned repair in {} wrote no message or attempts; nothing was changed",
                                self.map.table
                            )));
                        };
                        let Some(i) = plans.iter().position(|p| p.last_error == msg) else {
                            return Err(Error::Config(format!(
                                "internal error: a planned repair in {} wrote a message of no plan; nothing was changed",
                                self.map.table
                            )));
                        };
                        // the attempts as written: stored + increment
                        let plan = &plans[i];
                        out.counts[i].add(Self::fails(plan, a.saturating_sub(plan.increment)));
                    }
                } else {
                    self.sqlite_plan_by_plan(&mut tx, plans, after, upper.as_ref(), &mut out)
                        .await?;
                }
                tx.commit().await?;
                Ok(Self::ending_at(out, upper))
            }
            Dialect::MySql => {
                let mut tx = self.db.begin().await?;
                let mut b = Binds::new(d);
                let w = self.plan_where(plans, after, &mut b)?;
                let n = b.push(limit_v);
                // `ORDER BY status, id` and the hint: see the row-by-row read.
                let sql = format!(
                    "SELECT {id}, {att}, {which} FROM {t} IGNORE INDEX FOR ORDER BY (PRIMARY) \
                     WHERE {w} ORDER BY {st}, {id} LIMIT {n} FOR UPDATE SKIP LOCKED",
                    id = s.id,
                    att = s.attempts,
                    t = s.table,
                    st = s.status,
                    which = self.plan_index(plans),
                );
                let rows = tx
                    .fetch(&sql, &b.values, &[key, Kind::Int, Kind::Int])
                    .await?;
                let mut out = PlannedBatch::empty(plans.len());
                if rows.is_empty() {
                    // (and its locks released now: under REPEATABLE READ even an empty
                    // locking read can hold gap locks)
                    tx.rollback().await?;
                    return Ok(out);
                }
                let mut b = Binds::new(d);
                let sets = self.plan_sets(
                    plans,
                    &format!("t.{}", s.attempts),
                    &|i| self.of_kind(plans[i].kind),
                    &mut b,
                );
                let mut ids = Vec::with_capacity(rows.len());
                for mut r in rows {
                    let i = r.pop().and_then(Value::int);
                    let a = r.pop().and_then(Value::int).unwrap_or(-1);
                    let k = self.decode_key(r.pop())?;
                    let Some(i) = i
                        .and_then(|i| usize::try_from(i).ok())
                        .filter(|i| *i < plans.len())
                    else {
                        return Err(Error::Config(format!(
                            "internal error: a planned repair in {} picked job {k} of no plan; nothing was changed",
                            self.map.table
                        )));
                    };
                    out.counts[i].add(Self::fails(&plans[i], a));
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

#[cfg(test)]
mod tests {
    //! SQLite's counted batches, which the conformance suite cannot tell from the uncounted
    //! way (both write and count the same): taken when they can count, refused otherwise;
    //! and how they tell their counts ([`StateGains`]). SQLite's checks: the collations
    //! against the row-by-row read's decoding, the type checks against `typeof`, the counted
    //! `UPDATE` calling no function. A PostgreSQL key range handed to the locking way
    //! releasing its rows first.

    use chrono::{DateTime, Duration, Utc};
    use lease_repair::{CandidateKind, PlannedCounts, RepairPlan};
    use proptest::prelude::*;

    use super::StateGains;
    use crate::{ConnectOptions, Db, JobTable, SqlLeaseStore};

    fn now() -> DateTime<Utc> {
        "2024-01-24T12:00:00Z".parse().unwrap()
    }

    fn plan(kind: CandidateKind) -> RepairPlan {
        RepairPlan {
            kind,
            processing_state: "processing".into(),
            now: now(),
            increment: 0,
            max_attempts: 100,
            fail_from: Some(3),
            retry_at: vec![now() + Duration::seconds(10)],
            retry_state: "retry".into(),
            failed_state: "failed".into(),
            last_error: format!("{kind:?}"),
        }
    }

    /// Run `sql` (set-up: nothing bound), failing the test on an error.
    async fn exec(db: &Db, sql: &str) {
        db.execute(sql, &[]).await.unwrap();
    }

    /// A fresh directory for one test's database files.
    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "recon-plan-{name}-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// One connection (an attached database is per connection), a fresh file.
    async fn db(name: &str) -> (Db, std::path::PathBuf) {
        let dir = temp_dir(name);
        let opts = ConnectOptions {
            max_connections: 1,
            ..ConnectOptions::default()
        };
        let url = format!("sqlite:{}", dir.join("main.db").display());
        (Db::connect_with(&url, opts).await.unwrap(), dir)
    }

    /// Jobs 1–3 expired (attempts 0, 3 and 1; job 3's owner is not UTF-8 — a truncated
    /// `ö` — so the checks leave it to the row-by-row path), 4 orphaned, 5 with a live lease, 6 done.
    async fn jobs(db: &Db, table: &str) {
        exec(
            db,
            &format!(
                "CREATE TABLE {table} (id INTEGER PRIMARY KEY, status TEXT NOT NULL, \
                 locked_by TEXT, locked_until TEXT, attempts INTEGER, last_error TEXT)"
            ),
        )
        .await;
        exec(
            db,
            &format!(
                "INSERT INTO {table} VALUES \
                 (1, 'processing', 'w', '2024-01-24T11:00:00+00:00', 0, NULL), \
                 (2, 'processing', 'w', '2024-01-24T11:00:00+00:00', 3, NULL), \
                 (3, 'processing', CAST(x'77c3' AS TEXT), '2024-01-24T11:00:00+00:00', 1, NULL), \
                 (4, 'processing', NULL, NULL, 1, NULL), \
                 (5, 'processing', 'w', '2024-01-24T13:00:00+00:00', 0, NULL), \
                 (6, 'done', NULL, NULL, 0, NULL)"
            ),
        )
        .await;
    }

    async fn statuses(db: &Db, table: &str) -> Vec<Option<String>> {
        let rows = db
            .fetch(
                &format!("SELECT status FROM {table} ORDER BY id"),
                &[],
                &[crate::value::Kind::Text],
            )
            .await
            .unwrap();
        rows.into_iter()
            .map(|mut r| r.pop().and_then(crate::value::Value::text))
            .collect()
    }

    fn store(db: &Db, table: &str) -> SqlLeaseStore {
        db.lease_store(JobTable::builder(table).build().unwrap())
    }

    fn plans() -> [RepairPlan; 2] {
        [
            plan(CandidateKind::ExpiredLease),
            plan(CandidateKind::Orphaned),
        ]
    }

    fn c(requeued: u64, failed: u64) -> PlannedCounts {
        PlannedCounts { requeued, failed }
    }

    /// What `plans` gaining `counts` adds to each of `g.states`.
    fn gains_of(g: &StateGains, plans: &[RepairPlan], counts: &[PlannedCounts]) -> Vec<u64> {
        let mut out = vec![0; g.states.len()];
        for (p, n) in plans.iter().zip(counts) {
            for (st, failed) in StateGains::written(p) {
                let i = g.states.iter().position(|s| s == st).unwrap();
                out[i] += if failed { n.failed } else { n.requeued };
            }
        }
        out
    }

    #[test]
    fn expired_leases_get_what_the_states_gained_less_the_orphans() {
        let plans = plans();
        let g = StateGains::new(&plans).unwrap();
        assert_eq!(g.derived, 0, "the expired leases");
        assert_eq!(g.states, ["retry", "failed"]);
        let counts = [c(7, 2), c(3, 1)];
        let gained = gains_of(&g, &plans, &counts);
        assert_eq!(gained, [10, 3]);
        assert_eq!(
            g.derive(&plans, gained, &[None, Some(counts[1])]),
            Some(counts.to_vec())
        );
        // more orphans counted than the states gained, or a gain no plan explains
        assert_eq!(g.derive(&plans, vec![2, 3], &[None, Some(c(3, 1))]), None);
        let mut one = plans[1].clone();
        one.fail_from = None;
        let both = [plans[0].clone(), one];
        assert_eq!(g.derive(&both, vec![10, 3], &[None, Some(c(3, 1))]), None);
    }

    #[test]
    fn states_that_cannot_tell_the_counts_are_refused() {
        let mut same = plan(CandidateKind::ExpiredLease);
        same.failed_state = "retry".into();
        assert_eq!(StateGains::new(&[same.clone()]), None, "one state for both");
        // …unless the plan never gives up
        same.fail_from = None;
        assert!(StateGains::new(&[same]).is_some());
        let mut stays = plan(CandidateKind::Orphaned);
        stays.retry_state = "processing".into();
        assert_eq!(
            StateGains::new(&[plan(CandidateKind::ExpiredLease), stays]),
            None,
            "a written row would not show"
        );
        assert_eq!(StateGains::new(&[]), None);
        // orphans alone: they are the derived plan
        let g = StateGains::new(&[plan(CandidateKind::Orphaned)]).unwrap();
        assert_eq!(g.derived, 0);
    }

    fn any_plan(kind: CandidateKind) -> impl Strategy<Value = RepairPlan> {
        let state = prop::sample::select(vec!["a", "b", "c", "processing"]);
        (state.clone(), state, prop::option::of(0_i64..5)).prop_map(move |(r, f, from)| {
            let mut p = plan(kind);
            p.retry_state = r.into();
            p.failed_state = f.into();
            p.fail_from = from;
            p
        })
    }

    proptest! {
        /// Whatever states the plans write, when `StateGains` takes them, the counts it
        /// derives are the counts that were written.
        #[test]
        fn derived_counts_are_the_written_counts(
            expired in any_plan(CandidateKind::ExpiredLease),
            orphans in any_plan(CandidateKind::Orphaned),
            n in prop::array::uniform4(0_u64..1_000),
        ) {
            let plans = [expired, orphans];
            let Some(g) = StateGains::new(&plans) else {
                return Ok(());
            };
            let counts: Vec<PlannedCounts> = plans
                .iter()
                .zip([(n[0], n[1]), (n[2], n[3])])
                .map(|(p, (r, f))| c(r, if p.fail_from.is_some() { f } else { 0 }))
                .collect();
            let gained = gains_of(&g, &plans, &counts);
            let counted: Vec<Option<PlannedCounts>> = (0..2)
                .map(|i| (i != g.derived).then_some(counts[i]))
                .collect();
            prop_assert_eq!(g.derive(&plans, gained, &counted), Some(counts));
        }
    }

    #[tokio::test]
    async fn counted_batches_count_what_they_wrote() {
        let (db, dir) = db("counted").await;
        jobs(&db, "jobs").await;
        let out = store(&db, "jobs")
            .sqlite_counted(&plans(), None, 100)
            .await
            .unwrap()
            .expect("a table without triggers is counted");
        // the orphan counted first, the expired leases by what `retry` and `failed` gained
        // (job 3 left alone by the guarded UPDATE, so not among them)
        assert_eq!(out.counts, [c(1, 1), c(1, 0)]);
        let want = [
            "retry",
            "failed",
            "processing",
            "retry",
            "processing",
            "done",
        ];
        assert_eq!(
            statuses(&db, "jobs").await,
            want.map(|s| Some(s.to_owned()))
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_table_with_triggers_is_not_counted() {
        let (db, dir) = db("triggers").await;
        jobs(&db, "jobs").await;
        exec(
            &db,
            "CREATE TRIGGER nudge AFTER UPDATE OF status ON jobs FOR EACH ROW \
             BEGIN UPDATE jobs SET attempts = 4 WHERE id = NEW.id + 1; END",
        )
        .await;
        let before = statuses(&db, "jobs").await;
        let changes = || async {
            let rows = db
                .fetch("SELECT total_changes()", &[], &[crate::value::Kind::Int])
                .await
                .unwrap();
            crate::value::Value::single(rows)
        };
        let changed_before = changes().await;
        let out = store(&db, "jobs")
            .sqlite_counted(&plans(), None, 100)
            .await
            .unwrap();
        assert!(out.is_none(), "{out:?}");
        assert_eq!(statuses(&db, "jobs").await, before);
        // refused up front: not written and rolled back (the one connection counts both)
        assert_eq!(changes().await, changed_before);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A job table in an attached database: named unqualified (found through the attachment),
    /// the lookup cannot see its triggers and refuses to count; named with its schema, the
    /// lookup reads that schema's catalogue — counted without triggers, refused with one.
    #[tokio::test]
    async fn a_table_in_an_attached_database_is_counted_only_by_its_schema() {
        let (db, dir) = db("attached").await;
        let aux = dir.join("aux.db").display().to_string();
        db.execute(
            "ATTACH DATABASE ? AS aux",
            &[crate::value::Value::Text(Some(aux))],
        )
        .await
        .unwrap();
        jobs(&db, "aux.jobs").await;
        let before = statuses(&db, "jobs").await;
        let counted = |table: &'static str| {
            let store = store(&db, table);
            async move { store.sqlite_counted(&plans(), None, 100).await.unwrap() }
        };
        assert!(counted("jobs").await.is_none(), "unqualified");
        assert_eq!(statuses(&db, "jobs").await, before, "refused up front");
        exec(
            &db,
            "CREATE TRIGGER aux.nudge AFTER UPDATE OF status ON jobs FOR EACH ROW \
             BEGIN UPDATE jobs SET attempts = 4 WHERE id = NEW.id + 1; END",
        )
        .await;
        assert!(counted("aux.jobs").await.is_none(), "its own trigger");
        assert_eq!(statuses(&db, "jobs").await, before);
        exec(&db, "DROP TRIGGER aux.nudge").await;
        let out = counted("aux.jobs").await.expect("qualified, no trigger");
        assert_eq!(out.counts, [c(1, 1), c(1, 0)]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// PostgreSQL: a key-range batch that cannot count (a trigger rewrites the message) hands
    /// its batch to the locking way, on another connection, which skips the rows other
    /// transactions hold. So the key-range transaction is rolled back before it returns: a
    /// dropped one is rolled back later, when the pool flushes its connection, and meanwhile
    /// held every row it had written (seen once in CI: a batch's jobs skipped). Right after
    /// it returns, every processing row can be locked without waiting (fails when the
    /// transaction is only dropped).
    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn a_postgres_key_range_that_cannot_count_releases_its_rows_at_once() {
        let Ok(url) = std::env::var("RECON_TEST_POSTGRES_URL") else {
            eprintln!("skipped: RECON_TEST_POSTGRES_URL is not set");
            return;
        };
        let db = Db::connect_with(&url, ConnectOptions::default())
            .await
            .unwrap();
        let table = format!(
            "recon_plan_rollback_{}_{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        exec(
            &db,
            &format!(
                "CREATE TABLE {table} (id BIGINT PRIMARY KEY, status TEXT NOT NULL, \
                 locked_by TEXT, locked_until TIMESTAMPTZ, attempts INTEGER, last_error TEXT)"
            ),
        )
        .await;
        exec(
            &db,
            &format!(
                "INSERT INTO {table} SELECT g, 'processing', 'w', \
                 TIMESTAMPTZ '2024-01-24 11:00:00+00', g % 3, NULL FROM generate_series(1, 50) g"
            ),
        )
        .await;
        exec(
            &db,
            &format!(
                "CREATE FUNCTION {table}_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN NEW.last_error := NEW.last_error || ' (seen)'; RETURN NEW; END $$"
            ),
        )
        .await;
        exec(
            &db,
            &format!(
                "CREATE TRIGGER rewrite BEFORE UPDATE ON {table} FOR EACH ROW \
                 EXECUTE FUNCTION {table}_rewrite()"
            ),
        )
        .await;
        let out = store(&db, &table).pg_key_range(&plans(), None, 100).await;
        // Probed from another thread and connection while this (single-threaded) runtime is
        // blocked: the pool cannot flush anything meanwhile, so only a rollback done before
        // returning lets the probe lock the rows.
        let probe = {
            let (url, table) = (url.clone(), table.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let other = Db::connect_with(&url, ConnectOptions::default())
                        .await
                        .unwrap();
                    other
                        .execute(
                            &format!(
                                "SELECT id FROM {table} WHERE status = 'processing' \
                                 FOR UPDATE NOWAIT"
                            ),
                            &[],
                        )
                        .await
                })
            })
        };
        let locked = probe.join().unwrap();
        exec(&db, &format!("DROP TABLE {table}")).await;
        exec(&db, &format!("DROP FUNCTION {table}_rewrite()")).await;
        // (asserted after the clean-up, so that a failure leaves nothing behind)
        assert!(matches!(out, Ok(None)), "handed over: {out:?}");
        assert!(locked.is_ok(), "rows still held: {locked:?}");
        assert_eq!(locked.unwrap(), 50, "every job still processing");
    }

    /// Spellings of a timestamp up to three edits away from readable ones (digits,
    /// separators, `T`/`t`, `Z`/`z`, a NUL, non-ASCII), every prefix of them, and seven byte
    /// strings that are not UTF-8: stored in a fresh table `spellings (e)`. Returns how many.
    async fn spellings(db: &Db) -> usize {
        let bases = [
            "2024-01-24T11:00:00+00:00",
            "2024-01-24 11:00:00",
            "2024-01-24T11:00:00Z",
            "2024-01-24T11:00:00.123456Z",
            "2024-02-29T23:59:59.9-05:30",
            "2024-01-24T11:00:00 Z",
            "2024-01-24T11:00:1Z",
            "2024-01-24 11:00",
            "2024-01-24t11:00:00z",
        ];
        let alphabet: Vec<String> = "0123456789-:T Zz+.\u{0}\u{7f}é€t"
            .chars()
            .map(String::from)
            .chain(["", "00", "Z0"].map(String::from))
            .collect();
        // xorshift: the same spellings every run
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let mut values: Vec<String> = Vec::new();
        for b in bases {
            for k in 0..=b.chars().count() {
                let head: String = b.chars().take(k).collect();
                values.extend([head.clone(), format!("{head}Z"), format!("{head}0Z")]);
            }
        }
        for _ in 0..20_000 {
            let mut s: Vec<String> = bases[next(bases.len())].chars().map(String::from).collect();
            for _ in 0..next(4) {
                let at = next(s.len() + 1);
                let c = alphabet[next(alphabet.len())].clone();
                match next(3) {
                    0 if at < s.len() => s[at] = c,
                    1 => s.insert(at, c),
                    _ if at < s.len() => {
                        s.remove(at);
                    }
                    _ => {}
                }
            }
            values.push(s.concat());
        }
        let json = crate::value::Value::Text(Some(serde_json::to_string(&values).unwrap()));
        exec(db, "CREATE TABLE spellings (e TEXT)").await;
        db.execute(
            "INSERT INTO spellings SELECT value FROM json_each(?)",
            std::slice::from_ref(&json),
        )
        .await
        .unwrap();
        // an overlong digit, stray and truncated sequences
        let not_utf8 = "(CAST(x'323032342d30312d32345431313a30303a30c0b0' AS TEXT)), (CAST(x'323032342d30312d32345431313a30303a3030ff' AS TEXT)), (CAST(x'323032342d30312d32345431313a30303a303080' AS TEXT)), (CAST(x'323032342d30312d32345431313a30303a30302b30303a30e282' AS TEXT)), (CAST(x'323032342d30312d32345431313a30303a30b95a' AS TEXT)), (CAST(x'323032342d30312d32345431313a30303a3030c0b05a' AS TEXT)), (CAST(x'323032342d30312d32345431313a30303a30302eff39' AS TEXT))";
        exec(db, &format!("INSERT INTO spellings VALUES {not_utf8}")).await;
        values.len() + 7
    }

    /// `e COLLATE recon_instant < now` holds exactly where the row-by-row read decodes `e`
    /// (sqlx's own decoding, through SQLite) to an instant before `now`: on 20,000 spellings
    /// and more (see [`spellings`]), against a `now` of each text format and one equal to
    /// many of them (the comparison is strict).
    #[tokio::test]
    async fn the_instant_collation_reads_timestamps_as_the_row_by_row_path_does() {
        use crate::value::{Kind, Value};
        let (db, dir) = db("instant").await;
        let n = spellings(&db).await;
        let mut tx = db.begin().await.unwrap();
        tx.sqlite_collations(&super::collate::ALL).await.unwrap();
        for now in [
            "2024-01-24T11:00:00+00:00",
            "2024-01-24 16:30:00",
            "2024-02-29T23:59:59.9-05:30",
        ] {
            let bound: DateTime<Utc> = super::collate::text_instant(now).unwrap();
            let rows = tx
                .fetch_lenient(
                    "SELECT e, e COLLATE recon_instant < ? FROM spellings",
                    &[Value::Text(Some(now.to_owned()))],
                    &[Kind::Ts(crate::TimestampFormat::Rfc3339), Kind::Int],
                )
                .await
                .unwrap();
            assert_eq!(rows.len(), n, "every spelling read");
            let (mut readable, mut before) = (0, 0);
            for (i, r) in rows.into_iter().enumerate() {
                let decoded = match &r[0] {
                    Ok(Value::Ts(Some(t))) => Some(*t),
                    _ => None,
                };
                readable += usize::from(decoded.is_some());
                let expected = decoded.is_some_and(|t| t < bound);
                before += usize::from(expected);
                assert_eq!(
                    r[1],
                    Ok(Value::Int(Some(i64::from(expected)))),
                    "spelling {i} ({:?}) against {now}",
                    r[0]
                );
            }
            assert!(
                readable > 1_000 && readable < n - 1_000,
                "{readable} of {n} read"
            );
            assert!(before > 100 && before < readable, "{before} before {now}");
        }
        tx.rollback().await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `o COLLATE recon_readable = ''` holds only for text the row-by-row read decodes as a
    /// `String`, and for all of it but text holding U+FFFD (which it leaves to that path).
    #[tokio::test]
    async fn the_readable_collation_takes_only_text_that_decodes() {
        use crate::value::{Kind, Value};
        let (db, dir) = db("readable").await;
        exec(&db, "CREATE TABLE owners (o)").await;
        exec(
            &db,
            "INSERT INTO owners VALUES ('w'), ('wörker €'), (''), ('a' || char(0) || 'b'), \
             (CAST(x'77c3' AS TEXT)), (CAST(x'ff' AS TEXT)), (CAST(x'c0b0' AS TEXT)), \
             (CAST(x'eda080' AS TEXT)), ('w\u{fffd}'), (7), (7.5), (x'77'), (NULL)",
        )
        .await;
        let mut tx = db.begin().await.unwrap();
        tx.sqlite_collations(&super::collate::ALL).await.unwrap();
        let rows = tx
            .fetch_lenient(
                "SELECT typeof(o), o, o COLLATE recon_readable = '' FROM owners ORDER BY rowid",
                &[],
                &[Kind::Text, Kind::Text, Kind::Int],
            )
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        let mut taken = Vec::new();
        for r in &rows {
            let text = r[0] == Ok(Value::Text(Some("text".into())));
            let decodes = matches!(&r[1], Ok(Value::Text(Some(s))) if !s.contains('\u{fffd}'));
            let says = r[2] == Ok(Value::Int(Some(1)));
            assert_eq!(says, text && decodes, "{r:?}");
            taken.push(says);
        }
        assert_eq!(
            taken,
            [
                true, true, true, true, false, false, false, false, false, false, false, false,
                false
            ]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The function-free type checks answer as `typeof` does, for every storage class in
    /// columns of every affinity (and case-insensitive and reverse-ordered text columns).
    #[tokio::test]
    async fn the_type_checks_answer_as_typeof() {
        use crate::value::{Kind, Value};
        let (db, dir) = db("types").await;
        // (a host's collation that puts text in reverse order, `''` last: on the test's one
        // connection, which keeps it)
        let mut tx = db.begin().await.unwrap();
        tx.sqlite_collations(&[("recon_test_reverse", |a: &str, b: &str| b.cmp(a))])
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        exec(
            &db,
            "CREATE TABLE v (i INTEGER, r REAL, t TEXT, c TEXT COLLATE NOCASE, n NUMERIC, b BLOB, x, \
             rev TEXT COLLATE recon_test_reverse, nrev NUMERIC COLLATE recon_test_reverse)",
        )
        .await;
        for v in [
            "5",
            "5.0",
            "5.5",
            "-3",
            "0",
            "'5'",
            "'5.0'",
            "' 5'",
            "'abc'",
            "''",
            "x'35'",
            "x''",
            "NULL",
            "9223372036854775807",
            "-9223372036854775808",
            "1e20",
            "'1e20'",
            "4611686018427387904",
        ] {
            exec(
                &db,
                &format!("INSERT INTO v VALUES ({v}, {v}, {v}, {v}, {v}, {v}, {v}, {v}, {v})"),
            )
            .await;
        }
        let mut checked = 0;
        for col in ["i", "r", "t", "c", "n", "b", "x", "rev", "nrev"] {
            let sql = format!(
                "SELECT typeof({col}), {}, {} FROM v",
                super::sqlite_is_integer(col),
                super::sqlite_is_text(col)
            );
            for r in db
                .fetch(&sql, &[], &[Kind::Text, Kind::Int, Kind::Int])
                .await
                .unwrap()
            {
                let ty = r[0].clone().text().unwrap();
                let yes = |v: &Value| v.clone().int() == Some(1);
                assert_eq!(yes(&r[1]), ty == "integer", "{col}: {r:?}");
                assert_eq!(yes(&r[2]), ty == "text", "{col}: {r:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 9 * 18);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The counted `UPDATE` calls no SQL function and resolves conflicts with `IGNORE`, so
    /// that SQLite keeps no statement journal for it (see [`super::RangeUpdate::Counted`]): its
    /// program has no function call, no `NOT NULL` halt and no other way to abort, on a table
    /// with a `NOT NULL` status, every optional column mapped, and each key and timestamp kind.
    #[tokio::test]
    async fn the_counted_update_calls_no_function() {
        use crate::value::{Kind, Value};
        use crate::{KeyKind, TimestampFormat};
        let (db, dir) = db("nofn").await;
        let mut seen = 0;
        for (i, (key, format)) in [
            (KeyKind::Integer, TimestampFormat::Rfc3339),
            (KeyKind::Text, TimestampFormat::SqliteText),
            (KeyKind::Integer, TimestampFormat::UnixSeconds),
            (KeyKind::Uuid, TimestampFormat::UnixMillis),
        ]
        .into_iter()
        .enumerate()
        {
            let t = format!("jobs{i}");
            let id = if key == KeyKind::Integer {
                "INTEGER PRIMARY KEY"
            } else {
                "TEXT PRIMARY KEY"
            };
            exec(
                &db,
                &format!(
                    "CREATE TABLE {t} (id {id}, status TEXT NOT NULL, locked_by TEXT, \
                     locked_until TEXT, attempts INTEGER NOT NULL, last_error TEXT NOT NULL, \
                     next_run_at TEXT, updated_at TEXT, failed_at TEXT)"
                ),
            )
            .await;
            let store = db.lease_store(
                JobTable::builder(&t)
                    .key_kind(key)
                    .timestamps(format)
                    .next_run_at("next_run_at")
                    .updated_at("updated_at")
                    .failed_at("failed_at")
                    .build()
                    .unwrap(),
            );
            let after = match key {
                KeyKind::Integer => lease_repair::JobKey::Int(7),
                _ => lease_repair::JobKey::Text("k".into()),
            };
            let mut b = crate::sql::Binds::new(db.dialect());
            let sql = store
                .key_range_update(
                    &plans(),
                    Some(&after),
                    Some(&after),
                    super::RangeUpdate::Counted,
                    &mut b,
                )
                .unwrap();
            assert!(sql.starts_with("UPDATE OR IGNORE "), "{sql}");
            let mut tx = store.begin_collated().await.unwrap();
            let program = tx
                .fetch(
                    &format!("EXPLAIN {sql}"),
                    &b.values,
                    &[Kind::Int, Kind::Text, Kind::Int],
                )
                .await
                .unwrap();
            tx.rollback().await.unwrap();
            let ops: Vec<(String, i64)> = program
                .into_iter()
                .map(|mut r| {
                    let p1 = r.pop().and_then(Value::int).unwrap();
                    (r.pop().and_then(Value::text).unwrap(), p1)
                })
                .collect();
            assert!(ops.len() > 20, "{t}: a program of {} ops", ops.len());
            for op in ["Function", "PureFunc", "HaltIfNull", "FkCounter", "VUpdate"] {
                assert!(!ops.iter().any(|o| o.0 == op), "{t}: {op} in {ops:?}");
            }
            assert!(
                !ops.iter().any(|o| o.0 == "Halt" && o.1 != 0),
                "{t}: a Halt with an error in {ops:?}"
            );
            seen += 1;
        }
        assert_eq!(seen, 4);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The collations are registered on a connection the host opened, and a host that
    /// registered nothing sees nothing else of recon's on it.
    #[tokio::test]
    async fn a_hosts_own_pool_gets_the_collations_on_first_use() {
        let dir = temp_dir("hostpool");
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join("host.db"))
            .create_if_missing(true);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap();
        let db = Db::from_sqlite(pool.clone());
        jobs(&db, "jobs").await;
        let names = || async {
            sqlx::query_scalar::<_, String>(
                "SELECT name FROM pragma_collation_list WHERE name LIKE 'recon%' ORDER BY name",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        };
        assert!(names().await.is_empty());
        let out = store(&db, "jobs")
            .repair_planned_once(&plans(), None, 100)
            .await
            .unwrap();
        assert_eq!(out.counts, [c(1, 1), c(1, 0)]);
        assert_eq!(names().await, ["recon_instant", "recon_readable"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A counted batch in which `UPDATE OR IGNORE` left a job as it was (here its message
    /// would break `UNIQUE ON CONFLICT REPLACE`, a table's own clause, which would delete the
    /// first job) is refused and rolled back: the uncounted way's plain `UPDATE` lets the clause
    /// act (`tests/conformance/hostile.rs`: alike both ways). So is one whose orphans would.
    #[tokio::test]
    async fn a_batch_that_would_meet_a_conflict_clause_is_refused() {
        let (db, dir) = db("conflict").await;
        for (table, rows) in [
            (
                "expired",
                "(1, 'processing', 'w', '2024-01-24T11:00:00+00:00', 0, NULL), \
                 (2, 'processing', 'w', '2024-01-24T11:00:00+00:00', 1, NULL)",
            ),
            (
                "orphans",
                "(1, 'processing', 'w', '2024-01-24T11:00:00+00:00', 0, NULL), \
                 (2, 'processing', NULL, NULL, 0, NULL), (3, 'processing', NULL, NULL, 1, NULL)",
            ),
        ] {
            exec(
                &db,
                &format!(
                    "CREATE TABLE {table} (id INTEGER PRIMARY KEY, status TEXT NOT NULL, \
                     locked_by TEXT, locked_until TEXT, attempts INTEGER, \
                     last_error TEXT UNIQUE ON CONFLICT REPLACE)"
                ),
            )
            .await;
            exec(&db, &format!("INSERT INTO {table} VALUES {rows}")).await;
            let out = store(&db, table)
                .sqlite_counted(&plans(), None, 100)
                .await
                .unwrap();
            assert_eq!(out, None, "{table}");
            let all = statuses(&db, table).await;
            assert!(
                all.iter().all(|s| s.as_deref() == Some("processing")),
                "{table}: {all:?}"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
