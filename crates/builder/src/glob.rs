//! Go's `filepath.Match` for one path component: what `COPY` source wildcards mean.

/// Whether `s` has wildcard characters (`*`, `?`, `[`, or an escape).
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

/// Matches one component (no `/`) against a Go `filepath.Match` pattern: `*` any run of
/// characters, `?` one character, `[a-z]`/`[^a-z]` a class, `\x` a literal `x`. A malformed
/// pattern matches nothing.
pub fn match_component(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Backtracking over the most recent `*`: linear in practice, quadratic at worst.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some(&c) => {
                if let Some((consumed, matched)) = match_one(&pattern[p..], c, name[n]) {
                    if matched {
                        p += consumed;
                        n += 1;
                        continue;
                    }
                } else {
                    return false;
                }
            }
            None => {}
        }
        match star {
            Some((star_p, star_n)) => {
                p = star_p + 1;
                n = star_n + 1;
                star = Some((star_p, star_n + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Matches the pattern element at the start of `pattern` (whose first char is `c`) against
/// one character. Returns how many pattern chars the element used and whether it matched;
/// `None` for a malformed element.
fn match_one(pattern: &[char], c: char, ch: char) -> Option<(usize, bool)> {
    match c {
        '?' => Some((1, true)),
        '\\' => pattern.get(1).map(|&lit| (2, lit == ch)),
        '[' => {
            let mut i = 1;
            let negated = pattern.get(i) == Some(&'^');
            if negated {
                i += 1;
            }
            let mut matched = false;
            let mut first = true;
            loop {
                let lo = match pattern.get(i)? {
                    ']' if !first => break,
                    '\\' => {
                        i += 1;
                        *pattern.get(i)?
                    }
                    &other => other,
                };
                first = false;
                i += 1;
                let hi = if pattern.get(i) == Some(&'-') && pattern.get(i + 1).is_some_and(|&h| h != ']') {
                    i += 1;
                    let hi = match pattern.get(i)? {
                        '\\' => {
                            i += 1;
                            *pattern.get(i)?
                        }
                        &other => other,
                    };
                    i += 1;
                    hi
                } else {
                    lo
                };
                if lo <= ch && ch <= hi {
                    matched = true;
                }
            }
            Some((i + 1, matched != negated))
        }
        literal => Some((1, literal == ch)),
    }
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
