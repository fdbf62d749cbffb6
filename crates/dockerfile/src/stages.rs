//! Planning, from the top: [`plan`] splits the Dockerfile into global ARGs
//! and stages, expands each FROM, builds the dependency graph, runs ONBUILD
//! triggers, prunes to `--target`, and hands each stage's instructions to
//! [`crate::dispatch`] one at a time. The state they share lives in
//! [`crate::planner`]; nothing below this module calls back into it.
//!
//! Why one long file: planning is one algorithm over the stage graph (global ARGs, FROM
//! expansion, dependencies, ONBUILD, pruning to the target); its steps share that graph.

use std::collections::BTreeSet;

use crate::ast::{Command, Dockerfile, Instruction, Span};
use crate::expand::{Expansion, Lexer};
use crate::lint::{Lint, Rule};
use crate::parser;
use crate::plan::{Base, CopyFrom, ImageResolver, Plan, PlanError, PlanErrorKind, PlanOptions};
use crate::planner::{
    DEFAULT_PATH, PLATFORM_ARGS, Planner, StageCommand, StageInfo, StageState, expansion_error, is_proxy_arg,
    set_var,
};
use crate::platform::Platform;
use crate::{instructions, reference, suggest};

/// Build arguments BuildKit understands without an ARG declaration; they
/// never count as "unused".
const BUILTIN_ARGS: [&str; 9] = [
    "BUILDKIT_CACHE_MOUNT_NS",
    "BUILDKIT_CONTEXT_KEEP_GIT_DIR",
    "BUILDKIT_INLINE_CACHE",
    "BUILDKIT_MULTI_PLATFORM",
    "BUILDKIT_SANDBOX_HOSTNAME",
    "BUILDKIT_SYNTAX",
    "BUILDKIT_BUILD_NAME",
    "SOURCE_DATE_EPOCH",
    "BUILDKIT_DOCKERFILE_CHECK",
];

impl<'a> Planner<'a> {
    /// Plans `df`, returning the findings made even when planning fails
    /// (BuildKit reports its checks up to the error, and so does `check`).
    pub(crate) fn plan(
        df: &'a Dockerfile,
        opts: &'a PlanOptions,
        resolver: &'a dyn ImageResolver,
    ) -> (Result<Plan, PlanError>, Vec<Lint>) {
        let layout = match Layout::of(df) {
            Ok(l) => l,
            Err(e) => return (Err(e), Vec::new()),
        };
        let first = layout.stages.first().map(|s| s.0.span).unwrap_or_default();
        let platforms = parse_platform(&opts.target_platform, first)
            .and_then(|t| Ok((t, parse_platform(&opts.build_platform, first)?)));
        let (target_platform, build_platform) = match platforms {
            Ok(p) => p,
            Err(e) => return (Err(e), Vec::new()),
        };
        let mut p = Planner {
            opts,
            resolver,
            lexer: Lexer::new(df.escape),
            global: Vec::new(),
            meta_names: BTreeSet::new(),
            used_args: BTreeSet::new(),
            lints: Vec::new(),
            target_platform,
            stages: Vec::new(),
            states: Vec::new(),
            planned: Vec::new(),
            target: 0,
        };
        let target_name = opts
            .target
            .clone()
            .or_else(|| layout.stages.last().and_then(|s| s.1.name.clone()))
            .unwrap_or_else(|| "default".to_string());
        p.global = p.default_args(&build_platform, &target_name);
        p.lints.extend(syntax_lint(df));
        p.check_default_from_args(&layout);
        let result = p
            .add_meta_args(&layout, true)
            .and_then(|()| p.resolve_stages(&layout))
            .and_then(|()| p.resolve_target())
            .and_then(|()| p.run());
        let mut lints = std::mem::take(&mut p.lints);
        lints.sort_by_key(|l| l.span.start_line);
        (result, lints)
    }

    fn default_args(&self, build: &Platform, target: &str) -> Vec<(String, String)> {
        let t = &self.target_platform;
        let values = [
            build.to_string(),
            build.os.clone(),
            String::new(),
            build.architecture.clone(),
            build.variant.clone(),
            t.to_string(),
            t.os.clone(),
            String::new(),
            t.architecture.clone(),
            t.variant.clone(),
            target.to_string(),
        ];
        PLATFORM_ARGS
            .into_iter()
            .zip(values)
            .map(|(k, v)| {
                let v = self.opts.build_args.get(k).cloned().unwrap_or(v);
                (k.to_string(), v)
            })
            .collect()
    }

