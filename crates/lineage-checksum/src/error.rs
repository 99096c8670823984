//! The one error type of `lineage-checksum`.

use recon_core::BoxError;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
///
/// Bad input is reported before anything is written, so an error never loses data that was
/// handed in. Retry logic asks [`Error::is_transient`]; it never parses messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two fields of one fingerprint have the same name.
    #[error("duplicate field name `{0}` in a fingerprint; field names must be unique")]
    DuplicateField(String),

    /// A [`Schema`](crate::Schema) was given the wrong number of values.
    #[error("fingerprint schema `{domain}` has {expected} fields but {got} values were given")]
    FieldCount {
        /// The schema's domain.
        domain: String,
        /// Number of fields of the schema.
        expected: usize,
        /// Number of values given.
        got: usize,
    },

    /// Text that should be a fingerprint is not 64 hexadecimal digits.
    #[error("invalid fingerprint `{0}`: expected 64 hexadecimal digits")]
    InvalidFingerprint(String),

    /// The stage list of a pipeline is empty, has duplicates or a malformed name.
    #[error("invalid stages: {0}")]
    InvalidStages(String),

    /// A stage name that is not one of the pipeline's stages.
    #[error("unknown stage `{stage}` (stages: {known})")]
    UnknownStage {
        /// The name that was given.
        stage: String,
        /// The pipeline's stages, comma separated.
        known: String,
    },

    /// A value is larger than the documented limit (see [`crate::limits`]).
    #[error("{what} is {len} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// What was too large, e.g. `payload of record 42`.
        what: String,
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },

    /// An argument is not acceptable (empty key, duplicate key in one batch, zero limit, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A component was configured in a way that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A store, the upstream source or a host callback failed.
    #[error("{context}: {source}")]
    Source {
        /// What was being done, e.g. `"look up fingerprints"`.
        context: String,
        /// Whether trying again later may succeed.
        transient: bool,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// An error from `recon-core` (a watermark store, say).
    #[error(transparent)]
    Core(#[from] recon_core::Error),
}

impl Error {
    /// A failure that may go away when retried (connection lost, timeout, deadlock).
    pub fn transient(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Source {
            context: context.into(),
            transient: true,
            source: source.into(),
        }
    }

    /// A failure that will not go away by retrying.
    pub fn permanent(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Source {
            context: context.into(),
            transient: false,
            source: source.into(),
        }
    }

    /// An invalid-input error.
    pub fn invalid_input(msg: impl Into<String>) -> Self {
        Self::InvalidInput(msg.into())
    }

    /// A configuration error.
    pub fn config(msg: impl Into<String>) -> Self {
        Self::Config(msg.into())
    }

    /// Whether retrying the same operation later may succeed.
    ///
    /// Only [`Error::Source`] built with [`Error::transient`] and transient `recon-core` errors
    /// are transient; input, limit and configuration errors never are.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Source { transient, .. } => *transient,
            Self::Core(e) => e.is_transient(),
            Self::DuplicateField(_)
            | Self::FieldCount { .. }
            | Self::InvalidFingerprint(_)
            | Self::InvalidStages(_)
            | Self::UnknownStage { .. }
            | Self::TooLarge { .. }
            | Self::InvalidInput(_)
            | Self::Config(_) => false,
        }
    }
}

impl From<Error> for recon_core::Error {
    /// Keeps the transient flag: a transient store error stays transient for the runner.
    fn from(e: Error) -> Self {
        match e {
            Error::Core(inner) => inner,
            Error::Source {
                context,
                transient,
                source,
            } => recon_core::Error::Source {
                context,
                transient,
                source,
            },
            Error::Config(msg) => recon_core::Error::Config(msg),
            other => recon_core::Error::InvalidInput(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_flag_survives_conversion_to_core() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = Error::transient("look up fingerprints", io);
        assert!(e.is_transient());
        let core: recon_core::Error = e.into();
        assert!(core.is_transient());
        assert_eq!(core.to_string(), "look up fingerprints: reset");

        let e = Error::permanent("apply", std::io::Error::other("bad"));
        assert!(!e.is_transient());
        assert!(!recon_core::Error::from(e).is_transient());

        let core: recon_core::Error = Error::DuplicateField("id".into()).into();
        assert!(!core.is_transient());
        assert!(core.to_string().contains("duplicate field name `id`"));

        let e = Error::from(recon_core::Error::Timeout(std::time::Duration::from_secs(
            1,
        )));
        assert!(e.is_transient());
        assert!(recon_core::Error::from(e).is_transient());
        assert!(matches!(
            recon_core::Error::from(Error::config("x")),
            recon_core::Error::Config(_)
        ));
    }
}
