//! What the line-level parser hands the instruction reader: one [`Node`] per instruction
//! (keyword, flags, arguments as BuildKit's line parsers shape them), and the error either of
//! them reports. Kept apart from both so that each depends on it and not on the other.

use crate::ast::{Heredoc, KeyValue, Span};
use crate::directives::DirectiveError;

/// Why a Dockerfile could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {}: {kind}", span.start_line)]
pub struct ParseError {
    /// Where: the instruction's lines.
    pub span: Span,
    /// What went wrong.
    pub kind: ParseErrorKind,
}

/// What went wrong while parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// A bad parser directive.
    #[error(transparent)]
    Directive(#[from] DirectiveError),
    /// Nothing but comments and blank lines.
    #[error("the Dockerfile has no instructions")]
    Empty,
    /// A heredoc whose delimiter line never comes.
    #[error("unterminated heredoc: no line reading `{name}` ends the heredoc that begins here")]
    UnterminatedHeredoc {
        /// The delimiter that was expected.
        name: String,
    },
    /// A keyword that is not a Dockerfile instruction.
    #[error("unknown instruction: {name}{}", did_you_mean(suggestion, ""))]
    UnknownInstruction {
        /// The keyword as written.
        name: String,
        /// The closest instruction, if it looks like a typo.
        suggestion: Option<String>,
    },
    /// A flag the instruction does not take.
    #[error("unknown flag --{flag} for {instruction}{}", did_you_mean(suggestion, "--"))]
    UnknownFlag {
        /// The instruction, upper-case.
        instruction: String,
        /// The flag name without dashes.
        flag: String,
        /// The closest valid flag, if it looks like a typo.
        suggestion: Option<String>,
    },
    /// A JSON array with something other than strings in it.
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    JsonNotStrings,
    /// Any other malformed instruction; the message says what and how to fix it.
    #[error("{0}")]
    Invalid(String),
}

fn did_you_mean(suggestion: &Option<String>, prefix: &str) -> String {
    match suggestion {
        Some(s) => format!("; did you mean {prefix}{s}?"),
        None => String::new(),
    }
}

impl ParseError {
    pub(crate) fn new(span: Span, kind: ParseErrorKind) -> Self {
        ParseError { span, kind }
    }

    pub(crate) fn invalid(span: Span, message: impl Into<String>) -> Self {
        ParseError::new(span, ParseErrorKind::Invalid(message.into()))
    }
}

/// The arguments of a node, shaped by how BuildKit's line parsers read each
/// instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Args {
    /// No arguments at all.
    None,
    /// Whitespace-separated words (FROM, EXPOSE, shell-form COPY/ADD/VOLUME)
    /// or quote-aware words (ARG).
    Words(Vec<String>),
    /// A JSON array of strings.
    Json(Vec<String>),
    /// The rest of the line as one string (shell form, USER, WORKDIR, ...).
    Text(String),
    /// ENV/LABEL pairs.
    KeyValues(Vec<KeyValue>),
    /// HEALTHCHECK: the type word and the command.
    Health(String, Box<Args>),
    /// ONBUILD: the wrapped instruction.
    Sub(Box<Node>),
}

/// One instruction before it is given its typed meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub keyword: String,
    pub flags: Vec<String>,
    pub args: Args,
    pub heredocs: Vec<Heredoc>,
    pub original: String,
    pub span: Span,
    pub comments: Vec<String>,
}

impl Node {
    /// RUN, COPY and ADD in shell form (also wrapped in ONBUILD) may use heredocs.
    pub(crate) fn can_contain_heredoc(&self) -> bool {
        let node = match &self.args {
            Args::Sub(child) if self.keyword.eq_ignore_ascii_case("onbuild") => child,
            _ => self,
        };
        let kw = node.keyword.to_ascii_lowercase();
        matches!(kw.as_str(), "run" | "copy" | "add") && !matches!(node.args, Args::Json(_))
    }
}
