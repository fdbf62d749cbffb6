//! Parser directives: `# syntax=`, `# escape=` and `# check=`.
//!
//! Directives are comments of the form `# key=value` at the very top of the
//! file. The first line that is anything else (a blank line, another
//! comment, an instruction, an unknown key) ends the block, and later
//! look-alikes are plain comments. Each key may appear once.

use serde::Serialize;

/// A directive as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// The key, lower-cased.
    pub name: String,
    /// The value, trimmed.
    pub value: String,
    /// The line it is on (from 1).
    pub line: usize,
}

/// The directives found at the top of a Dockerfile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Directives {
    /// `# syntax=`: which frontend image the file asks for.
    pub syntax: Option<Directive>,
    /// `# escape=`: `\` or `` ` ``.
    pub escape: Option<Directive>,
    /// `# check=`: build-check configuration.
    pub check: Option<Directive>,
}

/// Why a directive is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    /// The same directive twice.
    #[error("only one {0} parser directive can be used")]
    Duplicate(String),
    /// `# escape=` with something other than a backslash or backtick.
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscape(String),
    /// A malformed `# check=` value.
    #[error("failed to parse check options: {0}")]
    InvalidCheck(String),
}

/// Reads directive lines one at a time, enforcing the placement rules.
#[derive(Debug, Default)]
pub(crate) struct DirectiveParser {
    done: bool,
    found: Directives,
}

impl DirectiveParser {
    /// Offers the next line (leading whitespace already stripped). Returns
    /// the directive if the line is one.
    pub(crate) fn offer(&mut self, line: &str, line_no: usize) -> Result<Option<Directive>, DirectiveError> {
        if self.done {
            return Ok(None);
        }
        let Some((key, value)) = line.strip_prefix('#').and_then(split_directive) else {
            self.done = true;
            return Ok(None);
        };
        let name = key.to_ascii_lowercase();
        let slot = match name.as_str() {
            "syntax" => &mut self.found.syntax,
            "escape" => &mut self.found.escape,
            "check" => &mut self.found.check,
            _ => {
                self.done = true;
                return Ok(None);
            }
        };
        if slot.is_some() {
            return Err(DirectiveError::Duplicate(name));
        }
        if name == "escape" && value != "\\" && value != "`" {
            return Err(DirectiveError::InvalidEscape(value));
        }
        let directive = Directive {
            name,
            value,
            line: line_no,
        };
        *slot = Some(directive.clone());
        Ok(Some(directive))
    }

    pub(crate) fn finish(self) -> Directives {
        self.found
    }
}

/// Matches BuildKit's `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` on the text
/// after `#` (leading whitespace skipped).
fn split_directive(text: &str) -> Option<(&str, String)> {
    let text = text.trim_start();
    let key_len = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(text.len(), |(i, _)| i);
    if key_len == 0 {
        return None;
    }
    let (key, rest) = text.split_at(key_len);
    let rest = rest.trim_start_matches(is_re_space).strip_prefix('=')?;
    let trimmed = rest.trim_matches(is_re_space);
    if !trimmed.is_empty() {
        return Some((key, trimmed.to_string()));
    }
    // `.+?` needs one character: an all-blank value keeps its first blank.
    rest.chars().next().map(|c| (key, c.to_string()))
}

/// Go's `\s`: ASCII whitespace only.
fn is_re_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

/// Finds `key` in the directive block as BuildKit's frontend selection does,
/// which (unlike the main parser) skips a `#!` first line.
pub(crate) fn detect(text: &str, key: &str) -> Option<Directive> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().peekable();
    if lines.peek().is_some_and(|(_, l)| l.starts_with("#!")) {
        lines.next();
    }
    let mut parser = DirectiveParser::default();
    for (i, line) in lines {
        match parser.offer(line, i + 1) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let found = parser.finish();
    [found.syntax, found.escape, found.check]
        .into_iter()
        .flatten()
        .find(|d| d.name == key)
}

/// The configuration of build checks, from `# check=skip=A,B;error=true`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckConfig {
    /// Rules not to report.
    pub skip: Vec<String>,
    /// `skip=all`.
    pub skip_all: bool,
    /// `error=true`: warnings fail the build.
    pub error: bool,
    /// Experimental rules to enable.
    pub experimental: Vec<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
}

