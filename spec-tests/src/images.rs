//! Comparing images the way a user would see them: the file tree a container gets (paths,
//! types, modes, owners, link targets, content digests) and the run configuration.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;

use rbuild_oci::Digest;

use crate::tools::{Docker, run};

/// One path of a container's filesystem, without its timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `file`, `dir`, `link`, `hardlink`, `char`, `block`, `fifo`.
    pub kind: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Link target, or the content digest of a file.
    pub detail: String,
}

/// A tar entry as a [`Node`] (file contents read to digest them), with its cleaned path.
fn node_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> (String, Node) {
    let path = entry
        .path()
        .expect("entry path")
        .to_string_lossy()
        .trim_end_matches('/')
        .to_owned();
    let header = entry.header().clone();
    let link = || {
        header
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (kind, detail) = match header.entry_type() {
        tar::EntryType::Directory => ("dir", String::new()),
        tar::EntryType::Symlink => ("link", link()),
        tar::EntryType::Link => ("hardlink", link()),
        _ => {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("entry content");
            ("file", Digest::sha256_of(&bytes).to_string())
        }
    };
    let node = Node {
        kind: kind.to_owned(),
        mode: header.mode().unwrap_or(0) & 0o7777,
        uid: header.uid().unwrap_or(0),
        gid: header.gid().unwrap_or(0),
        detail,
    };
    (path, node)
}

/// The filesystem of `image` as `docker export` of a fresh container gives it.
pub fn tree(docker: &Docker, image: &str) -> BTreeMap<String, Node> {
    let id = run(docker.cmd().args(["create", image, "/nonexistent"]))
        .trim()
        .to_owned();
    let mut child = docker
        .cmd()
        .args(["export", &id])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker export");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut archive = tar::Archive::new(stdout);
    let mut nodes = BTreeMap::new();
    for entry in archive.entries().expect("tar stream") {
        let mut entry = entry.expect("tar entry");
        let (path, node) = node_of(&mut entry);
        // docker adds these to every container.
        let added = path.is_empty()
            || path == ".dockerenv"
            || [
                "dev",
                "proc",
                "sys",
                "etc/hostname",
                "etc/hosts",
                "etc/resolv.conf",
                "etc/mtab",
            ]
            .iter()
            .any(|p| path.starts_with(p));
        if !added {
            nodes.insert(path, node);
        }
    }
    let _ = child.wait();
    run(docker.cmd().args(["rm", &id]));
    nodes
}

/// The file tree of the image in an OCI layout directory (its first manifest), from its
/// layers applied in order — for tests that need no docker. Whiteouts are applied too.
pub fn layout_tree(layout: &std::path::Path) -> BTreeMap<String, Node> {
    let read_json = |path: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .expect("JSON")
    };
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index = read_json(layout.join("index.json"));
    let manifest = read_json(blob(
        index["manifests"][0]["digest"].as_str().expect("manifest digest"),
    ));
    let mut nodes = BTreeMap::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let bytes = std::fs::read(blob(layer["digest"].as_str().expect("layer digest"))).expect("layer blob");
        let reader: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::GzDecoder::new(&bytes[..]))
        } else {
            Box::new(&bytes[..])
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().expect("layer tar") {
            let mut entry = entry.expect("tar entry");
            let (path, node) = node_of(&mut entry);
            let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let parent = path
                    .rsplit_once('/')
                    .map_or(String::new(), |(p, _)| format!("{p}/"));
                let gone = format!("{parent}{hidden}");
                nodes.retain(|p: &String, _| p != &gone && !p.starts_with(&format!("{gone}/")));
                continue;
            }
            nodes.insert(path, node);
        }
    }
    nodes
}

/// The parts of an image's config that decide how it runs (and its history), from
/// `docker image inspect`.
pub fn config(docker: &Docker, image: &str) -> serde_json::Value {
    let text = run(docker.cmd().args(["image", "inspect", image]));
    let inspected: serde_json::Value = serde_json::from_str(&text).expect("inspect JSON");
    run_config(&inspected[0]["Config"])
}

/// The parts of a container configuration that decide how an image runs: the `config` object
/// of an image's config blob, or the `Config` docker's inspect shows (the same fields). Empty
/// and `null` values are left out, as docker treats them as absent.
pub fn run_config(c: &serde_json::Value) -> serde_json::Value {
    let keys = [
        "User",
        "ExposedPorts",
        "Env",
        "Entrypoint",
        "Cmd",
        "Volumes",
        "WorkingDir",
        "Labels",
        "StopSignal",
        "Healthcheck",
        "Shell",
        "OnBuild",
    ];
    let mut picked = serde_json::Map::new();
    for key in keys {
        let value = &c[key];
        let empty = value.is_null() || value == &serde_json::json!("") || value == &serde_json::json!({});
        if !empty {
            picked.insert(key.to_owned(), value.clone());
        }
    }
    serde_json::Value::Object(picked)
}

/// Differences between two trees, one line each (empty when equal).
pub fn tree_differences(left: &BTreeMap<String, Node>, right: &BTreeMap<String, Node>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, node) in left {
        match right.get(path) {
            None => out.push(format!("only in first: {path} {node:?}")),
            Some(other) if other != node => out.push(format!("differs: {path}: {node:?} vs {other:?}")),
            Some(_) => {}
        }
    }
    for (path, node) in right {
        if !left.contains_key(path) {
            out.push(format!("only in second: {path} {node:?}"));
        }
    }
    out
}
