//! A connection pool for one of the three backends, and the two primitives every store is
//! written with: `execute` and `fetch`, on the pool or inside a transaction.
//!
//! Stores build SQL text (validated, quoted identifiers only) and a list of bound [`Value`]s
//! once, in shared code; the macro below expands binding and decoding per backend.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use crate::error::{Context, redact_url};
use crate::value::{Kind, Value, from_millis};
use crate::{Dialect, Error, Result, TimestampFormat};

/// A SQLite collation: its name and its order (see [`Tx::sqlite_collations`]).
pub(crate) type Collation = (&'static str, fn(&str, &str) -> std::cmp::Ordering);

#[derive(Clone, Debug)]
pub(crate) enum Pool {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
}

pub(crate) enum Tx {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    #[cfg(feature = "mysql")]
    MySql(sqlx::Transaction<'static, sqlx::MySql>),
}

/// Every dynamic statement passes through here. Identifiers in `sql` come from validated
/// [`Ident`](crate::Ident)s and are quoted; every value is a bound parameter.
fn audited(sql: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(sql.to_owned())
}

macro_rules! backend {
    ($feat:literal, $module:ident, $DB:ty, $Row:ty, $unsigned:expr, $arrays:expr, $ts:expr) => {
        #[cfg(feature = $feat)]
        mod $module {
            use super::*;
            use sqlx::Row as _;

            #[allow(unused_variables)]
            fn unsigned(row: &$Row, i: usize) -> Result<Option<i64>, sqlx::Error> {
                $unsigned(row, i)
            }

            pub(super) type Query<'q> =
                sqlx::query::Query<'q, $DB, <$DB as sqlx::Database>::Arguments>;

            pub(super) fn bind<'q>(sql: &str, args: &[Value]) -> Result<Query<'q>, sqlx::Error> {
                let mut q = sqlx::query::<$DB>(audited(sql));
                for a in args {
                    q = match a {
                        Value::Array(arr) => $arrays(q, arr)?,
                        Value::Int(v) => q.bind(*v),
                        Value::Text(v) => q.bind(v.clone()),
                        // recon's own SQLite tables keep fixed-width RFC 3339 text, so that
                        // text order is time order; the other backends have native types.
                        Value::Ts(v) if $feat == "sqlite" => {
                            q.bind(v.map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()))
                        }
                        // MySQL: sqlx binds DateTime<Utc> as TIMESTAMP (1970-2038); bind the
                        // naive UTC time as DATETIME instead (sessions run in UTC), so that dates
                        // outside that range are not turned into NULL.
                        Value::Ts(v) if $feat == "mysql" => q.bind(v.map(|t| t.naive_utc())),
                        Value::Ts(v) => q.bind(*v),
                        Value::Float(v) => q.bind(*v),
                        Value::Bool(v) => q.bind(*v),
                        Value::Bytes(v) => q.bind(v.clone()),
                    };
                }
                Ok(q)
            }

            /// Host tables use every integer width; accept them all as `i64`.
            fn int(row: &$Row, i: usize) -> Result<Option<i64>, sqlx::Error> {
                if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                    return Ok(v);
                }
                if let Ok(v) = row.try_get::<Option<i32>, _>(i) {
                    return Ok(v.map(i64::from));
                }
                if let Ok(v) = row.try_get::<Option<i16>, _>(i) {
                    return Ok(v.map(i64::from));
                }
                if let Ok(v) = row.try_get::<Option<i8>, _>(i) {
                    return Ok(v.map(i64::from));
                }
                if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
                    return Ok(v.map(i64::from));
                }
                // unsigned MySQL columns; values above i64::MAX are rejected, not wrapped
                unsigned(row, i)
            }

            /// Decode every column on its own: a column that cannot be decoded (a timestamp
            /// in an unknown format, invalid UTF-8) is an `Err` for that cell only.
            pub(super) fn decode_lenient(row: &$Row, kinds: &[Kind]) -> Vec<Result<Value, String>> {
                (0..kinds.len())
                    .map(|i| decode_cell(row, i, &kinds[i]).map_err(|e| e.to_string()))
                    .collect()
            }

            pub(super) fn decode(row: &$Row, kinds: &[Kind]) -> Result<Vec<Value>, sqlx::Error> {
                (0..kinds.len())
                    .map(|i| decode_cell(row, i, &kinds[i]))
                    .collect()
            }

            fn decode_cell(row: &$Row, i: usize, kind: &Kind) -> Result<Value, sqlx::Error> {
                Ok({
                    match kind {
                        Kind::Int => Value::Int(int(row, i)?),
                        Kind::Text => Value::Text(row.try_get::<Option<String>, _>(i)?),
                        Kind::Bool => Value::Bool(match row.try_get::<Option<bool>, _>(i) {
                            Ok(v) => v,
                            Err(_) => int(row, i)?.map(|v| v != 0),
                        }),
                        Kind::Float => Value::Float(match row.try_get::<Option<f64>, _>(i) {
                            Ok(v) => v,
                            Err(_) => match row.try_get::<Option<f32>, _>(i) {
                                Ok(v) => v.map(f64::from),
                                Err(_) => int(row, i)?.map(|v| v as f64),
                            },
                        }),
                        Kind::Ts(TimestampFormat::UnixMillis) if $feat == "sqlite" => {
                            match row.try_get::<Option<i64>, _>(i)? {
                                None => Value::Ts(None),
                                Some(ms) => Value::Ts(Some(from_millis(ms).ok_or_else(|| {
                                    sqlx::Error::Decode(
                                        format!("{ms} ms is outside the calendar").into(),
                                    )
                                })?)),
                            }
                        }
                        Kind::Ts(_) => Value::Ts($ts(row, i)?),
                        Kind::Bytes => Value::Bytes(row.try_get::<Option<Vec<u8>>, _>(i)?),
                    }
                })
            }
        }
    };
}

