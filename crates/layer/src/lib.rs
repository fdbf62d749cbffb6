//! Image layers: writing them deterministically, reading them safely.
//!
//! - [`write_layer`] turns [`Entry`]s into a tar that is byte-identical for the same entries on
//!   any machine, compressed with gzip on all cores ([`gzip`]) or zstd, and returns the diff ID
//!   and blob digest computed in the same pass.
//! - [`unpack`] applies a layer to a directory and cannot be made to write outside it;
//!   [`decompressed`] detects the compression.
//! - [`entries_from_dir`] reads a directory back as entries (with overlayfs whiteouts turned
//!   into OCI ones), and [`sniff_archive`]/[`extract_archive`] serve `ADD`.
//!
//! ```
//! use rbuild_layer::{Entry, EntryKind, FileSource, LayerOptions, write_layer};
//!
//! let entries = vec![Entry {
//!     path: "hello.txt".into(),
//!     kind: EntryKind::File(FileSource::Bytes(b"hi\n".to_vec())),
//!     mode: 0o644,
//!     uid: 0,
//!     gid: 0,
//!     mtime: 0,
//!     xattrs: Default::default(),
//! }];
//! let mut blob = Vec::new();
//! let layer = write_layer(entries, &LayerOptions::default(), &mut blob)?;
//! assert_eq!(layer.size, blob.len() as u64);
//! # Ok::<(), rbuild_layer::LayerError>(())
//! ```
#![deny(missing_docs)]

pub mod archive;
pub mod dir;
pub mod entry;
pub mod error;
pub mod gzip;
pub mod hashing;
mod tarball;
pub mod unpack;
pub mod write;

pub use archive::{ArchiveFormat, extract_archive, sniff_archive};
pub use dir::{DirOptions, entries_from_dir};
pub use entry::{Entry, EntryKind, FileSource};
pub use error::LayerError;
pub use unpack::{UnpackOptions, UnpackStats, WhiteoutMode, decompressed, unpack};
pub use write::{Compression, LayerInfo, LayerOptions, write_layer};
