//! Shell-style word expansion, as BuildKit's `shell/lex.go` does it.
//!
//! The Dockerfile frontend expands `$var`, `${var}` and the `${var<op>word}`
//! forms in the arguments of some instructions, removing quotes and escapes
//! as a POSIX shell would, but never running anything. The rules here follow
//! BuildKit rather than bash wherever the two differ (for example `${v#p}`
//! patterns have no bracket expressions), because a Dockerfile must mean the
//! same thing to rbuild as to `docker build`.
//!
//! Why one long file: the expander is one state machine over the word (BuildKit's `lex.go` is
//! one file too); its length is that of the operators it implements.

use std::collections::BTreeSet;

/// A source of variable values for expansion.
///
/// Implemented for the planner's environment and for simple maps, so tests
/// and callers can expand words without building a whole stage.
pub trait Env {
    /// The value of `name`, or `None` when it is not set (which is different
    /// from set to the empty string for the `:-` / `-` family of operators).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Env for std::collections::BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        // The last definition wins, as it does in an environment list.
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An environment with no variables at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl Env for NoEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A quote was opened and never closed.
    #[error("unexpected end of statement while looking for matching {0}")]
    UnterminatedQuote(&'static str),
    /// `${` without the closing brace.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${var/pattern` without the second slash.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:x}` and other forms with no variable name.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// An operator BuildKit does not know, such as `${v:#x}` or `${v!}`.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${v?msg}` / `${v:?msg}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required {
        /// The variable that had to be set.
        name: String,
        /// The user's message, or BuildKit's default one.
        message: String,
    },
    /// A `#`, `%` or `/` pattern that is not a valid shell pattern.
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Substitutions nested so deeply that expanding them could exhaust the stack.
    #[error("substitutions are nested more than {0} levels deep")]
    TooDeep(usize),
    /// The expanded value grew past the limit (a variable doubling itself).
    #[error("the expanded value is longer than {0} bytes")]
    TooLong(usize),
}

/// The result of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded text.
    pub value: String,
    /// Names that were looked up and found.
    pub matched: BTreeSet<String>,
    /// Names that were looked up and not found (candidates for `UndefinedVar`).
    pub unmatched: BTreeSet<String>,
}

/// The longest expanded word. Linux refuses environment strings over
/// 128 KiB anyway, and without a bound `ENV A=$A$A` repeated a few dozen
/// times would need terabytes.
const MAX_LEN: usize = 1 << 20;

/// The longest `#`/`%`/`/` pattern. Real patterns are a few characters;
/// patterns built from expanded values could otherwise reach [`MAX_LEN`]
/// and make every substitution compile a megabyte-sized regex.
const MAX_PATTERN_LEN: usize = 4096;

/// Nesting depth beyond which `${a:-${b:-...}}` is refused; Go grows its
/// stack without bound, we would overflow ours.
const MAX_DEPTH: usize = 64;

/// A configured expander. The flags mirror BuildKit's `Lex` options because
/// the parser needs the same lexer in several modes (heredoc detection keeps
/// quotes and escapes, COPY heredoc bodies skip quote processing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
}

impl Lexer {
    /// A lexer using `escape` (`\` or `` ` ``) as its escape character.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Keep quote characters in the output instead of removing them.
    pub fn raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keep escape characters in the output instead of removing them.
    pub fn raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Treat quotes as ordinary characters (used for COPY heredoc bodies).
    pub fn skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// Leave references to unset variables as written instead of making them empty.
    pub fn skip_unset_env(mut self, on: bool) -> Self {
        self.skip_unset_env = on;
        self
    }

    /// Expands `word` as one value (spaces are kept).
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<Expansion, ExpandError> {
        let mut sw = ShellWord::new(*self, word, env);
        let (value, _) = sw.process_stop_on(None, self.raw_escapes, 0)?;
        Ok(Expansion {
            value,
            matched: sw.matched,
            unmatched: sw.unmatched,
        })
    }

    /// Expands `word` and splits the result into words on unquoted whitespace.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        let mut sw = ShellWord::new(*self, word, env);
        let (_, words) = sw.process_stop_on(None, self.raw_escapes, 0)?;
        Ok(words)
    }
}

/// Accumulates words for [`Lexer::process_words`]: whitespace that came from
/// the text (not from quotes or escapes) separates words.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

