//! Load for a registry, the way docker pushes: `POST` a session, stream one `PATCH` without
//! `Content-Range`, `PUT ?digest=`. Works against any distribution-spec registry.
//!
//! ```text
//! registry-load push   BASE_URL REPO COUNT SIZE_BYTES CONCURRENCY
//! registry-load stream BASE_URL REPO COUNT SIZE_BYTES CONCURRENCY
//! ```
//!
//! `push` sends COUNT distinct blobs of SIZE bytes from memory; `stream` generates each blob
//! on the fly (for blobs too large to hold, such as the 16 × 256 MiB memory test). Both print
//! one line: `blobs=… bytes=… seconds=… MB/s=…`.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rbuild_oci::{Algorithm, Digest, Hasher};
use reqwest::blocking::{Body, Client};

/// Deterministic bytes for blob `index`, distinct per blob.
struct Pattern {
    index: u64,
    remaining: u64,
    offset: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        for (i, byte) in buf[..n].iter_mut().enumerate() {
            let at = self.offset + i as u64;
            *byte = (at.wrapping_mul(2_654_435_761) ^ self.index.wrapping_mul(40_503) ^ (at >> 13)) as u8;
        }
        self.offset += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn pattern(index: u64, size: u64) -> Pattern {
    Pattern {
        index,
        remaining: size,
        offset: 0,
    }
}

fn digest_of(index: u64, size: u64) -> Digest {
    let mut hasher = Hasher::new(Algorithm::Sha256);
    std::io::copy(&mut pattern(index, size), &mut hasher).expect("hashing in memory");
    hasher.finalize()
}

/// Resolves a `Location` header (relative or absolute) and appends `digest`.
fn finish_url(base: &str, location: &str, digest: &Digest) -> String {
    let url = if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}digest={digest}")
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

fn upload(client: &Client, base: &str, repo: &str, body: Body, digest: &Digest) {
    let started = client
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .expect("POST upload");
    assert_eq!(started.status(), 202, "POST upload");
    let location = started.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let patched = client
        .patch(absolute(base, &location))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .expect("PATCH");
    assert_eq!(patched.status(), 202, "PATCH");
    let location = patched.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let put = client
        .put(finish_url(base, &location, digest))
        .send()
        .expect("PUT");
    assert_eq!(put.status(), 201, "PUT: {}", put.text().unwrap_or_default());
}

fn main() {
    // reqwest is built without a crypto provider of its own when the registry shares the build
    // (it picks ring explicitly); the plain-HTTP client still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, base, repo, count, size, concurrency] = args.as_slice() else {
        eprintln!("usage: registry-load push|stream BASE_URL REPO COUNT SIZE_BYTES CONCURRENCY");
        std::process::exit(2);
    };
    let (count, size, concurrency): (u64, u64, usize) = (
        count.parse().expect("COUNT"),
        size.parse().expect("SIZE_BYTES"),
        concurrency.parse().expect("CONCURRENCY"),
    );
    let streaming = match mode.as_str() {
        "push" => false,
        "stream" => true,
        other => panic!("unknown mode {other}"),
    };
    // A per-run salt keeps blobs distinct across runs, so nothing is already present.
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let blobs: Vec<(u64, Digest, Option<Vec<u8>>)> = (0..count)
        .map(|i| {
            let index = salt.wrapping_add(i);
            let data = (!streaming).then(|| {
                let mut data = Vec::with_capacity(size as usize);
                pattern(index, size).read_to_end(&mut data).expect("in memory");
                data
            });
            (index, digest_of(index, size), data)
        })
        .collect();

    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..concurrency {
            scope.spawn(|| {
                let client = Client::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((index, digest, data)) = blobs.get(i) else {
                        break;
                    };
                    let body = match data {
                        Some(bytes) => Body::from(bytes.clone()),
                        None => Body::new(pattern(*index, size)),
                    };
                    upload(&client, base, repo, body, digest);
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let bytes = count * size;
    println!(
        "blobs={count} bytes={bytes} seconds={seconds:.3} MB/s={:.1}",
        bytes as f64 / seconds / 1e6
    );
}
