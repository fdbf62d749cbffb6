//! Applies one instruction to a stage: expands its words with the stage's
//! environment, updates the stage state, and produces the plan [`Step`]
//! with its docker-style history entry.

use std::collections::HashMap;

use crate::ast::{
    ArgDecl, Command, CommandLine, Healthcheck, InlineSource, Instruction, KeyValue, Span, Transfer,
};
use crate::expand::Lexer;
use crate::go_compat::{format_duration, plain_list, quote_list};
use crate::lint::{Lint, Rule};
use crate::plan::{
    ArgValue, Chmod, CopyFrom, CopyStep, HealthcheckStep, InlineFile, Mode, Mount, PlanError, PlanErrorKind,
    RunStep, Source, Stage, Step, StepKind, Var,
};
use crate::run_flags::{self, MountType};
use crate::stages::{PLATFORM_ARGS, Planner, StageState, is_proxy_arg, set_var};
use crate::{heredoc, signal, sources, suggest};

/// Resolves `path` against `current` and cleans it (BuildKit's
/// `NormalizeWorkdir` on Linux).
pub(crate) fn normalize_workdir(current: &str, path: &str) -> String {
    if path.starts_with('/') {
        clean_path(path)
    } else {
        let base = if current.is_empty() { "/" } else { current };
        clean_path(&format!("{base}/{path}"))
    }
}

