//! Tests across modules: round trips (entries → layer → unpacked tree → entries),
//! determinism, interoperability with the system's `gzip` and `tar`, hostile layers, and
//! whiteouts in both modes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::entry::canonical;
use crate::*;

/// A small deterministic generator (xorshift64*), so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        // Compressible but not trivial.
        (0..n)
            .map(|i| {
                if self.below(4) == 0 {
                    self.next() as u8
                } else {
                    b"abcdefgh"[i % 8]
                }
            })
            .collect()
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A random tree: directories, files (some large, some with xattrs), symlinks, hard links,
/// fifos and (as root) devices, with random owners, modes and times.
fn random_entries(rng: &mut Rng, count: usize) -> Vec<Entry> {
    let names = [
        "a",
        "b",
        "lib",
        "usr",
        "x y",
        "ü",
        "long-name-".repeat(12).leak(),
        ".hidden",
        "a-b",
    ];
    let mut dirs: Vec<String> = vec![String::new()];
    let mut entries: Vec<Entry> = Vec::new();
    let mut files: Vec<usize> = Vec::new();
    let mut taken = std::collections::HashSet::new();
    while entries.len() < count {
        let parent = dirs[rng.below(dirs.len() as u64) as usize].clone();
        let name = format!(
            "{}{}",
            names[rng.below(names.len() as u64) as usize],
            rng.below(5)
        );
        let path = if parent.is_empty() {
            name
        } else {
            format!("{parent}/{name}")
        };
        if path.len() > 900 || !taken.insert(path.clone()) {
            continue;
        }
        let choice = rng.below(10);
        let mut entry = Entry::new(path.clone(), EntryKind::Dir);
        entry.uid = [0, 1000, 65534, 3_000_000][rng.below(4) as usize];
        entry.gid = [0, 100, 4_000_000][rng.below(3) as usize];
        entry.mtime = [0, 1_700_000_000, 1_234_567_890 + rng.below(1000) as i64][rng.below(3) as usize];
        entry.mode = [0o755, 0o700, 0o644, 0o600, 0o4755, 0o2755, 0o1777, 0o444][rng.below(8) as usize];
        entry.kind = match choice {
            0..=2 => {
                dirs.push(path);
                entry.mode |= 0o700; // So an unprivileged test can still read it back.
                EntryKind::Dir
            }
            3..=6 => {
                let len = [0, 1, 511, 512, 513, 70_000][rng.below(6) as usize];
                if rng.below(4) == 0 {
                    let len = rng.below(40) as usize;
                    entry.xattrs.insert("user.test".to_owned(), rng.bytes(len));
                }
                files.push(entries.len());
                entry.mode |= 0o600;
                EntryKind::File(FileSource::Bytes(rng.bytes(len)))
            }
            7 => {
                entry.mode = 0o777;
                EntryKind::Symlink(
                    ["/etc/passwd", "../x", "a/b", &"t".repeat(150)][rng.below(4) as usize].to_owned(),
                )
            }
            8 if !files.is_empty() => {
                // Same inode as its target: same metadata.
                let target = &entries[files[rng.below(files.len() as u64) as usize]];
                let mut link = target.clone();
                link.path = path;
                link.kind = EntryKind::Hardlink(target.path.clone());
                entries.push(link);
                continue;
            }
            _ if is_root() && rng.below(2) == 0 => EntryKind::CharDevice { major: 1, minor: 3 },
            _ => {
                entry.mode &= 0o777;
                EntryKind::Fifo
            }
        };
        entries.push(entry);
    }
    entries
}

/// What a tree read back from disk should hold for `entries`: canonical form, times clamped,
/// and file contents as bytes.
fn expected(entries: Vec<Entry>, epoch: Option<i64>) -> Vec<Entry> {
    let mut entries = canonical(entries).unwrap();
    for entry in &mut entries {
        if let Some(epoch) = epoch {
            entry.mtime = entry.mtime.min(epoch);
        }
        blank_link_metadata(entry);
    }
    entries
}

