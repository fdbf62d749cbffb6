//! RUN: the command in an OCI runtime over the stage's filesystem, keyed by everything that
//! can change what it does — the command, its ARGs and environment (proxies left out), user,
//! working directory, network and mounts (cache ids and secrets left out) — and the step below.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rbuild_dockerfile::plan::{CopyFrom, RunStep};
use rbuild_dockerfile::run_flags::MountType;
use rbuild_oci::Digest;

use crate::context;
use crate::error::{BuildError, Result};
use crate::exec::{self, MountSources};
use crate::keys::Inputs;
use crate::progress::Event;
use crate::solve::{Made, Outcome, Solver, StageState, StepContext};

/// Solves a RUN.
pub(super) fn run(cx: &StepContext<'_>, run: &RunStep, state: &mut StageState) -> Result<Outcome> {
    if run.security == "insecure" {
        return Err(BuildError::InsecureNotGranted);
    }
    if !run.devices.is_empty() {
        return Err(BuildError::DevicesUnsupported);
    }
    let solver = cx.solver;
    let user = if run.user.is_empty() {
        state.image.config.config.user.clone()
    } else {
        run.user.clone()
    };
    let inputs = inputs(cx, run, &user, &state.fs_key)?;
    let below = state.image.layers.clone();
    let diff_ms = Cell::new(0.0);
    let outcome = cx.cached_layer(
        inputs,
        None,
        |_| {},
        state,
        || {
            let view = cx.view_layers(&below)?;
            let (owner, groups) = crate::owner::run_user(&user, &view)?;
            let runtime = runtime(solver)?;
            let scratch = tempfile::tempdir_in(solver.scratch()?)
                .map_err(|e| BuildError::io("creating a directory for the step", e))?;
            let cache_dir = solver.store.root().join("cache-mounts");
            std::fs::create_dir_all(&cache_dir)
                .map_err(|e| BuildError::io("creating the cache-mount directory", e))?;
            let layers = |from: &CopyFrom| cx.layers_of(from);
            let prepared = exec::prepare(
                run,
                &MountSources {
                    context: solver.sources.context.as_ref().map(|c| c.root()),
                    layers: &layers,
                    cache_dir: &cache_dir,
                    secrets: &solver.request.secrets,
                    ssh: solver.request.ssh.as_deref(),
                    scratch: scratch.path(),
                },
            )?;
            let host_file = |path: &str| Some(PathBuf::from(path)).filter(|p| p.is_file());
            let spec = rbuild_runtime::RunSpec {
                layers: view.layers().to_vec(),
                argv: run.argv.clone(),
                env: exec::environment(run, &prepared.env),
                cwd: if run.workdir.is_empty() {
                    "/".to_owned()
                } else {
                    run.workdir.clone()
                },
                user: rbuild_runtime::User {
                    uid: owner.uid,
                    gid: owner.gid,
                    additional_gids: groups,
                },
                network: exec::network(run, &solver.request.network)?,
                mounts: prepared.mounts.clone(),
                resolv_conf: host_file("/etc/resolv.conf"),
                hosts: host_file("/etc/hosts"),
            };
            let output = |line: &str| {
                solver
                    .progress
                    .event(Event::Output(cx.label.clone(), line.to_owned()));
            };
            let finished = runtime.run(&spec, &output).map_err(|e| match e {
                rbuild_runtime::RunError::Failed { exit_code, tail } => {
                    BuildError::RunFailed { exit_code, tail }
                }
                rbuild_runtime::RunError::Stopped => BuildError::Canceled,
                other => BuildError::Runtime(other),
            })?;
            let diff_started = Instant::now();
            let entries = exec::layer_entries(&finished.upper(), &prepared.stubs, &view)?;
            diff_ms.set(diff_started.elapsed().as_secs_f64() * 1000.0);
            Ok(Made {
                entries,
                holder: Some(finished),
            })
        },
    )?;
    // The layer's time includes reading the step's changes back from the upper directory.
    Ok(match outcome {
        Outcome::Built { reason, mut layer } => {
            layer.ms += diff_ms.get();
            Outcome::Built { reason, layer }
        }
        other => other,
    })
}

