//! `rbuild serve` against the distribution spec and real clients.
//!
//! One test binary with a module per area; every test starts its own registry process.

mod auth;
mod bad_input;
mod blobs;
mod cluster;
mod conformance;
mod deploy;
mod discovery;
mod faults;
mod gc;
mod interop;
mod manifests;
mod metrics;
mod mounts;
mod notifications;
mod operation;
mod postgres;
mod proxy;
mod s3;
mod uploads;
