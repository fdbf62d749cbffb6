//! What ships for running the registry: the repository's Dockerfile (which builds rbuild) and
//! the Kubernetes manifests in `deploy/kubernetes/` (one replica) and
//! `deploy/kubernetes/cluster/` (three, over S3 and PostgreSQL).
//!
//! Debian's kubectl cannot validate offline (`create --dry-run=client` still asks an API server
//! for its schema), so the manifests are parsed here and checked field by field — and the
//! Deployment's own arguments, with the ConfigMap's config file, start the real `rbuild serve`,
//! whose probe endpoints must answer over HTTPS without credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;
use spec_tests::pki::TestCa;
use spec_tests::registry::{RegistryProcess, ServeOptions, rbuild_bin};
use yaml_rust2::{Yaml, YamlLoader};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(s) => s.parse::<f64>().map_or(Value::Null, Value::from),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.clone()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().expect("string keys").to_owned(), to_json(v)))
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

/// Every document of every manifest in `deploy/kubernetes`, keyed by `Kind/name`.
fn manifests() -> BTreeMap<String, Value> {
    manifests_in("deploy/kubernetes")
}

/// Every document of every manifest in `dir` (relative to the repository), keyed by `Kind/name`.
fn manifests_in(dir: &str) -> BTreeMap<String, Value> {
    let dir = repository().join(dir);
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") || path.ends_with("kustomization.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in docs.iter().map(to_json) {
            let what = format!("{}: {doc}", path.display());
            for field in ["apiVersion", "kind"] {
                assert!(doc[field].is_string(), "{what}: no {field}");
            }
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no name"));
            let key = format!("{}/{name}", doc["kind"].as_str().unwrap());
            assert!(all.insert(key.clone(), doc).is_none(), "{key} defined twice");
        }
    }
    all
}

fn get<'a>(all: &'a BTreeMap<String, Value>, key: &str) -> &'a Value {
    all.get(key)
        .unwrap_or_else(|| panic!("no {key} in the manifests"))
}

#[test]
fn kubernetes_manifests_hang_together() {
    let all = manifests();
    let kustomization =
        std::fs::read_to_string(repository().join("deploy/kubernetes/kustomization.yaml")).unwrap();
    let kustomization = to_json(&YamlLoader::load_from_str(&kustomization).unwrap()[0]);
    for file in kustomization["resources"].as_array().unwrap() {
        let file = file.as_str().unwrap();
        assert!(
            repository().join("deploy/kubernetes").join(file).is_file(),
            "{file}"
        );
    }

    let deployment = get(&all, "Deployment/rbuild");
    assert_eq!(deployment["apiVersion"], "apps/v1");
    let template = &deployment["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    let pod = &template["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"].as_i64().unwrap() > 0);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for kind in ["requests", "limits"] {
        assert!(
            container["resources"][kind]["memory"].is_string(),
            "memory {kind}"
        );
    }
    assert!(container["resources"]["requests"]["cpu"].is_string());
    let port = container["ports"][0]["name"].as_str().unwrap();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], port, "{probe}");
        assert_eq!(get["scheme"], "HTTPS", "{probe}");
    }

    // Every volume names something defined here, and every mount a volume.
    let volumes = pod["volumes"].as_array().unwrap();
    for volume in volumes {
        if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
            get(&all, &format!("PersistentVolumeClaim/{claim}"));
        }
        if let Some(map) = volume["configMap"]["name"].as_str() {
            assert!(get(&all, &format!("ConfigMap/{map}"))["data"]["config.toml"].is_string());
        }
        if let Some(secret) = volume["secret"]["secretName"].as_str() {
            get(&all, &format!("Secret/{secret}"));
        }
    }
    for mount in container["volumeMounts"].as_array().unwrap() {
        assert!(volumes.iter().any(|v| v["name"] == mount["name"]), "{mount}");
    }
    let tls = get(&all, "Secret/rbuild-tls");
    assert_eq!(tls["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key"] {
        assert!(tls["stringData"][key].is_string(), "{key}");
    }
    assert!(get(&all, "Secret/rbuild-htpasswd")["stringData"]["htpasswd"].is_string());
    assert_eq!(
        get(&all, "PersistentVolumeClaim/rbuild-data")["spec"]["accessModes"][0],
        "ReadWriteOnce"
    );

    let service = get(&all, "Service/rbuild");
    assert_eq!(&service["spec"]["selector"], labels);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port);

    // The example workload pulls with a dockerconfigjson secret for the registry it names.
    let pull = get(&all, "Secret/rbuild-pull");
    assert_eq!(pull["type"], "kubernetes.io/dockerconfigjson");
    let config: Value =
        serde_json::from_str(pull["stringData"][".dockerconfigjson"].as_str().unwrap()).unwrap();
    let hello = get(&all, "Pod/hello");
    assert_eq!(hello["spec"]["imagePullSecrets"][0]["name"], "rbuild-pull");
    assert_eq!(hello["metadata"]["namespace"], pull["metadata"]["namespace"]);
    let image = hello["spec"]["containers"][0]["image"].as_str().unwrap();
    let registry = image.split('/').next().unwrap();
    let auth = config["auths"][registry]["auth"].as_str().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD.decode(auth).unwrap();
    assert!(String::from_utf8(decoded).unwrap().contains(':'));
}

