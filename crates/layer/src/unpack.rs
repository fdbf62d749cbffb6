//! Reading layers: decompression by content, and unpacking that a hostile layer cannot use to
//! write outside the destination.
//!
//! Safety rests on three rules, applied to every entry: its path is cleaned and may not climb
//! above the root (a leading `/` just means the root); every parent directory is walked one
//! component at a time with `lstat`, and a symbolic link where a directory is expected is
//! refused rather than followed; and an existing final component is removed before the entry
//! is created, so a planted symlink is replaced, never written through. The unpacker is the
//! only writer of its destination, so nothing can change a checked path before it is used.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::error::LayerError;

/// What to do with OCI whiteout entries (`.wh.<name>`, `.wh..wh..opq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Keep them the way overlayfs stores them in a lower layer: a deleted path becomes a 0/0
    /// character device, an opaque directory gets `trusted.overlay.opaque=y`. This is the
    /// format of a snapshot used as an overlay lower directory.
    Overlay,
    /// Apply them to the destination: delete the path, empty the directory.
    Apply,
    /// Treat them as ordinary files (what `ADD archive.tar` does).
    Literal,
}

/// How to unpack.
#[derive(Clone, Copy, Debug)]
pub struct UnpackOptions {
    /// Whiteout handling.
    pub whiteouts: WhiteoutMode,
    /// Restore owners (needs root).
    pub same_owner: bool,
}

/// What an unpack wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries unpacked.
    pub entries: u64,
    /// File bytes written.
    pub bytes: u64,
}

/// Detects the compression of a stream by its first bytes and decompresses it; a stream
/// that is none of gzip, zstd, bzip2 or xz is passed through as it is.
pub fn decompressed(reader: impl Read + 'static) -> Result<Box<dyn Read>, LayerError> {
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let head = reader
        .fill_buf()
        .map_err(|e| LayerError::stream("reading the layer", e))?
        .to_vec();
    let stream = |e| LayerError::stream("starting decompression", e);
    Ok(match head.as_slice() {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(stream)?)
        }
        [b'B', b'Z', b'h', ..] => Box::new(bzip2::read::MultiBzDecoder::new(reader)),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Box::new(xz2::read::XzDecoder::new_multi_decoder(reader)),
        _ => Box::new(reader),
    })
}

/// Cleans an entry path into components, refusing any that climbs above the root.
fn components(raw: &Path) -> Result<Vec<String>, LayerError> {
    let text = raw.to_string_lossy();
    let mut parts: Vec<String> = Vec::new();
    for component in text.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(LayerError::unsafe_entry(
                        text.into_owned(),
                        "its path climbs above the root",
                    ));
                }
            }
            other => parts.push(other.to_owned()),
        }
    }
    Ok(parts)
}

/// The directory `components` names under `root`, created as needed; refuses to pass through
/// a symbolic link.
fn safe_dir(root: &Path, components: &[String], entry: &str) -> Result<PathBuf, LayerError> {
    let mut current = root.to_path_buf();
    for component in components {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(LayerError::unsafe_entry(
                    entry,
                    format!(
                        "{} is a symbolic link; layers may not write through links",
                        current.display()
                    ),
                ));
            }
            Ok(_) => {
                fs::remove_file(&current).map_err(|e| LayerError::io("creating directory", &current, e))?;
                fs::create_dir(&current).map_err(|e| LayerError::io("creating directory", &current, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&current).map_err(|e| LayerError::io("creating directory", &current, e))?;
            }
            Err(e) => return Err(LayerError::io("creating directory", &current, e)),
        }
    }
    Ok(current)
}

/// Removes whatever is at `path` (not following links).
fn remove_any(path: &Path) -> Result<(), LayerError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| LayerError::io("removing", path, e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| LayerError::io("removing", path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LayerError::io("reading", path, e)),
    }
}

fn make_node(
    path: &Path,
    kind: rustix::fs::FileType,
    mode: u32,
    major: u32,
    minor: u32,
) -> Result<(), LayerError> {
    let device = rustix::fs::makedev(major, minor);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        kind,
        rustix::fs::Mode::from_raw_mode(mode),
        device,
    )
    .map_err(|e| LayerError::io("creating node", path, e.into()))
}

