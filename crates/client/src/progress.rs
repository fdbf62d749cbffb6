//! Progress of blob transfers, for progress bars and plain logs.

use rbuild_oci::Digest;

/// What happened to one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlobOutcome {
    /// Downloaded from the registry into the local store.
    Downloaded,
    /// Already there: the local store had it (pull) or the registry had it (push).
    Existed,
    /// Uploaded to the registry.
    Uploaded,
    /// Linked into the repository from another repository on the registry, with no upload.
    Mounted,
}

/// Which way bytes move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Registry to local store.
    Download,
    /// Local store to registry.
    Upload,
}

/// Receives transfer events. Every method has an empty default; implementations must be cheap
/// (they are called from the transfer tasks, per chunk for [`Progress::blob_bytes`]).
pub trait Progress: Send + Sync {
    /// A blob transfer starts (called only for blobs that really move).
    fn blob_started(&self, _digest: &Digest, _size: u64, _direction: Direction) {}
    /// `done` of the blob's bytes have moved so far. Restarts from 0 when a transfer is retried.
    fn blob_bytes(&self, _digest: &Digest, _done: u64) {}
    /// The blob is settled.
    fn blob_finished(&self, _digest: &Digest, _outcome: BlobOutcome) {}
}

/// Ignores every event.
pub struct NoProgress;

impl Progress for NoProgress {}