#[test]
fn the_cluster_variant_runs_three_replicas_over_s3_and_postgres() {
    let all = manifests_in("deploy/kubernetes/cluster");
    let kustomization =
        std::fs::read_to_string(repository().join("deploy/kubernetes/cluster/kustomization.yaml")).unwrap();
    let kustomization = to_json(&YamlLoader::load_from_str(&kustomization).unwrap()[0]);
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file.as_str().unwrap())
        .collect();
    for file in &listed {
        let path = repository().join("deploy/kubernetes/cluster").join(file);
        assert!(path.is_file(), "{file}");
    }
    assert_eq!(listed.len(), all.len(), "every manifest is listed: {listed:?}");

    let deployment = get(&all, "Deployment/rbuild");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    let pdb = get(&all, "PodDisruptionBudget/rbuild");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    let min_available = pdb["spec"]["minAvailable"].as_i64().unwrap();
    assert!(
        (1..3).contains(&min_available),
        "a drain may take one pod at a time"
    );
    assert_eq!(&get(&all, "Service/rbuild")["spec"]["selector"], labels);

    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
    }
    // Nothing durable in a pod: no volume claim, every volume a ConfigMap, Secret or emptyDir
    // defined here.
    for volume in pod["volumes"].as_array().unwrap() {
        assert!(volume["persistentVolumeClaim"].is_null(), "{volume}");
        if let Some(map) = volume["configMap"]["name"].as_str() {
            get(&all, &format!("ConfigMap/{map}"));
        } else if let Some(secret) = volume["secret"]["secretName"].as_str() {
            get(&all, &format!("Secret/{secret}"));
        } else {
            assert!(volume["emptyDir"].is_object(), "{volume}");
        }
    }
    // The credentials come from a Secret that has them, under the names rbuild reads.
    let env = container["env"].as_array().unwrap();
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "RBUILD_POSTGRES_URL",
    ] {
        let var = env
            .iter()
            .find(|var| var["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"));
        let from = &var["valueFrom"]["secretKeyRef"];
        let secret = get(&all, &format!("Secret/{}", from["name"].as_str().unwrap()));
        assert!(
            secret["stringData"][from["key"].as_str().unwrap()].is_string(),
            "{name}"
        );
    }

    let toml = get(&all, "ConfigMap/rbuild-config")["data"]["config.toml"]
        .as_str()
        .unwrap();
    let keys = toml_keys(toml);
    assert_eq!(keys["storage.driver"], "\"s3\"");
    for key in ["endpoint", "region", "bucket"] {
        assert!(
            keys.contains_key(&format!("storage.s3.{key}")),
            "[storage.s3] {key}"
        );
    }
    assert_eq!(keys["metadata.driver"], "\"postgres\"");
    assert!(
        !toml.contains("secret_access_key") && !toml.contains("postgres://"),
        "no credentials in the ConfigMap"
    );
}

