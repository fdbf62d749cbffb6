//! [`S3BlobStore`]: blobs and uploads in any S3-compatible bucket (AWS S3, Garage, Ceph RGW,
//! MinIO, R2), so that replicas share them.
//!
//! # The client, chosen by measurement
//!
//! A small SigV4 client on the reqwest and ring the registry already links (`client`,
//! `sigv4`, `xml`), rather than an S3 crate. Measured on this 2-core machine, shared with
//! other builds (load 5 to 25, so wall times are noisy; crate counts are not):
//!
//! | clean `cargo build` of a crate using                 | wall   | crates |
//! |------------------------------------------------------|--------|--------|
//! | tokio + reqwest 0.13 only (the anchor: we have them)  | 88 s   | 76     |
//! | tokio + object_store 0.12 (`aws`)                     | 364 s  | 127    |
//! | tokio + aws-sdk-s3 1 + aws-config 1                   | 3004 s | 172    |
//! | this client                                          | +0 s   | +0     |
//!
//! object_store brings its own reqwest 0.12 and hyper stack beside ours; aws-sdk-s3 is one
//! crate of several hundred thousand lines, built last and alone. Either would add minutes to
//! every clean CI build, for no gain in speed: 256 MiB put then get against Garage 2.5 on
//! loopback, release builds, alternated in one run (`benches/src/bin/s3-throughput.rs`,
//! object_store through `WriteMultipart` with the same 8 MiB parts, curl `--aws-sigv4` as the
//! anchor):
//!
//! | client        | put MB/s  | get MB/s  | peak RSS |
//! |---------------|-----------|-----------|----------|
//! | curl (anchor) | 186, 195  | 246, 334  |          |
//! | this store    | 180, 170  | 385, 507  | 41 MiB   |
//! | object_store  | 145, 144  | 571, 463  | 15 MiB   |
//!
//! This store's put also hashes every byte (SHA-256) and keeps up to two parts in memory (one
//! in flight while the next fills, glibc's allocator in the benchmark); object_store's figure
//! hashes nothing. As for what the store needs: object_store's `MultipartStore` does keep
//! the upload id and part ETags with the caller, and it signs URLs and ranges GETs, but its
//! copy cannot replace user metadata (the store time below) and its listing has no
//! `start-after`; aws-sdk-s3 has everything at the compile cost above. This client has exactly
//! what is used: multipart uploads whose id and ETags live in the bucket, UploadPartCopy,
//! ranged GETs streamed, presigned GETs, ListObjectsV2 from a `start-after` key with
//! continuation tokens, CopyObject with replaced metadata, and connection failures and 5xx
//! mapped to `Unavailable`. It trusts the system's roots plus `AWS_CA_BUNDLE` when set.
//!
//! # Layout under the prefix
//!
//! - `blobs/<algorithm>/<first two hex digits>/<hex>`: a blob, with its store time in
//!   milliseconds in the `x-amz-meta-rbuild-at` header (S3's `Last-Modified` has whole
//!   seconds, too coarse for the grace period's comparisons).
//! - `touched/<algorithm>/<hex>`: an empty object whose `rbuild-at` is the blob's last touch.
//! - `deleting/<algorithm>/<hex>/<ms>-<uuid>`: one collector's intent to delete the blob,
//!   written at `<ms>` (milliseconds since the epoch, in the key so a listing tells its age).
//! - `uploads/<id>/state` and `uploads/<id>/data`: an upload in progress (see `upload`).
//!
//! # Touch and idle deletion without a lock
//!
//! S3 offers no compare-and-delete, so [`delete_if_idle`](BlobStore::delete_if_idle) and
//! [`touch`](BlobStore::touch) (and storing a blob) follow a write-then-read handshake over
//! keys, which S3's read-after-write consistency makes safe: the collector writes its
//! `deleting` intent, then reads the blob's store and touch times; a toucher writes its touch
//! time, then lists the blob's intents, and while any stands it waits before checking that the
//! blob still exists. Whichever write comes second, its reader sees the other's: either the
//! collector sees the touch and keeps the blob, or the toucher sees the intent and its
//! existence check comes after the deletion. Storing a blob does the same (store, then look
//! for an intent, then store again if the blob went). An intent older than [`INTENT_TTL`]
//! belongs to a collector that died; waiters remove it, and a collector that took longer than
//! half of it to decide gives up rather than delete.
//!
//! Each collector's intent is a key of its own: replicas collect at the same time, and with
//! one shared key the first to finish would remove the intent of another still deciding, so a
//! touch could pass while that other goes on to delete the blob.

