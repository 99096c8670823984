//! Reliability: "nothing is lost and nothing is done twice", tested on real databases.
//! The figures these tests produce are collected in `docs/reliability.md`.

#![allow(unreachable_pub, missing_docs)]

#[path = "../conformance/common.rs"]
mod common;
mod concurrency;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod faults;
mod model;
mod table;
