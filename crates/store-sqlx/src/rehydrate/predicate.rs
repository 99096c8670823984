//! Compile a [`Predicate`] into a parenthesised SQL condition with bound values.

use chrono::{DateTime, TimeDelta, Utc};
use queue_rehydrate::{ColumnType, MAX_NOW_OFFSET_SECS, Operand, Operator, Predicate};

use super::{Mapped, QError, bind_value, exact_eq, exact_in, mysql_bytes};
use crate::sql::Binds;

/// `predicate` as SQL for `m`, its values pushed onto `b` in text order (MySQL's `?` is
/// positional). The predicate must have been validated against the mapping; a column it
/// names that the mapping lacks is still an error, never a panic.
///
/// | predicate | SQL |
/// |-----------|-----|
/// | `All` | `1 = 1` |
/// | `Compare` | `col op ?` (`Now` binds `now + offset`; text `=`/`<>` exact) |
/// | `In` | `col IN (?, …)` (text exact) |
/// | `IsNull` / `IsNotNull` | `col IS [NOT] NULL` |
/// | `WithinDays` | `col >= ?` bound to `now − days` |
/// | `And` / `Or` / `Not` | `(… AND …)`, `(… OR …)`, `NOT (…)` |
///
/// SQL's three-valued logic is the database's own, so the result is the evaluator's.
pub(super) fn compile(
    p: &Predicate,
    m: &Mapped,
    now: DateTime<Utc>,
    b: &mut Binds,
) -> Result<String, QError> {
    let d = m.d;
    Ok(match p {
        Predicate::All => "1 = 1".to_owned(),
        Predicate::Compare { column, op, value } => {
            let c = m.column(column)?;
            // `Operand::resolve` would panic on an offset chrono cannot represent; validated
            // predicates never have one, unvalidated ones get an error
            if let Operand::Now { offset_secs } = value
                && offset_secs.unsigned_abs() > MAX_NOW_OFFSET_SECS.unsigned_abs()
            {
                return Err(QError::config(format!(
                    "the offset from now on `{column}` is out of range"
                )));
            }
            let v = value.resolve(now).ok_or_else(|| {
                QError::config(format!("the time compared with `{column}` is out of range"))
            })?;
            let bound = bind_value(d, c, &v);
            match (c.ty, op, value) {
                (ColumnType::Text, Operator::Eq, Operand::Value(_)) => {
                    exact_eq(d, &c.quoted, b, bound)
                }
                (ColumnType::Text, Operator::Ne, Operand::Value(_))
                    if d == crate::Dialect::MySql =>
                {
                    format!(
                        "{} <> CAST({} AS BINARY)",
                        mysql_bytes(&c.quoted),
                        b.push(bound)
                    )
                }
                (ColumnType::Text, Operator::Ne, Operand::Value(_))
                    if d == crate::Dialect::Sqlite =>
                {
                    format!("{} COLLATE BINARY <> {}", c.quoted, b.push(bound))
                }
                _ => format!("{} {} {}", c.quoted, op.as_sql(), b.push(bound)),
            }
        }
        Predicate::In { column, values } => {
            let c = m.column(column)?;
            if values.is_empty() {
                return Err(QError::EmptyInList {
                    column: column.clone(),
                });
            }
            let vs = values.iter().map(|v| bind_value(d, c, v)).collect();
            if c.ty == ColumnType::Text {
                exact_in(d, &c.quoted, b, vs)
            } else {
                format!("{} IN ({})", c.quoted, b.list(vs))
            }
        }
        Predicate::IsNull { column } => format!("{} IS NULL", m.column(column)?.quoted),
        Predicate::IsNotNull { column } => format!("{} IS NOT NULL", m.column(column)?.quoted),
        Predicate::WithinDays { column, days } => {
            let c = m.column(column)?;
            let since = now
                .checked_sub_signed(TimeDelta::days(i64::from(*days)))
                .ok_or_else(|| {
                    QError::config(format!("within {days} days of now is out of range"))
                })?;
            let v = bind_value(d, c, &queue_rehydrate::Value::Timestamp(since));
            format!("{} >= {}", c.quoted, b.push(v))
        }
        Predicate::And(parts) | Predicate::Or(parts) => {
            if parts.is_empty() {
                return Err(QError::config("an empty and/or has no agreed meaning"));
            }
            let glue = if matches!(p, Predicate::And(_)) {
                " AND "
            } else {
                " OR "
            };
            let parts = parts
                .iter()
                .map(|q| compile(q, m, now, b))
                .collect::<Result<Vec<_>, _>>()?;
            format!("({})", parts.join(glue))
        }
        Predicate::Not(inner) => format!("NOT ({})", compile(inner, m, now, b)?),
    })
}

