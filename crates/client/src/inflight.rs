//! Blobs being sent to one registry right now, shared by every push to it through one
//! [`Client`](crate::Client): a push that needs a blob another push is sending waits for that
//! one to finish, then mounts the blob from the repository it went to (or finds it there)
//! rather than sending the same bytes a second time — an image and its build cache pushed at
//! once share most of their layers.

use std::collections::HashMap;
use std::sync::Mutex;

use rbuild_oci::{Digest, RepositoryName};
use tokio::sync::watch;

/// The blobs in flight to one registry, each with what its sender will say when done.
#[derive(Default)]
pub(crate) struct InFlight {
    sending: Mutex<HashMap<Digest, watch::Receiver<Option<RepositoryName>>>>,
}

/// The right to send one blob; others wait until it is dropped.
pub(crate) struct Sending<'a> {
    in_flight: &'a InFlight,
    digest: Digest,
    done: watch::Sender<Option<RepositoryName>>,
}

impl InFlight {
    /// Waits until no other push is sending `digest`, then takes the turn to send it; also
    /// returns the repository the last sender put it in, if one just did.
    pub async fn turn(&self, digest: &Digest) -> (Sending<'_>, Option<RepositoryName>) {
        let mut sent_to = None;
        loop {
            let waiting = {
                let mut sending = match self.sending.lock() {
                    Ok(sending) => sending,
                    Err(poisoned) => poisoned.into_inner(),
                };
                match sending.get(digest) {
                    Some(other) => other.clone(),
                    None => {
                        let (done, receiver) = watch::channel(None);
                        sending.insert(digest.clone(), receiver);
                        let turn = Sending {
                            in_flight: self,
                            digest: digest.clone(),
                            done,
                        };
                        return (turn, sent_to);
                    }
                }
            };
            // A sender that gave up drops its channel without naming a repository: the next
            // one tries for itself.
            sent_to = waiting_for(waiting).await;
        }
    }
}

/// The repository the blob went to, once its sender is done; `None` when it failed.
async fn waiting_for(mut receiver: watch::Receiver<Option<RepositoryName>>) -> Option<RepositoryName> {
    let sent = receiver.wait_for(Option::is_some).await.ok()?;
    sent.clone()
}

impl Sending<'_> {
    /// Tells the pushes waiting for the blob that it is now in `repository`.
    pub fn done(self, repository: &RepositoryName) {
        // Out of the map first, so that a push woken by this finds the turn free.
        self.release();
        self.done.send_replace(Some(repository.clone()));
    }

    /// Only the holder of the turn removes its digest (none is inserted while it is there).
    fn release(&self) {
        let mut sending = match self.in_flight.sending.lock() {
            Ok(sending) => sending,
            Err(poisoned) => poisoned.into_inner(),
        };
        sending.remove(&self.digest);
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.release();
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
}
