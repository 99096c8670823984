//! Declared maintenance updates: "where `when`, set these columns to these values".

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ColumnType, Error, Predicate, Result, Row, TableMapping, Value};

/// The new value of a column in a [`Maintenance`] rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetValue {
    /// `NULL`.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// A fixed instant.
    Timestamp(DateTime<Utc>),
    /// The run's frozen `now` (a SQL store binds it; it never uses the database's clock here,
    /// so that dry-run and real run agree).
    Now,
}

impl SetValue {
    /// The value written at `now`.
    pub fn resolve(&self, now: DateTime<Utc>) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Int(i) => Value::Int(*i),
            Self::Text(s) => Value::Text(s.clone()),
            Self::Bool(b) => Value::Bool(*b),
            Self::Timestamp(t) => Value::Timestamp(*t),
            Self::Now => Value::Timestamp(now),
        }
    }

    /// The column type the value fits (`None` for NULL, which fits every column).
    pub const fn column_type(&self) -> Option<ColumnType> {
        match self {
            Self::Null => None,
            Self::Int(_) => Some(ColumnType::Integer),
            Self::Text(_) => Some(ColumnType::Text),
            Self::Bool(_) => Some(ColumnType::Boolean),
            Self::Timestamp(_) | Self::Now => Some(ColumnType::Timestamp),
        }
    }
}

/// A set-based repair of a source table, declared instead of hand-written:
/// `UPDATE table SET set... WHERE when`.
///
/// Rows touched are counted under [`Maintenance::name`] (a `snake_case` counter name, e.g.
/// `cooldowns_cleared`). `when` follows SQL's NULL semantics, so a rule
/// `cooldown_until < now` never touches a row whose `cooldown_until` is NULL, and running the
/// rule twice touches nothing the second time when its `set` makes `when` false.
///
/// ```
/// use queue_rehydrate::{Maintenance, Operand, Predicate, SetValue};
/// let clear_cooldowns = Maintenance::new(
///     "cooldowns_cleared",
///     Predicate::lt("cooldown_until", Operand::now()),
/// )
/// .set("cooldown_until", SetValue::Null)
/// .set("follow_up_attempts", SetValue::Int(0));
/// # let _ = clear_cooldowns;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// The counter the touched rows are reported under (`snake_case`).
    pub name: String,
    /// Which rows to update.
    pub when: Predicate,
    /// The assignments, in order (each column at most once, never the key column).
    pub set: Vec<(String, SetValue)>,
}

impl Maintenance {
    /// A rule called `name` for the rows matching `when`, with no assignments yet.
    pub fn new(name: impl Into<String>, when: Predicate) -> Self {
        Self {
            name: name.into(),
            when,
            set: Vec::new(),
        }
    }

    /// Add the assignment `column = value`.
    #[must_use]
    pub fn set(mut self, column: impl Into<String>, value: SetValue) -> Self {
        self.set.push((column.into(), value));
        self
    }

