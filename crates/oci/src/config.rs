//! The image configuration (`application/vnd.oci.image.config.v1+json`), with the Docker
//! extensions (`Healthcheck`, `Shell`, `OnBuild`) that `docker build` writes and docker reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// An image configuration: how to run the image, its layers' diff IDs and its history.
///
/// Read one with [`crate::json::from_slice`], not `serde_json` directly: docker writes empty
/// fields here and in [`ContainerConfig`] as `null`, which only that function reads as absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// When the image was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who made it (`MAINTAINER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture (`amd64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// How to run a container from the image.
    #[serde(default)]
    pub config: ContainerConfig,
    /// The uncompressed layer digests, base first.
    pub rootfs: RootFs,
    /// One entry per build step, layer-producing or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// An inline build cache (`rbuild build --cache-to type=inline`): which of the image's
    /// layers each build step made, by cache key. Its format is the builder's; images built on
    /// this one do not inherit it.
    #[serde(rename = "rbuild.cache.v1", default, skip_serializing_if = "Option::is_none")]
    pub inline_cache: Option<serde_json::Value>,
}

/// The runtime configuration of a container. Field names are Docker's (PascalCase).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `USER`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `EXPOSE`, as `port/proto` keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// `ENV`, as `KEY=value`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Empty>,
    /// `WORKDIR`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// `LABEL`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `STOPSIGNAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `HEALTHCHECK` (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// `SHELL` (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// `ONBUILD` triggers (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// Set by docker for Windows shell-form commands; kept when a base image has it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_escaped: bool,
}

impl ContainerConfig {
    /// The value of an environment variable.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
    }

    /// Sets an environment variable, replacing it in place if present (as docker does).
    pub fn set_env(&mut self, name: &str, value: &str) {
        let entry = format!("{name}={value}");
        match self
            .env
            .iter_mut()
            .find(|kv| kv.split_once('=').is_some_and(|(k, _)| k == name))
        {
            Some(existing) => *existing = entry,
            None => self.env.push(entry),
        }
    }
}

/// The JSON `{}` used as the value of set-like maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// A `HEALTHCHECK`; durations in nanoseconds, as docker stores them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", "…"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: u64,
    /// Time a check may take.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: u64,
    /// Grace period after start.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: u64,
    /// Time between checks during the start period.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: u64,
    /// Failures before unhealthy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The image's filesystem: its layers' uncompressed digests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Uncompressed layer digests, base first. Docker omits the member for an image without
    /// layers (and Go tools write it `null`); rbuild always writes it, as OCI requires.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> RootFs {
        RootFs {
            kind: "layers".to_owned(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When the step ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction, e.g. `COPY app /app # buildkit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Who made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step produced no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_docker_config() {
        let json = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","A=1"],
            "Cmd":["/bin/sh"],"ExposedPorts":{"80/tcp":{}},"Healthcheck":{"Test":["CMD","true"],"Interval":30000000000}},
            "rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},
            "history":[{"created_by":"x","empty_layer":true}],"container":"ignored"}"#;
        let config: ImageConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.config.env_var("A"), Some("1"));
        assert_eq!(
            config.config.healthcheck.as_ref().unwrap().interval,
            30_000_000_000
        );
        assert!(config.history[0].empty_layer);
        let again: ImageConfig = serde_json::from_slice(&serde_json::to_vec(&config).unwrap()).unwrap();
        assert_eq!(again, config);
    }

    /// Every optional field `null`, in `config`, `container_config`, the healthcheck and the
    /// history, as Go's encoder writes empty slices and maps.
    const ALL_NULL: &str = r#"{"created":null,"author":null,"architecture":"amd64","os":"linux",
        "variant":null,"os.version":null,"os.features":null,
        "config":{"Hostname":"","User":null,"ExposedPorts":null,"Env":null,"Entrypoint":null,
            "Cmd":null,"Volumes":null,"WorkingDir":null,"Labels":null,"StopSignal":null,
            "Healthcheck":{"Test":null,"Interval":null,"Timeout":null,"StartPeriod":null,
                "StartInterval":null,"Retries":null},
            "Shell":null,"OnBuild":null,"ArgsEscaped":null,"Image":null},
        "container_config":{"Env":null,"Cmd":null,"Volumes":null,"OnBuild":null,"Labels":null,
            "ExposedPorts":null},
        "rootfs":{"type":"layers","diff_ids":null},
        "history":[{"created":null,"created_by":null,"author":null,"comment":null,"empty_layer":null}]}"#;

    #[test]
    fn null_optional_fields_read_as_absent() {
        let config: ImageConfig = crate::json::from_slice(ALL_NULL.as_bytes()).unwrap();
        let expected = ImageConfig {
            architecture: "amd64".to_owned(),
            os: "linux".to_owned(),
            config: ContainerConfig {
                healthcheck: Some(Healthcheck::default()),
                ..ContainerConfig::default()
            },
            history: vec![History::default()],
            ..ImageConfig::default()
        };
        assert_eq!(config, expected);
        let nothing_nullable = ALL_NULL.replace(r#""config":{"#, r#""config":null,"config_":{"#);
        let config: ImageConfig = crate::json::from_slice(nothing_nullable.as_bytes()).unwrap();
        assert_eq!(config.config, ContainerConfig::default());
    }

    #[test]
    fn null_required_fields_are_named() {
        for (field, json) in [
            (
                "rootfs",
                ALL_NULL.replace(
                    r#""rootfs":{"type":"layers","diff_ids":null}"#,
                    r#""rootfs":null"#,
                ),
            ),
            ("os", ALL_NULL.replace(r#""os":"linux""#, r#""os":null"#)),
            (
                "architecture",
                ALL_NULL.replace(r#""architecture":"amd64""#, r#""architecture":null"#),
            ),
        ] {
            let err = crate::json::from_slice::<ImageConfig>(json.as_bytes()).unwrap_err();
            assert!(
                err.to_string().contains(&format!("missing field `{field}`")),
                "{err}"
            );
        }
    }

    #[test]
    fn writes_empty_fields_as_omitted_never_null() {
        let config: ImageConfig = crate::json::from_slice(ALL_NULL.as_bytes()).unwrap();
        let written = serde_json::to_string(&config).unwrap();
        assert_eq!(
            written,
            r#"{"architecture":"amd64","os":"linux","config":{"Healthcheck":{}},"rootfs":{"type":"layers","diff_ids":[]},"history":[{}]}"#
        );
    }

    #[test]
    fn set_env_replaces_in_place() {
        let mut c = ContainerConfig::default();
        c.set_env("A", "1");
        c.set_env("B", "2");
        c.set_env("A", "3");
        assert_eq!(c.env, ["A=3", "B=2"]);
    }
}
