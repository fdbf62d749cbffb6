//! Hashing a build context: rbuild's parallel hashing with no stat cache (every byte read), the
//! same with a warm stat cache (an unchanged context: `stat` calls only), and
//! `openssl dgst -sha256` over the same files (the machine's hashing limit, one core, SHA-NI).
//!
//! The context is 4,000 files of 4–64 KiB (~130 MB); `RBUILD_BENCH_FILES` changes the count.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rbuild_builder::context::Context;
use rbuild_builder::statcache::StatCache;

fn generate(root: &Path, files: usize) -> u64 {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut total = 0;
    for n in 0..files {
        let dir = root.join(format!("src/m{:02}/s{}", n % 40, n % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let size = 4096 << (n % 5);
        let content: Vec<u8> = (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(dir.join(format!("f{n}.rs")), &content).unwrap();
        total += size as u64;
    }
    total
}

/// Everything: the context root.
fn all() -> Vec<String> {
    vec![String::new()]
}

fn hashing(c: &mut Criterion) {
    let files: usize = std::env::var("RBUILD_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let dir = tempfile::tempdir().unwrap();
    let bytes = generate(dir.path(), files);
    let mut group = c.benchmark_group("context hashing");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(10).measurement_time(Duration::from_secs(20));

    group.bench_function("rbuild: walk + hash on all cores, no stat cache", |b| {
        b.iter(|| {
            let cache = StatCache::load(&dir.path().join("no-such-cache"));
            let context = Context::scan(dir.path(), None).unwrap();
            context.hash(&all(), &cache).unwrap()
        })
    });

    let warm = StatCache::load(&dir.path().join("warm-cache"));
    let context = Context::scan(dir.path(), None).unwrap();
    context.hash(&all(), &warm).unwrap();
    group.bench_function("rbuild: walk + stat-cache hits (unchanged context)", |b| {
        b.iter(|| {
            let context = Context::scan(dir.path(), None).unwrap();
            context.hash(&all(), &warm).unwrap()
        })
    });

    let absolute: Vec<String> = context
        .descendants("")
        .iter()
        .map(|f| dir.path().join(&f.path).display().to_string())
        .filter(|p| Path::new(p).is_file())
        .collect();
    group.bench_function("anchor: openssl dgst -sha256 (one process)", |b| {
        b.iter(|| {
            for chunk in absolute.chunks(2000) {
                let status = Command::new("openssl")
                    .args(["dgst", "-sha256"])
                    .args(chunk)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("openssl");
                assert!(status.success());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, hashing);
criterion_main!(benches);