struct ShellWord<'a> {
    lexer: Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Env,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a> ShellWord<'a> {
    fn new(lexer: Lexer, word: &str, env: &'a dyn Env) -> Self {
        ShellWord {
            lexer,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: lexer.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        depth: usize,
    ) -> Result<(String, Vec<String>), ExpandError> {
        if depth > MAX_DEPTH {
            return Err(ExpandError::TooDeep(MAX_DEPTH));
        }
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let out = self.stop_on_inner(stop, depth);
        self.raw_escapes = saved;
        out
    }

    fn stop_on_inner(
        &mut self,
        stop: Option<char>,
        depth: usize,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        let quotes = !self.lexer.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar(depth)?;
                    if result.len() + tmp.len() > MAX_LEN {
                        return Err(ExpandError::TooLong(MAX_LEN));
                    }
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '<' => {
                    let tmp = self.process_possible_heredoc();
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '\'' if quotes => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' if quotes => {
                    let tmp = self.process_double_quote(depth)?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    self.next();
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // An escape at the very end is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(c) => Err(ExpandError::UnterminatedQuote(match c {
                '}' => "}",
                '/' => "/",
                _ => "character",
            })),
            None => Ok((result, words.finish())),
        }
    }

    fn process_single_quote(&mut self) -> Result<String, ExpandError> {
        let mut result = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(ExpandError::UnterminatedQuote("single-quote")),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self, depth: usize) -> Result<String, ExpandError> {
        let mut result = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(ExpandError::UnterminatedQuote("double-quote")),
                Some('"') => {
                    self.next();
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar(depth)?;
                    if result.len() + v.len() > MAX_LEN {
                        return Err(ExpandError::TooLong(MAX_LEN));
                    }
                    result.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // The missing closing quote is reported on the next turn.
                            None => continue,
                            // Inside double quotes only these can be escaped.
                            Some(c) if c == '"' || c == '$' || c == self.lexer.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.next();
        let mut result = "<<".to_string();
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            result.push(c);
            self.next();
        }
        result
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(d) = self.peek().filter(|c| c.is_numeric()) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !(ch.is_alphabetic() || ch.is_numeric() || ch == '_') {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }

    fn process_dollar(&mut self, depth: usize) -> Result<String, ExpandError> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(ExpandError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(ch) = self.next() else {
            return Err(ExpandError::MissingBrace);
        };
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => self.process_modifier(name, ch, depth),
            '/' => self.process_replace(name, depth),
            other => Err(ExpandError::UnsupportedModifier(other.to_string())),
        }
    }

    fn process_modifier(&mut self, name: String, first: char, depth: usize) -> Result<String, ExpandError> {
        let mut modifier = first.to_string();
        let mut op = Some(first);
        let null_is_unset = first == ':';
        if null_is_unset {
            op = self.next();
            modifier.push(op.unwrap_or('\u{FFFD}'));
        }
        let pattern_op = matches!(op, Some('#' | '%'));
        if null_is_unset && pattern_op {
            return Err(ExpandError::UnsupportedModifier(modifier));
        }
        let (word, _) = self
            .process_stop_on(Some('}'), pattern_op, depth + 1)
            .map_err(|e| self.missing_if_eof(e, ExpandError::MissingBrace))?;
        let value = self.get_env(&name);
        if self.lexer.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{modifier}{word}}}"));
        }
        let unset_or_null = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match op {
            Some('-') => Ok(if unset_or_null {
                word
            } else {
                value.unwrap_or_default()
            }),
            Some('+') => Ok(if unset_or_null { String::new() } else { word }),
            Some('?') => match value {
                None => Err(required(name, word, "is not allowed to be unset")),
                Some(v) if null_is_unset && v.is_empty() => {
                    Err(required(name, word, "is not allowed to be empty"))
                }
                Some(v) => Ok(v),
            },
            Some(c @ ('#' | '%')) => {
                let value = value.unwrap_or_default();
                let (greedy, pattern) = match word.strip_prefix(c) {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, word),
                };
                if c == '%' {
                    trim_suffix(&pattern, &value, greedy)
                } else {
                    trim_prefix(&pattern, &value, greedy)
                }
            }
            _ => Err(ExpandError::UnsupportedModifier(modifier)),
        }
    }

    fn process_replace(&mut self, name: String, depth: usize) -> Result<String, ExpandError> {
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.next();
        }
        let (pattern, _) = self
            .process_stop_on(Some('/'), true, depth + 1)
            .map_err(|e| self.missing_if_eof(e, ExpandError::MissingSlash))?;
        let (replacement, _) = self
            .process_stop_on(Some('}'), true, depth + 1)
            .map_err(|e| self.missing_if_eof(e, ExpandError::MissingBrace))?;
        let Some(value) = self.get_env(&name) else {
            if self.lexer.skip_unset_env {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let re = shell_pattern_regex(&pattern, true, false)?;
        if replace_all {
            let replaced = re.replace_all(&value, replacement.as_str()).into_owned();
            if replaced.len() > MAX_LEN {
                return Err(ExpandError::TooLong(MAX_LEN));
            }
            return Ok(replaced);
        }
        Ok(match re.find(&value) {
            Some(m) => format!("{}{}{}", &value[..m.start()], replacement, &value[m.end()..]),
            None => value,
        })
    }

    /// A nested word that ran off the end of the input is reported as the
    /// missing delimiter of the enclosing `${...}` form, which is what the
    /// user has to add.
    fn missing_if_eof(&self, err: ExpandError, missing: ExpandError) -> ExpandError {
        if self.peek().is_none() { missing } else { err }
    }
}

