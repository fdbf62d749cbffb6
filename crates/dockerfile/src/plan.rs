//! The build plan: what the builder executes, with every value resolved.
//!
//! [`crate::plan()`] turns a parsed [`crate::Dockerfile`] into the stages the target needs,
//! in dependency order, resolving ARG scoping, base-image environments,
//! ONBUILD triggers, `COPY --from` and `RUN --mount from=` references, and
//! expanding variables exactly where BuildKit does.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::ast::{CommandLine, Heredoc, InlineSource, Span};
use crate::dockerignore::Matcher;
use crate::expand::ExpandError;
use crate::lint::Lint;
use crate::run_flags::{Device, MountType, Sharing};

/// What the caller knows about the build.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (the last one if `None`).
    pub target: Option<String>,
    /// The platform images are built for (`TARGETPLATFORM`).
    pub target_platform: String,
    /// The platform the build runs on (`BUILDPLATFORM`).
    pub build_platform: String,
    /// Names given with `--build-context name=...`: `FROM name`,
    /// `COPY --from=name` and `RUN --mount from=name` refer to them.
    pub named_contexts: BTreeSet<String>,
    /// Plan every stage, not only those the target needs (what `check` does).
    pub all_stages: bool,
    /// The context's .dockerignore, to warn about COPY of ignored files.
    pub dockerignore: Option<Matcher>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: "linux/amd64".to_string(),
            build_platform: "linux/amd64".to_string(),
            named_contexts: BTreeSet::new(),
            all_stages: false,
            dockerignore: None,
        }
    }
}

/// Facts about a base image that change the meaning of the Dockerfile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImageInfo {
    /// The image's `Env`, in order.
    pub env: Vec<(String, String)>,
    /// The image's `OnBuild` triggers, run at the start of a stage built on it.
    pub onbuild: Vec<String>,
    /// The image's `WorkingDir` (relative WORKDIR and COPY destinations start there).
    pub working_dir: String,
    /// The image's `User`.
    pub user: String,
    /// The image's `Shell` (shell-form commands run with it).
    pub shell: Vec<String>,
}

/// Supplies base-image configuration while planning. The builder implements
/// it with its registry client and cache; `rbuild check` uses [`NoResolver`].
pub trait ImageResolver {
    /// The configuration of `reference` for `platform`, or `None` when it is
    /// unknown (the plan then assumes an empty environment).
    fn image_config(&self, reference: &str, platform: &str) -> Option<BaseImageInfo>;
}

/// A resolver that knows no images.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResolver;

impl ImageResolver for NoResolver {
    fn image_config(&self, _reference: &str, _platform: &str) -> Option<BaseImageInfo> {
        None
    }
}

/// Why a Dockerfile cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", located(span, kind))]
pub struct PlanError {
    /// Where.
    pub span: Span,
    /// What.
    pub kind: PlanErrorKind,
}

/// What went wrong while planning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanErrorKind {
    /// A word could not be expanded.
    #[error("cannot expand {word:?}: {source}")]
    Expand {
        /// The word as written.
        word: String,
        /// Why.
        source: ExpandError,
    },
    /// `--target` names no stage.
    #[error("target stage {name:?} could not be found{}", hint(suggestion))]
    UnknownTarget {
        /// The requested target.
        name: String,
        /// The closest stage name.
        suggestion: Option<String>,
    },
    /// An ONBUILD trigger from a base image or stage is invalid.
    #[error("ONBUILD trigger {trigger:?} of the base is invalid: {message}")]
    Trigger {
        /// The trigger text.
        trigger: String,
        /// Why.
        message: String,
    },
    /// Anything else; the message says what and how to fix it.
    #[error("{0}")]
    Invalid(String),
}

/// "line N: message", or just the message for errors about the options
/// rather than a line (an unknown `--target`).
fn located(span: &Span, kind: &PlanErrorKind) -> String {
    match span.start_line {
        0 => kind.to_string(),
        line => format!("line {line}: {kind}"),
    }
}

fn hint(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!("; did you mean {s:?}?"))
        .unwrap_or_default()
}

impl PlanError {
    pub(crate) fn invalid(span: Span, message: impl Into<String>) -> Self {
        PlanError {
            span,
            kind: PlanErrorKind::Invalid(message.into()),
        }
    }
}

