//! A writer that hashes and counts what passes through it: how a layer's diff ID and blob
//! digest come out of the same streaming pass.

use std::io::{self, Write};

use rbuild_oci::{Algorithm, Digest, Hasher};

/// Hashes (SHA-256) and counts the bytes written through it to `inner`.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Hasher::new(Algorithm::Sha256),
            count: 0,
        }
    }

    /// The digest and the number of bytes.
    pub(crate) fn finish(self) -> (Digest, u64) {
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
