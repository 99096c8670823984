#![doc = include_str!("../README.md")]

mod error;
pub mod fingerprint;
pub mod limits;

pub use error::{Error, Result};
pub use fingerprint::{Fingerprint, Schema, Value, fingerprint};
