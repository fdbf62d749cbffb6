//! The layer cache as a user meets it: what hits, what misses, and the reason given.

use std::path::Path;

use crate::support::rbuild;
use spec_tests::tools::{output, run};

const DOCKERFILE: &str = "FROM scratch\nARG DEST=/a\nCOPY hello.txt /\nCOPY nested/ $DEST/\nLABEL x=y\n";

/// A context with a Dockerfile, one file and one directory.
fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    std::fs::write(dir.path().join("nested/n.txt"), "n\n").unwrap();
    dir
}

/// Builds and returns the metrics of each COPY step: (cache, reason).
fn build(store: &Path, context: &Path, extra: &[&str]) -> Vec<(String, String)> {
    let metrics = store.join("metrics.json");
    run(rbuild(store)
        .args(["build", "--progress", "plain", "--metrics-file"])
        .arg(&metrics)
        .args(extra)
        .arg(context));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(metrics).unwrap()).unwrap();
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["instruction"].as_str().unwrap().starts_with("COPY"))
        .map(|s| {
            (
                s["cache"].as_str().unwrap().to_owned(),
                s["miss_reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn hits(steps: &[(String, String)]) -> Vec<&str> {
    steps.iter().map(|(c, _)| c.as_str()).collect()
}

#[test]
fn unchanged_and_touched_contexts_hit_every_step() {
    let (store, ctx) = (tempfile::tempdir().unwrap(), context());
    assert_eq!(hits(&build(store.path(), ctx.path(), &[])), ["miss", "miss"]);
    assert_eq!(hits(&build(store.path(), ctx.path(), &[])), ["hit", "hit"]);
    // A new mtime with the same content is not a change.
    let file = std::fs::File::options()
        .write(true)
        .open(ctx.path().join("nested/n.txt"))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    assert_eq!(hits(&build(store.path(), ctx.path(), &[])), ["hit", "hit"]);
}

/// As with BuildKit, an image rebuilt wholly from the cache is the same image: each step
/// keeps the time it was first built, and the config its newest step's. So such a rebuild
/// writes nothing to the store either.
#[test]
fn a_rebuild_from_the_cache_is_the_same_image_and_writes_nothing() {
    let (store, ctx) = (tempfile::tempdir().unwrap(), context());
    let image = |store: &Path| {
        let out = run(rbuild(store)
            .args(["build", "--progress", "plain", "-t", "same:1"])
            .arg(ctx.path()));
        out.lines().last().unwrap().to_owned()
    };
    let first = image(store.path());
    let index = store.path().join("oci/index.json");
    let written = std::fs::metadata(&index).unwrap().modified().unwrap();
    // A second later, so that a new time would show.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(image(store.path()), first);
    assert_eq!(std::fs::metadata(&index).unwrap().modified().unwrap(), written);
}

#[test]
fn a_changed_file_misses_exactly_the_steps_that_read_it() {
    let (store, ctx) = (tempfile::tempdir().unwrap(), context());
    build(store.path(), ctx.path(), &[]);
    std::fs::write(ctx.path().join("nested/n.txt"), "changed\n").unwrap();
    let steps = build(store.path(), ctx.path(), &[]);
    assert_eq!(hits(&steps), ["hit", "miss"]);
    assert!(
        steps[1].1.contains("n.txt: content changed"),
        "reason: {}",
        steps[1].1
    );

    std::fs::write(ctx.path().join("hello.txt"), "changed too\n").unwrap();
    let steps = build(store.path(), ctx.path(), &[]);
    assert_eq!(hits(&steps), ["miss", "miss"]);
    assert!(
        steps[0].1.contains("hello.txt: content changed"),
        "reason: {}",
        steps[0].1
    );
    assert!(steps[1].1.contains("earlier step"), "reason: {}", steps[1].1);
}

#[test]
fn a_changed_arg_misses_from_its_first_use() {
    let (store, ctx) = (tempfile::tempdir().unwrap(), context());
    build(store.path(), ctx.path(), &[]);
    let steps = build(store.path(), ctx.path(), &["--build-arg", "DEST=/b"]);
    assert_eq!(hits(&steps), ["hit", "miss"]);
    assert!(steps[1].1.contains("/a/ → /b/"), "reason: {}", steps[1].1);
}

#[test]
fn no_cache_misses_everything() {
    let (store, ctx) = (tempfile::tempdir().unwrap(), context());
    build(store.path(), ctx.path(), &[]);
    assert_eq!(
        hits(&build(store.path(), ctx.path(), &["--no-cache"])),
        ["miss", "miss"]
    );
}

#[test]
fn clean_builds_in_different_directories_are_identical() {
    let digest = |ctx: &Path| {
        let store = tempfile::tempdir().unwrap();
        let metrics = store.path().join("m.json");
        run(rbuild(store.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--progress", "plain", "--metrics-file"])
            .arg(&metrics)
            .arg(ctx));
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(metrics).unwrap()).unwrap();
        report["image"].as_str().unwrap().to_owned()
    };
    let (one, two) = (context(), context());
    assert_eq!(digest(one.path()), digest(two.path()));
}

/// Incompressible bytes, different for each seed.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Builds with a fixed SOURCE_DATE_EPOCH, writing gzip layers (as a build that pushes
/// does); returns the image digest and, for the COPY step, the bytes written and the bytes
/// whose compressed blocks were copied from before.
fn build_big(store: &Path, context: &Path) -> (String, u64, u64) {
    let metrics = store.join("metrics.json");
    run(rbuild(store)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "build",
            "--progress",
            "plain",
            "--compression",
            "gzip",
            "--metrics-file",
        ])
        .arg(&metrics)
        .arg(context));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(metrics).unwrap()).unwrap();
    let copy = &report["steps"][0];
    (
        report["image"].as_str().unwrap().to_owned(),
        copy["bytes_written"].as_u64().unwrap(),
        copy["bytes_reused"].as_u64().unwrap(),
    )
}

