//! ADD: downloads from a real HTTP server (Python's http.server on loopback), --checksum,
//! --unpack, and local archives extracted by content.

use std::process::{Child, Command, Stdio};

use rbuild_oci::Digest;
use spec_tests::images::layout_tree;
use spec_tests::tools::{output, run};

use crate::support::{build_to_layout, rbuild};

/// `python3 -m http.server` serving `dir` on a free loopback port; killed by PID on drop.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &std::path::Path) -> HttpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tar.gz holding `inner/hello.txt`.
fn archive(path: &std::path::Path) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("inner")).unwrap();
    std::fs::write(dir.path().join("inner/hello.txt"), "from the archive\n").unwrap();
    run(Command::new("tar")
        .arg("-czf")
        .arg(path)
        .arg("-C")
        .arg(dir.path())
        .arg("inner"));
}

#[test]
fn add_downloads_checks_and_unpacks() {
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("file.txt"), "downloaded\n").unwrap();
    archive(&served.path().join("remote.tar.gz"));
    let server = HttpServer::start(served.path());
    let base = format!("http://127.0.0.1:{}", server.port);
    let checksum = Digest::sha256_of(b"downloaded\n");

    let ctx = tempfile::tempdir().unwrap();
    archive(&ctx.path().join("local.tar.gz"));
    std::fs::write(ctx.path().join("plain.gz"), "not really gzip\n").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM scratch\n\
             ADD {base}/file.txt /dl/\n\
             ADD --checksum={checksum} {base}/file.txt /checked.txt\n\
             ADD {base}/remote.tar.gz /kept/\n\
             ADD --unpack=true {base}/remote.tar.gz /unpacked/\n\
             ADD local.tar.gz /local/\n\
             ADD --unpack=false local.tar.gz /packed/\n\
             ADD plain.gz /plain/\n"
        ),
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let tree = layout_tree(&build_to_layout(store.path(), ctx.path(), &[]));
    let file = |path: &str| {
        tree.get(path)
            .unwrap_or_else(|| panic!("{path} missing from {:?}", tree.keys()))
    };
    assert_eq!(file("dl/file.txt").detail, checksum.to_string());
    assert_eq!(
        file("dl/file.txt").mode,
        0o600,
        "downloads are 0600, as in docker"
    );
    assert_eq!(file("checked.txt").detail, checksum.to_string());
    assert_eq!(
        file("kept/remote.tar.gz").kind,
        "file",
        "URLs are not unpacked by default"
    );
    assert_eq!(
        file("unpacked/inner/hello.txt").detail,
        Digest::sha256_of(b"from the archive\n").to_string()
    );
    assert_eq!(
        file("local/inner/hello.txt").detail,
        Digest::sha256_of(b"from the archive\n").to_string()
    );
    assert_eq!(file("packed/local.tar.gz").kind, "file");
    assert_eq!(
        file("plain/plain.gz").detail,
        Digest::sha256_of(b"not really gzip\n").to_string(),
        "a .gz that is not a tar is copied"
    );

    // A wrong checksum fails the build and says so.
    let wrong = Digest::sha256_of(b"something else");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM scratch\nADD --checksum={wrong} {base}/file.txt /x\n"),
    )
    .unwrap();
    let out = output(
        rbuild(store.path())
            .args(["build", "--progress", "plain"])
            .arg(ctx.path()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--checksum") && stderr.contains("Dockerfile:2"),
        "{stderr}"
    );
}

/// Stages run concurrently, and each downloads into a file of its own: four stages ADD four
/// different 4 MiB files at once, and each file reaches the image whole.
#[test]
fn concurrent_stages_download_apart() {
    let served = tempfile::tempdir().unwrap();
    let digests: Vec<Digest> = (0..4u8)
        .map(|n| {
            let bytes: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8 ^ n).collect();
            std::fs::write(served.path().join(format!("part{n}.bin")), &bytes).unwrap();
            Digest::sha256_of(&bytes)
        })
        .collect();
    let server = HttpServer::start(served.path());
    let base = format!("http://127.0.0.1:{}", server.port);

    let ctx = tempfile::tempdir().unwrap();
    let mut dockerfile = String::new();
    for n in 0..4 {
        dockerfile += &format!("FROM scratch AS s{n}\nADD {base}/part{n}.bin /\n");
    }
    dockerfile += "FROM scratch\n";
    for n in 0..4 {
        dockerfile += &format!("COPY --from=s{n} /part{n}.bin /\n");
    }
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let store = tempfile::tempdir().unwrap();
    let tree = layout_tree(&build_to_layout(store.path(), ctx.path(), &[]));
    for (n, digest) in digests.iter().enumerate() {
        let path = format!("part{n}.bin");
        let file = tree
            .get(&path)
            .unwrap_or_else(|| panic!("{path} missing from {:?}", tree.keys()));
        assert_eq!(file.detail, digest.to_string(), "{path}");
    }
}
