//! Running a build step's command the way BuildKit does: an OCI runtime bundle (a
//! `config.json` made with the `oci-spec` crate's types) executed by runc, over an overlay of
//! the stage's layer snapshots. What the command changes lands in the overlay's upper
//! directory, which the caller turns into the step's layer.
//!
//! Where overlayfs cannot be mounted (or `RBUILD_SNAPSHOTTER=native` asks for it), the layers
//! are copied instead and the copy is compared with what it was after the command; the result
//! is the same upper directory (see [`Snapshotter`]).
//!
//! Every run lives in its own directory named after the rbuild process (`runs/rbuild-<pid>-
//! <n>`). If rbuild is killed mid-step, [`Runtime::cleanup_stale`] (called before each build)
//! finds runs whose process is gone and removes their runc container, mount and directory.
//!
//! ```no_run
//! use rbuild_runtime::{Network, RunSpec, Runtime, User};
//!
//! let runtime = Runtime::new(std::path::Path::new("/var/cache/rbuild/runtime"), None)?;
//! let spec = RunSpec {
//!     layers: vec!["/var/cache/rbuild/snapshots/0123".into()],
//!     argv: vec!["/bin/sh".into(), "-c".into(), "echo hi > /greeting".into()],
//!     env: vec!["PATH=/bin".into()],
//!     cwd: "/".into(),
//!     user: User::ROOT,
//!     network: Network::None,
//!     mounts: Vec::new(),
//!     resolv_conf: None,
//!     hosts: None,
//! };
//! let finished = runtime.run(&spec, &|line| println!("{line}"))?;
//! println!("changes are in {}", finished.upper().display());
//! # Ok::<(), rbuild_runtime::RunError>(())
//! ```
#![deny(missing_docs)]

mod native;
mod overlay;
pub mod spec;
mod stop;

pub use stop::Stop;

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a step could not run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The runtime configuration could not be made.
    #[error("building the runtime configuration: {0}")]
    Spec(String),
    /// A file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The OCI runtime could not be used.
    #[error("{0}")]
    Runtime(String),
    /// The command exited with a non-zero status.
    #[error("the command exited with code {exit_code}")]
    Failed {
        /// Its exit code.
        exit_code: i32,
        /// The last lines it printed.
        tail: Vec<String>,
    },
    /// The run's [`Stop`] was given: the command was not started, or was killed.
    #[error("stopped")]
    Stopped,
}

impl RunError {
    fn io(context: impl Into<String>, source: std::io::Error) -> RunError {
        RunError::Io {
            context: context.into(),
            source,
        }
    }

    fn spec(error: impl std::fmt::Display) -> RunError {
        RunError::Spec(error.to_string())
    }
}

/// Who the command runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
}

impl User {
    /// root.
    pub const ROOT: User = User {
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
    };
}

/// The step's network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// A network namespace of its own, with only loopback.
    None,
    /// The host's network namespace.
    Host,
}

/// How a run's root filesystem is made from the layer snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Snapshotter {
    /// An overlay mount, or copies where overlayfs cannot be mounted (said once, as a
    /// warning).
    #[default]
    Auto,
    /// Only an overlay mount: when one cannot be made, the step fails.
    Overlay,
    /// Copies of the layers, compared after the command with what they were: slower, needs
    /// no overlayfs, and gives the same layer.
    Native,
}

impl FromStr for Snapshotter {
    type Err = RunError;

    fn from_str(name: &str) -> Result<Snapshotter, RunError> {
        match name {
            "auto" => Ok(Snapshotter::Auto),
            "overlay" => Ok(Snapshotter::Overlay),
            "native" => Ok(Snapshotter::Native),
            other => Err(RunError::Runtime(format!(
                "unknown snapshotter {other:?}: use auto, overlay or native"
            ))),
        }
    }
}