fn required(name: String, word: String, default: &str) -> ExpandError {
    let message = if word.is_empty() {
        default.to_string()
    } else {
        word
    };
    ExpandError::Required { name, message }
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Converts a shell pattern (`*`, `?`, `\` escapes, no bracket expressions)
/// into a regular expression. The `regex` crate matches in linear time and
/// has the same leftmost-first semantics as Go's `regexp`, so shortest and
/// longest matches come out as BuildKit computes them.
fn shell_pattern_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<regex::Regex, ExpandError> {
    let invalid = |reason: String| ExpandError::InvalidPattern {
        pattern: pattern.chars().take(80).collect(),
        reason,
    };
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(invalid(format!("longer than {MAX_PATTERN_LEN} bytes")));
    }
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut chars = pattern.chars().peekable();
    while let Some(tok) = chars.next() {
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => match chars.peek() {
                // `\}` and `\/` only protect the delimiter of `${...}`.
                Some('}' | '/') => {}
                Some(&c @ ('*' | '?' | '\\')) => {
                    chars.next();
                    out.push_str(&regex::escape(&c.to_string()));
                }
                Some(&c) => return Err(invalid(format!("invalid escape '\\{c}'"))),
                None => return Err(invalid("invalid escape at end of pattern".to_string())),
            },
            c => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    regex::Regex::new(&out).map_err(|e| invalid(e.to_string()))
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, ExpandError> {
    let re = shell_pattern_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Regular expressions find leftmost matches, so the shortest or longest
/// *suffix* is found by reversing both the value and the pattern (keeping
/// escape pairs in order) and trimming a prefix instead.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, ExpandError> {
    let reversed_pattern = reverse_pattern(pattern);
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reversed_pattern, &reversed_value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let len = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        tokens.push(&chars[i..i + len]);
        i += len;
    }
    tokens.iter().rev().flat_map(|t| t.iter()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env() -> BTreeMap<String, String> {
        [
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("KOREAN", "한국어"),
            ("EMPTY", ""),
            ("path", "/usr/local/bin:/usr/bin"),
            ("file", "archive.tar.gz"),
            ("url", "https://example.com/a/b/c"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn word(w: &str) -> Result<String, ExpandError> {
        Lexer::new('\\').process_word(w, &env()).map(|e| e.value)
    }

    fn ok(w: &str) -> String {
        match word(w) {
            Ok(v) => v,
            Err(e) => panic!("{w:?} failed: {e}"),
        }
    }

    #[test]
    fn plain_and_braced_references() {
        assert_eq!(ok("$PWD"), "/home");
        assert_eq!(ok("${PWD}"), "/home");
        assert_eq!(ok("a$PWD/b"), "a/home/b");
        assert_eq!(ok("${PWD}x"), "/homex");
        assert_eq!(ok("$PWDx"), "");
        assert_eq!(ok("$KOREAN"), "한국어");
        assert_eq!(ok("$"), "$");
        assert_eq!(ok("a$"), "a$");
        assert_eq!(ok("$ x"), "$ x");
        assert_eq!(ok("$UNSET"), "");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(ok("'$PWD'"), "$PWD");
        assert_eq!(ok("\"$PWD\""), "/home");
        assert_eq!(ok("\\$PWD"), "$PWD");
        assert_eq!(ok("\"\\$PWD\""), "$PWD");
        assert_eq!(ok("\"a\\b\""), "a\\b");
        assert_eq!(ok("\"a\\\"b\""), "a\"b");
        assert_eq!(ok("'a\\b'"), "a\\b");
        assert_eq!(ok("he'll'o"), "hello");
        assert_eq!(ok("a\\ b"), "a b");
        assert_eq!(ok("abc\\"), "abc");
        assert_eq!(word("'abc"), Err(ExpandError::UnterminatedQuote("single-quote")));
        assert_eq!(word("\"abc"), Err(ExpandError::UnterminatedQuote("double-quote")));
    }

    #[test]
    fn backtick_escape() {
        let lex = Lexer::new('`');
        assert_eq!(
            lex.process_word("`$PWD", &env()).map(|e| e.value),
            Ok("$PWD".into())
        );
        assert_eq!(
            lex.process_word("a\\b", &env()).map(|e| e.value),
            Ok("a\\b".into())
        );
    }

    #[test]
    fn default_and_alternative_values() {
        assert_eq!(ok("${UNSET:-def}"), "def");
        assert_eq!(ok("${EMPTY:-def}"), "def");
        assert_eq!(ok("${EMPTY-def}"), "");
        assert_eq!(ok("${UNSET-def}"), "def");
        assert_eq!(ok("${PWD:-def}"), "/home");
        assert_eq!(ok("${UNSET:-$PWD}"), "/home");
        assert_eq!(ok("${UNSET:-${SHELL:-x}y}"), "bashy");
        assert_eq!(ok("${PWD:+alt}"), "alt");
        assert_eq!(ok("${EMPTY:+alt}"), "");
        assert_eq!(ok("${EMPTY+alt}"), "alt");
        assert_eq!(ok("${UNSET+alt}"), "");
        assert_eq!(ok("${UNSET:-'a b'}"), "a b");
    }

    #[test]
    fn required_values() {
        assert_eq!(ok("${PWD:?}"), "/home");
        assert_eq!(ok("${EMPTY?}"), "");
        assert_eq!(
            word("${UNSET?}").map_err(|e| e.to_string()),
            Err("UNSET: is not allowed to be unset".into())
        );
        assert_eq!(
            word("${EMPTY:?}").map_err(|e| e.to_string()),
            Err("EMPTY: is not allowed to be empty".into())
        );
        assert_eq!(
            word("${UNSET:?set it please}").map_err(|e| e.to_string()),
            Err("UNSET: set it please".into())
        );
    }

    #[test]
    fn prefix_and_suffix_removal() {
        assert_eq!(ok("${file#*.}"), "tar.gz");
        assert_eq!(ok("${file##*.}"), "gz");
        assert_eq!(ok("${file%.*}"), "archive.tar");
        assert_eq!(ok("${file%%.*}"), "archive");
        assert_eq!(ok("${file#nomatch}"), "archive.tar.gz");
        assert_eq!(ok("${path%%:*}"), "/usr/local/bin");
        assert_eq!(ok("${url#https://}"), "example.com/a/b/c");
        assert_eq!(ok("${url##*/}"), "c");
        assert_eq!(ok("${file#?}"), "rchive.tar.gz");
        assert_eq!(ok("${UNSET#a}"), "");
        assert_eq!(ok("${file%\\*}"), "archive.tar.gz");
        // BuildKit allows only `\\*`, `\\?` and `\\\\` escapes in patterns.
        assert!(word("${file%\\.gz}").is_err());
        assert!(matches!(
            word("${file:#x}"),
            Err(ExpandError::UnsupportedModifier(_))
        ));
        assert!(matches!(
            word("${file#\\x}"),
            Err(ExpandError::InvalidPattern { .. })
        ));
    }

    #[test]
    fn pattern_replacement() {
        assert_eq!(ok("${path/bin/sbin}"), "/usr/local/sbin:/usr/bin");
        assert_eq!(ok("${path//bin/sbin}"), "/usr/local/sbin:/usr/sbin");
        assert_eq!(ok("${path//:/ }"), "/usr/local/bin /usr/bin");
        assert_eq!(ok("${file/.*/}"), "archive");
        assert_eq!(ok("${file/x/y}"), "archive.tar.gz");
        assert_eq!(ok("${url/\\/a\\//-}"), "https://example.com-b/c");
        assert_eq!(word("${file/x"), Err(ExpandError::MissingSlash));
        assert_eq!(word("${file/x/y"), Err(ExpandError::MissingBrace));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(word("${"), Err(ExpandError::MissingBrace));
        assert_eq!(word("${PWD"), Err(ExpandError::MissingBrace));
        assert_eq!(word("${}"), Err(ExpandError::BadSubstitution));
        assert_eq!(word("${:x}"), Err(ExpandError::BadSubstitution));
        assert_eq!(word("${{x}"), Err(ExpandError::BadSubstitution));
        assert_eq!(word("${PWD:-x"), Err(ExpandError::MissingBrace));
        assert!(matches!(
            word("${PWD!x}"),
            Err(ExpandError::UnsupportedModifier(_))
        ));
        assert!(matches!(
            word("${PWD:x}"),
            Err(ExpandError::UnsupportedModifier(_))
        ));
    }

    #[test]
    fn special_and_numeric_names() {
        // `$1x` reads the digits as the name; `$@` is a one-character name.
        assert_eq!(ok("$1x"), "x");
        assert_eq!(ok("$@x"), "x");
        let e = Lexer::new('\\')
            .process_word("$@ $12", &env())
            .unwrap_or_default();
        assert!(e.unmatched.contains("@") && e.unmatched.contains("12"));
    }

    #[test]
    fn matched_and_unmatched_names() {
        let e = Lexer::new('\\')
            .process_word("$PWD ${NOPE:-x} $EMPTY", &env())
            .unwrap_or_default();
        assert_eq!(e.value, "/home x ");
        assert_eq!(e.matched.into_iter().collect::<Vec<_>>(), vec!["EMPTY", "PWD"]);
        assert_eq!(e.unmatched.into_iter().collect::<Vec<_>>(), vec!["NOPE"]);
    }

    #[test]
    fn words_split_on_unquoted_whitespace() {
        let lex = Lexer::new('\\');
        let words = |w: &str| lex.process_words(w, &env()).unwrap_or_default();
        assert_eq!(words("a b  c"), vec!["a", "b", "c"]);
        assert_eq!(words("'a b' c"), vec!["a b", "c"]);
        assert_eq!(words("a\\ b"), vec!["a b"]);
        assert_eq!(words("$path x"), vec!["/usr/local/bin:/usr/bin", "x"]);
        let spaced: BTreeMap<String, String> =
            [("P".to_string(), "80 443".to_string())].into_iter().collect();
        assert_eq!(
            lex.process_words("$P", &spaced).unwrap_or_default(),
            vec!["80", "443"]
        );
        assert_eq!(words("<< EOF"), vec!["<< EOF"]);
    }

    #[test]
    fn skip_unset_keeps_references() {
        let lex = Lexer::new('\\').skip_unset_env(true);
        let w = |s: &str| lex.process_word(s, &NoEnv).map(|e| e.value);
        assert_eq!(
            w("$A ${B} ${C:-d} ${E/x/y}"),
            Ok("$A ${B} ${C:-d} ${E/x/y}".into())
        );
    }

    #[test]
    fn raw_modes_keep_quotes_and_escapes() {
        let lex = Lexer::new('\\').raw_quotes(true).raw_escapes(true);
        assert_eq!(
            lex.process_word("'a' \"b\" \\c", &NoEnv).map(|e| e.value),
            Ok("'a' \"b\" \\c".into())
        );
        let body = Lexer::new('\\').skip_process_quotes(true);
        assert_eq!(
            body.process_word("say \"$SHELL\" 'x'", &env()).map(|e| e.value),
            Ok("say \"bash\" 'x'".into())
        );
    }

    #[test]
    fn runaway_growth_is_refused() {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("A".into(), "x".repeat(1 << 19));
        let lex = Lexer::new('\\');
        assert!(lex.process_word("$A", &env).is_ok());
        assert_eq!(
            lex.process_word("$A$A$A", &env).map(|e| e.value.len()),
            Err(ExpandError::TooLong(MAX_LEN))
        );
        env.insert("C".into(), "*".repeat(5000));
        assert!(matches!(
            lex.process_word("${A#$C}", &env),
            Err(ExpandError::InvalidPattern { .. })
        ));
        env.insert("B".into(), "y".repeat(1000));
        assert!(matches!(
            lex.process_word("${B//?/0123456789}", &env),
            Ok(e) if e.value.len() == 10_000
        ));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "${A:-".repeat(1000) + &"}".repeat(1000);
        assert_eq!(word(&deep), Err(ExpandError::TooDeep(MAX_DEPTH)));
    }
}
