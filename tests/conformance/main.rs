#![allow(unreachable_pub, missing_docs)]

//! One behavioural suite, run against every store implementation: the in-memory reference
//! stores and SQLite always; PostgreSQL and MySQL/MariaDB when their URLs are set.

mod common;
mod core_stores;
mod hostile;
mod jobs;
mod lease;
mod lineage;
mod metrics;
mod rehydrate;

use common::TestDb;

/// The store implementation a case runs against.
pub enum Backend<'a> {
    /// recon's in-memory reference implementations.
    Memory,
    /// store-sqlx on a fresh database.
    Sql(&'a TestDb),
}

impl Backend<'_> {
    pub fn name(&self) -> String {
        match self {
            Backend::Memory => "memory".into(),
            Backend::Sql(t) => t.db.dialect().name().into(),
        }
    }
}
