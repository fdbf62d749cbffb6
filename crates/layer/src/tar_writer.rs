//! A tar stream written entry by entry. Layers are written through it, and so are image
//! archives (`oci-layout`, `index.json`, blobs), so every tar rbuild writes comes out of the
//! one Go-compatible header encoder in [`header`](crate::header).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use crate::error::LayerError;
use crate::header::{BLOCK, Header, flag, padding};

/// Read buffer for streamed contents.
const COPY_BUFFER: usize = 256 * 1024;

/// What stream errors say was being done.
const WRITING: &str = "writing the tar stream";

/// Writes a tar stream to `W`: headers as Go's `archive/tar` writes them (a PAX header first
/// for names longer than 100 bytes or not ASCII), contents padded to whole blocks, and the
/// two zero blocks that end an archive on [`finish`](Self::finish).
///
/// Entries appended with [`append_file`](Self::append_file) and
/// [`append_bytes`](Self::append_bytes) are regular files owned by 0:0 with mtime 0, so an
/// archive depends only on what is put in it.
///
/// ```
/// use rbuild_layer::TarWriter;
///
/// let mut tar = TarWriter::new(Vec::new());
/// tar.append_bytes("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
/// let blob = b"layer bytes";
/// tar.append_file("blobs/sha256/ab", 0o644, blob.len() as u64, &blob[..])?;
/// let bytes = tar.finish()?;
/// assert_eq!(bytes.len(), 512 * 6, "two headers, two content blocks, two end blocks");
/// # Ok::<(), rbuild_layer::LayerError>(())
/// ```
pub struct TarWriter<W: Write> {
    out: W,
    /// The encoded header of the entry being written, reused from entry to entry.
    header: Vec<u8>,
    /// The copy buffer, allocated by the first streamed content.
    buffer: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    /// A tar stream written to `out`.
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter {
            out,
            header: Vec::with_capacity(4 * BLOCK),
            buffer: Vec::new(),
        }
    }

    /// Appends the regular file `path` holding `bytes`.
    pub fn append_bytes(&mut self, path: &str, mode: u32, bytes: &[u8]) -> Result<(), LayerError> {
        self.write_header(&file_header(path, mode, bytes.len() as u64), path)?;
        self.write_content(bytes)
    }

    /// Appends the regular file `path` whose `size` bytes `reader` gives; fails if `reader`
    /// gives fewer or more, since the header already promised `size`.
    pub fn append_file(
        &mut self,
        path: &str,
        mode: u32,
        size: u64,
        mut reader: impl Read,
    ) -> Result<(), LayerError> {
        self.write_header(&file_header(path, mode, size), path)?;
        self.copy_content(&mut reader, Path::new(path), size)
    }

    /// Ends the archive with two zero blocks and hands back the writer (not flushed).
    pub fn finish(mut self) -> Result<W, LayerError> {
        self.out
            .write_all(&[0u8; 2 * BLOCK])
            .map_err(|e| LayerError::stream(WRITING, e))?;
        Ok(self.out)
    }

    /// Writes `header`, failing on a value no tar reader could read back, with the entry
    /// named `shown`.
    pub(crate) fn write_header(&mut self, header: &Header<'_>, shown: &str) -> Result<(), LayerError> {
        self.header.clear();
        header
            .encode(&mut self.header)
            .map_err(|reason| LayerError::invalid(shown, reason))?;
        self.out
            .write_all(&self.header)
            .map_err(|e| LayerError::stream(WRITING, e))
    }

    /// Writes an entry's whole content, padded to a block.
    pub(crate) fn write_content(&mut self, bytes: &[u8]) -> Result<(), LayerError> {
        self.out
            .write_all(bytes)
            .map_err(|e| LayerError::stream(WRITING, e))?;
        self.pad(bytes.len() as u64)
    }

    /// Copies exactly `size` bytes of `reader` (the content of `path`) as an entry's content,
    /// padded to a block, failing if `reader` turns out shorter or longer than that.
    pub(crate) fn copy_content(
        &mut self,
        reader: &mut impl Read,
        path: &Path,
        size: u64,
    ) -> Result<(), LayerError> {
        if self.buffer.is_empty() {
            self.buffer = vec![0u8; COPY_BUFFER];
        }
        let mut left = size;
        while left > 0 {
            let want = self.buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match reader.read(&mut self.buffer[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::io("reading", path, e)),
            };
            if n == 0 {
                return Err(LayerError::FileChanged {
                    path: path.to_owned(),
                    expected: size,
                    found: format!("it ended after {} bytes", size - left),
                });
            }
            self.out
                .write_all(&self.buffer[..n])
                .map_err(|e| LayerError::stream(WRITING, e))?;
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        let grew = loop {
            match reader.read(&mut probe) {
                Ok(n) => break n > 0,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::io("reading", path, e)),
            }
        };
        if grew {
            return Err(LayerError::FileChanged {
                path: path.to_owned(),
                expected: size,
                found: "it grew".to_owned(),
            });
        }
        self.pad(size)
    }

    /// Fills the last block of `size` bytes of content with zeros.
    fn pad(&mut self, size: u64) -> Result<(), LayerError> {
        self.out
            .write_all(&[0u8; BLOCK][..padding(size)])
            .map_err(|e| LayerError::stream(WRITING, e))
    }
}

