//! COPY and ADD: which files go where, with which owner and mode, by docker's rules.
//!
//! Planning happens in two steps. [`select`] finds what the sources name (wildcards matched,
//! a top-level symlink followed, directories expanded) and reports each file's type, mode and
//! content digest: that is all the cache key needs. Only on a cache miss does [`entries`] lay
//! the selection out at its destination as layer entries, which needs the stage's current
//! filesystem (does the destination exist as a directory? which parent directories exist, and
//! with what owner and mode?).
//!
//! Why one long file: the two halves apply one set of docker's rules — a source's trailing
//! slash, a directory copied as its contents, `--parents`, a wildcard's matches — that
//! selection records and layout reads back, and the tests (a third of the file) check them
//! together.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use rbuild_dockerfile::dockerignore::Matcher;
use rbuild_dockerfile::paths::clean_under_root;
use rbuild_dockerfile::plan::{Chmod, CopyStep, Mode, Source};
use rbuild_layer::{Entry, EntryKind, FileSource};
use rbuild_oci::{Algorithm, Digest, Hasher};

use crate::chmod::apply_symbolic;
use crate::context::{Context, ContextFile, FileKind, hash_file};
use crate::error::{BuildError, Result};
use crate::owner::Owner;
use crate::rootfs::RootfsView;

/// Where a COPY reads from.
pub enum Origin<'a> {
    /// The build context (or a named local context).
    Context(&'a Arc<Context>),
    /// Another stage's or an image's filesystem; `name` is for messages.
    Rootfs {
        /// The filesystem.
        view: &'a RootfsView,
        /// What it is (`stage build`, `image alpine`).
        name: &'a str,
    },
}

/// What a selected node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file, read from `disk` when the layer is written.
    File {
        /// Where its bytes are.
        disk: PathBuf,
        /// Its content digest.
        digest: Digest,
    },
    /// A directory.
    Dir,
    /// A symbolic link (copied as a link when inside a copied directory).
    Symlink(String),
}

/// One file, directory or link a COPY will write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its path relative to the selected root (`""` for the root itself).
    pub relative: String,
    /// What it is.
    pub kind: NodeKind,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, whole seconds.
    pub mtime: i64,
    /// The owner it keeps when no `--chown` is given: `None` for context files (which
    /// become root's, as in docker), the source's for files from a stage, image or archive.
    pub owner: Option<Owner>,
}

/// What the cache key sees of a node, borrowed from wherever the node is.
struct NodeView<'a> {
    relative: &'a str,
    kind: KindView<'a>,
    mode: u32,
}

enum KindView<'a> {
    File(&'a Digest),
    Dir,
    Symlink(&'a str),
}

/// Everything one source argument selected.
#[derive(Clone, Debug)]
pub struct Selected {
    /// The matched path in the origin (after wildcards, before following a top-level link).
    pub path: String,
    /// The name the root gets when copied into a directory (the source's base name).
    pub name: String,
    /// How many leading components of `path` `--parents` leaves out: those before a `/./`
    /// in the source as written (`path` is cleaned, so the `/./` itself is gone from it).
    pivot: usize,
    nodes: Nodes,
}

/// Where a selection's nodes are. Context files stay in the context until a cache miss
/// needs them laid out: keying a 20,000-file COPY that hits then copies out nothing.
#[derive(Clone)]
enum Nodes {
    /// The root followed by its descendants, in path order.
    Listed(Vec<Node>),
    /// The context entry `root` and, for a directory, its descendants not `excludes`d.
    Context {
        context: Arc<Context>,
        root: String,
        excludes: Option<Arc<Matcher>>,
    },
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Nodes::Listed(nodes) => f.debug_tuple("Listed").field(nodes).finish(),
            Nodes::Context { root, excludes, .. } => f
                .debug_struct("Context")
                .field("root", root)
                .field("excludes", excludes)
                .finish_non_exhaustive(),
        }
    }
}

impl Selected {
    /// A selection of the nodes given (the root first, then its descendants in path order).
    pub fn listed(path: String, name: String, nodes: Vec<Node>) -> Selected {
        Selected {
            path,
            name,
            pivot: 0,
            nodes: Nodes::Listed(nodes),
        }
    }

