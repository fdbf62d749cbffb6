//! Applies one instruction to a stage: expands its words with the stage's
//! environment, updates the stage state, and produces the plan [`Step`]
//! with its docker-style history entry.

use crate::ast::{ArgDecl, Command, CommandLine, Healthcheck, Instruction, KeyValue, Span};
use crate::go_compat::{format_duration, plain_list, quote_list};
use crate::lint::{Lint, Rule};
use crate::paths::normalize_workdir;
use crate::plan::{
    ArgValue, CopyFrom, HealthcheckStep, PlanError, PlanErrorKind, Stage, Step, StepKind, Var,
};
use crate::planner::{Planner, StageState, set_var, with_shell};
use crate::{signal, sources};

impl Planner<'_> {
    /// Runs a stage's instructions and records the planned stage.
    pub(crate) fn dispatch_stage(
        &mut self,
        s: usize,
        mut state: StageState,
    ) -> Result<StageState, PlanError> {
        let commands = self.stages[s].commands.clone();
        let mut steps = Vec::with_capacity(commands.len());
        for cmd in &commands {
            let step = self.dispatch(s, &mut state, &cmd.ins)?;
            steps.push(Step {
                onbuild_trigger: cmd.onbuild,
                ..step
            });
        }
        let info = &self.stages[s];
        self.planned.push(Stage {
            index: s,
            name: info.name.clone(),
            base: info.base.clone(),
            platform: info.platform.to_string(),
            span: info.span,
            steps,
        });
        Ok(state)
    }

    fn dispatch(&mut self, s: usize, state: &mut StageState, ins: &Instruction) -> Result<Step, PlanError> {
        let span = ins.span;
        let step = |kind: StepKind, created_by: Option<String>, empty_layer: bool| Step {
            span,
            instruction: ins.original.clone(),
            created_by,
            empty_layer,
            onbuild_trigger: false,
            kind,
        };
        Ok(match &ins.command {
            Command::Env(pairs) => {
                let expanded = self.key_values(state, pairs, "ENV", span)?;
                for v in &expanded {
                    self.secret_lint("ENV", &v.name, span);
                    set_var(&mut state.env, &v.name, &v.value);
                    set_var(&mut state.config_env, &v.name, &v.value);
                }
                let history = history_pairs("ENV", &expanded);
                step(StepKind::Env { vars: expanded }, Some(history), true)
            }
            Command::Label(pairs) => {
                let labels = self.key_values(state, pairs, "LABEL", span)?;
                let history = history_pairs("LABEL", &labels);
                step(StepKind::Label { labels }, Some(history), true)
            }
            Command::Maintainer(name) => step(
                StepKind::Maintainer { name: name.clone() },
                Some(format!("MAINTAINER {name}")),
                true,
            ),
            Command::Workdir(path) => {
                let path = self.expand(state, path, span)?;
                if path.is_empty() {
                    return Err(PlanError::invalid(
                        span,
                        "WORKDIR needs a path, but it expanded to nothing",
                    ));
                }
                if !state.workdir_set && !path.starts_with('/') {
                    self.lints.push(Lint::new(
                        Rule::WorkdirRelativePath,
                        span,
                        format!(
                            "Relative workdir {path:?} can have unexpected results if the base image changes"
                        ),
                    ));
                }
                state.workdir_set = true;
                state.workdir = normalize_workdir(&state.workdir, &path);
                let path = state.workdir.clone();
                let layer = path != "/";
                step(
                    StepKind::Workdir { path: path.clone() },
                    Some(format!("WORKDIR {path}")),
                    !layer,
                )
            }
            Command::User(user) => {
                state.user = self.expand(state, user, span)?;
                let user = state.user.clone();
                step(
                    StepKind::User { user: user.clone() },
                    Some(format!("USER {user}")),
                    true,
                )
            }
            Command::Volume(paths) => {
                let mut out = Vec::with_capacity(paths.len());
                for p in paths {
                    let v = self.expand(state, p, span)?;
                    if v.is_empty() {
                        return Err(PlanError::invalid(
                            span,
                            "VOLUME specified can not be an empty string",
                        ));
                    }
                    out.push(v);
                }
                let history = format!("VOLUME {}", plain_list(&out));
                step(StepKind::Volume { paths: out }, Some(history), true)
            }
            Command::StopSignal(sig) => {
                let sig = self.expand(state, sig, span)?;
                signal::validate(&sig).map_err(|e| PlanError::invalid(span, e))?;
                step(
                    StepKind::StopSignal { signal: sig.clone() },
                    Some(format!("STOPSIGNAL {sig}")),
                    true,
                )
            }
            Command::Expose(ports) => {
                let ports = self.expose(state, ports, span)?;
                let history = format!("EXPOSE {}", plain_list(&ports));
                step(StepKind::Expose { ports }, Some(history), true)
            }
            Command::Shell(shell) => {
                state.shell = shell.clone();
                step(
                    StepKind::Shell { shell: shell.clone() },
                    Some(format!("SHELL {}", plain_list(shell))),
                    true,
                )
            }
            Command::Cmd(line) => {
                self.used_once(&mut state.cmd_at, "CMD", span);
                let argv = self.config_command(state, line, "CMD", span);
                state.cmd_set = true;
                let history = format!("CMD {}", quote_list(&argv));
                step(StepKind::Cmd { argv }, Some(history), true)
            }
            Command::Entrypoint(line) => {
                self.used_once(&mut state.entrypoint_at, "ENTRYPOINT", span);
                let argv = self.config_command(state, line, "ENTRYPOINT", span);
                let history = format!("ENTRYPOINT {}", quote_list(&argv));
                step(
                    StepKind::Entrypoint {
                        argv,
                        clears_cmd: !state.cmd_set,
                    },
                    Some(history),
                    true,
                )
            }
            Command::Healthcheck(h) => {
                self.used_once(&mut state.healthcheck_at, "HEALTHCHECK", span);
                let h = healthcheck(h);
                let history = healthcheck_history(&h);
                step(StepKind::Healthcheck(h), Some(history), true)
            }
            Command::Onbuild(trigger) => step(
                StepKind::Onbuild {
                    trigger: trigger.clone(),
                },
                None,
                true,
            ),
            Command::Arg(decls) => {
                let args = self.arg(state, decls, span)?;
                let history = args
                    .iter()
                    .map(|a| match &a.value {
                        Some(v) => format!("{}={v}", a.name),
                        None => a.name.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                step(StepKind::Arg { args }, Some(format!("ARG {history}")), true)
            }
            Command::Run(run) => {
                let (run_step, history) = self.run_step(s, state, run, span)?;
                step(StepKind::Run(run_step), Some(history), false)
            }
            Command::Copy(copy) => {
                let from = match &copy.from {
                    Some(name) => Some(self.resolve_from(name, span)?),
                    None => None,
                };
                if let Some(CopyFrom::Stage { index }) = &from
                    && *index >= s
                {
                    return Err(PlanError::invalid(
                        span,
                        format!(
                            "cannot copy from stage {:?}, it needs to be defined before current stage {:?}",
                            copy.from.clone().unwrap_or_default(),
                            self.stage_label(s)
                        ),
                    ));
                }
                let check_ignored = from.is_none();
                let mut c =
                    self.transfer(state, &copy.transfer, "COPY", copy.parents, check_ignored, span)?;
                c.from = from;
                c.parents = copy.parents;
                let history = crate::transfer::transfer_history("COPY", copy.parents, &c);
                step(StepKind::Copy(c), Some(history), false)
            }
            Command::Add(add) => {
                let mut c = self.transfer(state, &add.transfer, "ADD", false, true, span)?;
                c.checksum = self.expand_opt(state, &add.checksum, span)?;
                c.keep_git_dir = add.keep_git_dir;
                c.unpack = add.unpack;
                sources::check_add(&mut c).map_err(|e| PlanError::invalid(span, e))?;
                let history = crate::transfer::transfer_history("ADD", false, &c);
                step(StepKind::Add(c), Some(history), false)
            }
            Command::From(_) => {
                return Err(PlanError::invalid(
                    span,
                    "FROM cannot appear inside a stage's commands",
                ));
            }
        })
    }

    fn key_values(
        &mut self,
        state: &StageState,
        pairs: &[KeyValue],
        keyword: &str,
        span: Span,
    ) -> Result<Vec<Var>, PlanError> {
        let mut out = Vec::with_capacity(pairs.len());
        for kv in pairs {
            if kv.legacy {
                self.lints.push(Lint::new(
                    Rule::LegacyKeyValueFormat,
                    span,
                    format!("\"{keyword} key=value\" should be used instead of legacy \"{keyword} key value\" format"),
                ));
            }
            let key = self.expand(state, &kv.key, span)?;
            let value = self.expand(state, &kv.value, span)?;
            out.push(Var::new(key, value));
        }
        Ok(out)
    }

    fn secret_lint(&mut self, instruction: &str, key: &str, span: Span) {
        if looks_secret(key) {
            self.lints.push(Lint::new(
                Rule::SecretsUsedInArgOrEnv,
                span,
                format!("Do not use ARG or ENV instructions for sensitive data ({instruction} {key:?})"),
            ));
        }
    }

    /// `MultipleInstructionsDisallowed` points at the earlier instruction,
    /// the one that has no effect.
    fn used_once(&mut self, previous: &mut Option<Span>, name: &str, span: Span) {
        if let Some(prev) = previous.replace(span) {
            self.lints.push(Lint::new(
                Rule::MultipleInstructionsDisallowed,
                prev,
                format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
            ));
        }
    }

    fn config_command(
        &mut self,
        state: &StageState,
        line: &CommandLine,
        name: &str,
        span: Span,
    ) -> Vec<String> {
        match line {
            CommandLine::Exec(argv) => argv.clone(),
            CommandLine::Shell(text) => {
                if state.shell.is_empty() {
                    self.lints.push(Lint::new(
                        Rule::JSONArgsRecommended,
                        span,
                        format!("JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"),
                    ));
                }
                with_shell(state, std::slice::from_ref(text))
            }
        }
    }

    fn expose(&mut self, state: &StageState, ports: &[String], span: Span) -> Result<Vec<String>, PlanError> {
        let mut out = Vec::new();
        for raw in ports {
            let words = self
                .lexer
                .process_words(raw, &state.env)
                .map_err(|source| PlanError {
                    span,
                    kind: PlanErrorKind::Expand {
                        word: raw.clone(),
                        source,
                    },
                })?;
            for word in words {
                let parsed = crate::ports::parse(&word).map_err(|e| PlanError::invalid(span, e))?;
                if parsed.proto_not_lowercase {
                    self.lints.push(Lint::new(
                        Rule::ExposeProtoCasing,
                        span,
                        format!("Defined protocol '{word}' in EXPOSE instruction should be lowercase"),
                    ));
                }
                if parsed.has_host_part {
                    self.lints.push(Lint::new(
                        Rule::ExposeInvalidFormat,
                        span,
                        format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{word}'"),
                    ));
                }
                out.extend(parsed.ports);
            }
        }
        Ok(out)
    }

    /// ARG: a `--build-arg` wins over the default; an undeclared-default ARG
    /// takes the global ARG's value; values enter the environment.
    fn arg(
        &mut self,
        state: &mut StageState,
        decls: &[ArgDecl],
        span: Span,
    ) -> Result<Vec<ArgValue>, PlanError> {
        let mut out = Vec::with_capacity(decls.len());
        for decl in decls {
            self.secret_lint("ARG", &decl.name, span);
            self.used_args.insert(decl.name.clone());
            let value = match (self.opts.build_args.get(&decl.name), &decl.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(d)) => Some(self.expand(state, d, span)?),
                (None, None) => self
                    .global
                    .iter()
                    .find(|(k, _)| *k == decl.name)
                    .map(|(_, v)| v.clone()),
            };
            if let Some(v) = &value {
                set_var(&mut state.env, &decl.name, v);
            }
            state.args.push((decl.name.clone(), value.clone()));
            out.push(ArgValue {
                name: decl.name.clone(),
                value,
            });
        }
        Ok(out)
    }
}

