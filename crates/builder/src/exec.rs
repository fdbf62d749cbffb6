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
    let mut dropped: HashSet<String> = HashSet::new();
    for stub in stubs {
        let path = clean_under_root(stub);
        if path.is_empty() || below.lookup(&path).is_some() {
            continue;
        }
        // The stub itself only if the command left it empty (a file of size 0, or a
        // directory it put nothing into).
        let has_content = entries.iter().any(|e| {
            e.path.starts_with(&format!("{path}/"))
                || (e.path == path && matches!(&e.kind, rbuild_layer::EntryKind::File(rbuild_layer::FileSource::Path(p)) if fs::metadata(p).is_ok_and(|m| m.len() > 0)))
        });
        if has_content {
            continue;
        }
        dropped.insert(path.clone());
        let mut at = path.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            if below.lookup(parent).is_some() {
                break;
            }
            let only_stubs = entries
                .iter()
                .filter(|e| e.path.starts_with(&format!("{parent}/")))
                .all(|e| dropped.contains(&e.path) || stubs.iter().any(|s| clean_under_root(s) == e.path));
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