/// The plan: stages in dependency order and the one to export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Stages to build, dependencies first (each keeps its original index).
    pub stages: Vec<Stage>,
    /// Position in `stages` of the target stage.
    pub target: usize,
    /// `--build-arg` names no ARG declared (docker warns about these).
    pub unused_build_args: Vec<String>,
    /// Build-check findings made while planning.
    #[serde(skip)]
    pub lints: Vec<Lint>,
}

impl Plan {
    /// The target stage.
    pub fn target_stage(&self) -> Option<&Stage> {
        self.stages.get(self.target)
    }
}

/// One stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Position among all stages of the Dockerfile (what `COPY --from=0` counts).
    pub index: usize,
    /// The stage name, lower-cased.
    pub name: Option<String>,
    /// What the stage starts from.
    pub base: Base,
    /// The platform the stage is built for.
    pub platform: String,
    /// The FROM instruction.
    pub span: Span,
    /// The steps, base ONBUILD triggers first.
    pub steps: Vec<Step>,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Base {
    /// `FROM scratch`.
    Scratch,
    /// A registry image (reference as written after expansion; not normalised).
    Image {
        /// The reference.
        reference: String,
        /// The platform to pull.
        platform: String,
    },
    /// An earlier stage.
    Stage {
        /// Its original index.
        index: usize,
    },
    /// A named build context.
    Context {
        /// Its name.
        name: String,
    },
}

/// Where `COPY --from` or `RUN --mount from=` reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CopyFrom {
    /// An earlier stage.
    Stage {
        /// Its original index.
        index: usize,
    },
    /// A registry image.
    Image {
        /// The reference.
        reference: String,
    },
    /// A named build context.
    Context {
        /// Its name.
        name: String,
    },
}

/// A name and value (environment variables, labels, ARGs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Var {
    /// The name.
    pub name: String,
    /// The value.
    pub value: String,
}

impl Var {
    pub(crate) fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Var {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// One step of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The instruction's lines (the FROM line for ONBUILD triggers).
    pub span: Span,
    /// The instruction as written, continuation lines joined.
    pub instruction: String,
    /// The image history entry, docker-style (`RUN /bin/sh -c make # buildkit`);
    /// `None` for steps that leave no history (ONBUILD).
    pub created_by: Option<String>,
    /// Whether the step changes only the image config (no layer).
    pub empty_layer: bool,
    /// Whether the step is a trigger inherited from the base's ONBUILD.
    pub onbuild_trigger: bool,
    /// What to do.
    pub kind: StepKind,
}

/// A file made available to a RUN step (a heredoc script with a shebang).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineFile {
    /// Absolute path inside the container (under `/dev/pipes/`).
    pub path: String,
    /// Contents.
    pub content: String,
    /// Permission bits.
    pub mode: u32,
}

/// A resolved `RUN --mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// Mount type.
    #[serde(rename = "type")]
    pub kind: MountType,
    /// Absolute target path (relative targets are resolved against WORKDIR);
    /// for secrets and SSH, `None` means "the default location".
    pub target: Option<String>,
    /// Source path within `from` (or the context).
    pub source: Option<String>,
    /// Where the source comes from; `None` is the build context (bind) or an
    /// empty directory (cache).
    pub from: Option<CopyFrom>,
    /// Read-only.
    pub read_only: bool,
    /// Cache, secret or SSH id (cache ids default to the target).
    pub id: Option<String>,
    /// Cache sharing mode.
    pub sharing: Option<Sharing>,
    /// tmpfs size in bytes.
    pub size: Option<i64>,
    /// Secret/SSH: fail when missing.
    pub required: bool,
    /// Secret: expose as this environment variable.
    pub env: Option<String>,
    /// File mode.
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
}

/// A RUN step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunStep {
    /// The command as written.
    pub command: CommandLine,
    /// The final argv to execute (shell prepended, heredocs applied).
    pub argv: Vec<String>,
    /// Heredocs attached to the command.
    pub heredocs: Vec<Heredoc>,
    /// Files to mount read-only for the command.
    pub inline_files: Vec<InlineFile>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// `--network`: `default`, `none` or `host`.
    pub network: String,
    /// `--security`: `sandbox` or `insecure`.
    pub security: String,
    /// `--device` requests.
    pub devices: Vec<Device>,
    /// The process environment (image env, ENV, and ARGs with values), in order.
    pub env: Vec<Var>,
    /// The ARGs in scope with their values, as recorded in history and keyed
    /// in the cache (`RUN |2 A=1 B=2 ...`).
    pub args: Vec<Var>,
    /// Proxy variables from `--build-arg`, given to the process but kept out
    /// of history and the cache key.
    pub proxy_env: Vec<Var>,
    /// The user to run as (empty: the image default).
    pub user: String,
    /// The working directory.
    pub workdir: String,
}

