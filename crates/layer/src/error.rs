//! The one error type of the crate: every variant names the path involved and, where there is
//! one, what to do about it.

use std::io;
use std::path::PathBuf;

/// Why a layer could not be written, read or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// An I/O operation on a named file failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done, as a verb phrase ("reading", "creating directory").
        action: &'static str,
        /// The file on disk (or the entry path inside a layer).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Reading or writing the archive stream itself failed (not a particular file).
    #[error("{action}")]
    Stream {
        /// What was being done ("writing the layer", "reading the tar stream").
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An entry given to [`write_layer`](crate::write_layer) cannot be written as asked.
    #[error("layer entry {path:?}: {reason}")]
    InvalidEntry {
        /// The entry's path.
        path: String,
        /// What is wrong, and how to fix it.
        reason: String,
    },

    /// Two entries given to [`write_layer`](crate::write_layer) have the same path.
    #[error("layer entry {path:?} appears twice: a layer holds one entry per path; drop one of them")]
    DuplicateEntry {
        /// The duplicated path.
        path: String,
    },

    /// A file's size changed between the moment its header was written and the end of its
    /// content, so the layer would have lied about it.
    #[error(
        "{} changed while it was being read (expected {expected} bytes, {found}); \
         nothing may write to build inputs during a build: retry once it is stable",
        path.display()
    )]
    FileChanged {
        /// The file on disk.
        path: PathBuf,
        /// The size recorded in the tar header.
        expected: u64,
        /// What was found instead ("got 10 bytes", "it grew").
        found: String,
    },

    /// A layer or archive entry tries to leave the destination or write through a symlink, or is
    /// otherwise unsafe to unpack. Nothing was written for it.
    #[error("refusing to unpack {path:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path as stored in the archive (lossily decoded).
        path: String,
        /// Why it is refused.
        reason: String,
    },

    /// The archive holds something this machine cannot recreate (a device file without root).
    #[error("cannot unpack {path:?}: {reason}")]
    Unsupported {
        /// The entry's path as stored in the archive (lossily decoded).
        path: String,
        /// Why, and what would make it work.
        reason: String,
    },

    /// The archive is not a well-formed tar stream.
    #[error("malformed layer archive: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },

    /// A directory cannot be turned into layer entries.
    #[error("{}: {reason}", path.display())]
    Directory {
        /// The file or directory on disk.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        reason: String,
    },

    /// An option is out of range (a compression level, for example).
    #[error("invalid layer option: {0}")]
    InvalidOption(String),
}

impl LayerError {
    /// Wraps an I/O error on `path`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> LayerError {
        LayerError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Wraps an I/O error on the archive stream.
    pub(crate) fn stream(action: &'static str, source: io::Error) -> LayerError {
        LayerError::Stream { action, source }
    }

    pub(crate) fn invalid(path: &str, reason: impl Into<String>) -> LayerError {
        LayerError::InvalidEntry {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsafe_entry(path: impl Into<String>, reason: impl Into<String>) -> LayerError {
        LayerError::UnsafeEntry {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
