//! `.dockerignore` matching with Docker's semantics (moby/patternmatcher),
//! which are not gitignore's: patterns are Go `filepath.Match` globs plus
//! `**`, cleaned like paths, anchored at the context root, `!` re-includes,
//! the last matching line wins, and a pattern that matches a directory
//! matches everything below it.
//!
//! The crate does no I/O: the caller reads the file (see
//! [`ignore_file_candidates`]) and walks the context, asking
//! [`Matcher::matches_or_parent_matches`] for each path and
//! [`Matcher::should_descend`] before entering a directory.

use std::path::{Path, PathBuf};

use rbuild_glob::{Syntax, SyntaxError, has_wildcard};

use crate::paths::clean;

/// Why a pattern is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// `!` with nothing after it.
    #[error("line {line}: illegal exclusion pattern: \"!\"")]
    EmptyExclusion {
        /// The line in the ignore file (from 1; 0 when given programmatically).
        line: usize,
    },
    /// A malformed glob (`[` unclosed, trailing `\`, bad range).
    #[error("line {line}: syntax error in pattern {pattern:?}: {reason}")]
    Syntax {
        /// The line in the ignore file.
        line: usize,
        /// The pattern.
        pattern: String,
        /// What is wrong with it, and where.
        reason: SyntaxError,
    },
}

#[derive(Debug, Clone)]
enum Kind {
    /// No wildcards: the path must equal the pattern.
    Exact,
    /// `dir/**`: anything strictly below `dir/`.
    Prefix(String),
    /// `**/name`: `name` at any depth.
    Suffix(String),
    /// Anything else, read as patternmatcher reads it.
    Glob(rbuild_glob::Pattern),
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    exclusion: bool,
    dirs: Vec<String>,
    kind: Kind,
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.len() > prefix.len() && path.starts_with(prefix.as_str()),
            Kind::Suffix(name) => {
                path == name
                    || (path.len() > name.len()
                        && path.ends_with(name.as_str())
                        && path.as_bytes()[path.len() - name.len() - 1] == b'/')
            }
            Kind::Glob(glob) => glob.matches(path),
        }
    }
}

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

/// The ignore files that may apply to a build, best first, as docker and
/// BuildKit choose them: `<Dockerfile>.dockerignore` beside the Dockerfile,
/// then `.dockerignore` at the root of the context. The caller reads the
/// first that exists and nothing else: an ignore file anywhere else (the
/// working directory's own, say) says nothing about this context, and
/// reading it would let the files the context excludes into the image.
pub fn ignore_file_candidates(dockerfile: &Path, context: &Path) -> [PathBuf; 2] {
    let mut beside = dockerfile.as_os_str().to_owned();
    beside.push(".dockerignore");
    [PathBuf::from(beside), context.join(".dockerignore")]
}

