//! The line-level parser: directives, comments, continuation lines, flags,
//! JSON arrays and heredocs, as BuildKit's `parser` package reads them.
//!
//! It turns text into [`Node`]s (keyword, flags, raw arguments); the
//! [`crate::instructions`] module then gives each node its typed meaning.

use crate::ast::{Dockerfile, KeyValue, Span};
use crate::directives::DirectiveParser;
use crate::expand::{Lexer, NoEnv};
use crate::heredoc::{self, HeredocMarker};
use crate::instructions;
use crate::json::{self, Parsed};
use crate::lint::{Lint, Rule};
use crate::syntax::{Args, Node, ParseError, ParseErrorKind};

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    // BuildKit refuses to build with a malformed `# check=` directive.
    if let Some(d) = crate::directives::detect(text, "check") {
        crate::directives::CheckConfig::parse(&d.value)
            .map_err(|e| ParseError::new(Span::lines(d.line, d.line), e.into()))?;
    }
    let nodes = parse_nodes(text)?;
    let mut lints = nodes.lints;
    let mut out = Vec::with_capacity(nodes.nodes.len());
    for node in nodes.nodes {
        out.push(instructions::from_node(node, &mut lints)?);
    }
    instructions::check_file(&out, &mut lints);
    lints.sort_by_key(|l| l.span.start_line);
    Ok(Dockerfile {
        directives: nodes.directives,
        escape: nodes.escape,
        instructions: out,
        lints,
    })
}

pub(crate) struct Nodes {
    pub directives: crate::directives::Directives,
    pub escape: char,
    pub nodes: Vec<Node>,
    pub lints: Vec<Lint>,
}

/// Splits text into nodes, following BuildKit's `parser.Parse` line by line.
pub(crate) fn parse_nodes(text: &str) -> Result<Nodes, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut escape = '\\';
    let mut directives = DirectiveParser::default();
    let mut nodes = Vec::new();
    let mut lints = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut next = 0;
    while next < lines.len() {
        let raw = lines[next];
        next += 1;
        let start_line = next;
        let line = trim_newline(raw).trim_start();
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment.to_string());
            }
        }
        let directive = directives
            .offer(line, start_line)
            .map_err(|e| ParseError::new(Span::lines(start_line, start_line), e.into()))?;
        if let Some(directive) = directive {
            comments.pop();
            if directive.name == "escape" {
                escape = directive.value.chars().next().unwrap_or('\\');
            }
        }
        let content = if line.starts_with('#') { "" } else { line };
        let (first, mut done) = trim_continuation(content, escape);
        if done && first.is_empty() {
            continue;
        }
        let column = raw.chars().take_while(|c| c.is_whitespace()).count() + 1;
        let mut joined = first.to_string();
        let mut empty_continuation = false;
        while !done && next < lines.len() {
            let raw = lines[next];
            next += 1;
            if raw.trim_start().starts_with('#') {
                continue;
            }
            let line = trim_newline(raw);
            if line.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, end) = trim_continuation(line, escape);
            joined.push_str(part);
            done = end;
        }
        let mut span = Span {
            start_line,
            end_line: next,
            column,
        };
        if empty_continuation {
            lints.push(Lint::new(
                Rule::NoEmptyContinuation,
                Span::lines(next, next),
                "Empty continuation line",
            ));
        }
        let mut node = new_node(&joined, escape, span, std::mem::take(&mut comments))?;
        if node.can_contain_heredoc() && joined.contains("<<") {
            for marker in heredocs_in_line(&joined).map_err(|e| ParseError::invalid(span, e))? {
                let (content, end) = read_heredoc_body(&lines, next, &marker).ok_or_else(|| {
                    ParseError::new(
                        Span::lines(start_line, lines.len()),
                        ParseErrorKind::UnterminatedHeredoc {
                            name: marker.name.clone(),
                        },
                    )
                })?;
                next = end;
                node.heredocs.push(marker.into_heredoc(content));
            }
            span.end_line = next;
            node.span = span;
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(ParseError::new(
            Span::lines(lines.len().max(1), lines.len().max(1)),
            ParseErrorKind::Empty,
        ));
    }
    Ok(Nodes {
        directives: directives.finish(),
        escape,
        nodes,
        lints,
    })
}

