//! Slash-separated path cleaning, once for the workspace: Go's `path.Clean` (what BuildKit
//! applies to Dockerfile paths and `.dockerignore` patterns) and the forms the builder needs
//! of it — resolved under a root that `..` cannot climb above, or refused when it tries.
//!
//! Every function here walks the components the same way (empty and `.` dropped, `..` taking
//! back the last name); they differ only in what `..` does when there is no name left.

/// What `..` does when no name is left to take back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AtTop {
    /// Kept, as Go keeps it in a relative path (`../a`).
    Keep,
    /// Dropped: the path is under a root it cannot leave (`/..` is `/`).
    Clamp,
    /// The path climbs out of where it must stay.
    Refuse,
}

/// The names of `path` after cleaning, or `None` when `at_top` is [`AtTop::Refuse`] and the
/// path climbs above its start.
fn components(path: &str, at_top: AtTop) -> Option<Vec<&str>> {
    let mut names: Vec<&str> = Vec::new();
    for name in path.split('/') {
        match name {
            "" | "." => {}
            ".." => match (names.last(), at_top) {
                (Some(last), _) if *last != ".." => {
                    names.pop();
                }
                (_, AtTop::Keep) => names.push(".."),
                (_, AtTop::Clamp) => {}
                (_, AtTop::Refuse) => return None,
            },
            name => names.push(name),
        }
    }
    Some(names)
}

/// Go's `path.Clean`: `a/./b/../c/` → `a/c`, `/../a` → `/a`, `../a` stays, and an empty
/// result is `.`.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let at_top = if rooted { AtTop::Clamp } else { AtTop::Keep };
    let joined = components(path, at_top).unwrap_or_default().join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// `path` taken from `/` (relative or not) and cleaned, with the leading `/`: what Go's
/// `path.Clean("/" + path)` gives. `..` stops at the root.
pub fn clean_absolute(path: &str) -> String {
    format!("/{}", clean_under_root(path))
}

/// [`clean_absolute`] without the leading `/`: a path relative to a root it cannot leave,
/// `""` for the root itself (rootfs and snapshot paths).
pub fn clean_under_root(path: &str) -> String {
    components(path, AtTop::Clamp).unwrap_or_default().join("/")
}

/// `path` cleaned relative to the directory it is read in (the build context), `""` for that
/// directory itself; `None` when `..` would climb out of it.
pub fn clean_inside(path: &str) -> Option<String> {
    components(path, AtTop::Refuse).map(|names| names.join("/"))
}

/// Resolves `path` against the working directory `current` and cleans it (BuildKit's
/// `NormalizeWorkdir` on Linux): `WORKDIR`, `COPY` destinations, mount targets.
pub fn normalize_workdir(current: &str, path: &str) -> String {
    if path.starts_with('/') {
        clean_absolute(path)
    } else {
        let base = if current.is_empty() { "/" } else { current };
        clean_absolute(&format!("{base}/{path}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_is_gos_path_clean() {
        assert_eq!(clean("a/./b/../c/"), "a/c");
        assert_eq!(clean("/a//b"), "/a/b");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("../../a/.."), "../..");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("./"), ".");
        assert_eq!(clean(""), ".");
    }

    #[test]
    fn under_a_root_dot_dot_stops_at_the_root() {
        assert_eq!(clean_absolute("a/b"), "/a/b");
        assert_eq!(clean_absolute("../../etc"), "/etc");
        assert_eq!(clean_absolute(""), "/");
        assert_eq!(clean_under_root("/x/./y/"), "x/y");
        assert_eq!(clean_under_root("/.."), "");
    }

    #[test]
    fn inside_a_directory_climbing_out_is_refused() {
        assert_eq!(clean_inside("./a/../b/").as_deref(), Some("b"));
        assert_eq!(clean_inside(".").as_deref(), Some(""));
        assert_eq!(clean_inside("a/../.."), None);
        assert_eq!(clean_inside("/../a"), None);
    }

    #[test]
    fn workdirs_resolve_against_the_current_one() {
        assert_eq!(normalize_workdir("", "app"), "/app");
        assert_eq!(normalize_workdir("/a", "b/../c/"), "/a/c");
        assert_eq!(normalize_workdir("/a", "/x/./y"), "/x/y");
        assert_eq!(normalize_workdir("/a", ".."), "/");
    }
}
