//! Image layer archives: writing them deterministically and fast, reading them safely.
//!
//! - [`write_layer`] turns [`Entry`]s into a layer blob: a tar that is byte-identical for the
//!   same entries on any machine, with any thread count and in any input order, compressed
//!   with gzip on every core (pigz-style, see [`gzip`]) or zstd, or left plain. The diff ID
//!   and the blob digest come out of the same streaming pass, in bounded memory.
//! - [`decompressed`] recognises gzip, zstd, bzip2 and xz by their magic bytes, and
//!   [`unpack`] applies a layer to a directory — as an overlay lower directory or onto a
//!   merged tree ([`WhiteoutMode`]) — refusing every entry that would write outside it.
//! - [`EntryIndex`] and [`delta`] describe a layer entry by entry and what must be unpacked
//!   over an earlier layer's snapshot to show it.
//! - [`entries_from_dir`] reads a directory back as entries, turning an overlay upper
//!   directory's whiteouts into OCI ones.
//! - [`TarWriter`] writes any other tar (image archives) with the same header encoder.
//! - [`sniff_archive`] and [`extract_archive`] decide and do what `ADD` does with a local
//!   archive, the way docker does.
//!
//! ```
//! use rbuild_layer::{Compression, Entry, EntryKind, FileSource, HashingWriter, LayerOptions, write_layer};
//!
//! let mut hello = Entry::new("app/hello.txt", EntryKind::File(FileSource::Bytes(b"hi\n".to_vec())));
//! hello.mtime = 1_700_000_000;
//! let entries = vec![hello, Entry::new("app", EntryKind::Dir)];
//!
//! let options = LayerOptions {
//!     compression: Compression::Gzip { level: 6 },
//!     source_date_epoch: Some(1_600_000_000),
//!     threads: 0,
//! };
//! // The blob goes to any writer; the content store's hashes what it stores, others are
//! // wrapped to be hashed on the way.
//! let mut blob = Vec::new();
//! let layer = write_layer(entries.clone(), &options, &mut HashingWriter::new(&mut blob))?;
//! assert_eq!(layer.size, blob.len() as u64);
//! assert_eq!(layer.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
//!
//! // Same entries in another order, another thread count: the same bytes.
//! let mut again = Vec::new();
//! let reversed = entries.into_iter().rev().collect();
//! let same = write_layer(
//!     reversed,
//!     &LayerOptions { threads: 1, ..options },
//!     &mut HashingWriter::new(&mut again),
//! )?;
//! assert_eq!((same.digest, again), (layer.digest, blob));
//! # Ok::<(), rbuild_layer::LayerError>(())
//! ```
#![deny(missing_docs)]

mod archive;
mod compress;
mod dir;
mod entry;
mod error;
pub mod gzip;
mod hashing;
mod header;
mod index;
mod pool;
mod reader;
mod safe_path;
mod tar_writer;
mod tarball;
mod unpack;
mod write;

pub use archive::{ArchiveFormat, extract_archive, sniff_archive};
pub use compress::{Compression, DEFAULT_GZIP_LEVEL, DEFAULT_ZSTD_LEVEL, decompressed};
pub use dir::{DirOptions, XattrPolicy, entries_from_dir, entries_from_dir_with};
pub use entry::{Entry, EntryKind, FileSource};
pub use error::LayerError;
pub use gzip::{BlockIndex, BlockRecord, PreviousBlocks};
pub use hashing::HashingWriter;
pub use index::{EntryIndex, delta};
pub use pool::{FilePool, POOLED_MAX};
pub use tar_writer::TarWriter;
pub use unpack::{UnpackOptions, UnpackStats, WhiteoutMode, unpack, unpack_pooled};
pub use write::{BlobSink, Extras, LayerInfo, LayerOptions, compress_layer, write_layer, write_layer_with};

/// Version of the bytes [`write_layer`] produces. Within one version, the same entries and
/// options give the same blob on every machine; a change to the tar encoding, where gzip
/// blocks are cut or the compressor library that changes any output bumps it. (2: gzip
/// blocks cut by content instead of every 256 KiB; 3: incompressible gzip blocks stored
/// without searching them for matches.)
pub const FORMAT_VERSION: u32 = 3;

#[cfg(test)]
mod tests;
