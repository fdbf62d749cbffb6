//! [`FsBlobStore`]: blobs as files named by digest, uploads as files named by session id.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::StreamExt;
use rbuild_oci::{Algorithm, Digest, Hasher};
use tokio::sync::mpsc;

use super::aside::{self, Removal};
use super::{BLOBS_DIR, UPLOADS_DIR, blob_path, blocking, fsync_dir, list_names};
use crate::storage::{
    AppendCheck, BlobInfo, BlobStore, ByteStream, Page, PageRequest, StorageError, StorageResult, UploadId,
    check_digest,
};

/// How much a blob read hands to the network at a time.
const READ_CHUNK: u64 = 256 * 1024;
/// Buffered chunks between a request body and each of the threads that write and hash it;
/// the two queues share the chunks, so with hyper's frame sizes this bounds an upload's memory
/// to a few hundred KiB whatever the blob size.
const WRITE_QUEUE: usize = 16;
/// Most chunks one `writev` takes: when the disk falls behind, the chunks waiting are written
/// together, in place, instead of one system call each.
const WRITE_BATCH: usize = 64;

/// Where an upload stands: its size and the SHA-256 state over those bytes, so that finishing
/// an upload does not re-read it. Rebuilt from the staged file after a restart.
struct Cursor {
    size: u64,
    sha256: Hasher,
}

/// Blobs and staged uploads on a local filesystem.
#[derive(Clone)]
pub struct FsBlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    blobs: PathBuf,
    fsync: bool,
    /// One lock per live upload: appends and commits of the same upload never interleave.
    cursors: Mutex<HashMap<UploadId, Arc<tokio::sync::Mutex<Option<Cursor>>>>>,
}