    /// The root followed by its descendants, in path order.
    pub fn nodes(&self) -> Result<Cow<'_, [Node]>> {
        match &self.nodes {
            Nodes::Listed(nodes) => Ok(Cow::Borrowed(nodes)),
            Nodes::Context {
                context,
                root,
                excludes,
            } => context_files(context, root, excludes.as_deref())
                .map(|(file, relative)| {
                    let kind = match &file.kind {
                        FileKind::Dir => NodeKind::Dir,
                        FileKind::Symlink(target) => NodeKind::Symlink(target.clone()),
                        FileKind::File => NodeKind::File {
                            disk: context.absolute(&file.path),
                            digest: file_digest(file)?.clone(),
                        },
                    };
                    Ok(Node {
                        relative: relative.to_owned(),
                        kind,
                        mode: file.mode,
                        mtime: file.mtime,
                        owner: None,
                    })
                })
                .collect::<Result<Vec<_>>>()
                .map(Cow::Owned),
        }
    }

    /// Whether the root is a directory (whose contents, not itself, are copied).
    pub fn root_is_dir(&self) -> bool {
        match &self.nodes {
            Nodes::Listed(nodes) => matches!(nodes.first().map(|n| &n.kind), Some(NodeKind::Dir)),
            Nodes::Context { context, root, .. } => {
                context.get(root).is_some_and(|f| f.kind == FileKind::Dir)
            }
        }
    }

    /// Where the root's bytes are, when it is a regular file.
    pub fn root_file(&self) -> Option<PathBuf> {
        match &self.nodes {
            Nodes::Listed(nodes) => match nodes.first().map(|n| &n.kind) {
                Some(NodeKind::File { disk, .. }) => Some(disk.clone()),
                _ => None,
            },
            Nodes::Context { context, root, .. } => context
                .get(root)
                .filter(|f| f.kind == FileKind::File)
                .map(|f| context.absolute(&f.path)),
        }
    }

    /// Shows `visit` every node, the root first, without copying any out.
    fn visit(&self, mut visit: impl FnMut(NodeView<'_>)) -> Result<()> {
        match &self.nodes {
            Nodes::Listed(nodes) => {
                for node in nodes {
                    let kind = match &node.kind {
                        NodeKind::File { digest, .. } => KindView::File(digest),
                        NodeKind::Dir => KindView::Dir,
                        NodeKind::Symlink(target) => KindView::Symlink(target),
                    };
                    visit(NodeView {
                        relative: &node.relative,
                        kind,
                        mode: node.mode,
                    });
                }
            }
            Nodes::Context {
                context,
                root,
                excludes,
            } => {
                for (file, relative) in context_files(context, root, excludes.as_deref()) {
                    let kind = match &file.kind {
                        FileKind::File => KindView::File(file_digest(file)?),
                        FileKind::Dir => KindView::Dir,
                        FileKind::Symlink(target) => KindView::Symlink(target),
                    };
                    visit(NodeView {
                        relative,
                        kind,
                        mode: file.mode,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The context entry `root` and, for a directory, each descendant not `excludes`d, with its
/// path relative to `root`.
fn context_files<'a>(
    context: &'a Context,
    root: &'a str,
    excludes: Option<&'a Matcher>,
) -> impl Iterator<Item = (&'a ContextFile, &'a str)> + 'a {
    let top = context.get(root);
    let below = match top {
        Some(file) if file.kind == FileKind::Dir => context.descendants(root),
        _ => &[],
    };
    let prefix = if root.is_empty() { 0 } else { root.len() + 1 };
    top.map(|file| (file, "")).into_iter().chain(
        below
            .iter()
            .map(move |file| (file, &file.path[prefix..]))
            .filter(move |(_, relative)| !excluded(excludes, relative)),
    )
}

/// The digest of a context file the build hashed.
fn file_digest(file: &ContextFile) -> Result<&Digest> {
    file.digest
        .as_ref()
        .ok_or_else(|| BuildError::NotHashed(file.path.clone()))
}

/// The selection of a whole COPY/ADD.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// One entry per matched source root.
    pub roots: Vec<Selected>,
    /// Heredoc sources: file name and content.
    pub inline: Vec<(String, String)>,
}

impl Selection {
    /// What keys the step: a digest of every node's path, type, mode and content (never its
    /// mtime), and of the heredoc sources. Streamed from where the nodes are, so that keying
    /// a 20,000-file COPY that hits costs no more than hashing its listing.
    pub fn digest(&self) -> Result<Digest> {
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut field = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        for root in &self.roots {
            field(b"root");
            field(root.path.as_bytes());
            root.visit(|node| {
                field(node.relative.as_bytes());
                match node.kind {
                    KindView::File(digest) => {
                        field(b"file");
                        field(digest.algorithm().name().as_bytes());
                        field(digest.hex().as_bytes());
                    }
                    KindView::Dir => field(b"dir"),
                    KindView::Symlink(target) => {
                        field(b"link");
                        field(target.as_bytes());
                    }
                }
                field(&node.mode.to_le_bytes());
            })?;
        }
        for (name, content) in &self.inline {
            field(b"inline");
            field(name.as_bytes());
            field(content.as_bytes());
        }
        Ok(hasher.finalize())
    }

    /// What [`digest`](Self::digest) covers, an input per node (`file:<path>`), for
    /// explaining a miss.
    pub fn listing(&self) -> Result<BTreeMap<String, String>> {
        let mut inputs = BTreeMap::new();
        for root in &self.roots {
            root.visit(|node| {
                let value = match node.kind {
                    KindView::File(digest) => format!("file {:o} {digest}", node.mode),
                    KindView::Dir => format!("dir {:o}", node.mode),
                    KindView::Symlink(target) => format!("link {target}"),
                };
                let name = if node.relative.is_empty() {
                    root.path.clone()
                } else {
                    format!("{}/{}", root.path, node.relative)
                };
                inputs.insert(format!("file:{name}"), value);
            })?;
        }
        for (name, content) in &self.inline {
            inputs.insert(
                format!("file:<<{name}"),
                Digest::sha256_of(content.as_bytes()).to_string(),
            );
        }
        Ok(inputs)
    }

    /// The files whose bytes will be read (for metrics).
    pub fn bytes(&self) -> Result<u64> {
        let mut total = 0;
        for root in &self.roots {
            for node in root.nodes()?.iter() {
                if let NodeKind::File { disk, .. } = &node.kind {
                    total += std::fs::metadata(disk).map_or(0, |m| m.len());
                }
            }
        }
        Ok(total)
    }
}

/// The context paths a step's sources name, links followed: the roots of what it copies
/// (for hashing them up front).
pub fn context_roots(step: &CopyStep, context: &Context) -> Result<Vec<String>> {
    let mut roots = Vec::new();
    for source in &step.sources {
        let Source::Path { path } = source else { continue };
        for file in context.select(path)? {
            roots.push(context.resolve(&file.path)?.path.clone());
        }
    }
    Ok(roots)
}

/// Finds what a COPY's path sources select in `origin`, with content digests. Context files
/// must have been hashed (see [`context_paths`]); files from a rootfs are hashed here.
pub fn select(step: &CopyStep, origin: &Origin<'_>) -> Result<Selection> {
    let excludes = if step.exclude.is_empty() {
        None
    } else {
        Some(Arc::new(
            Matcher::new(&step.exclude).map_err(BuildError::ExcludePattern)?,
        ))
    };
    let mut selection = Selection {
        roots: Vec::new(),
        inline: step
            .inline
            .iter()
            .map(|i| (i.name.clone(), i.content.clone()))
            .collect(),
    };
    for source in &step.sources {
        // URLs and git sources are fetched by the solver, not selected from an origin.
        let Source::Path { path } = source else { continue };
        let roots = match origin {
            Origin::Context(context) => select_context(context, path, excludes.as_ref())?,
            Origin::Rootfs { view, name } => select_rootfs(view, name, path, excludes.as_deref())?,
        };
        let pivot = pivot(path);
        selection
            .roots
            .extend(roots.into_iter().map(|root| Selected { pivot, ..root }));
    }
    Ok(selection)
}

/// How many components of `source` come before its first `/./`, the point from which
/// `COPY --parents` keeps the path (all of it when there is none).
fn pivot(source: &str) -> usize {
    source.split_once("/./").map_or(0, |(before, _)| {
        clean_under_root(before)
            .split('/')
            .filter(|c| !c.is_empty())
            .count()
    })
}

fn excluded(excludes: Option<&Matcher>, relative: &str) -> bool {
    !relative.is_empty() && excludes.is_some_and(|m| m.matches_or_parent_matches(relative))
}

fn base_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

fn select_context(
    context: &Arc<Context>,
    source: &str,
    excludes: Option<&Arc<Matcher>>,
) -> Result<Vec<Selected>> {
    let mut selected = Vec::new();
    for matched in context.select(source)? {
        let root = context.resolve(&matched.path)?;
        selected.push(Selected {
            name: base_name(&matched.path),
            path: matched.path.clone(),
            pivot: 0,
            nodes: Nodes::Context {
                context: context.clone(),
                root: root.path.clone(),
                excludes: excludes.cloned(),
            },
        });
    }
    Ok(selected)
}

/// What `source` selects in a filesystem view (wildcards matched, links followed at the top).
pub fn select_rootfs(
    view: &RootfsView,
    name: &str,
    source: &str,
    excludes: Option<&Matcher>,
) -> Result<Vec<Selected>> {
    let not_found = || BuildError::NotFoundIn {
        path: source.to_owned(),
        from: name.to_owned(),
    };
    let cleaned = clean_under_root(source);
    let matches: Vec<String> = if rbuild_glob::has_wildcard(&cleaned) {
        let mut current = vec![String::new()];
        for component in cleaned.split('/') {
            let mut next = Vec::new();
            for dir in &current {
                for child in view.read_dir(dir) {
                    if rbuild_glob::match_component(component, &child) {
                        next.push(if dir.is_empty() {
                            child
                        } else {
                            format!("{dir}/{child}")
                        });
                    }
                }
            }
            current = next;
        }
        current
    } else {
        vec![cleaned]
    };
    if matches.is_empty() {
        return Err(not_found());
    }
    let mut selected = Vec::new();
    for path in matches {
        let root = view.resolve(&path, true)?.ok_or_else(not_found)?;
        let mut nodes = Vec::new();
        let mut stack = vec![(root.path.clone(), String::new())];
        while let Some((full, relative)) = stack.pop() {
            let Some(found) = view.lookup(&full) else { continue };
            let kind = if let Some(target) = found.link_target().filter(|_| !relative.is_empty()) {
                NodeKind::Symlink(target)
            } else if found.is_dir() {
                let mut children = view.read_dir(&full);
                children.reverse();
                for child in children {
                    let child_relative = if relative.is_empty() {
                        child.clone()
                    } else {
                        format!("{relative}/{child}")
                    };
                    if !excluded(excludes, &child_relative) {
                        let child_full = if full.is_empty() {
                            child
                        } else {
                            format!("{full}/{child}")
                        };
                        stack.push((child_full, child_relative));
                    }
                }
                NodeKind::Dir
            } else if found.meta.is_file() {
                NodeKind::File {
                    digest: hash_file(&found.disk)?,
                    disk: found.disk.clone(),
                }
            } else {
                continue;
            };
            nodes.push(Node {
                relative,
                kind,
                mode: found.meta.mode() & 0o7777,
                mtime: found.meta.mtime(),
                owner: Some(Owner {
                    uid: found.meta.uid(),
                    gid: found.meta.gid(),
                }),
            });
        }
        nodes.sort_by(|a, b| a.relative.cmp(&b.relative));
        selected.push(Selected::listed(path.clone(), base_name(&path), nodes));
    }
    Ok(selected)
}

/// How to lay a selection out.
pub struct Layout<'a> {
    /// The step.
    pub step: &'a CopyStep,
    /// `--chown`: who owns what is written; `None` keeps each node's own owner (or root's).
    pub owner: Option<Owner>,
    /// The stage's filesystem before the step (`None` for `--link`, which must not look).
    pub below: Option<&'a RootfsView>,
    /// The mtime of files made from heredocs and of directories the copy creates.
    pub now: i64,
}

fn final_mode(chmod: Option<&Chmod>, mode: u32, is_dir: bool) -> Result<u32> {
    match chmod.map(|c| (&c.mode, &c.text)) {
        None => Ok(mode),
        Some((Mode::Octal(m), _)) => Ok(*m),
        Some((Mode::Symbolic(s), text)) => {
            apply_symbolic(s, mode, is_dir).ok_or_else(|| BuildError::InvalidChmod(text.clone()))
        }
    }
}

/// Lays a selection out at the step's destination as layer entries.
pub fn entries(selection: &Selection, layout: &Layout<'_>) -> Result<Vec<Entry>> {
    let step = layout.step;
    let chmod = step.chmod.as_ref();
    let dest = &step.dest_path;
    let dest_clean = clean_under_root(dest);
    let sources = step.sources.len() + step.inline.len();
    if sources > 1 && !dest.ends_with('/') {
        return Err(BuildError::DestinationNotDirectory(step.dest.clone()));
    }
    let existing_dir = layout
        .below
        .and_then(|view| view.resolve(&dest_clean, true).ok().flatten())
        .filter(|found| found.is_dir());
    let dest_is_dir = dest.ends_with('/')
        || selection.roots.len() + selection.inline.len() > 1
        || existing_dir.is_some()
        || selection.roots.iter().any(Selected::root_is_dir);
    // A destination that is a link to a directory receives the files where the link points.
    let dest_dir = existing_dir.map_or(dest_clean.clone(), |found| found.path);

    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    let entry = |path: String, kind: EntryKind, mode: u32, mtime: i64, node_owner: Option<Owner>| {
        let owner = layout.owner.or(node_owner).unwrap_or(Owner::ROOT);
        Entry {
            path,
            kind,
            mode,
            uid: owner.uid,
            gid: owner.gid,
            mtime,
            xattrs: BTreeMap::new(),
            content_digest: None,
        }
    };
    let join = |dir: &str, name: &str| {
        if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        }
    };

    for root in &selection.roots {
        let root_is_dir = root.root_is_dir();
        let base = if step.parents {
            let kept = root.path.splitn(root.pivot + 1, '/').last().unwrap_or_default();
            let parent = if root_is_dir {
                kept
            } else {
                kept.rsplit_once('/').map_or("", |(p, _)| p)
            };
            let base = join(&dest_dir, parent);
            if root_is_dir {
                base
            } else {
                join(&base, &root.name)
            }
        } else if root_is_dir {
            dest_dir.clone()
        } else if dest_is_dir {
            join(&dest_dir, &root.name)
        } else {
            dest_clean.clone()
        };
        for node in root.nodes()?.iter() {
            let path = if node.relative.is_empty() {
                base.clone()
            } else {
                join(&base, &node.relative)
            };
            if path.is_empty() {
                continue;
            }
            let existing_root_dir = node.relative.is_empty()
                && matches!(node.kind, NodeKind::Dir)
                && layout
                    .below
                    .and_then(|view| view.lookup(&path))
                    .is_some_and(|f| f.is_dir());
            if existing_root_dir {
                // Copying a directory's contents into one that exists leaves it as it is.
                continue;
            }
            if node.relative.is_empty() && matches!(node.kind, NodeKind::Dir) {
                // Only the contents are copied: a new destination directory is made the way
                // missing parents are (0755, the `--chown` user), not with the source's mode
                // and owner — BuildKit's rule, whatever `cp -a` would do.
                out.insert(path.clone(), entry(path, EntryKind::Dir, 0o755, layout.now, None));
                continue;
            }
            let (kind, mode, digest) = match &node.kind {
                NodeKind::File { disk, digest } => (
                    EntryKind::File(FileSource::Path(disk.clone())),
                    final_mode(chmod, node.mode, false)?,
                    Some(digest.clone()),
                ),
                NodeKind::Dir => (EntryKind::Dir, final_mode(chmod, node.mode, true)?, None),
                NodeKind::Symlink(target) => (EntryKind::Symlink(target.clone()), 0o777, None),
            };
            let entry = Entry {
                content_digest: digest,
                ..entry(path.clone(), kind, mode, node.mtime, node.owner)
            };
            out.insert(path, entry);
        }
    }
    for (name, content) in &selection.inline {
        let path = if dest_is_dir {
            join(&dest_dir, name)
        } else {
            dest_clean.clone()
        };
        let mode = final_mode(chmod, 0o644, false)?;
        out.insert(
            path.clone(),
            entry(
                path,
                EntryKind::File(FileSource::Bytes(content.clone().into_bytes())),
                mode,
                layout.now,
                None,
            ),
        );
    }

    add_parents(
        &mut out,
        layout.below,
        layout.owner.unwrap_or(Owner::ROOT),
        layout.now,
    );
    Ok(out.into_values().collect())
}

/// Adds every missing parent directory of the entries in `out`: with the owner, mode and
/// mtime it already has in `below` (so writing into `/tmp` keeps it 1777), or as a new 0755
/// directory belonging to `owner` (BuildKit creates destination directories as the
/// `--chown` user).
pub fn add_parents(out: &mut BTreeMap<String, Entry>, below: Option<&RootfsView>, owner: Owner, now: i64) {
    let mut parents: Vec<String> = Vec::new();
    for path in out.keys() {
        let mut at = path.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            if !out.contains_key(parent) {
                parents.push(parent.to_owned());
            }
            at = parent;
        }
    }
    parents.sort();
    parents.dedup();
    for parent in parents {
        let existing = below.and_then(|view| view.lookup(&parent)).filter(|f| f.is_dir());
        let (mode, uid, gid, mtime) = match existing {
            Some(found) => (
                found.meta.mode() & 0o7777,
                found.meta.uid(),
                found.meta.gid(),
                found.meta.mtime(),
            ),
            None => (0o755, owner.uid, owner.gid, now),
        };
        out.insert(
            parent.clone(),
            Entry {
                path: parent,
                kind: EntryKind::Dir,
                mode,
                uid,
                gid,
                mtime,
                xattrs: BTreeMap::new(),
                content_digest: None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::Path;

    use super::*;
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
        let mut context = Context::scan(dir, None)?;
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
