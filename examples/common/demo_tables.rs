//! How an example treats the database it is pointed at, which may be a real one: it never
//! drops or changes what its demo did not create.
//!
//! - The demo's tables are created only where none of them exists, and their names are
//!   recorded in `recon_demo_tables`.
//! - A table of the same name that the demo did not create, or that lacks a column the example
//!   uses, stops the example with one `error:` line, before anything is written.
//! - So do rows in recon's own tables under the demo's names (its pipeline, fingerprint
//!   namespace, queue, watermark) when the demo's tables do not exist: they are not the demo's.
//! - Only `--reset-demo` drops and recreates the demo's tables, and deletes those rows — and
//!   no others.
//!
//! Every example includes this file: `#[path = "common/demo_tables.rs"] mod demo_tables;`.

use store_sqlx::{Db, TableName};

type Error = Box<dyn std::error::Error>;

/// `?` placeholders → `$1, $2, …` (PostgreSQL). The examples' SQL has no `?` inside literals.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn numbered(sql: &str) -> String {
    let mut n = 0;
    sql.split('?')
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part.to_owned()
            } else {
                n += 1;
                format!("${n}{part}")
            }
        })
        .collect()
}

/// Run `$body` with `$pool` the backend's pool and `$sql` the statement in its dialect (its
/// `?` placeholders numbered for PostgreSQL). Shared by the examples that include this file.
macro_rules! on_backend {
    ($db:expr, $text:expr, |$pool:ident, $sql:ident| $body:expr) => {
        match $db.dialect() {
            #[cfg(feature = "sqlite")]
            store_sqlx::Dialect::Sqlite => {
                let $pool = $db.as_sqlite().expect("a SQLite pool");
                let $sql = $text.to_owned();
                $body
            }
            #[cfg(feature = "postgres")]
            store_sqlx::Dialect::Postgres => {
                let $pool = $db.as_postgres().expect("a PostgreSQL pool");
                let $sql = $crate::demo_tables::numbered($text);
                $body
            }
            #[cfg(feature = "mysql")]
            store_sqlx::Dialect::MySql => {
                let $pool = $db.as_mysql().expect("a MySQL pool");
                let $sql = $text.to_owned();
                $body
            }
            #[allow(unreachable_patterns)]
            d => Err(sqlx::Error::Configuration(
                format!("{} support is not compiled in", d.name()).into(),
            )),
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_backend;

/// A demo table, and the columns the example uses.
pub(crate) type Table = (&'static str, &'static [&'static str]);

/// The demo's rows in one of recon's own tables: `(table, column, value)`, e.g.
/// `("recon_queued_jobs", "queue", "pin-jobs")` is the jobs of the queue `pin-jobs`. The
/// demo deletes them on `--reset-demo`; the other rows of that table are never touched.
pub(crate) type Rows = (&'static str, &'static str, &'static str);

/// The table where the demos record which tables they created.
const MARKER: &str = "recon_demo_tables";

/// `true` when none of the demo's `tables` exists and recon's tables hold none of its `rows`
/// (create the demo); `false` when all the tables exist as this demo created them (use them).
/// Anything else is an error that names what is in the way and changes nothing. An error
/// reading the database (a lost connection, say) is returned as it is, and changes nothing
/// either.
pub(crate) async fn needs_creating(
    db: &Db,
    tables: &[Table],
    rows: &[Rows],
) -> Result<bool, Error> {
    let ours = created_by_demo(db).await?;
    let replace = if tables.len() == 1 {
        "it"
    } else {
        "the demo's tables"
    };
    let mut absent = Vec::new();
    for (table, wanted) in tables {
        let Some(cols) = db.columns(&TableName::new(table, "demo table")?).await? else {
            absent.push(*table);
            continue;
        };
        let why = if !ours.iter().any(|t| t == table) {
            "it was not created by this demo".to_owned()
        } else if let Some(c) = wanted
            .iter()
            .find(|w| !cols.iter().any(|c| c.eq_ignore_ascii_case(w)))
        {
            format!("it has no column {c}")
        } else {
            continue;
        };
        return Err(format!(
            "{table} exists but is not the demo's table ({why}); it was left untouched \
             — use another database, or --reset-demo to drop and replace {replace}"
        )
        .into());
    }
    if absent.is_empty() {
        return Ok(false);
    }
    if absent.len() < tables.len() {
        return Err(format!(
            "the demo's tables are incomplete (missing: {}); --reset-demo recreates them",
            absent.join(", ")
        )
        .into());
    }
    for (table, column, value) in rows {
        if db
            .columns(&TableName::new(table, "recon table")?)
            .await?
            .is_none()
        {
            continue; // not migrated yet: no rows
        }
        let sql = format!("SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1");
        if any_row(db, &sql, value).await? {
            return Err(format!(
                "{table} holds rows of {column} {value:?}, the demo's name, but the demo's \
                 tables do not exist, so they are not the demo's; they were left untouched \
                 — use another database, or --reset-demo to delete them and create the demo"
            )
            .into());
        }
    }
    Ok(true)
}

/// Drop the demo's `tables` (only here: after [`needs_creating`], or on `--reset-demo`) and
/// record them as the demo's; the caller creates them again. Deletes the demo's `rows` in
/// recon's tables, which must exist (run the migrations first).
pub(crate) async fn replace(db: &Db, tables: &[Table], rows: &[Rows]) -> Result<(), Error> {
    let create = format!("CREATE TABLE IF NOT EXISTS {MARKER} (name VARCHAR(64) PRIMARY KEY)");
    exec(db, &create, None).await?;
    for (table, _) in tables {
        let table = TableName::new(table, "demo table")?;
        exec(db, &format!("DROP TABLE IF EXISTS {table}"), None).await?;
        let name = Some(table.table().as_str());
        exec(db, &format!("DELETE FROM {MARKER} WHERE name = ?"), name).await?;
        exec(db, &format!("INSERT INTO {MARKER} (name) VALUES (?)"), name).await?;
    }
    for (table, column, value) in rows {
        let sql = format!("DELETE FROM {table} WHERE {column} = ?");
        exec(db, &sql, Some(value)).await?;
    }
    Ok(())
}

/// The tables listed in the marker table (none if it does not exist).
async fn created_by_demo(db: &Db) -> Result<Vec<String>, Error> {
    if db
        .columns(&TableName::new(MARKER, "marker")?)
        .await?
        .is_none()
    {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT name FROM {MARKER}");
    Ok(on_backend!(db, &sql, |pool, sql| {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
    })?)
}

/// One statement with at most one bound text value.
async fn exec(db: &Db, sql: &str, value: Option<&str>) -> Result<(), sqlx::Error> {
    on_backend!(db, sql, |pool, sql| {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(v) = value {
            q = q.bind(v.to_owned());
        }
        q.execute(pool).await.map(drop)
    })
}

/// Whether a query with one bound text value returns a row.
async fn any_row(db: &Db, sql: &str, value: &str) -> Result<bool, sqlx::Error> {
    on_backend!(db, sql, |pool, sql| {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value.to_owned())
            .fetch_optional(pool)
            .await
            .map(|row| row.is_some())
    })
}
