//! The one error type of `store-sqlx`.

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the SQL stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A table or column name is not a plain identifier; nothing was sent to the database.
    #[error(
        "invalid identifier {name:?} for {what}: use letters, digits and `_`, not starting with a \
         digit, at most 63 characters, optionally `schema.table`"
    )]
    InvalidIdentifier {
        /// What the identifier names (`"job table"`, `"status column"`).
        what: String,
        /// The rejected text.
        name: String,
    },

    /// The store was configured in a way that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The URL names a backend this build does not include, or no backend at all.
    #[error(
        "unsupported database URL {url:?}: {reason} (use sqlite:, postgres:// or mysql://, and \
         enable the matching feature of store-sqlx / recon)"
    )]
    UnsupportedUrl {
        /// The URL, with any password removed.
        url: String,
        /// Why it is not supported.
        reason: String,
    },

    /// `verify()` found the mapped table missing.
    #[error("table {table} does not exist{hint}")]
    MissingTable {
        /// The table as mapped.
        table: String,
        /// A suggestion (a table of another case), or empty.
        hint: String,
    },

    /// `verify()` found mapped columns missing.
    #[error("table {table} has no column(s) {}{hint}", missing.join(", "))]
    MissingColumns {
        /// The table as mapped.
        table: String,
        /// The columns that are mapped but do not exist.
        missing: Vec<String>,
        /// A suggestion (columns of another case), or empty.
        hint: String,
    },

    /// A value read from the database cannot be used (a timestamp in an unknown format, say).
    #[error("bad value in {table}.{column} of row {key}: {reason}")]
    BadValue {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// The row's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// recon's own migrations could not be applied.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// Migration version.
        version: i64,
        /// Migration name.
        name: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },

    /// A migration applied earlier differs from the one in this build.
    #[error(
        "migration {version} ({name}) was applied with a different checksum: the database was \
         migrated by another version of recon"
    )]
    MigrationChanged {
        /// Migration version.
        version: i64,
        /// Migration name.
        name: String,
    },

    /// The database returned an error.
    #[error("{context}: {source}")]
    Database {
        /// What was being done.
        context: String,
        /// Whether retrying later may succeed (connection lost, deadlock, lock timeout).
        transient: bool,
        /// The sqlx error.
        #[source]
        source: sqlx::Error,
    },
}

impl Error {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database { transient, .. } => *transient,
            Self::Migration { source, .. } => is_transient_sqlx(source),
            _ => false,
        }
    }

    pub(crate) fn db(context: impl Into<String>, source: sqlx::Error) -> Self {
        Self::Database {
            context: context.into(),
            transient: is_transient_sqlx(&source),
            source,
        }
    }

    /// Whether this is PostgreSQL's `lock_not_available` (55P03): a `lock_timeout` ran out.
    pub(crate) fn is_pg_lock_timeout(&self) -> bool {
        matches!(
            self,
            Self::Database { source: sqlx::Error::Database(db), .. }
                if db.code().as_deref() == Some("55P03")
        )
    }

    pub(crate) fn ident(what: impl Into<String>, name: impl Into<String>) -> Self {
        Self::InvalidIdentifier {
            what: what.into(),
            name: name.into(),
        }
    }
}

/// A helper to attach context to sqlx results.
pub(crate) trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, sqlx::Error> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::db(what, e))
    }
}

/// Whether a sqlx error is worth retrying: lost connections, pool exhaustion, deadlocks,
/// serialization failures, lock timeouts and a busy SQLite database.
pub fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => is_transient_code(db.code().as_deref()),
        _ => false,
    }
}

/// Lock conflicts: a deadlock victim, a serialization failure, a lock wait timeout, a busy
/// SQLite file. The transaction was rolled back and retrying it at once is safe and likely to
/// succeed. (Killed connections and shutdowns are transient too, but are left to the next run.)
pub(crate) fn is_lock_conflict_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("40001" | "40P01" | "55P03" | "1213" | "1205" | "5" | "6" | "261" | "517" | "262")
    )
}

/// Database error codes that mean "try again": deadlocks, serialization failures, lock
/// timeouts, a busy SQLite file, and PostgreSQL/MySQL connection terminations.
pub(crate) fn is_transient_code(code: Option<&str>) -> bool {
    matches!(
        code,
        // PostgreSQL: serialization_failure, deadlock_detected, lock_not_available,
        // admin_shutdown, crash_shutdown, cannot_connect_now, query_canceled
        Some("40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" | "57014")
        // MySQL/MariaDB: ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT, ER_QUERY_INTERRUPTED,
        // ER_CONNECTION_KILLED, server gone / lost (SQLSTATE 40001 / HY000 come as numbers here)
        | Some("1213" | "1205" | "1317" | "1927" | "2006" | "2013" | "70100")
        // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes
        | Some("5" | "6" | "261" | "517" | "262")
    )
}

impl From<Error> for recon_core::Error {
    fn from(e: Error) -> Self {
        let transient = e.is_transient();
        match e {
            Error::InvalidIdentifier { .. } | Error::Config(_) | Error::UnsupportedUrl { .. } => {
                recon_core::Error::config(e.to_string())
            }
            Error::BadValue { .. } => recon_core::Error::invalid_input(e.to_string()),
            other => {
                let context = "database".to_owned();
                if transient {
                    recon_core::Error::transient(context, other)
                } else {
                    recon_core::Error::permanent(context, other)
                }
            }
        }
    }
}

/// Remove the password from a database URL before it is shown anywhere.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://bob:secret@db:5432/x"),
            "postgres://bob:***@db:5432/x"
        );
        assert_eq!(redact_url("mysql://root@h/x"), "mysql://root@h/x");
        assert_eq!(redact_url("sqlite:demo.sqlite"), "sqlite:demo.sqlite");
    }

    #[test]
    fn only_lock_conflicts_are_retried_in_place() {
        for c in ["40001", "40P01", "1213", "1205", "5", "517"] {
            assert!(is_lock_conflict_code(Some(c)), "{c}");
        }
        for c in ["57P01", "1927", "2013", "23505", "70100"] {
            assert!(!is_lock_conflict_code(Some(c)), "{c}");
        }
    }

    #[test]
    fn transient_codes() {
        assert!(is_transient_code(Some("40P01")));
        assert!(is_transient_code(Some("1213")));
        assert!(is_transient_code(Some("5")));
        assert!(!is_transient_code(Some("23505")));
        assert!(!is_transient_code(None));
        assert!(is_transient_sqlx(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient_sqlx(&sqlx::Error::RowNotFound));
    }
}
