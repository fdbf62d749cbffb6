//! Dockerfile builds: from a plan (made by `rbuild-dockerfile`) and a context to an OCI image.
#![deny(missing_docs)]

pub mod cache;
pub mod context;
pub mod error;
pub mod glob;
pub mod image;
pub mod owner;
pub mod rootfs;
pub mod statcache;

pub use error::{BuildError, Result};
