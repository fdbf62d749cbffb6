//! Steps in flight. Builds that share a [`Builder`](crate::Builder) — the targets `rbuild
//! bake` builds at once, or two stages of one build — may reach the same cache key at the same
//! time (a base stage two targets share). The key is the step's identity: the same key is the
//! same work, whatever Dockerfile, stage or target it comes from. So the first to miss claims
//! the key and builds; the others wait for it and then find its result in the cache, as if they
//! had come after it.
//!
//! Keyed by cache key rather than by stage: a stage's identity is only known step by step (its
//! steps' keys), two targets may share some steps of a stage and not the rest, and the cache
//! lookup that follows the wait is the one every step already makes.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::keys::CacheKey;

/// The keys being built now.
#[derive(Default)]
pub(crate) struct InFlight {
    keys: Mutex<HashSet<CacheKey>>,
    released: Condvar,
}

/// What [`InFlight::find_or_claim`] gives.
pub(crate) enum Flight<'a, T> {
    /// The result was there, or another build made it while this one waited.
    Found(T),
    /// This build is to make the result; others asking for the key wait until it is dropped.
    Claimed(Claim<'a>),
}

/// The right to build one key: released (and the builds waiting for it woken) when dropped,
/// whether the step succeeded or not.
pub(crate) struct Claim<'a> {
    flights: &'a InFlight,
    key: CacheKey,
}

impl InFlight {
    fn keys(&self) -> MutexGuard<'_, HashSet<CacheKey>> {
        self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `find`'s result for `key`; else, if another build is making it, `find`'s result once that
    /// build is done; else the claim to make it. Blocks while it waits (steps run on blocking
    /// threads). A build that failed leaves nothing to find: the next waiter claims the key.
    pub fn find_or_claim<T>(&self, key: &CacheKey, find: impl Fn() -> Option<T>) -> Flight<'_, T> {
        if let Some(found) = find() {
            return Flight::Found(found);
        }
        loop {
            let mut keys = self.keys();
            let waited = keys.contains(key);
            while keys.contains(key) {
                keys = self
                    .released
                    .wait(keys)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if !waited {
                keys.insert(key.clone());
                drop(keys);
                let claim = Claim {
                    flights: self,
                    key: key.clone(),
                };
                // Another build may have finished the key between the first look and the claim.
                return match find() {
                    Some(found) => Flight::Found(found),
                    None => Flight::Claimed(claim),
                };
            }
            drop(keys);
            if let Some(found) = find() {
                return Flight::Found(found);
            }
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.flights.keys().remove(&self.key);
        self.flights.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use rbuild_oci::Digest;

    use super::*;

    #[test]
    fn two_concurrent_solves_of_one_key_run_the_step_once() {
        let flights = InFlight::default();
        let key = CacheKey(Digest::sha256_of(b"step"));
        let cache: Mutex<Option<&str>> = Mutex::new(None);
        let find = || *cache.lock().unwrap();
        let runs = AtomicUsize::new(0);
        let other_looked = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let Flight::Claimed(claim) = flights.find_or_claim(&key, find) else {
                panic!("an empty cache has nothing to find");
            };
            let other = scope.spawn(|| {
                let looking = || {
                    other_looked.fetch_add(1, Ordering::SeqCst);
                    find()
                };
                match flights.find_or_claim(&key, looking) {
                    Flight::Found(result) => result,
                    Flight::Claimed(_) => {
                        runs.fetch_add(1, Ordering::SeqCst);
                        "built twice"
                    }
                }
            });
            // The other solve has missed the cache while this one holds the key: it is the
            // concurrent solve the claim is for.
            let deadline = Instant::now() + Duration::from_secs(10);
            while other_looked.load(Ordering::SeqCst) == 0 {
                assert!(Instant::now() < deadline, "the other solve never looked");
                std::thread::yield_now();
            }
            runs.fetch_add(1, Ordering::SeqCst);
            *cache.lock().unwrap() = Some("layer");
            drop(claim);
            assert_eq!(other.join().unwrap(), "layer");
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failed_claim_passes_the_key_to_a_waiter() {
        let flights = InFlight::default();
        let key = CacheKey(Digest::sha256_of(b"step"));
        let Flight::Claimed(failed) = flights.find_or_claim(&key, || None::<()>) else {
            panic!("nothing to find");
        };
        drop(failed);
        assert!(matches!(
            flights.find_or_claim(&key, || None::<()>),
            Flight::Claimed(_)
        ));
    }
}
