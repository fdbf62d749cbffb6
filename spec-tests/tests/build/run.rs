//! RUN as only rbuild can be asked (docker 20.10's frontend lacks heredocs and some mounts):
//! heredoc scripts, failures, cache mounts, secrets, hostile base layers, interruptions.

use std::path::Path;
use std::process::Command;

use spec_tests::tools::{output, run};

use crate::support::{build_to_layout, busybox_context, busybox_store, dockerfile, rbuild, runc_available};

/// Every file under `dir`, read as bytes, and whether `needle` appears in any of them (layers
/// are searched decompressed).
fn appears_in(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        let Ok(bytes) = std::fs::read(&entry) else {
            continue;
        };
        let mut plain = Vec::new();
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            use std::io::Read;
            let _ = flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut plain);
            &plain
        } else {
            &bytes
        };
        if text.windows(needle.len()).any(|w| w == needle) {
            found.push(entry.display().to_string());
        }
    }
    found
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn heredoc_run_with_shebang_and_failure_messages() {
    let Some((store, base, ctx)) = busybox_store() else {
        return;
    };
    dockerfile(
        ctx.path(),
        &format!(
            "FROM {base}\nRUN <<EOF\necho first > /one\necho second > /two\nEOF\nRUN <<EOF\n#!/bin/sh -e\necho shebang > /three\nEOF\n"
        ),
    );
    let layout = build_to_layout(store.path(), ctx.path(), &[]);
    assert!(
        !appears_in(&layout, b"shebang").is_empty(),
        "the heredoc script ran"
    );

    dockerfile(
        ctx.path(),
        &format!("FROM {base}\nRUN echo preparing; echo 'it went wrong' >&2; exit 3\n"),
    );
    let out = output(
        rbuild(store.path())
            .args(["build", "--progress", "plain"])
            .arg(ctx.path()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for part in [
        "Dockerfile:2",
        "RUN echo preparing",
        "exited with code 3",
        "it went wrong",
    ] {
        assert!(stderr.contains(part), "missing {part:?} in:\n{stderr}");
    }
}

/// Copies of the layers instead of an overlay (`--snapshotter native`) give the same layers:
/// with `SOURCE_DATE_EPOCH` fixing the times, the same image digest.
#[test]
fn copied_snapshots_give_the_same_image_as_overlay() {
    let Some((store, base, ctx)) = busybox_store() else {
        return;
    };
    dockerfile(
        ctx.path(),
        &format!(
            "FROM {base}\nRUN mkdir -p /a/b && echo hi > /a/b/x && ln /a/b/x /a/hard && ln -s /a /l && chmod 700 /a\n\
             RUN rm -rf /bin/vi /a/b && mkdir /a/b && echo again > /a/b/y && chown 1:1 /a/hard && mkfifo /a/p\n"
        ),
    );
    let digest = |snapshotter: &str| {
        let out = run(rbuild(store.path())
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["build", "--progress", "plain", "--no-cache", "--network", "none"])
            .args(["--snapshotter", snapshotter, "-t", &format!("out:{snapshotter}")])
            .arg(ctx.path()));
        out.lines().last().unwrap().to_owned()
    };
    assert_eq!(digest("overlay"), digest("native"));
}

/// After a change, the COPY's snapshot is only what changed, stacked on the last one's: the
/// RUN after it must see exactly the tree a whole snapshot shows, edits, additions, removals,
/// a directory become a file and a file become a directory included. With
/// `SOURCE_DATE_EPOCH` fixing the times, the image equals a clean build's, whether RUN's root
/// is an overlay or a copy.
#[test]
fn a_snapshot_made_as_a_delta_over_the_last_one_shows_the_same_tree() {
    if !runc_available() {
        return;
    }
    let write = |root: &Path, path: &str, content: &str| {
        let path = root.join("tree").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    };
    let version = |root: &Path, second: bool| {
        let _ = std::fs::remove_dir_all(root.join("tree"));
        for i in 0..40 {
            write(root, &format!("bulk/{i:02}"), &format!("unchanged {i}\n"));
        }
        write(root, "a/same", "same\n");
        write(root, "a/edited", if second { "after\n" } else { "before\n" });
        let target = if second { "a/edited" } else { "a/same" };
        std::os::unix::fs::symlink(target, root.join("tree/link")).unwrap();
        if second {
            write(root, "b/added", "new\n");
            write(root, "was-dir", "a file now\n");
            write(root, "was-file/inside", "a directory now\n");
            write(root, "b/chmodded", "mode\n");
            let file = root.join("tree/b/chmodded");
            std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        } else {
            write(root, "gone/x", "x\n");
            write(root, "removed", "r\n");
            write(root, "was-dir/y", "y\n");
            write(root, "was-file", "a file\n");
            write(root, "b/chmodded", "mode\n");
        }
    };
    let build = |store: &Path, ctx: &Path, base: &str, snapshotter: &str| {
        dockerfile(
            ctx,
            &format!(
                "FROM {base}\nCOPY tree/ /app/\nRUN cd /app && find . | sort | while read f; do \
                 stat -c '%n %f %u %g %s' \"$f\"; done > /listing && find . -type f | sort | xargs md5sum >> /listing\n"
            ),
        );
        let out = run(rbuild(store)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--progress", "plain", "--network", "none"])
            .args(["--snapshotter", snapshotter])
            .arg(ctx));
        out.lines().last().unwrap().to_owned()
    };
    // The same base in every store: built with the times fixed too.
    let base_in = |store: &Path| {
        let base = "rbuild-test/busybox:fixed";
        run(rbuild(store)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--progress", "plain", "-t", base])
            .arg(busybox_context().path()));
        base
    };
    for snapshotter in ["overlay", "native"] {
        let (store, ctx) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let base = base_in(store.path());
        version(ctx.path(), false);
        build(store.path(), ctx.path(), base, snapshotter);
        version(ctx.path(), true);
        let rebuilt = build(store.path(), ctx.path(), base, snapshotter);
        let deltas = std::fs::read_dir(store.path().join("snapshots"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".delta"))
            .count();
        assert_eq!(
            deltas, 1,
            "{snapshotter}: the rebuild's COPY was snapshotted as a delta"
        );

        let clean = tempfile::tempdir().unwrap();
        base_in(clean.path());
        assert_eq!(
            rebuilt,
            build(clean.path(), ctx.path(), base, snapshotter),
            "{snapshotter}: the RUN over a delta saw another tree than over a whole snapshot"
        );
    }
}

#[test]
fn a_relative_store_path_runs_steps() {
    let Some((store, base, ctx)) = busybox_store() else {
        return;
    };
    dockerfile(ctx.path(), &format!("FROM {base}\nRUN echo ran > /proof\n"));
    // The store's parent as the working directory, and the store named relative to it.
    let parent = store.path().parent().unwrap();
    let relative = store.path().file_name().unwrap();
    let out = output(
        rbuild(store.path())
            .current_dir(parent)
            .env("RBUILD_ROOT", relative)
            .args(["build", "--progress", "plain"])
            .arg(ctx.path()),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn cache_mounts_persist_between_builds_and_stay_out_of_layers() {
    let Some((store, base, ctx)) = busybox_store() else {
        return;
    };
    dockerfile(
        ctx.path(),
        &format!(
            "FROM {base}\nRUN --mount=type=cache,target=/cache sh -c 'echo $((6*7))-CACHED >> /cache/log; wc -l < /cache/log > /count'\n"
        ),
    );
    build_to_layout(store.path(), ctx.path(), &[]);
    let layout = build_to_layout(store.path(), ctx.path(), &["--no-cache"]);
    // The entry's text is computed by the shell, so it appears nowhere but in what the step
    // wrote: the cache directory, and no layer.
    let layers: Vec<String> = appears_in(&layout.join("blobs"), b"42-CACHED");
    assert!(layers.is_empty(), "cache contents leaked into {layers:?}");
    // The count the second run wrote shows the first run's entry was still there.
    let counts = appears_in(&layout.join("blobs"), b"2\n");
    assert!(
        !counts.is_empty(),
        "the cache mount did not persist between builds"
    );
}

#[test]
fn secrets_appear_in_no_layer_config_history_or_log() {
    let Some((store, base, ctx)) = busybox_store() else {
        return;
    };
    let secret_value = "s3cr3t-VALUE-never-stored";
    let secret = ctx.path().join("token.txt");
    std::fs::write(&secret, secret_value).unwrap();
    dockerfile(
        ctx.path(),
        &format!(
            "FROM {base}\nRUN --mount=type=secret,id=token wc -c < /run/secrets/token > /proof\nRUN --mount=type=secret,id=token,env=TOKEN test ${{#TOKEN}} -eq 25\n"
        ),
    );
    std::fs::write(ctx.path().join(".dockerignore"), "token.txt\n").unwrap();
    let layout = store.path().join("layout");
    let out = output(
        rbuild(store.path())
            .args(["build", "--progress", "plain", "--metrics-file"])
            .arg(store.path().join("metrics.json"))
            .arg("--secret")
            .arg(format!("id=token,src={}", secret.display()))
            .arg("--output")
            .arg(format!("type=oci,dest={}", layout.display()))
            .arg(ctx.path()),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = [out.stdout, out.stderr].concat();
    assert!(
        !log.windows(secret_value.len())
            .any(|w| w == secret_value.as_bytes()),
        "secret in the build log"
    );
    assert_eq!(secret_value.len(), 25);
    assert!(
        !appears_in(&layout, b"25\n").is_empty(),
        "the step saw the secret"
    );
    let leaks: Vec<String> = appears_in(store.path(), secret_value.as_bytes())
        .into_iter()
        .filter(|p| !p.ends_with("Dockerfile") && !p.ends_with("token.txt"))
        .collect();
    assert!(leaks.is_empty(), "the secret is stored in {leaks:?}");
}

/// A gzip layer whose single entry climbs out of the root.
fn hostile_layer(name: &str) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(b"00000000004\0");
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    let mut data = b"pwnd".to_vec();
    data.resize(512, 0);
    tar.extend(data);
    tar.extend([0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn hostile_base_layers_fail_to_unpack_and_write_nothing_outside() {
    let registry = spec_tests::registry::RegistryProcess::start();
    let api = spec_tests::api::Api::new(&registry);
    let canary = format!("rbuild-escape-{}", std::process::id());
    let layer = hostile_layer(&format!("../../../../../../tmp/{canary}"));
    let diff_id = rbuild_oci::Digest::sha256_of(&flate2_decode(&layer));
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    api.push_blob("hostile/base", config.as_bytes());
    api.push_blob("hostile/base", &layer);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": rbuild_oci::media_type::OCI_MANIFEST,
        "config": {"mediaType": rbuild_oci::media_type::OCI_CONFIG, "digest": rbuild_oci::Digest::sha256_of(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": rbuild_oci::media_type::OCI_LAYER_GZIP, "digest": rbuild_oci::Digest::sha256_of(&layer), "size": layer.len()}],
    });
    let put = api.put_manifest(
        "hostile/base",
        "1",
        rbuild_oci::media_type::OCI_MANIFEST,
        &serde_json::to_vec(&manifest).unwrap(),
    );
    assert_eq!(put.status(), 201);

    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("f"), "x").unwrap();
    dockerfile(
        ctx.path(),
        &format!("FROM {}/hostile/base:1\nCOPY f /f\n", registry.host()),
    );
    let out = output(
        rbuild(store.path())
            .args(["build", "--progress", "plain"])
            .arg(ctx.path()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a hostile layer must not unpack");
    assert!(stderr.contains("refusing"), "{stderr}");
    assert!(
        !Path::new("/tmp").join(&canary).exists(),
        "the layer wrote outside the snapshot"
    );
}

fn flate2_decode(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

/// No mount, run directory or runc container of the store's runs is left.
fn assert_no_run_left(store: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let root = store.display().to_string();
    assert!(
        !mounts.contains(&root),
        "a mount under the store survived:\n{mounts}"
    );
    assert_eq!(
        std::fs::read_dir(store.join("runtime/runs")).unwrap().count(),
        0,
        "a run directory survived"
    );
    let containers = run(Command::new("runc")
        .arg("--root")
        .arg(store.join("runtime/state"))
        .args(["list", "-q"]));
    assert!(
        containers.trim().is_empty(),
        "runc containers survived: {containers}"
    );
}

/// A stage that fails stops the stages running beside it, as BuildKit cancels them: the
/// command still running is killed (a `sleep 300` that would otherwise hold the build for five
/// minutes), its step shows CANCELED, and the build's error is the failure, not the cancel.
/// The failing command waits, through a shared cache mount, until the other one is running.
#[test]
fn a_failing_stage_stops_the_stages_beside_it() {
    let Some((store, base, ctx)) = busybox_store() else {
        return;
    };
    let mount = "--mount=type=cache,target=/shared,sharing=shared";
    dockerfile(
        ctx.path(),
        &format!(
            "FROM {base} AS slow\n\
             RUN {mount} touch /shared/started && sleep 300\n\
             FROM {base} AS broken\n\
             RUN {mount} until [ -e /shared/started ]; do sleep 0.1; done; echo broken >&2; exit 4\n\
             FROM {base}\n\
             COPY --from=slow /bin/busybox /slow\n\
             COPY --from=broken /bin/busybox /broken\n"
        ),
    );
    let out = output(
        rbuild(store.path())
            .args(["build", "--progress", "plain"])
            .arg(ctx.path()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let error = &stderr[stderr.rfind("error: ").unwrap_or(0)..];
    for part in ["Dockerfile:4", "exited with code 4", "broken"] {
        assert!(error.contains(part), "missing {part:?} in the error:\n{stderr}");
    }
    assert!(!error.contains("canceled"), "{stderr}");
    let slow = stderr
        .lines()
        .find(|l| l.contains("RUN") && l.contains("sleep 300"))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("the slow step never started:\n{stderr}"));
    assert!(
        stderr.lines().any(|l| l.starts_with(&format!("{slow} CANCELED"))),
        "{stderr}"
    );
    assert_no_run_left(store.path());
}

#[test]
fn kill_9_during_run_leaves_nothing_behind() {
    let Some((store, base, ctx)) = busybox_store() else {
        return;
    };
    dockerfile(ctx.path(), &format!("FROM {base}\nRUN sleep 30\n"));
    let mut child = rbuild(store.path())
        .args(["build", "--progress", "plain"])
        .arg(ctx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let runs = store.path().join("runtime/runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&runs).map_or(true, |mut d| d.next().is_none()) {
        assert!(std::time::Instant::now() < deadline, "the RUN never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();

    // The next build clears what the killed one left, and succeeds.
    dockerfile(ctx.path(), &format!("FROM {base}\nRUN echo after > /after\n"));
    run(rbuild(store.path())
        .args(["build", "--progress", "plain"])
        .arg(ctx.path()));
    assert_no_run_left(store.path());
    let snapshots = store.path().join("snapshots");
    let half_made: Vec<_> = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("tmp-"))
        .collect();
    assert!(half_made.is_empty(), "half-made snapshots: {half_made:?}");
}

#[test]
fn bind_tmpfs_and_ssh_mounts() {
    let Some((store, base, ctx)) = busybox_store() else {
        return;
    };
    std::fs::create_dir(ctx.path().join("conf")).unwrap();
    std::fs::write(ctx.path().join("conf/app.conf"), "from the context\n").unwrap();
    // A real Unix socket standing in for an SSH agent.
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = agent_dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&agent).unwrap();
    dockerfile(
        ctx.path(),
        &format!(
            "FROM {base} AS source\n\
             RUN mkdir /made && echo from the stage > /made/file\n\
             FROM {base}\n\
             RUN --mount=type=bind,source=conf,target=/mnt/conf cp /mnt/conf/app.conf /copied.conf\n\
             RUN --mount=type=bind,from=source,source=/made,target=/mnt/made,rw cp /mnt/made/file /from-stage && echo scribble > /mnt/made/extra\n\
             RUN --mount=type=tmpfs,target=/scratch echo temporary > /scratch/t && cat /scratch/t > /tmpfs-was-writable\n\
             RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo forwarded > /ssh\n"
        ),
    );
    let layout = store.path().join("layout");
    run(rbuild(store.path())
        .env("SSH_AUTH_SOCK", &agent)
        .args(["build", "--progress", "plain", "--ssh", "default", "--output"])
        .arg(format!("type=oci,dest={}", layout.display()))
        .arg(ctx.path()));
    let tree = spec_tests::images::layout_tree(&layout);
    let content = |path: &str, text: &str| {
        let node = tree.get(path).unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(
            node.detail,
            rbuild_oci::Digest::sha256_of(text.as_bytes()).to_string(),
            "{path}"
        );
    };
    content("copied.conf", "from the context\n");
    content("from-stage", "from the stage\n");
    content("tmpfs-was-writable", "temporary\n");
    content("ssh", "forwarded\n");
    for stub in [
        "mnt/conf",
        "mnt/made",
        "scratch",
        "scratch/t",
        "run/buildkit",
        "mnt",
    ] {
        assert!(!tree.contains_key(stub), "mount point {stub} leaked into a layer");
    }
}

#[test]
fn onbuild_triggers_run_in_the_child_stage() {
    let store = tempfile::tempdir().unwrap();
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(
        parent.path().join("Dockerfile"),
        "FROM scratch\nONBUILD COPY greeting.txt /onbuild/\n",
    )
    .unwrap();
    run(rbuild(store.path())
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "rbuild-test/onbuild-parent:1",
        ])
        .arg(parent.path()));
    let child = tempfile::tempdir().unwrap();
    std::fs::write(child.path().join("greeting.txt"), "triggered\n").unwrap();
    std::fs::write(
        child.path().join("Dockerfile"),
        "FROM rbuild-test/onbuild-parent:1\nLABEL child=yes\n",
    )
    .unwrap();
    let tree = spec_tests::images::layout_tree(&build_to_layout(store.path(), child.path(), &[]));
    assert_eq!(
        tree["onbuild/greeting.txt"].detail,
        rbuild_oci::Digest::sha256_of(b"triggered\n").to_string()
    );
}

/// Triggers run once: the child of an ONBUILD image or stage has none of its own, as docker's
/// classic builder and BuildKit leave it (both measured: `"OnBuild": null` in the child), so
/// its own children do not run them again.
#[test]
fn onbuild_triggers_are_not_inherited() {
    let store = tempfile::tempdir().unwrap();
    let context = tempfile::tempdir().unwrap();
    dockerfile(context.path(), "FROM scratch\nONBUILD ENV TRIGGERED=yes\n");
    run(rbuild(store.path())
        .args(["build", "--progress", "plain", "-t", "rbuild-test/onbuild-env:1"])
        .arg(context.path()));
    for (name, text) in [
        ("image-child", "FROM rbuild-test/onbuild-env:1\nLABEL child=yes\n"),
        (
            "stage-child",
            "FROM scratch AS parent\nONBUILD ENV TRIGGERED=yes\nFROM parent\nLABEL child=yes\n",
        ),
    ] {
        dockerfile(context.path(), text);
        run(rbuild(store.path())
            .args(["build", "--progress", "plain", "-t", name])
            .arg(context.path()));
        let inspected: serde_json::Value =
            serde_json::from_str(&run(rbuild(store.path()).args(["inspect", name]))).unwrap();
        let config = &inspected["config"]["config"];
        assert!(
            config["Env"]
                .as_array()
                .unwrap()
                .contains(&"TRIGGERED=yes".into()),
            "{name}: {config}"
        );
        assert!(config.get("OnBuild").is_none(), "{name}: {config}");
    }
}
