//! The workspace's shape, checked: no crate has an import circle between its modules, so
//! each crate reads one way, from the modules that use to the modules that are used.
//!
//! A module is a source file (`a.rs`, `a/mod.rs`, `a/b.rs`); it imports another when its
//! code outside `#[cfg(test)]` names a `crate::` path into it. A child naming its parent
//! through `super::` is how Rust nests modules and is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every module of a crate's `src`, by path (`""` for the crate root), with its file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut pending = vec![src.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("inside src").with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            found.insert(parts.join("::"), path);
        }
    }
    found
}

/// The code of a file without comments and without what follows its first `#[cfg(test)]`.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path named after `crate::`, `use crate::{a, b::{c, d}}` groups expanded.
fn crate_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        expand(rest, String::new(), &mut paths);
    }
    paths
}

/// Reads one path (or brace group) at the start of `text`, under `prefix`.
fn expand(text: &str, prefix: String, out: &mut Vec<String>) {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(&group[start..i], prefix.clone(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&group[start..i], prefix.clone(), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let name: String = text
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() {
        return;
    }
    let path = if prefix.is_empty() {
        name.clone()
    } else {
        format!("{prefix}::{name}")
    };
    match text[name.len()..].strip_prefix("::") {
        Some(tail) => expand(tail, path, out),
        None => out.push(path),
    }
}

/// The module a path points into: its longest prefix that is a module.
fn module_of<'a>(path: &str, modules: &'a BTreeMap<String, PathBuf>) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| modules.get_key_value(&parts[..n].join("::")))
        .map(|(name, _)| name.as_str())
}

/// The import circles of one crate: each a set of modules that reach each other.
fn circles(src: &Path) -> Vec<BTreeSet<String>> {
    let modules = modules(src);
    let edges: BTreeMap<&str, BTreeSet<&str>> = modules
        .iter()
        .map(|(name, file)| {
            let targets = crate_paths(&code(file))
                .iter()
                .filter_map(|path| module_of(path, &modules))
                .filter(|target| *target != name && !target.is_empty())
                .collect();
            (name.as_str(), targets)
        })
        .collect();
    let reaches = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut pending = vec![from];
        while let Some(module) = pending.pop() {
            for next in edges.get(module).into_iter().flatten() {
                if seen.insert(*next) {
                    pending.push(next);
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&str, BTreeSet<&str>> = edges.keys().map(|m| (*m, reaches(m))).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (module, reached) in &reach {
        let circle: BTreeSet<String> = reached
            .iter()
            .filter(|other| reach[*other].contains(module))
            .map(|m| (*m).to_owned())
            .collect();
        if circle.len() > 1 && !found.contains(&circle) {
            found.push(circle);
        }
    }
    found
}

#[test]
fn no_crate_has_an_import_circle() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut report = Vec::new();
    for entry in std::fs::read_dir(&crates).expect("read crates") {
        let src = entry.expect("dir entry").path().join("src");
        if !src.is_dir() {
            continue;
        }
        for circle in circles(&src) {
            report.push(format!("{}: {circle:?}", src.display()));
        }
    }
    assert!(report.is_empty(), "import circles:\n{}", report.join("\n"));
}

#[test]
fn the_checker_finds_a_circle_and_reads_brace_groups() {
    let paths = crate_paths("use crate::{a::{B, c::D}, e};\nlet x = crate::f::g(1);");
    assert_eq!(paths, ["a::B", "a::c::D", "e", "f::g"]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("lib.rs"), "mod a; mod b;").expect("write");
    std::fs::write(dir.path().join("a.rs"), "use crate::b::X;").expect("write");
    std::fs::write(
        dir.path().join("b.rs"),
        "// crate::a is only named here\npub struct X;",
    )
    .expect("write");
    assert!(circles(dir.path()).is_empty());
    std::fs::write(dir.path().join("b.rs"), "pub struct X(crate::a::Y);").expect("write");
    assert_eq!(
        circles(dir.path()),
        [BTreeSet::from(["a".to_owned(), "b".to_owned()])]
    );
}