/// Read back from disk, a hard link has its inode's metadata: the comparisons leave it out.
fn blank_link_metadata(entry: &mut Entry) {
    if let EntryKind::Hardlink(_) = entry.kind {
        entry.mode = 0;
        entry.uid = 0;
        entry.gid = 0;
        entry.mtime = 0;
        entry.xattrs.clear();
    }
}

/// Entries read back from disk, with file contents loaded and link metadata blanked.
fn read_back(dir: &Path) -> Vec<Entry> {
    let mut entries = entries_from_dir_with(dir, &DirOptions::default(), XattrPolicy::All).unwrap();
    for entry in &mut entries {
        if let EntryKind::File(FileSource::Path(path)) = &entry.kind {
            entry.kind = EntryKind::File(FileSource::Bytes(std::fs::read(path).unwrap()));
        }
        blank_link_metadata(entry);
    }
    entries
}

/// An entry without its content, which is summarised by a digest (so failures print short).
fn summary(entry: &Entry) -> String {
    let mut shown = entry.clone();
    let mut content = None;
    if let EntryKind::File(FileSource::Bytes(bytes)) = &entry.kind {
        content = Some(rbuild_oci::Digest::sha256_of(bytes));
        shown.kind = EntryKind::File(FileSource::Bytes(Vec::new()));
    }
    format!("{shown:?} {content:?}")
}

fn layer(entries: Vec<Entry>, options: &LayerOptions) -> (LayerInfo, Vec<u8>) {
    let mut blob = Vec::new();
    let info = write_layer(entries, options, &mut HashingWriter::new(&mut blob)).unwrap();
    (info, blob)
}

fn unpack_into(blob: &[u8], dest: &Path, whiteouts: WhiteoutMode) -> Result<UnpackStats, LayerError> {
    let reader = decompressed(std::io::Cursor::new(blob.to_vec()))?;
    unpack(
        reader,
        dest,
        &UnpackOptions {
            whiteouts,
            same_owner: is_root(),
        },
    )
}

#[test]
fn round_trip_entries_layer_tree_entries() {
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let entries = random_entries(&mut rng, 60);
        let epoch = [None, Some(1_500_000_000)][seed as usize % 2];
        let compression = [
            Compression::None,
            Compression::default(),
            Compression::Zstd { level: 3 },
        ][seed as usize % 3];
        let options = LayerOptions {
            compression,
            source_date_epoch: epoch,
            threads: 2,
        };
        let (_, blob) = layer(entries.clone(), &options);
        let dest = tempfile::tempdir().unwrap();
        unpack_into(&blob, dest.path(), WhiteoutMode::Apply).unwrap();
        let mut want = expected(entries, epoch);
        let mut got = read_back(dest.path());
        if !is_root() {
            for e in want.iter_mut().chain(got.iter_mut()) {
                e.uid = 0;
                e.gid = 0;
            }
        }
        assert_eq!(got.len(), want.len(), "seed {seed}");
        for (got, want) in got.iter().zip(&want) {
            assert_eq!(summary(got), summary(want), "seed {seed}");
        }
        // And written again from the tree, the layer is the same.
        let again: Vec<Entry> =
            entries_from_dir_with(dest.path(), &DirOptions::default(), XattrPolicy::All).unwrap();
        let (_, blob_again) = layer(again, &options);
        if is_root() {
            assert!(blob_again == blob, "seed {seed}: re-written layer differs");
        }
    }
}

#[test]
fn a_layer_kept_uncompressed_compresses_to_the_layer_written_compressed() {
    let entries = random_entries(&mut Rng(0x5eed), 80);
    let plain = LayerOptions {
        compression: Compression::None,
        ..LayerOptions::default()
    };
    let (plain_info, tar) = layer(entries.clone(), &plain);
    for compression in [Compression::default(), Compression::Zstd { level: 3 }] {
        let options = LayerOptions {
            compression,
            ..LayerOptions::default()
        };
        let (direct, direct_blob) = layer(entries.clone(), &options);
        let mut later_blob = Vec::new();
        let later =
            compress_layer(tar.as_slice(), &options, &mut HashingWriter::new(&mut later_blob)).unwrap();
        assert!(later_blob == direct_blob, "{compression:?}: different bytes");
        assert_eq!(later.diff_id, plain_info.diff_id);
        assert_eq!(later.digest, direct.digest);
        assert_eq!(later.media_type, direct.media_type);
    }
}

