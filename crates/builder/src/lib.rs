//! Dockerfile builds: from a plan (made by `rbuild-dockerfile`) and a context to an OCI image,
//! as BuildKit would make it, with a content-addressed layer cache people can reason about.
//!
//! The data flows through these modules, in order:
//!
//! - [`context`]: the context walked once with `.dockerignore`, files hashed in parallel and
//!   remembered in the [`statcache`];
//! - [`solver`]: stages run concurrently; each step is keyed ([`cache`]) and either reused or
//!   built — COPY/ADD by [`copy`], RUN by [`exec`] in an OCI runtime, config-only steps on the
//!   [`image`] state;
//! - [`snapshot`] and [`rootfs`]: layers unpacked once and viewed merged, for `COPY --from`,
//!   `--chown` names ([`owner`]) and placing files onto existing directories;
//! - [`export`]: the finished image as an OCI manifest in the local store, an OCI layout, or a
//!   docker-archive.
//!
//! ```no_run
//! # async fn demo(remote: std::sync::Arc<dyn rbuild_builder::remote::Remote>) -> rbuild_builder::Result<()> {
//! use rbuild_builder::solver::{Builder, BuildRequest};
//! use rbuild_builder::store::LocalStore;
//!
//! let store = LocalStore::open(std::path::Path::new("/var/cache/rbuild"))?;
//! let builder = Builder::new(store, remote);
//! let request = BuildRequest {
//!     dockerfile: "Dockerfile".into(),
//!     dockerfile_text: "FROM scratch\nCOPY app /app\n".into(),
//!     context: ".".into(),
//!     build_args: Default::default(),
//!     target: None,
//!     no_cache: false,
//!     pull: false,
//!     no_cache_filter: Vec::new(),
//!     labels: Default::default(),
//!     platform: "linux/amd64".into(),
//!     named_contexts: Default::default(),
//!     layer_options: Default::default(),
//!     secrets: Default::default(),
//!     ssh: None,
//!     network: "default".into(),
//!     runtime: None,
//!     snapshotter: None,
//! };
//! let output = builder.build(request, std::sync::Arc::new(rbuild_builder::progress::Silent)).await?;
//! println!("{}", output.image.manifest.digest);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod cache;
pub mod chmod;
pub mod context;
pub mod copy;
pub mod error;
pub mod exec;
pub mod export;
pub mod image;
pub mod metrics;
pub mod owner;
mod placement;
pub mod progress;
pub mod remote;
pub mod rootfs;
pub mod snapshot;
pub mod solver;
pub mod statcache;
pub mod store;

pub use error::{BuildError, Result};
pub use rbuild_runtime::Snapshotter;
