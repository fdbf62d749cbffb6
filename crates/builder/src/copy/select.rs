//! What COPY and ADD sources name: wildcards matched, a top-level symlink followed,
//! directories expanded, each file's type, mode and content digest — all a cache key needs.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use rbuild_dockerfile::dockerignore::Matcher;
use rbuild_dockerfile::paths::clean_under_root;
use rbuild_dockerfile::plan::{CopyStep, Source};
use rbuild_oci::{Algorithm, Digest, Hasher};

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
    pub(super) pivot: usize,
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
    file.digest()
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