#[test]
fn bytes_depend_only_on_the_set_of_entries() {
    let mut rng = Rng(42);
    let entries = random_entries(&mut rng, 400);
    for compression in [
        Compression::None,
        Compression::Gzip { level: 6 },
        Compression::Zstd { level: 3 },
    ] {
        let options = |threads| LayerOptions {
            compression,
            source_date_epoch: Some(1_600_000_000),
            threads,
        };
        let (info, blob) = layer(entries.clone(), &options(1));
        for threads in [2, 4, 0] {
            let mut shuffled = entries.clone();
            rng.shuffle(&mut shuffled);
            let (info2, blob2) = layer(shuffled, &options(threads));
            assert_eq!(info2, info, "{compression:?} with {threads} threads");
            assert!(blob2 == blob, "{compression:?} with {threads} threads");
        }
    }
}

#[test]
fn digests_and_sizes_are_of_what_was_written() {
    let mut rng = Rng(7);
    let entries = random_entries(&mut rng, 200);
    let (plain, tar) = layer(
        entries.clone(),
        &LayerOptions {
            compression: Compression::None,
            ..LayerOptions::default()
        },
    );
    assert_eq!(plain.diff_id, plain.digest);
    assert_eq!(plain.diff_id, rbuild_oci::Digest::sha256_of(&tar));
    assert_eq!(plain.media_type, rbuild_oci::media_type::OCI_LAYER_TAR);
    for compression in [Compression::Gzip { level: 1 }, Compression::Zstd { level: 1 }] {
        let (info, blob) = layer(
            entries.clone(),
            &LayerOptions {
                compression,
                ..LayerOptions::default()
            },
        );
        assert_eq!(info.diff_id, plain.diff_id);
        assert_eq!(info.uncompressed_size, tar.len() as u64);
        assert_eq!(info.digest, rbuild_oci::Digest::sha256_of(&blob));
        assert_eq!(info.size, blob.len() as u64);
        assert_eq!(info.media_type, compression.media_type());
        let mut decoded = Vec::new();
        decompressed(std::io::Cursor::new(blob))
            .unwrap()
            .read_to_end(&mut decoded)
            .unwrap();
        assert!(decoded == tar);
    }
}