/// Unpacks a (decompressed) layer tar into `dest`.
pub fn unpack(layer: impl Read, dest: &Path, options: &UnpackOptions) -> Result<UnpackStats, LayerError> {
    let mut archive = tar::Archive::new(layer);
    let mut stats = UnpackStats::default();
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    let mut written: HashSet<PathBuf> = HashSet::new();
    let entries = archive
        .entries()
        .map_err(|e| LayerError::stream("reading the layer", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| LayerError::stream("reading the layer", e))?;
        let raw = entry
            .path()
            .map_err(|e| LayerError::stream("reading an entry name", e))?
            .into_owned();
        let shown = raw.to_string_lossy().into_owned();
        let mut parts = components(&raw)?;
        let Some(name) = parts.pop() else { continue };
        let header = entry.header().clone();
        let kind = header.entry_type();

        if options.whiteouts != WhiteoutMode::Literal && name.starts_with(".wh.") {
            let parent = safe_dir(dest, &parts, &shown)?;
            if name == ".wh..wh..opq" {
                match options.whiteouts {
                    WhiteoutMode::Overlay => xattr::set(&parent, "trusted.overlay.opaque", b"y")
                        .map_err(|e| LayerError::io("marking opaque", &parent, e))?,
                    _ => {
                        for child in fs::read_dir(&parent)
                            .map_err(|e| LayerError::io("reading directory", &parent, e))?
                            .flatten()
                        {
                            if !written.contains(&child.path()) {
                                remove_any(&child.path())?;
                            }
                        }
                    }
                }
            } else {
                let target = parent.join(&name[4..]);
                remove_any(&target)?;
                if options.whiteouts == WhiteoutMode::Overlay {
                    make_node(&target, rustix::fs::FileType::CharacterDevice, 0, 0, 0)?;
                }
            }
            stats.entries += 1;
            continue;
        }

        let parent = safe_dir(dest, &parts, &shown)?;
        let target = parent.join(&name);
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        match kind {
            tar::EntryType::Directory => {
                if !fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    remove_any(&target)?;
                    fs::create_dir(&target).map_err(|e| LayerError::io("writing", &target, e))?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_any(&target)?;
                let mut file =
                    File::create_new(&target).map_err(|e| LayerError::io("writing", &target, e))?;
                stats.bytes +=
                    io::copy(&mut entry, &mut file).map_err(|e| LayerError::io("writing", &target, e))?;
            }
            tar::EntryType::Symlink => {
                let link = header
                    .link_name()
                    .ok()
                    .flatten()
                    .or_else(|| entry.link_name().ok().flatten())
                    .ok_or_else(|| LayerError::invalid(&shown, "symbolic link without a target"))?
                    .into_owned();
                remove_any(&target)?;
                symlink(&link, &target).map_err(|e| LayerError::io("writing", &target, e))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| LayerError::invalid(&shown, "hard link without a target"))?
                    .into_owned();
                let mut link_parts = components(&link)?;
                let link_name = link_parts
                    .pop()
                    .ok_or_else(|| LayerError::unsafe_entry(shown.clone(), "hard link to the root"))?;
                let source = safe_dir(dest, &link_parts, &shown)?.join(link_name);
                remove_any(&target)?;
                fs::hard_link(&source, &target).map_err(|e| LayerError::io("writing", &target, e))?;
                stats.entries += 1;
                written.insert(target);
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                remove_any(&target)?;
                let (file_type, major, minor) = match kind {
                    tar::EntryType::Char => (
                        rustix::fs::FileType::CharacterDevice,
                        header.device_major().ok().flatten().unwrap_or(0),
                        header.device_minor().ok().flatten().unwrap_or(0),
                    ),
                    tar::EntryType::Block => (
                        rustix::fs::FileType::BlockDevice,
                        header.device_major().ok().flatten().unwrap_or(0),
                        header.device_minor().ok().flatten().unwrap_or(0),
                    ),
                    _ => (rustix::fs::FileType::Fifo, 0, 0),
                };
                if let Err(e) = make_node(&target, file_type, mode, major, minor) {
                    if options.same_owner {
                        return Err(e);
                    }
                    // Without root, device files cannot be made; skip them as rootless
                    // unpackers do.
                    continue;
                }
            }
            // PAX and GNU extension headers are consumed by the reader; anything else is not
            // part of a filesystem.
            _ => continue,
        }

        if options.same_owner {
            let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
            let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
                return Err(LayerError::invalid(&shown, "owner id out of range"));
            };
            std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                .map_err(|e| LayerError::io("writing", &target, e))?;
        }
        if kind != tar::EntryType::Symlink {
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(|e| LayerError::io("writing", &target, e))?;
        }
        if let Ok(Some(extensions)) = entry.pax_extensions() {
            for extension in extensions.flatten() {
                if let (Ok(key), value) = (extension.key(), extension.value_bytes())
                    && let Some(name) = key.strip_prefix("SCHILY.xattr.")
                {
                    // Unprivileged processes cannot set trusted.* or some security.*
                    // attributes; they are dropped rather than failing the unpack.
                    let _ = xattr::set(&target, name, value);
                }
            }
        }
        let mtime = header.mtime().map_or(0, |m| i64::try_from(m).unwrap_or(0));
        if kind == tar::EntryType::Directory {
            dir_times.push((target.clone(), mtime));
        } else {
            let time = filetime::FileTime::from_unix_time(mtime, 0);
            filetime::set_symlink_file_times(&target, time, time)
                .map_err(|e| LayerError::io("writing", &target, e))?;
        }
        stats.entries += 1;
        written.insert(target);
    }
    // Directory mtimes last: creating their children would have changed them.
    for (dir, mtime) in dir_times.iter().rev() {
        let time = filetime::FileTime::from_unix_time(*mtime, 0);
        filetime::set_symlink_file_times(dir, time, time)
            .map_err(|e| LayerError::io("setting times of", dir, e))?;
    }
    Ok(stats)
}