#[cfg(feature = "mysql")]
fn unsigned_mysql(row: &sqlx::mysql::MySqlRow, i: usize) -> Result<Option<i64>, sqlx::Error> {
    use sqlx::Row as _;
    match row.try_get::<Option<u64>, _>(i)? {
        None => Ok(None),
        Some(v) => i64::try_from(v).map(Some).map_err(|_| {
            sqlx::Error::Decode(format!("{v} does not fit in a signed 64-bit integer").into())
        }),
    }
}

/// Array parameters exist on PostgreSQL only.
#[allow(dead_code)]
fn no_arrays<Q>(_: Q, _: &crate::value::Array) -> Result<Q, sqlx::Error> {
    Err(sqlx::Error::Protocol(
        "array parameters are only supported on PostgreSQL".into(),
    ))
}

#[cfg(feature = "postgres")]
fn pg_arrays<'q>(
    q: pg_impl::Query<'q>,
    a: &crate::value::Array,
) -> Result<pg_impl::Query<'q>, sqlx::Error> {
    use crate::value::Array;
    Ok(match a {
        Array::Int(v) => q.bind(v.clone()),
        Array::Text(v) => q.bind(v.clone()),
        Array::Ts(v) => q.bind(v.clone()),
        Array::Bytes(v) => q.bind(v.clone()),
    })
}

/// A timestamp cell as sqlx decodes it.
#[allow(dead_code)]
fn timestamp<R: sqlx::Row>(row: &R, i: usize) -> Result<Option<DateTime<Utc>>, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<DateTime<Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    row.try_get(i)
}

/// PostgreSQL timestamps reach beyond chrono's calendar (`infinity`, `-infinity`, years after
/// 262143), and sqlx panics decoding those: check the range first, so that such a value is one
/// unreadable cell (reported) instead of a panic that stops the whole step.
#[cfg(feature = "postgres")]
fn pg_timestamp(
    row: &sqlx::postgres::PgRow,
    i: usize,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    use sqlx::{Row as _, TypeInfo as _, ValueRef as _};
    let raw = row.try_get_raw(i)?;
    let binary = raw.format() == sqlx::postgres::PgValueFormat::Binary;
    if !raw.is_null() && binary && matches!(raw.type_info().name(), "TIMESTAMPTZ" | "TIMESTAMP") {
        // microseconds since 2000-01-01
        let micros = raw
            .as_bytes()
            .ok()
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_be_bytes);
        if let Some(us) = micros
            && us
                .checked_add(946_684_800_000_000)
                .and_then(DateTime::from_timestamp_micros)
                .is_none()
        {
            let what = match us {
                i64::MAX => "infinity".to_owned(),
                i64::MIN => "-infinity".to_owned(),
                _ => format!("{us} µs after 2000-01-01"),
            };
            return Err(sqlx::Error::Decode(
                format!("the timestamp {what} is outside the calendar recon can represent").into(),
            ));
        }
    }
    row.try_get(i)
}

