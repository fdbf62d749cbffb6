//! Real runs with runc over a busybox layer (needs root and runc; required in CI).

use std::fs;
use std::os::unix::fs::{FileTypeExt, symlink};
use std::path::Path;

use rbuild_runtime::{ExtraMount, MountKind, Network, RunError, RunSpec, Runtime, Snapshotter, User};

fn available() -> bool {
    let root = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let runc =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("runc").is_file()));
    let busybox = Path::new("/bin/busybox").is_file();
    let ok = root && runc && busybox;
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "CI needs root, runc and busybox-static for these tests"
        );
        eprintln!("SKIPPED: needs root, runc and /bin/busybox");
    }
    ok
}

/// A layer with busybox and its applets, plus a file to delete and a directory to replace.
fn busybox_layer(dir: &Path) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "rm", "mkdir", "cat", "id", "hostname", "ls", "chmod", "chown", "ln", "mv", "mkfifo",
        "touch", "cp",
    ] {
        symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/doomed"), "x").unwrap();
    fs::create_dir_all(dir.join("replaced")).unwrap();
    fs::write(dir.join("replaced/old"), "x").unwrap();
}

fn spec(layers: Vec<std::path::PathBuf>, script: &str) -> RunSpec {
    RunSpec {
        layers,
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/work/dir".into(),
        user: User::ROOT,
        network: Network::None,
        mounts: Vec::new(),
        resolv_conf: None,
        hosts: None,
    }
}

