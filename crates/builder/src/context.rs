//! The build context: walked once with `.dockerignore` applied, indexed in memory, and hashed
//! in parallel — but only the files some COPY or ADD actually selects are read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;
use rbuild_dockerfile::dockerignore::{Matcher, ParentHits, ignore_file_candidates};
use rbuild_dockerfile::paths;
use rbuild_glob::{has_wildcard, match_component};
use rbuild_oci::{Algorithm, Digest, Hasher};

use crate::error::{BuildError, Result};
use crate::statcache::{StatCache, StatKey};

/// Reads the `.dockerignore` that applies to a build of `context` with `dockerfile`, if any:
/// `<Dockerfile>.dockerignore` beside the Dockerfile, else the context's own (see
/// [`ignore_file_candidates`]). `rbuild build` and `rbuild check` both ask here, so they
/// exclude the same files.
pub fn read_dockerignore(dockerfile: &Path, context: &Path) -> Result<Option<Matcher>> {
    let Some(path) = dockerignore_file(dockerfile, context) else {
        return Ok(None);
    };
    let text =
        fs::read_to_string(&path).map_err(|e| BuildError::io(format!("reading {}", path.display()), e))?;
    Matcher::from_dockerignore(&text)
        .map(Some)
        .map_err(|source| BuildError::IgnoreFile { path, source })
}

/// The `.dockerignore` file that applies to a build of `context` with `dockerfile`, if any
/// (see [`read_dockerignore`]).
pub fn dockerignore_file(dockerfile: &Path, context: &Path) -> Option<PathBuf> {
    ignore_file_candidates(dockerfile, context)
        .into_iter()
        .find(|p| p.is_file())
}

/// What a context entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, with its target as written.
    Symlink(String),
}

/// One entry of the context, as `lstat` saw it.
#[derive(Clone, Debug)]
pub struct ContextFile {
    /// Path relative to the context root, `/`-separated; `""` is the root itself.
    pub path: String,
    /// What it is.
    pub kind: FileKind,
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time, whole seconds.
    pub mtime: i64,
    /// The stat-cache key.
    pub stat: StatKey,
    /// The content digest of a regular file, once [`Context::hash`] has covered it.
    digest: OnceLock<Digest>,
    /// How many entries below it the context holds (directories; 0 for the rest): they
    /// follow it directly.
    below: usize,
}

impl ContextFile {
    fn new(path: String, meta: &fs::Metadata, kind: FileKind) -> ContextFile {
        ContextFile {
            path,
            kind,
            mode: meta.mode() & 0o7777,
            size: meta.size(),
            mtime: meta.mtime(),
            stat: StatKey::of(meta),
            digest: OnceLock::new(),
            below: 0,
        }
    }

    /// The content digest of a regular file, once [`Context::hash`] has covered it.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.get()
    }

    /// The last component of its path.
    fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// A walked, indexed context.
///
/// Entries are kept in walk order — each directory followed by everything below it, siblings
/// in name order — so a directory's descendants are one slice, and a path is found by
/// stepping through its components' siblings. An unchanged 20,000-file context is indexed
/// without a map or a second copy of its paths.
///
/// File digests are filled in place ([`Context::hash`] takes `&self`), so the builds that
/// share a walked context (see [`Contexts`]) share what each hashed.
pub struct Context {
    root: PathBuf,
    entries: Vec<ContextFile>,
    ignore: Option<Matcher>,
    /// Held while hashing: two builds asking for the same files read them once.
    hashing: Mutex<()>,
}

/// Normalises a source path inside the context: `./a/../b/` → `b`. Errors if it climbs out.
pub fn clean_source(source: &str) -> Result<String> {
    paths::clean_inside(source).ok_or_else(|| BuildError::OutsideContext(source.to_owned()))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        return name.to_owned();
    }
    let mut path = String::with_capacity(dir.len() + 1 + name.len());
    path.push_str(dir);
    path.push('/');
    path.push_str(name);
    path
}

/// A walked directory entry and, for a directory, what was kept below it.
struct Walked {
    file: ContextFile,
    below: Vec<Walked>,
}