/// Backends without unsigned integer types: the signed attempts above already failed.
#[allow(dead_code)]
fn no_unsigned<R: sqlx::Row>(row: &R, i: usize) -> Result<Option<i64>, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
{
    let _ = row.try_get_raw(i)?;
    Err(sqlx::Error::Decode(
        format!("column {i} is not an integer").into(),
    ))
}

backend!(
    "sqlite",
    sqlite_impl,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    no_unsigned,
    no_arrays,
    timestamp
);
backend!(
    "postgres",
    pg_impl,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    no_unsigned,
    pg_arrays,
    pg_timestamp
);
backend!(
    "mysql",
    mysql_impl,
    sqlx::MySql,
    sqlx::mysql::MySqlRow,
    unsigned_mysql,
    no_arrays,
    timestamp
);

/// Expand `$body` once per backend with `$m` naming the backend's helper module and `$p`
/// bound to its pool / transaction.
macro_rules! on_backend {
    ($value:expr, $Enum:ident, $p:ident, $m:ident => $body:expr) => {
        match $value {
            #[cfg(feature = "sqlite")]
            $Enum::Sqlite($p) => {
                #[allow(unused_imports)]
                use sqlite_impl as $m;
                $body
            }
            #[cfg(feature = "postgres")]
            $Enum::Postgres($p) => {
                #[allow(unused_imports)]
                use pg_impl as $m;
                $body
            }
            #[cfg(feature = "mysql")]
            $Enum::MySql($p) => {
                #[allow(unused_imports)]
                use mysql_impl as $m;
                $body
            }
        }
    };
}

/// Connection settings for [`Db::connect_with`].
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Most connections the pool opens (default 5).
    pub max_connections: u32,
    /// How long to wait for a connection before giving up (default 10 s).
    pub acquire_timeout: Duration,
    /// SQLite only: how long a writer waits for another writer's lock (default 10 s).
    pub busy_timeout: Duration,
    /// PostgreSQL only: the `search_path` for every connection (tests isolate themselves in
    /// a schema this way).
    pub search_path: Option<String>,
    /// PostgreSQL only: the `application_name` shown in `pg_stat_activity`.
    pub application_name: Option<String>,
    /// SQLite only: `PRAGMA mmap_size` in bytes for every connection (default `None`: SQLite's
    /// own default, no memory-mapped I/O). Large fingerprint or job tables read about twice as
    /// fast with it (`docs/benchmarks.md`, classify); the cost is that an I/O error on the file
    /// arrives as a signal (SIGBUS) instead of an error code, which is why it is off unless
    /// asked for.
    pub sqlite_mmap_size: Option<u64>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 5,
            acquire_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(10),
            search_path: None,
            application_name: None,
            sqlite_mmap_size: None,
        }
    }
}

/// A pool of connections to SQLite, PostgreSQL or MySQL/MariaDB: the handle every SQL store
/// is built from. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> store_sqlx::Result<()> {
/// let db = store_sqlx::Db::connect("sqlite:recon-demo.sqlite").await?;
/// db.migrate().await?; // recon's own tables
/// println!("{} says it is {}", db.dialect().name(), db.now().await?);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Db {
    pub(crate) pool: Pool,
    dialect: Dialect,
}