    /// Check the rule against `table`.
    ///
    /// Errors: an invalid counter name, any error of [`Predicate::validate`] for `when`, no
    /// assignment, an unknown column, the key column assigned (keys must not move under
    /// keyset pagination), a column assigned twice, a value of the wrong type.
    pub fn validate(&self, table: &TableMapping) -> Result<()> {
        validate_counter_name(&self.name)?;
        self.when.validate(table)?;
        if self.set.is_empty() {
            return Err(Error::config(format!(
                "maintenance `{}` assigns no column",
                self.name
            )));
        }
        for (i, (column, value)) in self.set.iter().enumerate() {
            let ty = table.require_column(column)?;
            if column == table.key_column() {
                return Err(Error::config(format!(
                    "maintenance `{}` assigns the key column `{column}`",
                    self.name
                )));
            }
            if self.set[..i].iter().any(|(c, _)| c == column) {
                return Err(Error::config(format!(
                    "maintenance `{}` assigns column `{column}` twice",
                    self.name
                )));
            }
            if let Some(vt) = value.column_type()
                && vt != ty
            {
                return Err(Error::TypeMismatch {
                    column: column.clone(),
                    expected: ty,
                    found: vt.as_str().to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Apply the rule to one row in memory: if `when` is true at `now`, assign and return
    /// `true`; otherwise leave the row alone and return `false`.
    ///
    /// This is what a SQL store's `UPDATE` does to each row, and what a dry run uses to
    /// evaluate eligibility as if the rule had run.
    pub fn apply(&self, row: &mut Row, now: DateTime<Utc>) -> bool {
        if !self.when.matches(row, now) {
            return false;
        }
        for (column, value) in &self.set {
            row.set(column, value.resolve(now));
        }
        true
    }

    /// The columns the rule assigns.
    pub fn assigned_columns(&self) -> impl Iterator<Item = &str> {
        self.set.iter().map(|(c, _)| c.as_str())
    }
}

/// Check a counter name: `snake_case`, `[a-z][a-z0-9_]*`, at most 63 characters.
pub fn validate_counter_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "counter name `{name}` must be snake_case ([a-z][a-z0-9_]*, at most 63 characters)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyType, Operand};

    fn table() -> TableMapping {
        TableMapping::builder("user_sessions", "phone", KeyType::Text)
            .column("follow_up_attempts", ColumnType::Integer)
            .column("cooldown_until", ColumnType::Timestamp)
            .build()
            .unwrap()
    }

    fn rule() -> Maintenance {
        Maintenance::new(
            "cooldowns_cleared",
            Predicate::lt("cooldown_until", Operand::now()),
        )
        .set("cooldown_until", SetValue::Null)
        .set("follow_up_attempts", SetValue::Int(0))
    }

    #[test]
    fn apply_follows_the_predicate_and_is_idempotent() {
        let now: DateTime<Utc> = "2024-01-24T12:00:00Z".parse().unwrap();
        let t = table();
        let mut expired = t
            .row([
                ("phone", "+573001234567".into()),
                ("follow_up_attempts", 3.into()),
                (
                    "cooldown_until",
                    Value::Timestamp(now - chrono::TimeDelta::hours(1)),
                ),
            ])
            .unwrap();
        assert!(rule().apply(&mut expired, now));
        assert_eq!(expired.get("cooldown_until"), &Value::Null);
        assert_eq!(expired.get("follow_up_attempts"), &Value::Int(0));
        assert!(!rule().apply(&mut expired, now), "second time: nothing");

        let mut no_cooldown = t
            .row([("phone", "x".into()), ("follow_up_attempts", 1.into())])
            .unwrap();
        let before = no_cooldown.clone();
        assert!(
            !rule().apply(&mut no_cooldown, now),
            "NULL < now is unknown"
        );
        assert_eq!(no_cooldown, before);
    }

    #[test]
    fn validation() {
        let t = table();
        rule().validate(&t).unwrap();
        let bad_name = Maintenance {
            name: "Cooldowns Cleared".into(),
            ..rule()
        };
        assert!(matches!(bad_name.validate(&t), Err(Error::Config(_))));
        let key = rule().set("phone", SetValue::Null);
        assert!(
            key.validate(&t)
                .unwrap_err()
                .to_string()
                .contains("key column")
        );
        let twice = rule().set("cooldown_until", SetValue::Now);
        assert!(
            twice
                .validate(&t)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let wrong = Maintenance::new("x", Predicate::All).set("follow_up_attempts", SetValue::Now);
        assert!(matches!(
            wrong.validate(&t),
            Err(Error::TypeMismatch { .. })
        ));
        let unknown = Maintenance::new("x", Predicate::All).set("nope", SetValue::Null);
        assert!(matches!(
            unknown.validate(&t),
            Err(Error::UnknownColumn { .. })
        ));
        let none = Maintenance::new("x", Predicate::All);
        assert!(matches!(none.validate(&t), Err(Error::Config(_))));
        let bad_when = Maintenance::new("x", Predicate::is_in("nope", [1]))
            .set("follow_up_attempts", SetValue::Int(0));
        assert!(matches!(
            bad_when.validate(&t),
            Err(Error::UnknownColumn { .. })
        ));
    }
}
