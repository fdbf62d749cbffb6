//! `write_layer`: entries → deterministic tar → compressed blob, with the diff ID and the blob
//! digest computed in the same pass.

use std::io::Write;

use rbuild_oci::{Digest, media_type};

use crate::entry::Entry;
use crate::error::LayerError;
use crate::gzip::ParallelGzip;
use crate::hashing::HashingWriter;
use crate::tarball::write_tar;

/// How a layer is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// An uncompressed tar.
    None,
    /// gzip at a level from 0 to 9, compressed on all cores (see [`crate::gzip`]).
    Gzip {
        /// The level.
        level: u32,
    },
    /// zstd at a level from 1 to 22.
    Zstd {
        /// The level.
        level: i32,
    },
}

impl Default for Compression {
    /// gzip level 6, what docker and BuildKit write by default.
    fn default() -> Compression {
        Compression::Gzip { level: 6 }
    }
}

/// How to write a layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerOptions {
    /// Compression.
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: mtimes later than it are clamped to it.
    pub source_date_epoch: Option<i64>,
    /// Compression threads; 0 means every core.
    pub threads: usize,
}

/// A written layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// SHA-256 of the uncompressed tar.
    pub diff_id: Digest,
    /// SHA-256 of the blob as written.
    pub digest: Digest,
    /// Size of the blob as written.
    pub size: u64,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The OCI media type for the compression.
    pub media_type: &'static str,
}

/// zstd's parallel jobs: a constant, because the frame layout depends on it.
const ZSTD_WORKERS: u32 = 4;

/// Writes `entries` as a layer to `out`. Entries are sorted by path first, so the same set
/// of entries gives the same bytes whatever order it comes in.
pub fn write_layer(
    mut entries: Vec<Entry>,
    options: &LayerOptions,
    out: &mut dyn Write,
) -> Result<LayerInfo, LayerError> {
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    if let Some(pair) = entries.windows(2).find(|pair| pair[0].path == pair[1].path) {
        return Err(LayerError::DuplicateEntry {
            path: pair[0].path.clone(),
        });
    }
    for entry in &entries {
        let bad = entry.path.is_empty()
            || entry.path.starts_with('/')
            || entry.path.ends_with('/')
            || entry
                .path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..");
        if bad {
            return Err(LayerError::invalid(
                &entry.path,
                "layer paths are relative, without empty, '.' or '..' components",
            ));
        }
    }
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let epoch = options.source_date_epoch;
    let blob = HashingWriter::new(out);
    let stream = |e| LayerError::stream("compressing the layer", e);
    let (blob, diff_id, uncompressed_size, media_type) = match options.compression {
        Compression::None => {
            let mut tar = HashingWriter::new(blob);
            write_tar(&entries, epoch, &mut tar)?;
            let (blob, diff_id, size) = tar.finish();
            (blob, diff_id, size, media_type::OCI_LAYER_TAR)
        }
        Compression::Gzip { level } => {
            let mut tar = HashingWriter::new(ParallelGzip::new(blob, level.min(9), threads));
            write_tar(&entries, epoch, &mut tar)?;
            let (gzip, diff_id, size) = tar.finish();
            (
                gzip.finish().map_err(stream)?,
                diff_id,
                size,
                media_type::OCI_LAYER_GZIP,
            )
        }
        Compression::Zstd { level } => {
            let mut encoder = zstd::stream::write::Encoder::new(blob, level).map_err(stream)?;
            encoder.multithread(ZSTD_WORKERS).map_err(stream)?;
            let mut tar = HashingWriter::new(encoder);
            write_tar(&entries, epoch, &mut tar)?;
            let (encoder, diff_id, size) = tar.finish();
            (
                encoder.finish().map_err(stream)?,
                diff_id,
                size,
                media_type::OCI_LAYER_ZSTD,
            )
        }
    };
    let (_, digest, size) = blob.finish();
    Ok(LayerInfo {
        diff_id,
        digest,
        size,
        uncompressed_size,
        media_type,
    })
}