    /// Global ARGs (before the first FROM), optionally overridden by
    /// `--build-arg`. Their defaults are expanded with the earlier ones.
    fn add_meta_args(&mut self, layout: &Layout<'_>, use_build_args: bool) -> Result<(), PlanError> {
        for ins in &layout.meta_args {
            let Command::Arg(decls) = &ins.command else {
                continue;
            };
            for decl in decls {
                self.meta_names.insert(decl.name.clone());
                let value = match (use_build_args, self.opts.build_args.get(&decl.name)) {
                    (true, Some(v)) => Some(v.clone()),
                    _ => match &decl.default {
                        Some(d) => Some(
                            self.lexer
                                .process_word(d, &self.global)
                                .map_err(|e| expansion_error(ins.span, d, e))?
                                .value,
                        ),
                        None => None,
                    },
                };
                if let Some(v) = value {
                    set_var(&mut self.global, &decl.name, &v);
                }
            }
        }
        Ok(())
    }

    /// `InvalidDefaultArgInFrom`: with no `--build-arg`, would each FROM
    /// still name a valid image?
    fn check_default_from_args(&mut self, layout: &Layout<'_>) {
        let saved = self.global.clone();
        if self.add_meta_args(layout, false).is_ok() {
            for (ins, from, _) in &layout.stages {
                let Ok(e) = self.lexer.process_word(&from.image, &self.global) else {
                    break;
                };
                if reference::validate(&e.value).is_err() {
                    self.lints.push(Lint::new(
                        Rule::InvalidDefaultArgInFrom,
                        ins.span,
                        format!(
                            "Default value for ARG {} results in empty or invalid base image name",
                            from.image
                        ),
                    ));
                }
            }
        }
        self.global = saved;
        self.meta_names.clear();
    }

    /// Reports FROM variables that no global ARG declares.
    fn report_from_args(&mut self, e: &Expansion, span: Span) {
        let known: Vec<String> = self
            .global
            .iter()
            .map(|(k, _)| k.clone())
            .chain(self.meta_names.iter().cloned())
            .collect();
        for name in &e.unmatched {
            if known.contains(name) {
                continue;
            }
            let hint = suggest::parenthesised(name, known.iter().map(String::as_str), "");
            self.lints.push(Lint::new(
                Rule::UndefinedArgInFrom,
                span,
                format!("FROM argument '{name}' is not declared{hint}"),
            ));
        }
    }

    fn resolve_stages(&mut self, layout: &Layout<'_>) -> Result<(), PlanError> {
        for (ins, from, body) in &layout.stages {
            let span = ins.span;
            let e = self
                .lexer
                .process_word(&from.image, &self.global)
                .map_err(|e| expansion_error(span, &from.image, e))?;
            self.report_from_args(&e, span);
            self.used_args.extend(e.matched.iter().cloned());
            if e.value.is_empty() {
                return Err(PlanError::invalid(
                    span,
                    format!(
                        "base name ({}) should not be blank: give the ARG a default or pass --build-arg",
                        from.image
                    ),
                ));
            }
            let platform = match &from.platform {
                Some(spec) => {
                    let p = self
                        .lexer
                        .process_word(spec, &self.global)
                        .map_err(|e| expansion_error(span, spec, e))?;
                    self.report_from_args(&p, span);
                    self.platform_lints(spec, &p, from.name.as_deref(), span);
                    self.used_args.extend(p.matched.iter().cloned());
                    if p.value.is_empty() {
                        return Err(PlanError::invalid(
                            span,
                            format!("empty platform value from expression {spec}"),
                        ));
                    }
                    parse_platform(&p.value, span)?
                }
                None => self.target_platform.clone(),
            };
            let base = if let Some(idx) = self
                .stages
                .iter()
                .rposition(|s| s.name.as_deref() == Some(&e.value))
            {
                Base::Stage { index: idx }
            } else if e.value == "scratch" {
                Base::Scratch
            } else if self.opts.named_contexts.contains(&e.value) {
                Base::Context { name: e.value }
            } else {
                reference::validate(&e.value).map_err(|m| {
                    PlanError::invalid(span, format!("invalid base image {:?}: {m}", e.value))
                })?;
                Base::Image {
                    reference: e.value,
                    platform: platform.to_string(),
                }
            };
            let commands = body
                .iter()
                .map(|ins| StageCommand {
                    ins: (*ins).clone(),
                    onbuild: false,
                })
                .collect();
            self.stages.push(StageInfo {
                name: from.name.clone(),
                base,
                platform,
                span,
                commands,
                deps: Vec::new(),
                triggers_done: false,
            });
        }
        for i in 0..self.stages.len() {
            let commands = self.stages[i].commands.clone();
            for cmd in &commands {
                self.add_deps(i, &cmd.ins)?;
            }
        }
        self.check_cycles()
    }

