//! Small pieces every host-table store builds its statements with.

use crate::value::Value;
use crate::{Dialect, Error, Result};

/// Collects bound values and hands out their placeholders.
///
/// MySQL's `?` is positional: push values in the order their placeholders appear in the SQL
/// text, and push a value again for each use (never reuse a placeholder).
pub(crate) struct Binds {
    d: Dialect,
    pub(crate) values: Vec<Value>,
}

impl Binds {
    pub(crate) fn new(d: Dialect) -> Self {
        Self {
            d,
            values: Vec::new(),
        }
    }

    /// Bind `v` and return its placeholder.
    pub(crate) fn push(&mut self, v: Value) -> String {
        self.values.push(v);
        self.d.param(self.values.len())
    }

    /// Bind every value of `vs` and return `p1, p2, …` for an `IN (…)` list.
    pub(crate) fn list(&mut self, vs: impl IntoIterator<Item = Value>) -> String {
        vs.into_iter()
            .map(|v| self.push(v))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Rows per statement when a batch is written with one row of placeholders each: keeps every
/// backend under its bound-parameter limit (SQLite 32,766; PostgreSQL and MySQL 65,535).
pub(crate) const CHUNK: usize = 2000;

/// Retry a whole transaction a few times when the database reports a deadlock, a
/// serialization failure or a busy file: the transaction was rolled back, so retrying is safe.
/// Lost connections are not retried here: they surface as transient errors for the next run.
pub(crate) async fn with_deadlock_retry<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Err(Error::Database {
                source: sqlx::Error::Database(db),
                context,
                transient,
            }) if tries < 4 && crate::error::is_lock_conflict_code(db.code().as_deref()) => {
                tries += 1;
                tracing::debug!(%context, transient, tries, "retrying a transaction after a lock conflict");
                tokio::time::sleep(std::time::Duration::from_millis(10 << tries)).await;
            }
            other => return other,
        }
    }
}
