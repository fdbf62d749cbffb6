//! Uploads as S3 multipart uploads whose state lives in the bucket, so that any replica can
//! take the next chunk.
//!
//! `uploads/<id>/state` holds everything an upload is between two requests: one line of JSON
//! (its size, the S3 multipart upload id and the ETags of the parts sent so far, the running
//! SHA-256) and then the tail, the bytes received after the last whole part (less than
//! [`PART_SIZE`]). S3 parts must be at least 5 MiB except the last, so a chunk that does not
//! fill a part leaves its end in the tail for the next request, on whichever replica.
//!
//! An append is one PUT of that object at the end: parts sent before it are only referred to
//! by the new state, so a body that fails leaves the old state, which names none of them, and
//! the next append overwrites their part numbers. The multipart upload targets
//! `uploads/<id>/data`; a commit completes it there and copies it to the blob's key (S3 fixes
//! a multipart upload's key when it starts, before the digest is known). On Garage a copy
//! shares the stored blocks, so it costs no data transfer.
//!
//! No replica caches anything between requests, so moving to another replica costs nothing
//! over staying: every append, wherever it runs, GETs the state object and PUTs it back. The
//! SHA-256 resumes from its saved state (`sha256`), about 100 bytes: nothing is re-hashed or
//! re-read. `benches/src/bin/s3-throughput.rs` measured 16 appends of 1 MiB at 42 to 109 ms
//! each through one handle and 47 to 88 ms alternating two (same run, noisy machine). What
//! small chunks do pay is the tail: each rewrites up to a part's worth of bytes; clients that
//! send chunks of a part or more (or one PATCH, as docker and containerd do) pay nothing.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use rbuild_oci::{Algorithm, Digest};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::S3BlobStore;
use super::client::unavailable;
use super::sha256::Sha256State;
use crate::storage::{AppendCheck, ByteStream, StorageError, StorageResult, UploadId};

/// The size of every part but the last: S3's minimum is 5 MiB. An upload holds at most two
/// parts in memory (one being sent while the next fills).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// The largest object one CopyObject copies on AWS S3; larger ones are copied in pieces.
const COPY_MAX: u64 = 5 << 30;
/// The piece size of a copy in pieces (parts of a multipart upload, like any other).
const COPY_PIECE: u64 = 1 << 30;

/// What `uploads/<id>/state` holds before the tail.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UploadState {
    /// Bytes received, the tail included.
    pub size: u64,
    /// The S3 multipart upload, once a whole part has been sent.
    pub multipart: Option<String>,
    /// The ETags of the parts sent, in order (part numbers from 1).
    pub parts: Vec<String>,
    /// SHA-256 over all `size` bytes.
    pub sha256: Sha256State,
}

impl UploadState {
    /// The object: the JSON line, then the tail.
    fn encode(&self, tail: &[u8]) -> Bytes {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out.extend_from_slice(tail);
        Bytes::from(out)
    }

    fn decode(object: Bytes) -> Option<(UploadState, Bytes)> {
        let newline = object.iter().position(|&b| b == b'\n')?;
        let state = serde_json::from_slice(&object[..newline]).ok()?;
        Some((state, object.slice(newline + 1..)))
    }
}

/// A part on its way to S3, sent while the next one fills.
type InFlight = JoinHandle<StorageResult<(String, Bytes)>>;

impl S3BlobStore {
    pub(super) fn state_key(&self, id: &UploadId) -> String {
        format!("{}uploads/{id}/state", self.prefix)
    }

    pub(super) fn data_key(&self, id: &UploadId) -> String {
        format!("{}uploads/{id}/data", self.prefix)
    }

    /// Writes an upload's state and tail: the moment an append takes effect.
    pub(super) async fn save_state(
        &self,
        id: &UploadId,
        state: &UploadState,
        tail: &[u8],
    ) -> StorageResult<()> {
        let at = (super::AT, super::millis_now());
        self.client.put(&self.state_key(id), state.encode(tail), at).await
    }