/// The entries below `dir` that `ignore` leaves in, as a tree ([`flatten`] puts it in walk
/// order: see [`Context`]). Directories are walked in parallel, and entries are `lstat`ed
/// relative to their directory's descriptor (no path lookup from the root for each).
/// Excluded directories are descended into only when a `!` pattern could re-include
/// something below them, and kept only if something was.
fn walk(root: &Path, dir: &str, ignore: Option<&Matcher>, hits: &ParentHits) -> Result<Vec<Walked>> {
    let absolute = root.join(dir);
    let failed = |e| BuildError::io(format!("reading {}", absolute.display()), e);
    let mut entries = Vec::new();
    for entry in fs::read_dir(&absolute).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        match entry.file_name().into_string() {
            Ok(name) => entries.push((name, entry)),
            Err(name) => tracing::warn!("skipping non-UTF-8 file name {name:?} in {}", absolute.display()),
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    // Each entry kept, with whether it is a directory to descend into (and if it is
    // excluded itself).
    let mut kept: Vec<(ContextFile, Option<bool>)> = Vec::with_capacity(entries.len());
    for (name, entry) in entries {
        let path = join(dir, &name);
        let meta = entry
            .metadata()
            .map_err(|e| BuildError::io(format!("reading {}", root.join(&path).display()), e))?;
        let ignored = ignore.is_some_and(|m| m.excluded_in(&path, hits));
        let kind = if meta.is_dir() {
            if ignored && !ignore.is_some_and(|m| m.should_descend(&path)) {
                continue;
            }
            FileKind::Dir
        } else if ignored {
            continue;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(entry.path())
                .map_err(|e| BuildError::io(format!("reading {}", entry.path().display()), e))?;
            FileKind::Symlink(target.to_string_lossy().into_owned())
        } else if meta.is_file() {
            FileKind::File
        } else {
            // Sockets, fifos and devices are not sent by docker either.
            continue;
        };
        let descend = (kind == FileKind::Dir).then_some(ignored);
        kept.push((ContextFile::new(path, &meta, kind), descend));
    }

    // Entries move into the tree once and into the final list once; concatenating each
    // level's list into its parent's moved a file once per directory above it.
    let walked: Vec<Result<(Option<bool>, Walked)>> = kept
        .into_par_iter()
        .map(|(file, descend)| {
            let below = match descend {
                Some(_) => {
                    let hits = ignore.map(|m| m.hits(&file.path, hits)).unwrap_or_default();
                    walk(root, &file.path, ignore, &hits)?
                }
                None => Vec::new(),
            };
            Ok((descend, Walked { file, below }))
        })
        .collect();
    let mut out = Vec::with_capacity(walked.len());
    for walked in walked {
        let (descend, walked) = walked?;
        // An excluded directory stays out unless something below it was re-included.
        if descend != Some(true) || !walked.below.is_empty() {
            out.push(walked);
        }
    }
    Ok(out)
}

/// Appends `tree` to `out` in walk order, counting each directory's descendants; returns how
/// many entries it appended.
fn flatten(tree: Vec<Walked>, out: &mut Vec<ContextFile>) -> usize {
    let start = out.len();
    for Walked { file, below } in tree {
        let at = out.len();
        out.push(file);
        out[at].below = flatten(below, out);
    }
    out.len() - start
}

/// How many entries `tree` holds.
fn count(tree: &[Walked]) -> usize {
    tree.iter().map(|w| 1 + count(&w.below)).sum()
}

fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

impl Context {
    /// Walks `root`, leaving out what `ignore` excludes (but descending into excluded
    /// directories when a `!` pattern could re-include something below them).
    pub fn scan(root: &Path, ignore: Option<Matcher>) -> Result<Context> {
        let root = root
            .canonicalize()
            .map_err(|e| BuildError::io(format!("opening build context {}", root.display()), e))?;
        let meta =
            fs::metadata(&root).map_err(|e| BuildError::io(format!("reading {}", root.display()), e))?;
        if !meta.is_dir() {
            return Err(BuildError::ContextNotDirectory(root));
        }
        let tree = walk(&root, "", ignore.as_ref(), &ParentHits::default())?;
        let mut entries = Vec::with_capacity(count(&tree) + 1);
        entries.push(ContextFile::new(String::new(), &meta, FileKind::Dir));
        entries[0].below = flatten(tree, &mut entries);
        Ok(Context {
            root,
            entries,
            ignore,
            hashing: Mutex::new(()),
        })
    }

    /// The context directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The position in `entries` of the directory children of entry `dir`.
    fn child_indices(&self, dir: usize) -> impl Iterator<Item = usize> + '_ {
        let end = dir + 1 + self.entries[dir].below;
        let mut next = dir + 1;
        std::iter::from_fn(move || {
            let at = next;
            (at < end).then(|| {
                next = at + 1 + self.entries[at].below;
                at
            })
        })
    }

    /// The position of the entry at a cleaned relative path.
    fn position(&self, path: &str) -> Option<usize> {
        if path.is_empty() {
            return Some(0);
        }
        path.split('/').try_fold(0, |dir, name| {
            self.child_indices(dir).find(|&i| self.entries[i].name() == name)
        })
    }

    /// The entry at a cleaned relative path.
    pub fn get(&self, path: &str) -> Option<&ContextFile> {
        self.position(path).map(|i| &self.entries[i])
    }

    /// Whether `.dockerignore` excludes a path (for a clearer "not found" message).
    pub fn is_ignored(&self, path: &str) -> bool {
        self.ignore
            .as_ref()
            .is_some_and(|m| m.matches_or_parent_matches(path))
    }

    /// The direct children of a directory, in name order.
    pub fn children<'a>(&'a self, dir: &str) -> impl Iterator<Item = &'a ContextFile> + 'a {
        self.position(dir)
            .into_iter()
            .flat_map(|dir| self.child_indices(dir))
            .map(|i| &self.entries[i])
    }

    /// Everything below `dir` (not `dir` itself), in walk order.
    pub fn descendants(&self, dir: &str) -> &[ContextFile] {
        self.position(dir)
            .map_or(&[], |i| &self.entries[i + 1..i + 1 + self.entries[i].below])
    }

    /// Follows symlinks to the entry a path finally names, staying inside the context (an
    /// absolute or `..`-climbing target is resolved against the context root, as BuildKit's
    /// chrooted copy does).
    pub fn resolve(&self, path: &str) -> Result<&ContextFile> {
        let mut current = path.to_owned();
        for _ in 0..40 {
            let file = self
                .get(&current)
                .ok_or_else(|| BuildError::SourceNotFound(path.to_owned()))?;
            match &file.kind {
                FileKind::Symlink(target) => {
                    let joined = if target.starts_with('/') {
                        target.clone()
                    } else {
                        format!("{}/{target}", parent(&current))
                    };
                    current = paths::clean_under_root(&joined);
                }
                _ => return Ok(file),
            }
        }
        Err(BuildError::SymlinkLoop(path.to_owned()))
    }

    /// The entries a COPY source names: a path or a pattern with wildcards (matched component
    /// by component, Go-style). Errors if nothing matches.
    pub fn select(&self, source: &str) -> Result<Vec<&ContextFile>> {
        let cleaned = clean_source(source)?;
        if !has_wildcard(&cleaned) {
            return match self.get(&cleaned) {
                Some(file) => Ok(vec![file]),
                None if self.is_ignored(&cleaned) => Err(BuildError::SourceIgnored(source.to_owned())),
                None => Err(BuildError::SourceNotFound(source.to_owned())),
            };
        }
        let mut current: Vec<&ContextFile> = vec![&self.entries[0]];
        for component in cleaned.split('/') {
            let mut next = Vec::new();
            for dir in current {
                let dir = match dir.kind {
                    FileKind::Symlink(_) => self.resolve(&dir.path)?,
                    _ => dir,
                };
                if has_wildcard(component) {
                    next.extend(
                        self.children(&dir.path)
                            .filter(|child| match_component(component, child.name())),
                    );
                } else {
                    next.extend(self.get(&join(&dir.path, component)));
                }
            }
            current = next;
        }
        if current.is_empty() {
            return Err(BuildError::SourceNotFound(source.to_owned()));
        }
        current.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(current)
    }

    /// Content digests of the regular files at and below `roots`, hashed in parallel on all
    /// cores and remembered in the stat cache. Returns how many bytes were actually read.
    pub fn hash(&self, roots: &[String], cache: &StatCache) -> Result<u64> {
        let _hashing = self
            .hashing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut todo = vec![false; self.entries.len()];
        for root in roots {
            if let Some(i) = self.position(root) {
                todo[i..=i + self.entries[i].below].fill(true);
            }
        }
        let root = &self.root;
        self.entries
            .par_iter()
            .enumerate()
            .filter(|(i, file)| todo[*i] && file.kind == FileKind::File && file.digest().is_none())
            .map(|(_, file)| {
                let (digest, read) = match cache.get(&file.stat) {
                    Some(digest) => (digest, 0),
                    None => {
                        let digest = hash_file_of(&root.join(&file.path), Some(file.size))?;
                        cache.insert(file.stat, &digest);
                        (digest, file.size)
                    }
                };
                // Only this thread, holding `hashing`, sets it.
                let _ = file.digest.set(digest);
                Ok(read)
            })
            .try_reduce(|| 0, |a, b| Ok(a + b))
    }

    /// A digest of everything below `dir`: paths, types, modes, link targets and the content
    /// of hashed files. What a RUN's bind mount of the context is keyed by.
    pub fn tree_digest(&self, dir: &str) -> Digest {
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut field = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        for file in self.descendants(dir) {
            field(file.path.as_bytes());
            field(&file.mode.to_le_bytes());
            match (&file.kind, file.digest()) {
                (FileKind::File, Some(digest)) => field(digest.hex().as_bytes()),
                (FileKind::File, None) => field(b"file"),
                (FileKind::Dir, _) => field(b"dir"),
                (FileKind::Symlink(target), _) => {
                    field(b"link");
                    field(target.as_bytes());
                }
            }
        }
        hasher.finalize()
    }

    /// The absolute path of a context entry.
    pub fn absolute(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }
}

