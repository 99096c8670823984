//! Databases for the conformance suite: SQLite always (a fresh file per test), PostgreSQL and
//! MySQL/MariaDB when `RECON_TEST_POSTGRES_URL` / `RECON_TEST_MYSQL_URL` are set (a fresh schema
//! or database per test, so tests run in parallel). With `RECON_REQUIRE_ALL_BACKENDS=1` (CI) an
//! unset URL fails the test instead of skipping it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use store_sqlx::{ConnectOptions, Db};

/// A database for one test, removed by [`TestDb::finish`].
pub struct TestDb {
    pub db: Db,
    cleanup: Cleanup,
}

impl TestDb {
    /// The schema (PostgreSQL: also the connections' application_name) or database (MySQL)
    /// this test owns; `None` on SQLite.
    pub fn namespace(&self) -> Option<&str> {
        match &self.cleanup {
            Cleanup::File(_) => None,
            #[cfg(feature = "postgres")]
            Cleanup::PgSchema(s) => Some(s),
            #[cfg(feature = "mysql")]
            Cleanup::MyDatabase(s) => Some(s),
        }
    }

    /// The SQLite file, if this is SQLite.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match &self.cleanup {
            Cleanup::File(p) => Some(p),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

enum Cleanup {
    File(PathBuf),
    #[cfg(feature = "postgres")]
    PgSchema(String),
    #[cfg(feature = "mysql")]
    MyDatabase(String),
}

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "{prefix}_{secs}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The URL of a backend, or `None` (the test is skipped, and says so) when it is unset.
pub fn backend_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var("RECON_REQUIRE_ALL_BACKENDS").is_ok_and(|v| v == "1") {
                panic!("{var} is unset, but RECON_REQUIRE_ALL_BACKENDS=1 requires every backend");
            }
            // Once per backend and test binary, straight to stderr: libtest captures
            // `eprintln!` of passing tests, which would hide the skip.
            static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
            let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
            if !said.iter().any(|v| v == var) {
                said.push(var.to_owned());
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: {var} is unset, so this binary's tests on that backend pass \
                     without running (set it, or RECON_REQUIRE_ALL_BACKENDS=1 to fail instead)"
                );
            }
            None
        }
    }
}

/// With `RECON_REQUIRE_ALL_BACKENDS=1` the PostgreSQL and MySQL tests must not be compiled out
/// either (their bodies are behind the features): fail unless both are on.
#[test]
fn required_backends_are_compiled() {
    let required = std::env::var("RECON_REQUIRE_ALL_BACKENDS").is_ok_and(|v| v == "1");
    if required && !(cfg!(feature = "postgres") && cfg!(feature = "mysql")) {
        panic!(
            "RECON_REQUIRE_ALL_BACKENDS=1, but a backend is compiled out: run with --all-features"
        );
    }
}

pub async fn sqlite() -> TestDb {
    let dir = std::env::temp_dir().join("recon-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.sqlite", unique("t")));
    let db = Db::connect_with(
        &format!("sqlite:{}", path.display()),
        ConnectOptions {
            max_connections: 8,
            ..ConnectOptions::default()
        },
    )
    .await
    .expect("open a SQLite file");
    db.migrate().await.expect("migrate SQLite");
    TestDb {
        db,
        cleanup: Cleanup::File(path),
    }
}

#[cfg(feature = "postgres")]
pub async fn postgres() -> Option<TestDb> {
    let url = backend_url("RECON_TEST_POSTGRES_URL")?;
    let admin = Db::connect(&url).await.expect("connect to PostgreSQL");
    let schema = unique("recon_t");
    let pg = admin.as_postgres().unwrap();
    sweep_pg(pg).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(pg)
        .await
        .expect("create a test schema");
    admin.close().await;
    let db = Db::connect_with(
        &url,
        ConnectOptions {
            max_connections: 12,
            search_path: Some(schema.clone()),
            application_name: Some(schema.clone()),
            ..ConnectOptions::default()
        },
    )
    .await
    .expect("connect to the test schema");
    db.migrate().await.expect("migrate PostgreSQL");
    Some(TestDb {
        db,
        cleanup: Cleanup::PgSchema(schema),
    })
}

