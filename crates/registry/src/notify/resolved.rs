//! The tags clients just resolved, so that one pull is one pull event.
//!
//! docker and containerd (and so Kubernetes) pull in two steps: `HEAD` the manifest by tag
//! to learn its digest, then `GET` it by digest, unless they hold that image already. The
//! `HEAD` is reported as the pull (it names the tag, as distribution reports it) and is
//! remembered here for a few seconds; the `GET` by digest that follows from the same client
//! address for that repository and digest is the same pull and is not reported again. What
//! is remembered is per process: behind a load balancer the two requests may reach different
//! replicas, and each then reports a pull.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a resolution is remembered.
const REMEMBER_FOR: Duration = Duration::from_secs(10);

/// The most resolutions remembered; more within [`REMEMBER_FOR`] forget the older ones.
const CAPACITY: usize = 4096;

/// Who resolved which digest in which repository.
type Key = (String, String, String);

/// Recent tag resolutions, by client, repository and digest.
#[derive(Default)]
pub(super) struct RecentTags {
    entries: Mutex<HashMap<Key, Instant>>,
}

impl RecentTags {
    /// Notes that `client` resolved a tag to `digest` in `repository`.
    pub fn remember(&self, client: &str, repository: &str, digest: &str) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        if entries.len() >= CAPACITY {
            entries.retain(|_, at| now.duration_since(*at) < REMEMBER_FOR);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert((client.to_owned(), repository.to_owned(), digest.to_owned()), now);
    }

    /// Whether `client` resolved a tag to `digest` in `repository` within the last few
    /// seconds; the resolution is forgotten, so a second `GET` is a pull of its own.
    pub fn take(&self, client: &str, repository: &str, digest: &str) -> bool {
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        let key = (client.to_owned(), repository.to_owned(), digest.to_owned());
        entries.remove(&key).is_some_and(|at| at.elapsed() < REMEMBER_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolution_is_taken_once_by_the_same_client_only() {
        let recent = RecentTags::default();
        recent.remember("10.0.0.1", "team/app", "sha256:a");
        assert!(!recent.take("10.0.0.2", "team/app", "sha256:a"));
        assert!(!recent.take("10.0.0.1", "team/other", "sha256:a"));
        assert!(!recent.take("10.0.0.1", "team/app", "sha256:b"));
        assert!(recent.take("10.0.0.1", "team/app", "sha256:a"));
        assert!(!recent.take("10.0.0.1", "team/app", "sha256:a"), "taken once");
    }

    #[test]
    fn memory_stays_bounded() {
        let recent = RecentTags::default();
        for i in 0..CAPACITY + 10 {
            recent.remember(&i.to_string(), "r", "d");
        }
        assert!(recent.entries.lock().unwrap().len() <= CAPACITY);
        assert!(recent.take(&(CAPACITY + 9).to_string(), "r", "d"));
    }
}
