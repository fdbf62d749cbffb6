//! Deterministic tar writing: USTAR headers with PAX extended headers only where a value does
//! not fit, numeric owners with empty user and group names, whole-second mtimes, and nothing
//! that depends on the machine (no atime, no ctime, no device or inode numbers).

use std::fs::File;
use std::io::{self, Read, Write};

use crate::entry::{Entry, EntryKind, FileSource};
use crate::error::LayerError;

const BLOCK: usize = 512;
/// The largest value an 8-byte octal USTAR field holds (uid, gid).
const MAX_ID: u64 = 0o7_777_777;
/// The largest value a 12-byte octal USTAR field holds (size, mtime).
const MAX_OCTAL_11: u64 = 0o77_777_777_777;

/// A PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + body.to_string().len();
    if len.to_string().len() + body != len {
        len = body + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

fn set_bytes(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

fn new_header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(uid.min(MAX_ID));
    header.set_gid(gid.min(MAX_ID));
    header.set_size(size.min(MAX_OCTAL_11));
    header.set_mtime(mtime.min(MAX_OCTAL_11));
    header
}

fn pad(out: &mut impl Write, len: u64) -> io::Result<()> {
    let remainder = (len % BLOCK as u64) as usize;
    if remainder != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - remainder])?;
    }
    Ok(())
}

/// Writes one entry (and its PAX header, if needed).
fn write_entry(entry: &Entry, mtime: i64, out: &mut impl Write) -> Result<(), LayerError> {
    let stream = |e| LayerError::stream("writing a layer entry", e);
    let mut name = entry.path.clone().into_bytes();
    if matches!(entry.kind, EntryKind::Dir) {
        name.push(b'/');
    }
    let (kind, link, size, device) = match &entry.kind {
        EntryKind::File(FileSource::Bytes(bytes)) => {
            (tar::EntryType::Regular, None, bytes.len() as u64, None)
        }
        EntryKind::File(FileSource::Path(path)) => {
            let size = std::fs::metadata(path)
                .map_err(|e| LayerError::io("reading", path, e))?
                .len();
            (tar::EntryType::Regular, None, size, None)
        }
        EntryKind::Dir => (tar::EntryType::Directory, None, 0, None),
        EntryKind::Symlink(target) => (tar::EntryType::Symlink, Some(target.as_bytes()), 0, None),
        EntryKind::Hardlink(target) => (tar::EntryType::Link, Some(target.as_bytes()), 0, None),
        EntryKind::CharDevice { major, minor } => (tar::EntryType::Char, None, 0, Some((*major, *minor))),
        EntryKind::BlockDevice { major, minor } => (tar::EntryType::Block, None, 0, Some((*major, *minor))),
        EntryKind::Fifo => (tar::EntryType::Fifo, None, 0, None),
    };
    let mtime_u = u64::try_from(mtime).unwrap_or(0);

    let mut records = Vec::new();
    if name.len() > 100 {
        records.push(pax_record("path", &name));
    }
    if let Some(link) = link.filter(|l| l.len() > 100) {
        records.push(pax_record("linkpath", link));
    }
    if u64::from(entry.uid) > MAX_ID {
        records.push(pax_record("uid", entry.uid.to_string().as_bytes()));
    }
    if u64::from(entry.gid) > MAX_ID {
        records.push(pax_record("gid", entry.gid.to_string().as_bytes()));
    }
    if size > MAX_OCTAL_11 {
        records.push(pax_record("size", size.to_string().as_bytes()));
    }
    for (key, value) in &entry.xattrs {
        records.push(pax_record(&format!("SCHILY.xattr.{key}"), value));
    }
    if !records.is_empty() {
        // Keys are written in a fixed order (path, linkpath, ids, size, sorted xattrs).
        let body: Vec<u8> = records.concat();
        let mut pax = new_header(tar::EntryType::XHeader, 0o644, 0, 0, body.len() as u64, 0);
        let mut pax_name = b"PaxHeaders/".to_vec();
        pax_name.extend_from_slice(&name[name.len().saturating_sub(89)..]);
        set_bytes(&mut pax.as_old_mut().name, &pax_name);
        pax.set_cksum();
        out.write_all(pax.as_bytes()).map_err(stream)?;
        out.write_all(&body).map_err(stream)?;
        pad(out, body.len() as u64).map_err(stream)?;
    }

    let mut header = new_header(
        kind,
        entry.mode & 0o7777,
        u64::from(entry.uid),
        u64::from(entry.gid),
        size,
        mtime_u,
    );
    set_bytes(&mut header.as_old_mut().name, &name);
    if let Some(link) = link {
        set_bytes(&mut header.as_old_mut().linkname, link);
    }
    if let Some((major, minor)) = device {
        header.set_device_major(major).map_err(stream)?;
        header.set_device_minor(minor).map_err(stream)?;
    }
    header.set_cksum();
    out.write_all(header.as_bytes()).map_err(stream)?;

    match &entry.kind {
        EntryKind::File(FileSource::Bytes(bytes)) => {
            out.write_all(bytes).map_err(stream)?;
            pad(out, size).map_err(stream)?;
        }
        EntryKind::File(FileSource::Path(path)) => {
            let file = File::open(path).map_err(|e| LayerError::io("opening", path, e))?;
            let mut limited = file.take(size);
            let copied = io::copy(&mut limited, out).map_err(|e| LayerError::io("reading", path, e))?;
            let mut probe = [0u8; 1];
            let grew = limited
                .into_inner()
                .read(&mut probe)
                .map_err(|e| LayerError::io("reading", path, e))?
                > 0;
            if copied != size || grew {
                return Err(LayerError::FileChanged {
                    path: path.clone(),
                    expected: size,
                    found: if grew {
                        "it grew".to_owned()
                    } else {
                        format!("got {copied} bytes")
                    },
                });
            }
            pad(out, size).map_err(stream)?;
        }
        _ => {}
    }
    Ok(())
}

/// Writes `entries` (already sorted) as a tar stream. Mtimes later than `epoch` are clamped
/// to it.
pub fn write_tar(entries: &[Entry], epoch: Option<i64>, out: &mut impl Write) -> Result<(), LayerError> {
    for entry in entries {
        let mtime = match epoch {
            Some(epoch) => entry.mtime.min(epoch),
            None => entry.mtime,
        };
        write_entry(entry, mtime, out)?;
    }
    out.write_all(&[0u8; BLOCK * 2])
        .map_err(|e| LayerError::stream("writing the end of the layer", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for value in ["x", &"y".repeat(95), &"z".repeat(996)] {
            let record = pax_record("path", value.as_bytes());
            let text = String::from_utf8(record.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), record.len(), "{text:?}");
        }
    }
}
