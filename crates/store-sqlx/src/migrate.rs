//! recon's own tables, created by embedded, per-backend migrations.
//!
//! recon keeps its own ledger (`recon_migrations`) instead of sqlx's `_sqlx_migrations`, so
//! it never collides with a host that runs its own sqlx migrations on the same database.
//! Migrations run under a lock (an advisory lock on PostgreSQL, `GET_LOCK` on MySQL, the
//! write lock on SQLite), so instances starting together do not race.

use crate::value::{Kind, Value};
use crate::{Db, Dialect, Error, Result};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
    mysql: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("../migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!("../migrations/postgres/", $name, ".sql")),
            mysql: include_str!(concat!("../migrations/mysql/", $name, ".sql")),
        }
    };
}

const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_core"),
    migration!(2, "0002_queue"),
    migration!(3, "0003_lineage"),
];

impl Migration {
    fn sql(&self, d: Dialect) -> &'static str {
        match d {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
            Dialect::MySql => self.mysql,
        }
    }
}

/// FNV-1a 64: a stable fingerprint of a migration's text, to notice edited migrations.
fn checksum(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Split a migration file into statements (our files keep `;` at line ends, never inside
/// literals), dropping comment-only lines.
fn statements(sql: &str) -> Vec<String> {
    let body: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    body.split(";\n")
        .chain(std::iter::empty())
        .map(|s| s.trim().trim_end_matches(';').trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS recon_migrations (\
    version BIGINT PRIMARY KEY, name VARCHAR(255) NOT NULL, checksum VARCHAR(32) NOT NULL, \
    applied_at VARCHAR(40) NOT NULL)";

/// A stable 64-bit key for advisory locks and `GET_LOCK` names.
pub(crate) fn lock_key(name: &str) -> i64 {
    i64::from_str_radix(&checksum(name)[..15], 16).unwrap_or(0)
}

impl Db {
    /// Create or update recon's own tables (`recon_runs`, `recon_watermarks`, `recon_locks`,
    /// …). Safe to call from every instance at every start.
    pub async fn migrate(&self) -> Result<()> {
        let d = self.dialect();
        let mut tx = self.begin().await?;
        match d {
            Dialect::Postgres => {
                tx.fetch(
                    "SELECT CAST(pg_advisory_xact_lock($1) AS TEXT)",
                    &[Value::Int(Some(lock_key("recon:migrate")))],
                    &[Kind::Text],
                )
                .await?;
            }
            Dialect::MySql => {
                let got = tx
                    .fetch("SELECT GET_LOCK('recon:migrate', 60)", &[], &[Kind::Int])
                    .await?;
                if got.first().and_then(|r| r[0].clone().int()) != Some(1) {
                    return Err(Error::Config(
                        "could not take the migration lock within 60 s".into(),
                    ));
                }
            }
            Dialect::Sqlite => {} // BEGIN IMMEDIATE already holds the write lock
        }
        tx.execute(LEDGER, &[]).await?;
        let applied = tx
            .fetch(
                "SELECT version, checksum FROM recon_migrations",
                &[],
                &[Kind::Int, Kind::Text],
            )
            .await?;
        for m in MIGRATIONS {
            let sql = m.sql(d);
            let sum = checksum(sql);
            let done = applied
                .iter()
                .find(|r| r[0].clone().int() == Some(m.version));
            if let Some(row) = done {
                if row[1].clone().text().as_deref() != Some(sum.as_str()) {
                    return Err(Error::MigrationChanged {
                        version: m.version,
                        name: m.name.into(),
                    });
                }
                continue;
            }
            for stmt in statements(sql) {
                tx.execute(&stmt, &[]).await.map_err(|e| match e {
                    Error::Database { source, .. } => Error::Migration {
                        version: m.version,
                        name: m.name.into(),
                        source,
                    },
                    other => other,
                })?;
            }
            let p = |n| d.param(n);
            tx.execute(
                &format!(
                    "INSERT INTO recon_migrations (version, name, checksum, applied_at) \
                     VALUES ({}, {}, {}, {})",
                    p(1),
                    p(2),
                    p(3),
                    p(4)
                ),
                &[
                    Value::Int(Some(m.version)),
                    Value::Text(Some(m.name.into())),
                    Value::Text(Some(sum)),
                    Value::Text(Some(chrono::Utc::now().to_rfc3339())),
                ],
            )
            .await?;
        }
        if d == Dialect::MySql {
            tx.fetch("SELECT RELEASE_LOCK('recon:migrate')", &[], &[Kind::Int])
                .await?;
        }
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_and_comments_drop() {
        let s = statements("-- c\nCREATE TABLE a (x INT);\nCREATE INDEX i ON a (x);\n");
        assert_eq!(s, ["CREATE TABLE a (x INT)", "CREATE INDEX i ON a (x)"]);
        for m in MIGRATIONS {
            for d in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
                assert!(!statements(m.sql(d)).is_empty());
            }
        }
    }

    #[test]
    fn checksums_are_stable() {
        assert_eq!(checksum(""), "cbf29ce484222325");
        assert_eq!(checksum("a"), "af63dc4c8601ec8c");
        assert!(lock_key("recon:migrate") > 0);
    }
}
