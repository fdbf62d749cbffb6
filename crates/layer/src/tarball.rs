//! The tar stream of a layer: each canonical entry as header + content, then the standard two
//! zero blocks. Small files are read whole by a second thread ahead of the writer, larger
//! ones streamed from disk through a fixed buffer; a file whose size changes while it is read
//! is an error, never a header that lies.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};

use crate::entry::{Entry, EntryKind, FileSource};
use crate::error::LayerError;
use crate::header::{Header, flag};
use crate::tar_writer::TarWriter;

/// Files of at most this many bytes are read whole, ahead of the writer, by a thread of their
/// own, so that opening and reading thousands of small files overlaps hashing and writing the
/// stream (alone, the writer left a core idle). Larger files, where the system calls per byte
/// are few, the writer streams through its one buffer: holding each whole in a new
/// allocation cost more in page faults than it saved (a tree of 1 KiB–1 MiB files took 13%
/// longer to write with a 1 MiB limit).
const READ_AHEAD_MAX: u64 = 64 * 1024;

/// Files read ahead go to the writer in batches of about this many bytes, so that it is woken
/// once per batch rather than once per small file.
const BATCH_BYTES: u64 = 256 * 1024;

/// How many batches may wait for the writer: about 2.5 MiB held.
const BATCHES: usize = 8;

/// Files read ahead, in order.
type Batch = Vec<Result<Ahead, LayerError>>;

/// A file's content as the read-ahead thread leaves it for the writer.
enum Ahead {
    /// All of it.
    Read(Vec<u8>),
    /// Too large to hold: the file, opened, and its size, for the writer to stream.
    Large(File, u64),
}

/// Writes `entries` (in [`canonical`](crate::entry::canonical) form) as a tar stream to
/// `out`, clamping mtimes to `epoch` when given.
pub(crate) fn write_entries(
    entries: &[Entry],
    epoch: Option<i64>,
    out: &mut dyn Write,
) -> Result<(), LayerError> {
    std::thread::scope(|scope| {
        let (to_writer, from_reader) = sync_channel(BATCHES);
        // When the writer stops early, dropping the receiver stops the reader at its next send.
        scope.spawn(move || read_ahead(entries, &to_writer));
        let mut ahead = from_reader.iter().flatten();
        let mut tar = TarWriter::new(out);
        for entry in entries {
            write_entry(entry, epoch, &mut ahead, &mut tar)?;
        }
        tar.finish().map(drop)
    })
}

/// Reads the content of every file of `entries` that comes from disk, in order.
fn read_ahead(entries: &[Entry], to_writer: &SyncSender<Batch>) {
    let mut batch = Batch::new();
    let mut bytes = 0;
    for entry in entries {
        let EntryKind::File(FileSource::Path(path)) = &entry.kind else {
            continue;
        };
        let read = read_whole(&entry.path, path);
        bytes += match &read {
            Ok(Ahead::Read(content)) => content.len() as u64,
            // The writer needs it now: it is next to stream (or to fail on).
            _ => BATCH_BYTES,
        };
        batch.push(read);
        if bytes >= BATCH_BYTES {
            if to_writer.send(std::mem::take(&mut batch)).is_err() {
                return;
            }
            bytes = 0;
        }
    }
    let _ = to_writer.send(batch);
}

/// The content of the regular file at `path` (the source of the entry `shown`), unless it is
/// larger than [`READ_AHEAD_MAX`].
fn read_whole(shown: &str, path: &Path) -> Result<Ahead, LayerError> {
    let (file, size) = open_regular(shown, path)?;
    if size > READ_AHEAD_MAX {
        return Ok(Ahead::Large(file, size));
    }
    read_exactly(file, path, size).map(Ahead::Read)
}

/// The `size` bytes `file` (at `path`) holds, failing if it turns out to hold fewer or more.
fn read_exactly(file: impl Read, path: &Path, size: u64) -> Result<Vec<u8>, LayerError> {
    // One byte more than expected, to see a file that grew.
    let mut content = Vec::with_capacity(size as usize + 1);
    file.take(size + 1)
        .read_to_end(&mut content)
        .map_err(|e| LayerError::io("reading", path, e))?;
    let read = content.len() as u64;
    if read == size {
        return Ok(content);
    }
    let found = if read > size {
        "it grew".to_owned()
    } else {
        format!("it ended after {read} bytes")
    };
    Err(LayerError::FileChanged {
        path: path.to_owned(),
        expected: size,
        found,
    })
}

