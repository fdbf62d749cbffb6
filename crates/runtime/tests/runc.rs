//! Real runs with runc over a busybox layer (needs root and runc; required in CI).

use std::fs;
use std::os::unix::fs::{FileTypeExt, symlink};
use std::path::Path;

use rbuild_runtime::{ExtraMount, MountKind, Network, RunError, RunSpec, Runtime, User};

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
        "sh", "echo", "rm", "mkdir", "cat", "id", "hostname", "ls", "chmod",
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

#[test]
fn failures_carry_the_exit_code_and_output() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    busybox_layer(&layer);
    let runtime = Runtime::new(&tmp.path().join("runtime"), None).unwrap();
    let err = runtime
        .run(&spec(vec![layer], "echo about to fail; exit 3"), &|_| {})
        .unwrap_err();
    match err {
        RunError::Failed { exit_code, tail } => {
            assert_eq!(exit_code, 3);
            assert_eq!(tail, ["about to fail"]);
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        fs::read_dir(tmp.path().join("runtime/runs")).unwrap().count(),
        0,
        "nothing left behind"
    );
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
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    busybox_layer(&layer);
    let (lower, upper) = (tmp.path().join("other0"), tmp.path().join("other1"));
    fs::create_dir_all(lower.join("data")).unwrap();
    fs::write(lower.join("data/a"), "lower\n").unwrap();
    fs::create_dir_all(upper.join("data")).unwrap();
    fs::write(upper.join("data/b"), "upper\n").unwrap();
    let runtime = Runtime::new(&tmp.path().join("runtime"), None).unwrap();
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
