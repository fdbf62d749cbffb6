//! The repository's `Dockerfile`, built by rbuild: the image it makes runs rbuild as its
//! non-root user and serves a registry docker pushes to and pulls from.
//!
//! Docker Hub is out of reach, so the two images the Dockerfile names are made here under
//! their names: `debian:bookworm-slim` from a `debootstrap --variant=minbase` of Debian
//! bookworm, and `rust:<RUST_VERSION>-slim-bookworm` from it plus gcc and the Rust toolchain
//! running these tests. Inside the build, cargo fetches crates and apt fetches runc, as they
//! would anywhere; this machine reaches crates.io through a proxy with its own CA, which the
//! stand-in rust image carries.

use std::path::Path;
use std::process::Command;

use spec_tests::tools::{Docker, output, require, run, which};

use crate::support::rbuild;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// The default of `ARG name=…` in `dockerfile`.
fn arg_default(dockerfile: &str, name: &str) -> String {
    let prefix = format!("ARG {name}=");
    dockerfile
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the Dockerfile has no {prefix}"))
        .trim()
        .to_owned()
}

/// Builds the stand-ins for `debian:<release>-slim` and `rust:<version>-slim-<release>` into
/// `store`.
fn base_images(store: &Path, work: &Path, release: &str, rust_version: &str) {
    let debian = work.join("debian");
    std::fs::create_dir_all(&debian).unwrap();
    run(Command::new("debootstrap")
        .args(["--variant=minbase", release])
        .arg(debian.join("rootfs"))
        .arg("http://deb.debian.org/debian"));
    write(
        &debian.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nCMD [\"bash\"]\n",
    );
    run(rbuild(store)
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            &format!("debian:{release}-slim"),
        ])
        .arg(&debian));

    let rust = work.join("rust");
    let toolchain = rust.join("toolchain");
    std::fs::create_dir_all(&toolchain).unwrap();
    let sysroot = run(Command::new("rustc").args(["--print", "sysroot"]));
    for part in ["bin", "lib", "libexec", "etc"] {
        let from = Path::new(sysroot.trim()).join(part);
        if from.exists() {
            run(Command::new("cp").arg("-a").arg(&from).arg(&toolchain));
        }
    }
    std::fs::copy("/etc/ssl/certs/ca-certificates.crt", rust.join("host-ca.crt")).unwrap();
    write(
        &rust.join("Dockerfile"),
        &format!(
            "FROM debian:{release}-slim\n\
             RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
             && rm -rf /var/lib/apt/lists/*\n\
             COPY toolchain /usr/local/rust\n\
             COPY host-ca.crt /etc/ssl/certs/ca-certificates.crt\n\
             ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        ),
    );
    run(rbuild(store)
        .args(["build", "--progress", "plain"])
        .args(["-t", &format!("rust:{rust_version}-slim-{release}")])
        .arg(&rust));
}

/// The address `rbuild serve` in container `name` says it listens on.
fn listening_address(docker: &Docker, name: &str) -> String {
    for _ in 0..100 {
        let logs = output(docker.cmd().args(["logs", name]));
        let text =
            String::from_utf8_lossy(&logs.stdout).into_owned() + &String::from_utf8_lossy(&logs.stderr);
        if let Some(address) = text
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split([',', ' ']).next())
        {
            return address.to_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("rbuild serve in the container did not start")
}

/// The names of the ELF sections of the file at `path`.
fn elf_sections(path: &Path) -> Vec<String> {
    run(Command::new("readelf").args(["-S", "--wide"]).arg(path))
        .lines()
        .filter_map(|line| {
            line.split_once("] ")?
                .1
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// The image's binary carries no DWARF but names its debug file, and the `debuginfo` stage
/// (built from the same cache) holds that file with the line tables.
fn shipped_binary_is_stripped_and_its_debug_file_is_kept(
    docker: &Docker,
    store: &Path,
    work: &Path,
    image: &str,
    repository: &Path,
) {
    let container = run(docker.cmd().args(["create", image])).trim().to_owned();
    let binary = work.join("shipped-rbuild");
    run(docker
        .cmd()
        .args(["cp", &format!("{container}:/usr/local/bin/rbuild")])
        .arg(&binary));
    run(docker.cmd().args(["rm", &container]));
    let sections = elf_sections(&binary);
    // `.debug_gdb_scripts` is loaded with the program (it names gdb's pretty-printers); the
    // DWARF sections are the others.
    let dwarf: Vec<&String> = sections
        .iter()
        .filter(|s| s.starts_with(".debug_") && *s != ".debug_gdb_scripts")
        .collect();
    assert!(dwarf.is_empty(), "the shipped binary carries DWARF: {dwarf:?}");
    assert!(sections.iter().any(|s| s == ".gnu_debuglink"), "{sections:?}");
    let image_size = run(docker.cmd().args(["image", "inspect", "-f", "{{.Size}}", image]));
    eprintln!(
        "shipped binary: {} bytes; image: {} bytes",
        std::fs::metadata(&binary).unwrap().len(),
        image_size.trim()
    );

    let layout = work.join("debuginfo");
    run(rbuild(store)
        .args([
            "build",
            "--progress",
            "plain",
            "--target",
            "debuginfo",
            "--output",
        ])
        .arg(format!("type=oci,dest={}", layout.display()))
        .arg(repository));
    let files = spec_tests::images::layout_tree(&layout);
    assert!(files.contains_key("rbuild.debug"), "{:?}", files.keys());
}

#[test]
fn the_repository_dockerfile_builds_an_image_that_serves_docker() {
    let Some(docker) = Docker::get() else { return };
    if !require(
        "debootstrap",
        which("debootstrap").is_some(),
        "apt-get install debootstrap",
    ) {
        return;
    }
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dockerfile = std::fs::read_to_string(repository.join("Dockerfile")).unwrap();
    let release = arg_default(&dockerfile, "DEBIAN_RELEASE");
    let rust_version = arg_default(&dockerfile, "RUST_VERSION");
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    base_images(store.path(), work.path(), &release, &rust_version);

    let archive = work.path().join("rbuild.tar");
    let image = "rbuild-test/rbuild-self:latest";
    run(rbuild(store.path())
        .args(["build", "--progress", "plain", "-t", image, "--output"])
        .arg(format!("type=docker,dest={}", archive.display()))
        .arg(repository));
    run(docker.cmd().args(["load", "-i"]).arg(&archive));

    let ours = run(Command::new(spec_tests::registry::rbuild_bin()).arg("--version"));
    let theirs = run(docker
        .cmd()
        .args(["run", "--rm", "--network=none", image, "--version"]));
    assert_eq!(theirs, ours, "the image runs the rbuild of this checkout");
    let id = run(docker
        .cmd()
        .args(["run", "--rm", "--network=none", "--entrypoint", "id", image, "-u"]));
    assert_eq!(id.trim(), "10001", "the image runs as its own user");
    shipped_binary_is_stripped_and_its_debug_file_is_kept(
        &docker,
        store.path(),
        work.path(),
        image,
        repository,
    );

    // The image's default command serves a registry; docker pushes to it and pulls back.
    let name = format!("rbuild-self-{}", std::process::id());
    run(docker.cmd().args([
        "run",
        "-d",
        "--name",
        &name,
        "--network=host",
        "-e",
        "RBUILD_ADDR=127.0.0.1:0",
        image,
    ]));
    let address = listening_address(&docker, &name);
    let pushed = format!("{address}/self/busybox:1");
    let result = std::panic::catch_unwind(|| {
        run(docker.cmd().args(["tag", &docker.busybox_image(), &pushed]));
        run(docker.cmd().args(["push", &pushed]));
        run(docker.cmd().args(["rmi", &pushed]));
        run(docker.cmd().args(["pull", &pushed]));
        run(docker
            .cmd()
            .args(["run", "--rm", "--network=none", &pushed, "echo", "served"]))
    });
    run(docker.cmd().args(["rm", "-f", "-v", &name]));
    let _ = output(docker.cmd().args(["rmi", &pushed, image]));
    assert_eq!(result.unwrap().trim(), "served");
}
