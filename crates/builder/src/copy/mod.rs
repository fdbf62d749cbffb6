//! COPY and ADD: which files go where, with which owner and mode, by docker's rules.
//!
//! Planning happens in two steps. [`select`] finds what the sources name (wildcards matched,
//! a top-level symlink followed, directories expanded) and reports each file's type, mode and
//! content digest: that is all the cache key needs. Only on a cache miss does [`entries`] lay
//! the selection out at its destination as layer entries, which needs the stage's current
//! filesystem (does the destination exist as a directory? which parent directories exist, and
//! with what owner and mode?).

mod layout;
mod select;

pub use layout::{Layout, add_parents, entries};
pub use select::{Node, NodeKind, Origin, Selected, Selection, context_roots, select, select_rootfs};

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::Path;

    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    use rbuild_dockerfile::plan::CopyStep;
    use rbuild_layer::{Entry, EntryKind, FileSource};

    use super::*;
    use crate::context::Context;
    use crate::error::{BuildError, Result};
    use crate::owner::Owner;
    use crate::rootfs::RootfsView;
    use crate::statcache::StatCache;
    use crate::test_plan::copy_step;

    /// Writes `files` under `dir`: a content starting with `->` makes a symlink to the rest,
    /// a path ending in `/` a directory; files get mode 0644, directories 0755, whatever the
    /// umask.
    fn write_tree(dir: &Path, files: &[(&str, &str)]) {
        for (path, content) in files {
            let full = dir.join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            if let Some(target) = content.strip_prefix("->") {
                symlink(target, &full).unwrap();
            } else if path.ends_with('/') {
                fs::create_dir_all(&full).unwrap();
            } else {
                fs::write(&full, content).unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        for entry in walk(dir) {
            let meta = fs::symlink_metadata(&entry).unwrap();
            if meta.is_dir() {
                fs::set_permissions(&entry, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
    }

    /// Every path below `dir`.
    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
        out
    }

    /// The entries as `path what mode uid:gid` lines, `what` being `dir`, `file:<content>`
    /// or `link:<target>`.
    fn render(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                let what = match &e.kind {
                    EntryKind::Dir => "dir".to_owned(),
                    EntryKind::File(FileSource::Path(disk)) => {
                        format!("file:{}", fs::read_to_string(disk).unwrap())
                    }
                    EntryKind::File(FileSource::Bytes(bytes)) => {
                        format!("file:{}", String::from_utf8_lossy(bytes))
                    }
                    EntryKind::Symlink(target) => format!("link:{target}"),
                    other => format!("{other:?}"),
                };
                format!("{} {what} {:o} {}:{}", e.path, e.mode, e.uid, e.gid)
            })
            .collect()
    }

    /// A scanned context holding `files`, with what `step` copies hashed.
    fn hashed_context(dir: &Path, step: &CopyStep) -> Result<Arc<Context>> {
        let context = Context::scan(dir, None)?;
        let roots = context_roots(step, &context)?;
        context.hash(&roots, &StatCache::load(&dir.join(".statcache")))?;
        Ok(Arc::new(context))
    }

    /// What `step` writes when it copies from `origin` onto `below` (`None`: as `--link`
    /// does, without looking), as [`render`] shows it.
    fn laid_out(
        step: &CopyStep,
        origin: &Origin<'_>,
        below: Option<&RootfsView>,
        owner: Option<Owner>,
    ) -> Result<Vec<String>> {
        let selection = select(step, origin)?;
        let layout = Layout {
            step,
            owner,
            below,
            now: 1_700_000_000,
        };
        Ok(render(&entries(&selection, &layout)?))
    }

    /// What `instruction` writes when it copies from the context `dir` (see [`laid_out`]).
    fn copied_from(
        dir: &Path,
        instruction: &str,
        below: Option<&RootfsView>,
        owner: Option<Owner>,
    ) -> Result<Vec<String>> {
        let step = copy_step(instruction);
        let context = hashed_context(dir, &step)?;
        laid_out(&step, &Origin::Context(&context), below, owner)
    }

    /// What `instruction` writes when it copies from a context of `files` (see [`laid_out`]).
    fn copied(
        instruction: &str,
        files: &[(&str, &str)],
        below: Option<&RootfsView>,
        owner: Option<Owner>,
    ) -> Result<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        write_tree(dir.path(), files);
        copied_from(dir.path(), instruction, below, owner)
    }

    /// A filesystem of one layer holding `files` (see [`write_tree`]).
    fn rootfs(files: &[(&str, &str)]) -> (tempfile::TempDir, RootfsView) {
        let dir = tempfile::tempdir().unwrap();
        write_tree(dir.path(), files);
        let view = RootfsView::new(vec![dir.path().to_owned()]);
        (dir, view)
    }

    const FILES: &[(&str, &str)] = &[
        ("a.txt", "a"),
        ("b.txt", "b"),
        ("c.md", "c"),
        ("src/x", "x"),
        ("src/sub/y", "y"),
    ];

    #[test]
    fn a_wildcard_copies_each_match_into_the_directory() {
        assert_eq!(
            copied("COPY *.txt /dst/", FILES, None, None).unwrap(),
            [
                "dst dir 755 0:0",
                "dst/a.txt file:a 644 0:0",
                "dst/b.txt file:b 644 0:0"
            ]
        );
        assert_eq!(
            copied("COPY s*/*/y /dst/", FILES, None, None).unwrap(),
            ["dst dir 755 0:0", "dst/y file:y 644 0:0"]
        );
        let none = copied("COPY *.rs /dst/", FILES, None, None).unwrap_err();
        assert!(matches!(none, BuildError::SourceNotFound(_)), "{none}");
    }

    #[test]
    fn a_directory_source_copies_its_contents_not_itself() {
        assert_eq!(
            copied("COPY src /app", FILES, None, None).unwrap(),
            [
                "app dir 755 0:0",
                "app/sub dir 755 0:0",
                "app/sub/y file:y 644 0:0",
                "app/x file:x 644 0:0"
            ]
        );
        // Into a directory that exists, the directory keeps its own mode, not 0755.
        let (below_dir, below) = rootfs(&[("app/", "")]);
        fs::set_permissions(below_dir.path().join("app"), fs::Permissions::from_mode(0o700)).unwrap();
        let into_existing = copied("COPY src /app", FILES, Some(&below), None).unwrap();
        assert!(into_existing[0].starts_with("app dir 700 "), "{into_existing:?}");
        assert_eq!(
            into_existing[1..],
            copied("COPY src /app", FILES, None, None).unwrap()[1..]
        );
    }

    #[test]
    fn a_trailing_slash_or_an_existing_directory_makes_the_destination_a_directory() {
        assert_eq!(
            copied("COPY a.txt /out", FILES, None, None).unwrap(),
            ["out file:a 644 0:0"]
        );
        assert_eq!(
            copied("COPY a.txt /out/", FILES, None, None).unwrap(),
            ["out dir 755 0:0", "out/a.txt file:a 644 0:0"]
        );
        // An existing directory keeps its own mode as the parent of what is copied into it.
        let (below_dir, below) = rootfs(&[("out/", "")]);
        fs::set_permissions(below_dir.path().join("out"), fs::Permissions::from_mode(0o1777)).unwrap();
        let into = copied("COPY a.txt /out", FILES, Some(&below), None).unwrap();
        assert_eq!(into[1], "out/a.txt file:a 644 0:0");
        assert!(into[0].starts_with("out dir 1777 "), "{into:?}");
        // A link to a directory receives the file where it points.
        let (_dir, linked) = rootfs(&[("real/", ""), ("out", "->real")]);
        let through = copied("COPY a.txt /out", FILES, Some(&linked), None).unwrap();
        assert!(
            through.iter().any(|e| e.starts_with("real/a.txt file:a")),
            "{through:?}"
        );
        // More than one source needs a directory written as one.
        let two = copied("COPY a.txt b.txt /out", FILES, None, None).unwrap_err();
        assert!(
            two.to_string().contains("must be a directory and end with a /"),
            "{two}"
        );
    }

    #[test]
    fn chown_owns_the_files_and_the_directories_it_creates_not_existing_ones() {
        let (_below_dir, below) = rootfs(&[("usr/", "")]);
        let user = Owner { uid: 1000, gid: 2000 };
        let lines = copied("COPY src/x /usr/new/x", FILES, Some(&below), Some(user)).unwrap();
        let existing_owner = {
            let usr = below.lookup("usr").unwrap();
            format!("{}:{}", usr.meta.uid(), usr.meta.gid())
        };
        assert_eq!(
            lines,
            [
                format!("usr dir 755 {existing_owner}"),
                "usr/new dir 755 1000:2000".to_owned(),
                "usr/new/x file:x 644 1000:2000".to_owned()
            ]
        );
    }

    #[test]
    fn context_files_become_roots_and_files_from_a_stage_keep_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        write_tree(dir.path(), FILES);
        // As root, give the files an owner of their own; otherwise they have ours, not root.
        let _ = std::os::unix::fs::chown(dir.path().join("a.txt"), Some(1234), Some(1234));
        let on_disk = fs::metadata(dir.path().join("a.txt")).unwrap();
        assert_ne!(on_disk.uid(), 0, "the test needs a file not owned by root");

        assert_eq!(
            copied_from(dir.path(), "COPY a.txt /a", None, None).unwrap(),
            ["a file:a 644 0:0"]
        );

        let view = RootfsView::new(vec![dir.path().to_owned()]);
        let stage = Origin::Rootfs {
            view: &view,
            name: "stage build",
        };
        let kept = format!("a file:a 644 {}:{}", on_disk.uid(), on_disk.gid());
        assert_eq!(
            laid_out(&copy_step("COPY a.txt /a"), &stage, None, None).unwrap(),
            [kept]
        );
        let missing = laid_out(&copy_step("COPY nope /a"), &stage, None, None).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "nope: no such file or directory in stage build"
        );
    }

    #[test]
    fn chmod_sets_octal_modes_and_applies_symbolic_ones_per_file() {
        let files = &[("src/x", "x"), ("src/run", "r"), ("src/sub/", "")];
        let octal = copied("COPY --chmod=0600 src /app/", files, None, None).unwrap();
        assert_eq!(
            octal,
            [
                "app dir 755 0:0",
                "app/run file:r 600 0:0",
                "app/sub dir 600 0:0",
                "app/x file:x 600 0:0"
            ]
        );
        // X: execute for directories and files already executable by someone.
        let tmp = tempfile::tempdir().unwrap();
        write_tree(tmp.path(), files);
        fs::set_permissions(tmp.path().join("src/run"), fs::Permissions::from_mode(0o744)).unwrap();
        assert_eq!(
            copied_from(tmp.path(), "COPY --chmod=go-r,a+X src /app/", None, None).unwrap(),
            [
                "app dir 755 0:0",
                "app/run file:r 711 0:0",
                "app/sub dir 711 0:0",
                "app/x file:x 600 0:0"
            ]
        );
    }

    #[test]
    fn parents_keeps_the_source_path_below_the_destination() {
        let files = &[("a/b/c.txt", "c"), ("a/b/d/e", "e")];
        assert_eq!(
            copied("COPY --parents a/b/c.txt /dst/", files, None, None).unwrap(),
            [
                "dst dir 755 0:0",
                "dst/a dir 755 0:0",
                "dst/a/b dir 755 0:0",
                "dst/a/b/c.txt file:c 644 0:0"
            ]
        );
        // `/./` marks where the kept part starts.
        assert_eq!(
            copied("COPY --parents a/./b/c.txt /dst/", files, None, None).unwrap(),
            [
                "dst dir 755 0:0",
                "dst/b dir 755 0:0",
                "dst/b/c.txt file:c 644 0:0"
            ]
        );
    }

    #[test]
    fn links_inside_a_copied_directory_are_copied_as_links() {
        let files = &[("d/f", "f"), ("d/abs", "->/etc/passwd"), ("d/up", "->../../../x")];
        assert_eq!(
            copied("COPY d /d", files, None, None).unwrap(),
            [
                "d dir 755 0:0",
                "d/abs link:/etc/passwd 777 0:0",
                "d/f file:f 644 0:0",
                "d/up link:../../../x 777 0:0"
            ]
        );
    }

    #[test]
    fn a_source_link_is_followed_only_inside_the_context() {
        let files = &[
            ("a.txt", "a"),
            ("inside", "->a.txt"),
            ("etc-passwd", "->/etc/passwd"),
            ("climb", "->../../../../etc/passwd"),
        ];
        assert_eq!(
            copied("COPY inside /x", files, None, None).unwrap(),
            ["x file:a 644 0:0"]
        );
        // Absolute and climbing targets resolve against the context root, where there is no
        // etc/passwd: the host's is never read.
        for link in ["etc-passwd", "climb"] {
            let err = copied(&format!("COPY {link} /x"), files, None, None).unwrap_err();
            assert!(matches!(err, BuildError::SourceNotFound(_)), "{link}: {err}");
        }
    }

    #[test]
    fn a_source_outside_the_context_is_refused() {
        for source in ["../outside", "src/../../outside"] {
            let err = copied(&format!("COPY {source} /x"), FILES, None, None).unwrap_err();
            assert!(matches!(err, BuildError::OutsideContext(_)), "{source}: {err}");
        }
    }

    #[test]
    fn excluded_paths_and_heredocs() {
        assert_eq!(
            copied("COPY --exclude=*.md --exclude=src/sub . /app/", FILES, None, None).unwrap(),
            [
                "app dir 755 0:0",
                "app/a.txt file:a 644 0:0",
                "app/b.txt file:b 644 0:0",
                "app/src dir 755 0:0",
                "app/src/x file:x 644 0:0"
            ]
        );
        let inline = copied("COPY <<EOF /etc/motd\nhello\nEOF", FILES, None, None).unwrap();
        assert_eq!(inline, ["etc dir 755 0:0", "etc/motd file:hello\n 644 0:0"]);
    }

    #[test]
    fn the_digest_covers_paths_types_modes_and_contents_but_not_mtimes() {
        let digest = |files: &[(&str, &str)], touch: Option<i64>| {
            let dir = tempfile::tempdir().unwrap();
            write_tree(dir.path(), files);
            if let Some(secs) = touch {
                let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
                fs::File::options()
                    .write(true)
                    .open(dir.path().join("src/x"))
                    .unwrap()
                    .set_modified(time)
                    .unwrap();
            }
            let step = copy_step("COPY src /app");
            let context = hashed_context(dir.path(), &step).unwrap();
            select(&step, &Origin::Context(&context))
                .unwrap()
                .digest()
                .unwrap()
        };
        let base = digest(FILES, None);
        assert_eq!(
            digest(FILES, Some(1_000)),
            base,
            "an mtime does not change the key"
        );
        let changed: Vec<(&str, &str)> = FILES
            .iter()
            .map(|&(p, c)| if p == "src/x" { (p, "changed") } else { (p, c) })
            .collect();
        assert_ne!(digest(&changed, None), base);
        let renamed: Vec<(&str, &str)> = FILES
            .iter()
            .map(|&(p, c)| if p == "src/x" { ("src/z", c) } else { (p, c) })
            .collect();
        assert_ne!(digest(&renamed, None), base);
    }
}
