//! A read-only view of an image's filesystem, merged from its layers' snapshots without
//! mounting anything: what `COPY --from`, `--chown` name lookups and COPY onto existing
//! directories need to see.
//!
//! Each layer is a directory in overlayfs' lower-layer format (see `snapshot`): a deleted path
//! is a 0/0 character device, a directory whose lower contents are hidden carries the xattr
//! `trusted.overlay.opaque=y`. Lookups walk the layers from the top, as overlayfs does.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rbuild_dockerfile::paths::clean_under_root;

use crate::error::{BuildError, Result};

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// A path found in the view: which layer directory holds it, and its metadata.
#[derive(Clone, Debug)]
pub struct Found {
    /// The path relative to the root, `/`-separated, no leading `/`.
    pub path: String,
    /// The file on disk in the layer that provides it.
    pub disk: PathBuf,
    /// Its metadata (not following a final symlink).
    pub meta: fs::Metadata,
}

impl Found {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.meta.is_dir()
    }

    /// The symlink target, if it is a symlink.
    pub fn link_target(&self) -> Option<String> {
        self.meta
            .file_type()
            .is_symlink()
            .then(|| fs::read_link(&self.disk).ok())
            .flatten()
            .map(|t| t.to_string_lossy().into_owned())
    }
}

/// An image's filesystem as the union of its layers.
#[derive(Clone, Debug, Default)]
pub struct RootfsView {
    /// Layer directories, base first.
    layers: Vec<PathBuf>,
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    matches!(xattr::get(path, OPAQUE_XATTR), Ok(Some(v)) if v == b"y")
}

/// `a/b/c` → `["a", "a/b", "a/b/c"]`.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/')
        .map(move |(i, _)| &path[..i])
        .chain(std::iter::once(path))
        .filter(|p| !p.is_empty())
}

impl RootfsView {
    /// A view over layer directories, base first.
    pub fn new(layers: Vec<PathBuf>) -> RootfsView {
        RootfsView { layers }
    }

    /// Whether the view has no layers (a `FROM scratch` stage before its first layer).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layer directories, base first.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// Looks a path up without following symlinks in it (its parents must be directories).
    pub fn lookup(&self, path: &str) -> Option<Found> {
        let path = clean_under_root(path);
        if path.is_empty() {
            let top = self.layers.last()?;
            return fs::symlink_metadata(top).ok().map(|meta| Found {
                path,
                disk: top.clone(),
                meta,
            });
        }
        for layer in self.layers.iter().rev() {
            for prefix in prefixes(&path) {
                let Ok(meta) = fs::symlink_metadata(layer.join(prefix)) else {
                    break;
                };
                if is_whiteout(&meta) {
                    return None;
                }
                if prefix == path {
                    return Some(Found {
                        disk: layer.join(prefix),
                        path: path.clone(),
                        meta,
                    });
                }
                if !meta.is_dir() {
                    break;
                }
                if is_opaque(&layer.join(prefix)) {
                    return None;
                }
            }
        }
        None
    }

    /// Resolves a path, following symlinks in every component (and the last one too when
    /// `follow_last`), with absolute targets taken from the view's root — never the host's.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<Option<Found>> {
        let mut pending: Vec<String> = clean_under_root(path)
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        pending.reverse();
        let mut current = String::new();
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            let candidate = if current.is_empty() {
                component
            } else {
                format!("{current}/{component}")
            };
            let Some(found) = self.lookup(&candidate) else {
                return Ok(None);
            };
            let is_last = pending.is_empty();
            match found.link_target() {
                Some(target) if !is_last || follow_last => {
                    hops += 1;
                    if hops > 40 {
                        return Err(BuildError::SymlinkLoop(format!("/{path}")));
                    }
                    let base = if target.starts_with('/') {
                        String::new()
                    } else {
                        current.clone()
                    };
                    let joined = clean_under_root(&format!("{base}/{target}"));
                    pending.extend(
                        joined
                            .split('/')
                            .filter(|c| !c.is_empty())
                            .rev()
                            .map(str::to_owned),
                    );
                    current = String::new();
                }
                _ => current = candidate,
            }
        }
        Ok(self.lookup(&current))
    }

    /// The names in a directory, merged across layers (whiteouts and opaque directories
    /// applied), sorted.
    pub fn read_dir(&self, dir: &str) -> Vec<String> {
        let dir = clean_under_root(dir);
        let mut names = std::collections::BTreeSet::new();
        let mut hidden = std::collections::BTreeSet::new();
        for layer in self.layers.iter().rev() {
            let disk = if dir.is_empty() {
                layer.clone()
            } else {
                layer.join(&dir)
            };
            let Ok(meta) = fs::symlink_metadata(&disk) else {
                continue;
            };
            if is_whiteout(&meta) {
                break;
            }
            if !meta.is_dir() {
                break;
            }
            if let Ok(entries) = fs::read_dir(&disk) {
                for entry in entries.flatten() {
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    if hidden.contains(&name) || names.contains(&name) {
                        continue;
                    }
                    match entry.metadata() {
                        Ok(m) if is_whiteout(&m) => {
                            hidden.insert(name);
                        }
                        _ => {
                            names.insert(name);
                        }
                    }
                }
            }
            if is_opaque(&disk) {
                break;
            }
        }
        names.into_iter().collect()
    }

    /// Reads a whole file, following symlinks inside the view.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.resolve(path, true)? {
            Some(found) if found.meta.is_file() => fs::read(&found.disk)
                .map(Some)
                .map_err(|e| BuildError::io(format!("reading {}", found.disk.display()), e)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn layer(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = root.join(name);
        for (path, content) in files {
            let full = dir.join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, content).unwrap();
        }
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn upper_layers_win_and_links_stay_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let base = layer(
            tmp.path(),
            "0",
            &[("etc/passwd", "root:x:0:0::/root:/bin/sh\n"), ("a/b", "base")],
        );
        let top = layer(tmp.path(), "1", &[("a/b", "top"), ("a/c", "c")]);
        symlink("/etc", top.join("etclink")).unwrap();
        symlink("../../../../etc/passwd", top.join("a/escape")).unwrap();
        let view = RootfsView::new(vec![base, top]);
        assert_eq!(view.read("a/b").unwrap().unwrap(), b"top");
        assert_eq!(view.read_dir("a"), ["b", "c", "escape"]);
        assert_eq!(
            view.read("/etclink/passwd").unwrap().unwrap(),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(
            view.read("a/escape").unwrap().unwrap(),
            b"root:x:0:0::/root:/bin/sh\n",
            "an escaping link resolves inside the view"
        );
        assert!(view.lookup("nope").is_none());
    }

    #[test]
    fn whiteouts_hide_lower_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let base = layer(tmp.path(), "0", &[("gone", "x"), ("dir/f", "y")]);
        let top = layer(tmp.path(), "1", &[]);
        // A 0/0 character device needs root; the suite runs as root, elsewhere skip.
        let status = std::process::Command::new("mknod")
            .arg(top.join("gone"))
            .args(["c", "0", "0"])
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: mknod needs root");
            return;
        }
        let view = RootfsView::new(vec![base, top]);
        assert!(view.lookup("gone").is_none());
        assert!(!view.read_dir("").contains(&"gone".to_owned()));
        assert!(view.lookup("dir/f").is_some());
    }
}
