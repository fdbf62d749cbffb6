//! Blob downloads from an upstream: one per blob however many clients ask at once, through
//! whichever repositories, streamed to the first client while it is stored, and stored only
//! once its digest checks out.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http::StatusCode;
use rbuild_client::upstream::UpstreamBlob;
use rbuild_oci::{Digest, RepositoryName};
use tokio::sync::{mpsc, watch};

use super::ProxyMetrics;
use crate::error::{ErrorCode, RegistryError};
use crate::storage::{AppendCheck, BlobStore, ByteStream, MetadataStore, StorageError, UploadId};

/// How a download ended: stored, or the error its leader answered (which the requests that
/// waited for it in the same repository answer too).
pub(crate) type Outcome = Result<(), RegistryError>;

/// Chunks queued between a download and the client it streams to: a slow client slows the
/// download rather than letting it fill memory.
const CLIENT_QUEUE: usize = 32;

/// One download in flight: the repository it is stored into, and how to learn its outcome.
struct Flight {
    leader: RepositoryName,
    done: watch::Receiver<Option<Outcome>>,
}

/// The downloads in flight, by digest: a blob is the same bytes whichever repository (or
/// upstream) it comes through, so one download serves them all.
#[derive(Default)]
pub(crate) struct Flights {
    running: Mutex<HashMap<Digest, Flight>>,
}

/// What a request does about a blob it lacks.
pub(crate) enum Role {
    /// Nobody is fetching it: this request does.
    Leader(Landing),
    /// Another request is fetching it into `leader`: wait for that one. Its outcome settles
    /// nothing for another repository: a blob it stored must still be confirmed upstream for
    /// the follower's own repository, and its failure may be its repository's alone.
    Follower {
        /// The repository the download is stored into.
        leader: RepositoryName,
        /// Where its outcome arrives.
        waiting: watch::Receiver<Option<Outcome>>,
    },
}

/// The leader's duty to say how its download ended; dropping it unfinished tells the followers
/// the download was abandoned (they then try again).
pub(crate) struct Landing {
    flights: Arc<Flights>,
    digest: Digest,
    done: watch::Sender<Option<Outcome>>,
}

impl Flights {
    /// Joins the download of `digest`, or starts one into `name`.
    pub(crate) fn join(self: &Arc<Self>, name: &RepositoryName, digest: &Digest) -> Role {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = running.get(digest) {
            return Role::Follower {
                leader: flight.leader.clone(),
                waiting: flight.done.clone(),
            };
        }
        let (done, waiting) = watch::channel(None);
        running.insert(
            digest.clone(),
            Flight {
                leader: name.clone(),
                done: waiting,
            },
        );
        Role::Leader(Landing {
            flights: self.clone(),
            digest: digest.clone(),
            done,
        })
    }
}

impl Landing {
    /// A receiver for this download's outcome, as followers have.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Outcome>> {
        self.done.subscribe()
    }

    /// Ends the flight: later requests look in storage again, waiting ones learn `outcome`.
    pub(crate) fn finish(self, outcome: Outcome) {
        self.done.send_replace(Some(outcome));
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut running = self.flights.running.lock().unwrap_or_else(|e| e.into_inner());
        running.remove(&self.digest);
    }
}

/// Waits for a download: `None` if its leader abandoned it.
pub(crate) async fn wait(mut waiting: watch::Receiver<Option<Outcome>>) -> Option<Outcome> {
    let outcome = waiting.wait_for(Option::is_some).await.ok()?;
    outcome.clone()
}

/// The error for a blob whose download from `upstream` failed after it began.
fn download_failed(upstream: &str, digest: &Digest, reason: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUnknown,
        format!("blob {digest} is not cached and fetching it from {upstream} failed: {reason}"),
    )
    .with_status(StatusCode::BAD_GATEWAY)
}

/// One blob coming from the upstream into local storage.
pub(crate) struct Download<B, M> {
    pub(crate) blobs: B,
    pub(crate) metadata: M,
    /// The local repository it is stored into.
    pub(crate) name: RepositoryName,
    pub(crate) digest: Digest,
    /// The upstream's URL, for the error a failed download answers.
    pub(crate) upstream: String,
    pub(crate) metrics: ProxyMetrics,
}