/// What an extra mount is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountKind {
    /// A host directory or file.
    Bind {
        /// The host path.
        source: PathBuf,
        /// Mounted read-only.
        read_only: bool,
    },
    /// An empty tmpfs.
    Tmpfs {
        /// Its size limit in bytes.
        size: Option<i64>,
    },
    /// A path inside a stack of layer directories (another stage, an image, the context),
    /// merged with an overlay. Writes to a writable one go to a scratch upper directory and
    /// are thrown away with the run, as BuildKit does for `rw` bind mounts.
    Layers {
        /// Layer directories, base first.
        layers: Vec<PathBuf>,
        /// The path inside the merged layers to mount.
        subpath: String,
        /// Whether the command may write (writes are discarded).
        writable: bool,
    },
}

/// A mount the step asked for (`RUN --mount`, secrets, heredoc scripts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraMount {
    /// The absolute path inside the container.
    pub target: String,
    /// What is mounted there.
    pub kind: MountKind,
}

/// One command to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The layer snapshot directories, base first (overlayfs lower-layer format).
    pub layers: Vec<PathBuf>,
    /// The command.
    pub argv: Vec<String>,
    /// The environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// The working directory (created if missing).
    pub cwd: String,
    /// Who it runs as.
    pub user: User,
    /// Its network.
    pub network: Network,
    /// Extra mounts.
    pub mounts: Vec<ExtraMount>,
    /// The host file bound read-only at `/etc/resolv.conf` (never captured in the layer).
    pub resolv_conf: Option<PathBuf>,
    /// The host file bound read-only at `/etc/hosts` (never captured in the layer).
    pub hosts: Option<PathBuf>,
}

/// A finished run: its upper directory holds the changes. The run's directory is removed
/// when this is dropped.
#[derive(Debug)]
pub struct Finished {
    dir: PathBuf,
}

impl Finished {
    /// The overlay upper directory: every change the command made, in overlayfs' format
    /// (deletions as 0/0 character devices, replaced directories marked opaque).
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Numbers the runs of this process. It is process-wide, not per [`Runtime`]: runc names a
/// container's cgroup after its id whatever its state directory, so two runtimes of one
/// process (two builds, two tests) numbering their runs alike would share a cgroup, and the
/// first to finish would remove it under the other.
static RUN_NUMBER: AtomicU64 = AtomicU64::new(0);

/// Runs steps with an OCI runtime.
pub struct Runtime {
    runc: PathBuf,
    root: PathBuf,
    snapshotter: Snapshotter,
    /// Whether [`Snapshotter::Auto`] has said it falls back to copies.
    warned: AtomicBool,
    /// Kills the running commands when given.
    stop: Stop,
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

impl Runtime {
    /// A runtime keeping its state under `root`. The OCI runtime is `runtime`, else
    /// `$RBUILD_RUNTIME`, else `runc` from `PATH`; the snapshotter is `$RBUILD_SNAPSHOTTER`
    /// (`auto`, `overlay` or `native`), else [`Snapshotter::Auto`].
    pub fn new(root: &Path, runtime: Option<PathBuf>) -> Result<Runtime, RunError> {
        let runc = runtime
            .or_else(|| std::env::var_os("RBUILD_RUNTIME").map(PathBuf::from))
            .or_else(|| find_on_path("runc"))
            .ok_or_else(|| {
                RunError::Runtime(
                    "RUN needs an OCI runtime: install runc (apt-get install runc) or set RBUILD_RUNTIME"
                        .to_owned(),
                )
            })?;
        for dir in ["runs", "state"] {
            fs::create_dir_all(root.join(dir))
                .map_err(|e| RunError::io(format!("creating {}", root.display()), e))?;
        }
        let snapshotter = match std::env::var("RBUILD_SNAPSHOTTER") {
            Ok(name) => name.parse()?,
            Err(_) => Snapshotter::default(),
        };
        Ok(Runtime {
            runc,
            root: root.to_owned(),
            snapshotter,
            warned: AtomicBool::new(false),
            stop: Stop::new(),
        })
    }