/// Runs `cmd` with `input` on stdin, returning stdout, or panics with stderr.
fn run(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(
        output.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
fn gzip_layers_pass_gzip_t_and_list_with_tar() {
    if Command::new("gzip").arg("--version").output().is_err() {
        eprintln!("gzip is not installed: skipped");
        return;
    }
    let mut rng = Rng(99);
    let mut entries = random_entries(&mut rng, 50);
    // Several gzip blocks' worth of data.
    entries.push(Entry::new(
        "big",
        EntryKind::File(FileSource::Bytes(rng.bytes(3 * gzip::MAX_BLOCK + 17))),
    ));
    let (info, blob) = layer(entries, &LayerOptions::default());
    run(Command::new("gzip").arg("-t"), &blob);
    let decoded = run(Command::new("gzip").arg("-dc"), &blob);
    assert_eq!(decoded.len() as u64, info.uncompressed_size);
    let listing = String::from_utf8(run(Command::new("tar").args(["-tzvf", "-"]), &blob)).unwrap();
    assert!(
        listing.lines().any(|l| l.ends_with(" big") && l.contains("0/0")),
        "{listing}"
    );
    // flate2's single-member decoder reads it all.
    let mut single = Vec::new();
    flate2::read::GzDecoder::new(blob.as_slice())
        .read_to_end(&mut single)
        .unwrap();
    assert_eq!(single.len() as u64, info.uncompressed_size);
}

#[test]
fn system_tar_reads_pax_names_owners_and_xattrs() {
    let mut file = Entry::new(
        format!("{}/deep.txt", "d".repeat(140)),
        EntryKind::File(FileSource::Bytes(b"x".to_vec())),
    );
    file.uid = 5_000_000;
    file.xattrs.insert("user.k".to_owned(), b"line1\nline2".to_vec());
    let (_, tar) = layer(
        vec![file],
        &LayerOptions {
            compression: Compression::None,
            ..LayerOptions::default()
        },
    );
    let listing = String::from_utf8(run(
        Command::new("tar").args(["--numeric-owner", "-tvf", "-"]),
        &tar,
    ))
    .unwrap();
    assert!(listing.contains("5000000/0"), "{listing}");
    assert!(
        listing.contains(&format!("{}/deep.txt", "d".repeat(140))),
        "{listing}"
    );
    let dest = tempfile::tempdir().unwrap();
    run(
        Command::new("tar")
            .args(["--xattrs", "--xattrs-include=user.*", "-xf", "-", "-C"])
            .arg(dest.path()),
        &tar,
    );
    let path = dest.path().join("d".repeat(140)).join("deep.txt");
    let value = rustix::fs::lgetxattr(&path, "user.k", &mut [0u8; 64][..]).unwrap();
    assert_eq!(value, 11);
}

/// A tar built entry by entry from raw headers, so names can be anything.
fn raw_tar(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    use crate::header::{BLOCK, Header};
    let none = BTreeMap::new();
    let mut out = Vec::new();
    for (name, flag, link, content) in entries {
        let header = Header {
            name,
            flag: *flag,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: content.len() as u64,
            mtime: 0,
            link,
            device: (0, 0),
            xattrs: &none,
        };
        crate::header::append_entry(&mut out, &header, content);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

/// Name, type flag, link target and content of a raw tar entry.
type RawSpec = (String, u8, String, &'static [u8]);

#[test]
fn hostile_layers_are_refused_and_write_nothing_outside() {
    use crate::header::flag::{DIR, FILE, HARDLINK, SYMLINK};
    let probe = format!("rbuild-layer-escape-{}", std::process::id());
    let abs_probe = format!("/tmp/{probe}");
    let cases: Vec<(&str, Vec<RawSpec>)> = vec![
        (
            "dot-dot",
            vec![(format!("../{probe}"), FILE, String::new(), b"x")],
        ),
        (
            "nested dot-dot",
            vec![
                ("a".into(), DIR, String::new(), b""),
                (format!("a/../../{probe}"), FILE, String::new(), b"x"),
            ],
        ),
        ("absolute", vec![(abs_probe.clone(), FILE, String::new(), b"x")]),
        (
            "symlink to / then through it",
            vec![
                ("a".into(), SYMLINK, "/".into(), b""),
                (format!("a/tmp/{probe}"), FILE, String::new(), b"x"),
            ],
        ),
        (
            "symlink to .. then through it",
            vec![
                ("a".into(), SYMLINK, "..".into(), b""),
                (format!("a/{probe}"), FILE, String::new(), b"x"),
            ],
        ),
        (
            "symlink inside, then through it",
            vec![
                ("real".into(), DIR, String::new(), b""),
                ("a".into(), SYMLINK, "real".into(), b""),
                ("a/f".into(), FILE, String::new(), b"x"),
            ],
        ),
        (
            "directory through a symlink",
            vec![
                ("a".into(), SYMLINK, "/tmp".into(), b""),
                (format!("a/{probe}"), DIR, String::new(), b""),
            ],
        ),
        (
            "hard link out",
            vec![("h".into(), HARDLINK, "../../etc/shadow".into(), b"")],
        ),
        (
            "hard link absolute",
            vec![("h".into(), HARDLINK, "/etc/passwd".into(), b"")],
        ),
        (
            "hard link through a symlink",
            vec![
                ("s".into(), SYMLINK, "/etc".into(), b""),
                ("h".into(), HARDLINK, "s/passwd".into(), b""),
            ],
        ),
        (
            "hard link to nothing",
            vec![("h".into(), HARDLINK, "missing".into(), b"")],
        ),
        (
            "whiteout of ..",
            vec![("a/.wh...".into(), FILE, String::new(), b"")],
        ),
        (
            "whiteout through a symlink",
            vec![
                ("a".into(), SYMLINK, "/tmp".into(), b""),
                (format!("a/.wh.{probe}"), FILE, String::new(), b""),
            ],
        ),
        ("file as the root", vec![("./".into(), FILE, String::new(), b"x")]),
    ];
    for (what, spec) in cases {
        let borrowed: Vec<(&str, u8, &str, &[u8])> = spec
            .iter()
            .map(|(n, f, l, c)| (n.as_str(), *f, l.as_str(), *c))
            .collect();
        let tar = raw_tar(&borrowed);
        let sandbox = tempfile::tempdir().unwrap();
        let dest = sandbox.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        // A file to whiteout, if a whiteout escaped.
        std::fs::write(&abs_probe, b"keep").unwrap();
        for mode in [WhiteoutMode::Apply, WhiteoutMode::Overlay] {
            let err = unpack_into(&tar, &dest, mode).expect_err(what);
            assert!(
                matches!(err, LayerError::UnsafeEntry { .. }),
                "{what}: wrong error {err}"
            );
        }
        assert!(!sandbox.path().join(&probe).exists(), "{what}: wrote outside");
        assert_eq!(
            std::fs::read(&abs_probe).unwrap(),
            b"keep",
            "{what}: touched /tmp"
        );
        assert!(!dest.join("real/f").exists(), "{what}: wrote through a link");
        let _ = std::fs::remove_file(&abs_probe);
    }
}

#[test]
fn planted_links_are_replaced_not_followed() {
    let sandbox = tempfile::tempdir().unwrap();
    let outside = sandbox.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"keep").unwrap();
    let dest = sandbox.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), dest.join("f")).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("d")).unwrap();
    use crate::header::flag::{DIR, FILE};
    let tar = raw_tar(&[("d", DIR, "", b""), ("f", FILE, "", b"new")]);
    unpack_into(&tar, &dest, WhiteoutMode::Apply).unwrap();
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"keep");
    assert!(dest.join("d").symlink_metadata().unwrap().is_dir());
    assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"new");
}

