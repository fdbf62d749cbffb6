//! [`write_layer`]: entries → deterministic tar → compressed blob, with the diff ID and the
//! blob digest computed in the same streaming pass, and the tar optionally copied to a tap
//! (which the builder unpacks as a snapshot at the same time):
//!
//! ```text
//! entries ─▶ tar ─▶ sha256 (diff ID) ─▶ compressor ─▶ sha256 (digest) ─▶ out
//!                └─▶ tap
//! ```

use std::io::{self, Write};

use rbuild_oci::Digest;
use rbuild_oci::store::BlobWriter;

use crate::compress::{self, Compression};
use crate::entry::{self, Entry};
use crate::error::LayerError;
use crate::gzip::{self, BlockIndex, PreviousBlocks};
use crate::hashing::HashingWriter;
use crate::tarball;

/// How to write a layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerOptions {
    /// The compression (gzip level 6 by default).
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: file times later than this are written as this.
    pub source_date_epoch: Option<i64>,
    /// Compression threads; 0 means one per core. The output does not depend on it.
    pub threads: usize,
}

impl LayerOptions {
    /// The number of compression threads to start.
    fn thread_count(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Where a layer blob goes: a writer that hashes what it is given, so that the layer writer
/// takes the blob's digest from it instead of hashing every byte a second time. The content
/// store's [`BlobWriter`] is one (it hashes what it stores); [`HashingWriter`] makes any
/// writer one.
pub trait BlobSink: Write {
    /// The SHA-256 and the length of what was written so far.
    fn written(&self) -> (Digest, u64);
}

impl BlobSink for BlobWriter {
    fn written(&self) -> (Digest, u64) {
        (self.digest(), self.size())
    }
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// SHA-256 of the uncompressed tar: the image config's `rootfs.diff_ids` entry.
    pub diff_id: Digest,
    /// SHA-256 of the blob as written to `out`: the manifest's layer digest.
    pub digest: Digest,
    /// Bytes written to `out`.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The OCI media type of the blob.
    pub media_type: &'static str,
    /// For gzip, the blob's blocks: keep it to let a later layer reuse them
    /// ([`Extras::previous`]). Empty for other compressions.
    pub blocks: BlockIndex,
    /// Uncompressed bytes whose compressed form was copied from the previous layer.
    pub reused: u64,
}

/// Writes `entries` as a layer blob to `out`.
///
/// The bytes depend only on the set of entries (their order does not matter) and on the
/// compression and `source_date_epoch` options — not on the machine, the thread count or the
/// time. Entries are sorted by path in byte order; see [`Entry`] for the rules on paths and
/// hard links. Memory stays bounded (a few MiB per thread) whatever the layer's size.
///
/// On error, what was written to `out` is not a valid layer and must be discarded.
pub fn write_layer(
    entries: Vec<Entry>,
    options: &LayerOptions,
    out: &mut dyn BlobSink,
) -> Result<LayerInfo, LayerError> {
    write_layer_with(entries, options, Extras::default(), out)
}

/// What [`write_layer_with`] does besides what [`write_layer`] does.
#[derive(Default)]
pub struct Extras<'a> {
    /// An earlier layer whose gzip blocks may be copied instead of deflated again: the same
    /// bytes, faster when most of the layer is unchanged (see [`gzip`](crate::gzip)). Other
    /// compressions ignore it.
    pub previous: Option<&'a PreviousBlocks>,
    /// Receives a copy of the uncompressed tar as it is written. Best effort: once it fails,
    /// it gets nothing more and the layer is written all the same.
    pub tap: Option<&'a mut (dyn Write + Send)>,
}

/// [`write_layer`] with [`Extras`].
pub fn write_layer_with(
    entries: Vec<Entry>,
    options: &LayerOptions,
    extras: Extras<'_>,
    out: &mut dyn BlobSink,
) -> Result<LayerInfo, LayerError> {
    let Extras { previous, tap } = extras;
    let mut tap = Tap(tap);
    let entries = entry::canonical(entries)?;
    let epoch = options.source_date_epoch;
    encode(options, previous, out, move |sink| {
        tarball::write_entries(&entries, epoch, &mut Tee(sink, &mut tap))
    })
}

/// Compresses the uncompressed layer tar read from `tar` as `options` say: how a layer
/// kept uncompressed in the local store is made ready to leave it. The result's diff ID is
/// the digest of what was read, for the caller to check against the one it expected.
pub fn compress_layer(
    mut tar: impl io::Read + Send,
    options: &LayerOptions,
    out: &mut dyn BlobSink,
) -> Result<LayerInfo, LayerError> {
    encode(options, None, out, move |sink| {
        io::copy(&mut tar, sink)
            .map(drop)
            .map_err(|e| LayerError::stream("reading the layer", e))
    })
}

/// Writes the tar that `produce` makes to `out`, compressed as `options` say, hashing it
/// before compression in the same pass (`out` hashes what comes after).
fn encode(
    options: &LayerOptions,
    previous: Option<&PreviousBlocks>,
    out: &mut dyn BlobSink,
    produce: impl FnOnce(&mut dyn Write) -> Result<(), LayerError> + Send,
) -> Result<LayerInfo, LayerError> {
    options.compression.validate()?;
    let ((diff_id, uncompressed_size), compressed) = match options.compression {
        // The blob is the tar: its digest is the diff ID.
        Compression::None => {
            produce(out)?;
            (written(out)?, gzip::Compressed::default())
        }
        Compression::Gzip { level } => {
            gzip::compress(level, options.thread_count(), previous, out, hashed(produce))?
        }
        Compression::Zstd { level } => {
            let tar = compress::zstd(level, options.thread_count(), out, hashed(produce))?;
            (tar, gzip::Compressed::default())
        }
    };
    let (digest, size) = written(out)?;
    Ok(LayerInfo {
        diff_id,
        digest,
        size,
        uncompressed_size,
        media_type: options.compression.media_type(),
        blocks: compressed.index,
        reused: compressed.reused,
    })
}

/// Flushes `out`, and what it has been given.
fn written(out: &mut dyn BlobSink) -> Result<(Digest, u64), LayerError> {
    out.flush()
        .map_err(|e| LayerError::stream("writing the layer", e))?;
    Ok(out.written())
}

/// `produce`, with the digest and length of what it wrote: the diff ID, hashed before compression.
fn hashed(
    produce: impl FnOnce(&mut dyn Write) -> Result<(), LayerError> + Send,
) -> impl FnOnce(&mut dyn Write) -> Result<(Digest, u64), LayerError> + Send {
    move |sink| {
        let mut tar = HashingWriter::new(sink);
        produce(&mut tar)?;
        Ok(tar.finish())
    }
}

/// The optional copy of the tar, dropped at its first error.
struct Tap<'a>(Option<&'a mut (dyn Write + Send)>);

/// Writes to a writer and, best effort, to a [`Tap`].
struct Tee<'w, 't, W>(W, &'w mut Tap<'t>);

impl<W: Write> Write for Tee<'_, '_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        if let Some(tap) = &mut self.1.0
            && tap.write_all(&buf[..n]).is_err()
        {
            self.1.0 = None;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
