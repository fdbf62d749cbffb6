//! Image configs exactly as docker 20.10 wrote them (`fixtures/image-configs/`, whose README
//! says how each was made): the classic builder, `docker commit` and `docker import` write empty
//! fields as `null`, and everything a child image inherits must come through.

use std::collections::BTreeMap;
use std::path::Path;

use rbuild_oci::config::{ContainerConfig, Empty, Healthcheck, ImageConfig};

const ALL: [&str; 5] = [
    "classic-base",
    "classic-onbuild",
    "classic-child",
    "commit",
    "import",
];

fn bytes(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/image-configs")
        .join(format!("{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read(name: &str) -> ImageConfig {
    rbuild_oci::json::from_slice(&bytes(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn set(keys: &[&str]) -> BTreeMap<String, Empty> {
    keys.iter().map(|k| ((*k).to_owned(), Empty {})).collect()
}

const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The runtime config of the busybox base, with `cmd`: only `Env` and `Cmd` set, every other
/// field `null` or empty in the file.
fn base_config(cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        env: strings(&[PATH]),
        cmd: Some(strings(cmd)),
        ..ContainerConfig::default()
    }
}

/// The runtime config of `classic-onbuild` as its Dockerfile sets it.
fn onbuild_config() -> ContainerConfig {
    ContainerConfig {
        user: "1000:1000".to_owned(),
        exposed_ports: set(&["53/udp", "8080/tcp"]),
        env: strings(&[PATH, "GREETING=hello", "NAME=the world"]),
        entrypoint: Some(strings(&["/bin/echo"])),
        cmd: Some(strings(&["hi"])),
        volumes: set(&["/data"]),
        working_dir: "/srv/app".to_owned(),
        labels: [("org.example.team", "builders"), ("version", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        stop_signal: Some("SIGTERM".to_owned()),
        healthcheck: Some(Healthcheck {
            test: strings(&["CMD", "/bin/true"]),
            interval: 30_000_000_000,
            timeout: 3_000_000_000,
            start_period: 5_000_000_000,
            start_interval: 0,
            retries: 2,
        }),
        shell: Some(strings(&["/bin/sh", "-ec"])),
        on_build: Some(strings(&["ENV TRIGGERED=yes", "LABEL triggered=yes"])),
        args_escaped: false,
    }
}

#[test]
fn classic_builder_base() {
    let config = read("classic-base");
    assert_eq!(config.config, base_config(&["/bin/sh"]));
    assert_eq!(
        (config.os.as_str(), config.architecture.as_str()),
        ("linux", "amd64")
    );
    assert_eq!(config.rootfs.diff_ids.len(), 2);
    let empty: Vec<bool> = config.history.iter().map(|h| h.empty_layer).collect();
    assert_eq!(empty, [false, false, true, true]);
}

#[test]
fn classic_builder_every_inherited_field() {
    assert_eq!(read("classic-onbuild").config, onbuild_config());
}

#[test]
fn classic_builder_child_of_an_onbuild_image() {
    let mut expected = onbuild_config();
    expected.env.push("TRIGGERED=yes".to_owned());
    for (k, v) in [("child", "1"), ("triggered", "yes")] {
        expected.labels.insert(k.to_owned(), v.to_owned());
    }
    expected.on_build = None;
    assert_eq!(read("classic-child").config, expected);
}

#[test]
fn docker_commit() {
    let config = read("commit");
    assert_eq!(config.config, base_config(&["sh", "-c", "echo x > /committed"]));
    assert_eq!(config.rootfs.diff_ids.len(), 3);
}

#[test]
fn docker_import() {
    let config = read("import");
    assert_eq!(config.config, ContainerConfig::default());
    assert_eq!(config.rootfs.diff_ids.len(), 1);
    assert_eq!(config.history[0].comment.as_deref(), Some("Imported from -"));
}

/// What rbuild writes back from any of them is canonical: no `null`, and it reads back the same.
#[test]
fn written_back_without_null() {
    for name in ALL {
        let config = read(name);
        let written = serde_json::to_vec(&config).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&written).unwrap();
        assert!(!has_null(&value), "{name}: {value}");
        assert_eq!(
            rbuild_oci::json::from_slice::<ImageConfig>(&written).unwrap(),
            config,
            "{name}"
        );
    }
}

fn has_null(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::Array(items) => items.iter().any(has_null),
        serde_json::Value::Object(members) => members.values().any(has_null),
        _ => false,
    }
}