#[test]
fn changes_land_in_the_upper_directory() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    busybox_layer(&layer);
    let runtime = Runtime::new(&tmp.path().join("runtime"), None).unwrap();
    let lines = std::sync::Mutex::new(Vec::new());
    let script = "echo hello > created; rm /etc/doomed; rm -r /replaced; mkdir /replaced; echo new > /replaced/n; hostname; id -u";
    let finished = runtime
        .run(&spec(vec![layer], script), &|l| {
            lines.lock().unwrap().push(l.to_owned())
        })
        .unwrap();
    let upper = finished.upper();
    assert_eq!(
        fs::read_to_string(upper.join("work/dir/created")).unwrap(),
        "hello\n"
    );
    let doomed = fs::symlink_metadata(upper.join("etc/doomed")).unwrap();
    assert!(
        doomed.file_type().is_char_device(),
        "a deletion is an overlay whiteout"
    );
    assert_eq!(
        xattr::get(upper.join("replaced"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(*lines.lock().unwrap(), ["buildkitsandbox", "0"]);
}

/// Runs `script` on the busybox layer, expecting it to fail; returns its exit code and the
/// tail of its output, after checking the runtime left no run directory behind.
fn failing_run(script: &str) -> (i32, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    busybox_layer(&layer);
    let runtime = Runtime::new(&tmp.path().join("runtime"), None).unwrap();
    let err = runtime.run(&spec(vec![layer], script), &|_| {}).unwrap_err();
    assert_eq!(
        fs::read_dir(tmp.path().join("runtime/runs")).unwrap().count(),
        0,
        "nothing left behind"
    );
    match err {
        RunError::Failed { exit_code, tail } => (exit_code, tail),
        other => panic!("{other}"),
    }
}

#[test]
fn failures_carry_the_exit_code_and_output() {
    if !available() {
        return;
    }
    let (exit_code, tail) = failing_run("echo about to fail; exit 3");
    assert_eq!(exit_code, 3);
    assert_eq!(tail, ["about to fail"]);
}

#[test]
fn output_that_is_not_utf8_does_not_end_the_output() {
    if !available() {
        return;
    }
    let (_, tail) = failing_run("printf 'caf\\351\\r\\nafter\\n'; exit 1");
    assert_eq!(tail, ["caf\u{fffd}", "after"]);
}

#[test]
fn mounts_and_users() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    busybox_layer(&layer);
    let shared = tmp.path().join("shared");
    fs::create_dir_all(&shared).unwrap();
    fs::write(shared.join("input"), "from the host\n").unwrap();
    let runtime = Runtime::new(&tmp.path().join("runtime"), None).unwrap();
    let mut spec = spec(
        vec![layer],
        "cat /mnt/input; echo out > /mnt/output; id -u; id -g; echo t > /scratch/t",
    );
    spec.user = User {
        uid: 1000,
        gid: 1000,
        additional_gids: vec![],
    };
    spec.mounts = vec![
        ExtraMount {
            target: "/mnt".into(),
            kind: MountKind::Bind {
                source: shared.clone(),
                read_only: false,
            },
        },
        ExtraMount {
            target: "/scratch".into(),
            kind: MountKind::Tmpfs { size: None },
        },
    ];
    fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let lines = std::sync::Mutex::new(Vec::new());
    let finished = runtime
        .run(&spec, &|l| lines.lock().unwrap().push(l.to_owned()))
        .unwrap();
    assert_eq!(*lines.lock().unwrap(), ["from the host", "1000", "1000"]);
    assert_eq!(fs::read_to_string(shared.join("output")).unwrap(), "out\n");
    assert!(
        !finished.upper().join("scratch/t").exists(),
        "tmpfs contents stay out of the layer"
    );
}

#[test]
fn layer_mounts_merge_and_discard_writes() {
    if !available() {
        return;
    }
    for snapshotter in [Snapshotter::Overlay, Snapshotter::Native] {
        layer_mounts_with(snapshotter);
    }
}

fn layer_mounts_with(snapshotter: Snapshotter) {
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    busybox_layer(&layer);
    let (lower, upper) = (tmp.path().join("other0"), tmp.path().join("other1"));
    fs::create_dir_all(lower.join("data")).unwrap();
    fs::write(lower.join("data/a"), "lower\n").unwrap();
    fs::create_dir_all(upper.join("data")).unwrap();
    fs::write(upper.join("data/b"), "upper\n").unwrap();
    let runtime = Runtime::new(&tmp.path().join("runtime"), None)
        .unwrap()
        .with_snapshotter(snapshotter);
    let mut spec = spec(vec![layer], "cat /from/a /from/b; echo scribble > /from/c");
    spec.mounts = vec![ExtraMount {
        target: "/from".into(),
        kind: MountKind::Layers {
            layers: vec![lower.clone(), upper.clone()],
            subpath: "/data".into(),
            writable: true,
        },
    }];
    let lines = std::sync::Mutex::new(Vec::new());
    runtime
        .run(&spec, &|l| lines.lock().unwrap().push(l.to_owned()))
        .unwrap();
    assert_eq!(*lines.lock().unwrap(), ["lower", "upper"]);
    assert!(
        !lower.join("data/c").exists() && !upper.join("data/c").exists(),
        "writes are discarded"
    );
    assert_eq!(fs::read_dir(tmp.path().join("runtime/runs")).unwrap().count(), 0);
}

/// A second layer over the busybox one, in overlay lower format: a whiteout hiding
/// `/etc/doomed`, an opaque `/replaced`, and files to change.
fn second_layer(dir: &Path) {
    fs::create_dir_all(dir.join("etc")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("etc/doomed"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    fs::create_dir_all(dir.join("replaced")).unwrap();
    xattr::set(dir.join("replaced"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(dir.join("replaced/second"), "second\n").unwrap();
    fs::create_dir_all(dir.join("deep/er/still")).unwrap();
    fs::write(dir.join("deep/er/still/file"), "deep\n").unwrap();
    fs::write(dir.join("deep/sibling"), "sibling\n").unwrap();
    fs::create_dir_all(dir.join("tree/sub")).unwrap();
    fs::write(dir.join("tree/sub/leaf"), "leaf\n").unwrap();
    fs::write(dir.join("plain"), "plain\n").unwrap();
    fs::create_dir_all(dir.join("becomes-file")).unwrap();
    symlink("/etc", dir.join("link")).unwrap();
}

/// A canonical description of an upper directory: one line per path with its type, mode,
/// owner, content or target, opaque mark and hard-link group. Times are left out except
/// those older than `since` (set by the layers or by `touch -d`, not by the run's clock).
fn describe(root: &Path, since: i64) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut lines = Vec::new();
    let mut inodes = std::collections::HashMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let kind = meta.file_type();
            let what = if kind.is_dir() {
                pending.push(path.clone());
                let opaque = xattr::get(&path, "trusted.overlay.opaque").unwrap().is_some();
                format!("dir opaque={opaque}")
            } else if kind.is_symlink() {
                format!("symlink -> {}", fs::read_link(&path).unwrap().display())
            } else if kind.is_file() {
                let first = inodes.entry(meta.ino()).or_insert_with(|| rel.clone());
                format!("file {:?} links-with {first}", fs::read_to_string(&path).unwrap())
            } else if kind.is_char_device() {
                format!("char {}", meta.rdev())
            } else {
                format!("other {:o}", meta.mode())
            };
            let time = if meta.mtime() < since && !kind.is_symlink() {
                meta.mtime().to_string()
            } else {
                "-".to_owned()
            };
            lines.push(format!(
                "{rel} {what} mode={:o} owner={}:{} mtime={time}",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ));
        }
    }
    lines.sort();
    lines
}

#[test]
fn copies_give_the_same_upper_directory_as_overlay() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, second) = (tmp.path().join("base"), tmp.path().join("second"));
    busybox_layer(&base);
    second_layer(&second);
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 60;
    let script = "set -e
        echo new > /created
        echo more >> /plain
        chmod 0600 /deep/sibling
        chown 1000:1000 /deep/er/still/file
        ln /plain /plain-hardlink
        ln -s /plain /plain-symlink
        rm -rf /tree
        rm -r /replaced && mkdir /replaced && echo again > /replaced/again
        cat /replaced/again
        rm -r /becomes-file && echo now-a-file > /becomes-file
        rm /link && mkdir /link && echo in > /link/in
        mv /deep/er /moved
        mkfifo /fifo
        mkdir -p /new/nested/dirs && echo n > /new/nested/dirs/n
        touch -d @1000000000 /bin
        test ! -e /etc/doomed && ls /replaced";
    let mut uppers = Vec::new();
    for snapshotter in [Snapshotter::Overlay, Snapshotter::Native] {
        let runtime = Runtime::new(&tmp.path().join(format!("runtime-{snapshotter:?}")), None)
            .unwrap()
            .with_snapshotter(snapshotter);
        let lines = std::sync::Mutex::new(Vec::new());
        let finished = runtime
            .run(&spec(vec![base.clone(), second.clone()], script), &|l| {
                lines.lock().unwrap().push(l.to_owned())
            })
            .unwrap();
        assert_eq!(
            *lines.lock().unwrap(),
            ["again", "again"],
            "{snapshotter:?}: the command sees the layers merged"
        );
        uppers.push(describe(&finished.upper(), since));
    }
    assert_eq!(uppers[0], uppers[1], "overlay (left) and copies (right) differ");
    assert!(
        uppers[1].iter().any(|l| l.starts_with("tree char 0")),
        "{:#?}",
        uppers[1]
    );
}

