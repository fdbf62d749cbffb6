//! A compiled pattern, in one of the three readings the workspace needs.

use crate::SyntaxError;
use crate::matcher;
use crate::token::{Token, tokenize};

/// What the characters of a pattern mean. All three agree on the basics: `*` is a run of
/// characters other than `/`, `?` one character other than `/`, `[a-z]` and `[^a-z]` one
/// character in or not in a class (which may be `/`), `\x` the character `x`. They differ
/// in what `**` means and in how strictly classes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Go's `filepath.Match` (COPY and ADD sources, one component at a time): `**` is two
    /// stars. Classes are read leniently, as shells read them: a `]` first in a class and
    /// a `-` that cannot start a range are literal, and a backwards range matches nothing,
    /// where Go refuses the pattern.
    FilepathMatch,
    /// moby/patternmatcher, which `.dockerignore` follows: a pattern it refuses is refused
    /// (what Go's `filepath.Match` refuses, and a backwards range, which the Go regexp it
    /// compiles to refuses), `**` at the end matches anything (`/` included), and `**`
    /// anywhere else matches nothing or any run that ends with `/`, a `/` right after it
    /// being part of it. So `**/a` matches `a` and `x/y/a`, `a/**` matches everything below
    /// `a` but not `a`, and `a**b` matches `ab` and `ax/b` but not `axb`.
    PatternMatcher,
    /// Whole components: only a component that is exactly `**` is special, and it stands
    /// for zero or more whole components; elsewhere `**` is two stars. So `a/**/b`
    /// matches `a/b` and `a/x/y/b`, `a/**` matches `a` and everything below it, and `**`
    /// matches every path.
    Components,
}

/// A pattern compiled once and matched against many paths in time proportional to the
/// path's length times the pattern's, whatever the pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The literal text the pattern starts with.
    prefix: String,
    /// What comes between the prefix and the suffix.
    tokens: Vec<Token>,
    /// The literal text the pattern ends with, after at least one other token.
    suffix: String,
}

impl Pattern {
    /// Compiles `text` read with `syntax`.
    pub fn new(text: &str, syntax: Syntax) -> Result<Pattern, SyntaxError> {
        let mut tokens = tokenize(text, syntax)?;
        // Most paths differ from a pattern in its fixed ends (`*.log`, `build/*`): comparing
        // those first leaves the matcher the few paths that could match.
        // (A literal token is never empty.)
        let prefix = match tokens.first_mut() {
            Some(Token::Literal(text)) => std::mem::take(text),
            _ => String::new(),
        };
        if !prefix.is_empty() {
            tokens.remove(0);
        }
        let suffix = match tokens.last_mut() {
            Some(Token::Literal(text)) => std::mem::take(text),
            _ => String::new(),
        };
        if !suffix.is_empty() {
            tokens.pop();
        }
        Ok(Pattern {
            prefix,
            tokens,
            suffix,
        })
    }

