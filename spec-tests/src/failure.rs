//! A failed test's panics, said again after the server logs the harness prints on failure.
//!
//! CI reports the end of a failing test's output, and one registry's log is long enough to
//! push the assertion that failed out of it; the harness repeats the assertion last.

use std::collections::VecDeque;
use std::sync::{Mutex, Once};

/// How many of the latest panics are kept.
const KEPT: usize = 4;

/// The process's latest panics, each with its thread's name. Process-wide rather than per
/// thread: an assertion often fails in a thread the test spawned (a pusher, a puller), and
/// the test's own thread then only says that thread panicked.
static PANICS: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// Installs, once per process, a panic hook that remembers the latest panics and then
/// reports each as the hook before it did.
pub fn remember_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let said = format!("thread '{}' {info}", thread.name().unwrap_or("<unnamed>"));
            if let Ok(mut panics) = PANICS.lock() {
                if panics.len() == KEPT {
                    panics.pop_front();
                }
                panics.push_back(said);
            }
            previous(info);
        }));
    });
}

/// The latest panics of the process, oldest first, if [`remember_panics`] was installed
/// before them.
pub fn latest_panics() -> Vec<String> {
    PANICS
        .lock()
        .map(|p| p.iter().cloned().collect())
        .unwrap_or_default()
}