mod client;
mod config;
mod profile;
mod sha256;
mod sigv4;
mod upload;
mod xml;

#[cfg(test)]
mod tests;

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::TryStreamExt;
use rbuild_oci::{Algorithm, Digest};

pub use config::S3Config;

use self::client::Client;
use crate::storage::{
    AppendCheck, BlobInfo, BlobStore, ByteStream, Page, PageRequest, StorageError, StorageResult, UploadId,
};

/// The user-metadata name holding a store or touch time (Unix milliseconds).
const AT: &str = "rbuild-at";
/// How long a deletion intent stands before waiters take its collector for dead.
pub const INTENT_TTL: Duration = Duration::from_secs(30);
/// How long a presigned blob URL stays valid.
const REDIRECT_EXPIRY: Duration = Duration::from_secs(20 * 60);
/// The most keys one ListObjectsV2 returns.
const LIST_MAX: usize = 1000;

/// Blobs and staged uploads in an S3 bucket.
#[derive(Clone)]
pub struct S3BlobStore {
    client: Client,
    /// Every key starts with this: empty, or ending in `/`.
    prefix: String,
    redirect: bool,
}

impl S3BlobStore {
    /// A store on the bucket `config` names. Nothing is sent yet:
    /// [`health`](BlobStore::health) tells whether the bucket answers.
    pub fn open(config: &S3Config) -> Result<S3BlobStore, String> {
        let bundle = std::env::var_os("AWS_CA_BUNDLE").map(std::path::PathBuf::from);
        let tls = crate::tls::client_config(bundle.as_deref()).map_err(|e| e.to_string())?;
        let prefix = match config.prefix.trim_matches('/') {
            "" => String::new(),
            prefix => format!("{prefix}/"),
        };
        Ok(S3BlobStore {
            client: Client::new(config, tls)?,
            prefix,
            redirect: config.redirect,
        })
    }

    fn blob_key(&self, digest: &Digest) -> String {
        let hex = digest.hex();
        format!(
            "{}blobs/{}/{}/{hex}",
            self.prefix,
            digest.algorithm().name(),
            &hex[..2]
        )
    }

    fn touched_key(&self, digest: &Digest) -> String {
        format!(
            "{}touched/{}/{}",
            self.prefix,
            digest.algorithm().name(),
            digest.hex()
        )
    }

    /// Where the intents to delete `digest` are listed.
    fn intents_prefix(&self, digest: &Digest) -> String {
        format!(
            "{}deleting/{}/{}/",
            self.prefix,
            digest.algorithm().name(),
            digest.hex()
        )
    }

    /// A key for one collector's intent to delete `digest`, written at `millis`.
    fn intent_key(&self, digest: &Digest, millis: &str) -> String {
        format!("{}{millis}-{}", self.intents_prefix(digest), uuid::Uuid::new_v4())
    }

