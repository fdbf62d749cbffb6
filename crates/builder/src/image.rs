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
    /// not, and it starts as [`ImageState::into_child`] says.
    pub fn from_base(mut config: ImageConfig, layers: Vec<CachedLayer>) -> ImageState {
        config.created = None;
        ImageState { config, layers }.into_child()
    }

    /// The image a stage built on this one starts from, as BuildKit starts it (docker is the
    /// oracle): the ONBUILD triggers do not carry over, since the stage runs them first, and a
    /// config without `PATH` gets the default one that its RUN steps see (not on Windows,
    /// which has its own). Images from `docker import` and umoci often have no `PATH`.
    pub fn into_child(mut self) -> ImageState {
        let c = &mut self.config.config;
        c.on_build = None;
        if self.config.os != "windows" && !c.env.iter().any(|kv| kv.starts_with("PATH=")) {
            c.env.push(format!("PATH={DEFAULT_PATH}"));
        }
        self
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

    /// `docker import` gives a config without `PATH`, and a base may carry ONBUILD triggers:
    /// BuildKit's child has the default `PATH` in its config and no triggers.
    #[test]
    fn a_child_gets_the_default_path_and_not_the_base_triggers() {
        let mut base = ImageConfig {
            os: "linux".into(),
            created: Some("2024-01-01T00:00:00Z".into()),
            ..ImageConfig::default()
        };
        base.config.env = vec!["MODE=imported".into()];
        base.config.on_build = Some(vec!["RUN make".into()]);
        let child = ImageState::from_base(base.clone(), Vec::new());
        assert_eq!(
            child.config.config.env,
            ["MODE=imported".to_owned(), format!("PATH={DEFAULT_PATH}")]
        );
        assert_eq!(child.config.config.on_build, None);
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

        let mut stage = ImageState::scratch("linux", "amd64");
        stage.apply_metadata(&StepKind::Onbuild {
            trigger: "RUN make".into(),
        });
        let next = stage.into_child();
        assert_eq!(
            next.config.config.on_build, None,
            "a stage's triggers do not carry over"
        );
    }
}
