//! Character classes: `[a-z]`, `[^a-z]`, with `\x` for a literal `x`.

use std::iter::Peekable;
use std::str::CharIndices;

use crate::SyntaxError;

/// A parsed `[...]`. It matches any one character, `/` included, as Go's `filepath.Match`
/// and the regexp moby/patternmatcher compiles to both do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

/// How strictly a class is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strictness {
    /// Go's rule: `-` and `]` are escaped unless they delimit, ranges run forwards.
    Go,
    /// As shells read classes: `]` first and a `-` that cannot start a range are literal,
    /// and a backwards range matches nothing.
    Lenient,
}

impl Class {
    /// Reads a class whose `[` was at byte `open`; `chars` continues after it and is left
    /// after the closing `]`.
    pub(crate) fn parse(
        open: usize,
        chars: &mut Peekable<CharIndices<'_>>,
        strictness: Strictness,
    ) -> Result<Class, SyntaxError> {
        let unclosed = SyntaxError::UnclosedClass { at: open };
        let negated = chars.next_if(|&(_, c)| c == '^').is_some();
        let mut ranges = Vec::new();
        loop {
            let (at, c) = chars.next().ok_or(unclosed)?;
            if c == ']' && !ranges.is_empty() {
                return Ok(Class { negated, ranges });
            }
            let lo = member(at, c, chars, strictness)?;
            let starts_range = match strictness {
                Strictness::Go => chars.peek().is_some_and(|&(_, c)| c == '-'),
                Strictness::Lenient => {
                    let mut ahead = chars.clone();
                    ahead.next().is_some_and(|(_, c)| c == '-') && ahead.next().is_some_and(|(_, c)| c != ']')
                }
            };
            let hi = if starts_range {
                chars.next();
                let (hi_at, hi) = chars.next().ok_or(unclosed)?;
                member(hi_at, hi, chars, strictness)?
            } else {
                lo
            };
            if strictness == Strictness::Go && hi < lo {
                return Err(SyntaxError::ReversedRange { at });
            }
            ranges.push((lo, hi));
        }
    }

    /// Whether `c` is in the class.
    pub(crate) fn contains(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

/// One class member at byte `at`: an escaped character, or `c` itself.
fn member(
    at: usize,
    c: char,
    chars: &mut Peekable<CharIndices<'_>>,
    strictness: Strictness,
) -> Result<char, SyntaxError> {
    match c {
        '\\' => chars
            .next()
            .map(|(_, escaped)| escaped)
            .ok_or(SyntaxError::TrailingEscape { at }),
        '-' | ']' if strictness == Strictness::Go => Err(SyntaxError::UnescapedInClass { at, found: c }),
        c => Ok(c),
    }
}