/// BuildKit's secret-name heuristic for `SecretsUsedInArgOrEnv`.
fn looks_secret(key: &str) -> bool {
    const DENY: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: [&str; 3] = ["public", "file", "version"];
    let words: Vec<String> = key.split('_').map(str::to_lowercase).collect();
    let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
    has(&DENY) && !has(&ALLOW)
}

fn history_pairs(keyword: &str, vars: &[Var]) -> String {
    let mut out = keyword.to_string();
    for v in vars {
        out.push_str(&format!(" {}={}", v.name, v.value));
    }
    out
}

fn healthcheck(h: &Healthcheck) -> HealthcheckStep {
    let ns =
        |d: &Option<std::time::Duration>| d.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    match h {
        Healthcheck::None => HealthcheckStep {
            test: vec!["NONE".to_string()],
            interval_ns: 0,
            timeout_ns: 0,
            start_period_ns: 0,
            start_interval_ns: 0,
            retries: 0,
        },
        Healthcheck::Cmd {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => HealthcheckStep {
            test: match test {
                CommandLine::Exec(argv) => std::iter::once("CMD".to_string())
                    .chain(argv.iter().cloned())
                    .collect(),
                CommandLine::Shell(text) => vec!["CMD-SHELL".to_string(), text.clone()],
            },
            interval_ns: ns(interval),
            timeout_ns: ns(timeout),
            start_period_ns: ns(start_period),
            start_interval_ns: ns(start_interval),
            retries: retries.unwrap_or(0),
        },
    }
}

/// Go's `%+v` of BuildKit's `HealthcheckConfig`.
fn healthcheck_history(h: &HealthcheckStep) -> String {
    let d = |ns: u64| format_duration(std::time::Duration::from_nanos(ns));
    format!(
        "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        plain_list(&h.test),
        d(h.interval_ns),
        d(h.timeout_ns),
        d(h.start_period_ns),
        d(h.start_interval_ns),
        h.retries
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for k in [
            "API_KEY",
            "DB_PASSWORD",
            "GITHUB_TOKEN",
            "secret_message",
            "AUTH",
            "MY_KEY_NAME",
        ] {
            assert!(looks_secret(k), "{k}");
        }
        for k in [
            "PUBLIC_KEY",
            "KEY_FILE",
            "TOKEN_VERSION",
            "MONKEY",
            "PATH",
            "KEYS",
        ] {
            assert!(!looks_secret(k), "{k}");
        }
    }
}
