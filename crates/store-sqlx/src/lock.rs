//! [`RunLock`] on the database: session locks (PostgreSQL advisory locks, MySQL `GET_LOCK`)
//! or lease rows in `recon_locks` (every backend; the only kind SQLite has).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use recon_core::{Clock, LockAttempt, LockGuard, RunLock, SystemClock};

#[cfg(any(feature = "postgres", feature = "mysql"))]
use crate::migrate::lock_key;
use crate::value::{Kind, Value};
use crate::{Db, Dialect, TimestampFormat};

/// Which mechanism a [`SqlRunLock`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockMode {
    /// PostgreSQL `pg_try_advisory_lock`, MySQL `GET_LOCK`: held by a dedicated connection,
    /// released when the guard is released or dropped, or when the process dies (the server
    /// ends the session). The TTL is not needed and ignored. On SQLite this falls back to
    /// [`LockMode::LeaseRow`].
    Session,
    /// A row in `recon_locks` with an expiry: a crashed holder blocks others until the TTL
    /// runs out. Works on every backend.
    LeaseRow,
}

/// A [`RunLock`] on the database. Create it with [`Db::run_lock`].
#[derive(Clone, Debug)]
pub struct SqlRunLock {
    db: Db,
    mode: LockMode,
    holder: String,
    clock: Arc<dyn Clock>,
}

impl Db {
    /// The run lock on this database: session locks on PostgreSQL and MySQL, lease rows on
    /// SQLite (run [`Db::migrate`] first).
    pub fn run_lock(&self) -> SqlRunLock {
        SqlRunLock {
            db: self.clone(),
            mode: LockMode::Session,
            holder: format!("pid-{}", std::process::id()),
            clock: Arc::new(SystemClock),
        }
    }
}

impl SqlRunLock {
    /// Use this mechanism.
    #[must_use]
    pub fn mode(mut self, mode: LockMode) -> Self {
        self.mode = mode;
        self
    }

    /// Name this instance in lease rows (default `pid-<process id>`).
    #[must_use]
    pub fn holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = holder.into();
        self
    }

    /// Time lease rows by `clock` (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn effective_mode(&self) -> LockMode {
        if self.db.dialect() == Dialect::Sqlite {
            LockMode::LeaseRow
        } else {
            self.mode
        }
    }
}

fn new_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// MySQL lock names are at most 64 characters.
#[cfg(feature = "mysql")]
fn mysql_lock_name(name: &str) -> String {
    let full = format!("recon:{name}");
    if full.len() <= 64 {
        full
    } else {
        format!("recon:{:016x}", lock_key(name))
    }
}

/// The connection that holds a session lock; dropping it ends the session and the lock.
#[cfg(any(feature = "postgres", feature = "mysql"))]
enum SessionConn {
    #[cfg(feature = "postgres")]
    Pg(sqlx::PgConnection),
    #[cfg(feature = "mysql")]
    My(sqlx::MySqlConnection),
}

#[async_trait]
impl RunLock for SqlRunLock {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> recon_core::Result<LockAttempt> {
        match self.effective_mode() {
            LockMode::Session => self.acquire_session(name, ttl).await,
            LockMode::LeaseRow => self.acquire_row(name, ttl).await,
        }
    }

    #[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(unused_mut))]
    async fn release(&self, mut guard: LockGuard) -> recon_core::Result<()> {
        #[cfg(any(feature = "postgres", feature = "mysql"))]
        if let Some(conn) = guard.take_handle::<SessionConn>() {
            return release_session(*conn, guard.name()).await;
        }
        let p = |n| self.db.dialect().param(n);
        let n = self
            .db
            .execute(
                &format!(
                    "DELETE FROM recon_locks WHERE name = {} AND token = {}",
                    p(1),
                    p(2)
                ),
                &[
                    Value::Text(Some(guard.name().into())),
                    Value::Text(Some(guard.token().into())),
                ],
            )
            .await?;
        if n == 1 {
            Ok(())
        } else {
            Err(recon_core::Error::LockNotHeld {
                name: guard.name().into(),
            })
        }
    }
}

