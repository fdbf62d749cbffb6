//! Reading `rbuild serve`'s metrics the ways operators do: a scrape parsed into series,
//! `promtool check metrics`, and a real Prometheus server (Debian's `prometheus`) scraping it
//! on loopback and answering PromQL over its HTTP API.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::tools::{require, which};
use crate::wait::wait_until;

/// The hint for a missing Prometheus tool: both come from one Debian package.
const HINT: &str = "apt-get install prometheus (scripts/test does)";

/// One scrape in the classic text format: every sample by its series (name and labels exactly
/// as exposed).
#[derive(Clone, Debug, PartialEq)]
pub struct Scrape {
    /// The exposition as received.
    pub text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// `GET url` (a `/metrics` URL) and parse the answer.
    pub fn get(url: &str) -> Scrape {
        let response = reqwest::blocking::get(url).expect("GET /metrics");
        assert_eq!(response.status(), 200, "GET {url}");
        Scrape::parse(&response.text().expect("scrape body"))
    }

    /// Parses an exposition in the text format.
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Scrape {
            text: text.to_owned(),
            samples,
        }
    }

    /// A series' value; 0 for a series not (yet) exposed, as a counter that never moved.
    pub fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// How much each of `series` moved from `before` to this scrape.
    pub fn deltas(&self, before: &Scrape, series: &[String]) -> Vec<(String, f64)> {
        series
            .iter()
            .map(|s| (s.clone(), self.value(s) - before.value(s)))
            .collect()
    }
}

/// `promtool`, if installed (in CI it must be).
pub fn promtool() -> Option<PathBuf> {
    let found = which("promtool");
    require("promtool", found.is_some(), HINT).then_some(found)?
}

/// A Prometheus server on a free loopback port, scraping one target every second, with its
/// configuration and data in a temporary directory. Killed (by PID) when dropped.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts one scraping `http://<target>/metrics`, if `prometheus` is installed.
    pub fn start(target: SocketAddr) -> Option<Prometheus> {
        let found = which("prometheus");
        let bin = require("prometheus", found.is_some(), HINT).then_some(found)??;
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: rbuild\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write the Prometheus config");
        let addr = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let ready = format!("http://{addr}/-/ready");
        wait_until("prometheus to be ready", Duration::from_secs(60), || {
            reqwest::blocking::get(&ready).is_ok_and(|r| r.status().is_success())
        });
        Some(prometheus)
    }

    /// The value of an instant PromQL query that yields one series; `None` when it yields none.
    pub fn query(&self, promql: &str) -> Option<f64> {
        let url = format!("http://{}/api/v1/query?query={}", self.addr, encode(promql));
        let body: serde_json::Value = reqwest::blocking::get(&url)
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("querying prometheus for {promql}: {e}"));
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port the kernel just gave out and took back: free, unless another
/// process takes it in the moment before it is bound again.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Percent-encodes a query parameter (everything but unreserved characters).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
