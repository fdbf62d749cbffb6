//! The planner's state and what every instruction asks of it: the stages found so far and
//! each one's environment, variable expansion (with its undefined-variable findings), stage
//! references, the shell. [`crate::stages`] drives the planner over the stage graph and
//! [`crate::dispatch`] (with [`crate::transfer`] and [`crate::run_step`]) applies one
//! instruction; both read and update the state through this module, which depends on neither.

use std::collections::BTreeSet;

use crate::ast::{Instruction, Span};
use crate::expand::{ExpandError, Lexer};
use crate::lint::{Lint, Rule};
use crate::plan::{Base, CopyFrom, ImageResolver, PlanError, PlanErrorKind, PlanOptions, Stage, Var};
use crate::platform::Platform;
use crate::{reference, suggest};

/// Linux's default `PATH`, which BuildKit sets when the base image has none.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The automatic platform ARGs, usable in FROM without a declaration.
pub(crate) const PLATFORM_ARGS: [&str; 11] = [
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDOSVERSION",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETOSVERSION",
    "TARGETARCH",
    "TARGETVARIANT",
    "TARGETSTAGE",
];

/// Whether `name` is one of the proxy variables BuildKit passes to RUN
/// without recording them.
pub(crate) fn is_proxy_arg(name: &str) -> bool {
    ["http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy"]
        .iter()
        .any(|p| name.eq_ignore_ascii_case(p))
}

/// Sets `key` in an ordered environment, replacing it in place if present.
pub(crate) fn set_var(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    }
}

/// Where a stage is while its instructions are applied.
#[derive(Debug, Clone, Default)]
pub(crate) struct StageState {
    /// The environment RUN sees and expansion reads: image env, ENV, ARGs.
    pub env: Vec<(String, String)>,
    /// The image config's `Env`.
    pub config_env: Vec<(String, String)>,
    /// ARGs declared so far (inherited from a base stage too).
    pub args: Vec<(String, Option<String>)>,
    pub workdir: String,
    pub user: String,
    pub shell: Vec<String>,
    /// False when the base image is unknown: undefined variables may come
    /// from its environment, so they are not reported.
    pub env_known: bool,
    pub workdir_set: bool,
    /// The stage targets Windows (default shell `cmd /S /C`, no default PATH).
    pub windows: bool,
    pub cmd_set: bool,
    pub cmd_at: Option<Span>,
    pub entrypoint_at: Option<Span>,
    pub healthcheck_at: Option<Span>,
}

/// An instruction to dispatch in a stage, possibly inherited via ONBUILD.
#[derive(Debug, Clone)]
pub(crate) struct StageCommand {
    pub ins: Instruction,
    pub onbuild: bool,
}

pub(crate) struct StageInfo {
    pub name: Option<String>,
    pub base: Base,
    pub platform: Platform,
    pub span: Span,
    pub commands: Vec<StageCommand>,
    pub deps: Vec<(usize, Span)>,
    pub triggers_done: bool,
}

pub(crate) struct Planner<'a> {
    pub opts: &'a PlanOptions,
    pub resolver: &'a dyn ImageResolver,
    pub lexer: Lexer,
    pub global: Vec<(String, String)>,
    pub meta_names: BTreeSet<String>,
    pub used_args: BTreeSet<String>,
    pub lints: Vec<Lint>,
    pub target_platform: Platform,
    pub stages: Vec<StageInfo>,
    pub states: Vec<Option<StageState>>,
    pub planned: Vec<Stage>,
    pub target: usize,
}

pub(crate) fn expansion_error(span: Span, word: &str, source: ExpandError) -> PlanError {
    PlanError {
        span,
        kind: PlanErrorKind::Expand {
            word: word.to_string(),
            source,
        },
    }
}

/// The SHELL in effect: the stage's, else the platform default.
fn default_shell(state: &StageState) -> Vec<String> {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    match (state.shell.is_empty(), state.windows) {
        (false, _) => state.shell.clone(),
        (true, false) => owned(&["/bin/sh", "-c"]),
        (true, true) => owned(&["cmd", "/S", "/C"]),
    }
}

pub(crate) fn with_shell(state: &StageState, args: &[String]) -> Vec<String> {
    let mut argv = default_shell(state);
    argv.push(args.join(" "));
    argv
}

pub(crate) fn vars(list: &[(String, String)]) -> Vec<Var> {
    list.iter().map(|(k, v)| Var::new(k, v)).collect()
}

impl Planner<'_> {
    /// Expands `word` with the stage environment, reporting undefined variables.
    pub(crate) fn expand(&mut self, state: &StageState, word: &str, span: Span) -> Result<String, PlanError> {
        self.expand_with(self.lexer, state, word, span)
    }

    pub(crate) fn expand_with(
        &mut self,
        lexer: Lexer,
        state: &StageState,
        word: &str,
        span: Span,
    ) -> Result<String, PlanError> {
        let e = lexer
            .process_word(word, &state.env)
            .map_err(|source| expansion_error(span, word, source))?;
        // With an unknown base image any name may come from its environment;
        // a global ARG's name is still worth reporting (it needs an ARG line
        // in the stage), the most common cause of this warning.
        for name in &e.unmatched {
            if !state.env_known && !self.meta_names.contains(name) && !PLATFORM_ARGS.contains(&name.as_str())
            {
                continue;
            }
            if state.args.iter().any(|(a, _)| a == name) {
                continue;
            }
            let hint = suggest::parenthesised(name, state.env.iter().rev().map(|(k, _)| k.as_str()), "$");
            self.lints.push(Lint::new(
                Rule::UndefinedVar,
                span,
                format!("Usage of undefined variable '${name}'{hint}"),
            ));
        }
        Ok(e.value)
    }

    pub(crate) fn expand_opt(
        &mut self,
        state: &StageState,
        word: &Option<String>,
        span: Span,
    ) -> Result<Option<String>, PlanError> {
        word.as_ref().map(|w| self.expand(state, w, span)).transpose()
    }

    /// Resolves a `--from` / `from=` name: a stage index or name, a named
    /// context, or an image reference.
    pub(crate) fn resolve_from(&self, name: &str, span: Span) -> Result<CopyFrom, PlanError> {
        if let Some(index) = parse_go_int(name) {
            if index < 0 || index as usize >= self.stages.len() {
                return Err(PlanError::invalid(
                    span,
                    format!(
                        "invalid stage index {index}: the Dockerfile has {} stages",
                        self.stages.len()
                    ),
                ));
            }
            return Ok(CopyFrom::Stage {
                index: index as usize,
            });
        }
        let lower = name.to_lowercase();
        if let Some(index) = self
            .stages
            .iter()
            .rposition(|s| s.name.as_deref() == Some(&lower))
        {
            return Ok(CopyFrom::Stage { index });
        }
        if self.opts.named_contexts.contains(name) {
            return Ok(CopyFrom::Context {
                name: name.to_string(),
            });
        }
        reference::validate(name).map_err(|m| {
            PlanError::invalid(
                span,
                format!("{name:?} is neither a stage nor a valid image reference: {m}"),
            )
        })?;
        Ok(CopyFrom::Image {
            reference: name.to_string(),
        })
    }

    pub(crate) fn stage_label(&self, s: usize) -> String {
        self.stages[s]
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{s}"))
    }
}

/// Go's `strconv.Atoi`.
fn parse_go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
