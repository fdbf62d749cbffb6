//! Go's `filepath.Match` for one path component: what `COPY` and `ADD` source wildcards mean.

use crate::{Pattern, Syntax};

/// Whether `s` has wildcard characters (`*`, `?`, `[`, or an escape).
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

/// Matches one component (no `/`) against a Go `filepath.Match` pattern: `*` any run of
/// characters, `?` one character, `[a-z]`/`[^a-z]` a class, `\x` a literal `x`. A malformed
/// pattern matches nothing. See [`Syntax::FilepathMatch`] for how classes are read.
pub fn match_component(pattern: &str, name: &str) -> bool {
    Pattern::new(pattern, Syntax::FilepathMatch).is_ok_and(|p| p.matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_go() {
        let cases = [
            ("*", "abc", true),
            ("*", "", true),
            ("a*", "abc", true),
            ("a*c", "abc", true),
            ("a*d", "abc", false),
            ("*.rs", "main.rs", true),
            ("*.rs", "main.rsx", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[^a-c]x", "dx", true),
            ("[]a]", "]", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("[a-", "a", false),
            ("file.txt", "file.txt", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(match_component(pattern, name), expected, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn detects_wildcards() {
        assert!(has_wildcard("*.txt"));
        assert!(has_wildcard("a[b]"));
        assert!(!has_wildcard("src/main.rs"));
    }
}
