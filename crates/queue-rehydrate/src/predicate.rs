//! A small typed predicate language over mapped columns, with SQL's three-valued logic.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::{ColumnType, Error, Result, Row, TableMapping, Value};

/// At most this many values in one in-list (bound parameters are limited on every backend).
pub const MAX_IN_LIST: usize = 1000;

/// At most this deep may predicates nest (`and` in `or` in `not` ...).
pub const MAX_DEPTH: usize = 32;

/// Largest offset from now, in seconds, an [`Operand::Now`] may have (about 100 years).
pub const MAX_NOW_OFFSET_SECS: i64 = 100 * 366 * 86_400;

/// Largest `days` of [`Predicate::WithinDays`] (about 100 years).
pub const MAX_WITHIN_DAYS: u32 = 100 * 366;

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Operator {
    /// The SQL spelling: `=`, `<>`, `<`, `<=`, `>`, `>=` (the same on every backend).
    pub const fn as_sql(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "<>",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }

    /// Whether the operator orders values (`<`, `<=`, `>`, `>=`).
    pub const fn is_ordering(self) -> bool {
        matches!(self, Self::Lt | Self::Le | Self::Gt | Self::Ge)
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            Self::Eq => ord == Ordering::Equal,
            Self::Ne => ord != Ordering::Equal,
            Self::Lt => ord == Ordering::Less,
            Self::Le => ord != Ordering::Greater,
            Self::Gt => ord == Ordering::Greater,
            Self::Ge => ord != Ordering::Less,
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

/// The right-hand side of a comparison: a literal, or a time relative to the run's `now`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operand {
    /// A literal value (bound as a parameter; never NULL — use `IsNull`).
    Value(Value),
    /// `now + offset_secs` seconds (negative for the past), where `now` is the run's frozen
    /// time. Only for timestamp columns. A SQL store binds the computed instant.
    Now {
        /// Seconds to add to now.
        offset_secs: i64,
    },
}

impl Operand {
    /// The run's `now`.
    pub const fn now() -> Self {
        Self::Now { offset_secs: 0 }
    }

    /// `now + delta`.
    pub fn now_plus(delta: TimeDelta) -> Self {
        Self::Now {
            offset_secs: delta.num_seconds(),
        }
    }

    /// `now - delta`.
    pub fn now_minus(delta: TimeDelta) -> Self {
        Self::Now {
            offset_secs: -delta.num_seconds(),
        }
    }

    /// The value this operand stands for at `now` (`None` if the instant is out of range).
    pub fn resolve(&self, now: DateTime<Utc>) -> Option<Value> {
        match self {
            Self::Value(v) => Some(v.clone()),
            Self::Now { offset_secs } => now
                .checked_add_signed(TimeDelta::seconds(*offset_secs))
                .map(Value::Timestamp),
        }
    }
}

impl<T: Into<Value>> From<T> for Operand {
    fn from(v: T) -> Self {
        Self::Value(v.into())
    }
}

/// The result of evaluating a predicate on a row: SQL's three truth values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Truth {
    /// True.
    True,
    /// False.
    False,
    /// Unknown (SQL NULL): a comparison involved NULL.
    Unknown,
}

impl Truth {
    /// Whether this is [`Truth::True`] — the only value that selects a row.
    pub const fn is_true(self) -> bool {
        matches!(self, Self::True)
    }

    /// SQL `AND`.
    pub const fn and(self, other: Truth) -> Truth {
        match (self, other) {
            (Self::False, _) | (_, Self::False) => Self::False,
            (Self::True, Self::True) => Self::True,
            _ => Self::Unknown,
        }
    }

    /// SQL `OR`.
    pub const fn or(self, other: Truth) -> Truth {
        match (self, other) {
            (Self::True, _) | (_, Self::True) => Self::True,
            (Self::False, Self::False) => Self::False,
            _ => Self::Unknown,
        }
    }

    /// SQL `NOT`.
    pub const fn negate(self) -> Truth {
        match self {
            Self::True => Self::False,
            Self::False => Self::True,
            Self::Unknown => Self::Unknown,
        }
    }

    const fn from_bool(b: bool) -> Truth {
        if b { Self::True } else { Self::False }
    }
}