/// The `key = value` lines of a flat TOML file as `table.key` → the value's text (enough for
/// the storage keys; the registry's own parser reads the file when it starts).
fn toml_keys(text: &str) -> BTreeMap<String, String> {
    let mut table = String::new();
    let mut keys = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.trim_matches(['[', ']']).to_owned();
        } else if let Some((key, value)) = line.split_once(" = ") {
            keys.insert(format!("{table}.{}", key.trim()), value.trim().to_owned());
        }
    }
    keys
}

#[test]
fn the_deployment_starts_rbuild_serve_and_its_probes_answer() {
    let Some(ca) = TestCa::new("deploy") else { return };
    let all = manifests();
    let work = tempfile::tempdir().unwrap();
    // The files the pod mounts, made real (the harness writes the config, on the run's backend).
    let toml = get(&all, "ConfigMap/rbuild-config")["data"]["config.toml"]
        .as_str()
        .unwrap();
    let tls = ca.server("server", "localhost");
    let htpasswd = work.path().join("htpasswd");
    let mut add = Command::new(rbuild_bin());
    add.args(["htpasswd", "--cost", "4", "--password-stdin", "-f"])
        .arg(&htpasswd)
        .arg("ci");
    let (ok, text) = with_input(&mut add, "ci-pw");
    assert!(ok, "{text}");

    let deployment = get(&all, "Deployment/rbuild");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut args: Vec<String> = Vec::new();
    for arg in container["args"].as_array().unwrap().iter().skip(1) {
        let arg = arg.as_str().unwrap();
        let flag = arg.split_once('=').map_or(arg, |(flag, _)| flag);
        let value = match flag {
            // The harness chooses the address and the storage root, and passes the config.
            "--addr" | "--root" | "--config" => continue,
            "--tls-cert" => tls.cert.display().to_string(),
            "--tls-key" => tls.key.display().to_string(),
            "--htpasswd" => htpasswd.display().to_string(),
            other => panic!("the test does not know {other}; teach it"),
        };
        args.push(format!("{flag}={value}"));
    }
    assert_eq!(container["args"][0], "serve");
    let registry = RegistryProcess::start_with(ServeOptions {
        config: toml.to_owned(),
        args,
        ..ServeOptions::default()
    });
    assert!(registry.url("").starts_with("https://"));
    let http = super::auth::https_client(&ca.cert(), None);
    for path in ["/healthz", "/readyz"] {
        let response = http.get(registry.url(path)).send().unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let response = http.get(registry.url("/v2/")).send().unwrap();
    assert_eq!(response.status(), 401, "the API needs credentials");
    let log = registry.log();
    assert!(log.contains("auth: htpasswd (Basic), 1 users"), "{log}");
}

/// Runs `command` with `input` on stdin.
fn with_input(command: &mut Command, input: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_repository_dockerfile_has_its_stages_and_user_and_passes_rbuild_check() {
    let root = repository();
    let text = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let out = Command::new(rbuild_bin())
        .args(["check", "--format", "json"])
        .arg(&root)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "{report}");
    assert_eq!(
        report["diagnostics"],
        serde_json::json!([]),
        "rbuild check found problems"
    );

    // A Rust build stage, the debug information in a stage of its own, a slim runtime stage
    // last (the default target), a non-root user, the stripped binary as entrypoint.
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 3, "{froms:?}");
    assert!(
        froms[0].contains("rust:") && froms[0].contains(" AS build"),
        "{}",
        froms[0]
    );
    assert_eq!(froms[1], "FROM scratch AS debuginfo");
    assert!(froms[2].contains("-slim"), "{}", froms[2]);
    let user = text.lines().rfind(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(text.contains("cargo build --profile profiling --locked -p rbuild"));
    assert!(text.contains("objcopy --strip-debug --add-gnu-debuglink="));
    assert!(text.contains("ENTRYPOINT [\"rbuild\"]"));
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        "the build context leaves target/ out"
    );
}