    fn platform_lints(&mut self, spec: &str, e: &Expansion, stage: Option<&str>, span: Span) {
        let target = self.target_platform.to_string();
        if e.matched.len() == 1
            && e.unmatched.is_empty()
            && e.matched.contains("TARGETPLATFORM")
            && e.value == target
        {
            self.lints.push(Lint::new(
                Rule::RedundantTargetPlatform,
                span,
                format!(
                    "Setting platform to predefined {spec} in FROM is redundant as this is the default behavior"
                ),
            ));
        }
        if e.matched.is_empty()
            && e.unmatched.is_empty()
            && let Ok(p) = Platform::parse(&e.value)
        {
            let name = stage.unwrap_or_default();
            if !name.contains(&p.os) && !name.contains(&p.architecture) {
                self.lints.push(Lint::new(
                    Rule::FromPlatformFlagConstDisallowed,
                    span,
                    format!("FROM --platform flag should not use constant value {:?}", e.value),
                ));
            }
        }
    }

    /// The stages an instruction reads from (`COPY --from`, `RUN --mount from=`).
    fn add_deps(&mut self, stage: usize, ins: &Instruction) -> Result<(), PlanError> {
        for name in referenced_names(ins, &self.lexer)? {
            if let CopyFrom::Stage { index } = self.resolve_from(&name, ins.span)? {
                self.stages[stage].deps.push((index, ins.span));
            }
        }
        Ok(())
    }