impl Db {
    /// Connect with default [`ConnectOptions`]. The URL scheme picks the backend:
    /// `sqlite:path` (the file is created if missing), `postgres://…`, `mysql://…` /
    /// `mariadb://…`.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, ConnectOptions::default()).await
    }

    /// Connect with explicit options.
    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Self> {
        let shown = redact_url(url);
        let unsupported = |reason: &str| Error::UnsupportedUrl {
            url: shown.clone(),
            reason: reason.to_owned(),
        };
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        /// One direct connection first, so that a wrong password or a refused connection is
        /// reported as itself at once (a pool only says it timed out), then the pool.
        async fn open<DB: sqlx::Database>(
            o: &ConnectOptions,
            opts: <DB::Connection as sqlx::Connection>::Options,
        ) -> std::result::Result<sqlx::Pool<DB>, sqlx::Error> {
            use sqlx::Connection as _;
            let first = tokio::time::timeout(
                o.acquire_timeout,
                <DB::Connection as sqlx::Connection>::connect_with(&opts),
            )
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
            first.close().await?;
            sqlx::pool::PoolOptions::<DB>::new()
                .max_connections(o.max_connections.max(1))
                .acquire_timeout(o.acquire_timeout)
                .connect_with(opts)
                .await
        }
        let what = format!("connect to {shown}");
        match scheme.as_str() {
            "sqlite" => {
                #[cfg(feature = "sqlite")]
                {
                    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
                    let mut opts = SqliteConnectOptions::from_str(url)
                        .map_err(|e| unsupported(&e.to_string()))?
                        .create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                        .busy_timeout(options.busy_timeout);
                    if let Some(bytes) = options.sqlite_mmap_size {
                        opts = opts.pragma("mmap_size", bytes.to_string());
                    }
                    let pool = open(&options, opts).await.context(&what)?;
                    Ok(Self::from_pool(Pool::Sqlite(pool)))
                }
                #[cfg(not(feature = "sqlite"))]
                Err(unsupported("this build has no `sqlite` feature"))
            }
            "postgres" | "postgresql" => {
                #[cfg(feature = "postgres")]
                {
                    let mut opts = sqlx::postgres::PgConnectOptions::from_str(url)
                        .map_err(|e| unsupported(&e.to_string()))?;
                    if let Some(path) = &options.search_path {
                        opts = opts.options([("search_path", path.as_str())]);
                    }
                    if let Some(name) = &options.application_name {
                        opts = opts.application_name(name);
                    }
                    let pool = open(&options, opts).await.context(&what)?;
                    Ok(Self::from_pool(Pool::Postgres(pool)))
                }
                #[cfg(not(feature = "postgres"))]
                Err(unsupported("this build has no `postgres` feature"))
            }
            "mysql" | "mariadb" => {
                #[cfg(feature = "mysql")]
                {
                    let url = url.replacen("mariadb:", "mysql:", 1);
                    let opts = sqlx::mysql::MySqlConnectOptions::from_str(&url)
                        .map_err(|e| unsupported(&e.to_string()))?;
                    let pool = open(&options, opts).await.context(&what)?;
                    Ok(Self::from_pool(Pool::MySql(pool)))
                }
                #[cfg(not(feature = "mysql"))]
                Err(unsupported("this build has no `mysql` feature"))
            }
            _ => Err(unsupported("unknown scheme")),
        }
    }

    /// Wrap an existing SQLite pool (the host's own).
    #[cfg(feature = "sqlite")]
    pub fn from_sqlite(pool: sqlx::SqlitePool) -> Self {
        Self::from_pool(Pool::Sqlite(pool))
    }

    /// Wrap an existing PostgreSQL pool (the host's own).
    #[cfg(feature = "postgres")]
    pub fn from_postgres(pool: sqlx::PgPool) -> Self {
        Self::from_pool(Pool::Postgres(pool))
    }

    /// Wrap an existing MySQL/MariaDB pool (the host's own).
    #[cfg(feature = "mysql")]
    pub fn from_mysql(pool: sqlx::MySqlPool) -> Self {
        Self::from_pool(Pool::MySql(pool))
    }

    fn from_pool(pool: Pool) -> Self {
        let dialect = match &pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => Dialect::Sqlite,
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => Dialect::Postgres,
            #[cfg(feature = "mysql")]
            Pool::MySql(_) => Dialect::MySql,
        };
        Self { pool, dialect }
    }

    /// The backend's dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The SQLite pool, if this is SQLite (for the host's own queries).
    #[cfg(feature = "sqlite")]
    pub fn as_sqlite(&self) -> Option<&sqlx::SqlitePool> {
        #[allow(unreachable_patterns)]
        match &self.pool {
            Pool::Sqlite(p) => Some(p),
            _ => None,
        }
    }

    /// The PostgreSQL pool, if this is PostgreSQL.
    #[cfg(feature = "postgres")]
    pub fn as_postgres(&self) -> Option<&sqlx::PgPool> {
        #[allow(unreachable_patterns)]
        match &self.pool {
            Pool::Postgres(p) => Some(p),
            _ => None,
        }
    }

    /// The MySQL/MariaDB pool, if this is MySQL/MariaDB.
    #[cfg(feature = "mysql")]
    pub fn as_mysql(&self) -> Option<&sqlx::MySqlPool> {
        #[allow(unreachable_patterns)]
        match &self.pool {
            Pool::MySql(p) => Some(p),
            _ => None,
        }
    }

    /// `SELECT 1`: fails with a transient error when the database is unreachable.
    pub async fn ping(&self) -> Result<()> {
        self.fetch("SELECT 1", &[], &[Kind::Int]).await.map(drop)
    }

    /// The database's clock (`CURRENT_TIMESTAMP` in UTC, with sub-second precision where the
    /// backend has it), so that every instance agrees on lease expiry.
    pub async fn now(&self) -> Result<DateTime<Utc>> {
        let sql = match self.dialect {
            Dialect::Postgres => "SELECT CAST(clock_timestamp() AS timestamptz)",
            Dialect::MySql => "SELECT UTC_TIMESTAMP(6)",
            Dialect::Sqlite => "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        };
        let rows = self
            .fetch(sql, &[], &[Kind::Ts(TimestampFormat::Rfc3339)])
            .await?;
        Value::single(rows)
            .and_then(Value::ts)
            .ok_or_else(|| Error::Config("the database returned no time".into()))
    }

    /// Close every connection of the pool.
    pub async fn close(&self) {
        on_backend!(&self.pool, Pool, p, _m => p.close().await)
    }

    pub(crate) async fn execute(&self, sql: &str, args: &[Value]) -> Result<u64> {
        on_backend!(&self.pool, Pool, p, m => {
            m::bind(sql, args).context(sql_head(sql))?.execute(p).await.map(|r| r.rows_affected()).context(sql_head(sql))
        })
    }

    pub(crate) async fn fetch(
        &self,
        sql: &str,
        args: &[Value],
        kinds: &[Kind],
    ) -> Result<Vec<Vec<Value>>> {
        on_backend!(&self.pool, Pool, p, m => {
            let rows = m::bind(sql, args).context(sql_head(sql))?.fetch_all(p).await.context(sql_head(sql))?;
            rows.iter()
                .map(|r| m::decode(r, kinds))
                .collect::<Result<Vec<_>, _>>()
                .context(sql_head(sql))
        })
    }

    /// Like `fetch`, but a cell that cannot be decoded is an `Err` for that cell only, so one
    /// bad value cannot fail a whole batch.
    pub(crate) async fn fetch_lenient(
        &self,
        sql: &str,
        args: &[Value],
        kinds: &[Kind],
    ) -> Result<Vec<Vec<std::result::Result<Value, String>>>> {
        self.fetch_lenient_with(sql, args, kinds, true).await
    }

    /// PostgreSQL's keyset walk: like `fetch_lenient`, but planned with the bound values on
    /// every call (not kept as a prepared statement: PostgreSQL switches one to a generic plan
    /// after five executions, and for a keyset read that plan can walk the whole primary key
    /// of a table where nothing matches), in a transaction that turns bitmap scans off. A keyset batch (`status = ? AND id > ? … ORDER BY id LIMIT n`)
    /// planned from statistics taken while few jobs were processing (a host's normal state,
    /// before the crash) otherwise reads *every* remaining candidate through a bitmap scan and
    /// sorts them all, for every batch: 34–52 ms a batch of 500 with 95,000 candidates left,
    /// against 0.5–0.7 ms for the walk along the `(status, id)` index (EXPLAIN ANALYZE).
    /// Also right for data-modifying statements that pick their rows that way.
    pub(crate) async fn fetch_lenient_walking(
        &self,
        sql: &str,
        args: &[Value],
        kinds: &[Kind],
    ) -> Result<Vec<Vec<std::result::Result<Value, String>>>> {
        let mut tx = self.begin_walking(None).await?;
        let rows = tx.fetch_unprepared(sql, args, kinds).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// A PostgreSQL transaction for keyset walks (see `fetch_lenient_walking`): bitmap scans
    /// off and, with `lock_wait`, lock waits cut short after that long (`lock_timeout`, so a
    /// statement that meets a row another transaction holds fails with 55P03 instead of
    /// waiting for it).
    pub(crate) async fn begin_walking(&self, lock_wait: Option<&str>) -> Result<Tx> {
        let mut tx = self.begin().await?;
        match lock_wait {
            None => tx.execute("SET LOCAL enable_bitmapscan = off", &[]).await?,
            Some(wait) => {
                tx.execute(
                    "SELECT set_config('enable_bitmapscan', 'off', true), \
                     set_config('lock_timeout', $1, true)",
                    &[Value::Text(Some(wait.to_owned()))],
                )
                .await?
            }
        };
        Ok(tx)
    }

    async fn fetch_lenient_with(
        &self,
        sql: &str,
        args: &[Value],
        kinds: &[Kind],
        persistent: bool,
    ) -> Result<Vec<Vec<std::result::Result<Value, String>>>> {
        on_backend!(&self.pool, Pool, p, m => {
            let rows = m::bind(sql, args)
                .context(sql_head(sql))?
                .persistent(persistent)
                .fetch_all(p)
                .await
                .context(sql_head(sql))?;
            Ok(rows.iter().map(|r| m::decode_lenient(r, kinds)).collect())
        })
    }

    /// Begin a transaction. On SQLite a writing transaction starts with `BEGIN IMMEDIATE`, so
    /// that it takes the write lock before reading (no upgrade deadlocks between writers).
    pub(crate) async fn begin(&self) -> Result<Tx> {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p) => Ok(Tx::Sqlite(
                p.begin_with("BEGIN IMMEDIATE")
                    .await
                    .context("BEGIN IMMEDIATE")?,
            )),
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => Ok(Tx::Postgres(p.begin().await.context("BEGIN")?)),
            #[cfg(feature = "mysql")]
            Pool::MySql(p) => Ok(Tx::MySql(p.begin().await.context("BEGIN")?)),
        }
    }
}

