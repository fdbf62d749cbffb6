//! The build context: walked once with `.dockerignore` applied, indexed in memory, and hashed
//! in parallel — but only the files some COPY or ADD actually selects are read.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rbuild_dockerfile::dockerignore::Matcher;
use rbuild_oci::{Algorithm, Digest, Hasher};

use crate::error::{BuildError, Result};
use crate::glob::{has_wildcard, match_component};
use crate::statcache::{StatCache, StatKey};

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
}

/// A walked, indexed context.
pub struct Context {
    root: PathBuf,
    files: BTreeMap<String, ContextFile>,
    children: HashMap<String, Vec<String>>,
    digests: HashMap<String, Digest>,
    ignore: Option<Matcher>,
}

/// Normalises a source path inside the context: `./a/../b/` → `b`. Errors if it climbs out.
pub fn clean_source(source: &str) -> Result<String> {
    let mut parts: Vec<&str> = Vec::new();
    for component in source.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(BuildError::OutsideContext(source.to_owned()));
                }
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// An entry found by [`walk`].
struct Walked {
    path: String,
    meta: fs::Metadata,
    kind: FileKind,
}

/// The entries below `dir` that `ignore` leaves in, each directory followed by its contents,
/// siblings in name order. Directories are walked in parallel, and entries are `lstat`ed
/// relative to their directory's descriptor (no path lookup from the root for each).
/// Excluded directories are descended into only when a `!` pattern could re-include
/// something below them, and kept only if something was.
fn walk(root: &Path, dir: &str, ignore: Option<&Matcher>) -> Result<Vec<Walked>> {
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
    let mut kept: Vec<(Walked, Option<bool>)> = Vec::new();
    for (name, entry) in entries {
        let path = join(dir, &name);
        let meta = entry
            .metadata()
            .map_err(|e| BuildError::io(format!("reading {}", root.join(&path).display()), e))?;
        let ignored = ignore.is_some_and(|m| m.matches_or_parent_matches(&path));
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
        kept.push((Walked { path, meta, kind }, descend));
    }

    let below: Vec<Result<Vec<Walked>>> = kept
        .par_iter()
        .map(|(walked, descend)| match descend {
            Some(_) => walk(root, &walked.path, ignore),
            None => Ok(Vec::new()),
        })
        .collect();
    let mut out = Vec::new();
    for ((walked, descend), below) in kept.into_iter().zip(below) {
        let below = below?;
        // An excluded directory stays out unless something below it was re-included.
        if descend == Some(true) && below.is_empty() {
            continue;
        }
        out.push(walked);
        out.extend(below);
    }
    Ok(out)
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
            return Err(BuildError::Context(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        let mut context = Context {
            files: BTreeMap::new(),
            children: HashMap::new(),
            digests: HashMap::new(),
            root,
            ignore,
        };
        context.insert("", &meta, FileKind::Dir);
        for walked in walk(&context.root, "", context.ignore.as_ref())? {
            context.insert(&walked.path, &walked.meta, walked.kind);
        }
        Ok(context)
    }

    fn insert(&mut self, path: &str, meta: &fs::Metadata, kind: FileKind) {
        self.files.insert(
            path.to_owned(),
            ContextFile {
                path: path.to_owned(),
                kind,
                mode: meta.mode() & 0o7777,
                size: meta.size(),
                mtime: meta.mtime(),
                stat: StatKey::of(meta),
            },
        );
        if !path.is_empty() {
            self.children
                .entry(parent(path).to_owned())
                .or_default()
                .push(path.to_owned());
        }
    }

    /// The context directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The entry at a cleaned relative path.
    pub fn get(&self, path: &str) -> Option<&ContextFile> {
        self.files.get(path)
    }

    /// Whether `.dockerignore` excludes a path (for a clearer "not found" message).
    pub fn is_ignored(&self, path: &str) -> bool {
        self.ignore
            .as_ref()
            .is_some_and(|m| m.matches_or_parent_matches(path))
    }

    /// The direct children of a directory, sorted.
    pub fn children(&self, dir: &str) -> &[String] {
        self.children.get(dir).map_or(&[], Vec::as_slice)
    }

    /// Everything below `dir` (not `dir` itself), in path order.
    pub fn descendants<'a>(&'a self, dir: &str) -> impl Iterator<Item = &'a ContextFile> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.files
            .range(prefix.clone()..)
            .take_while(move |(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p.is_empty())
            .map(|(_, f)| f)
    }

    /// Follows symlinks to the entry a path finally names, staying inside the context (an
    /// absolute or `..`-climbing target is resolved against the context root, as BuildKit's
    /// chrooted copy does).
    pub fn resolve(&self, path: &str) -> Result<&ContextFile> {
        let mut current = path.to_owned();
        for _ in 0..40 {
            let file = self
                .files
                .get(&current)
                .ok_or_else(|| BuildError::SourceNotFound(path.to_owned()))?;
            match &file.kind {
                FileKind::Symlink(target) => {
                    let joined = if target.starts_with('/') {
                        target.clone()
                    } else {
                        format!("{}/{target}", parent(&current))
                    };
                    current = crate::rootfs::clean(&joined);
                }
                _ => return Ok(file),
            }
        }
        Err(BuildError::Context(format!(
            "too many levels of symbolic links at {path}"
        )))
    }

    /// The entries a COPY source names: a path or a pattern with wildcards (matched component
    /// by component, Go-style). Errors if nothing matches.
    pub fn select(&self, source: &str) -> Result<Vec<&ContextFile>> {
        let cleaned = clean_source(source)?;
        if !has_wildcard(&cleaned) {
            return match self.files.get(&cleaned) {
                Some(file) => Ok(vec![file]),
                None if self.is_ignored(&cleaned) => Err(BuildError::SourceIgnored(source.to_owned())),
                None => Err(BuildError::SourceNotFound(source.to_owned())),
            };
        }
        let mut current: Vec<String> = vec![String::new()];
        for component in cleaned.split('/') {
            let mut next = Vec::new();
            for dir in &current {
                let dir = match self.files.get(dir).map(|f| &f.kind) {
                    Some(FileKind::Symlink(_)) => self.resolve(dir)?.path.clone(),
                    _ => dir.clone(),
                };
                if has_wildcard(component) {
                    next.extend(
                        self.children(&dir)
                            .iter()
                            .filter(|child| {
                                match_component(component, child.rsplit('/').next().unwrap_or(child))
                            })
                            .cloned(),
                    );
                } else {
                    let child = join(&dir, component);
                    if self.files.contains_key(&child) {
                        next.push(child);
                    }
                }
            }
            current = next;
        }
        if current.is_empty() {
            return Err(BuildError::SourceNotFound(source.to_owned()));
        }
        current.sort();
        Ok(current.iter().filter_map(|p| self.files.get(p)).collect())
    }

    /// Content digests of regular files, hashed in parallel on all cores and remembered in
    /// the stat cache. Returns how many bytes were actually read.
    pub fn hash(&mut self, paths: &[String], cache: &StatCache) -> Result<u64> {
        let todo: Vec<&ContextFile> = paths
            .iter()
            .filter(|p| !self.digests.contains_key(*p))
            .filter_map(|p| self.files.get(p))
            .filter(|f| f.kind == FileKind::File)
            .collect();
        let root = &self.root;
        let results: Vec<Result<(String, Digest, u64)>> = todo
            .par_iter()
            .map(|file| {
                let absolute = root.join(&file.path);
                if let Some(digest) = cache.get(&absolute, &file.stat) {
                    return Ok((file.path.clone(), digest, 0));
                }
                let digest = hash_file(&absolute)?;
                cache.insert(absolute, file.stat, digest.clone());
                Ok((file.path.clone(), digest, file.size))
            })
            .collect();
        let mut read = 0;
        for result in results {
            let (path, digest, bytes) = result?;
            read += bytes;
            self.digests.insert(path, digest);
        }
        Ok(read)
    }

    /// The content digest of a hashed file.
    pub fn digest(&self, path: &str) -> Option<&Digest> {
        self.digests.get(path)
    }

    /// The absolute path of a context entry.
    pub fn absolute(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }
}

fn hash_file(path: &Path) -> Result<Digest> {
    let mut file =
        fs::File::open(path).map_err(|e| BuildError::io(format!("reading {}", path.display()), e))?;
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| BuildError::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize())
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
        let all: Vec<String> = ctx.descendants("").map(|f| f.path.clone()).collect();
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
        let (dir, mut ctx) = context(&[("a", "alpha"), ("b", "beta")], None);
        let cache = StatCache::load(&dir.path().join(".cache"));
        let read = ctx.hash(&["a".into(), "b".into()], &cache).unwrap();
        assert_eq!(read, 9);
        assert_eq!(ctx.digest("a"), Some(&Digest::sha256_of(b"alpha")));
        let mut again = Context::scan(dir.path(), None).unwrap();
        assert_eq!(
            again.hash(&["a".into(), "b".into()], &cache).unwrap(),
            0,
            "served from the stat cache"
        );
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
