//! The harness for rbuild's conformance and interoperability tests.
//!
//! Tests run the real `rbuild` binary (built by `scripts/test` before the suite) and talk to
//! it with real clients: raw HTTP, docker, skopeo, containerd's `ctr` and the `oci-client`
//! crate. Nothing they talk to is mocked.
//!
//! A test that needs an external tool asks [`tools::require`] first. In CI (`CI=true`) a
//! missing tool fails the test; elsewhere the test is skipped with the reason printed.
#![deny(missing_docs)]

pub mod api;
pub mod distribution;
pub mod engines;
pub mod failure;
pub mod hostname;
pub mod images;
pub mod pki;
pub mod prometheus;
pub mod proxy;
pub mod registry;
pub mod tmux;
pub mod tools;
pub mod wait;
