//! The parsed Dockerfile: typed instructions with their source spans.
//!
//! Values here are as written (after line joining, heredoc collection and
//! JSON decoding) but before variable expansion, which depends on build
//! arguments and base images and so belongs to [`crate::plan`].

use std::time::Duration;

use serde::Serialize;

use crate::directives::Directives;
use crate::lint::Lint;
pub use crate::span::Span;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Parser directives from the top of the file.
    pub directives: Directives,
    /// The escape character in force (`\` unless `# escape=` said otherwise).
    pub escape: char,
    /// Every instruction in file order, global ARGs included.
    pub instructions: Vec<Instruction>,
    /// Findings noticed while parsing (casing, empty continuations, ...).
    pub lints: Vec<Lint>,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Its lines.
    pub span: Span,
    /// The keyword as written (`copy`, `COPY`, `Copy`), kept for casing checks.
    pub keyword: String,
    /// The instruction's text with continuation lines joined, as BuildKit
    /// keeps it for history and progress messages.
    pub original: String,
    /// Comment lines directly above the instruction (used for `# check=`
    /// overrides on one instruction).
    pub comments: Vec<String>,
    /// What the instruction says.
    pub command: Command,
}

/// A command line in shell form or exec (JSON) form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandLine {
    /// `RUN make all`: run through the stage's SHELL.
    Shell(String),
    /// `RUN ["make", "all"]`: run directly.
    Exec(Vec<String>),
}

/// A here-document attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (`EOF` for `<<"EOF"`).
    pub name: String,
    /// The file descriptor prefix (`3<<EOF`), if any.
    pub fd: Option<u32>,
    /// Whether variables are expanded in the body (the delimiter was unquoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from each body line.
    pub chomp: bool,
    /// The body, with line endings, before any tab stripping.
    pub content: String,
}

impl Heredoc {
    /// The body with leading tabs stripped when the heredoc is `<<-`.
    pub fn body(&self) -> String {
        if self.chomp {
            strip_leading_tabs(&self.content)
        } else {
            self.content.clone()
        }
    }
}

pub(crate) fn strip_leading_tabs(s: &str) -> String {
    s.split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

/// `key=value` in ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, unexpanded.
    pub key: String,
    /// The value, unexpanded, quotes still in place.
    pub value: String,
    /// Written in the legacy `ENV key value` form.
    pub legacy: bool,
}

/// One name in an ARG instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The variable name.
    pub name: String,
    /// The default value (unexpanded), if one was given.
    pub default: Option<String>,
}

/// FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// The image or stage reference, unexpanded.
    pub image: String,
    /// The stage name, lower-cased (stage names are case-insensitive).
    pub name: Option<String>,
    /// The stage name as written.
    pub name_as_written: Option<String>,
    /// The `AS` keyword as written, for the casing check.
    pub as_keyword: Option<String>,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// `--mount` values, unexpanded (they are expanded per build).
    pub mounts: Vec<String>,
    /// `--network`.
    pub network: Option<String>,
    /// `--security`.
    pub security: Option<String>,
    /// `--device` values.
    pub devices: Vec<String>,
    /// The command.
    pub command: CommandLine,
    /// Heredocs whose bodies feed the command.
    pub heredocs: Vec<Heredoc>,
}

/// An inline file for COPY/ADD (`COPY <<EOF /dest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineSource {
    /// The file name (the heredoc delimiter).
    pub name: String,
    /// The body, tabs already stripped for `<<-`.
    pub content: String,
    /// Whether to expand variables in the body.
    pub expand: bool,
}

/// What COPY and ADD share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Source paths or URLs, unexpanded.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub inline: Vec<InlineSource>,
    /// The destination, unexpanded.
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
}

/// COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Sources, destination and shared flags.
    pub transfer: Transfer,
    /// `--from`.
    pub from: Option<String>,
    /// `--parents`.
    pub parents: bool,
}

/// ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    /// Sources, destination and shared flags.
    pub transfer: Transfer,
    /// `--keep-git-dir` (unset differs from false: a git URL may say it).
    pub keep_git_dir: Option<bool>,
    /// `--checksum`.
    pub checksum: Option<String>,
    /// `--unpack` (unset: unpack local archives, not remote ones).
    pub unpack: Option<bool>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK [options] CMD ...`.
    Cmd {
        /// The test command.
        test: CommandLine,
        /// `--interval`.
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

/// What an instruction says. Values are unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// FROM.
    From(From),
    /// RUN.
    Run(Run),
    /// CMD.
    Cmd(CommandLine),
    /// ENTRYPOINT.
    Entrypoint(CommandLine),
    /// SHELL (always JSON).
    Shell(Vec<String>),
    /// ENV.
    Env(Vec<KeyValue>),
    /// LABEL.
    Label(Vec<KeyValue>),
    /// EXPOSE.
    Expose(Vec<String>),
    /// ADD.
    Add(Add),
    /// COPY.
    Copy(Copy),
    /// WORKDIR.
    Workdir(String),
    /// USER.
    User(String),
    /// VOLUME.
    Volume(Vec<String>),
    /// STOPSIGNAL.
    StopSignal(String),
    /// HEALTHCHECK.
    Healthcheck(Healthcheck),
    /// ARG.
    Arg(Vec<ArgDecl>),
    /// ONBUILD: the trigger's text (with heredoc bodies appended), run when a
    /// later build uses this image or stage as its base.
    Onbuild(String),
    /// MAINTAINER.
    Maintainer(String),
}

impl Command {
    /// The canonical upper-case keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::From(_) => "FROM",
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Shell(_) => "SHELL",
            Command::Env(_) => "ENV",
            Command::Label(_) => "LABEL",
            Command::Expose(_) => "EXPOSE",
            Command::Add(_) => "ADD",
            Command::Copy(_) => "COPY",
            Command::Workdir(_) => "WORKDIR",
            Command::User(_) => "USER",
            Command::Volume(_) => "VOLUME",
            Command::StopSignal(_) => "STOPSIGNAL",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Arg(_) => "ARG",
            Command::Onbuild(_) => "ONBUILD",
            Command::Maintainer(_) => "MAINTAINER",
        }
    }
}