impl<B: BlobStore, M: MetadataStore> Download<B, M> {
    /// Stores the upstream's `blob` in a task of its own, which finishes `landing`.
    /// With `to_client`, also returns the body for the client that asked: the bytes as they
    /// arrive, ending when the upstream's answer ends (not when the blob is stored: the client
    /// does not wait for the digest check and the fsync) and ending in an error if it breaks
    /// off. Content with the wrong digest reaches that client whole, which rejects it as
    /// clients do; it is never stored. The task goes on if the client goes away.
    pub(crate) fn spawn(self, landing: Landing, blob: UpstreamBlob, to_client: bool) -> Option<ByteStream> {
        let (client, body) = if to_client {
            let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CLIENT_QUEUE);
            let body: ByteStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            }));
            (Some(tx), Some(body))
        } else {
            (None, None)
        };
        tokio::spawn(async move {
            let outcome = self.land(blob, client).await;
            landing.finish(outcome);
        });
        body
    }

    async fn land(self, blob: UpstreamBlob, client: Option<mpsc::Sender<io::Result<Bytes>>>) -> Outcome {
        let length = blob.length;
        // Taken (so dropped) when the upstream's answer ends or fails: that ends the client's.
        let client = Arc::new(Mutex::new(client));
        let tee = {
            let (chunks, end, metrics) = (client.clone(), client.clone(), self.metrics.clone());
            blob.body
                .then(move |item| {
                    let (client, metrics) = (chunks.clone(), metrics.clone());
                    async move {
                        match &item {
                            Ok(chunk) => {
                                metrics.fetched_bytes.inc_by(chunk.len() as u64);
                                // A client that went away no longer gets chunks; the blob is
                                // still stored for the next one.
                                let sender = lock(&client).clone();
                                if let Some(sender) = sender {
                                    let _ = sender.send(Ok(chunk.clone())).await;
                                }
                            }
                            Err(e) => fail_client(&client, e.to_string()).await,
                        }
                        item
                    }
                })
                .chain(futures_util::stream::poll_fn(move |_| {
                    lock(&end).take();
                    std::task::Poll::Ready(None)
                }))
        };
        let id = UploadId::new();
        let stored = async {
            self.blobs.upload_create(&id).await?;
            let check = AppendCheck {
                offset: Some(0),
                length,
            };
            self.blobs.upload_append(&id, Box::pin(tee), check).await?;
            self.blobs.upload_commit(&id, &self.digest).await?;
            self.metadata.link_blob(&self.name, &self.digest).await
        }
        .await;
        if let Err(e) = stored {
            let _ = self.blobs.upload_cancel(&id).await;
            let reason = failure(&e);
            self.metrics.upstream_errors.inc();
            tracing::warn!(
                "pull-through of {} into {}: {reason}; nothing was stored",
                self.digest,
                self.name
            );
            fail_client(&client, reason.clone()).await;
            return Err(download_failed(&self.upstream, &self.digest, &reason));
        }
        Ok(())
    }
}

type ClientSender = Arc<Mutex<Option<mpsc::Sender<io::Result<Bytes>>>>>;

fn lock(client: &ClientSender) -> std::sync::MutexGuard<'_, Option<mpsc::Sender<io::Result<Bytes>>>> {
    client.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends the client's body (if it has not ended) with an error, so its connection is cut
/// rather than closed as if the blob were whole.
async fn fail_client(client: &ClientSender, reason: String) {
    let sender = lock(client).take();
    if let Some(sender) = sender {
        let _ = sender.send(Err(io::Error::other(reason))).await;
    }
}

/// What went wrong, worded for the clients that waited.
fn failure(e: &StorageError) -> String {
    match e {
        StorageError::DigestMismatch { actual, .. } => {
            format!("the upstream sent content with digest {actual}")
        }
        StorageError::SizeMismatch { expected, received } => {
            format!("the upstream announced {expected} bytes and sent {received}")
        }
        StorageError::Body(e) => format!("the upstream's answer broke off: {e}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (RepositoryName, Digest) {
        ("lib/app".parse().unwrap(), Digest::sha256_of(b"blob"))
    }

    fn cut_short() -> RegistryError {
        download_failed("http://upstream", &key().1, "cut short")
    }

    /// Flights with one download of [`key`] started: the flights, the key and its landing.
    fn one_started() -> (Arc<Flights>, RepositoryName, Digest, Landing) {
        let flights = Arc::new(Flights::default());
        let (name, digest) = key();
        let Role::Leader(landing) = flights.join(&name, &digest) else {
            panic!("the first request leads")
        };
        (flights, name, digest, landing)
    }

    #[tokio::test]
    async fn one_leader_and_followers_that_learn_its_outcome() {
        let (flights, name, digest, landing) = one_started();
        let followers: Vec<_> = (0..3)
            .map(|_| match flights.join(&name, &digest) {
                Role::Follower { leader, waiting } => {
                    assert_eq!(leader, name);
                    tokio::spawn(wait(waiting))
                }
                Role::Leader(_) => panic!("a second leader"),
            })
            .collect();
        assert!(
            matches!(flights.join(&name, &Digest::sha256_of(b"other")), Role::Leader(_)),
            "flights are per digest"
        );
        landing.finish(Err(cut_short()));
        for follower in followers {
            let outcome = follower.await.unwrap();
            let error = outcome.and_then(Result::err).expect("the leader's error");
            assert_eq!(error.status, StatusCode::BAD_GATEWAY);
            assert!(error.message.contains("cut short"), "{}", error.message);
        }
        assert!(
            matches!(flights.join(&name, &digest), Role::Leader(_)),
            "a finished flight is gone"
        );
    }

    #[tokio::test]
    async fn a_request_through_another_repository_follows_and_learns_whose_download_it_is() {
        let (flights, name, digest, landing) = one_started();
        let other: RepositoryName = "lib/other".parse().unwrap();
        let Role::Follower { leader, waiting } = flights.join(&other, &digest) else {
            panic!("one download per digest, whatever the repository")
        };
        assert_eq!(
            leader, name,
            "the follower knows the blob is stored for another repository"
        );
        landing.finish(Ok(()));
        assert!(matches!(wait(waiting).await, Some(Ok(()))));
        assert!(matches!(flights.join(&other, &digest), Role::Leader(_)));
    }

    #[tokio::test]
    async fn an_abandoned_flight_lets_followers_retry() {
        let flights = Arc::new(Flights::default());
        let (name, digest) = key();
        let landing = flights.join(&name, &digest);
        let Role::Follower { waiting, .. } = flights.join(&name, &digest) else {
            panic!("the second request follows")
        };
        drop(landing);
        assert!(wait(waiting).await.is_none());
        assert!(matches!(flights.join(&name, &digest), Role::Leader(_)));
    }
}