/// Reads a heredoc body starting at line index `from`; returns the body and
/// the index after the terminator, or `None` if the file ends first.
fn read_heredoc_body(lines: &[&str], from: usize, marker: &HeredocMarker) -> Option<(String, usize)> {
    let mut content = String::new();
    for (i, raw) in lines.iter().enumerate().skip(from) {
        let mut candidate = trim_newline(raw);
        if marker.chomp {
            candidate = candidate.trim_start_matches('\t');
        }
        if candidate == marker.name {
            return Some((content, i + 1));
        }
        content.push_str(raw);
    }
    None
}

/// The heredoc markers on an instruction line, in order.
fn heredocs_in_line(line: &str) -> Result<Vec<HeredocMarker>, String> {
    let lexer = Lexer::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset_env(true);
    // A line the lexer cannot split (an unbalanced quote) has no heredocs.
    let words = lexer.process_words(line, &NoEnv).unwrap_or_default();
    let mut out = Vec::new();
    for word in words {
        if let Some(marker) = heredoc::parse_marker(&word).map_err(|e| e.to_string())? {
            out.push(marker);
        }
    }
    Ok(out)
}

/// Strips trailing `\r` and `\n` (all of them, as Go's `TrimRight`).
fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

/// BuildKit's continuation test: the escape character, optionally followed by
/// blanks, ends the line and is not itself escaped. Returns the line without
/// it and whether the instruction ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line, true);
    };
    if before.is_empty() {
        return ("", false);
    }
    if before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

/// BuildKit's `reWhitespace`: the separator between keyword and arguments.
fn is_separator(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

fn new_node(line: &str, escape: char, span: Span, comments: Vec<String>) -> Result<Node, ParseError> {
    let trimmed = line.trim();
    let (keyword, rest) = match trimmed.find(is_separator) {
        Some(i) => (&trimmed[..i], trimmed[i..].trim_start_matches(is_separator)),
        None => (trimmed, ""),
    };
    let (rest, flags) = extract_flags(rest, escape);
    let rest = rest.trim();
    let args = match keyword.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => maybe_json_list(rest, span)?,
        "arg" => Args::Words(quoted_words(rest, escape)),
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(rest, span)?,
        "env" | "label" => name_values(rest, keyword, escape, span)?,
        "expose" | "from" => whitespace_words(rest),
        "healthcheck" => health(rest, span)?,
        "maintainer" | "stopsignal" | "user" | "workdir" if !rest.is_empty() => Args::Text(rest.to_string()),
        "onbuild" if !rest.is_empty() => Args::Sub(Box::new(new_node(rest, escape, span, Vec::new())?)),
        _ => Args::None,
    };
    Ok(Node {
        keyword: keyword.to_string(),
        flags,
        args,
        heredocs: Vec::new(),
        original: line.to_string(),
        span,
        comments,
    })
}

/// Pulls leading `--flag[=value]` words off the arguments, removing quotes
/// and escapes inside them as BuildKit's `extractBuilderFlags` does.
fn extract_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    let mut flags = Vec::new();
    let mut rest = line;
    loop {
        let trimmed = rest.trim_start();
        if !trimmed.starts_with("--") {
            return (trimmed, flags);
        }
        let mut word = String::new();
        let mut blank_ok = false;
        let mut quote: Option<char> = None;
        let mut chars = trimmed.char_indices().peekable();
        let mut end = trimmed.len();
        while let Some((i, c)) = chars.next() {
            match quote {
                None if c.is_whitespace() => {
                    end = i;
                    break;
                }
                None if c == '\'' || c == '"' => {
                    quote = Some(c);
                    blank_ok = true;
                }
                Some(q) if c == q => quote = None,
                _ if c == escape => {
                    match chars.next() {
                        Some((_, n)) => word.push(n),
                        // An escape at the end is dropped (and closes a quote).
                        None => quote = None,
                    }
                }
                _ => word.push(c),
            }
        }
        rest = &trimmed[end..];
        if word == "--" {
            return (rest.trim_start(), flags);
        }
        if blank_ok || !word.is_empty() {
            flags.push(word);
        }
        if end == trimmed.len() {
            return ("", flags);
        }
    }
}

/// Reads exec-form arguments; anything not starting with `[` is not JSON.
fn parse_json(rest: &str) -> Parsed {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Parsed::Invalid;
    }
    json::string_array(rest)
}

