//! Stopping what a build runs once the build can no longer succeed.
//!
//! When one stage of a build fails — or one target of a bake — the commands still running for
//! the others are wasted work, and the user waits for them before seeing the error. BuildKit
//! cancels them; so does rbuild. A [`Stop`] is shared by everything that should end together:
//! [`Stop::stop`] has each [`Runtime`](crate::Runtime) holding it kill its running containers,
//! and tells the builder to start no further step. Stops nest ([`Stop::child`]): one attempt
//! of a build stops its own stages when one fails, and a bake stops every build at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// A signal to stop, shared by its clones.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    stopped: Mutex<bool>,
    /// Woken when the signal is given, and when a watched run ends.
    changed: Condvar,
    /// Stopped with this one.
    children: Mutex<Vec<Weak<Shared>>>,
}

impl Stop {
    /// A signal not given yet.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// A signal given with this one (and on its own, without this one).
    pub fn child(&self) -> Stop {
        let child = Stop::new();
        let mut children = self
            .0
            .children
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        children.retain(|c| c.strong_count() > 0);
        children.push(Arc::downgrade(&child.0));
        drop(children);
        // Given before the child was listed: the child starts given.
        if self.is_stopped() {
            child.stop();
        }
        child
    }

    /// Gives the signal, and its children's: every run watching one is killed, and
    /// [`Stop::is_stopped`] says so.
    pub fn stop(&self) {
        *self.lock() = true;
        self.0.changed.notify_all();
        let children = std::mem::take(
            &mut *self
                .0
                .children
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for child in children.iter().filter_map(Weak::upgrade) {
            Stop(child).stop();
        }
    }

    /// Whether the signal was given.
    pub fn is_stopped(&self) -> bool {
        *self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        self.0
            .stopped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Until `done` is set (by [`Stop::end`]): once the signal is given, calls `kill` now and
    /// again every `every` — a container asked to die before its runtime made it is asked again.
    pub(crate) fn watch(&self, done: &AtomicBool, every: Duration, mut kill: impl FnMut()) {
        let mut stopped = self.lock();
        while !done.load(Ordering::Acquire) {
            if *stopped {
                drop(stopped);
                kill();
                stopped = self.lock();
                if done.load(Ordering::Acquire) {
                    break;
                }
                stopped = self
                    .0
                    .changed
                    .wait_timeout(stopped, every)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            } else {
                stopped = self
                    .0
                    .changed
                    .wait(stopped)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
    }

    /// Ends a [`Stop::watch`] over `done`.
    pub(crate) fn end(&self, done: &AtomicBool) {
        // Set under the lock, so that a watcher between its check and its wait cannot miss it.
        let _stopped = self.lock();
        done.store(true, Ordering::Release);
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn a_watch_ends_without_killing_when_its_run_ends_first() {
        let stop = Stop::new();
        let done = AtomicBool::new(false);
        let kills = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                stop.watch(&done, Duration::from_millis(10), || {
                    kills.fetch_add(1, Ordering::Relaxed);
                })
            });
            stop.end(&done);
        });
        assert_eq!(kills.load(Ordering::Relaxed), 0);
        assert!(!stop.is_stopped());
    }

    #[test]
    fn a_parent_stops_its_children_and_not_the_other_way() {
        let parent = Stop::new();
        let (first, second) = (parent.child(), parent.child());
        first.stop();
        assert!(!parent.is_stopped() && !second.is_stopped());
        parent.stop();
        assert!(second.is_stopped());
        assert!(
            parent.child().is_stopped(),
            "a child of a given stop starts given"
        );
    }

    #[test]
    fn once_stopped_a_watch_kills_again_until_its_run_ends() {
        let stop = Stop::new();
        let done = AtomicBool::new(false);
        let kills = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                stop.watch(&done, Duration::from_millis(5), || {
                    kills.fetch_add(1, Ordering::Relaxed);
                })
            });
            stop.clone().stop();
            while kills.load(Ordering::Relaxed) < 3 {
                std::thread::yield_now();
            }
            stop.end(&done);
        });
        assert!(stop.is_stopped());
        assert!(kills.load(Ordering::Relaxed) >= 3);
    }
}