#[cfg(test)]
mod tests {
    use queue_rehydrate::{KeyType, TableMapping};

    use super::*;
    use crate::{Dialect, TimestampFormat};

    fn mapped(d: Dialect) -> Mapped {
        let t = TableMapping::builder("user_sessions", "phone", KeyType::Text)
            .column("contact_status", ColumnType::Text)
            .column("follow_up_attempts", ColumnType::Integer)
            .column("cooldown_until", ColumnType::Timestamp)
            .column("last_activity", ColumnType::Timestamp)
            .build()
            .unwrap();
        Mapped::new(d, &t, TimestampFormat::Rfc3339, &Default::default()).unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2024-01-24T12:00:00Z".parse().unwrap()
    }

    fn eligible() -> Predicate {
        Predicate::and([
            Predicate::eq("contact_status", "ACTIVE"),
            Predicate::or([
                Predicate::is_null("cooldown_until"),
                Predicate::lt("cooldown_until", Operand::now()),
            ]),
            Predicate::lt("follow_up_attempts", 3),
            Predicate::within_days("last_activity", 365),
        ])
    }

    #[test]
    fn compiles_per_dialect_with_every_value_bound() {
        let pg = mapped(Dialect::Postgres);
        let mut b = Binds::new(Dialect::Postgres);
        let sql = compile(&eligible(), &pg, now(), &mut b).unwrap();
        assert_eq!(
            sql,
            "(\"contact_status\" = $1 AND (\"cooldown_until\" IS NULL OR \"cooldown_until\" < $2) \
             AND \"follow_up_attempts\" < $3 AND \"last_activity\" >= $4)"
        );
        assert_eq!(b.values.len(), 4);
        assert_eq!(b.values[1], crate::value::Value::Ts(Some(now())));

        let sqlite = mapped(Dialect::Sqlite);
        let mut b = Binds::new(Dialect::Sqlite);
        let sql = compile(&eligible(), &sqlite, now(), &mut b).unwrap();
        assert!(
            sql.starts_with(
                "((\"contact_status\" = ? AND \"contact_status\" COLLATE BINARY = ?) AND"
            ),
            "{sql}"
        );
        // SQLite binds the instant in the column's text format (the status is bound twice)
        assert_eq!(
            b.values[4],
            crate::value::Value::Text(Some("2023-01-24T12:00:00+00:00".into()))
        );

        let my = mapped(Dialect::MySql);
        let mut b = Binds::new(Dialect::MySql);
        let sql = compile(
            &Predicate::is_in("contact_status", ["pending", "processing"]),
            &my,
            now(),
            &mut b,
        )
        .unwrap();
        assert_eq!(
            sql,
            "(`contact_status` IN (?, ?) AND CAST(CONVERT(`contact_status` USING utf8mb4) AS \
             BINARY) IN (CAST(? AS BINARY), CAST(? AS BINARY)))"
        );
        assert_eq!(b.values.len(), 4, "each placeholder bound once, in order");
        assert_eq!(
            compile(
                &!Predicate::All,
                &my,
                now(),
                &mut Binds::new(Dialect::MySql)
            )
            .unwrap(),
            "NOT (1 = 1)"
        );
    }

    #[test]
    fn bad_predicates_are_errors_not_panics() {
        let pg = mapped(Dialect::Postgres);
        let mut b = Binds::new(Dialect::Postgres);
        let e = compile(&Predicate::eq("nope", 1), &pg, now(), &mut b).unwrap_err();
        assert!(matches!(e, QError::UnknownColumn { .. }), "{e}");
        let e = compile(
            &Predicate::is_in("contact_status", Vec::<&str>::new()),
            &pg,
            now(),
            &mut b,
        )
        .unwrap_err();
        assert!(matches!(e, QError::EmptyInList { .. }), "{e}");
        let far = Predicate::lt(
            "cooldown_until",
            Operand::Now {
                offset_secs: i64::MAX,
            },
        );
        assert!(compile(&far, &pg, now(), &mut b).is_err());
        assert!(compile(&Predicate::Or(vec![]), &pg, now(), &mut b).is_err());
    }
}