/// The database as the runner's clock: `Runner::builder(..).time_source(Arc::new(db.clone()))`
/// makes every instance decide with the same `now`, whatever their own clocks say.
#[async_trait::async_trait]
impl recon_core::TimeSource for Db {
    async fn fetch_now(&self) -> recon_core::Result<DateTime<Utc>> {
        Ok(self.now().await?)
    }
}

impl Tx {
    pub(crate) async fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64> {
        on_backend!(self, Tx, tx, m => {
            m::bind(sql, args).context(sql_head(sql))?.execute(&mut **tx).await.map(|r| r.rows_affected()).context(sql_head(sql))
        })
    }

    pub(crate) async fn fetch(
        &mut self,
        sql: &str,
        args: &[Value],
        kinds: &[Kind],
    ) -> Result<Vec<Vec<Value>>> {
        on_backend!(self, Tx, tx, m => {
            let rows = m::bind(sql, args).context(sql_head(sql))?.fetch_all(&mut **tx).await.context(sql_head(sql))?;
            rows.iter()
                .map(|r| m::decode(r, kinds))
                .collect::<Result<Vec<_>, _>>()
                .context(sql_head(sql))
        })
    }

    /// Like `fetch`, per-cell (see `Db::fetch_lenient`).
    pub(crate) async fn fetch_lenient(
        &mut self,
        sql: &str,
        args: &[Value],
        kinds: &[Kind],
    ) -> Result<Vec<Vec<std::result::Result<Value, String>>>> {
        self.fetch_lenient_with(sql, args, kinds, true).await
    }

