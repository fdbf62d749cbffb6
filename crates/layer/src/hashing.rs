//! A writer that hashes and counts what passes through it: how a layer's diff ID and blob
//! digest come out of the same streaming pass.

use std::io::{self, Write};

use rbuild_oci::{Algorithm, Digest, Hasher};

/// Hashes (SHA-256) and counts the bytes written through it to `inner`: makes any writer a
/// [`BlobSink`](crate::BlobSink).
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Hashes what goes to `inner`.
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Hasher::new(Algorithm::Sha256),
            count: 0,
        }
    }

    /// The digest and the number of bytes.
    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finalize(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> crate::BlobSink for HashingWriter<W> {
    fn written(&self) -> (Digest, u64) {
        (self.hasher.clone().finalize(), self.count)
    }
}