/// A predicate over the mapped columns of one table.
///
/// The variants are public so that a SQL store can compile them (one bound parameter per
/// value; `Now` operands and `WithinDays` bind an instant computed from the run's `now`).
/// Validate against a [`TableMapping`] with [`Predicate::validate`]; evaluate in memory with
/// [`Predicate::eval`] / [`Predicate::matches`].
///
/// # NULL semantics
///
/// Predicates follow SQL exactly, so that the in-memory evaluator and a SQL `WHERE` clause
/// select the same rows:
///
/// - a comparison (`=`, `<>`, `<`, `<=`, `>`, `>=`), an in-list or a "within N days" test on a
///   NULL column is **unknown**, never true or false: `x < 3` and `NOT (x < 3)` both exclude
///   a row whose `x` is NULL;
/// - `IS NULL` / `IS NOT NULL` are the only tests that are true on NULL;
/// - `AND`: false if any part is false, else unknown if any part is unknown, else true;
///   `OR`: true if any part is true, else unknown if any part is unknown, else false;
///   `NOT` turns true into false, false into true and leaves unknown unknown;
/// - a row is selected only when the whole predicate is **true** (unknown is not selected).
///
/// Comparing with a NULL literal (`x = NULL`) is rejected at validation: in SQL it is never
/// true, so it is always a mistake.
///
/// ```
/// use chrono::{DateTime, Utc};
/// use queue_rehydrate::{Operand, Predicate};
/// // contact_status = 'ACTIVE' AND (cooldown_until IS NULL OR cooldown_until < now)
/// //   AND follow_up_attempts < 3 AND last_activity >= now - 365 days
/// let eligible = Predicate::and([
///     Predicate::eq("contact_status", "ACTIVE"),
///     Predicate::or([
///         Predicate::is_null("cooldown_until"),
///         Predicate::lt("cooldown_until", Operand::now()),
///     ]),
///     Predicate::lt("follow_up_attempts", 3),
///     Predicate::within_days("last_activity", 365),
/// ]);
/// # let _ = eligible;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Predicate {
    /// Every row (SQL `1 = 1`).
    All,
    /// `column <op> value`.
    Compare {
        /// The mapped column.
        column: String,
        /// The operator.
        op: Operator,
        /// The right-hand side.
        value: Operand,
    },
    /// `column IN (values...)`: at least one value, none NULL, at most [`MAX_IN_LIST`].
    In {
        /// The mapped column.
        column: String,
        /// The values.
        values: Vec<Value>,
    },
    /// `column IS NULL`.
    IsNull {
        /// The mapped column.
        column: String,
    },
    /// `column IS NOT NULL`.
    IsNotNull {
        /// The mapped column.
        column: String,
    },
    /// `column >= now - days` (a timestamp column no older than `days` days).
    WithinDays {
        /// The mapped timestamp column.
        column: String,
        /// How many days back from now.
        days: u32,
    },
    /// All parts hold (at least one part).
    And(Vec<Predicate>),
    /// Some part holds (at least one part).
    Or(Vec<Predicate>),
    /// The part does not hold (unknown stays unknown).
    Not(Box<Predicate>),
}

impl Predicate {
    fn compare(column: impl Into<String>, op: Operator, value: impl Into<Operand>) -> Self {
        Self::Compare {
            column: column.into(),
            op,
            value: value.into(),
        }
    }

    /// `column = value`.
    pub fn eq(column: impl Into<String>, value: impl Into<Operand>) -> Self {
        Self::compare(column, Operator::Eq, value)
    }

    /// `column <> value`.
    pub fn ne(column: impl Into<String>, value: impl Into<Operand>) -> Self {
        Self::compare(column, Operator::Ne, value)
    }

    /// `column < value`.
    pub fn lt(column: impl Into<String>, value: impl Into<Operand>) -> Self {
        Self::compare(column, Operator::Lt, value)
    }

    /// `column <= value`.
    pub fn le(column: impl Into<String>, value: impl Into<Operand>) -> Self {
        Self::compare(column, Operator::Le, value)
    }

    /// `column > value`.
    pub fn gt(column: impl Into<String>, value: impl Into<Operand>) -> Self {
        Self::compare(column, Operator::Gt, value)
    }

    /// `column >= value`.
    pub fn ge(column: impl Into<String>, value: impl Into<Operand>) -> Self {
        Self::compare(column, Operator::Ge, value)
    }