    fn check_cycles(&self) -> Result<(), PlanError> {
        // 0 = unvisited, 1 = on the current path, 2 = done.
        let mut mark = vec![0u8; self.stages.len()];
        fn visit(p: &Planner<'_>, s: usize, mark: &mut [u8]) -> Option<Span> {
            mark[s] = 1;
            for &(d, span) in &p.stages[s].deps {
                match mark.get(d) {
                    Some(1) => return Some(span),
                    Some(0) => {
                        if let Some(span) = visit(p, d, mark) {
                            return Some(span);
                        }
                    }
                    _ => {}
                }
            }
            mark[s] = 2;
            None
        }
        for s in 0..self.stages.len() {
            if mark[s] == 0
                && let Some(span) = visit(self, s, &mut mark)
            {
                let name = self.stages[s]
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("stage-{s}"));
                return Err(PlanError::invalid(
                    span,
                    format!("circular dependency detected on stage: {name}"),
                ));
            }
        }
        Ok(())
    }

    fn resolve_target(&mut self) -> Result<(), PlanError> {
        self.target = match &self.opts.target {
            None => self.stages.len() - 1,
            Some(t) => {
                let lower = t.to_lowercase();
                self.stages
                    .iter()
                    .rposition(|s| s.name.as_deref() == Some(&lower))
                    .ok_or_else(|| PlanError {
                        span: Span::default(),
                        kind: PlanErrorKind::UnknownTarget {
                            name: t.clone(),
                            suggestion: suggest::closest(
                                t,
                                self.stages.iter().filter_map(|s| s.name.as_deref()),
                            ),
                        },
                    })?
            }
        };
        Ok(())
    }

    fn reachable(&self) -> BTreeSet<usize> {
        if self.opts.all_stages {
            return (0..self.stages.len()).collect();
        }
        let mut seen = BTreeSet::new();
        let mut todo = vec![self.target];
        while let Some(s) = todo.pop() {
            if !seen.insert(s) {
                continue;
            }
            if let Base::Stage { index } = self.stages[s].base {
                todo.push(index);
            }
            todo.extend(self.stages[s].deps.iter().map(|d| d.0));
        }
        seen
    }

    /// Prepends each reachable stage's ONBUILD triggers (from its base image
    /// or base stage); they may reference more stages, so repeat until stable.
    fn init_triggers(&mut self) -> Result<BTreeSet<usize>, PlanError> {
        loop {
            let reachable = self.reachable();
            let mut new_deps = false;
            for &s in &reachable {
                if self.stages[s].triggers_done {
                    continue;
                }
                self.stages[s].triggers_done = true;
                let triggers = self.triggers_for(s);
                let span = self.stages[s].span;
                let mut commands = Vec::with_capacity(triggers.len());
                for trigger in triggers {
                    let mut ins = parse_trigger(&trigger).map_err(|message| PlanError {
                        span,
                        kind: PlanErrorKind::Trigger {
                            trigger: trigger.clone(),
                            message,
                        },
                    })?;
                    ins.span = span;
                    let before = self.stages[s].deps.len();
                    self.add_deps(s, &ins)?;
                    new_deps |= self.stages[s].deps.len() > before;
                    commands.push(StageCommand { ins, onbuild: true });
                }
                commands.append(&mut self.stages[s].commands);
                self.stages[s].commands = commands;
            }
            if !new_deps {
                return Ok(reachable);
            }
            self.check_cycles()?;
        }
    }

    fn triggers_for(&self, s: usize) -> Vec<String> {
        match &self.stages[s].base {
            Base::Image { reference, platform } => self
                .resolver
                .image_config(reference, platform)
                .map(|i| i.onbuild)
                .unwrap_or_default(),
            Base::Stage { index } => self.stages[*index]
                .commands
                .iter()
                .filter(|c| !c.onbuild)
                .filter_map(|c| match &c.ins.command {
                    Command::Onbuild(expr) => Some(expr.clone()),
                    _ => None,
                })
                .collect(),
            Base::Scratch | Base::Context { .. } => Vec::new(),
        }
    }

    fn run(&mut self) -> Result<Plan, PlanError> {
        let reachable = self.init_triggers()?;
        self.states = vec![None; self.stages.len()];
        for &s in &reachable {
            let state = self.initial_state(s);
            let state = self.dispatch_stage(s, state)?;
            self.states[s] = Some(state);
        }
        let target = self
            .planned
            .iter()
            .position(|st| st.index == self.target)
            .unwrap_or_default();
        let mut unused: Vec<String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| {
                !self.used_args.contains(*k)
                    && !self.meta_names.contains(*k)
                    && !PLATFORM_ARGS.contains(&k.as_str())
                    && !BUILTIN_ARGS.contains(&k.as_str())
                    && !is_proxy_arg(k)
            })
            .cloned()
            .collect();
        unused.sort();
        Ok(Plan {
            stages: std::mem::take(&mut self.planned),
            target,
            unused_build_args: unused,
            lints: Vec::new(),
        })
    }

    fn initial_state(&self, s: usize) -> StageState {
        let info = &self.stages[s];
        let mut state = match &info.base {
            Base::Stage { index } => {
                let mut st = self.states[*index].clone().unwrap_or_default();
                st.cmd_set = false;
                st.cmd_at = None;
                st.entrypoint_at = None;
                st.healthcheck_at = None;
                st
            }
            Base::Image { reference, platform } => match self.resolver.image_config(reference, platform) {
                Some(img) => StageState {
                    config_env: img.env.clone(),
                    workdir: img.working_dir.clone(),
                    user: img.user.clone(),
                    shell: img.shell.clone(),
                    env_known: true,
                    ..StageState::default()
                },
                None => StageState::default(),
            },
            Base::Scratch => StageState {
                env_known: true,
                ..StageState::default()
            },
            Base::Context { .. } => StageState::default(),
        };
        state.windows = info.platform.os == "windows";
        if !matches!(info.base, Base::Stage { .. }) {
            if !state.windows && !state.config_env.iter().any(|(k, _)| k == "PATH") {
                state
                    .config_env
                    .push(("PATH".to_string(), DEFAULT_PATH.to_string()));
            }
            state.env = state.config_env.clone();
            if !state.workdir.is_empty() {
                state.workdir = crate::paths::normalize_workdir("/", &state.workdir);
            }
        }
        state
    }
}

