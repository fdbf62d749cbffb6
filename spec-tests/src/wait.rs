//! Waiting for an event with a deadline: a test waits until it sees what it needs (a log line,
//! a file's size, a status), never for a fixed time that is too short on a busy machine and
//! too long on an idle one.

use std::time::{Duration, Instant};

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(20);

/// Checks `condition` until it holds; fails the test, naming `what` it waited for, when
/// `timeout` passes first.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}
