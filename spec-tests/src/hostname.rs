//! A host name for the IPv6 loopback address, added to `/etc/hosts` for one test.
//!
//! docker treats every registry whose name resolves into 127.0.0.0/8 as insecure: it talks TLS
//! without checking the certificate and never reads `/etc/docker/certs.d`. A name for `::1`
//! is not in that range, so docker (and every other client) must verify the registry's
//! certificate against the CA the test installs. Traffic still never leaves the machine.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::tools::require;

const HOSTS: &str = "/etc/hosts";

/// Serialises edits of `/etc/hosts` between the tests of one process.
static EDITS: Mutex<()> = Mutex::new(());

/// How long Go programs (dockerd) trust their copy of `/etc/hosts` before looking again.
const GO_HOSTS_CACHE: Duration = Duration::from_millis(5500);

/// `::1 <name>` in `/etc/hosts` while this lives.
pub struct LoopbackName {
    name: String,
    added: Instant,
}

impl LoopbackName {
    /// Adds `::1 <tag>-<pid>.rbuild.test`; `None` (after [`require`]) when IPv6 loopback or a
    /// writable `/etc/hosts` (root) is missing.
    pub fn add(tag: &str) -> Option<LoopbackName> {
        let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
        if !require(
            "IPv6 loopback (::1)",
            ipv6,
            "enable IPv6 on the loopback interface",
        ) {
            return None;
        }
        // SAFETY: geteuid(2) has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !require(
            "root, to add a name for ::1 to /etc/hosts",
            root,
            "run the suite as root",
        ) {
            return None;
        }
        let name = format!("{tag}-{}.rbuild.test", std::process::id());
        let _guard = EDITS.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(HOSTS)
            .expect("open /etc/hosts for appending");
        let text = std::fs::read_to_string(HOSTS).unwrap_or_default();
        let separator = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        writeln!(file, "{separator}::1 {name}").expect("append to /etc/hosts");
        Some(LoopbackName {
            name,
            added: Instant::now(),
        })
    }

    /// Waits until a long-running Go program (dockerd) must have seen the name: Go's resolver
    /// keeps `/etc/hosts` for 5 s without looking at it, and would otherwise ask DNS — a
    /// query that leaves the machine.
    pub fn settle_for_go(&self) {
        if let Some(left) = GO_HOSTS_CACHE.checked_sub(self.added.elapsed()) {
            std::thread::sleep(left);
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for LoopbackName {
    fn drop(&mut self) {
        let _guard = EDITS.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(text) = std::fs::read_to_string(HOSTS) else {
            return;
        };
        let kept: String = text
            .lines()
            .filter(|line| line.split_whitespace().nth(1) != Some(self.name.as_str()))
            .map(|line| format!("{line}\n"))
            .collect();
        // Written in place: in a container /etc/hosts is a bind mount and cannot be replaced.
        let _ = std::fs::write(HOSTS, kept);
    }
}