    /// This runtime with `snapshotter` instead of the environment's choice.
    pub fn with_snapshotter(mut self, snapshotter: Snapshotter) -> Runtime {
        self.snapshotter = snapshotter;
        self
    }

    /// This runtime, its commands killed when `stop` is given (and none started after).
    pub fn with_stop(mut self, stop: Stop) -> Runtime {
        self.stop = stop;
        self
    }

    /// Makes `layers` visible at `target`: an overlay mount (its upper, work and empty
    /// directories in `scratch`), or a copy. Returns whether it is a mount, to be unmounted.
    fn stack(&self, layers: &[PathBuf], scratch: &Path, target: &Path) -> Result<bool, RunError> {
        if self.snapshotter != Snapshotter::Native {
            match overlay::mount_overlay(
                layers,
                &scratch.join("empty"),
                &scratch.join("upper"),
                &scratch.join("work"),
                target,
            ) {
                Ok(()) => return Ok(true),
                Err(e) if self.snapshotter == Snapshotter::Auto => {
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "{e}; copying the layers instead, which is slower (RBUILD_SNAPSHOTTER=native does so from the start)"
                        );
                    }
                }
                Err(e) => return Err(e),
            }
        }
        native::copy_layers(layers, target)?;
        Ok(false)
    }

    fn runc(&self) -> Command {
        let mut command = Command::new(&self.runc);
        command.arg("--root").arg(self.root.join("state"));
        command
    }