/// Where a COPY/ADD source comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A path (or wildcard) in the context, a stage or an image.
    Path {
        /// The path as written after expansion.
        path: String,
    },
    /// An HTTP(S) URL (ADD only).
    Url {
        /// The URL.
        url: String,
    },
    /// A git repository (ADD only).
    Git {
        /// The source as written (after expansion), fragment included.
        url: String,
        /// The remote URL without fragment.
        remote: String,
        /// The ref from the fragment (`#ref`), if any.
        reference: Option<String>,
        /// The sub-directory from the fragment (`#ref:dir`), if any.
        subdir: Option<String>,
    },
}

/// `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chmod {
    /// The value as written (after expansion), as history records it.
    pub text: String,
    /// The parsed mode.
    pub mode: Mode,
}

/// A parsed `--chmod` mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// An octal mode (`0755`).
    Octal(u32),
    /// A symbolic mode (`u+x,g-w`), applied per file.
    Symbolic(String),
}

/// A COPY or ADD step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyStep {
    /// Sources.
    pub sources: Vec<Source>,
    /// Heredoc sources (already expanded when their delimiter was unquoted).
    pub inline: Vec<InlineSource>,
    /// The destination as written (expanded).
    pub dest: String,
    /// The destination resolved against WORKDIR (trailing `/` kept).
    pub dest_path: String,
    /// `--from` (COPY only).
    pub from: Option<CopyFrom>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--link`.
    pub link: bool,
    /// `--parents` (COPY only).
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// `--checksum` (ADD only).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD only).
    pub keep_git_dir: Option<bool>,
    /// `--unpack` (ADD only; unset means "local archives yes, URLs no").
    pub unpack: Option<bool>,
    /// The user in effect (for the builder's chown defaults).
    pub user: String,
}

/// A HEALTHCHECK step, in image-config terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthcheckStep {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    /// Interval in nanoseconds (0: default).
    pub interval_ns: u64,
    /// Timeout in nanoseconds.
    pub timeout_ns: u64,
    /// Start period in nanoseconds.
    pub start_period_ns: u64,
    /// Start interval in nanoseconds.
    pub start_interval_ns: u64,
    /// Retries (0: default).
    pub retries: u32,
}

/// An ARG as declared, with the value it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgValue {
    /// Name.
    pub name: String,
    /// Value, if it has one.
    pub value: Option<String>,
}

/// What a step does. Every value is expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// RUN.
    Run(RunStep),
    /// COPY.
    Copy(CopyStep),
    /// ADD.
    Add(CopyStep),
    /// ENV: set these variables, in order.
    Env {
        /// The variables.
        vars: Vec<Var>,
    },
    /// LABEL.
    Label {
        /// The labels.
        labels: Vec<Var>,
    },
    /// EXPOSE: `port/proto` entries.
    Expose {
        /// The ports.
        ports: Vec<String>,
    },
    /// USER.
    User {
        /// The user.
        user: String,
    },
    /// WORKDIR (creates the directory unless it is `/`).
    Workdir {
        /// The absolute path.
        path: String,
    },
    /// VOLUME.
    Volume {
        /// The paths.
        paths: Vec<String>,
    },
    /// STOPSIGNAL.
    StopSignal {
        /// The signal.
        signal: String,
    },
    /// HEALTHCHECK.
    Healthcheck(HealthcheckStep),
    /// SHELL.
    Shell {
        /// The shell argv prefix.
        shell: Vec<String>,
    },
    /// CMD.
    Cmd {
        /// The image's new `Cmd`.
        argv: Vec<String>,
    },
    /// ENTRYPOINT.
    Entrypoint {
        /// The image's new `Entrypoint`.
        argv: Vec<String>,
        /// Whether an inherited `Cmd` is cleared (no CMD earlier in this stage).
        clears_cmd: bool,
    },
    /// ONBUILD: record a trigger in the image.
    Onbuild {
        /// The trigger text.
        trigger: String,
    },
    /// ARG.
    Arg {
        /// The declared args.
        args: Vec<ArgValue>,
    },
    /// MAINTAINER (sets the image author).
    Maintainer {
        /// The author.
        name: String,
    },
}