/// Names an instruction reads from: `COPY --from` and `RUN --mount from=`.
fn referenced_names(ins: &Instruction, lexer: &Lexer) -> Result<Vec<String>, PlanError> {
    match &ins.command {
        Command::Copy(c) => match &c.from {
            Some(from) => {
                let same = lexer
                    .process_word(from, &crate::expand::NoEnv)
                    .is_ok_and(|e| e.value == *from);
                if !same {
                    return Err(PlanError::invalid(
                        ins.span,
                        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                    ));
                }
                Ok(vec![from.clone()])
            }
            None => Ok(Vec::new()),
        },
        Command::Run(r) => {
            let mut out = Vec::new();
            for m in &r.mounts {
                let fields = crate::run_flags::csv_fields(m).unwrap_or_default();
                for f in fields {
                    if let Some((k, v)) = f.split_once('=')
                        && k.eq_ignore_ascii_case("from")
                        && !v.is_empty()
                    {
                        out.push(v.to_string());
                    }
                }
            }
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

/// Parses one ONBUILD trigger as an instruction of its own.
fn parse_trigger(trigger: &str) -> Result<Instruction, String> {
    let nodes = parser::parse_nodes(trigger).map_err(|e| e.kind.to_string())?;
    let [node] = <[_; 1]>::try_from(nodes.nodes)
        .map_err(|_| "onbuild trigger should be a single expression".to_string())?;
    let mut ignored = Vec::new();
    let ins = instructions::from_node(node, &mut ignored).map_err(|e| e.kind.to_string())?;
    match ins.command {
        Command::From(_) | Command::Maintainer(_) | Command::Onbuild(_) => Err(format!(
            "{} isn't allowed as an ONBUILD trigger",
            ins.command.keyword()
        )),
        _ => Ok(ins),
    }
}

/// A warning for `# syntax=` images other than BuildKit's Dockerfile frontend.
fn syntax_lint(df: &Dockerfile) -> Option<Lint> {
    let syntax = df.directives.syntax.as_ref()?;
    if crate::directives::is_builtin_syntax(&syntax.value) {
        return None;
    }
    Some(Lint::new(
        Rule::UnsupportedSyntax,
        Span::lines(syntax.line, syntax.line),
        format!(
            "syntax {:?} asks for another frontend; rbuild builds with its built-in Dockerfile frontend (docker/dockerfile:1 semantics)",
            syntax.value
        ),
    ))
}

/// Plans `dockerfile` for the given options.
pub fn plan(
    dockerfile: &Dockerfile,
    options: &PlanOptions,
    resolver: &dyn ImageResolver,
) -> Result<Plan, PlanError> {
    let (result, lints) = Planner::plan(dockerfile, options, resolver);
    result.map(|p| Plan { lints, ..p })
}

/// Plans and returns the findings even if planning fails (for `check`).
pub(crate) fn plan_with_lints(
    dockerfile: &Dockerfile,
    options: &PlanOptions,
    resolver: &dyn ImageResolver,
) -> (Result<Plan, PlanError>, Vec<Lint>) {
    Planner::plan(dockerfile, options, resolver)
}

/// The stage-level view of a Dockerfile: global ARGs and each FROM with its
/// instructions.
pub(crate) struct Layout<'a> {
    pub meta_args: Vec<&'a Instruction>,
    pub stages: Vec<(&'a Instruction, &'a crate::ast::From, Vec<&'a Instruction>)>,
}

impl<'a> Layout<'a> {
    pub(crate) fn of(dockerfile: &'a Dockerfile) -> Result<Layout<'a>, PlanError> {
        let mut layout = Layout {
            meta_args: Vec::new(),
            stages: Vec::new(),
        };
        for ins in &dockerfile.instructions {
            match (&ins.command, layout.stages.last_mut()) {
                (Command::From(f), _) => layout.stages.push((ins, f, Vec::new())),
                (_, Some((_, _, body))) => body.push(ins),
                (Command::Arg(_), None) => layout.meta_args.push(ins),
                (other, None) => {
                    return Err(PlanError::invalid(
                        ins.span,
                        format!(
                            "{} must come after a FROM instruction; only ARG may come before the first FROM",
                            other.keyword()
                        ),
                    ));
                }
            }
        }
        if layout.stages.is_empty() {
            let span = dockerfile.instructions.last().map(|i| i.span).unwrap_or_default();
            return Err(PlanError::invalid(
                span,
                "the Dockerfile has no FROM instruction, so there is no stage to build",
            ));
        }
        Ok(layout)
    }
}

pub(crate) fn parse_platform(spec: &str, span: Span) -> Result<Platform, PlanError> {
    Platform::parse(spec).map_err(|e| PlanError::invalid(span, format!("invalid platform: {e}")))
}