/// The header of a regular file of an archive that is not a layer: owned by root, mtime 0.
fn file_header(path: &str, mode: u32, size: u64) -> Header<'_> {
    /// No extended attributes.
    static NONE: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    Header {
        name: path,
        flag: flag::FILE,
        mode,
        uid: 0,
        gid: 0,
        size,
        mtime: 0,
        link: "",
        device: (0, 0),
        xattrs: &NONE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Path, size, mode, owner, mtime and content of each entry, read by the `tar` crate.
    type ReadBack = (String, u64, u32, (u64, u64), u64, Vec<u8>);

    fn read_back(bytes: &[u8]) -> Vec<ReadBack> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let h = entry.header().clone();
                let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
                let mut content = Vec::new();
                entry.read_to_end(&mut content).unwrap();
                (
                    path,
                    entry.size(),
                    h.mode().unwrap(),
                    (h.uid().unwrap(), h.gid().unwrap()),
                    h.mtime().unwrap(),
                    content,
                )
            })
            .collect()
    }

    #[test]
    fn entries_read_back_with_their_names_sizes_modes_and_contents() {
        let mut tar = TarWriter::new(Vec::new());
        tar.append_bytes("oci-layout", 0o644, b"{}").unwrap();
        let big: Vec<u8> = (0..COPY_BUFFER * 2 + 1).map(|i| (i % 251) as u8).collect();
        tar.append_file("blobs/sha256/big", 0o600, big.len() as u64, big.as_slice())
            .unwrap();
        tar.append_bytes("empty", 0o755, b"").unwrap();
        tar.append_file("exact", 0o640, 512, &[9u8; 512][..]).unwrap();
        let bytes = tar.finish().unwrap();
        assert_eq!(
            read_back(&bytes),
            [
                ("oci-layout".to_owned(), 2, 0o644, (0, 0), 0, b"{}".to_vec()),
                (
                    "blobs/sha256/big".to_owned(),
                    big.len() as u64,
                    0o600,
                    (0, 0),
                    0,
                    big
                ),
                ("empty".to_owned(), 0, 0o755, (0, 0), 0, Vec::new()),
                ("exact".to_owned(), 512, 0o640, (0, 0), 0, vec![9u8; 512]),
            ]
        );
    }

    #[test]
    fn the_stream_is_whole_blocks_ending_in_two_zero_blocks() {
        let mut tar = TarWriter::new(Vec::new());
        tar.append_bytes("a", 0o644, b"x").unwrap();
        let bytes = tar.finish().unwrap();
        // Header, one padded content block, two end blocks.
        assert_eq!(bytes.len(), 4 * BLOCK);
        assert!(bytes[BLOCK + 1..].iter().all(|&b| b == 0));
        assert_eq!(TarWriter::new(Vec::new()).finish().unwrap(), vec![0u8; 2 * BLOCK]);
    }

    #[test]
    fn long_names_go_to_a_pax_header_and_read_back_whole() {
        let long = format!("blobs/sha256/{}", "a".repeat(150));
        let mut tar = TarWriter::new(Vec::new());
        tar.append_bytes(&long, 0o644, b"content").unwrap();
        tar.append_bytes("short", 0o644, b"").unwrap();
        let bytes = tar.finish().unwrap();
        assert_eq!(bytes[156], flag::PAX, "the first header is a PAX header");
        let names: Vec<String> = read_back(&bytes).into_iter().map(|e| e.0).collect();
        assert_eq!(names, [long, "short".to_owned()]);
    }

    #[test]
    fn a_reader_shorter_or_longer_than_the_size_given_is_an_error() {
        let mut tar = TarWriter::new(Vec::new());
        let short = tar.append_file("f", 0o644, 20, &b"0123456789"[..]).unwrap_err();
        assert!(short.to_string().contains("ended after 10 bytes"), "{short}");
        let mut tar = TarWriter::new(Vec::new());
        let long = tar.append_file("f", 0o644, 5, &b"0123456789"[..]).unwrap_err();
        assert!(long.to_string().contains("it grew"), "{long}");
    }
}