#[test]
fn truncated_or_corrupt_layers_are_errors() {
    let mut rng = Rng(5);
    let (_, blob) = layer(random_entries(&mut rng, 40), &LayerOptions::default());
    let dest = tempfile::tempdir().unwrap();
    assert!(unpack_into(&blob[..blob.len() / 2], dest.path(), WhiteoutMode::Apply).is_err());
    let mut bad_crc = blob.clone();
    let at = bad_crc.len() - 6;
    bad_crc[at] ^= 0xff;
    let dest = tempfile::tempdir().unwrap();
    assert!(
        unpack_into(&bad_crc, dest.path(), WhiteoutMode::Apply).is_err(),
        "the gzip trailer is checked"
    );
}

fn whiteout_layer() -> Vec<u8> {
    let marker = |path: &str| Entry {
        mode: 0,
        ..Entry::new(path, EntryKind::File(FileSource::Bytes(Vec::new())))
    };
    let entries = vec![
        marker(".wh.b"),
        Entry::new("a", EntryKind::Dir),
        marker("a/.wh..wh..opq"),
        Entry::new("a/new", EntryKind::File(FileSource::Bytes(b"n".to_vec()))),
        Entry::new("a/sub", EntryKind::Dir),
        Entry::new("a/sub/deeper", EntryKind::File(FileSource::Bytes(b"d".to_vec()))),
        marker("c/.wh.d"),
        marker(".wh..wh.plnk"),
    ];
    layer(entries, &LayerOptions::default()).1
}

#[test]
fn whiteouts_apply_onto_a_merged_tree() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    for dir in ["a/old", "a/sub", "c/d/e", "keep"] {
        std::fs::create_dir_all(d.join(dir)).unwrap();
    }
    for file in ["a/x", "a/old/y", "a/sub/lower", "b", "c/f", "keep/k"] {
        std::fs::write(d.join(file), b"lower").unwrap();
    }
    let stats = unpack_into(&whiteout_layer(), d, WhiteoutMode::Apply).unwrap();
    assert_eq!(stats.whiteouts, 3);
    let mut left: Vec<String> = walk(d);
    left.sort();
    assert_eq!(
        left,
        [
            "a",
            "a/new",
            "a/sub",
            "a/sub/deeper",
            "c",
            "c/f",
            "keep",
            "keep/k"
        ]
    );
}

