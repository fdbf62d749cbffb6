//! The image a stage is building: its config, layers and history, changed step by step the
//! way `docker build` changes them.

use rbuild_dockerfile::plan::{HealthcheckStep, StepKind};
use rbuild_oci::Digest;
use rbuild_oci::config::{Empty, Healthcheck, History, ImageConfig};

use crate::cache::CachedLayer;

/// The default `PATH` BuildKit gives images built `FROM scratch`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A stage's image as it is being built.
#[derive(Clone, Debug)]
pub struct ImageState {
    /// The configuration, `rootfs.diff_ids` and `history` included.
    pub config: ImageConfig,
    /// The layers, base first, parallel to `config.rootfs.diff_ids`.
    pub layers: Vec<CachedLayer>,
}

impl ImageState {
    /// The empty image `FROM scratch` starts from (as BuildKit makes it: a default `PATH` and
    /// `/` as the working directory).
    pub fn scratch(os: &str, architecture: &str) -> ImageState {
        let mut config = ImageConfig {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            ..ImageConfig::default()
        };
        config.config.env = vec![format!("PATH={DEFAULT_PATH}")];
        config.config.working_dir = "/".to_owned();
        ImageState {
            config,
            layers: Vec::new(),
        }
    }

    /// An image built on a base image: its config and history carry over, its `created` does
    /// not. As BuildKit does (docker is the oracle), a config without `PATH` gets the default
    /// one that the stage's RUN steps see (not on Windows, which has its own): images from
    /// `docker import` and umoci often have none. (The solver drops the base's ONBUILD
    /// triggers once the stage starts; they are its first steps.)
    pub fn from_base(mut config: ImageConfig, layers: Vec<CachedLayer>) -> ImageState {
        config.created = None;
        config.inline_cache = None;
        let c = &mut config.config;
        if config.os != "windows" && !c.env.iter().any(|kv| kv.starts_with("PATH=")) {
            c.env.push(format!("PATH={DEFAULT_PATH}"));
        }
        ImageState { config, layers }
    }

    /// Adds a layer and its history entry.
    pub fn push_layer(&mut self, layer: CachedLayer, created_by: Option<String>, created: Option<String>) {
        self.config.rootfs.diff_ids.push(layer.diff_id.clone());
        self.layers.push(layer);
        self.push_history(created_by, created, false);
    }

    /// The `created` time of the last history entry: what a step that changes only the
    /// config records too, so that an image rebuilt from the cache is the same image.
    pub fn last_created(&self) -> Option<String> {
        self.config.history.last().and_then(|h| h.created.clone())
    }

    /// Adds a history entry.
    pub fn push_history(&mut self, created_by: Option<String>, created: Option<String>, empty_layer: bool) {
        if created_by.is_none() {
            return;
        }
        self.config.history.push(History {
            created,
            created_by,
            author: None,
            comment: Some("buildkit.dockerfile.v0".to_owned()),
            empty_layer,
        });
    }

    /// The chain of layer digests that identifies the filesystem (for cache keys).
    pub fn diff_ids(&self) -> &[Digest] {
        &self.config.rootfs.diff_ids
    }

    /// Applies a step that only changes the config. Returns false for steps that are not
    /// metadata-only (RUN, COPY, ADD, and WORKDIR's directory).
    pub fn apply_metadata(&mut self, kind: &StepKind) -> bool {
        let c = &mut self.config.config;
        match kind {
            StepKind::Env { vars } => {
                for var in vars {
                    c.set_env(&var.name, &var.value);
                }
            }
            StepKind::Label { labels } => {
                for label in labels {
                    c.labels.insert(label.name.clone(), label.value.clone());
                }
            }
            StepKind::Expose { ports } => {
                for port in ports {
                    c.exposed_ports.insert(port.clone(), Empty {});
                }
            }
            StepKind::User { user } => c.user = user.clone(),
            StepKind::Workdir { path } => c.working_dir = path.clone(),
            StepKind::Volume { paths } => {
                for path in paths {
                    c.volumes.insert(path.clone(), Empty {});
                }
            }
            StepKind::StopSignal { signal } => c.stop_signal = Some(signal.clone()),
            StepKind::Healthcheck(h) => c.healthcheck = Some(healthcheck(h)),
            StepKind::Shell { shell } => c.shell = Some(shell.clone()),
            StepKind::Cmd { argv } => c.cmd = Some(argv.clone()),
            StepKind::Entrypoint { argv, clears_cmd } => {
                c.entrypoint = Some(argv.clone());
                if *clears_cmd {
                    c.cmd = None;
                }
            }
            StepKind::Onbuild { trigger } => c.on_build.get_or_insert_with(Vec::new).push(trigger.clone()),
            StepKind::Maintainer { name } => self.config.author = Some(name.clone()),
            StepKind::Arg { .. } => {}
            StepKind::Run(_) | StepKind::Copy(_) | StepKind::Add(_) => return false,
        }
        true
    }
}

fn healthcheck(h: &HealthcheckStep) -> Healthcheck {
    Healthcheck {
        test: h.test.clone(),
        interval: h.interval_ns,
        timeout: h.timeout_ns,
        start_period: h.start_period_ns,
        start_interval: h.start_interval_ns,
        retries: u64::from(h.retries),
    }
}

#[cfg(test)]
mod tests {
    use rbuild_dockerfile::plan::Var;

    use super::*;

    #[test]
    fn scratch_has_buildkit_defaults() {
        let image = ImageState::scratch("linux", "amd64");
        assert_eq!(image.config.config.env, [format!("PATH={DEFAULT_PATH}")]);
        assert!(image.layers.is_empty());
    }

    #[test]
    fn entrypoint_clears_an_inherited_cmd() {
        let mut image = ImageState::scratch("linux", "amd64");
        image.apply_metadata(&StepKind::Cmd {
            argv: vec!["sh".into()],
        });
        image.apply_metadata(&StepKind::Entrypoint {
            argv: vec!["/app".into()],
            clears_cmd: true,
        });
        assert_eq!(image.config.config.cmd, None);
        image.apply_metadata(&StepKind::Env {
            vars: vec![Var {
                name: "PATH".into(),
                value: "/x".into(),
            }],
        });
        assert_eq!(image.config.config.env, ["PATH=/x"]);
    }

    /// `docker import` gives a config without `PATH`: BuildKit's child has the default one in
    /// its config.
    #[test]
    fn a_child_of_a_base_without_path_gets_the_default_one() {
        let mut base = ImageConfig {
            os: "linux".into(),
            created: Some("2024-01-01T00:00:00Z".into()),
            ..ImageConfig::default()
        };
        base.config.env = vec!["MODE=imported".into()];
        let child = ImageState::from_base(base.clone(), Vec::new());
        assert_eq!(
            child.config.config.env,
            ["MODE=imported".to_owned(), format!("PATH={DEFAULT_PATH}")]
        );
        assert_eq!(child.config.created, None);

        base.config.env = vec!["PATH=/opt/bin".into()];
        let child = ImageState::from_base(base.clone(), Vec::new());
        assert_eq!(
            child.config.config.env,
            ["PATH=/opt/bin"],
            "a PATH of its own stays"
        );

        base.os = "windows".into();
        base.config.env = Vec::new();
        let child = ImageState::from_base(base, Vec::new());
        assert!(child.config.config.env.is_empty(), "Windows keeps its own");
    }
}
