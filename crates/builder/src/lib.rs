//! Dockerfile builds: from a plan (made by `rbuild-dockerfile`) and a context to an OCI image,
//! as BuildKit would make it, with a content-addressed layer cache people can reason about.
//!
//! A build travels through these modules, in order ([`build`] drives it):
//!
//! - `prepare`: the Dockerfile parsed and planned by `rbuild-dockerfile`; the
//!   images it names resolved by [`resolve`] (the local [`store`] first, else the registry
//!   through [`remote`]); the [`context`] walked once with `.dockerignore` and the files
//!   COPY/ADD select hashed in parallel, remembered in the [`statcache`];
//! - `schedule`: every stage a task of its own, waiting only for the stages it reads from;
//! - `solve` and `steps`: each step keyed ([`keys`]) and looked up in the [`cache`] (a key
//!   another build or stage is making is waited for, `flight`), and on a miss built —
//!   COPY/ADD by [`copy`], RUN by [`exec`] in an OCI runtime, WORKDIR and the config-only
//!   steps on the [`image`] state; [`snapshot`] and [`rootfs`] give the layers
//!   unpacked once and viewed merged, for `COPY --from`, `--chown` names ([`owner`]) and RUN;
//! - [`export`]: the image written to the local store, and sent where the caller asks (a
//!   registry, an OCI layout directory or tar, a docker archive).
//!
//! ```no_run
//! # async fn demo(remote: std::sync::Arc<dyn rbuild_builder::remote::Remote>) -> rbuild_builder::Result<()> {
//! use rbuild_builder::{Builder, BuildRequest};
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
//!     cache_from: Vec::new(),
//!     complete_image: false,
//! };
//! let output = builder.build(request, std::sync::Arc::new(rbuild_builder::progress::Silent)).await?;
//! println!("{}", output.image.manifest.digest);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod build;
pub mod cache;
pub mod chmod;
pub mod context;
pub mod copy;
pub mod error;
pub mod exec;
pub mod export;
mod flight;
pub mod image;
pub mod keys;
pub mod metrics;
pub mod owner;
mod placement;
mod prepare;
pub mod progress;
pub mod remote;
pub mod remote_cache;
pub mod request;
pub mod resolve;
pub mod rootfs;
mod schedule;
pub mod snapshot;
mod solve;
mod stage;
pub mod statcache;
mod steps;
pub mod store;
#[cfg(test)]
mod test_build;
#[cfg(test)]
mod test_plan;

pub use build::Builder;
pub use error::{BuildError, Result};
pub use rbuild_runtime::Snapshotter;
pub use request::{BuildOutput, BuildRequest, NamedContext};