    /// Like `fetch_lenient`, planned with its values every time (not kept as a prepared
    /// statement; see `Db::fetch_lenient_walking`).
    pub(crate) async fn fetch_unprepared(
        &mut self,
        sql: &str,
        args: &[Value],
        kinds: &[Kind],
    ) -> Result<Vec<Vec<std::result::Result<Value, String>>>> {
        self.fetch_lenient_with(sql, args, kinds, false).await
    }

    async fn fetch_lenient_with(
        &mut self,
        sql: &str,
        args: &[Value],
        kinds: &[Kind],
        persistent: bool,
    ) -> Result<Vec<Vec<std::result::Result<Value, String>>>> {
        on_backend!(self, Tx, tx, m => {
            let rows = m::bind(sql, args)
                .context(sql_head(sql))?
                .persistent(persistent)
                .fetch_all(&mut **tx)
                .await
                .context(sql_head(sql))?;
            Ok(rows.iter().map(|r| m::decode_lenient(r, kinds)).collect())
        })
    }

    pub(crate) async fn commit(self) -> Result<()> {
        on_backend!(self, Tx, tx, _m => tx.commit().await.context("COMMIT"))
    }

    /// SQLite only (a no-op elsewhere): make sure each of `collations` is registered on this
    /// transaction's connection, registering the missing ones. A connection keeps them for
    /// its life, so this costs one small query on every later call. Registering a new name
    /// leaves the connection's prepared statements alone.
    // (one backend built: the pattern cannot fail)
    #[allow(irrefutable_let_patterns)]
    pub(crate) async fn sqlite_collations(&mut self, collations: &[Collation]) -> Result<()> {
        #[cfg(feature = "sqlite")]
        if let Self::Sqlite(tx) = self {
            let known: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_collation_list")
                .fetch_all(&mut **tx)
                .await
                .context("PRAGMA collation_list")?;
            let missing: Vec<_> = collations
                .iter()
                .filter(|(name, _)| !known.iter().any(|k| k.as_str() == *name))
                .collect();
            if !missing.is_empty() {
                let mut handle = tx.lock_handle().await.context("register collations")?;
                for (name, compare) in missing {
                    handle
                        .create_collation(name, *compare)
                        .context("register a collation")?;
                }
            }
        }
        #[cfg(not(feature = "sqlite"))]
        let _ = collations;
        Ok(())
    }