impl SqlRunLock {
    async fn acquire_row(&self, name: &str, ttl: Duration) -> recon_core::Result<LockAttempt> {
        let ttl = chrono::Duration::from_std(ttl).map_err(|_| {
            recon_core::Error::invalid_input(format!("lock ttl {ttl:?} is too large"))
        })?;
        let now = self.clock.now();
        let until = now
            .checked_add_signed(ttl)
            .ok_or_else(|| recon_core::Error::invalid_input("lock ttl overflows the calendar"))?;
        let d = self.db.dialect();
        let p = |n| d.param(n);
        let token = new_token();
        let mut tx = self.db.begin().await?;
        let lock = if d == Dialect::Sqlite {
            ""
        } else {
            " FOR UPDATE"
        };
        let row = tx
            .fetch(
                &format!(
                    "SELECT holder, expires_at FROM recon_locks WHERE name = {}{lock}",
                    p(1)
                ),
                &[Value::Text(Some(name.into()))],
                &[Kind::Text, Kind::Ts(TimestampFormat::Rfc3339)],
            )
            .await?
            .into_iter()
            .next();
        let args = [
            Value::Text(Some(token.clone())),
            Value::Text(Some(self.holder.clone())),
            Value::Ts(Some(until)),
            Value::Ts(Some(now)),
            Value::Text(Some(name.into())),
        ];
        match row {
            Some(mut r) => {
                let expires = r.pop().and_then(Value::ts);
                let holder = r.pop().and_then(Value::text);
                if expires.is_some_and(|e| e > now) {
                    return Ok(LockAttempt::HeldByOther {
                        holder,
                        until: expires,
                    });
                }
                tx.execute(
                    &format!(
                        "UPDATE recon_locks SET token = {}, holder = {}, expires_at = {}, \
                         acquired_at = {} WHERE name = {}",
                        p(1),
                        p(2),
                        p(3),
                        p(4),
                        p(5)
                    ),
                    &args,
                )
                .await?;
            }
            None => {
                let inserted = tx
                    .execute(
                        &format!(
                            "INSERT INTO recon_locks (token, holder, expires_at, acquired_at, name) \
                             VALUES ({}, {}, {}, {}, {})",
                            p(1),
                            p(2),
                            p(3),
                            p(4),
                            p(5)
                        ),
                        &args,
                    )
                    .await;
                if let Err(e) = inserted {
                    // Another instance inserted the row first.
                    if let crate::Error::Database {
                        source: sqlx::Error::Database(db),
                        ..
                    } = &e
                        && db.is_unique_violation()
                    {
                        return Ok(LockAttempt::HeldByOther {
                            holder: None,
                            until: None,
                        });
                    }
                    return Err(e.into());
                }
            }
        }
        tx.commit().await?;
        Ok(LockAttempt::Acquired(
            LockGuard::new(name, token).with_expiry(until),
        ))
    }

    /// Without PostgreSQL or MySQL compiled in, only lease rows exist.
    #[cfg(not(any(feature = "postgres", feature = "mysql")))]
    async fn acquire_session(&self, name: &str, ttl: Duration) -> recon_core::Result<LockAttempt> {
        self.acquire_row(name, ttl).await
    }

    #[cfg(any(feature = "postgres", feature = "mysql"))]
    async fn acquire_session(&self, name: &str, ttl: Duration) -> recon_core::Result<LockAttempt> {
        use crate::db::Pool;
        let held = LockAttempt::HeldByOther {
            holder: None,
            until: None,
        };
        let ctx = |e| -> recon_core::Error { crate::Error::db("take a session lock", e).into() };
        match &self.db.pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(ctx)?.detach();
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(lock_key(name))
                    .fetch_one(&mut conn)
                    .await
                    .map_err(ctx)?;
                if !got {
                    return Ok(held);
                }
                Ok(LockAttempt::Acquired(
                    LockGuard::new(name, new_token()).with_handle(Box::new(SessionConn::Pg(conn))),
                ))
            }
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => {
                let mut conn = pool.acquire().await.map_err(ctx)?.detach();
                let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
                    .bind(mysql_lock_name(name))
                    .fetch_one(&mut conn)
                    .await
                    .map_err(ctx)?;
                if got != Some(1) {
                    return Ok(held);
                }
                Ok(LockAttempt::Acquired(
                    LockGuard::new(name, new_token()).with_handle(Box::new(SessionConn::My(conn))),
                ))
            }
            #[allow(unreachable_patterns)]
            _ => self.acquire_row(name, ttl).await,
        }
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn release_session(conn: SessionConn, name: &str) -> recon_core::Result<()> {
    use sqlx::Connection as _;
    let ctx = |e| -> recon_core::Error { crate::Error::db("release a session lock", e).into() };
    let released = match conn {
        #[cfg(feature = "postgres")]
        SessionConn::Pg(mut c) => {
            let ok: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
                .bind(lock_key(name))
                .fetch_one(&mut c)
                .await
                .map_err(ctx)?;
            c.close().await.map_err(ctx)?;
            ok
        }
        #[cfg(feature = "mysql")]
        SessionConn::My(mut c) => {
            let ok: Option<i64> = sqlx::query_scalar("SELECT RELEASE_LOCK(?)")
                .bind(mysql_lock_name(name))
                .fetch_one(&mut c)
                .await
                .map_err(ctx)?;
            c.close().await.map_err(ctx)?;
            ok == Some(1)
        }
    };
    if released {
        Ok(())
    } else {
        Err(recon_core::Error::LockNotHeld { name: name.into() })
    }
}