/// How a [`Builder`](crate::Builder) comes by its builds' contexts: each build walks its own
/// (a directory may change between builds), or, for a batch of builds over directories that do
/// not change meanwhile (the targets of `rbuild bake`), the first walks a context and the
/// others take it — with the digests of the files it hashed — by directory and `.dockerignore`.
/// Clones share what is kept, so a walk can run on another thread.
#[derive(Clone, Default)]
pub struct Contexts {
    /// The contexts walked so far, when they are kept.
    kept: Option<Arc<Kept>>,
}

/// A context's directory and `.dockerignore` file.
type ContextKey = (PathBuf, Option<PathBuf>);

/// A context being walked by the first build that asked for it, then walked.
type Walking = Mutex<Option<Arc<Context>>>;

/// The contexts a shared [`Contexts`] walked, by directory and ignore file.
type Kept = Mutex<HashMap<ContextKey, Arc<Walking>>>;

impl Contexts {
    /// Contexts shared by every build that asks for the same one (see [`Contexts`]).
    pub fn shared() -> Contexts {
        Contexts {
            kept: Some(Arc::default()),
        }
    }

    /// The context at `root` with `ignore` (read from `ignore_file`) applied: walked now, or
    /// when shared by an earlier build (a build asking while another walks it waits for that
    /// walk).
    pub fn walk(
        &self,
        root: &Path,
        ignore_file: Option<PathBuf>,
        ignore: Option<Matcher>,
    ) -> Result<Arc<Context>> {
        let Some(kept) = &self.kept else {
            return Context::scan(root, ignore).map(Arc::new);
        };
        let key = (
            root.canonicalize().unwrap_or_else(|_| root.to_owned()),
            ignore_file,
        );
        let slot = {
            let mut kept = kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            kept.entry(key).or_default().clone()
        };
        let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(context) = slot.as_ref() {
            return Ok(context.clone());
        }
        let context = Arc::new(Context::scan(root, ignore)?);
        *slot = Some(context.clone());
        Ok(context)
    }
}

