//! The tar stream of a layer: each canonical entry as header + content, then the standard two
//! zero blocks. File contents are streamed from disk through a fixed buffer, and a file whose
//! size changes while it is read is an error, never a header that lies.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::entry::{Entry, EntryKind, FileSource};
use crate::error::LayerError;
use crate::header::{BLOCK, Header, flag, padding};

/// Read buffer for file contents.
const COPY_BUFFER: usize = 256 * 1024;

/// Writes `entries` (in [`canonical`](crate::entry::canonical) form) as a tar stream to
/// `out`, clamping mtimes to `epoch` when given.
pub(crate) fn write_entries(
    entries: &[Entry],
    epoch: Option<i64>,
    out: &mut dyn Write,
) -> Result<(), LayerError> {
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut header = Vec::with_capacity(4 * BLOCK);
    for entry in entries {
        write_entry(entry, epoch, &mut header, &mut buffer, out)?;
    }
    out.write_all(&[0u8; 2 * BLOCK])
        .map_err(|e| LayerError::stream("writing the layer", e))
}

fn write_entry(
    entry: &Entry,
    epoch: Option<i64>,
    header: &mut Vec<u8>,
    buffer: &mut [u8],
    out: &mut dyn Write,
) -> Result<(), LayerError> {
    let stream = |e| LayerError::stream("writing the layer", e);
    let mut file = None;
    let (flag, size, link, device) = match &entry.kind {
        EntryKind::File(FileSource::Bytes(bytes)) => (flag::FILE, bytes.len() as u64, "", (0, 0)),
        EntryKind::File(FileSource::Path(path)) => {
            let opened = File::open(path).map_err(|e| LayerError::io("opening", path, e))?;
            let meta = opened
                .metadata()
                .map_err(|e| LayerError::io("reading the metadata of", path, e))?;
            if !meta.is_file() {
                return Err(LayerError::invalid(
                    &entry.path,
                    format!("its source {} is not a regular file", path.display()),
                ));
            }
            file = Some((opened, path.as_path()));
            (flag::FILE, meta.len(), "", (0, 0))
        }
        EntryKind::Dir => (flag::DIR, 0, "", (0, 0)),
        EntryKind::Symlink(target) => (flag::SYMLINK, 0, target.as_str(), (0, 0)),
        EntryKind::Hardlink(target) => (flag::HARDLINK, 0, target.as_str(), (0, 0)),
        EntryKind::CharDevice { major, minor } => (flag::CHAR, 0, "", (*major, *minor)),
        EntryKind::BlockDevice { major, minor } => (flag::BLOCK, 0, "", (*major, *minor)),
        EntryKind::Fifo => (flag::FIFO, 0, "", (0, 0)),
    };
    let name = if flag == flag::DIR {
        format!("{}/", entry.path)
    } else {
        entry.path.clone()
    };
    header.clear();
    Header {
        name: &name,
        flag,
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        size,
        mtime: epoch.map_or(entry.mtime, |epoch| entry.mtime.min(epoch)),
        link,
        device,
        xattrs: &entry.xattrs,
    }
    .encode(header)
    .map_err(|reason| LayerError::invalid(&entry.path, reason))?;
    out.write_all(header).map_err(stream)?;

    match (&entry.kind, file) {
        (EntryKind::File(FileSource::Bytes(bytes)), _) => out.write_all(bytes).map_err(stream)?,
        (_, Some((mut file, path))) => copy_exact(&mut file, path, size, buffer, out)?,
        _ => return Ok(()),
    }
    out.write_all(&[0u8; BLOCK][..padding(size)]).map_err(stream)
}

/// Copies exactly `size` bytes of `file` to `out`, failing if the file turns out shorter or
/// longer than that.
fn copy_exact(
    file: &mut File,
    path: &Path,
    size: u64,
    buffer: &mut [u8],
    out: &mut dyn Write,
) -> Result<(), LayerError> {
    let mut left = size;
    while left > 0 {
        let want = buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match file.read(&mut buffer[..want]) {
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
        out.write_all(&buffer[..n])
            .map_err(|e| LayerError::stream("writing the layer", e))?;
        left -= n as u64;
    }
    let mut probe = [0u8; 1];
    let grew = loop {
        match file.read(&mut probe) {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::canonical;

    #[test]
    fn stream_ends_with_two_zero_blocks_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("f");
        std::fs::write(&disk, vec![7u8; 1000]).unwrap();
        let mut file = Entry::new("d/f", EntryKind::File(FileSource::Path(disk)));
        file.mtime = 2_000_000_000;
        let entries = canonical(vec![
            file,
            Entry::new("d", EntryKind::Dir),
            Entry::new("d/l", EntryKind::Symlink("/etc/passwd".into())),
            Entry::new("d/h", EntryKind::Hardlink("d/f".into())),
        ])
        .unwrap();
        let mut out = Vec::new();
        write_entries(&entries, Some(1_000_000_000), &mut out).unwrap();
        assert_eq!(out.len() % BLOCK, 0);
        assert!(out[out.len() - 2 * BLOCK..].iter().all(|&b| b == 0));

        let mut archive = tar::Archive::new(out.as_slice());
        let got: Vec<(String, u8, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    h.entry_type().as_byte(),
                    h.mtime().unwrap(),
                )
            })
            .collect();
        // "d/f" holds the content: it comes before "d/h" (the hard link) in byte order.
        assert_eq!(
            got,
            [
                ("d/".to_owned(), b'5', 0),
                ("d/f".to_owned(), b'0', 1_000_000_000),
                ("d/h".to_owned(), b'1', 0),
                ("d/l".to_owned(), b'2', 0)
            ]
        );
    }

    #[test]
    fn a_file_that_changed_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("f");
        std::fs::write(&disk, b"0123456789").unwrap();
        let mut file = File::open(&disk).unwrap();
        let mut buffer = vec![0u8; 4];
        let mut out = Vec::new();
        let short = copy_exact(&mut file, &disk, 20, &mut buffer, &mut out).unwrap_err();
        assert!(matches!(short, LayerError::FileChanged { .. }), "{short}");
        let mut file = File::open(&disk).unwrap();
        let long = copy_exact(&mut file, &disk, 5, &mut buffer, &mut out).unwrap_err();
        assert!(long.to_string().contains("it grew"), "{long}");
    }
}
