//! Heredoc markers (`<<EOF`, `<<-EOF`, `3<<"EOF"`) on RUN, COPY and ADD.
//!
//! BuildKit recognises a marker with `^(\d*)<<(-?)\s*([^<]*)$` applied to
//! each word of the instruction line, then decides whether the body is
//! expanded by checking whether any part of the delimiter was quoted.

use crate::ast::Heredoc;
use crate::expand::{ExpandError, Lexer, NoEnv};

/// A heredoc marker found on an instruction line; the body comes later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocMarker {
    pub name: String,
    pub fd: Option<u32>,
    pub expand: bool,
    pub chomp: bool,
}

impl HeredocMarker {
    pub(crate) fn into_heredoc(self, content: String) -> Heredoc {
        Heredoc {
            name: self.name,
            fd: self.fd,
            expand: self.expand,
            chomp: self.chomp,
            content,
        }
    }
}

/// Go's `\s` in RE2: ASCII blanks.
fn is_re_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

/// Reads `word` as a heredoc marker. `Ok(None)` means "not a heredoc".
pub(crate) fn parse_marker(word: &str) -> Result<Option<HeredocMarker>, ExpandError> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (fd_text, rest) = word.split_at(digits);
    let Some(rest) = rest.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(is_re_space);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let lexer = Lexer::new('\\').skip_unset_env(true);
    let words = lexer.process_words(rest, &NoEnv)?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    let raw = lexer.raw_quotes(true).process_words(rest, &NoEnv)?;
    let [raw_name] = raw.as_slice() else {
        return Ok(None);
    };
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Ok(Some(HeredocMarker {
        name: name.clone(),
        fd: fd_text.parse().ok(),
        expand: quotes(name) == quotes(raw_name),
        chomp,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(w: &str) -> Option<HeredocMarker> {
        parse_marker(w).unwrap_or_default()
    }

    #[test]
    fn plain_and_chomped() {
        let m = marker("<<EOF");
        assert_eq!(
            m,
            Some(HeredocMarker {
                name: "EOF".into(),
                fd: None,
                expand: true,
                chomp: false
            })
        );
        assert!(marker("<<-EOF").is_some_and(|m| m.chomp));
        assert!(marker("<< EOF").is_some_and(|m| m.name == "EOF"));
    }

    #[test]
    fn quoted_delimiters_disable_expansion() {
        for w in ["<<'EOF'", "<<\"EOF\"", "<<E'O'F", "<<-\"EOF\""] {
            let m = marker(w);
            assert!(
                m.as_ref().is_some_and(|m| !m.expand && m.name == "EOF"),
                "{w}: {m:?}"
            );
        }
    }

    #[test]
    fn fd_prefix() {
        assert!(marker("3<<EOF").is_some_and(|m| m.fd == Some(3)));
    }

    #[test]
    fn not_markers() {
        for w in ["<<", "<EOF", "a<<EOF", "<<EOF<x", "<<'a b' c", "x"] {
            assert_eq!(marker(w), None, "{w}");
        }
    }
}