/// The SHA-256 of the file at `path`.
pub(crate) fn hash_file(path: &Path) -> Result<Digest> {
    hash_file_of(path, None)
}

/// The SHA-256 of the file at `path`, which the walk saw `len` bytes long when given: reading
/// stops there, sparing the read that finds the end of each of the context's files. What it
/// hashes is what the file held at that stat, which is what the stat cache records it under.
pub(crate) fn hash_file_of(path: &Path, len: Option<u64>) -> Result<Digest> {
    thread_local! {
        /// One read buffer per hashing thread: a fresh 1 MiB buffer per file had the allocator
        /// zero a megabyte for every small file of the context, more work than hashing it.
        static BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; 1 << 20]);
    }
    let mut file =
        fs::File::open(path).map_err(|e| BuildError::io(format!("reading {}", path.display()), e))?;
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut left = len.unwrap_or(u64::MAX);
    BUFFER.with_borrow_mut(|buffer| {
        while left > 0 {
            let want = buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = file
                .read(&mut buffer[..want])
                .map_err(|e| BuildError::io(format!("reading {}", path.display()), e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            left -= n as u64;
        }
        Ok(hasher.finalize())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(files: &[(&str, &str)], dockerignore: Option<&str>) -> (tempfile::TempDir, Context) {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let full = dir.path().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, content).unwrap();
        }
        let ignore = dockerignore.map(|text| Matcher::from_dockerignore(text).unwrap());
        let context = Context::scan(dir.path(), ignore).unwrap();
        (dir, context)
    }

    #[test]
    fn selects_paths_and_wildcards() {
        let (_dir, ctx) = context(
            &[
                ("a.txt", "a"),
                ("b.txt", "b"),
                ("src/main.rs", "m"),
                ("src/lib.rs", "l"),
            ],
            None,
        );
        let names = |v: Vec<&ContextFile>| v.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        assert_eq!(names(ctx.select("*.txt").unwrap()), ["a.txt", "b.txt"]);
        assert_eq!(
            names(ctx.select("./src/*.rs").unwrap()),
            ["src/lib.rs", "src/main.rs"]
        );
        assert_eq!(names(ctx.select("/src").unwrap()), ["src"]);
        assert_eq!(names(ctx.select(".").unwrap()), [""]);
        assert!(matches!(ctx.select("nope"), Err(BuildError::SourceNotFound(_))));
        assert!(matches!(ctx.select("*.md"), Err(BuildError::SourceNotFound(_))));
        assert!(matches!(
            ctx.select("../etc/passwd"),
            Err(BuildError::OutsideContext(_))
        ));
        let all: Vec<&str> = ctx.descendants("").iter().map(|f| f.path.as_str()).collect();
        assert_eq!(all, ["a.txt", "b.txt", "src", "src/lib.rs", "src/main.rs"]);
    }

    #[test]
    fn dockerignore_with_exceptions() {
        let (_dir, ctx) = context(
            &[
                ("keep.txt", "k"),
                ("build/out", "o"),
                ("docs/a.md", "a"),
                ("docs/keep.md", "k"),
            ],
            Some("build\ndocs\n!docs/keep.md\n"),
        );
        assert!(ctx.get("build").is_none());
        assert!(ctx.get("build/out").is_none());
        assert!(ctx.get("docs/a.md").is_none());
        assert!(ctx.get("docs/keep.md").is_some());
        assert!(matches!(
            ctx.select("build/out"),
            Err(BuildError::SourceIgnored(_))
        ));
    }

    #[test]
    fn hashes_in_parallel_and_uses_the_stat_cache() {
        let (dir, ctx) = context(&[("a", "alpha"), ("b", "beta")], None);
        let cache = StatCache::load(&dir.path().join(".cache"));
        let read = ctx.hash(&["a".into(), "b".into()], &cache).unwrap();
        assert_eq!(read, 9);
        assert_eq!(ctx.get("a").unwrap().digest(), Some(&Digest::sha256_of(b"alpha")));
        let again = Context::scan(dir.path(), None).unwrap();
        assert_eq!(
            again.hash(&["a".into(), "b".into()], &cache).unwrap(),
            0,
            "served from the stat cache"
        );
    }

    #[test]
    fn shared_contexts_are_walked_and_hashed_once() {
        let (dir, _) = context(&[("a", "alpha")], None);
        let cache = StatCache::load(&dir.path().join(".cache"));
        let shared = Contexts::shared();
        let first = shared.walk(dir.path(), None, None).unwrap();
        assert_eq!(first.hash(&["a".into()], &cache).unwrap(), 5);
        fs::write(dir.path().join("b"), "beta").unwrap();
        let second = shared.walk(dir.path(), None, None).unwrap();
        assert!(Arc::ptr_eq(&first, &second), "walked once");
        assert_eq!(
            second.get("a").unwrap().digest(),
            Some(&Digest::sha256_of(b"alpha"))
        );
        let other_ignore = shared
            .walk(dir.path(), Some(dir.path().join(".dockerignore")), None)
            .unwrap();
        assert!(
            !Arc::ptr_eq(&first, &other_ignore),
            "another .dockerignore, another walk"
        );
        let own = Contexts::default().walk(dir.path(), None, None).unwrap();
        assert!(own.get("b").is_some(), "unshared: each build walks its own");
    }

    #[test]
    fn symlinks_resolve_inside_the_context() {
        let (dir, _) = context(&[("real/file", "x")], None);
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/real/file", dir.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", dir.path().join("escape")).unwrap();
        let ctx = Context::scan(dir.path(), None).unwrap();
        assert_eq!(ctx.resolve("link").unwrap().path, "real");
        assert_eq!(ctx.resolve("abs").unwrap().path, "real/file");
        assert!(matches!(
            ctx.resolve("escape"),
            Err(BuildError::SourceNotFound(_))
        ));
    }
}