    /// Roll back now. A transaction that is only dropped is rolled back later, when the
    /// pool flushes its connection in the background: until then its locks stay held, and
    /// the next statement (on another connection) may wait for them or, with `SKIP LOCKED`,
    /// skip the rows they hold.
    pub(crate) async fn rollback(self) -> Result<()> {
        on_backend!(self, Tx, tx, _m => tx.rollback().await.context("ROLLBACK"))
    }
}

/// The first words of a statement, for error context (never values: those are bound).
fn sql_head(sql: &str) -> &str {
    let end = sql
        .char_indices()
        .nth(60)
        .map(|(i, _)| i)
        .unwrap_or(sql.len());
    sql[..end].trim()
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    async fn mmap_size(db: &Db) -> i64 {
        sqlx::query_scalar::<_, i64>("PRAGMA mmap_size")
            .fetch_one(db.as_sqlite().expect("a SQLite pool"))
            .await
            .expect("PRAGMA mmap_size")
    }

    #[tokio::test]
    async fn sqlite_mmap_size_is_set_on_every_connection_only_when_asked() {
        let path = std::env::temp_dir().join(format!(
            "recon-mmap-{}-{}.sqlite",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let url = format!("sqlite:{}", path.display());
        let plain = Db::connect(&url).await.expect("connect");
        assert_eq!(mmap_size(&plain).await, 0, "off unless asked for");
        plain.close().await;

        let options = ConnectOptions {
            sqlite_mmap_size: Some(64 * 1024 * 1024),
            max_connections: 2,
            ..ConnectOptions::default()
        };
        let db = Db::connect_with(&url, options).await.expect("connect");
        // hold one connection so the query runs on a second: each one the pool opens has it
        let pool = db.as_sqlite().expect("a SQLite pool");
        let mut first = pool.acquire().await.expect("acquire");
        let on_first: i64 = sqlx::query_scalar("PRAGMA mmap_size")
            .fetch_one(&mut *first)
            .await
            .expect("PRAGMA mmap_size");
        assert_eq!(on_first, 64 * 1024 * 1024);
        assert_eq!(mmap_size(&db).await, 64 * 1024 * 1024);
        assert_eq!(
            pool.size(),
            2,
            "the second query ran on a second connection"
        );
        drop(first);
        db.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
