//! CNCF distribution 2.8.2 (Debian's `docker-registry`) on a loopback port of its own: the
//! registry most others are measured against, and one without OCI 1.1 referrers.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::tools::installed;
use crate::wait::wait_until;

/// A running distribution registry, killed (by PID) when dropped.
pub struct Distribution {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Distribution {
    /// Starts one with filesystem storage in a temporary directory, if `docker-registry` is
    /// installed (in CI it must be).
    pub fn start() -> Option<Distribution> {
        let bin = installed("docker-registry")?;
        let dir = tempfile::tempdir().expect("temp dir");
        // A port the kernel just gave out and took back: free, unless another process takes
        // it in the moment before distribution binds it.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}, secret: spec-tests}}\n",
                dir.path().join("root").display()
            ),
        )
        .expect("write the config");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = Distribution {
            child,
            port,
            _dir: dir,
        };
        let url = format!("http://{}/v2/", registry.host());
        wait_until("docker-registry to answer", Duration::from_secs(30), || {
            reqwest::blocking::get(&url).is_ok_and(|r| r.status().is_success())
        });
        Some(registry)
    }

    /// `127.0.0.1:<port>`, the registry host for image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