/// Opens the source `path` of the entry `shown`, which must be a regular file; with its size.
fn open_regular(shown: &str, path: &Path) -> Result<(File, u64), LayerError> {
    let opened = File::open(path).map_err(|e| LayerError::io("opening", path, e))?;
    let meta = opened
        .metadata()
        .map_err(|e| LayerError::io("reading the metadata of", path, e))?;
    if !meta.is_file() {
        return Err(LayerError::invalid(
            shown,
            format!("its source {} is not a regular file", path.display()),
        ));
    }
    Ok((opened, meta.len()))
}

fn write_entry(
    entry: &Entry,
    epoch: Option<i64>,
    ahead: &mut impl Iterator<Item = Result<Ahead, LayerError>>,
    tar: &mut TarWriter<&mut dyn Write>,
) -> Result<(), LayerError> {
    let mut file = None;
    let mut read = None;
    let (flag, size, link, device) = match &entry.kind {
        EntryKind::File(FileSource::Bytes(bytes)) => (flag::FILE, bytes.len() as u64, "", (0, 0)),
        EntryKind::File(FileSource::Path(path)) => {
            let next = ahead.next().unwrap_or_else(|| {
                Err(LayerError::stream(
                    "reading the layer's files",
                    std::io::Error::other("the read-ahead thread stopped"),
                ))
            });
            match next? {
                Ahead::Read(content) => {
                    let size = content.len() as u64;
                    read = Some(content);
                    (flag::FILE, size, "", (0, 0))
                }
                Ahead::Large(opened, size) => {
                    file = Some((opened, path.as_path()));
                    (flag::FILE, size, "", (0, 0))
                }
            }
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
    tar.write_header(
        &Header {
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
        },
        &entry.path,
    )?;
    match (&entry.kind, read, file) {
        (EntryKind::File(FileSource::Bytes(bytes)), _, _) => tar.write_content(bytes),
        (_, Some(content), _) => tar.write_content(&content),
        (_, _, Some((mut file, path))) => tar.copy_content(&mut file, path, size),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::canonical;
    use crate::header::BLOCK;

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
    fn files_read_ahead_or_streamed_come_out_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // Sizes either side of READ_AHEAD_MAX, and enough small files for several batches.
        let mut sizes = vec![0, 10, 65_536, 65_537, 300_000];
        sizes.extend(std::iter::repeat_n(3_000, 300));
        let mut entries = Vec::new();
        let mut want = Vec::new();
        for (i, size) in sizes.into_iter().enumerate() {
            let content: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
            let disk = dir.path().join(format!("f{i:04}"));
            std::fs::write(&disk, &content).unwrap();
            let name = format!("f{i:04}");
            entries.push(Entry::new(&name, EntryKind::File(FileSource::Path(disk))));
            want.push((name, content));
        }
        let mut out = Vec::new();
        write_entries(&canonical(entries).unwrap(), None, &mut out).unwrap();
        let mut archive = tar::Archive::new(out.as_slice());
        let got: Vec<(String, Vec<u8>)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                (name, content)
            })
            .collect();
        assert!(got == want, "the tar holds other files or other bytes");
    }

    #[test]
    fn a_missing_source_among_many_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut entries = Vec::new();
        for i in 0..200 {
            let disk = dir.path().join(format!("f{i:03}"));
            if i != 150 {
                std::fs::write(&disk, vec![1u8; 4_000]).unwrap();
            }
            entries.push(Entry::new(
                format!("f{i:03}"),
                EntryKind::File(FileSource::Path(disk)),
            ));
        }
        let err = write_entries(&canonical(entries).unwrap(), None, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("f150"), "{err}");
    }

    #[test]
    fn a_file_read_ahead_that_changed_size_is_an_error() {
        // Streamed files are checked by TarWriter::copy_content (see its tests).
        let disk = Path::new("f");
        let short = read_exactly(&b"0123456789"[..], disk, 20).unwrap_err();
        assert!(short.to_string().contains("ended after 10 bytes"), "{short}");
        let long = read_exactly(&b"0123456789"[..], disk, 5).unwrap_err();
        assert!(long.to_string().contains("it grew"), "{long}");
        assert_eq!(read_exactly(&b"0123456789"[..], disk, 10).unwrap(), b"0123456789");
    }
}