fn maybe_json(rest: &str, span: Span) -> Result<Args, ParseError> {
    if rest.is_empty() {
        return Ok(Args::None);
    }
    match parse_json(rest) {
        Parsed::Strings(v) => Ok(Args::Json(v)),
        Parsed::NotStrings => Err(ParseError::new(span, ParseErrorKind::JsonNotStrings)),
        // Invalid JSON silently falls back to shell form, as in BuildKit.
        Parsed::Invalid => Ok(Args::Text(rest.to_string())),
    }
}

fn maybe_json_list(rest: &str, span: Span) -> Result<Args, ParseError> {
    match parse_json(rest) {
        Parsed::Strings(v) => Ok(Args::Json(v)),
        Parsed::NotStrings => Err(ParseError::new(span, ParseErrorKind::JsonNotStrings)),
        Parsed::Invalid => Ok(whitespace_words(rest)),
    }
}

fn whitespace_words(rest: &str) -> Args {
    if rest.is_empty() {
        return Args::None;
    }
    Args::Words(
        rest.split(is_separator)
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

fn health(rest: &str, span: Span) -> Result<Args, ParseError> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok(Args::None);
    }
    let kind = rest[..sep].to_string();
    let cmd = maybe_json(rest[sep..].trim_start(), span)?;
    Ok(Args::Health(kind, Box::new(cmd)))
}

/// Splits on whitespace outside quotes, keeping quotes and escapes in the
/// words (they are removed later, during expansion). BuildKit's `parseWords`.
pub(crate) fn quoted_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            None => {
                if c.is_whitespace() {
                    if in_word && (blank_ok || !word.is_empty()) {
                        words.push(std::mem::take(&mut word));
                    }
                    in_word = false;
                    blank_ok = false;
                    continue;
                }
                in_word = true;
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                }
                if c == escape {
                    let Some(n) = chars.next() else { continue };
                    word.push(c);
                    word.push(n);
                    continue;
                }
                word.push(c);
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
                if c == escape && q != '\'' {
                    let Some(n) = chars.next() else {
                        quote = None;
                        continue;
                    };
                    word.push(c);
                    word.push(n);
                    continue;
                }
                word.push(c);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