/// Drop test schemas left behind by crashed runs more than an hour ago.
#[cfg(feature = "postgres")]
async fn sweep_pg(pg: &sqlx::PgPool) {
    let old: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'recon_t_%'")
            .fetch_all(pg)
            .await
            .unwrap_or_default();
    for s in stale(&old) {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE"
        )))
        .execute(pg)
        .await;
    }
}

fn stale(names: &[String]) -> Vec<&String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    names
        .iter()
        .filter(|n| {
            n.split('_')
                .nth(2)
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|t| now.saturating_sub(t) > 3600)
        })
        .collect()
}

#[cfg(feature = "mysql")]
pub async fn mysql() -> Option<TestDb> {
    let url = backend_url("RECON_TEST_MYSQL_URL")?;
    let admin = Db::connect(&url).await.expect("connect to MySQL/MariaDB");
    let name = unique("recon_t");
    let my = admin.as_mysql().unwrap();
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata WHERE schema_name LIKE 'recon\\_t\\_%'",
    )
    .fetch_all(my)
    .await
    .unwrap_or_default();
    for s in stale(&old) {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {s}")))
            .execute(my)
            .await;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(my)
        .await
        .expect("create a test database");
    admin.close().await;
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&url);
    let db = Db::connect_with(
        &format!("{base}/{name}"),
        ConnectOptions {
            max_connections: 12,
            ..ConnectOptions::default()
        },
    )
    .await
    .expect("connect to the test database");
    db.migrate().await.expect("migrate MySQL");
    Some(TestDb {
        db,
        cleanup: Cleanup::MyDatabase(name),
    })
}

impl TestDb {
    /// Remove the test's database. Failures are ignored: the next run's sweep removes leftovers.
    pub async fn finish(self) {
        match &self.cleanup {
            Cleanup::File(path) => {
                self.db.close().await;
                for ext in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
                }
            }
            #[cfg(feature = "postgres")]
            Cleanup::PgSchema(schema) => {
                if let Some(pg) = self.db.as_postgres() {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .execute(pg)
                    .await;
                }
                self.db.close().await;
            }
            #[cfg(feature = "mysql")]
            Cleanup::MyDatabase(name) => {
                if let Some(my) = self.db.as_mysql() {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name}"
                    )))
                    .execute(my)
                    .await;
                }
                self.db.close().await;
            }
        }
    }

    /// Run raw SQL for seeding (tests only; the library never formats values into SQL).
    pub async fn exec(&self, sql: &str) {
        let result = match self.db.dialect() {
            #[cfg(feature = "sqlite")]
            store_sqlx::Dialect::Sqlite => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(self.db.as_sqlite().unwrap())
                .await
                .map(drop),
            #[cfg(feature = "postgres")]
            store_sqlx::Dialect::Postgres => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(self.db.as_postgres().unwrap())
                .await
                .map(drop),
            #[cfg(feature = "mysql")]
            store_sqlx::Dialect::MySql => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(self.db.as_mysql().unwrap())
                .await
                .map(drop),
            #[allow(unreachable_patterns)]
            d => panic!("backend {d:?} not compiled in"),
        };
        result.unwrap_or_else(|e| panic!("seed SQL failed: {e}\n{sql}"));
    }
}

/// Generate one `#[tokio::test]` per backend for each listed case. A case is an
/// `async fn(&Backend)` in the invoking module.
#[macro_export]
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&$crate::Backend::Memory).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let t = $crate::common::sqlite().await;
                    super::$case(&$crate::Backend::Sql(&t)).await;
                    t.finish().await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(t) = $crate::common::postgres().await else { return };
                    super::$case(&$crate::Backend::Sql(&t)).await;
                    t.finish().await;
                }
            )*
        }
        #[cfg(feature = "mysql")]
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(t) = $crate::common::mysql().await else { return };
                    super::$case(&$crate::Backend::Sql(&t)).await;
                    t.finish().await;
                }
            )*
        }
    };
}

/// Like [`conformance!`] but for cases that only make sense on SQL backends (no memory test).
#[macro_export]
macro_rules! conformance_sql {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let t = $crate::common::sqlite().await;
                    super::$case(&t).await;
                    t.finish().await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(t) = $crate::common::postgres().await else { return };
                    super::$case(&t).await;
                    t.finish().await;
                }
            )*
        }
        #[cfg(feature = "mysql")]
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(t) = $crate::common::mysql().await else { return };
                    super::$case(&t).await;
                    t.finish().await;
                }
            )*
        }
    };
}
