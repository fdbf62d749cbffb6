//! Matching tokens against a text without backtracking.
//!
//! The matcher carries the set of text positions the tokens so far can end at, one token
//! at a time, so it takes O(text × pattern) steps whatever the pattern: a `.dockerignore`
//! is user input, and a backtracking matcher is exponential on patterns like `*a*a*a*b`
//! (several stars, or `**` and `*` mixed).

use crate::token::Token;

/// The longest text (in bytes, exclusive) whose position sets are kept on the stack.
const INLINE: usize = 256;

/// Whether `tokens` match all of `text`.
pub(crate) fn matches(tokens: &[Token], text: &str) -> bool {
    if tokens.is_empty() {
        return text.is_empty();
    }
    let bytes = text.as_bytes();
    let n = bytes.len();
    // `at[i]`: the tokens so far can end at byte `i`. Only star-like tokens end inside a
    // character, and only the one-character tokens need a boundary, so positions are bytes.
    // Paths are short: their two sets live on the stack.
    let mut inline = [false; 2 * INLINE];
    let mut heap = Vec::new();
    let sets = if n < INLINE {
        &mut inline[..]
    } else {
        heap.resize(2 * (n + 1), false);
        &mut heap[..]
    };
    let (at, next) = sets.split_at_mut(sets.len() / 2);
    let (mut at, mut next) = (&mut at[..=n], &mut next[..=n]);
    at[0] = true;
    for token in tokens {
        match token {
            Token::Literal(literal) => {
                next.fill(false);
                for i in 0..n.saturating_sub(literal.len()) + 1 {
                    if at[i] && bytes[i..].starts_with(literal.as_bytes()) {
                        next[i + literal.len()] = true;
                    }
                }
            }
            Token::AnyChar => one_char(at, next, text, |c| c != '/'),
            Token::Class(class) => one_char(at, next, text, |c| class.contains(c)),
            Token::Star => run(at, next, bytes, b'/'),
            Token::Rest => run(at, next, bytes, b'\n'),
            Token::Dirs => {
                // `reach`: some start at or before the previous byte with no newline from
                // there to it; a `/` there ends the directories.
                let mut reach = false;
                for i in 0..=n {
                    next[i] = at[i] || (reach && bytes[i - 1] == b'/');
                    reach = at[i] || (reach && bytes[i - 1] != b'\n');
                }
            }
            Token::Below => {
                // `below`: some start before `i` at a `/`, with no newline after it.
                let mut below = false;
                for i in 0..=n {
                    if i > 0 {
                        below = (at[i - 1] && bytes[i - 1] == b'/') || (below && bytes[i - 1] != b'\n');
                    }
                    next[i] = at[i] || below;
                }
            }
        }
        std::mem::swap(&mut at, &mut next);
        if !at.contains(&true) {
            return false;
        }
    }
    at[n]
}

/// One character that `accepts`, after each position in `at`.
fn one_char(at: &[bool], next: &mut [bool], text: &str, accepts: impl Fn(char) -> bool) {
    next.fill(false);
    for (i, c) in text.char_indices() {
        if at[i] && accepts(c) {
            next[i + c.len_utf8()] = true;
        }
    }
}

/// A run of bytes other than `stop` (an ASCII byte, so never inside a character).
fn run(at: &[bool], next: &mut [bool], bytes: &[u8], stop: u8) {
    let mut open = false;
    for (i, slot) in next.iter_mut().enumerate() {
        // `open` is only true past the first position, so `i - 1` is in range.
        open = at[i] || (open && bytes[i - 1] != stop);
        *slot = open;
    }
}

#[cfg(test)]
mod tests {
    use crate::{Pattern, Syntax};

    /// Patterns that send a backtracking matcher into exponential time end (the test
    /// asserts only the answers; a regression shows as a test that never finishes). The
    /// trailing stars keep the mismatch away from the fixed ends, which are compared first.
    #[test]
    fn many_stars_over_a_long_text() {
        let text = "a".repeat(20_000);
        let matches = |pattern: &str, syntax, text: &str| match Pattern::new(pattern, syntax) {
            Ok(p) => p.matches(text),
            Err(e) => panic!("{pattern}: {e}"),
        };
        assert!(!matches("*a*a*a*a*a*a*a*a*b", Syntax::PatternMatcher, &text));
        assert!(!matches("*a*a*a*a*a*a*a*a*b*", Syntax::PatternMatcher, &text));
        assert!(matches("*a*a*a*a*a*a*a*a*a*", Syntax::PatternMatcher, &text));
        assert!(!matches("*a*a*a*a*a*a*a*a*b*", Syntax::FilepathMatch, &text));
        let dirs = "a/".repeat(10_000);
        assert!(!matches(
            "**a**a**a**a**a**a**a**b**",
            Syntax::PatternMatcher,
            &dirs
        ));
        assert!(!matches("**/a/**/a/**/a/**/a/**/b/**", Syntax::Components, &dirs));
        assert!(matches("**/a/**/a/**/a/**/a/**", Syntax::Components, &dirs));
    }
}