fn name_values(rest: &str, keyword: &str, escape: char, span: Span) -> Result<Args, ParseError> {
    let words = quoted_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Args::None);
    };
    if !first.contains('=') {
        let Some(i) = rest.find(is_separator) else {
            return Err(ParseError::invalid(
                span,
                format!(
                    "{} must have two arguments (or use the {0} key=value form)",
                    keyword.to_ascii_uppercase()
                ),
            ));
        };
        return Ok(Args::KeyValues(vec![KeyValue {
            key: rest[..i].to_string(),
            value: rest[i..].trim_start_matches(is_separator).to_string(),
            legacy: true,
        }]));
    }
    let mut pairs = Vec::with_capacity(words.len());
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(ParseError::invalid(
                span,
                format!("Syntax error - can't find = in {word:?}. Must be of the form: name=value"),
            ));
        };
        pairs.push(KeyValue {
            key: key.to_string(),
            value: value.to_string(),
            legacy: false,
        });
    }
    Ok(Args::KeyValues(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(text: &str) -> Vec<Node> {
        match parse_nodes(text) {
            Ok(n) => n.nodes,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn continuation_joins_lines_without_separator() {
        let n = nodes("RUN a \\\n  b \\\n c\n");
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].args, Args::Text("a   b  c".into()));
        assert_eq!((n[0].span.start_line, n[0].span.end_line), (1, 3));
    }

    #[test]
    fn comments_inside_continuations_are_dropped() {
        let n = nodes("RUN a \\\n# comment\n  # indented comment\n b\n");
        assert_eq!(n[0].args, Args::Text("a  b".into()));
    }

    #[test]
    fn empty_continuation_lines_warn_but_continue() {
        let parsed = parse_nodes("RUN a \\\n\n b\nCMD x\n").map_err(|e| e.to_string());
        let Ok(parsed) = parsed else { panic!() };
        assert_eq!(parsed.nodes.len(), 2);
        assert_eq!(parsed.lints.len(), 1);
        assert_eq!(parsed.lints[0].rule, Rule::NoEmptyContinuation);
    }

    #[test]
    fn escaped_escape_is_not_a_continuation() {
        assert_eq!(trim_continuation("a \\\\", '\\'), ("a \\\\", true));
        assert_eq!(trim_continuation("a \\  ", '\\'), ("a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a `", '`'), ("a ", false));
    }

    #[test]
    fn hash_after_start_is_an_argument() {
        let n = nodes("RUN echo # not a comment\n");
        assert_eq!(n[0].args, Args::Text("echo # not a comment".into()));
    }

    #[test]
    fn bom_and_crlf() {
        let n = nodes("\u{feff}FROM a\r\nRUN b\r\n");
        assert_eq!(n[0].args, Args::Words(vec!["a".into()]));
        assert_eq!(n[1].args, Args::Text("b".into()));
    }

    #[test]
    fn escape_directive_changes_continuation() {
        let n = nodes("# escape=`\nRUN a `\n b\nCOPY c:\\x d\n");
        assert_eq!(n[0].args, Args::Text("a  b".into()));
        assert_eq!(n[1].args, Args::Words(vec!["c:\\x".into(), "d".into()]));
    }

    #[test]
    fn flags_are_extracted_with_quotes_removed() {
        assert_eq!(
            extract_flags("--a=1 --b=\"x y\" rest of it", '\\'),
            ("rest of it", vec!["--a=1".to_string(), "--b=x y".to_string()])
        );
        assert_eq!(extract_flags("-- --not-a-flag", '\\'), ("--not-a-flag", vec![]));
        assert_eq!(extract_flags("--only", '\\'), ("", vec!["--only".to_string()]));
    }

    #[test]
    fn json_and_fallback() {
        let n = nodes("CMD [\"a\", \"b\"]\nCMD [\"a\", b]\nCMD [ ]\n");
        assert_eq!(n[0].args, Args::Json(vec!["a".into(), "b".into()]));
        assert_eq!(n[1].args, Args::Text("[\"a\", b]".into()));
        assert_eq!(n[2].args, Args::Json(vec![]));
        assert!(parse_nodes("CMD [\"a\", 1]").is_err());
    }

    #[test]
    fn quoted_words_keep_quotes() {
        assert_eq!(
            quoted_words("a=\"x y\" b='z' c=\\ d", '\\'),
            vec!["a=\"x y\"", "b='z'", "c=\\ d"]
        );
    }

    #[test]
    fn legacy_env_takes_rest_of_line() {
        let n = nodes("ENV A  hello   world\n");
        assert_eq!(
            n[0].args,
            Args::KeyValues(vec![KeyValue {
                key: "A".into(),
                value: "hello   world".into(),
                legacy: true
            }])
        );
    }

    #[test]
    fn heredocs_are_collected() {
        let n = nodes("RUN <<EOF\necho hi\nEOF\nRUN <<-A cat - <<\"B\"\n\tx\n\tA\ny $z\nB\nCMD c\n");
        assert_eq!(n.len(), 3);
        assert_eq!(n[0].heredocs[0].content, "echo hi\n");
        assert_eq!((n[0].span.start_line, n[0].span.end_line), (1, 3));
        assert_eq!(n[1].heredocs.len(), 2);
        assert!(n[1].heredocs[0].chomp && n[1].heredocs[0].expand);
        assert_eq!(n[1].heredocs[1].name, "B");
        assert!(!n[1].heredocs[1].expand);
        assert_eq!(n[1].heredocs[1].content, "y $z\n");
    }

    #[test]
    fn unterminated_heredoc_points_at_its_start() {
        let e = parse_nodes("FROM a\nRUN <<EOF\necho\n");
        let Err(e) = e else { panic!("expected an error") };
        assert_eq!(e.span.start_line, 2);
        assert!(matches!(e.kind, ParseErrorKind::UnterminatedHeredoc { .. }));
    }

    #[test]
    fn no_heredoc_in_json_or_other_instructions() {
        let n = nodes("RUN [\"<<EOF\"]\nENV a=<<EOF\n");
        assert_eq!(n.len(), 2);
        assert!(n.iter().all(|n| n.heredocs.is_empty()));
    }

    #[test]
    fn only_comments_is_an_error() {
        assert!(matches!(
            parse_nodes("# hello\n\n").map(|_| ()),
            Err(ParseError {
                kind: ParseErrorKind::Empty,
                ..
            })
        ));
    }
}
