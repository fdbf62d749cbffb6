//! Writing a layer from a generated tree (200 MB in 2,000-odd files by default;
//! `RBUILD_BENCH_MB` changes it), against the tools the numbers should be read beside:
//! `tar -c DIR | pigz` for gzip on all cores, and `openssl dgst -sha256` for hashing the same
//! uncompressed tar. The compressed sizes are printed once, before the measurements.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rbuild_layer::{
    Compression, DirOptions, Entry, HashingWriter, LayerOptions, entries_from_dir, write_layer,
};

/// Counts what is written and throws it away.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A tree of `total` bytes: source-like text (compresses well) mixed with binary-like runs
/// (compresses poorly), in files from 1 KiB to 1 MiB across nested directories.
fn generate(root: &Path, total: u64) {
    let words: Vec<&[u8]> = vec![
        b"fn ", b"let ", b"match ", b"return ", b"self", b".iter()", b"{\n", b"}\n", b"    ", b"Result<",
        b"Vec<u8>", b"impl ", b"pub ", b"// ", b"layer", b"=> ", b"0x", b"error", b"\n",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut written = 0;
    let mut n = 0;
    while written < total {
        let dir = root.join(format!("d{}/s{}", n % 17, n % 5));
        std::fs::create_dir_all(&dir).unwrap();
        let size = 1024 << (next() % 11);
        let mut content = Vec::with_capacity(size);
        while content.len() < size {
            if next() % 6 == 0 {
                content.extend((0..8).map(|_| next() as u8));
            } else {
                content.extend_from_slice(words[(next() % words.len() as u64) as usize]);
            }
        }
        content.truncate(size);
        std::fs::write(dir.join(format!("f{n}.bin")), &content).unwrap();
        written += size as u64;
        n += 1;
    }
}

fn options(compression: Compression, threads: usize) -> LayerOptions {
    LayerOptions {
        compression,
        source_date_epoch: None,
        threads,
    }
}

fn write(entries: &[Entry], options: &LayerOptions) -> u64 {
    let mut out = Count(0);
    write_layer(entries.to_vec(), options, &mut HashingWriter::new(&mut out)).unwrap();
    out.0
}

fn shell(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn bench(c: &mut Criterion) {
    let mb: u64 = std::env::var("RBUILD_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir().unwrap();
    let tree: PathBuf = tmp.path().join("tree");
    generate(&tree, mb << 20);
    let entries = entries_from_dir(&tree, &DirOptions::default()).unwrap();
    let tar_path = tmp.path().join("layer.tar");
    let tar_bytes = {
        let mut file = std::fs::File::create(&tar_path).unwrap();
        write_layer(
            entries.clone(),
            &options(Compression::None, 0),
            &mut HashingWriter::new(&mut file),
        )
        .unwrap()
        .size
    };
    let dir = tree.display().to_string();
    let tar = tar_path.display().to_string();
    let has = |tool: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };

    eprintln!(
        "tree: {} entries, uncompressed layer {tar_bytes} bytes",
        entries.len()
    );
    let gzip_size = write(&entries, &options(Compression::Gzip { level: 6 }, 0));
    let zstd_size = write(&entries, &options(Compression::Zstd { level: 3 }, 0));
    eprintln!(
        "rbuild gzip -6: {gzip_size} bytes ({:.3} of the tar)",
        gzip_size as f64 / tar_bytes as f64
    );
    eprintln!(
        "rbuild zstd -3: {zstd_size} bytes ({:.3})",
        zstd_size as f64 / tar_bytes as f64
    );
    if has("pigz") {
        let pigz: u64 = shell(&format!("pigz -6 -c {tar} | wc -c")).parse().unwrap();
        eprintln!(
            "pigz -6:        {pigz} bytes ({:.3})",
            pigz as f64 / tar_bytes as f64
        );
    }

    let mut group = c.benchmark_group("write_layer");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Bytes(tar_bytes));

    group.bench_function("rbuild gzip -6, all cores", |b| {
        b.iter(|| write(&entries, &options(Compression::Gzip { level: 6 }, 0)))
    });
    group.bench_function("rbuild gzip -6, 1 thread", |b| {
        b.iter(|| write(&entries, &options(Compression::Gzip { level: 6 }, 1)))
    });
    if has("pigz") {
        group.bench_function("anchor: tar -c DIR | pigz -6", |b| {
            b.iter(|| shell(&format!("tar -cf - -C {dir} . | pigz -6 > /dev/null")))
        });
    }
    group.bench_function("rbuild zstd -3, all cores", |b| {
        b.iter(|| write(&entries, &options(Compression::Zstd { level: 3 }, 0)))
    });
    group.bench_function("rbuild uncompressed (tar + sha256)", |b| {
        b.iter(|| write(&entries, &options(Compression::None, 0)))
    });
    if has("openssl") {
        group.bench_function("anchor: openssl dgst -sha256 of the tar", |b| {
            b.iter(|| shell(&format!("openssl dgst -sha256 {tar}")))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