    /// The digest a blob key names.
    fn key_digest(&self, key: &str) -> Option<Digest> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix("blobs/")?;
        let mut parts = rest.split('/');
        let (algorithm, _, hex) = (parts.next()?, parts.next()?, parts.next()?);
        Digest::from_parts(Algorithm::from_name(algorithm)?, hex).ok()
    }

    /// Stores a blob with `store`, then makes sure no collector deleted it meanwhile (see the
    /// module docs): while an intent stands, wait; if the blob went, store it again.
    async fn store_settled<F, Fut>(&self, digest: &Digest, store: F) -> StorageResult<()>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = StorageResult<()>>,
    {
        loop {
            store().await?;
            if !self.await_no_intent(digest).await?
                || self.client.head(&self.blob_key(digest), AT).await?.is_some()
            {
                return Ok(());
            }
        }
    }

    /// Waits while any collector's intent to delete `digest` stands; `true` if there was one.
    /// Intents of dead collectors (older than [`INTENT_TTL`]) are removed on the way: nothing
    /// else would, now that each collector's key is its own.
    async fn await_no_intent(&self, digest: &Digest) -> StorageResult<bool> {
        let prefix = self.intents_prefix(digest);
        let mut waited = false;
        let mut pause = Duration::from_millis(20);
        loop {
            let listing = self.client.list(&prefix, None, None, LIST_MAX).await?;
            let (standing, dead): (Vec<_>, Vec<_>) = listing.objects.into_iter().partition(|intent| {
                let written = intent.key[prefix.len()..].split('-').next();
                at(written) + INTENT_TTL >= SystemTime::now()
            });
            for intent in dead {
                self.client.delete(&intent.key).await?;
            }
            if standing.is_empty() {
                break;
            }
            waited = true;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        Ok(waited)
    }

    /// Collects the blobs listed under the prefix after `after`, up to `want` of them.
    async fn list_blobs(&self, after: Option<&str>, want: usize) -> StorageResult<Vec<BlobInfo>> {
        let prefix = format!("{}blobs/", self.prefix);
        let start = after.map(|after| {
            let (algorithm, hex) = after.split_once(':').unwrap_or((after, ""));
            format!("{prefix}{algorithm}/{}/{hex}", hex.get(..2).unwrap_or(hex))
        });
        let mut found = Vec::new();
        let mut continuation = None;
        loop {
            let max = (want - found.len()).clamp(1, LIST_MAX);
            let listing = self
                .client
                .list(&prefix, start.as_deref(), continuation.as_deref(), max)
                .await?;
            found.extend(listing.objects.into_iter().filter_map(|object| {
                Some(BlobInfo {
                    digest: self.key_digest(&object.key)?,
                    size: object.size,
                    touched: object.modified,
                })
            }));
            continuation = listing.next;
            if continuation.is_none() || found.len() >= want {
                return Ok(found);
            }
        }
    }
}

/// Now, as the `rbuild-at` value.
fn millis_now() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        .to_string()
}

/// An `rbuild-at` value as a time (the epoch when absent or unreadable).
fn at(meta: Option<&str>) -> SystemTime {
    let millis = meta.and_then(|m| m.parse().ok()).unwrap_or(0);
    UNIX_EPOCH + Duration::from_millis(millis)
}

