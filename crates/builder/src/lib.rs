//! Dockerfile builds: from a plan (made by `rbuild-dockerfile`) and a context to an OCI image,
//! as BuildKit would make it, with a content-addressed layer cache people can reason about.
//!
//! The data flows through these modules, in order:
//!
//! - [`context`]: the context walked once with `.dockerignore`, files hashed in parallel and
//!   remembered in the [`statcache`];
//! - [`solver`]: stages run concurrently; each step is keyed ([`cache`]) and either reused or
//!   built — COPY/ADD by [`copy`], config-only steps on the [`image`] state;
//! - [`snapshot`] and [`rootfs`]: layers unpacked once and viewed merged, for `COPY --from`,
//!   `--chown` names ([`owner`]) and placing files onto existing directories;
//! - [`export`]: the finished image as an OCI manifest in the local store, an OCI layout, or a
//!   docker-archive.
//!
#![deny(missing_docs)]

pub mod cache;
pub mod chmod;
pub mod context;
pub mod error;
pub mod export;
pub mod glob;
pub mod image;
pub mod metrics;
pub mod owner;
pub mod progress;
pub mod rootfs;
pub mod statcache;
pub mod time;

pub use error::{BuildError, Result};
