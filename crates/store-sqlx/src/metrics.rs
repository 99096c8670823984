//! [`Metrics`]: fresh figures from the database — a health check and named aggregates over the
//! host's tables — as a reconciliation step (seed 001's "verify metrics").

use async_trait::async_trait;
use recon_core::{Counter, Reconciler, RunContext, StepReport};
use serde_json::json;

use crate::value::{Kind, Value};
use crate::{Db, Dialect, Ident, Result, TableName};

/// Set to 1 when the health check answered.
pub const HEALTHY: Counter = Counter::new("healthy");

#[derive(Clone, Debug)]
enum Metric {
    CountBy {
        prefix: String,
        table: TableName,
        column: Ident,
    },
    Average {
        name: String,
        table: TableName,
        column: Ident,
    },
    Sum {
        name: String,
        table: TableName,
        column: Ident,
    },
}

/// Reads fresh figures straight from the database, so that dashboards never show what a cache
/// kept from before a restart.
///
/// - `SELECT 1` first: if the database does not answer, the step fails (transiently); make it a
///   required step to stop the run then.
/// - [`Metrics::count_by`]: rows per value of a column, as counters `<prefix>_<value>` and
///   `<prefix>_total` (values are lower-cased, non-alphanumerics become `_`, NULL is `null`).
/// - [`Metrics::average`], [`Metrics::sum`]: a number in the report's details under its name.
///
/// Every figure is one aggregate query; names are validated and quoted.
///
/// ```no_run
/// # async fn demo(db: store_sqlx::Db) -> store_sqlx::Result<()> {
/// let metrics = store_sqlx::Metrics::new(&db)
///     .count_by("jobs", "processing_jobs", "status")?
///     .average("avg_job_duration_ms", "processing_jobs", "duration_ms")?
///     .count_by("orders", "orders", "processing_status")?
///     .sum("revenue", "orders", "total_amount")?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Metrics {
    db: Db,
    name: String,
    items: Vec<Metric>,
}

impl Metrics {
    /// A health check on `db`, named `verify-metrics`; add figures with the builder methods.
    pub fn new(db: &Db) -> Self {
        Self {
            db: db.clone(),
            name: "verify-metrics".into(),
            items: Vec::new(),
        }
    }

    /// The step's name in reports.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Count the rows of `table` per value of `column`.
    pub fn count_by(mut self, prefix: &str, table: &str, column: &str) -> Result<Self> {
        self.items.push(Metric::CountBy {
            prefix: counter_name(prefix),
            table: TableName::new(table, "metrics table")?,
            column: Ident::new(column, "metrics column")?,
        });
        Ok(self)
    }

    /// The average of `column` over `table` (NULLs ignored; `null` when there are no rows).
    pub fn average(mut self, name: &str, table: &str, column: &str) -> Result<Self> {
        self.items.push(Metric::Average {
            name: name.to_owned(),
            table: TableName::new(table, "metrics table")?,
            column: Ident::new(column, "metrics column")?,
        });
        Ok(self)
    }

    /// The sum of `column` over `table` (`0` when there are no rows).
    pub fn sum(mut self, name: &str, table: &str, column: &str) -> Result<Self> {
        self.items.push(Metric::Sum {
            name: name.to_owned(),
            table: TableName::new(table, "metrics table")?,
            column: Ident::new(column, "metrics column")?,
        });
        Ok(self)
    }

    async fn collect(&self, report: &mut StepReport) -> Result<()> {
        let d = self.db.dialect();
        let as_text = |c: &str| match d {
            Dialect::MySql => format!("CAST({c} AS CHAR)"),
            _ => format!("CAST({c} AS TEXT)"),
        };
        let as_float = |e: &str| match d {
            Dialect::Postgres => format!("CAST({e} AS DOUBLE PRECISION)"),
            Dialect::MySql => format!("CAST({e} AS DOUBLE)"),
            Dialect::Sqlite => format!("CAST({e} AS REAL)"),
        };
        for m in &self.items {
            match m {
                Metric::CountBy {
                    prefix,
                    table,
                    column,
                } => {
                    let c = column.quoted(d);
                    let sql = format!(
                        "SELECT {}, COUNT(*) FROM {} GROUP BY {c} ORDER BY 1",
                        as_text(&c),
                        table.quoted(d)
                    );
                    let rows = self.db.fetch(&sql, &[], &[Kind::Text, Kind::Int]).await?;
                    let mut total = 0_u64;
                    for mut r in rows {
                        let n = r.pop().and_then(Value::int).unwrap_or(0).max(0) as u64;
                        let value = r.pop().and_then(Value::text);
                        let key = counter_name(&format!(
                            "{prefix}_{}",
                            value.as_deref().unwrap_or("null")
                        ));
                        report.add_named(&key, n);
                        total += n;
                    }
                    report.add_named(&format!("{prefix}_total"), total);
                }
                Metric::Average {
                    name,
                    table,
                    column,
                }
                | Metric::Sum {
                    name,
                    table,
                    column,
                } => {
                    let agg = if matches!(m, Metric::Average { .. }) {
                        format!("AVG({})", column.quoted(d))
                    } else {
                        format!("COALESCE(SUM({}), 0)", column.quoted(d))
                    };
                    let sql = format!("SELECT {} FROM {}", as_float(&agg), table.quoted(d));
                    let v = self
                        .db
                        .fetch(&sql, &[], &[Kind::Float])
                        .await
                        .map(Value::single)?
                        .and_then(Value::float);
                    report.detail(name.clone(), json!(v));
                }
            }
        }
        Ok(())
    }
}

/// `Pending Orders!` → `pending_orders_`: a counter name made of lower-case ASCII, digits, `_`.
fn counter_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[async_trait]
impl Reconciler for Metrics {
    fn name(&self) -> &str {
        &self.name
    }

    async fn reconcile(&self, _ctx: &RunContext) -> recon_core::Result<StepReport> {
        let mut report = StepReport::new(&self.name);
        self.db.ping().await?;
        report.set(HEALTHY, 1);
        self.collect(&mut report).await?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::counter_name;

    #[test]
    fn counter_names_are_plain() {
        assert_eq!(counter_name("jobs_In Progress!"), "jobs_in_progress_");
        assert_eq!(counter_name("orders_pending"), "orders_pending");
    }
}