/// More layers than one overlay mount's options can name: `overlay` fails the step, `auto`
/// copies the layers and runs it.
#[test]
fn auto_falls_back_to_copies_when_overlay_cannot_mount() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut layers = vec![tmp.path().join("base")];
    busybox_layer(&layers[0]);
    for n in 0..150 {
        let layer = tmp.path().join(format!("layer-with-a-long-name-{n:03}"));
        fs::create_dir_all(&layer).unwrap();
        fs::write(layer.join("last"), format!("{n}\n")).unwrap();
        layers.push(layer);
    }
    let run = |snapshotter| {
        let runtime = Runtime::new(&tmp.path().join("runtime"), None)
            .unwrap()
            .with_snapshotter(snapshotter);
        let lines = std::sync::Mutex::new(Vec::new());
        runtime
            .run(&spec(layers.clone(), "cat /last"), &|l| {
                lines.lock().unwrap().push(l.to_owned())
            })
            .map(|_| lines.into_inner().unwrap())
    };
    let err = run(Snapshotter::Overlay).unwrap_err();
    assert!(err.to_string().contains("too many layers"), "{err}");
    assert_eq!(run(Snapshotter::Auto).unwrap(), ["149"]);
}

/// Four runtimes of one process (builds, or these tests) running at the same time. runc
/// names a container's cgroup after its id, whatever its state directory, so ids numbered per
/// runtime collided and one run removed the other's cgroup as it started.
#[test]
fn runtimes_of_one_process_run_at_once() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    busybox_layer(&layer);
    std::thread::scope(|scope| {
        for n in 0..4 {
            let (tmp, layer) = (tmp.path(), layer.clone());
            scope.spawn(move || {
                let runtime = Runtime::new(&tmp.join(format!("runtime-{n}")), None).unwrap();
                for round in 0..40 {
                    let finished = runtime
                        .run(
                            &spec(vec![layer.clone()], &format!("echo {round} > out")),
                            &|_| {},
                        )
                        .unwrap_or_else(|e| panic!("runtime {n}, run {round}: {e}"));
                    assert_eq!(
                        fs::read_to_string(finished.upper().join("work/dir/out")).unwrap(),
                        format!("{round}\n")
                    );
                }
            });
        }
    });
}