    /// `column IN (values...)`.
    pub fn is_in<V: Into<Value>>(
        column: impl Into<String>,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        Self::In {
            column: column.into(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }

    /// `column IS NULL`.
    pub fn is_null(column: impl Into<String>) -> Self {
        Self::IsNull {
            column: column.into(),
        }
    }

    /// `column IS NOT NULL`.
    pub fn is_not_null(column: impl Into<String>) -> Self {
        Self::IsNotNull {
            column: column.into(),
        }
    }

    /// `column >= now - days`.
    pub fn within_days(column: impl Into<String>, days: u32) -> Self {
        Self::WithinDays {
            column: column.into(),
            days,
        }
    }

    /// All of `parts`.
    pub fn and(parts: impl IntoIterator<Item = Predicate>) -> Self {
        Self::And(parts.into_iter().collect())
    }

    /// Any of `parts`.
    pub fn or(parts: impl IntoIterator<Item = Predicate>) -> Self {
        Self::Or(parts.into_iter().collect())
    }

    /// Check the predicate against `table`.
    ///
    /// Errors: [`Error::UnknownColumn`], [`Error::EmptyInList`], [`Error::InListTooLong`],
    /// [`Error::TypeMismatch`] (a value, or a time relative to now, that does not fit the
    /// column's declared type), [`Error::NullComparison`], [`Error::UnsupportedOperator`]
    /// (ordering on text or boolean columns), and [`Error::Config`] for an empty `and`/`or`,
    /// nesting deeper than [`MAX_DEPTH`] or an out-of-range time offset.
    pub fn validate(&self, table: &TableMapping) -> Result<()> {
        self.validate_at(table, 1)
    }

    fn validate_at(&self, table: &TableMapping, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::config(format!(
                "predicate nests deeper than {MAX_DEPTH} levels"
            )));
        }
        match self {
            Self::All => Ok(()),
            Self::Compare { column, op, value } => {
                let ty = table.require_column(column)?;
                match value {
                    Operand::Value(Value::Null) => {
                        return Err(Error::NullComparison {
                            column: column.clone(),
                        });
                    }
                    Operand::Value(v) => v.check_type(column, ty)?,
                    Operand::Now { offset_secs } => {
                        if ty != ColumnType::Timestamp {
                            return Err(Error::TypeMismatch {
                                column: column.clone(),
                                expected: ty,
                                found: "a time relative to now".to_owned(),
                            });
                        }
                        if offset_secs.unsigned_abs() > MAX_NOW_OFFSET_SECS.unsigned_abs() {
                            return Err(Error::config(format!(
                                "offset from now on column `{column}` is out of range \
                                 ({offset_secs} s; at most {MAX_NOW_OFFSET_SECS} s)"
                            )));
                        }
                    }
                }
                if op.is_ordering() && !ty.is_ordered() {
                    return Err(Error::UnsupportedOperator {
                        column: column.clone(),
                        operator: *op,
                        column_type: ty,
                    });
                }
                Ok(())
            }
            Self::In { column, values } => {
                let ty = table.require_column(column)?;
                if values.is_empty() {
                    return Err(Error::EmptyInList {
                        column: column.clone(),
                    });
                }
                if values.len() > MAX_IN_LIST {
                    return Err(Error::InListTooLong {
                        column: column.clone(),
                        len: values.len(),
                        max: MAX_IN_LIST,
                    });
                }
                for v in values {
                    if v.is_null() {
                        return Err(Error::NullComparison {
                            column: column.clone(),
                        });
                    }
                    v.check_type(column, ty)?;
                }
                Ok(())
            }
            Self::IsNull { column } | Self::IsNotNull { column } => {
                table.require_column(column).map(drop)
            }
            Self::WithinDays { column, days } => {
                let ty = table.require_column(column)?;
                if ty != ColumnType::Timestamp {
                    return Err(Error::TypeMismatch {
                        column: column.clone(),
                        expected: ty,
                        found: "a time relative to now".to_owned(),
                    });
                }
                if *days > MAX_WITHIN_DAYS {
                    return Err(Error::config(format!(
                        "within {days} days on column `{column}`: at most {MAX_WITHIN_DAYS}"
                    )));
                }
                Ok(())
            }
            Self::And(parts) | Self::Or(parts) => {
                if parts.is_empty() {
                    return Err(Error::config(
                        "an empty and/or has no agreed meaning; use Predicate::All for every row",
                    ));
                }
                parts
                    .iter()
                    .try_for_each(|p| p.validate_at(table, depth + 1))
            }
            Self::Not(inner) => inner.validate_at(table, depth + 1),
        }
    }

