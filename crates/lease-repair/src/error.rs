//! The one error type of `lease-repair`.

/// What can go wrong in lease repair besides store errors (which are `recon_core::Error`s).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The settings cannot work.
    #[error("invalid lease-repair settings: {0}")]
    Settings(String),
}

impl Error {
    /// Whether retrying may help (never, for settings).
    pub fn is_transient(&self) -> bool {
        false
    }
}

impl From<Error> for recon_core::Error {
    fn from(e: Error) -> Self {
        recon_core::Error::config(e.to_string())
    }
}
