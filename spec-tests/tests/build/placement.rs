//! Where snapshots land on ext4 without a journal right after a store was deleted: not on
//! the inodes the delete freed, which ext4 scans past one by one on every allocation for a
//! minute or more (see crates/builder/src/placement.rs).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{rbuild, rbuild_busybox};
use spec_tests::tools::{self, run};

/// An ext4 without a journal (like this machine's root filesystem) on a loop device over a
/// sparse file; unmounted, and so detached, on drop.
struct Ext4 {
    image: PathBuf,
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ext4 {
    /// `None` when not root or without the tools (outside CI, which fails instead).
    fn new() -> Option<Ext4> {
        // SAFETY: geteuid(2) has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let tools_found = ["mkfs.ext4", "dumpe2fs", "mount", "umount", "runc"]
            .iter()
            .all(|tool| tools::which(tool).is_some());
        if !tools::require(
            "root, e2fsprogs, loop mounts and runc",
            root && tools_found,
            "run as root (scripts/test does) with e2fsprogs and runc installed",
        ) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.ext4");
        // 16 flex groups of 16 block groups, as mke2fs makes them by default.
        std::fs::File::create(&image).unwrap().set_len(32 << 30).unwrap();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "^has_journal", "-E", "nodiscard"])
            .arg(&image));
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop,noinit_itable"])
            .arg(&image)
            .arg(&mount));
        Some(Ext4 {
            image,
            mount,
            _dir: dir,
        })
    }

    /// A superblock field of `dumpe2fs -h`, such as "Inodes per group".
    fn field(&self, name: &str) -> u64 {
        let header = run(Command::new("dumpe2fs").arg("-h").arg(&self.image));
        header
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name:?} in dumpe2fs -h:\n{header}"))
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

/// The inodes of the snapshot directories in `store`.
fn snapshot_inodes(store: &Path) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(store.join("snapshots"))
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().is_dir() && entry.file_name() != "pool")
        .map(|entry| (entry.path(), entry.metadata().unwrap().ino()))
        .collect()
}

/// Builds busybox, then a COPY of 3,000 files and a RUN over it, into `store`.
fn build(store: &Path, context: &Path) {
    rbuild_busybox(store);
    run(rbuild(store)
        .args(["build", "--progress", "plain", "--network", "none", "-t", "app:1"])
        .arg(context));
}

#[test]
fn a_store_made_again_after_rm_rf_unpacks_away_from_the_freed_inodes() {
    let Some(fs) = Ext4::new() else {
        return;
    };
    let per_group = fs.field("Inodes per group");
    let per_flex = fs.field("Flex block group size");
    let flex_group = |inode: u64| (inode - 1) / per_group / per_flex;

    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM rbuild-test/busybox:latest\nCOPY src/ /src/\nRUN true\n",
    )
    .unwrap();
    for dir in 0..20 {
        let dir = context.path().join(format!("src/d{dir:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for file in 0..150 {
            std::fs::write(dir.join(format!("f{file:03}")), [file as u8; 700]).unwrap();
        }
    }
    // The store's parent is not the filesystem's root, where ext4 spreads directories anyway.
    let store = fs.mount.join("stores/store");
    build(&store, context.path());
    let deleted: Vec<u64> = snapshot_inodes(&store)
        .into_iter()
        .map(|(_, inode)| flex_group(inode))
        .collect();
    std::fs::remove_dir_all(&store).unwrap();
    // ext4 reuses at once an inode freed in the current second; from the next one on, for a
    // minute, it steps over it.
    std::thread::sleep(Duration::from_secs(2));

    build(&store, context.path());
    let (snapshot, inode) = snapshot_inodes(&store)
        .into_iter()
        .find(|(dir, _)| dir.join("src/d19/f149").is_file())
        .expect("the COPY's layer has a snapshot");
    assert_eq!(
        (inode - 1) % per_group,
        0,
        "{} is not the first inode of its block group: the group holds freed inodes \
         (or other files) before it",
        snapshot.display()
    );
    assert!(
        !deleted.contains(&flex_group(inode)),
        "{} is in flex group {}, where the deleted store's snapshots were ({deleted:?})",
        snapshot.display(),
        flex_group(inode)
    );
}