    /// Whether the pattern matches all of `path`.
    pub fn matches(&self, path: &str) -> bool {
        let (prefix, suffix) = (self.prefix.as_bytes(), self.suffix.as_bytes());
        let Some(middle_end) = path.len().checked_sub(suffix.len()) else {
            return false;
        };
        // Byte by byte, the suffix from its end: these ends are a few bytes long and most
        // paths differ in their last one, where a `memcmp` call would cost more than it saves.
        let bytes = path.as_bytes();
        middle_end >= prefix.len()
            && bytes.iter().zip(prefix).all(|(a, b)| a == b)
            && bytes.iter().rev().zip(suffix.iter().rev()).all(|(a, b)| a == b)
            && matcher::matches(&self.tokens, &path[prefix.len()..middle_end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(syntax: Syntax, cases: &[(&str, &str, bool)]) {
        for &(pattern, path, expected) in cases {
            let compiled = match Pattern::new(pattern, syntax) {
                Ok(compiled) => compiled,
                Err(e) => panic!("{pattern:?}: {e}"),
            };
            assert_eq!(
                compiled.matches(path),
                expected,
                "{syntax:?} {pattern:?} ~ {path:?}"
            );
        }
    }

    /// moby/patternmatcher's `TestMatches` table, each pattern against the path (or the
    /// parent directory) it matches itself: the parent walk and cleaning are
    /// `.dockerignore`'s, not the pattern's.
    #[test]
    fn patternmatcher_double_stars() {
        check(
            Syntax::PatternMatcher,
            &[
                ("**", "file", true),
                ("**", "file/", true),
                ("**", "/", true),
                ("**", "dir/file/", true),
                ("**/", "file/", true),
                ("**/", "dir/file/", true),
                ("**/", "file", true),
                ("**/**", "dir/file", true),
                ("**/**", "dir/file/", true),
                ("dir/**", "dir/file", true),
                ("dir/**", "dir/dir2/file/", true),
                ("**/dir", "dir", true),
                ("**/dir", "a/b/dir", true),
                ("**/dir2/*", "dir/dir2/file", true),
                ("**/dir2/*", "dir/dir2/file/", false),
                ("**/dir2/**", "dir/dir2/dir3/file/", true),
                ("**file", "file", true),
                ("**file", "dir/dir/file", true),
                ("**/file*", "dir/dir/file", true),
                ("**/file*txt", "dir/dir/file.txt", true),
                ("**/file*.txt*", "dir/dir/file.txt", true),
                ("**/**/*.txt", "dir/dir/file.txt", true),
                ("**/**/*.txt2", "dir/dir/file.txt", false),
                ("**/*.txt", "file.txt", true),
                ("**/**/*.txt", "file.txt", true),
                ("a**/*.txt", "a/file.txt", true),
                ("a**/*.txt", "a/dir/dir/file.txt", true),
                ("a/*.txt", "a/dir/file.txt", false),
                ("a/*.txt**", "a/file.txt", true),
                ("**/foo/bar", "foo/bar", true),
                ("**/foo/bar", "dir/dir2/foo/bar", true),
                ("abc/**", "abc", false),
                ("abc/**", "abc/def/ghi", true),
                ("**/.foo", ".foo", true),
                ("**/.foo", "bar.foo", false),
                // `**` inside a pattern is `(.*/)?`: it can be nothing or end at a `/`.
                ("a**b", "ab", true),
                ("a**b", "ax/b", true),
                ("a**b", "axb", false),
            ],
        );
    }

    /// The rest of patternmatcher's `TestMatches`: classes, `?`, and characters a regexp
    /// would read as syntax.
    #[test]
    fn patternmatcher_plain_characters() {
        check(
            Syntax::PatternMatcher,
            &[
                ("a[b-d]e", "ae", false),
                ("a[b-d]e", "ace", true),
                ("a[b-d]e", "aae", false),
                ("a[^b-d]e", "aze", true),
                (".*", ".foo", true),
                (".*", "foo", false),
                ("abc.def", "abcdef", false),
                ("abc.def", "abc.def", true),
                ("abc.def", "abcZdef", false),
                ("abc?def", "abcZdef", true),
                ("abc?def", "abcdef", false),
                ("a\\\\", "a\\", true),
                ("a\\*b", "a*b", true),
                ("a(b)c/def", "a(b)c/def", true),
                ("a(b)c/def", "a(b)c/xyz", false),
                ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
                (
                    "dist/*.whl",
                    "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                    true,
                ),
                // Classes are literal characters, never a regexp's: no `&&`, no `\d`.
                ("[a&&b]", "&", true),
                ("[\\d]", "d", true),
                ("[\\d]", "5", false),
            ],
        );
    }

    /// Go's `filepath.Match` table, as patternmatcher runs it.
    #[test]
    fn filepath_match_table() {
        check(
            Syntax::PatternMatcher,
            &[
                ("abc", "abc", true),
                ("*", "abc", true),
                ("*c", "abc", true),
                ("a*", "a", true),
                ("a*", "abc", true),
                ("a*", "ab/c", false),
                ("a*/b", "abc/b", true),
                ("a*/b", "a/c/b", false),
                ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
                ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
                ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
                ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
                ("a*b?c*x", "abxbbxdbxebxczzx", true),
                ("a*b?c*x", "abxbbxdbxebxczzy", false),
                ("ab[c]", "abc", true),
                ("ab[b-d]", "abc", true),
                ("ab[e-g]", "abc", false),
                ("ab[^c]", "abc", false),
                ("ab[^b-d]", "abc", false),
                ("ab[^e-g]", "abc", true),
                ("a\\*b", "ab", false),
                ("a?b", "a☺b", true),
                ("a[^a]b", "a☺b", true),
                ("a???b", "a☺b", false),
                ("a[^a][^a][^a]b", "a☺b", false),
                ("[a-ζ]*", "α", true),
                ("*[a-ζ]", "A", false),
                ("a?b", "a/b", false),
                ("a*b", "a/b", false),
                ("[\\]a]", "]", true),
                ("[\\-]", "-", true),
                ("[x\\-]", "x", true),
                ("[x\\-]", "-", true),
                ("[x\\-]", "z", false),
                ("[\\-x]", "x", true),
                ("[\\-x]", "-", true),
                ("[\\-x]", "a", false),
                ("*x", "xxx", true),
            ],
        );
        for bad in [
            "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "[z-a]", "[]",
        ] {
            assert!(Pattern::new(bad, Syntax::PatternMatcher).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_say_what_and_where() {
        let error = |pattern| Pattern::new(pattern, Syntax::PatternMatcher).err();
        assert_eq!(error("ab\\"), Some(SyntaxError::TrailingEscape { at: 2 }));
        assert_eq!(error("a/[bc"), Some(SyntaxError::UnclosedClass { at: 2 }));
        assert_eq!(
            error("[]a]"),
            Some(SyntaxError::UnescapedInClass { at: 1, found: ']' })
        );
        assert_eq!(
            error("x[a-]"),
            Some(SyntaxError::UnescapedInClass { at: 4, found: ']' })
        );
        assert_eq!(error("[a-cz-a]"), Some(SyntaxError::ReversedRange { at: 4 }));
        assert_eq!(
            Pattern::new("a/[b", Syntax::Components).err(),
            Some(SyntaxError::UnclosedClass { at: 2 })
        );
    }

    #[test]
    fn filepath_match_reads_classes_leniently() {
        check(
            Syntax::FilepathMatch,
            &[
                ("[]a]", "]", true),
                ("[a-]", "-", true),
                ("[-a]", "-", true),
                ("[z-a]", "m", false),
                ("**", "abc", true),
            ],
        );
        assert!(Pattern::new("[a", Syntax::FilepathMatch).is_err());
    }

    /// `**` is Go's regexp `.`, which stops at a newline; `*` and `?` do not.
    #[test]
    fn double_stars_stop_at_a_newline() {
        check(
            Syntax::PatternMatcher,
            &[
                ("**", "a\nb", false),
                ("**/x", "a\nb/x", false),
                ("*", "a\nb", true),
                ("a?b", "a\nb", true),
            ],
        );
    }

    #[test]
    fn components() {
        check(
            Syntax::Components,
            &[
                ("a/*", "a/b", true),
                ("a/*", "a/b/c", false),
                ("a/**", "a", true),
                ("a/**", "a/b/c", true),
                ("a/**", "ab", false),
                ("**", "x/y/z", true),
                ("a/**/z", "a/z", true),
                ("a/**/z", "a/b/c/z", true),
                ("a/**/z", "a/b/c/y", false),
                ("a/**/z", "az", false),
                ("**/z", "z", true),
                ("**/z", "x/y/z", true),
                ("**/z", "xz", false),
                ("a/**/**", "a", true),
                ("a/**/**", "a/b/c", true),
                ("**/**", "x", true),
                ("**/**/z", "x/z", true),
                ("a**b", "axxb", true),
                ("a**b", "ax/b", false),
                ("team-*/app", "team-x/app", true),
                ("team-*/app", "team-x/lib", false),
            ],
        );
    }
}
