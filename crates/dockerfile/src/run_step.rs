//! RUN: the final argv (shell, heredocs), mounts resolved against the
//! stage, and the environment split into what the process sees and what
//! history and the cache key record.

use std::collections::HashMap;

use crate::ast::{CommandLine, Span};
use crate::heredoc;
use crate::paths::{clean_absolute, clean_under_root, normalize_workdir};
use crate::plan::{CopyFrom, InlineFile, Mount, PlanError, RunStep, Var};
use crate::planner::{Planner, StageState, is_proxy_arg, vars, with_shell};
use crate::run_flags::{self, MountType};

impl Planner<'_> {
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

    pub(crate) fn run_step(
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
        return clean_absolute(p);
    }
    let rel = clean_under_root(p);
    if rel.is_empty() { ".".to_string() } else { rel }
}
