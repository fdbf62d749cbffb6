//! The OCI and Docker image data model that the rbuild registry and builder share.
//!
//! Everything here is pure: parsing and validating the identifiers that reach rbuild from the
//! outside (digests, repository names, tags, image references) and the JSON documents that
//! describe images (descriptors, manifests, indexes). Validation happens here, once, so that no
//! other crate ever builds a filesystem path or a URL from an unchecked string.
//!
//! ```
//! use rbuild_oci::{Digest, Reference};
//!
//! let digest = Digest::sha256_of(b"hello");
//! assert_eq!(digest.to_string().len(), "sha256:".len() + 64);
//!
//! let reference: Reference = "busybox:1.36".parse().unwrap();
//! assert_eq!(reference.registry(), "docker.io");
//! assert_eq!(reference.repository().as_str(), "library/busybox");
//! ```
#![deny(missing_docs)]

pub mod atomic;
pub mod config;
pub mod digest;
pub mod json;
pub mod manifest;
pub mod media_type;
pub mod name;
pub mod origin;
pub mod reference;
pub mod report;
pub mod store;
pub mod time;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use manifest::{Descriptor, ManifestError, ManifestSummary};
pub use name::{NameError, RepositoryName, Tag};
pub use origin::BlobOrigin;
pub use reference::{Reference, ReferenceError};
pub use store::{BlobWriter, ContentStore, StoreError};