#[test]
fn whiteouts_stored_as_overlayfs_does_and_read_back() {
    if !is_root() {
        eprintln!("overlay whiteouts need root here: skipped");
        return;
    }
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    unpack_into(&whiteout_layer(), d, WhiteoutMode::Overlay).unwrap();
    let meta = std::fs::symlink_metadata(d.join("b")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(meta.file_type().is_char_device() && meta.rdev() == 0);
    assert!(
        std::fs::symlink_metadata(d.join("c/d"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    let mut value = [0u8; 4];
    let n = rustix::fs::lgetxattr(d.join("a"), "trusted.overlay.opaque", &mut value[..]).unwrap();
    assert_eq!(&value[..n], b"y");
    assert!(!d.join(".wh..wh.plnk").exists());

    // Read back as an upper directory, the whiteouts are OCI ones again.
    let entries = entries_from_dir(
        d,
        &DirOptions {
            overlay_whiteouts: true,
        },
    )
    .unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            ".wh.b",
            "a",
            "a/.wh..wh..opq",
            "a/new",
            "a/sub",
            "a/sub/deeper",
            "c",
            "c/.wh.d"
        ]
    );
    let marker = &entries[0];
    assert_eq!((marker.mode, marker.uid, marker.gid, marker.mtime), (0, 0, 0, 0));
    assert_eq!(marker.kind, EntryKind::File(FileSource::Bytes(Vec::new())));
    assert!(
        entries
            .iter()
            .all(|e| !e.xattrs.keys().any(|k| k.contains("overlay")))
    );
}

#[test]
fn overlay_redirects_are_errors() {
    if !is_root() {
        return;
    }
    let upper = tempfile::tempdir().unwrap();
    std::fs::create_dir(upper.path().join("moved")).unwrap();
    rustix::fs::lsetxattr(
        upper.path().join("moved"),
        "trusted.overlay.redirect",
        b"/old",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let err = entries_from_dir(
        upper.path(),
        &DirOptions {
            overlay_whiteouts: true,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("redirect_dir"), "{err}");
}

#[test]
fn dir_entries_detect_hardlinks_and_skip_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("z"), b"data").unwrap();
    std::fs::hard_link(d.join("z"), d.join("m")).unwrap();
    std::fs::hard_link(d.join("z"), d.join("a")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
    let entries = entries_from_dir(d, &DirOptions::default()).unwrap();
    let kinds: Vec<(&str, &EntryKind)> = entries.iter().map(|e| (e.path.as_str(), &e.kind)).collect();
    assert_eq!(kinds.len(), 3);
    assert_eq!(kinds[0], ("a", &EntryKind::File(FileSource::Path(d.join("a")))));
    assert_eq!(kinds[1], ("m", &EntryKind::Hardlink("a".into())));
    assert_eq!(kinds[2], ("z", &EntryKind::Hardlink("a".into())));
}

#[test]
fn devices_need_root() {
    use crate::header::flag::CHAR;
    let tar = raw_tar(&[("dev/null", CHAR, "", b"")]);
    let dest = tempfile::tempdir().unwrap();
    let result = crate::unpack::Unpacker::new(
        dest.path(),
        &UnpackOptions {
            whiteouts: WhiteoutMode::Apply,
            same_owner: false,
        },
        crate::unpack::Flavor::Layer,
    )
    .unwrap()
    .unprivileged()
    .run(tar.as_slice());
    assert!(
        matches!(result, Err(LayerError::Unsupported { .. })),
        "{result:?}"
    );
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for child in std::fs::read_dir(&dir).unwrap() {
            let path = child.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if path.symlink_metadata().unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

/// Reads a gzip layer on stdin with Go's `compress/gzip` (one member only) and
/// `archive/tar`, as docker and containerd do, and prints one line per entry.
const GO_READER: &str = r#"package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

func main() {
	in := bufio.NewReader(os.Stdin)
	zr, err := gzip.NewReader(in)
	if err != nil {
		panic(err)
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		sum := sha256.New()
		if _, err := io.Copy(sum, tr); err != nil {
			panic(err)
		}
		var xattrs []string
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				xattrs = append(xattrs, fmt.Sprintf("%s=%x", k[13:], v))
			}
		}
		sort.Strings(xattrs)
		fmt.Printf("%s|%c|%d|%d|%d|%o|%d|%s|%q|%q|%s|%x\n", h.Name, h.Typeflag, h.Size, h.Uid, h.Gid, h.Mode,
			h.ModTime.Unix(), h.Linkname, h.Uname, h.Gname, strings.Join(xattrs, ","), sum.Sum(nil))
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		panic(err)
	}
	if rest, _ := io.ReadAll(in); len(rest) != 0 {
		panic(fmt.Sprintf("%d bytes after the gzip member", len(rest)))
	}
}
"#;

#[test]
fn go_reads_gzip_layers_as_docker_does() {
    if Command::new("go").arg("version").output().is_err() {
        eprintln!("go is not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.go"), GO_READER).unwrap();
    let mut rng = Rng(2024);
    let mut entries = random_entries(&mut rng, 120);
    entries.push(Entry::new(
        "big",
        EntryKind::File(FileSource::Bytes(rng.bytes(3 * gzip::MAX_BLOCK + 5))),
    ));
    let (_, blob) = layer(entries.clone(), &LayerOptions::default());
    let output = run(
        Command::new("go")
            .args(["run", "main.go"])
            .current_dir(dir.path())
            .env("GOCACHE", dir.path().join("cache"))
            .env("GOPATH", dir.path().join("gopath"))
            .env("GOFLAGS", "-mod=mod")
            .env("GO111MODULE", "off"),
        &blob,
    );
    let got = String::from_utf8(output).unwrap();
    let want: String = canonical(entries)
        .unwrap()
        .iter()
        .map(|e| {
            let (flag, size, link, content): (char, usize, &str, &[u8]) = match &e.kind {
                EntryKind::File(FileSource::Bytes(b)) => ('0', b.len(), "", b),
                EntryKind::Dir => ('5', 0, "", b""),
                EntryKind::Symlink(t) => ('2', 0, t, b""),
                EntryKind::Hardlink(t) => ('1', 0, t, b""),
                EntryKind::CharDevice { .. } => ('3', 0, "", b""),
                EntryKind::Fifo => ('6', 0, "", b""),
                other => panic!("not generated: {other:?}"),
            };
            let name = if flag == '5' {
                format!("{}/", e.path)
            } else {
                e.path.clone()
            };
            let xattrs: Vec<String> = e.xattrs.iter().map(|(k, v)| format!("{k}={}", hex(v))).collect();
            format!(
                "{name}|{flag}|{size}|{}|{}|{:o}|{}|{link}|\"\"|\"\"|{}|{}\n",
                e.uid,
                e.gid,
                e.mode,
                e.mtime,
                xattrs.join(","),
                rbuild_oci::Digest::sha256_of(content).hex()
            )
        })
        .collect();
    assert_eq!(got, want);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unpack_pooled_into(blob: &[u8], dest: &Path, pool: &FilePool) -> Result<UnpackStats, LayerError> {
    let reader = decompressed(std::io::Cursor::new(blob.to_vec()))?;
    let options = UnpackOptions {
        whiteouts: WhiteoutMode::Overlay,
        same_owner: is_root(),
    };
    unpack_pooled(reader, dest, &options, pool)
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    path.symlink_metadata().unwrap().ino()
}

#[test]
fn pooled_unpacks_share_files_and_read_back_the_same() {
    let mut rng = Rng(77);
    let entries = random_entries(&mut rng, 80);
    let (_, blob) = layer(entries, &LayerOptions::default());
    let store = tempfile::tempdir().unwrap();
    let pool = FilePool::open(&store.path().join("pool")).unwrap();
    let (plain, first, second) = (
        store.path().join("plain"),
        store.path().join("a"),
        store.path().join("b"),
    );
    for dir in [&plain, &first, &second] {
        std::fs::create_dir(dir).unwrap();
    }
    let written = unpack_into(&blob, &plain, WhiteoutMode::Overlay).unwrap();
    let stats = unpack_pooled_into(&blob, &first, &pool).unwrap();
    assert_eq!(
        (stats.files, stats.pooled),
        (written.files, 0),
        "an empty pool lends nothing"
    );
    let stats = unpack_pooled_into(&blob, &second, &pool).unwrap();
    assert!(stats.pooled > 0 && stats.pooled == stats.files, "{stats:?}");

    let summaries = |dir: &Path| read_back(dir).iter().map(summary).collect::<Vec<_>>();
    assert_eq!(summaries(&first), summaries(&plain));
    assert_eq!(summaries(&second), summaries(&plain));
    let file = walk(&second)
        .into_iter()
        .find(|p| second.join(p).symlink_metadata().unwrap().file_type().is_file())
        .expect("the layer has a regular file");
    assert_eq!(inode(&second.join(&file)), inode(&first.join(&file)));
}

#[test]
fn pool_keys_cover_path_and_metadata() {
    let file = |path: &str, mode: u32| {
        let mut entry = Entry::new(path, EntryKind::File(FileSource::Bytes(b"same bytes\n".to_vec())));
        entry.mode = mode;
        entry.mtime = 1_700_000_000;
        entry
    };
    let store = tempfile::tempdir().unwrap();
    let pool = FilePool::open(&store.path().join("pool")).unwrap();
    let first = layer(vec![file("a", 0o644), file("b", 0o644)], &LayerOptions::default()).1;
    let second = layer(vec![file("a", 0o755), file("b", 0o644)], &LayerOptions::default()).1;
    let (one, two) = (store.path().join("one"), store.path().join("two"));
    std::fs::create_dir(&one).unwrap();
    std::fs::create_dir(&two).unwrap();
    unpack_pooled_into(&first, &one, &pool).unwrap();
    let stats = unpack_pooled_into(&second, &two, &pool).unwrap();

    assert_ne!(
        inode(&one.join("a")),
        inode(&one.join("b")),
        "same content, other path: not linked"
    );
    assert_ne!(
        inode(&one.join("a")),
        inode(&two.join("a")),
        "other mode: not shared"
    );
    assert_eq!(inode(&one.join("b")), inode(&two.join("b")));
    assert_eq!(stats.pooled, 1);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        two.join("a").metadata().unwrap().permissions().mode() & 0o7777,
        0o755
    );
}

#[test]
fn pooled_unpack_refuses_truncated_files() {
    let entry = Entry::new("f", EntryKind::File(FileSource::Bytes(vec![7; 5000])));
    let (_, blob) = layer(
        vec![entry],
        &LayerOptions {
            compression: Compression::None,
            ..LayerOptions::default()
        },
    );
    let store = tempfile::tempdir().unwrap();
    let pool = FilePool::open(&store.path().join("pool")).unwrap();
    let dest = store.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let error = unpack_pooled_into(&blob[..3000], &dest, &pool).unwrap_err();
    let error = rbuild_oci::report::chain(&error);
    assert!(error.contains("truncated"), "{error}");
}

#[test]
fn the_tap_gets_the_uncompressed_tar_and_its_failure_is_harmless() {
    let mut rng = Rng(31);
    let entries = random_entries(&mut rng, 30);
    for compression in [
        Compression::None,
        Compression::default(),
        Compression::Zstd { level: 3 },
    ] {
        let options = LayerOptions {
            compression,
            ..LayerOptions::default()
        };
        let (info, blob) = layer(entries.clone(), &options);
        // The layer written with `tap`, which must be the same as without.
        let with_tap = |tap: &mut (dyn Write + Send)| {
            let mut out = Vec::new();
            let extras = Extras {
                previous: None,
                tap: Some(tap),
            };
            let written = write_layer_with(
                entries.clone(),
                &options,
                extras,
                &mut HashingWriter::new(&mut out),
            )
            .unwrap();
            assert_eq!(written, info, "{compression:?}");
            assert!(out == blob, "{compression:?}: the tap changed the blob");
        };
        let mut tar = Vec::new();
        with_tap(&mut tar);
        let mut plain = Vec::new();
        decompressed(std::io::Cursor::new(blob.clone()))
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert!(tar == plain, "{compression:?}: the tap got other bytes");

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("no space"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        with_tap(&mut Full);
    }
}