impl CheckConfig {
    /// Parses the value of a `# check=` directive.
    pub fn parse(value: &str) -> Result<CheckConfig, DirectiveError> {
        let value = value.trim();
        let mut config = CheckConfig::default();
        if value.is_empty() {
            return Ok(config);
        }
        for part in value.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(DirectiveError::InvalidCheck(format!(
                    "invalid check option {part:?}"
                )));
            };
            let v = v.trim();
            let list = || v.split(',').map(|s| s.trim().to_string()).collect();
            match k.trim() {
                "skip" if v == "all" => config.skip_all = true,
                "skip" => config.skip = list(),
                "experimental" if v == "all" => config.experimental_all = true,
                "experimental" => config.experimental = list(),
                "error" => {
                    config.error = parse_go_bool(v).ok_or_else(|| {
                        DirectiveError::InvalidCheck(format!(
                            "failed to parse check option {part:?}: invalid syntax"
                        ))
                    })?
                }
                other => {
                    return Err(DirectiveError::InvalidCheck(format!(
                        "invalid check option {other:?}"
                    )));
                }
            }
        }
        Ok(config)
    }

    /// Whether `rule` is switched off.
    pub fn skips(&self, rule: &str) -> bool {
        self.skip_all || self.skip.iter().any(|s| s == rule)
    }

    /// Adds another configuration's skips and switches (a `# check=` comment
    /// above one instruction adds to the file's configuration).
    pub fn merged(&self, other: &CheckConfig) -> CheckConfig {
        let mut out = self.clone();
        out.skip_all |= other.skip_all;
        out.skip.extend(other.skip.iter().cloned());
        out.experimental_all |= other.experimental_all;
        out.experimental.extend(other.experimental.iter().cloned());
        out
    }
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Whether a `# syntax=` value names BuildKit's Dockerfile frontend (any
/// 1.x version, labs or not), which rbuild implements itself.
pub fn is_builtin_syntax(value: &str) -> bool {
    let image = value.split(' ').next().unwrap_or_default();
    let image = image.split('@').next().unwrap_or_default();
    let image = image.strip_prefix("docker.io/").unwrap_or(image);
    let (repo, tag) = match image.rsplit_once(':') {
        Some((r, t)) => (r, Some(t)),
        None => (image, None),
    };
    if repo != "docker/dockerfile" && repo != "docker/dockerfile-upstream" {
        return false;
    }
    match tag {
        None => true,
        Some(t) => matches!(t, "latest" | "labs" | "master" | "master-labs") || t.starts_with('1'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_syntax() {
        assert_eq!(
            split_directive(" syntax = docker/dockerfile:1 "),
            Some(("syntax", "docker/dockerfile:1".to_string()))
        );
        assert_eq!(split_directive("escape=`"), Some(("escape", "`".to_string())));
        assert_eq!(split_directive("1abc=x"), None);
        assert_eq!(split_directive("abc x"), None);
        assert_eq!(split_directive("abc="), None);
        assert_eq!(split_directive("abc= "), Some(("abc", " ".to_string())));
    }

    #[test]
    fn block_ends_at_first_non_directive() {
        let mut p = DirectiveParser::default();
        assert_eq!(
            p.offer("# syntax=docker/dockerfile:1", 1).map(|d| d.is_some()),
            Ok(true)
        );
        assert_eq!(p.offer("# a comment", 2), Ok(None));
        assert_eq!(p.offer("# escape=`", 3), Ok(None));
        let d = p.finish();
        assert!(d.syntax.is_some() && d.escape.is_none());
    }

    #[test]
    fn unknown_directive_ends_block() {
        let mut p = DirectiveParser::default();
        assert_eq!(p.offer("# foo=bar", 1), Ok(None));
        assert_eq!(p.offer("# escape=`", 2), Ok(None));
    }

    #[test]
    fn keys_are_case_insensitive_and_unique() {
        let mut p = DirectiveParser::default();
        assert_eq!(p.offer("# ESCAPE=`", 1).map(|d| d.is_some()), Ok(true));
        assert_eq!(
            p.offer("# escape=\\", 2),
            Err(DirectiveError::Duplicate("escape".into()))
        );
    }

    #[test]
    fn invalid_escape() {
        let mut p = DirectiveParser::default();
        assert_eq!(
            p.offer("# escape=x", 1),
            Err(DirectiveError::InvalidEscape("x".into()))
        );
    }

    #[test]
    fn syntax_detection_skips_shebang() {
        let d = detect("#!/usr/bin/env x\n# syntax=foo/bar\nFROM a", "syntax");
        assert_eq!(d.map(|d| d.value), Some("foo/bar".to_string()));
        assert!(detect("\n# syntax=foo\n", "syntax").is_none());
    }

    #[test]
    fn builtin_syntax_images() {
        for ok in [
            "docker/dockerfile:1",
            "docker/dockerfile:1.7",
            "docker/dockerfile:1.7-labs",
            "docker.io/docker/dockerfile:1.4.3",
            "docker/dockerfile",
            "docker/dockerfile:1@sha256:abc",
            "docker/dockerfile-upstream:master",
        ] {
            assert!(is_builtin_syntax(ok), "{ok}");
        }
        for other in [
            "tonistiigi/dockerfile:x",
            "example.com/frontend:1",
            "docker/dockerfile:0.1",
        ] {
            assert!(!is_builtin_syntax(other), "{other}");
        }
    }

    #[test]
    fn check_config() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, UndefinedVar;error=true");
        assert_eq!(
            c,
            Ok(CheckConfig {
                skip: vec!["JSONArgsRecommended".into(), "UndefinedVar".into()],
                error: true,
                ..CheckConfig::default()
            })
        );
        assert!(CheckConfig::parse("skip=all").is_ok_and(|c| c.skips("Anything")));
        assert!(CheckConfig::parse("error=maybe").is_err());
        assert!(CheckConfig::parse("nope=1").is_err());
        assert!(CheckConfig::parse("skip").is_err());
    }
}
