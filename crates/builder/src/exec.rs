//! RUN: the command runs in the OCI runtime over the stage's layer snapshots, and what it
//! changed — the overlay's upper directory — becomes the step's layer.
//!
//! Mounts are prepared here: cache directories that persist across builds in the local store,
//! binds of the context or another stage (through overlays, so `rw` writes are discarded),
//! tmpfs, secrets (written to a private file bound read-only, never into a layer, the history,
//! the cache key or the logs) and the SSH agent socket. Whatever the runtime had to create to
//! mount over (`/proc`, `/etc/resolv.conf`, a secret's directory) is removed from the layer
//! when the image did not have it, as BuildKit's mount-stub cleaner does.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rbuild_dockerfile::paths::clean_under_root;
use rbuild_dockerfile::plan::{CopyFrom, Mount, RunStep};
use rbuild_dockerfile::run_flags::{MountType, Sharing};
use rbuild_layer::{DirOptions, Entry, entries_from_dir};
use rbuild_oci::Digest;
use rbuild_runtime::{ExtraMount, MountKind, Network};

use crate::error::{BuildError, Result};
use crate::rootfs::RootfsView;

/// Where a secret's value comes from (`--secret id=ID,src=FILE` or `env=VAR`).
#[derive(Clone, Debug)]
pub enum SecretSource {
    /// A file's content.
    File(PathBuf),
    /// An environment variable of the build's process.
    Env(String),
}

impl SecretSource {
    fn value(&self, id: &str) -> Result<Vec<u8>> {
        match self {
            SecretSource::File(path) => fs::read(path)
                .map_err(|e| BuildError::io(format!("reading secret {id} from {}", path.display()), e)),
            SecretSource::Env(var) => {
                std::env::var(var)
                    .map(String::into_bytes)
                    .map_err(|_| BuildError::SecretVariableUnset {
                        id: id.to_owned(),
                        var: var.clone(),
                    })
            }
        }
    }
}

/// What a RUN's mounts can draw on.
pub struct MountSources<'a> {
    /// The build context's directory, for `type=bind` without `from`.
    pub context: Option<&'a Path>,
    /// Layer directories of stages, images and named contexts `from=` may name, by the
    /// plan's `CopyFrom` rendered as a string.
    pub layers: &'a dyn Fn(&CopyFrom) -> Result<Vec<PathBuf>>,
    /// Where cache mounts live.
    pub cache_dir: &'a Path,
    /// `--secret`.
    pub secrets: &'a BTreeMap<String, SecretSource>,
    /// `--ssh` (the agent socket).
    pub ssh: Option<&'a Path>,
    /// A directory for this run's private files (secrets, heredoc scripts).
    pub scratch: &'a Path,
}

/// A RUN's mounts, ready for the runtime, and what must stay alive while it runs.
pub struct Prepared {
    /// The mounts.
    pub mounts: Vec<ExtraMount>,
    /// Environment variables the mounts add (secrets with `env=`, `SSH_AUTH_SOCK`).
    pub env: Vec<String>,
    /// Paths the runtime may create only to mount over.
    pub stubs: Vec<String>,
    /// Locks on `sharing=locked` cache directories, released when the run ends.
    _locks: Vec<File>,
}

/// The paths the runtime mounts over in every container.
const RUNTIME_STUBS: [&str; 5] = ["/proc", "/dev", "/sys", "/etc/resolv.conf", "/etc/hosts"];

fn cache_directory(mount: &Mount, sources: &MountSources<'_>, locks: &mut Vec<File>) -> Result<PathBuf> {
    let id = mount
        .id
        .clone()
        .or_else(|| mount.target.clone())
        .unwrap_or_default();
    let key = Digest::sha256_of(id.as_bytes());
    let dir = sources.cache_dir.join(&key.hex()[..32]);
    if !dir.exists() {
        fs::create_dir_all(&dir).map_err(|e| BuildError::io(format!("creating cache mount {id}"), e))?;
        let mode = mount.mode.unwrap_or(0o755);
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .map_err(|e| BuildError::io(format!("preparing cache mount {id}"), e))?;
        std::os::unix::fs::chown(&dir, Some(mount.uid.unwrap_or(0)), Some(mount.gid.unwrap_or(0)))
            .map_err(|e| BuildError::io(format!("preparing cache mount {id}"), e))?;
    }
    let lock_path = sources.cache_dir.join(format!("{}.lock", &key.hex()[..32]));
    match mount.sharing.unwrap_or(Sharing::Shared) {
        Sharing::Shared => Ok(dir),
        Sharing::Locked => {
            let lock = File::create(&lock_path).map_err(|e| BuildError::io("locking a cache mount", e))?;
            lock.lock()
                .map_err(|e| BuildError::io("locking a cache mount", e))?;
            locks.push(lock);
            Ok(dir)
        }
        Sharing::Private => {
            let lock = File::create(&lock_path).map_err(|e| BuildError::io("locking a cache mount", e))?;
            if lock.try_lock().is_ok() {
                locks.push(lock);
                Ok(dir)
            } else {
                // Another build holds it: this one gets a fresh, private directory.
                let private = tempfile::tempdir_in(sources.scratch)
                    .map_err(|e| BuildError::io("creating a private cache mount", e))?
                    .keep();
                Ok(private)
            }
        }
    }
}

