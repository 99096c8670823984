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

    /// A copy to try SQL on: what it binds is numbered as if bound here, and not bound here.
    pub(crate) fn fork(&self) -> Self {
        Self {
            d: self.d,
            values: self.values.clone(),
        }
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

/// Most bytes of bound data to put in one statement when rows carry large values (JSON
/// payloads, metadata): keeps a statement well under MariaDB's default `max_allowed_packet`
/// (16 MiB) and PostgreSQL's 1 GiB message limit, whatever the row count.
pub(crate) const STATEMENT_BYTES: usize = 4 << 20;

/// Split `items` into consecutive runs of at most `max_rows` items whose `size`s add up to at
/// most `max_bytes`. An item larger than `max_bytes` on its own gets a run of its own (it is
/// the caller's limit checks that bound single items). Order is kept; no run is empty.
pub(crate) fn chunks_by_size<T>(
    items: &[T],
    max_rows: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let max_rows = max_rows.max(1);
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, item) in items.iter().enumerate() {
        let s = size(item);
        let rows = i - start;
        if rows > 0 && (rows == max_rows || bytes.saturating_add(s) > max_bytes) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(s);
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// Rows of bound values to join a set-based `UPDATE` against, written for the dialect:
///
/// * PostgreSQL: `(VALUES (…), (…)) AS v(a, b)`, columns `v.a`;
/// * SQLite: `(VALUES (…), (…)) AS v`, columns `v.column1`, `v.column2`, … (SQLite cannot
///   name a VALUES list's columns, and a CTE over it makes `UPDATE … FROM` quadratic);
/// * MySQL/MariaDB: `(SELECT ? AS a, ? AS b UNION ALL SELECT ?, ?) AS v`, columns `v.a`.
///
/// Each row's placeholders come from [`Binds::push`] in the order they are written, so
/// with positional `?` the rows must be pushed where the table appears in the text:
/// `UPDATE t AS t SET … FROM <rows>` (PostgreSQL, SQLite: after any SET placeholders) and
/// `UPDATE t AS t JOIN <rows> ON … SET …` (MySQL: before them).
pub(crate) struct RowsTable {
    d: Dialect,
    names: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl RowsTable {
    /// An empty table with these column names.
    pub(crate) fn new(d: Dialect, names: &'static [&'static str]) -> Self {
        Self {
            d,
            names,
            rows: Vec::new(),
        }
    }

    /// Add a row of placeholders (one per column, in column order).
    pub(crate) fn row(&mut self, placeholders: Vec<String>) {
        debug_assert_eq!(placeholders.len(), self.names.len());
        self.rows.push(placeholders);
    }

    /// How the statement refers to column `name` of the table.
    pub(crate) fn col(&self, name: &str) -> String {
        match self.d {
            Dialect::Sqlite => {
                let i = self.names.iter().position(|n| *n == name).unwrap_or(0);
                format!("v.column{}", i + 1)
            }
            Dialect::Postgres | Dialect::MySql => format!("v.{name}"),
        }
    }

    /// The table, aliased `v`.
    pub(crate) fn sql(&self) -> String {
        match self.d {
            Dialect::Postgres | Dialect::Sqlite => {
                let values = self
                    .rows
                    .iter()
                    .map(|r| format!("({})", r.join(", ")))
                    .collect::<Vec<_>>()
                    .join(", ");
                if self.d == Dialect::Postgres {
                    format!("(VALUES {values}) AS v({})", self.names.join(", "))
                } else {
                    format!("(VALUES {values}) AS v")
                }
            }
            Dialect::MySql => {
                let selects = self
                    .rows
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let items = r
                            .iter()
                            .zip(self.names)
                            .map(|(p, n)| {
                                if i == 0 {
                                    format!("{p} AS {n}")
                                } else {
                                    p.clone()
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(", ");
                        format!("SELECT {items}")
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                format!("({selects}) AS v")
            }
        }
    }
}

/// `col = value`, comparing text exactly on every backend.
///
/// - SQLite: `(col = ? AND col COLLATE BINARY = ?)` — the first test can use an index on the
///   column, the second does not ignore case where the column is declared `COLLATE NOCASE`;
/// - PostgreSQL: `col = $n` (deterministic collations compare equal only identical text);
/// - MariaDB/MySQL: `(col = ? AND CAST(CONVERT(col USING utf8mb4) AS BINARY) = CAST(? AS
///   BINARY))` — the first test can use an index in the column's collation, the second
///   compares the UTF-8 bytes, so `'Pending' <> 'pending'` and `'a' <> 'a '`.
pub(crate) fn exact_eq(d: Dialect, col: &str, b: &mut Binds, v: Value) -> String {
    match d {
        // the first test can use an index on the column, whatever its collation
        Dialect::Sqlite => {
            let p1 = b.push(v.clone());
            let p2 = b.push(v);
            format!("({col} = {p1} AND {col} COLLATE BINARY = {p2})")
        }
        Dialect::Postgres => format!("{col} = {}", b.push(v)),
        Dialect::MySql => {
            let p1 = b.push(v.clone());
            let p2 = b.push(v);
            format!(
                "({col} = {p1} AND {} = CAST({p2} AS BINARY))",
                mysql_bytes(col)
            )
        }
    }
}

/// `col IN (values)`, comparing text exactly (see [`exact_eq`]).
pub(crate) fn exact_in(d: Dialect, col: &str, b: &mut Binds, vs: Vec<Value>) -> String {
    match d {
        Dialect::Sqlite => format!("{col} COLLATE BINARY IN ({})", b.list(vs)),
        Dialect::Postgres => format!("{col} IN ({})", b.list(vs)),
        Dialect::MySql => {
            let plain = b.list(vs.clone());
            let bytes = vs
                .into_iter()
                .map(|v| format!("CAST({} AS BINARY)", b.push(v)))
                .collect::<Vec<_>>()
                .join(", ");
            format!("({col} IN ({plain}) AND {} IN ({bytes}))", mysql_bytes(col))
        }
    }
}

/// The UTF-8 bytes of a MariaDB/MySQL text column, whatever its character set.
pub(crate) fn mysql_bytes(col: &str) -> String {
    format!("CAST(CONVERT({col} USING utf8mb4) AS BINARY)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_rows_and_bytes() {
        let sizes = [3usize, 3, 3, 10, 1, 1, 1, 1];
        let runs: Vec<Vec<usize>> = chunks_by_size(&sizes, 3, 7, |s| *s)
            .into_iter()
            .map(<[usize]>::to_vec)
            .collect();
        assert_eq!(
            runs,
            [vec![3, 3], vec![3], vec![10], vec![1, 1, 1], vec![1]]
        );
        assert!(chunks_by_size::<usize>(&[], 3, 7, |s| *s).is_empty());
        assert_eq!(chunks_by_size(&[1, 2], 0, 100, |s| *s).len(), 2);
    }

    #[test]
    fn rows_tables_per_dialect() {
        for (d, want, col) in [
            (
                Dialect::Postgres,
                "(VALUES ($1, $2), ($3, $4)) AS v(a, b)",
                "v.b",
            ),
            (Dialect::Sqlite, "(VALUES (?, ?), (?, ?)) AS v", "v.column2"),
            (
                Dialect::MySql,
                "(SELECT ? AS a, ? AS b UNION ALL SELECT ?, ?) AS v",
                "v.b",
            ),
        ] {
            let mut b = Binds::new(d);
            let mut t = RowsTable::new(d, &["a", "b"]);
            for i in 0..2 {
                let row = vec![b.push(Value::Int(Some(i))), b.push(Value::Int(Some(i)))];
                t.row(row);
            }
            assert_eq!(t.sql(), want);
            assert_eq!(t.col("b"), col);
        }
    }
}