impl FsBlobStore {
    /// Opens (creating if needed) the blob store under `root`. With `fsync`, data is flushed to
    /// disk before it becomes visible, so it survives power loss as well as crashes.
    pub fn open(root: &Path, fsync: bool) -> io::Result<FsBlobStore> {
        let blobs = root.join(BLOBS_DIR);
        fs::create_dir_all(blobs.join(UPLOADS_DIR))?;
        Ok(FsBlobStore {
            inner: Arc::new(Inner {
                blobs,
                fsync,
                cursors: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.inner.blobs, digest)
    }

    fn upload_path(&self, id: &UploadId) -> PathBuf {
        self.inner.blobs.join(UPLOADS_DIR).join(id.to_string())
    }

    /// The lock guarding an upload's cursor, created empty on first use.
    fn cursor(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<Option<Cursor>>> {
        let mut cursors = self.inner.cursors.lock().unwrap_or_else(|e| e.into_inner());
        cursors.entry(id.clone()).or_default().clone()
    }

    fn forget_cursor(&self, id: &UploadId) {
        let mut cursors = self.inner.cursors.lock().unwrap_or_else(|e| e.into_inner());
        cursors.remove(id);
    }

    /// The cursor for an upload, re-hashing the staged file if the server restarted since it
    /// last grew (or another process touched it).
    async fn current_cursor(&self, id: &UploadId, slot: &mut Option<Cursor>) -> StorageResult<Cursor> {
        let path = self.upload_path(id);
        let on_disk = match tokio::fs::metadata(&path).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StorageError::UploadUnknown),
            Err(e) => return Err(StorageError::io(format!("reading {}", path.display()), e)),
        };
        match slot.take() {
            Some(cursor) if cursor.size == on_disk => Ok(cursor),
            _ => {
                let sha256 = blocking(move || hash_file(&path, Algorithm::Sha256)).await?;
                Ok(Cursor {
                    size: on_disk,
                    sha256,
                })
            }
        }
    }

    /// Moves verified bytes at `staged` into place as the blob `digest`, touched now: an upload
    /// whose last chunk came long ago still makes a blob that garbage collection sees as new.
    fn install(&self, staged: &Path, digest: &Digest) -> StorageResult<()> {
        let target = self.path(digest);
        let context = || format!("storing blob {digest}");
        let dir = target
            .parent()
            .ok_or_else(|| StorageError::io(context(), io::Error::other("no parent")))?;
        fs::create_dir_all(dir).map_err(|e| StorageError::io(context(), e))?;
        let file = File::open(staged).map_err(|e| StorageError::io(context(), e))?;
        file.set_modified(SystemTime::now())
            .map_err(|e| StorageError::io(context(), e))?;
        if self.inner.fsync {
            file.sync_all().map_err(|e| StorageError::io(context(), e))?;
        }
        fs::rename(staged, &target).map_err(|e| StorageError::io(context(), e))?;
        if self.inner.fsync {
            fsync_dir(dir).map_err(|e| StorageError::io(context(), e))?;
        }
        Ok(())
    }
}

/// Hashes a whole file.
fn hash_file(path: &Path, algorithm: Algorithm) -> StorageResult<Hasher> {
    let mut hasher = Hasher::new(algorithm);
    let mut file =
        File::open(path).map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
    io::copy(&mut file, &mut hasher)
        .map_err(|e| StorageError::io(format!("hashing {}", path.display()), e))?;
    Ok(hasher)
}

/// Streams `range` of `file` from a blocking thread, a chunk at a time, so a download holds
/// at most a few chunks in memory and stops reading when the client goes away.
fn file_stream(mut file: File, range: Range<u64>) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(SeekFrom::Start(range.start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut remaining = range.end.saturating_sub(range.start);
        while remaining > 0 {
            let want = remaining.min(READ_CHUNK);
            let mut chunk = Vec::with_capacity(want as usize);
            let item = match (&mut file).take(want).read_to_end(&mut chunk) {
                Ok(n) if n as u64 == want => Ok(Bytes::from(chunk)),
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob shorter than recorded",
                )),
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
            remaining -= want;
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// How often, with fsync on, an upload asks the kernel to start writing back what it has
/// received. Measured on a 1 GiB upload: without it the final fsync waits ~2.3 s for the whole
/// blob to reach the disk after the last byte arrives; with it disk writes overlap the transfer.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Starts (does not wait for) writeback of `len` bytes at `offset`. Only a hint: the fsync
/// before the blob becomes visible is what reports errors.
fn start_writeback(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range(2) reads only its integer arguments, and the descriptor is owned
    // by `file`, which outlives the call.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Writes chunks arriving on `rx` to the end of `path` (which holds `start` bytes). The chunks
/// are written from the request's own buffers, those already waiting together in one `writev`:
/// copying them into a buffer of ours first cost a pass over every byte.
fn write_chunks(path: &Path, start: u64, mut rx: mpsc::Receiver<Bytes>, fsync: bool) -> io::Result<u64> {
    let mut file = OpenOptions::new().append(true).open(path)?;
    let mut written = 0u64;
    let mut flushed_hint = 0u64;
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Some(chunk) = rx.blocking_recv() {
        batch.push(chunk);
        while batch.len() < WRITE_BATCH
            && let Ok(chunk) = rx.try_recv()
        {
            batch.push(chunk);
        }
        let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|chunk| IoSlice::new(chunk)).collect();
        let mut pending = &mut slices[..];
        while !pending.is_empty() {
            match file.write_vectored(pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n as u64;
                    IoSlice::advance_slices(&mut pending, n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        batch.clear();
        if fsync && written - flushed_hint >= WRITEBACK_EVERY {
            start_writeback(&file, start + flushed_hint, written - flushed_hint);
            flushed_hint = written;
        }
    }
    Ok(written)
}

/// Hashes chunks arriving on `rx` on a thread of its own. SHA-256 is the dearest step of an
/// upload (about 1.7 GB/s on one core with SHA-NI, as fast as openssl); done after each write on
/// the writing thread it set the pace alone, beside the writes it takes a core of its own.
fn hash_chunks(mut sha256: Hasher, mut rx: mpsc::Receiver<Bytes>) -> Hasher {
    while let Some(chunk) = rx.blocking_recv() {
        sha256.update(&chunk);
    }
    sha256
}

impl BlobStore for FsBlobStore {
    fn backend(&self) -> &'static str {
        "filesystem"
    }

    async fn health(&self) -> StorageResult<()> {
        super::check_writable(self.inner.blobs.join(UPLOADS_DIR)).await
    }

    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        let path = self.path(digest);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
        }
    }

    async fn read(&self, digest: &Digest, range: Range<u64>) -> StorageResult<ByteStream> {
        let path = self.path(digest);
        let file = blocking(move || match File::open(&path) {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::BlobUnknown),
            Err(e) => Err(StorageError::io(format!("opening {}", path.display()), e)),
        })
        .await?;
        Ok(file_stream(file, range))
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> StorageResult<()> {
        check_digest(digest, Digest::of(digest.algorithm(), &bytes))?;
        // Touched, then checked: a collector deleting it meanwhile makes the check fail, and
        // the bytes are stored again.
        if self.touch(digest).await? && self.stat(digest).await?.is_some() {
            return Ok(());
        }
        // Staged like an upload, so a crash leaves only an orphan that the purge removes.
        let staged = self.upload_path(&UploadId::new());
        let store = self.clone();
        let digest = digest.clone();
        blocking(move || {
            let result = fs::write(&staged, &bytes)
                .map_err(|e| StorageError::io(format!("writing {}", staged.display()), e))
                .and_then(|()| store.install(&staged, &digest));
            if result.is_err() {
                let _ = fs::remove_file(&staged);
            }
            result
        })
        .await
    }

    async fn delete(&self, digest: &Digest) -> StorageResult<bool> {
        let path = self.path(digest);
        blocking(move || super::remove_optional(&path)).await
    }

    async fn upload_create(&self, id: &UploadId) -> StorageResult<()> {
        let path = self.upload_path(id);
        File::create_new(&path).map_err(|e| StorageError::io(format!("creating {}", path.display()), e))?;
        *self.cursor(id).lock().await = Some(Cursor {
            size: 0,
            sha256: Hasher::new(Algorithm::Sha256),
        });
        Ok(())
    }

    async fn upload_append(
        &self,
        id: &UploadId,
        mut body: ByteStream,
        check: AppendCheck,
    ) -> StorageResult<u64> {
        let lock = self.cursor(id);
        let mut slot = lock.lock().await;
        let cursor = self.current_cursor(id, &mut slot).await?;
        if let Some(requested) = check.offset.filter(|&o| o != cursor.size) {
            let current = cursor.size;
            *slot = Some(cursor);
            return Err(StorageError::OffsetMismatch { requested, current });
        }

        let path = self.upload_path(id);
        let (to_disk, disk_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let (to_hash, hash_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let writer = {
            let path = path.clone();
            let (start, fsync) = (cursor.size, self.inner.fsync);
            tokio::task::spawn_blocking(move || write_chunks(&path, start, disk_rx, fsync))
        };
        let sha256 = cursor.sha256.clone();
        let hasher = tokio::task::spawn_blocking(move || hash_chunks(sha256, hash_rx));
        let mut received = 0u64;
        let mut failure = None;
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    received += chunk.len() as u64;
                    if check.length.is_some_and(|limit| received > limit) {
                        break;
                    }
                    if to_disk.send(chunk.clone()).await.is_err() || to_hash.send(chunk).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(StorageError::Body(e));
                    break;
                }
            }
        }
        drop((to_disk, to_hash));
        let joined = |e: tokio::task::JoinError| StorageError::io("upload writer", io::Error::other(e));
        let written = writer
            .await
            .map_err(joined)
            .and_then(|r| r.map_err(|e| StorageError::io(format!("writing {}", path.display()), e)));
        let written = match (written, hasher.await.map_err(joined)) {
            (Ok(size), Ok(sha256)) => Ok((size, sha256)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let failure = failure.or_else(|| {
            check
                .length
                .filter(|&expected| expected != received)
                .map(|expected| StorageError::SizeMismatch { expected, received })
        });
        let outcome = match (written, failure) {
            (_, Some(failure)) => Err(failure),
            (written, None) => written,
        };
        match outcome {
            Ok((written, sha256)) => {
                let size = cursor.size + written;
                *slot = Some(Cursor { size, sha256 });
                Ok(size)
            }
            Err(e) => {
                // All or nothing: cut the file back to where this chunk began. If even that
                // fails, the cursor stays empty and is rebuilt from whatever the file holds.
                let size = cursor.size;
                let truncated = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(size));
                if truncated.is_ok() {
                    *slot = Some(cursor);
                }
                Err(e)
            }
        }
    }

    async fn upload_size(&self, id: &UploadId) -> StorageResult<u64> {
        let lock = self.cursor(id);
        let mut slot = lock.lock().await;
        let cursor = self.current_cursor(id, &mut slot).await?;
        let size = cursor.size;
        *slot = Some(cursor);
        Ok(size)
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> StorageResult<u64> {
        let lock = self.cursor(id);
        let mut slot = lock.lock().await;
        let cursor = self.current_cursor(id, &mut slot).await?;
        let path = self.upload_path(id);
        let actual = match digest.algorithm() {
            Algorithm::Sha256 => cursor.sha256.clone().finalize(),
            other => {
                let path = path.clone();
                blocking(move || hash_file(&path, other)).await?.finalize()
            }
        };
        let size = cursor.size;
        *slot = Some(cursor);
        check_digest(digest, actual)?;
        let store = self.clone();
        let target = digest.clone();
        blocking(move || store.install(&path, &target)).await?;
        *slot = None;
        drop(slot);
        self.forget_cursor(id);
        Ok(size)
    }

    async fn upload_cancel(&self, id: &UploadId) -> StorageResult<()> {
        let lock = self.cursor(id);
        let mut slot = lock.lock().await;
        let path = self.upload_path(id);
        blocking(move || super::remove_optional(&path)).await?;
        *slot = None;
        drop(slot);
        self.forget_cursor(id);
        Ok(())
    }

    async fn staged_uploads(&self) -> StorageResult<Vec<(UploadId, SystemTime)>> {
        let dir = self.inner.blobs.join(UPLOADS_DIR);
        blocking(move || {
            let mut staged = Vec::new();
            for name in list_names(&dir)? {
                let Some(id) = UploadId::parse(&name) else {
                    continue;
                };
                if let Ok(modified) = fs::metadata(dir.join(&name)).and_then(|m| m.modified()) {
                    staged.push((id, modified));
                }
            }
            Ok(staged)
        })
        .await
    }

    async fn blobs(&self, page: &PageRequest) -> StorageResult<Page<BlobInfo>> {
        let blobs = self.inner.blobs.clone();
        let page = page.clone();
        blocking(move || list_blobs(&blobs, &page)).await
    }

    async fn blob_info(&self, digest: &Digest) -> StorageResult<Option<BlobInfo>> {
        let path = self.path(digest);
        let digest = digest.clone();
        blocking(move || stat_blob(&path, digest)).await
    }

    async fn touch(&self, digest: &Digest) -> StorageResult<bool> {
        let path = self.path(digest);
        blocking(move || aside::touch(&path)).await
    }

    async fn delete_if_idle(&self, digest: &Digest, cutoff: SystemTime) -> StorageResult<Option<u64>> {
        let path = self.path(digest);
        blocking(move || match aside::remove_if_idle(&path, cutoff)? {
            Removal::Removed(size) => Ok(Some(size)),
            Removal::Busy | Removal::Missing => Ok(None),
        })
        .await
    }
}

/// A blob file's size and modification time; `None` if it is gone.
fn stat_blob(path: &Path, digest: Digest) -> StorageResult<Option<BlobInfo>> {
    match fs::metadata(path).and_then(|m| Ok((m.len(), m.modified()?))) {
        Ok((size, touched)) => Ok(Some(BlobInfo {
            digest,
            size,
            touched,
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
    }
}

/// One page of the blobs under `blobs`, in digest order: algorithms, then fan-out directories,
/// then names, each sorted, skipping whole directories that sort before `page.after`.
fn list_blobs(blobs: &Path, page: &PageRequest) -> StorageResult<Page<BlobInfo>> {
    let after = page.after.as_deref();
    let before_start = |key: &str| after.is_some_and(|a| key < a.get(..key.len()).unwrap_or(a));
    let mut algorithms: Vec<(String, Algorithm)> = list_names(blobs)?
        .into_iter()
        .filter_map(|name| Algorithm::from_name(&name).map(|a| (format!("{name}:"), a)))
        .collect();
    algorithms.sort_by(|a, b| a.0.cmp(&b.0));
    let mut items = Vec::new();
    for (prefix, algorithm) in algorithms {
        let dir = blobs.join(algorithm.name());
        let mut fans = list_names(&dir)?;
        fans.sort();
        for fan in fans.iter().filter(|fan| !before_start(&format!("{prefix}{fan}"))) {
            let fan_dir = dir.join(fan);
            aside::recover(&fan_dir)?;
            let mut names = list_names(&fan_dir)?;
            names.sort();
            for name in names {
                let path = fan_dir.join(&name);
                let Some(digest) = Digest::from_parts(algorithm, &name)
                    .ok()
                    .filter(|d| blob_path(blobs, d) == path)
                else {
                    continue;
                };
                if after.is_some_and(|a| digest.to_string().as_str() <= a) {
                    continue;
                }
                if let Some(info) = stat_blob(&path, digest)? {
                    items.push(info);
                    if items.len() > page.limit {
                        items.truncate(page.limit);
                        return Ok(Page { items, more: true });
                    }
                }
            }
        }
    }
    Ok(Page { items, more: false })
}