    /// Evaluate on `row` at `now`, with SQL's three-valued logic (see [`Predicate`]).
    ///
    /// Meant for validated predicates; on an unvalidated one a comparison of mismatched types
    /// is unknown.
    pub fn eval(&self, row: &Row, now: DateTime<Utc>) -> Truth {
        match self {
            Self::All => Truth::True,
            Self::Compare { column, op, value } => match value.resolve(now) {
                Some(rhs) => compare(row.get(column), *op, &rhs),
                None => Truth::Unknown,
            },
            Self::In { column, values } => {
                let lhs = row.get(column);
                values
                    .iter()
                    .fold(Truth::False, |acc, v| acc.or(compare(lhs, Operator::Eq, v)))
            }
            Self::IsNull { column } => Truth::from_bool(row.get(column).is_null()),
            Self::IsNotNull { column } => Truth::from_bool(!row.get(column).is_null()),
            Self::WithinDays { column, days } => {
                match now.checked_sub_signed(TimeDelta::days(i64::from(*days))) {
                    Some(t) => compare(row.get(column), Operator::Ge, &Value::Timestamp(t)),
                    None => Truth::Unknown,
                }
            }
            Self::And(parts) => parts
                .iter()
                .fold(Truth::True, |acc, p| acc.and(p.eval(row, now))),
            Self::Or(parts) => parts
                .iter()
                .fold(Truth::False, |acc, p| acc.or(p.eval(row, now))),
            Self::Not(inner) => inner.eval(row, now).negate(),
        }
    }

    /// Whether the predicate is true on `row` at `now` (unknown is not a match).
    pub fn matches(&self, row: &Row, now: DateTime<Utc>) -> bool {
        self.eval(row, now).is_true()
    }

    /// Every column the predicate reads, in order of appearance (with repeats).
    pub fn columns(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_columns(&mut out);
        out
    }

    fn collect_columns<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Self::All => {}
            Self::Compare { column, .. }
            | Self::In { column, .. }
            | Self::IsNull { column }
            | Self::IsNotNull { column }
            | Self::WithinDays { column, .. } => out.push(column),
            Self::And(parts) | Self::Or(parts) => {
                parts.iter().for_each(|p| p.collect_columns(out));
            }
            Self::Not(inner) => inner.collect_columns(out),
        }
    }
}

impl std::ops::Not for Predicate {
    type Output = Predicate;
    /// `NOT self`.
    fn not(self) -> Predicate {
        Predicate::Not(Box::new(self))
    }
}