fn private_file(dir: &Path, name: &str, content: &[u8], mode: u32, uid: u32, gid: u32) -> Result<PathBuf> {
    let path = dir.join(name);
    fs::write(&path, content).map_err(|e| BuildError::io(format!("writing {}", path.display()), e))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        .map_err(|e| BuildError::io(format!("writing {}", path.display()), e))?;
    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
        .map_err(|e| BuildError::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// Turns a RUN's `--mount`s and heredoc scripts into runtime mounts.
pub fn prepare(run: &RunStep, sources: &MountSources<'_>) -> Result<Prepared> {
    let mut mounts = Vec::new();
    let mut env = Vec::new();
    let mut locks = Vec::new();
    let mut stubs: Vec<String> = RUNTIME_STUBS.iter().map(|s| (*s).to_owned()).collect();
    for (n, mount) in run.mounts.iter().enumerate() {
        let target = mount.target.clone();
        let kind = match mount.kind {
            MountType::Cache => MountKind::Bind {
                source: cache_directory(mount, sources, &mut locks)?,
                read_only: mount.read_only,
            },
            MountType::Tmpfs => MountKind::Tmpfs { size: mount.size },
            MountType::Bind => {
                let layers = match &mount.from {
                    None => vec![
                        sources
                            .context
                            .ok_or_else(|| BuildError::NoContext("RUN --mount=type=bind"))?
                            .to_owned(),
                    ],
                    Some(from) => (sources.layers)(from)?,
                };
                MountKind::Layers {
                    layers,
                    subpath: mount.source.clone().unwrap_or_else(|| "/".to_owned()),
                    writable: !mount.read_only,
                }
            }
            MountType::Secret => {
                let id = mount.id.clone().unwrap_or_default();
                let Some(source) = sources.secrets.get(&id) else {
                    if mount.required {
                        return Err(BuildError::MissingSecret(id));
                    }
                    continue;
                };
                let value = source.value(&id)?;
                if let Some(var) = &mount.env {
                    env.push(format!("{var}={}", String::from_utf8_lossy(&value)));
                    if target.is_none() {
                        continue;
                    }
                }
                let file = private_file(
                    sources.scratch,
                    &format!("secret-{n}"),
                    &value,
                    mount.mode.unwrap_or(0o400),
                    mount.uid.unwrap_or(0),
                    mount.gid.unwrap_or(0),
                )?;
                let target = target.clone().unwrap_or_else(|| format!("/run/secrets/{id}"));
                stubs.push(target.clone());
                mounts.push(ExtraMount {
                    target,
                    kind: MountKind::Bind {
                        source: file,
                        read_only: true,
                    },
                });
                continue;
            }
            MountType::Ssh => {
                let Some(socket) = sources.ssh else {
                    if mount.required {
                        return Err(BuildError::MissingSshAgent);
                    }
                    continue;
                };
                let target = target
                    .clone()
                    .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{n}"));
                env.push(format!("SSH_AUTH_SOCK={target}"));
                stubs.push(target.clone());
                mounts.push(ExtraMount {
                    target,
                    kind: MountKind::Bind {
                        source: socket.to_owned(),
                        read_only: true,
                    },
                });
                continue;
            }
        };
        let target = target.ok_or(BuildError::MountWithoutTarget)?;
        stubs.push(target.clone());
        mounts.push(ExtraMount { target, kind });
    }
    for (n, inline) in run.inline_files.iter().enumerate() {
        let file = private_file(
            sources.scratch,
            &format!("inline-{n}"),
            inline.content.as_bytes(),
            inline.mode,
            0,
            0,
        )?;
        stubs.push(inline.path.clone());
        mounts.push(ExtraMount {
            target: inline.path.clone(),
            kind: MountKind::Bind {
                source: file,
                read_only: true,
            },
        });
    }
    Ok(Prepared {
        mounts,
        env,
        stubs,
        _locks: locks,
    })
}

/// The network a RUN asked for: `default` is the build's `--network`, which itself defaults to
/// the host's (rbuild has no bridge network of its own, like BuildKit without CNI).
pub fn network(run: &RunStep, build_default: &str) -> Result<Network> {
    let asked = if run.network.is_empty() || run.network == "default" {
        build_default
    } else {
        run.network.as_str()
    };
    match asked {
        "" | "default" | "host" => Ok(Network::Host),
        "none" => Ok(Network::None),
        other => Err(BuildError::UnknownNetwork(other.to_owned())),
    }
}

/// The step's layer: the upper directory as entries, minus the mount stubs the image did not
/// have (and the directories made only to hold them).
pub fn layer_entries(upper: &Path, stubs: &[String], below: &RootfsView) -> Result<Vec<Entry>> {
    let entries = entries_from_dir(
        upper,
        &DirOptions {
            overlay_whiteouts: true,
        },
    )
    .map_err(BuildError::ReadChanges)?;
    // The stubs themselves only if the command left them empty (a file of size 0, or a
    // directory it put nothing into).
    let has_content = |path: &str| {
        entries.iter().any(|e| {
            e.path.starts_with(&format!("{path}/"))
                || (e.path == path && matches!(&e.kind, rbuild_layer::EntryKind::File(rbuild_layer::FileSource::Path(p)) if fs::metadata(p).is_ok_and(|m| m.len() > 0)))
        })
    };
    let empty_stubs: Vec<String> = stubs
        .iter()
        .map(|stub| clean_under_root(stub))
        .filter(|path| !path.is_empty() && below.lookup(path).is_none() && !has_content(path))
        .collect();
    // Then each directory that holds nothing else: all the stubs to drop are known by now,
    // so a stub the command wrote to keeps its directory.
    let mut dropped: HashSet<String> = empty_stubs.iter().cloned().collect();
    for path in &empty_stubs {
        let mut at = path.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            if below.lookup(parent).is_some() {
                break;
            }
            let only_stubs = entries
                .iter()
                .filter(|e| e.path.starts_with(&format!("{parent}/")))
                .all(|e| dropped.contains(&e.path));
            if !only_stubs {
                break;
            }
            dropped.insert(parent.to_owned());
            at = parent;
        }
    }
    Ok(entries
        .into_iter()
        .filter(|e| !dropped.contains(&e.path))
        .collect())
}

/// What the command's environment is: the image's and the stage's ARGs, the mounts' additions,
/// proxies, and a default `PATH` if the image has none (as BuildKit adds).
pub fn environment(run: &RunStep, extra: &[String]) -> Vec<String> {
    let mut env: Vec<String> = run
        .env
        .iter()
        .map(|v| format!("{}={}", v.name, v.value))
        .collect();
    env.extend(run.proxy_env.iter().map(|v| format!("{}={}", v.name, v.value)));
    env.extend(extra.iter().cloned());
    if !env.iter().any(|kv| kv.starts_with("PATH=")) {
        env.push(format!("PATH={}", crate::image::DEFAULT_PATH));
    }
    env
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::test_plan::run_step;

    /// What mounts draw on in a test: a context, a cache and a scratch directory, and the
    /// secret `tok` read from a file holding `s3cret`.
    struct Sources {
        dir: tempfile::TempDir,
        secrets: BTreeMap<String, SecretSource>,
    }

    impl Sources {
        fn new() -> Sources {
            let dir = tempfile::tempdir().unwrap();
            for sub in ["context", "cache", "scratch"] {
                fs::create_dir(dir.path().join(sub)).unwrap();
            }
            let secret = dir.path().join("tok");
            fs::write(&secret, "s3cret").unwrap();
            let secrets = BTreeMap::from([("tok".to_owned(), SecretSource::File(secret))]);
            Sources { dir, secrets }
        }

        /// Prepares the mounts of `instruction` (a RUN), with an SSH agent socket at
        /// `<dir>/agent` if `ssh`.
        fn prepare(&self, instruction: &str, ssh: bool) -> Result<Prepared> {
            let agent = self.dir.path().join("agent");
            let layers = |from: &CopyFrom| Ok(vec![PathBuf::from(format!("/layers/of/{from:?}"))]);
            let sources = MountSources {
                context: Some(&self.dir.path().join("context")),
                layers: &layers,
                cache_dir: &self.dir.path().join("cache"),
                secrets: &self.secrets,
                ssh: ssh.then_some(agent.as_path()),
                scratch: &self.dir.path().join("scratch"),
            };
            prepare(&run_step(instruction), &sources)
        }
    }

    /// [`Sources`], when this process may prepare mounts: they are files owned by root (or
    /// by the ids asked), which only root can make — as only root can run a build's RUN.
    fn sources_as_root() -> Option<Sources> {
        if !crate::snapshot::is_root() {
            eprintln!("skipped: preparing RUN mounts chowns files to root, which needs root");
            return None;
        }
        Some(Sources::new())
    }

    /// The source of a bind mount.
    fn bound(mount: &ExtraMount) -> &Path {
        match &mount.kind {
            MountKind::Bind { source, .. } => source,
            other => panic!("{} is not a bind mount: {other:?}", mount.target),
        }
    }

    #[test]
    fn the_network_is_the_builds_unless_the_step_asks_for_none_or_host() {
        let run = run_step("RUN true");
        assert_eq!(network(&run, "").unwrap(), Network::Host);
        assert_eq!(network(&run, "none").unwrap(), Network::None);
        assert_eq!(
            network(&run_step("RUN --network=none true"), "host").unwrap(),
            Network::None
        );
        assert_eq!(
            network(&run_step("RUN --network=host true"), "none").unwrap(),
            Network::Host
        );
        assert_eq!(
            network(&run_step("RUN --network=default true"), "none").unwrap(),
            Network::None
        );
        let bridge = network(&run, "bridge").unwrap_err();
        assert!(
            bridge.to_string().contains("use default, none or host"),
            "{bridge}"
        );
    }

    #[test]
    fn the_environment_has_one_path_the_images_or_the_default() {
        let env = environment(&run_step("ENV A=1\nRUN true"), &["EXTRA=x".to_owned()]);
        assert!(
            env.contains(&"A=1".to_owned()) && env.contains(&"EXTRA=x".to_owned()),
            "{env:?}"
        );
        let paths: Vec<&String> = env.iter().filter(|v| v.starts_with("PATH=")).collect();
        assert_eq!(paths, [&format!("PATH={}", crate::image::DEFAULT_PATH)]);

        let own = environment(&run_step("ENV PATH=/opt/bin\nRUN true"), &[]);
        let paths: Vec<&String> = own.iter().filter(|v| v.starts_with("PATH=")).collect();
        assert_eq!(paths, ["PATH=/opt/bin"]);
    }

    #[test]
    fn the_argv_is_the_shell_for_the_shell_form_and_as_written_for_the_exec_form() {
        assert_eq!(run_step("RUN echo $HOME").argv, ["/bin/sh", "-c", "echo $HOME"]);
        assert_eq!(run_step(r#"RUN ["echo", "$HOME"]"#).argv, ["echo", "$HOME"]);
        assert_eq!(
            run_step("SHELL [\"/bin/bash\", \"-eu\", \"-c\"]\nRUN echo hi").argv,
            ["/bin/bash", "-eu", "-c", "echo hi"]
        );
    }

    #[test]
    fn cache_mounts_are_one_directory_per_id_made_with_the_mode_and_owner_asked() {
        let Some(sources) = sources_as_root() else {
            return;
        };
        let first = sources
            .prepare(
                "RUN --mount=type=cache,target=/c,id=deps,mode=0700,uid=1000,gid=1001 true",
                false,
            )
            .unwrap();
        let dir = bound(&first.mounts[0]).to_owned();
        let meta = fs::metadata(&dir).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o700, 1000, 1001)
        );
        assert!(first.stubs.contains(&"/c".to_owned()));
        let same_id = sources
            .prepare("RUN --mount=type=cache,target=/other,id=deps true", false)
            .unwrap();
        assert_eq!(bound(&same_id.mounts[0]), dir);
        let by_target = sources
            .prepare("RUN --mount=type=cache,target=/c2 true", false)
            .unwrap();
        assert_ne!(bound(&by_target.mounts[0]), dir);
    }

    #[test]
    fn a_private_cache_mount_held_by_another_run_is_a_fresh_directory() {
        let Some(sources) = sources_as_root() else {
            return;
        };
        let private = "RUN --mount=type=cache,target=/c,sharing=private true";
        let holder = sources.prepare(private, false).unwrap();
        let shared = bound(&holder.mounts[0]).to_owned();
        let meanwhile = sources.prepare(private, false).unwrap();
        assert_ne!(bound(&meanwhile.mounts[0]), shared);
        assert!(bound(&meanwhile.mounts[0]).starts_with(sources.dir.path().join("scratch")));
        drop(holder);
        let after = sources.prepare(private, false).unwrap();
        assert_eq!(bound(&after.mounts[0]), shared);
    }

    #[test]
    fn secrets_are_private_read_only_files_or_variables_and_required_ones_must_exist() {
        let Some(sources) = sources_as_root() else {
            return;
        };
        let file = sources
            .prepare("RUN --mount=type=secret,id=tok true", false)
            .unwrap();
        let mount = &file.mounts[0];
        assert_eq!(mount.target, "/run/secrets/tok");
        assert!(matches!(mount.kind, MountKind::Bind { read_only: true, .. }));
        assert_eq!(fs::read_to_string(bound(mount)).unwrap(), "s3cret");
        assert_eq!(fs::metadata(bound(mount)).unwrap().mode() & 0o7777, 0o400);
        assert!(file.stubs.contains(&"/run/secrets/tok".to_owned()));

        let env = sources
            .prepare("RUN --mount=type=secret,id=tok,env=TOKEN true", false)
            .unwrap();
        assert_eq!(env.env, ["TOKEN=s3cret"]);
        assert!(env.mounts.is_empty(), "env= without a target mounts nothing");

        let optional = sources
            .prepare("RUN --mount=type=secret,id=other true", false)
            .unwrap();
        assert!(optional.mounts.is_empty());
        let required = sources
            .prepare("RUN --mount=type=secret,id=other,required=true true", false)
            .err()
            .unwrap();
        assert!(required.to_string().contains("--secret id=other"), "{required}");
    }

    #[test]
    fn binds_ssh_tmpfs_and_heredoc_scripts_become_runtime_mounts() {
        let Some(sources) = sources_as_root() else {
            return;
        };
        let context = sources.dir.path().join("context");
        let bind = sources
            .prepare("RUN --mount=type=bind,source=sub,target=/src,rw true", false)
            .unwrap();
        assert_eq!(
            bind.mounts[0].kind,
            MountKind::Layers {
                layers: vec![context],
                subpath: "sub".to_owned(),
                writable: true
            }
        );
        let from = sources
            .prepare("RUN --mount=type=bind,from=busybox,target=/b true", false)
            .unwrap();
        assert!(
            matches!(&from.mounts[0].kind, MountKind::Layers { layers, writable: false, .. } if layers[0].starts_with("/layers/of/")),
            "{:?}",
            from.mounts
        );

        let tmpfs = sources
            .prepare("RUN --mount=type=tmpfs,target=/t,size=1024 true", false)
            .unwrap();
        assert_eq!(tmpfs.mounts[0].kind, MountKind::Tmpfs { size: Some(1024) });

        let ssh = sources.prepare("RUN --mount=type=ssh true", true).unwrap();
        assert_eq!(ssh.env, ["SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0"]);
        assert_eq!(bound(&ssh.mounts[0]), sources.dir.path().join("agent"));
        let no_agent = sources
            .prepare("RUN --mount=type=ssh,required=true true", false)
            .err()
            .unwrap();
        assert!(no_agent.to_string().contains("--ssh default"), "{no_agent}");

        let script = sources
            .prepare("RUN <<EOF\n#!/bin/sh\necho hi\nEOF", false)
            .unwrap();
        let mount = &script.mounts[0];
        assert_eq!(fs::read_to_string(bound(mount)).unwrap(), "#!/bin/sh\necho hi\n");
        assert!(
            fs::metadata(bound(mount)).unwrap().mode() & 0o100 != 0,
            "the script is executable"
        );
        assert!(script.stubs.contains(&mount.target));
    }

    #[test]
    fn the_layer_leaves_out_empty_mount_stubs_the_image_did_not_have() {
        let upper = tempfile::tempdir().unwrap();
        let below_dir = tempfile::tempdir().unwrap();
        fs::create_dir(below_dir.path().join("dev")).unwrap();
        let below = RootfsView::new(vec![below_dir.path().to_owned()]);
        for dir in ["proc", "dev", "etc", "run/secrets", "out"] {
            fs::create_dir_all(upper.path().join(dir)).unwrap();
        }
        for file in ["etc/resolv.conf", "run/secrets/tok"] {
            fs::write(upper.path().join(file), "").unwrap();
        }
        fs::write(upper.path().join("etc/hosts"), "127.0.0.1 written\n").unwrap();
        fs::write(upper.path().join("out/x"), "x").unwrap();
        let stubs: Vec<String> = RUNTIME_STUBS
            .iter()
            .map(|s| (*s).to_owned())
            .chain(["/run/secrets/tok".to_owned()])
            .collect();
        let entries = layer_entries(upper.path(), &stubs, &below).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        // proc, resolv.conf and the secret's file and directories were only mounted over;
        // dev was in the image; hosts the command wrote to.
        assert_eq!(paths, ["dev", "etc", "etc/hosts", "out", "out/x"]);
    }
}
