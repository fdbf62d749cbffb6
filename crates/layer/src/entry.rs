//! What a layer holds: entries with their metadata, as the tar writer consumes them.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where a file's bytes come from when the layer is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileSource {
    /// Read from this file at write time (never whole into memory).
    Path(PathBuf),
    /// These bytes (heredocs, small generated files).
    Bytes(Vec<u8>),
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File(FileSource),
    /// A directory.
    Dir,
    /// A symbolic link with this target.
    Symlink(String),
    /// A hard link to an earlier entry of the same layer (its path).
    Hardlink(String),
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// One entry of a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the root: no leading `/`, no `..`, no trailing `/`.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, whole seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}