impl Matcher {
    /// Reads a `.dockerignore` file's text.
    pub fn from_dockerignore(text: &str) -> Result<Matcher, PatternError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let (invert, pattern) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, pattern),
            };
            let mut p = if pattern.is_empty() {
                String::new()
            } else {
                clean(pattern)
            };
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
            lines.push((i + 1, if invert { format!("!{p}") } else { p }));
        }
        Matcher::compile(lines)
    }

    /// Compiles patterns given directly (`!` for exceptions).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher, PatternError> {
        Matcher::compile(patterns.iter().map(|p| (0, p.as_ref().to_string())).collect())
    }

    fn compile(lines: Vec<(usize, String)>) -> Result<Matcher, PatternError> {
        let mut m = Matcher::default();
        for (line, raw) in lines {
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            let (exclusion, body) = match raw.strip_prefix('!') {
                Some("") => return Err(PatternError::EmptyExclusion { line }),
                Some(rest) => (true, rest),
                None => (false, raw),
            };
            let text = clean(body);
            let kind = classify(&text).map_err(|reason| PatternError::Syntax {
                line,
                pattern: text.clone(),
                reason,
            })?;
            m.exclusions |= exclusion;
            m.patterns.push(Pattern {
                dirs: text.split('/').map(str::to_string).collect(),
                text,
                exclusion,
                kind,
            });
        }
        Ok(m)
    }

    /// Whether any pattern is an exception (`!`).
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether a pattern excludes every entry of the context root
    /// (`*`, `**` or `**/*`).
    pub fn ignores_root(&self) -> bool {
        self.patterns
            .iter()
            .any(|p| !p.exclusion && matches!(p.text.as_str(), "*" | "**" | "**/*"))
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded:
    /// the last pattern matching it or one of its parent directories decides.
    pub fn matches_or_parent_matches(&self, path: &str) -> bool {
        let parent_end = path.rfind('/');
        let mut matched = false;
        for p in &self.patterns {
            // An inclusion cannot change an already excluded path, nor an
            // exception an included one.
            if p.exclusion != matched {
                continue;
            }
            let mut hit = p.matches(path);
            if !hit && let Some(end) = parent_end {
                let parent = &path[..end];
                hit = parent
                    .match_indices('/')
                    .map(|(i, _)| &parent[..i])
                    .chain(std::iter::once(parent))
                    .any(|prefix| p.matches(prefix));
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Which patterns match directory `dir` or one of its parents, given the same for its
    /// parent (`ParentHits::default()` for the context root's entries). A walker that carries
    /// these down asks [`excluded_in`](Self::excluded_in) about each entry instead of
    /// [`matches_or_parent_matches`](Self::matches_or_parent_matches), and so matches each
    /// pattern against each path once rather than against every parent again.
    pub fn hits(&self, dir: &str, parent: &ParentHits) -> ParentHits {
        ParentHits(
            self.patterns
                .iter()
                .enumerate()
                .map(|(i, p)| parent.get(i) || p.matches(dir))
                .collect(),
        )
    }

    /// [`matches_or_parent_matches`](Self::matches_or_parent_matches) for `path`, a child
    /// of the directory `parent` describes (see [`hits`](Self::hits)).
    pub fn excluded_in(&self, path: &str, parent: &ParentHits) -> bool {
        let mut matched = false;
        for (i, p) in self.patterns.iter().enumerate() {
            if p.exclusion != matched {
                continue;
            }
            if parent.get(i) || p.matches(path) {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether a walker must look inside directory `dir`: it is not excluded,
    /// or some exception (`!pattern`) could re-include a path below it.
    /// A `false` answer lets the walker skip the whole directory.
    pub fn should_descend(&self, dir: &str) -> bool {
        if !self.matches_or_parent_matches(dir) {
            return true;
        }
        let dir_parts: Vec<&str> = dir.split('/').collect();
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| could_match_below(&p.dirs, &dir_parts))
    }
}

/// For each pattern of a [`Matcher`], whether it matches a directory or one of its parents.
#[derive(Clone, Debug, Default)]
pub struct ParentHits(Vec<bool>);

impl ParentHits {
    fn get(&self, pattern: usize) -> bool {
        self.0.get(pattern).copied().unwrap_or(false)
    }
}

/// Whether a pattern with components `pattern` could match `dir` itself or
/// a path below it. Conservative: `**` anywhere means yes.
fn could_match_below(pattern: &[String], dir: &[&str]) -> bool {
    for (i, component) in pattern.iter().enumerate() {
        if component.contains("**") {
            return true;
        }
        let Some(d) = dir.get(i) else {
            return true;
        };
        let single = classify(component);
        if !single.is_ok_and(|k| {
            Pattern {
                text: component.clone(),
                exclusion: false,
                dirs: Vec::new(),
                kind: k,
            }
            .matches(d)
        }) {
            return false;
        }
    }
    true
}

/// The pattern's kind: a fast path where one applies, else the shared matcher, which also
/// refuses what Go's `filepath.Match` refuses.
fn classify(text: &str) -> Result<Kind, SyntaxError> {
    if !has_wildcard(text) {
        return Ok(Kind::Exact);
    }
    if let Some(prefix) = text.strip_suffix("/**")
        && !has_wildcard(prefix)
    {
        return Ok(Kind::Prefix(format!("{prefix}/")));
    }
    if let Some(name) = text.strip_prefix("**/")
        && !has_wildcard(name)
    {
        return Ok(Kind::Suffix(name.to_string()));
    }
    rbuild_glob::Pattern::new(text, Syntax::PatternMatcher).map(Kind::Glob)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str]) -> Matcher {
        match Matcher::new(patterns) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn hits_carried_down_decide_as_matching_every_parent_does() {
        let patterns = [
            "build",
            "**/*.tmp",
            "docs/**",
            "!docs/keep",
            "src/*/gen",
            "!src/a/gen/keep.rs",
            "*.log",
            "!important.log",
            "**/node_modules",
        ];
        let x = m(&patterns);
        let paths = [
            "build/out/x.o",
            "src/a/b.tmp",
            "docs/keep/a.md",
            "docs/other/a.md",
            "src/a/gen/keep.rs",
            "src/a/gen/other.rs",
            "src/b/gen/keep.rs",
            "important.log",
            "x/important.log",
            "web/node_modules/pkg/index.js",
            "web/src/app.ts",
        ];
        for path in paths {
            let mut hits = ParentHits::default();
            let mut dir = String::new();
            let components: Vec<&str> = path.split('/').collect();
            for (depth, component) in components.iter().enumerate() {
                let current = if dir.is_empty() {
                    component.to_string()
                } else {
                    format!("{dir}/{component}")
                };
                assert_eq!(
                    x.excluded_in(&current, &hits),
                    x.matches_or_parent_matches(&current),
                    "{current}"
                );
                if depth + 1 < components.len() {
                    hits = x.hits(&current, &hits);
                }
                dir = current;
            }
        }
    }

    /// The cases of moby/patternmatcher's `TestMatches` and Go's `filepath.Match` tables
    /// that the cleaning and the parent walk decide (the patterns themselves are tested in
    /// rbuild-glob).
    #[test]
    fn patternmatcher_table() {
        let single = [
            ("**/", "file", true),
            ("**", "file/", true),
            ("**/", "dir/file/", true),
            ("dir/**", "dir/file/", true),
            ("**/dir", "dir/file", true),
            ("**/dir2/*", "dir/dir2/file/", true),
            ("**/dir2/**", "dir/dir2/dir3/file/", true),
            ("abc/**", "abc", false),
            ("a*", "ab/c", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
        ];
        for (pattern, path, expected) in single {
            assert_eq!(
                m(&[pattern]).matches_or_parent_matches(path),
                expected,
                "{pattern:?} ~ {path:?}"
            );
        }
        let multi: [(&[&str], &str, bool); 4] = [
            (&["**", "!util/docker/web"], "util/docker/web/foo", false),
            (
                &["**", "!util/docker/web", "util/docker/web/foo"],
                "util/docker/web/foo",
                true,
            ),
            (
                &["**", "!dist/proxy.py-2.4.0rc3-py3-none-any.whl"],
                "dist/proxy.py-2.4.0rc3-py3-none-any.whl",
                false,
            ),
            (
                &["**", "!dist/*.whl"],
                "dist/proxy.py-2.4.0rc3-py3-none-any.whl",
                false,
            ),
        ];
        for (patterns, path, expected) in multi {
            assert_eq!(
                m(patterns).matches_or_parent_matches(path),
                expected,
                "{patterns:?} ~ {path:?}"
            );
        }
        // Go's regexp refuses the backwards range `l-O`, so patternmatcher fails the build
        // when it first matches (moby/moby#52203); here it is refused up front.
        assert!(Matcher::new(&["[Local-Only]/"]).is_err());
    }

    #[test]
    fn basic_globs() {
        let x = m(&["*.log", "build", "docs/*.md", "a?c"]);
        assert!(x.matches_or_parent_matches("x.log"));
        assert!(!x.matches_or_parent_matches("sub/x.log"));
        assert!(x.matches_or_parent_matches("build"));
        assert!(x.matches_or_parent_matches("build/out/x"));
        assert!(x.matches_or_parent_matches("docs/a.md"));
        assert!(!x.matches_or_parent_matches("docs/sub/a.md"));
        assert!(x.matches_or_parent_matches("abc"));
        assert!(!x.matches_or_parent_matches("a/c"));
    }

    #[test]
    fn double_star() {
        let x = m(&["**/*.tmp", "node_modules/**", "**/cache"]);
        assert!(x.matches_or_parent_matches("a.tmp"));
        assert!(x.matches_or_parent_matches("a/b/c.tmp"));
        assert!(x.matches_or_parent_matches("node_modules/x"));
        assert!(!x.matches_or_parent_matches("node_modules"));
        assert!(x.matches_or_parent_matches("cache"));
        assert!(x.matches_or_parent_matches("x/y/cache/z"));
        assert!(!x.matches_or_parent_matches("xcache"));
    }

    #[test]
    fn exceptions_and_last_match_wins() {
        let x = m(&["*.md", "!README.md", "README*.md"]);
        assert!(x.matches_or_parent_matches("README-dev.md"));
        assert!(x.matches_or_parent_matches("README.md"));
        let y = m(&["*.md", "!README.md"]);
        assert!(!y.matches_or_parent_matches("README.md"));
        assert!(y.matches_or_parent_matches("CHANGES.md"));
    }

    #[test]
    fn exception_with_double_star_docker_cli_2919() {
        // Exclude everything, re-include all Go files at any depth.
        let x = m(&["**", "!**/*.go"]);
        assert!(x.matches_or_parent_matches("README.md"));
        assert!(!x.matches_or_parent_matches("main.go"));
        assert!(!x.matches_or_parent_matches("cmd/app/main.go"));
        // A walker must still enter excluded directories to find them.
        assert!(x.should_descend("cmd"));
        assert!(x.should_descend("cmd/app"));
    }

    #[test]
    fn descend_decisions() {
        let x = m(&["vendor", "docs", "!docs/keep.md"]);
        assert!(!x.should_descend("vendor"));
        assert!(x.should_descend("docs"));
        assert!(x.should_descend("src"));
        let y = m(&["a/*", "!a/b/c"]);
        assert!(y.should_descend("a/b"));
        assert!(!y.should_descend("a/x"));
    }

    #[test]
    fn dockerignore_file() {
        let x = Matcher::from_dockerignore("# comment\n/build/\n  *.o  \n\n!keep.o\n./tmp\n");
        let Ok(x) = x else { panic!() };
        assert!(x.matches_or_parent_matches("build/a"));
        assert!(x.matches_or_parent_matches("a.o"));
        assert!(!x.matches_or_parent_matches("keep.o"));
        assert!(x.matches_or_parent_matches("tmp"));
        assert!(x.has_exclusions());
    }

    #[test]
    fn bad_patterns() {
        assert!(Matcher::new(&["!"]).is_err());
        assert!(Matcher::new(&["[a"]).is_err());
        assert!(Matcher::new(&["a\\"]).is_err());
        assert!(Matcher::new(&["[z-a]"]).is_err());
        assert!(Matcher::new(&["[]"]).is_err());
        assert!(Matcher::new(&["[a-c]x", "[^a]"]).is_ok());
    }

    #[test]
    fn classes_and_escapes() {
        let x = m(&["[a-c].txt", "\\*star", "f.(x)"]);
        assert!(x.matches_or_parent_matches("b.txt"));
        assert!(!x.matches_or_parent_matches("d.txt"));
        assert!(x.matches_or_parent_matches("*star"));
        assert!(!x.matches_or_parent_matches("xstar"));
        assert!(x.matches_or_parent_matches("f.(x)"));
    }

    #[test]
    fn candidates_are_beside_the_dockerfile_then_at_the_context_root() {
        assert_eq!(
            ignore_file_candidates(Path::new("../df/app.Dockerfile"), Path::new("/src/ctx")),
            [
                PathBuf::from("../df/app.Dockerfile.dockerignore"),
                PathBuf::from("/src/ctx/.dockerignore")
            ]
        );
        // A context given as a relative path is still the context's file, never a bare
        // `.dockerignore` that would resolve in the working directory.
        assert_eq!(
            ignore_file_candidates(Path::new("ctx/Dockerfile"), Path::new("ctx"))[1],
            PathBuf::from("ctx/.dockerignore")
        );
    }
}
