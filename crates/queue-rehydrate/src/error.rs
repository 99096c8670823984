//! The one error type of `queue-rehydrate`.

use crate::{ColumnType, Operator};

/// A boxed error from a store or a host callback.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `queue-rehydrate`.
///
/// Validation errors (a bad identifier, an unknown column, an empty in-list, a value of the
/// wrong type) are found before anything is read or written: the operation that returns one
/// has changed nothing. Retry logic asks [`Error::is_transient`]; it never parses messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A table or column name is not a plain SQL identifier.
    #[error(
        "invalid identifier `{name}`: use letters, digits and `_`, not starting with a digit, \
         at most 63 characters (a table may be `schema.table`)"
    )]
    InvalidIdentifier {
        /// The rejected name.
        name: String,
    },

    /// A predicate, a maintenance rule or a row names a column the mapping does not declare.
    #[error("table `{table}` has no mapped column `{column}`")]
    UnknownColumn {
        /// The mapped table.
        table: String,
        /// The unknown column.
        column: String,
    },

    /// An `IN` list without values (it would match nothing, which is almost always a mistake).
    #[error("the in-list on column `{column}` is empty; an empty in-list matches no row")]
    EmptyInList {
        /// The column of the in-list.
        column: String,
    },

    /// An `IN` list longer than [`MAX_IN_LIST`](crate::MAX_IN_LIST) values.
    #[error("the in-list on column `{column}` has {len} values; at most {max} are allowed")]
    InListTooLong {
        /// The column of the in-list.
        column: String,
        /// How many values it has.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A value whose type is not the column's declared type.
    #[error("column `{column}` is declared {expected}, but the value is {found}")]
    TypeMismatch {
        /// The column.
        column: String,
        /// Its declared type.
        expected: ColumnType,
        /// What was given instead (a type name, `NULL`, or `a time relative to now`).
        found: String,
    },

    /// A comparison with a NULL literal; in SQL `x = NULL` is never true.
    #[error(
        "column `{column}` is compared with NULL; `= NULL` is never true in SQL, \
         use IsNull / IsNotNull"
    )]
    NullComparison {
        /// The column.
        column: String,
    },

    /// An operator the column's type does not support (ordering on text or booleans, whose
    /// order depends on the database's collation or representation).
    #[error("operator `{operator}` is not supported on {column_type} column `{column}`")]
    UnsupportedOperator {
        /// The column.
        column: String,
        /// The operator.
        operator: Operator,
        /// The column's declared type.
        column_type: ColumnType,
    },

    /// A declaration that cannot work (an empty `and`, a duplicate counter name, a zero batch
    /// size, a maintenance rule that sets the key column, ...).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A failure reported by a store (or a host callback), with its cause.
    #[error("{context}: {source}")]
    Store {
        /// What was being done, e.g. `"read candidates"`.
        context: String,
        /// Whether trying again later may succeed (connection lost, lock timeout, deadlock).
        transient: bool,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A configuration error.
    pub fn config(msg: impl Into<String>) -> Self {
        Self::Config(msg.into())
    }

    /// Wrap a store error that may go away when retried later.
    pub fn transient(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Store {
            context: context.into(),
            transient: true,
            source: source.into(),
        }
    }

    /// Wrap a store error that will not go away by retrying.
    pub fn permanent(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Store {
            context: context.into(),
            transient: false,
            source: source.into(),
        }
    }

    /// Whether retrying the same operation later may succeed.
    ///
    /// Only store errors created with [`Error::transient`] are; every validation and
    /// configuration error is permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store { transient, .. } => *transient,
            Self::InvalidIdentifier { .. }
            | Self::UnknownColumn { .. }
            | Self::EmptyInList { .. }
            | Self::InListTooLong { .. }
            | Self::TypeMismatch { .. }
            | Self::NullComparison { .. }
            | Self::UnsupportedOperator { .. }
            | Self::Config(_) => false,
        }
    }
}

impl From<Error> for recon_core::Error {
    /// Store errors keep their context, cause and transient flag; validation and
    /// configuration errors become [`recon_core::Error::Config`].
    fn from(e: Error) -> Self {
        match e {
            Error::Store {
                context,
                transient: true,
                source,
            } => recon_core::Error::transient(context, source),
            Error::Store {
                context,
                transient: false,
                source,
            } => recon_core::Error::permanent(context, source),
            other => recon_core::Error::config(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_flag_survives_conversion() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = Error::transient("read candidates", io);
        assert!(e.is_transient());
        let core: recon_core::Error = e.into();
        assert!(core.is_transient());
        assert_eq!(core.to_string(), "read candidates: reset");

        let e = Error::permanent("enqueue", std::io::Error::other("constraint"));
        assert!(!e.is_transient());
        assert!(!recon_core::Error::from(e).is_transient());

        let e = Error::EmptyInList {
            column: "status".into(),
        };
        assert!(!e.is_transient());
        let core = recon_core::Error::from(e);
        assert!(matches!(core, recon_core::Error::Config(_)));
        assert!(core.to_string().contains("`status` is empty"), "{core}");
    }
}