/// What keys a RUN (see the module documentation).
fn inputs(cx: &StepContext<'_>, run: &RunStep, user: &str, fs_key: &str) -> Result<Inputs> {
    let mut inputs = Inputs::default();
    inputs
        .set("instruction", cx.step.instruction.clone())
        .set("flag:argv", serde_json::to_string(&run.argv).unwrap_or_default())
        .set("flag:user", user)
        .set("flag:workdir", run.workdir.clone())
        .set(
            "flag:network",
            format!("{:?}", exec::network(run, &cx.solver.request.network)?),
        )
        .set("flag:security", run.security.clone())
        .set("parent", fs_key);
    for arg in &run.args {
        inputs.set(format!("arg:{}", arg.name), arg.value.clone());
    }
    for var in &run.env {
        inputs.set(format!("env:{}", var.name), var.value.clone());
    }
    for (n, mount) in run.mounts.iter().enumerate() {
        let origin = match (&mount.kind, &mount.from) {
            (MountType::Bind, None) => {
                let context = cx.context()?;
                let source = context::clean_source(mount.source.as_deref().unwrap_or("/"))?;
                format!("context {}", context.tree_digest(&source))
            }
            (MountType::Bind, Some(CopyFrom::Stage { index })) => cx
                .done
                .get(index)
                .map(|s| format!("stage {}", s.fs_key))
                .unwrap_or_default(),
            (_, Some(from)) => format!("{from:?}"),
            _ => String::new(),
        };
        let described = serde_json::json!({
            "type": format!("{:?}", mount.kind),
            "target": mount.target,
            "source": mount.source,
            "origin": origin,
            "readonly": mount.read_only,
            "mode": mount.mode,
            "uid": mount.uid,
            "gid": mount.gid,
        });
        inputs.set(format!("flag:mount:{n}"), described.to_string());
    }
    for inline in &run.inline_files {
        inputs.set(
            format!("file:{}", inline.path),
            Digest::sha256_of(inline.content.as_bytes()).to_string(),
        );
    }
    Ok(inputs)
}

/// The runtime, made on the build's first RUN (so builds without RUN need no runc), after
/// clearing what killed builds left behind.
fn runtime(solver: &Solver) -> Result<Arc<rbuild_runtime::Runtime>> {
    if let Some(runtime) = solver.runtime.get() {
        return Ok(runtime.clone());
    }
    let mut runtime = rbuild_runtime::Runtime::new(
        &solver.store.root().join("runtime"),
        solver.request.runtime.clone(),
    )
    .map_err(BuildError::Runtime)?;
    if let Some(snapshotter) = solver.request.snapshotter {
        runtime = runtime.with_snapshotter(snapshotter);
    }
    runtime = runtime.with_stop(solver.stop.clone());
    let cleaned = runtime.cleanup_stale();
    if cleaned > 0 {
        tracing::info!("removed {cleaned} runs left by interrupted builds");
    }
    Ok(solver.runtime.get_or_init(|| Arc::new(runtime)).clone())
}

#[cfg(test)]
mod tests {
    use crate::BuildError;
    use crate::test_build::{TestBuild, located};

    #[test]
    fn what_rbuild_does_not_grant_is_refused_before_anything_runs() {
        let t = TestBuild::new();
        for (line, refused) in [
            ("RUN --security=insecure true", "insecure"),
            ("RUN --device=/dev/fuse true", "device"),
        ] {
            let error = t
                .build_with(&format!("FROM scratch\n{line}\n"), |_| {})
                .err()
                .expect("refused");
            let (_, cause) = located(&error);
            let expected = match refused {
                "insecure" => matches!(cause, BuildError::InsecureNotGranted),
                _ => matches!(cause, BuildError::DevicesUnsupported),
            };
            assert!(expected, "{line}: {cause}");
        }
    }
}