/// Go's `path.Clean` for absolute paths.
pub(crate) fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A COPY destination resolved against WORKDIR; a trailing slash (meaning
/// "into this directory") is kept.
fn dest_path(workdir: &str, dest: &str) -> String {
    let dest = if dest == "." || dest.is_empty() {
        "./"
    } else {
        dest
    };
    let joined = normalize_workdir(workdir, dest);
    let dir_like = dest.ends_with('/') || dest.ends_with("/.");
    if dir_like && joined != "/" {
        format!("{joined}/")
    } else {
        joined
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

fn with_shell(state: &StageState, args: &[String]) -> Vec<String> {
    let mut argv = default_shell(state);
    argv.push(args.join(" "));
    argv
}

fn vars(list: &[(String, String)]) -> Vec<Var> {
    list.iter().map(|(k, v)| Var::new(k, v)).collect()
}

impl Planner<'_> {
    /// Expands `word` with the stage environment, reporting undefined variables.
    fn expand(&mut self, state: &StageState, word: &str, span: Span) -> Result<String, PlanError> {
        self.expand_with(self.lexer, state, word, span)
    }

    fn expand_with(
        &mut self,
        lexer: Lexer,
        state: &StageState,
        word: &str,
        span: Span,
    ) -> Result<String, PlanError> {
        let e = lexer.process_word(word, &state.env).map_err(|source| PlanError {
            span,
            kind: PlanErrorKind::Expand {
                word: word.to_string(),
                source,
            },
        })?;
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

    fn expand_opt(
        &mut self,
        state: &StageState,
        word: &Option<String>,
        span: Span,
    ) -> Result<Option<String>, PlanError> {
        word.as_ref().map(|w| self.expand(state, w, span)).transpose()
    }

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
                let history = transfer_history("COPY", copy.parents, &c);
                step(StepKind::Copy(c), Some(history), false)
            }
            Command::Add(add) => {
                let mut c = self.transfer(state, &add.transfer, "ADD", false, true, span)?;
                c.checksum = self.expand_opt(state, &add.checksum, span)?;
                c.keep_git_dir = add.keep_git_dir;
                c.unpack = add.unpack;
                sources::check_add(&mut c).map_err(|e| PlanError::invalid(span, e))?;
                let history = transfer_history("ADD", false, &c);
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

    /// The ARGs in scope as history and the cache see them: the current value
    /// (an ENV of the same name wins), once per name, in declaration order.
    fn args_in_scope(state: &StageState) -> Vec<Var> {
        // Indexes keep this linear: a stage may declare hundreds of ARGs and
        // run hundreds of commands.
        let env: HashMap<&str, &str> = state.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut position: HashMap<&str, usize> = HashMap::new();
        let mut out: Vec<Var> = Vec::new();
        for (name, value) in &state.args {
            let v = env
                .get(name.as_str())
                .map(|v| v.to_string())
                .or_else(|| value.clone())
                .unwrap_or_default();
            match position.get(name.as_str()) {
                Some(&i) => out[i].value = v,
                None => {
                    position.insert(name, out.len());
                    out.push(Var::new(name, v));
                }
            }
        }
        out
    }

    fn run_step(
        &mut self,
        s: usize,
        state: &StageState,
        run: &crate::ast::Run,
        span: Span,
    ) -> Result<(RunStep, String), PlanError> {
        let mut inline_files = Vec::new();
        let args: Vec<String> = match (&run.command, run.heredocs.first()) {
            (CommandLine::Exec(argv), _) => argv.clone(),
            (CommandLine::Shell(text), None) => vec![text.clone()],
            (CommandLine::Shell(text), Some(first)) => {
                if heredoc::parse_marker(text).ok().flatten().is_some() {
                    let data = first.body();
                    if data.starts_with("#!") {
                        let path = format!("/dev/pipes/{}", first.name.trim_start_matches('/'));
                        inline_files.push(InlineFile {
                            path: path.clone(),
                            content: data,
                            mode: 0o755,
                        });
                        vec![path]
                    } else {
                        vec![data]
                    }
                } else {
                    let mut full = text.clone();
                    for doc in &run.heredocs {
                        full.push('\n');
                        full.push_str(&doc.content);
                        full.push_str(&doc.name);
                    }
                    vec![full]
                }
            }
        };
        let argv = match &run.command {
            CommandLine::Exec(_) => args,
            CommandLine::Shell(_) => with_shell(state, &args),
        };
        let mut mounts = Vec::with_capacity(run.mounts.len());
        for m in &run.mounts {
            mounts.push(self.mount(s, state, m, span)?);
        }
        let args_in_scope = Self::args_in_scope(state);
        let mut history = String::from("RUN ");
        if !args_in_scope.is_empty() {
            history.push_str(&format!("|{} ", args_in_scope.len()));
            for a in &args_in_scope {
                history.push_str(&format!("{}={} ", a.name, a.value));
            }
        }
        history.push_str(&argv.join(" "));
        history.push_str(" # buildkit");
        let proxy_env = self
            .opts
            .build_args
            .iter()
            .filter(|(k, _)| is_proxy_arg(k))
            .map(|(k, v)| Var::new(k, v))
            .collect();
        let devices = run
            .devices
            .iter()
            .filter_map(|d| run_flags::parse_device(d).ok())
            .collect();
        Ok((
            RunStep {
                command: run.command.clone(),
                argv,
                heredocs: run.heredocs.clone(),
                inline_files,
                mounts,
                network: run.network.clone().unwrap_or_else(|| "default".to_string()),
                security: run.security.clone().unwrap_or_else(|| "sandbox".to_string()),
                devices,
                env: vars(&state.env),
                args: args_in_scope,
                proxy_env,
                user: state.user.clone(),
                workdir: if state.workdir.is_empty() {
                    "/".to_string()
                } else {
                    state.workdir.clone()
                },
            },
            history,
        ))
    }

    fn mount(&mut self, s: usize, state: &StageState, value: &str, span: Span) -> Result<Mount, PlanError> {
        let mut failure: Option<PlanError> = None;
        let raw = {
            let mut expand = |w: &str| -> Result<String, String> {
                match self.expand(state, w, span) {
                    Ok(v) => Ok(v),
                    Err(e) => {
                        let msg = e.kind.to_string();
                        failure = Some(e);
                        Err(msg)
                    }
                }
            };
            run_flags::parse_mount(value, &mut expand)
        };
        let raw = match (raw, failure) {
            (_, Some(e)) => return Err(e),
            (Err(msg), None) => return Err(PlanError::invalid(span, format!("--mount={value}: {msg}"))),
            (Ok(r), None) => r,
        };
        let from = match raw.from.as_deref().filter(|f| !f.is_empty()) {
            Some(name) => {
                let f = self.resolve_from(name, span)?;
                if let CopyFrom::Stage { index } = f
                    && index >= s
                {
                    return Err(PlanError::invalid(
                        span,
                        format!(
                            "cannot mount from stage {name:?} to {:?}, stage needs to be defined before current command",
                            raw.target.clone().unwrap_or_default()
                        ),
                    ));
                }
                Some(f)
            }
            None => None,
        };
        let workdir = if state.workdir.is_empty() {
            "/"
        } else {
            &state.workdir
        };
        let mut mount = Mount {
            kind: raw.kind,
            target: raw.target.clone(),
            source: raw.source.clone(),
            from,
            read_only: raw.read_only,
            id: raw.id.clone(),
            sharing: raw.sharing,
            size: raw.size,
            required: raw.required,
            env: raw.env.clone(),
            mode: raw.mode,
            uid: raw.uid,
            gid: raw.gid,
        };
        match raw.kind {
            MountType::Secret => {
                let id = raw.source.clone().or(raw.id.clone()).filter(|i| !i.is_empty());
                let id = match id {
                    Some(id) => id,
                    None => match &raw.target {
                        Some(t) => base_name(t),
                        None => {
                            return Err(PlanError::invalid(
                                span,
                                "secret mount: one of source, target required",
                            ));
                        }
                    },
                };
                if raw.env.is_none() && raw.target.is_none() {
                    mount.target = Some(format!("/run/secrets/{}", base_name(&id)));
                }
                mount.id = Some(id);
                mount.source = None;
                if mount.mode.is_none() && (mount.uid.is_some() || mount.gid.is_some()) {
                    mount.mode = Some(0o400);
                }
            }
            MountType::Ssh => {
                if raw.source.is_some() {
                    return Err(PlanError::invalid(span, "ssh mount does not support source"));
                }
                mount.id = Some(raw.id.clone().unwrap_or_else(|| "default".to_string()));
                if mount.mode.is_none() && (mount.uid.is_some() || mount.gid.is_some()) {
                    mount.mode = Some(0o600);
                }
            }
            MountType::Bind | MountType::Cache | MountType::Tmpfs => {
                let target = raw.target.clone().unwrap_or_default();
                let resolved = normalize_workdir(workdir, &target);
                if resolved == "/" {
                    return Err(PlanError::invalid(
                        span,
                        format!(
                            "invalid mount target {resolved:?}: give --mount a target=/path other than /"
                        ),
                    ));
                }
                if raw.kind == MountType::Cache && mount.id.as_deref().unwrap_or_default().is_empty() {
                    mount.id = Some(clean_relative(&target));
                }
                if raw.kind == MountType::Cache && mount.sharing.is_none() {
                    mount.sharing = Some(run_flags::Sharing::Shared);
                }
                mount.target = Some(resolved);
            }
        }
        Ok(mount)
    }

    fn transfer(
        &mut self,
        state: &StageState,
        t: &Transfer,
        keyword: &str,
        parents: bool,
        context_source: bool,
        span: Span,
    ) -> Result<CopyStep, PlanError> {
        let chown = self.expand_opt(state, &t.chown, span)?;
        let chmod_text = self.expand_opt(state, &t.chmod, span)?;
        let chmod = chmod_text
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(parse_chmod)
            .transpose()
            .map_err(|e| PlanError::invalid(span, e))?;
        let mut paths = Vec::with_capacity(t.sources.len());
        for src in &t.sources {
            paths.push(self.expand(state, src, span)?);
        }
        let dest = self.expand(state, &t.dest, span)?;
        let body_lexer = Lexer::new('\\').skip_process_quotes(true);
        let mut inline = Vec::with_capacity(t.inline.len());
        for doc in &t.inline {
            let content = if doc.expand {
                self.expand_with(body_lexer, state, &doc.content, span)?
            } else {
                doc.content.clone()
            };
            inline.push(InlineSource {
                name: doc.name.clone(),
                content,
                expand: doc.expand,
            });
        }
        let mut sources = Vec::with_capacity(paths.len());
        for p in paths {
            let source = sources::classify(&p).map_err(|e| PlanError::invalid(span, e))?;
            match (&source, keyword) {
                (Source::Git { .. }, "COPY") => {
                    return Err(PlanError::invalid(
                        span,
                        format!("source can't be a git ref for COPY: {p} (use ADD)"),
                    ));
                }
                (Source::Url { .. }, "COPY") => {
                    return Err(PlanError::invalid(
                        span,
                        format!("source can't be a URL for COPY: {p} (use ADD)"),
                    ));
                }
                _ => {}
            }
            if let (Source::Path { path }, true) = (&source, context_source) {
                self.ignored_lint(keyword, path, span);
            }
            sources.push(source);
        }
        Ok(CopyStep {
            sources,
            inline,
            dest_path: dest_path(&state.workdir, &dest),
            dest,
            from: None,
            chown,
            chmod,
            link: t.link,
            parents,
            exclude: t.exclude.clone(),
            checksum: None,
            keep_git_dir: None,
            unpack: None,
            user: state.user.clone(),
        })
    }

    fn ignored_lint(&mut self, keyword: &str, src: &str, span: Span) {
        let Some(matcher) = &self.opts.dockerignore else {
            return;
        };
        if matcher.has_exclusions() {
            return;
        }
        let cleaned = crate::dockerignore::clean(src);
        if (cleaned == "." || cleaned == "/") && !matcher.ignores_root() {
            return;
        }
        if matcher.matches_or_parent_matches(&cleaned) {
            let verb = if keyword == "ADD" { "Add" } else { "Copy" };
            self.lints.push(Lint::new(
                Rule::CopyIgnoredFile,
                span,
                format!("Attempting to {verb} file {cleaned:?} that is excluded by .dockerignore"),
            ));
        }
    }
}

fn base_name(p: &str) -> String {
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_string();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// Go's `path.Clean` keeping relative paths relative (cache ids).
fn clean_relative(p: &str) -> String {
    if p.starts_with('/') {
        return clean_path(p);
    }
    let cleaned = clean_path(&format!("/{p}"));
    let rel = cleaned.trim_start_matches('/');
    if rel.is_empty() {
        ".".to_string()
    } else {
        rel.to_string()
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

fn parse_chmod(text: &str) -> Result<Chmod, String> {
    let non_octal =
        || format!("invalid chmod parameter: '{text}'. it should be octal string and between 0 and 07777");
    let chmod = |mode| Chmod {
        text: text.to_string(),
        mode,
    };
    if text.starts_with(|c: char| c.is_ascii_digit()) {
        return match u32::from_str_radix(text, 8) {
            Ok(m) if m <= 0o7777 => Ok(chmod(Mode::Octal(m))),
            _ => Err(non_octal()),
        };
    }
    if is_symbolic_mode(text) {
        Ok(chmod(Mode::Symbolic(text.to_string())))
    } else {
        Err(format!(
            "invalid chmod parameter: '{text}': use an octal mode (0755) or a symbolic one (u+x,go-w)"
        ))
    }
}

/// `[ugoa]*([-+=]([rwxXst]*|[ugo]))+` clauses separated by commas.
fn is_symbolic_mode(text: &str) -> bool {
    text.split(',').all(|clause| {
        let ops = clause.trim_start_matches(['u', 'g', 'o', 'a']);
        if ops.is_empty() {
            return false;
        }
        let mut rest = ops;
        while let Some(c) = rest.chars().next() {
            if !matches!(c, '+' | '-' | '=') {
                return false;
            }
            rest = &rest[1..];
            let perm_len = rest.find(['+', '-', '=']).unwrap_or(rest.len());
            let perms = &rest[..perm_len];
            let ok =
                perms.chars().all(|p| "rwxXst".contains(p)) || (perms.len() == 1 && "ugo".contains(perms));
            if !ok {
                return false;
            }
            rest = &rest[perm_len..];
        }
        true
    })
}

fn history_pairs(keyword: &str, vars: &[Var]) -> String {
    let mut out = keyword.to_string();
    for v in vars {
        out.push_str(&format!(" {}={}", v.name, v.value));
    }
    out
}

fn transfer_history(keyword: &str, parents: bool, c: &CopyStep) -> String {
    let mut out = keyword.to_string();
    if parents {
        out.push_str(" --parents");
    }
    if let Some(chown) = c.chown.as_deref().filter(|v| !v.is_empty()) {
        out.push_str(&format!(" --chown={chown}"));
    }
    if let Some(chmod) = &c.chmod {
        out.push_str(&format!(" --chmod={}", chmod.text));
    }
    for s in &c.sources {
        let text = match s {
            Source::Path { path } => path,
            Source::Url { url } | Source::Git { url, .. } => url,
        };
        out.push(' ');
        out.push_str(text);
    }
    for doc in &c.inline {
        out.push_str(&format!(" <<{}", doc.name));
    }
    out.push(' ');
    out.push_str(&c.dest);
    out.push_str(" # buildkit");
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
    fn workdir_normalisation() {
        assert_eq!(normalize_workdir("", "app"), "/app");
        assert_eq!(normalize_workdir("/a", "b/../c/"), "/a/c");
        assert_eq!(normalize_workdir("/a", "/x/./y"), "/x/y");
        assert_eq!(normalize_workdir("/a", ".."), "/");
    }

    #[test]
    fn destinations_keep_directory_slash() {
        assert_eq!(dest_path("/app", "."), "/app/");
        assert_eq!(dest_path("", "."), "/");
        assert_eq!(dest_path("/app", "bin/"), "/app/bin/");
        assert_eq!(dest_path("/app", "/etc/x"), "/etc/x");
    }

    #[test]
    fn chmod_forms() {
        let mode = |t: &str| parse_chmod(t).map(|c| c.mode);
        assert_eq!(mode("0755"), Ok(Mode::Octal(0o755)));
        assert_eq!(mode("644"), Ok(Mode::Octal(0o644)));
        assert!(parse_chmod("08").is_err());
        assert!(parse_chmod("17777").is_err());
        assert_eq!(mode("u+x,go-w"), Ok(Mode::Symbolic("u+x,go-w".into())));
        assert_eq!(mode("a=rX"), Ok(Mode::Symbolic("a=rX".into())));
        assert_eq!(mode("+x"), Ok(Mode::Symbolic("+x".into())));
        assert!(parse_chmod("u+q").is_err());
        assert!(parse_chmod("rwx").is_err());
    }

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