impl BlobStore for S3BlobStore {
    fn backend(&self) -> &'static str {
        client::BACKEND
    }

    async fn health(&self) -> StorageResult<()> {
        self.client.head_bucket().await
    }

    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        Ok(self
            .client
            .head(&self.blob_key(digest), AT)
            .await?
            .map(|h| h.size))
    }

    async fn read(&self, digest: &Digest, range: Range<u64>) -> StorageResult<ByteStream> {
        if range.is_empty() {
            return match self.stat(digest).await? {
                Some(_) => Ok(Box::pin(futures_util::stream::empty())),
                None => Err(StorageError::BlobUnknown),
            };
        }
        let response = self
            .client
            .get(&self.blob_key(digest), Some((range.start, range.end)))
            .await?
            .ok_or(StorageError::BlobUnknown)?;
        Ok(Box::pin(response.bytes_stream().map_err(std::io::Error::other)))
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> StorageResult<()> {
        let actual = Digest::of(digest.algorithm(), &bytes);
        if actual != *digest {
            return Err(StorageError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let key = self.blob_key(digest);
        self.store_settled(digest, || {
            self.client.put(&key, bytes.clone(), (AT, millis_now()))
        })
        .await
    }

    async fn delete(&self, digest: &Digest) -> StorageResult<bool> {
        if self.stat(digest).await?.is_none() {
            return Ok(false);
        }
        self.client.delete(&self.blob_key(digest)).await?;
        self.client.delete(&self.touched_key(digest)).await?;
        Ok(true)
    }

    async fn upload_create(&self, id: &UploadId) -> StorageResult<()> {
        self.save_state(id, &upload::UploadState::default(), &[]).await
    }

    async fn upload_append(&self, id: &UploadId, body: ByteStream, check: AppendCheck) -> StorageResult<u64> {
        self.append(id, body, check).await
    }

    async fn upload_size(&self, id: &UploadId) -> StorageResult<u64> {
        Ok(self.load_state(id).await?.0.size)
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> StorageResult<u64> {
        let (state, tail) = self.verified(id, digest).await?;
        let key = self.blob_key(digest);
        if !self.touch(digest).await? {
            if state.parts.is_empty() {
                self.store_settled(digest, || self.client.put(&key, tail.clone(), (AT, millis_now())))
                    .await?;
            } else {
                let data = self.assemble(id, &state, tail).await?;
                self.store_settled(digest, || self.place(&data, &key, state.size))
                    .await?;
            }
        }
        // Aborting a completed multipart upload is a no-op; one left open when the blob was
        // already stored would keep its parts (and their bytes) in the bucket.
        self.discard(id, state.multipart.as_deref()).await?;
        Ok(state.size)
    }

    async fn upload_cancel(&self, id: &UploadId) -> StorageResult<()> {
        match self.load_state(id).await {
            Ok((state, _)) => self.discard(id, state.multipart.as_deref()).await,
            Err(StorageError::UploadUnknown) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn staged_uploads(&self) -> StorageResult<Vec<(UploadId, SystemTime)>> {
        let prefix = format!("{}uploads/", self.prefix);
        let mut staged = Vec::new();
        let mut continuation = None;
        loop {
            let listing = self
                .client
                .list(&prefix, None, continuation.as_deref(), LIST_MAX)
                .await?;
            staged.extend(listing.objects.into_iter().filter_map(|object| {
                let id = object.key.strip_prefix(&prefix)?.strip_suffix("/state")?;
                Some((UploadId::parse(id)?, object.modified))
            }));
            continuation = listing.next;
            if continuation.is_none() {
                return Ok(staged);
            }
        }
    }

    async fn blobs(&self, page: &PageRequest) -> StorageResult<Page<BlobInfo>> {
        let items = self.list_blobs(page.after.as_deref(), page.limit + 1).await?;
        Ok(Page::first(items, page.limit))
    }

    async fn blob_info(&self, digest: &Digest) -> StorageResult<Option<BlobInfo>> {
        let (blob, touched) = (self.blob_key(digest), self.touched_key(digest));
        let (blob, touched) = tokio::join!(self.client.head(&blob, AT), self.client.head(&touched, AT));
        let Some(blob) = blob? else { return Ok(None) };
        let touched = touched?.map(|t| at(t.meta.as_deref()));
        Ok(Some(BlobInfo {
            digest: digest.clone(),
            size: blob.size,
            touched: at(blob.meta.as_deref()).max(touched.unwrap_or(UNIX_EPOCH)),
        }))
    }

    async fn touch(&self, digest: &Digest) -> StorageResult<bool> {
        let blob = self.blob_key(digest);
        if self.client.head(&blob, AT).await?.is_none() {
            return Ok(false);
        }
        let marker = self.touched_key(digest);
        self.client.put(&marker, Bytes::new(), (AT, millis_now())).await?;
        self.await_no_intent(digest).await?;
        if self.client.head(&blob, AT).await?.is_some() {
            return Ok(true);
        }
        self.client.delete(&marker).await?;
        Ok(false)
    }

    async fn delete_if_idle(&self, digest: &Digest, cutoff: SystemTime) -> StorageResult<Option<u64>> {
        let idle = |info: Option<BlobInfo>| info.filter(|i| i.touched < cutoff);
        if idle(self.blob_info(digest).await?).is_none() {
            return Ok(None);
        }
        let started = SystemTime::now();
        let written = millis_now();
        let intent = self.intent_key(digest, &written);
        self.client.put(&intent, Bytes::new(), (AT, written)).await?;
        let decided = async {
            let Some(info) = idle(self.blob_info(digest).await?) else {
                return Ok(None);
            };
            if started.elapsed().unwrap_or(Duration::MAX) > INTENT_TTL / 2 {
                return Ok(None);
            }
            self.client.delete(&self.blob_key(digest)).await?;
            self.client.delete(&self.touched_key(digest)).await?;
            Ok(Some(info.size))
        }
        .await;
        self.client.delete(&intent).await?;
        decided
    }

    async fn redirect(&self, digest: &Digest) -> StorageResult<Option<String>> {
        Ok(self
            .redirect
            .then(|| self.client.presign(&self.blob_key(digest), REDIRECT_EXPIRY)))
    }
}