    /// Removes what runs of dead rbuild processes left: their containers, overlay mounts and
    /// directories. Returns how many runs it cleaned.
    pub fn cleanup_stale(&self) -> usize {
        let Ok(entries) = fs::read_dir(self.root.join("runs")) else {
            return 0;
        };
        let mut cleaned = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let owner_alive = name
                .split('-')
                .nth(1)
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if owner_alive {
                continue;
            }
            let _ = self
                .runc()
                .args(["kill", &name, "KILL"])
                .stderr(Stdio::null())
                .status();
            let _ = self
                .runc()
                .args(["delete", "--force", &name])
                .stderr(Stdio::null())
                .status();
            overlay::unmount_quietly(&entry.path().join("rootfs"));
            if fs::remove_dir_all(entry.path()).is_ok() {
                cleaned += 1;
            }
        }
        cleaned
    }

    /// Runs `spec`, passing each line the command prints to `output`. A non-zero exit is
    /// [`RunError::Failed`] with the last lines of output; a command killed because the
    /// runtime's [`Stop`] was given, or not started because it was, is [`RunError::Stopped`].
    pub fn run(&self, spec: &RunSpec, output: &(dyn Fn(&str) + Sync)) -> Result<Finished, RunError> {
        if self.stop.is_stopped() {
            return Err(RunError::Stopped);
        }
        let id = format!(
            "rbuild-{}-{}",
            std::process::id(),
            RUN_NUMBER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = self.root.join("runs").join(&id);
        let finished = Finished { dir: dir.clone() };
        for sub in ["upper", "work", "rootfs", "empty"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(|e| RunError::io(format!("creating {}", dir.display()), e))?;
        }
        let rootfs = dir.join("rootfs");
        let mut mounted = Vec::new();
        let baseline = if self.stack(&spec.layers, &dir, &rootfs)? {
            mounted.push(rootfs.clone());
            None
        } else {
            Some(native::Baseline::record(&rootfs)?)
        };
        let result = self
            .merge_layer_mounts(&dir, spec, &mut mounted)
            .and_then(|spec| self.run_mounted(&id, &dir, &rootfs, &spec, output));
        for target in mounted.iter().rev() {
            overlay::unmount_quietly(target);
        }
        result?;
        if let Some(baseline) = baseline {
            native::write_upper(&rootfs, &baseline, &finished.upper())?;
        }
        Ok(finished)
    }

    /// Mounts each [`MountKind::Layers`] mount's overlay under the run directory and returns the
    /// spec with those mounts turned into plain binds of the merged path.
    fn merge_layer_mounts(
        &self,
        dir: &Path,
        spec: &RunSpec,
        mounted: &mut Vec<PathBuf>,
    ) -> Result<RunSpec, RunError> {
        let mut spec = spec.clone();
        for (n, extra) in spec.mounts.iter_mut().enumerate() {
            let MountKind::Layers {
                layers,
                subpath,
                writable,
            } = &extra.kind
            else {
                continue;
            };
            let base = dir.join("mounts").join(n.to_string());
            for sub in ["upper", "work", "merged", "empty"] {
                fs::create_dir_all(base.join(sub))
                    .map_err(|e| RunError::io(format!("creating {}", base.display()), e))?;
            }
            let merged = base.join("merged");
            if self.stack(layers, &base, &merged)? {
                mounted.push(merged.clone());
            }
            let source = merged.join(subpath.trim_start_matches('/'));
            if fs::symlink_metadata(&source).is_err() {
                return Err(RunError::Runtime(format!(
                    "mount source {subpath} does not exist (mounting at {})",
                    extra.target
                )));
            }
            extra.kind = MountKind::Bind {
                source,
                read_only: !writable,
            };
        }
        Ok(spec)
    }

    fn run_mounted(
        &self,
        id: &str,
        dir: &Path,
        rootfs: &Path,
        spec: &RunSpec,
        output: &(dyn Fn(&str) + Sync),
    ) -> Result<(), RunError> {
        let cwd = rootfs.join(spec.cwd.trim_start_matches('/'));
        if fs::symlink_metadata(&cwd).is_err() {
            fs::create_dir_all(&cwd)
                .map_err(|e| RunError::io(format!("creating the working directory {}", spec.cwd), e))?;
        }
        let config = spec::build(spec, rootfs)?;
        let json = serde_json::to_vec_pretty(&config).map_err(RunError::spec)?;
        fs::write(dir.join("config.json"), json).map_err(|e| RunError::io("writing config.json", e))?;

        // runc's own messages go to a log file, so the step's output is only the command's.
        let log = dir.join("runc.log");
        let mut child = self
            .runc()
            .arg("--log")
            .arg(&log)
            .args(["run", "--bundle"])
            .arg(dir)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RunError::Runtime(format!("starting {}: {e}", self.runc.display())))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let streams: Vec<Box<dyn std::io::Read + Send>> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        let done = AtomicBool::new(false);
        let status = std::thread::scope(|scope| {
            for stream in streams {
                let tail = tail.clone();
                scope.spawn(move || {
                    // Split on bytes: a program may print anything, and one line that is not
                    // UTF-8 must not end the step's output for every view and the error's tail.
                    for bytes in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                        let bytes = bytes.strip_suffix(b"\r").unwrap_or(&bytes);
                        let line = String::from_utf8_lossy(bytes).into_owned();
                        output(&line);
                        if let Ok(mut tail) = tail.lock() {
                            tail.push_back(line);
                            if tail.len() > 20 {
                                tail.pop_front();
                            }
                        }
                    }
                });
            }
            scope.spawn(|| {
                self.stop.watch(&done, Duration::from_millis(100), || {
                    let _ = self
                        .runc()
                        .args(["kill", id, "KILL"])
                        .stderr(Stdio::null())
                        .status();
                })
            });
            let status = child.wait();
            self.stop.end(&done);
            status
        })
        .map_err(|e| RunError::Runtime(format!("waiting for {}: {e}", self.runc.display())))?;
        if self.stop.is_stopped() && !status.success() {
            return Err(RunError::Stopped);
        }
        match status.code() {
            Some(0) => Ok(()),
            code => {
                for line in fs::read_to_string(&log).unwrap_or_default().lines() {
                    if line.contains("\"level\":\"error\"") || line.contains("level=error") {
                        tracing::warn!("runc: {line}");
                    }
                }
                Err(RunError::Failed {
                    exit_code: code.unwrap_or(-1),
                    tail: tail
                        .lock()
                        .map(|t| t.iter().cloned().collect())
                        .unwrap_or_default(),
                })
            }
        }
    }
}
