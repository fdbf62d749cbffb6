//! Patterns read into tokens, one reading per [`Syntax`].

use crate::class::{Class, Strictness};
use crate::{Syntax, SyntaxError};

/// One element of a compiled pattern. The three kinds of `**` match runs without a newline,
/// as `.` does in the Go regexp moby/patternmatcher compiles `**` to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// Text that must appear as it is (escapes already resolved).
    Literal(String),
    /// `?`: one character other than `/`.
    AnyChar,
    /// `*`: a run of characters other than `/`.
    Star,
    /// `[...]`: one character in (or, negated, not in) the class.
    Class(Class),
    /// `(.*/)?`: nothing, or a run that ends with `/` — leading directories.
    Dirs,
    /// `.*`: any run, `/` included.
    Rest,
    /// `(/.*)?`: nothing, or `/` and any run after it — a path or anything below it.
    Below,
}

/// Reads `text` with `syntax`'s meaning of `**`.
pub(crate) fn tokenize(text: &str, syntax: Syntax) -> Result<Vec<Token>, SyntaxError> {
    let mut out = Tokens::default();
    match syntax {
        Syntax::FilepathMatch => out.scan(text, 0, false, Strictness::Lenient)?,
        Syntax::PatternMatcher => out.scan(text, 0, true, Strictness::Go)?,
        Syntax::Components => out.components(text)?,
    }
    Ok(out.finish())
}

/// Tokens being built, with the literal text not yet pushed as one.
#[derive(Default)]
struct Tokens {
    tokens: Vec<Token>,
    literal: String,
}

impl Tokens {
    fn push(&mut self, token: Token) {
        if !self.literal.is_empty() {
            self.tokens
                .push(Token::Literal(std::mem::take(&mut self.literal)));
        }
        // `**` read as two stars is one.
        if !(token == Token::Star && self.tokens.last() == Some(&Token::Star)) {
            self.tokens.push(token);
        }
    }

    fn finish(mut self) -> Vec<Token> {
        if !self.literal.is_empty() {
            self.tokens.push(Token::Literal(self.literal));
        }
        self.tokens
    }

    /// Reads `text` (at byte `base` of the whole pattern) character by character; with
    /// `double_star`, `**` as moby/patternmatcher compiles it: a `/` after it is part of it,
    /// and it is [`Token::Rest`] at the end of the pattern, [`Token::Dirs`] anywhere else.
    fn scan(
        &mut self,
        text: &str,
        base: usize,
        double_star: bool,
        strictness: Strictness,
    ) -> Result<(), SyntaxError> {
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '*' if double_star && chars.next_if(|&(_, c)| c == '*').is_some() => {
                    chars.next_if(|&(_, c)| c == '/');
                    self.push(if chars.peek().is_none() {
                        Token::Rest
                    } else {
                        Token::Dirs
                    });
                }
                '*' => self.push(Token::Star),
                '?' => self.push(Token::AnyChar),
                '[' => {
                    let class = Class::parse(at, &mut chars, strictness).map_err(|e| e.shifted(base))?;
                    self.push(Token::Class(class));
                }
                '\\' => {
                    let (_, escaped) = chars
                        .next()
                        .ok_or(SyntaxError::TrailingEscape { at: base + at })?;
                    self.literal.push(escaped);
                }
                c => self.literal.push(c),
            }
        }
        Ok(())
    }

    /// Reads `text` component by component: a component that is exactly `**` stands for
    /// zero or more whole components, and inside any other `*` is one star.
    fn components(&mut self, text: &str) -> Result<(), SyntaxError> {
        let parts: Vec<&str> = text.split('/').collect();
        // Whether the next component must be joined to the last one with a `/`: not at the
        // start, nor after a `**` (its token holds the `/`).
        let mut after_component = false;
        let mut base = 0;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if *part == "**" {
                // A run of `**` components means what one does.
                if parts.get(i + 1) != Some(&"**") {
                    if after_component && !last {
                        self.literal.push('/');
                    }
                    self.push(match (after_component, last) {
                        (false, true) => Token::Rest,
                        (true, true) => Token::Below,
                        (_, false) => Token::Dirs,
                    });
                    after_component = false;
                }
            } else {
                if after_component {
                    self.literal.push('/');
                }
                self.scan(part, base, false, Strictness::Lenient)?;
                after_component = true;
            }
            base += part.len() + 1;
        }
        Ok(())
    }
}
