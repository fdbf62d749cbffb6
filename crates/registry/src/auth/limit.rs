//! Failed-login limiting per client address (`[auth.login_limit]`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::LoginLimit;

/// The most addresses tracked; beyond it, expired windows are dropped first, then all.
const MAX_TRACKED: usize = 65536;

/// Counts failed logins per address in fixed windows.
#[derive(Debug)]
pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<Option<IpAddr>, (u32, Instant)>>,
}

impl LoginLimiter {
    /// A limiter with `limit`'s settings.
    pub fn new(limit: &LoginLimit) -> LoginLimiter {
        LoginLimiter {
            max_failures: limit.max_failures.max(1),
            window: Duration::from_secs(limit.window_secs.max(1)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(wait)` while `addr` has used up its failures for the current window.
    pub fn blocked(&self, addr: Option<IpAddr>) -> Option<Duration> {
        let failures = self.failures.lock().ok()?;
        let (count, started) = failures.get(&addr)?;
        let elapsed = started.elapsed();
        (*count >= self.max_failures && elapsed < self.window).then(|| self.window - elapsed)
    }

    /// Records a failed login from `addr`.
    pub fn failed(&self, addr: Option<IpAddr>) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() >= MAX_TRACKED {
            let window = self.window;
            failures.retain(|_, (_, started)| started.elapsed() < window);
            if failures.len() >= MAX_TRACKED {
                failures.clear();
            }
        }
        let entry = failures.entry(addr).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Forgets `addr`'s failures after a successful login.
    pub fn succeeded(&self, addr: Option<IpAddr>) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let limiter = LoginLimiter::new(&LoginLimit {
            max_failures: 2,
            window_secs: 60,
        });
        let a = Some(IpAddr::from([127, 0, 0, 1]));
        let b = Some(IpAddr::from([127, 0, 0, 2]));
        assert!(limiter.blocked(a).is_none());
        limiter.failed(a);
        assert!(limiter.blocked(a).is_none());
        limiter.failed(a);
        assert!(
            limiter
                .blocked(a)
                .is_some_and(|wait| wait <= Duration::from_secs(60))
        );
        assert!(limiter.blocked(b).is_none());
        limiter.succeeded(a);
        assert!(limiter.blocked(a).is_none());
    }
}