#[test]
fn a_rebuild_after_one_change_copies_unchanged_blocks_and_equals_a_clean_build() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY big/ /big/\n").unwrap();
    std::fs::create_dir(ctx.path().join("big")).unwrap();
    for i in 0..96u64 {
        std::fs::write(
            ctx.path().join(format!("big/{i:03}.bin")),
            noise(96 * 1024, i + 1),
        )
        .unwrap();
    }
    let store = tempfile::tempdir().unwrap();
    let (_, _, reused) = build_big(store.path(), ctx.path());
    assert_eq!(reused, 0, "nothing to copy from on the first build");

    let mut middle = std::fs::read(ctx.path().join("big/048.bin")).unwrap();
    middle.extend_from_slice(b"one more line\n");
    std::fs::write(ctx.path().join("big/048.bin"), middle).unwrap();
    let (rebuilt, written, reused) = build_big(store.path(), ctx.path());
    assert!(
        reused * 10 >= written * 8,
        "only {reused} of {written} bytes copied from the previous layer"
    );
    let (clean, _, _) = build_big(tempfile::tempdir().unwrap().path(), ctx.path());
    assert_eq!(rebuilt, clean, "copying blocks changed the image");
}

/// As with `docker build`, a base image pulled once is used from the store: later builds start
/// without the network, and a tag moved in the registry is only seen with `--pull`.
#[test]
fn a_pulled_base_is_used_from_the_store_until_pull_asks_the_registry() {
    let registry = spec_tests::registry::RegistryProcess::start();
    let base = format!("{}/base/moving:1", registry.host());
    let publisher = tempfile::tempdir().unwrap();
    let publish = |content: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\nCOPY version /\n").unwrap();
        std::fs::write(dir.path().join("version"), content).unwrap();
        run(rbuild(publisher.path())
            .args(["build", "--progress", "plain", "--push", "-t", &base])
            .arg(dir.path()));
    };
    publish("one\n");

    let (store, app) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(
        app.path().join("Dockerfile"),
        format!("FROM {base}\nLABEL app=1\n"),
    )
    .unwrap();
    // (image digest, whether the registry was asked)
    let build = |extra: &[&str]| {
        let out = output(
            rbuild(store.path())
                .args(["build", "--progress", "plain", "-t", "app:1"])
                .args(extra)
                .arg(app.path()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build failed:\n{stderr}");
        let digest = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .to_owned();
        (digest, stderr.contains(&format!("resolving {base}")))
    };
    let (first, asked) = build(&[]);
    assert!(asked, "the first build pulls the base");
    assert_eq!(build(&[]), (first.clone(), false), "the store's copy is used");

    publish("two\n");
    assert_eq!(
        build(&[]),
        (first.clone(), false),
        "without --pull the moved tag is not seen"
    );
    let (pulled, asked) = build(&["--pull"]);
    assert!(asked && pulled != first, "--pull sees the new image");

    drop(registry);
    assert_eq!(build(&[]), (pulled, false), "no registry needed once pulled");
    let offline = output(
        rbuild(store.path())
            .args(["build", "--progress", "plain", "--pull"])
            .arg(app.path()),
    );
    assert!(!offline.status.success(), "--pull with the registry gone fails");
}
