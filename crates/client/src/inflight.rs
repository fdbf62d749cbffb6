//! Blobs sent to one registry through one [`Client`](crate::Client), shared by every push
//! to it: a push that needs a blob another push is sending waits for that one to finish, and
//! a push that needs a blob another push already sent learns where it went; either then mounts
//! the blob from that repository (or finds it there) rather than sending the same bytes a
//! second time — an image and its build cache pushed at once share most of their layers, and
//! which of the two reaches a shared layer first is a race.

use std::collections::HashMap;
use std::sync::Mutex;

use rbuild_oci::{Digest, RepositoryName};
use tokio::sync::watch;

/// The blobs in flight to one registry, each with what its sender will say when done, and
/// the repository each blob sent through this client went to.
#[derive(Default)]
pub(crate) struct InFlight {
    blobs: Mutex<HashMap<Digest, Blob>>,
}

/// Where one blob stands with the registry.
enum Blob {
    /// A push is sending it; the receiver names the repository once it is there.
    Sending(watch::Receiver<Option<RepositoryName>>),
    /// A push put it in this repository.
    Sent(RepositoryName),
}

/// The right to send one blob; others wait until it is dropped.
pub(crate) struct Sending<'a> {
    in_flight: &'a InFlight,
    digest: Digest,
    done: watch::Sender<Option<RepositoryName>>,
    /// Where an earlier push put the blob, restored if this one gives up.
    previous: Option<RepositoryName>,
}

impl InFlight {
    /// Waits until no other push is sending `digest`, then takes the turn to send it; also
    /// returns the repository an earlier sender put it in, if one did.
    pub async fn turn(&self, digest: &Digest) -> (Sending<'_>, Option<RepositoryName>) {
        let mut sent_to = None;
        loop {
            let waiting = {
                let mut blobs = self.blobs();
                let previous = match blobs.get(digest) {
                    Some(Blob::Sending(other)) => Err(other.clone()),
                    Some(Blob::Sent(repository)) => Ok(Some(repository.clone())),
                    None => Ok(None),
                };
                match previous {
                    Err(other) => other,
                    Ok(previous) => {
                        let (done, receiver) = watch::channel(None);
                        blobs.insert(digest.clone(), Blob::Sending(receiver));
                        let turn = Sending {
                            in_flight: self,
                            digest: digest.clone(),
                            done,
                            previous: previous.clone(),
                        };
                        return (turn, sent_to.or(previous));
                    }
                }
            };
            // A sender that gave up drops its channel without naming a repository: the next
            // one tries for itself.
            sent_to = waiting_for(waiting).await;
        }
    }

    fn blobs(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Blob>> {
        match self.blobs.lock() {
            Ok(blobs) => blobs,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// The repository the blob went to, once its sender is done; `None` when it failed.
async fn waiting_for(mut receiver: watch::Receiver<Option<RepositoryName>>) -> Option<RepositoryName> {
    let sent = receiver.wait_for(Option::is_some).await.ok()?;
    sent.clone()
}

impl Sending<'_> {
    /// Tells the pushes waiting for the blob, and those that ask later, that it is now in
    /// `repository`.
    pub fn done(self, repository: &RepositoryName) {
        // Recorded first, so that a push woken by this finds the turn free.
        self.in_flight
            .blobs()
            .insert(self.digest.clone(), Blob::Sent(repository.clone()));
        self.done.send_replace(Some(repository.clone()));
    }
}

impl Drop for Sending<'_> {
    /// A sender that gave up leaves the blob as it found it: unsent, or where an earlier push
    /// put it (only the holder of the turn changes its digest's entry).
    fn drop(&mut self) {
        let mut blobs = self.in_flight.blobs();
        if matches!(blobs.get(&self.digest), Some(Blob::Sending(_))) {
            match self.previous.take() {
                Some(repository) => blobs.insert(self.digest.clone(), Blob::Sent(repository)),
                None => blobs.remove(&self.digest),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_sender_waits_and_learns_where_the_blob_went() {
        let in_flight = InFlight::default();
        let digest = Digest::sha256_of(b"layer");
        let repository: RepositoryName = "app/image".parse().unwrap();
        let (first, before) = in_flight.turn(&digest).await;
        assert_eq!(before, None);
        let second = in_flight.turn(&digest);
        let finish = async {
            tokio::task::yield_now().await;
            first.done(&repository);
        };
        let ((_, sent_to), ()) = tokio::join!(second, finish);
        assert_eq!(sent_to, Some(repository));
    }

    #[tokio::test]
    async fn a_sender_that_gives_up_leaves_the_turn_to_the_next() {
        let in_flight = InFlight::default();
        let digest = Digest::sha256_of(b"layer");
        let (first, _) = in_flight.turn(&digest).await;
        let second = in_flight.turn(&digest);
        let give_up = async {
            tokio::task::yield_now().await;
            drop(first);
        };
        let ((_, sent_to), ()) = tokio::join!(second, give_up);
        assert_eq!(sent_to, None);
        let other = Digest::sha256_of(b"other");
        let (_both, none) = in_flight.turn(&other).await;
        assert_eq!(none, None);
    }

    #[tokio::test]
    async fn a_later_sender_learns_where_an_earlier_one_put_the_blob() {
        let in_flight = InFlight::default();
        let digest = Digest::sha256_of(b"layer");
        let repository: RepositoryName = "app/image".parse().unwrap();
        let (first, _) = in_flight.turn(&digest).await;
        first.done(&repository);
        let (_, sent_to) = in_flight.turn(&digest).await;
        assert_eq!(sent_to, Some(repository));
    }
}