    /// An upload's state and tail.
    pub(super) async fn load_state(&self, id: &UploadId) -> StorageResult<(UploadState, Bytes)> {
        let response = self
            .client
            .get(&self.state_key(id), None)
            .await?
            .ok_or(StorageError::UploadUnknown)?;
        let object = response.bytes().await.map_err(unavailable)?;
        UploadState::decode(object).ok_or_else(|| {
            StorageError::io(
                format!("upload {id}"),
                std::io::Error::other("unreadable upload state object"),
            )
        })
    }

    pub(super) async fn append(
        &self,
        id: &UploadId,
        mut body: ByteStream,
        check: AppendCheck,
    ) -> StorageResult<u64> {
        let (mut state, tail) = self.load_state(id).await?;
        if let Some(offset) = check.offset.filter(|&o| o != state.size) {
            return Err(StorageError::OffsetMismatch {
                requested: offset,
                current: state.size,
            });
        }
        let created_here = state.multipart.is_none();
        let mut buffer = BytesMut::with_capacity(PART_SIZE.max(tail.len()));
        buffer.extend_from_slice(&tail);
        let mut received = 0u64;
        let mut in_flight: Option<InFlight> = None;
        let result: StorageResult<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(StorageError::Body)?;
                received += chunk.len() as u64;
                if let Some(expected) = check.length.filter(|&l| received > l) {
                    return Err(StorageError::SizeMismatch { expected, received });
                }
                state.sha256.update(&chunk);
                let mut chunk = chunk;
                while !chunk.is_empty() {
                    let room = PART_SIZE.saturating_sub(buffer.len());
                    buffer.extend_from_slice(&chunk.split_to(room.min(chunk.len())));
                    if buffer.len() >= PART_SIZE {
                        let full = std::mem::take(&mut buffer);
                        buffer = self.send_part(id, &mut state, &mut in_flight, full).await?;
                    }
                }
            }
            if let Some(expected) = check.length.filter(|&l| received != l) {
                return Err(StorageError::SizeMismatch { expected, received });
            }
            if let Some(last) = in_flight.take() {
                state.parts.push(joined(last).await?.0);
            }
            Ok(())
        }
        .await;
        if let Err(error) = result {
            if let Some(task) = in_flight {
                task.abort();
            }
            if created_here && let Some(upload) = &state.multipart {
                // Best effort: the state that would have named it was never written.
                let _ = self.client.abort_multipart(&self.data_key(id), upload).await;
            }
            return Err(error);
        }
        if received == 0 {
            return Ok(state.size);
        }
        state.size += received;
        self.save_state(id, &state, &buffer).await?;
        Ok(state.size)
    }

    /// Waits for the part before this one, then starts sending this one; returns an empty
    /// buffer for the next part: the previous part's, once its request let go of it. Two part
    /// buffers alternate for a whole upload, so memory stays flat in the blob's size (fresh
    /// buffers for every part sit in the allocator's caches until it purges them).
    async fn send_part(
        &self,
        id: &UploadId,
        state: &mut UploadState,
        in_flight: &mut Option<InFlight>,
        part: BytesMut,
    ) -> StorageResult<BytesMut> {
        let mut next = None;
        if let Some(previous) = in_flight.take() {
            let (etag, sent) = joined(previous).await?;
            state.parts.push(etag);
            next = sent.try_into_mut().ok();
        }
        let key = self.data_key(id);
        let upload = match &state.multipart {
            Some(upload) => upload.clone(),
            None => {
                let upload = self.client.create_multipart(&key, None).await?;
                state.multipart = Some(upload.clone());
                upload
            }
        };
        let number = state.parts.len() + 1;
        let client = self.client.clone();
        let part = part.freeze();
        *in_flight = Some(tokio::spawn(async move {
            let etag = client.upload_part(&key, &upload, number, part.clone()).await?;
            Ok((etag, part))
        }));
        Ok(match next {
            Some(mut buffer) => {
                buffer.clear();
                buffer
            }
            None => BytesMut::with_capacity(PART_SIZE),
        })
    }

    /// Checks the staged content against `digest`; returns the state and tail to store.
    pub(super) async fn verified(
        &self,
        id: &UploadId,
        digest: &Digest,
    ) -> StorageResult<(UploadState, Bytes)> {
        let (state, tail) = self.load_state(id).await?;
        let actual = match digest.algorithm() {
            Algorithm::Sha256 => state.sha256.digest(),
            other if state.parts.is_empty() => Digest::of(other, &tail),
            other => {
                return Err(StorageError::io(
                    format!("upload {id}"),
                    std::io::Error::other(format!(
                        "{} digests of uploads over {PART_SIZE} bytes are not supported by the S3 store",
                        other.name()
                    )),
                ));
            }
        };
        if actual != *digest {
            return Err(StorageError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok((state, tail))
    }

    /// Assembles a verified multipart upload at `uploads/<id>/data`; returns that key. A
    /// commit retried after a crash finds the object already assembled.
    pub(super) async fn assemble(
        &self,
        id: &UploadId,
        state: &UploadState,
        tail: Bytes,
    ) -> StorageResult<String> {
        let key = self.data_key(id);
        if let Some(head) = self.client.head(&key, super::AT).await?
            && head.size == state.size
        {
            return Ok(key);
        }
        let upload = state.multipart.as_deref().ok_or(StorageError::UploadUnknown)?;
        let mut etags = state.parts.clone();
        if !tail.is_empty() {
            etags.push(
                self.client
                    .upload_part(&key, upload, etags.len() + 1, tail)
                    .await?,
            );
        }
        self.client.complete_multipart(&key, upload, &etags).await?;
        Ok(key)
    }

    /// Copies an assembled upload to the blob's key, its store time set to now.
    pub(super) async fn place(&self, data: &str, key: &str, size: u64) -> StorageResult<()> {
        if size <= COPY_MAX {
            self.client
                .copy(data, key, (super::AT, super::millis_now()))
                .await
        } else {
            self.copy_in_pieces(data, key, size, COPY_PIECE).await
        }
    }

    /// Copies `source` to `dest` as a multipart upload of `piece`-byte UploadPartCopy parts.
    pub(super) async fn copy_in_pieces(
        &self,
        source: &str,
        dest: &str,
        size: u64,
        piece: u64,
    ) -> StorageResult<()> {
        let client = &self.client;
        let upload = client
            .create_multipart(dest, Some((super::AT, super::millis_now())))
            .await?;
        let copied = async {
            let mut etags = Vec::new();
            let mut start = 0;
            while start < size {
                let end = (start + piece).min(size);
                etags.push(
                    client
                        .upload_part_copy(dest, &upload, etags.len() + 1, source, start..end)
                        .await?,
                );
                start = end;
            }
            client.complete_multipart(dest, &upload, &etags).await
        }
        .await;
        if copied.is_err() {
            // Best effort: the pieces copied so far are the only thing to clean up.
            let _ = client.abort_multipart(dest, &upload).await;
        }
        copied
    }

    /// Removes an upload's state and data, aborting its multipart upload.
    pub(super) async fn discard(&self, id: &UploadId, multipart: Option<&str>) -> StorageResult<()> {
        let data = self.data_key(id);
        if let Some(upload) = multipart {
            self.client.abort_multipart(&data, upload).await?;
        }
        self.client.delete(&data).await?;
        self.client.delete(&self.state_key(id)).await
    }
}

async fn joined(task: InFlight) -> StorageResult<(String, Bytes)> {
    task.await
        .map_err(|e| StorageError::io("S3 UploadPart", std::io::Error::other(e.to_string())))?
}