/// `lhs <op> rhs` in SQL: unknown when either side is NULL or the types differ.
fn compare(lhs: &Value, op: Operator, rhs: &Value) -> Truth {
    let ord = match (lhs, rhs) {
        (Value::Int(a), Value::Int(b)) => a.cmp(b),
        (Value::Timestamp(a), Value::Timestamp(b)) => a.cmp(b),
        (Value::Text(a), Value::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        _ => return Truth::Unknown,
    };
    Truth::from_bool(op.holds(ord))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyType;

    fn table() -> TableMapping {
        TableMapping::builder("t", "id", KeyType::Integer)
            .column("n", ColumnType::Integer)
            .column("s", ColumnType::Text)
            .column("b", ColumnType::Boolean)
            .column("at", ColumnType::Timestamp)
            .build()
            .unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2024-01-24T12:00:00Z".parse().unwrap()
    }

    fn row(n: Option<i64>, s: Option<&str>) -> Row {
        table()
            .row([
                ("id", 1.into()),
                ("n", n.into()),
                ("s", s.into()),
                ("at", Some(now() - TimeDelta::days(2)).into()),
            ])
            .unwrap()
    }

    #[test]
    fn comparisons_on_null_are_unknown_and_never_select() {
        let r = row(None, None);
        for p in [
            Predicate::lt("n", 3),
            Predicate::ge("n", 3),
            Predicate::eq("n", 3),
            Predicate::ne("n", 3),
            Predicate::is_in("s", ["a", "b"]),
        ] {
            assert_eq!(p.eval(&r, now()), Truth::Unknown, "{p:?}");
            assert!(!p.matches(&r, now()));
            assert!(!(!p.clone()).matches(&r, now()), "NOT of unknown: {p:?}");
        }
        assert!(Predicate::is_null("n").matches(&r, now()));
        assert!(!Predicate::is_not_null("n").matches(&r, now()));
        // unknown OR true = true; unknown AND false = false
        let p = Predicate::or([Predicate::lt("n", 3), Predicate::is_null("n")]);
        assert!(p.matches(&r, now()));
        let p = Predicate::and([Predicate::lt("n", 3), Predicate::is_not_null("n")]);
        assert_eq!(p.eval(&r, now()), Truth::False);
    }

    #[test]
    fn values_compare_as_in_sql() {
        let r = row(Some(2), Some("ACTIVE"));
        assert!(Predicate::lt("n", 3).matches(&r, now()));
        assert!(Predicate::le("n", 2).matches(&r, now()));
        assert!(!Predicate::gt("n", 2).matches(&r, now()));
        assert!(Predicate::eq("s", "ACTIVE").matches(&r, now()));
        assert!(!Predicate::eq("s", "active").matches(&r, now()), "exact");
        assert!(Predicate::is_in("s", ["X", "ACTIVE"]).matches(&r, now()));
        assert!(Predicate::within_days("at", 2).matches(&r, now()), "bound");
        assert!(!Predicate::within_days("at", 1).matches(&r, now()));
        assert!(Predicate::lt("at", Operand::now()).matches(&r, now()));
        assert!(!Predicate::lt("at", Operand::now_minus(TimeDelta::days(3))).matches(&r, now()));
    }

    #[test]
    fn validation_errors_are_specific() {
        let t = table();
        let err = |p: Predicate| p.validate(&t).unwrap_err();
        assert!(matches!(
            err(Predicate::eq("nope", 1)),
            Error::UnknownColumn { column, .. } if column == "nope"
        ));
        assert!(matches!(
            err(Predicate::is_in("s", Vec::<Value>::new())),
            Error::EmptyInList { .. }
        ));
        assert!(matches!(
            err(Predicate::is_in("n", 0..1001)),
            Error::InListTooLong { len: 1001, .. }
        ));
        let e = err(Predicate::lt("n", "three"));
        assert_eq!(
            e.to_string(),
            "column `n` is declared integer, but the value is text"
        );
        assert!(matches!(
            err(Predicate::lt("n", Operand::now())),
            Error::TypeMismatch { .. }
        ));
        assert!(matches!(
            err(Predicate::within_days("s", 3)),
            Error::TypeMismatch { .. }
        ));
        assert!(matches!(
            err(Predicate::eq("n", Value::Null)),
            Error::NullComparison { .. }
        ));
        assert!(matches!(
            err(Predicate::lt("s", "m")),
            Error::UnsupportedOperator { .. }
        ));
        assert!(matches!(
            err(Predicate::gt("b", true)),
            Error::UnsupportedOperator { .. }
        ));
        assert!(matches!(err(Predicate::and([])), Error::Config(_)));
        let mut deep = Predicate::All;
        for _ in 0..MAX_DEPTH {
            deep = !deep;
        }
        assert!(matches!(err(deep), Error::Config(_)));
        // nested errors are found too
        assert!(matches!(
            err(Predicate::or([Predicate::All, !Predicate::is_null("zz")])),
            Error::UnknownColumn { .. }
        ));
        Predicate::and([
            Predicate::eq("b", true),
            Predicate::ne("s", "x"),
            Predicate::is_in("id", [1, 2]),
        ])
        .validate(&t)
        .unwrap();
    }

    #[test]
    fn serde_shape_is_plain() {
        let p = Predicate::and([
            Predicate::is_in("s", ["pending", "processing"]),
            Predicate::lt("at", Operand::now()),
        ]);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"and": [
                {"in": {"column": "s", "values": [{"text": "pending"}, {"text": "processing"}]}},
                {"compare": {"column": "at", "op": "lt", "value": {"now": {"offset_secs": 0}}}}
            ]})
        );
        let back: Predicate = serde_json::from_value(json).unwrap();
        assert_eq!(back, p);
    }
}
