//! `--cache-to` / `--cache-from`: a CI runner that starts with an empty store builds from a
//! cache another runner pushed, against rbuild serve and against CNCF distribution 2.8.2; the
//! same through an OCI layout directory; `mode=min` against `mode=max`; `compression=`; an
//! image and its cache pushed at once, each blob uploaded once; and broken caches, which warn
//! and build.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use spec_tests::api::Api;
use spec_tests::distribution::Distribution;
use spec_tests::registry::RegistryProcess;
use spec_tests::tools::run;

use crate::support::{dockerfile, push_base, rbuild, runc_available, step_outcomes};

/// A two-stage build: a stage other stages read, the context's file, and RUN after both.
const DOCKERFILE: &str = "\
ARG BASE
FROM ${BASE} AS deps
RUN echo deps > /deps && echo more > /more
FROM ${BASE} AS tool
RUN echo tool > /tool
FROM ${BASE}
COPY --from=deps /deps /deps
COPY app.txt /app.txt
RUN cat /deps /app.txt > /out
COPY --from=tool /tool /opt/tool
";

/// A context with the Dockerfile above and `app.txt` holding `app`.
fn context(app: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    dockerfile(dir.path(), DOCKERFILE);
    std::fs::write(dir.path().join("app.txt"), app).unwrap();
    dir
}

/// Builds in `store` with `args`; returns the metrics (`--metrics-file`) and stderr.
fn build(store: &Path, context: &Path, base: &str, args: &[&str]) -> (Value, String) {
    let metrics = store.join("metrics.json");
    let out = run_output(
        rbuild(store)
            .args(["build", "--progress", "plain", "--build-arg"])
            .arg(format!("BASE={base}"))
            .arg("--metrics-file")
            .arg(&metrics)
            .args(args)
            .arg(context),
    );
    let metrics = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
    (metrics, out)
}

fn run_output(command: &mut std::process::Command) -> String {
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{stderr}");
    stderr
}

fn blobs(store: &Path) -> BTreeSet<String> {
    std::fs::read_dir(store.join("oci/blobs/sha256"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What the local-cache tests start from: a registry holding the base, the context, and a
/// directory for the caches.
struct Local {
    registry: RegistryProcess,
    base: String,
    ctx: tempfile::TempDir,
    dirs: tempfile::TempDir,
}

impl Local {
    /// Builds the context on the base in `store` with `args`; the metrics and stderr.
    fn build(&self, store: &Path, args: &[&str]) -> (Value, String) {
        build(store, self.ctx.path(), &self.base, args)
    }

    /// `None` without runc (outside CI, which fails instead).
    fn setup() -> Option<Local> {
        if !runc_available() {
            return None;
        }
        let registry = RegistryProcess::start();
        let base = push_base(&registry.host());
        Some(Local {
            registry,
            base,
            ctx: context("v1"),
            dirs: tempfile::tempdir().unwrap(),
        })
    }
}

/// The fresh-runner scenario on one registry.
fn fresh_runner_builds_from(registry: &str) {
    let base = push_base(registry);
    let image = format!("{registry}/app/one:1");
    let cache = format!("{registry}/app/cache:main");
    let ctx = context("v1");

    let first = tempfile::tempdir().unwrap();
    let cache_to = format!("type=registry,ref={cache},mode=max");
    let (built, _) = build(
        first.path(),
        ctx.path(),
        &base,
        &["--push", "-t", &image, "--cache-to", &cache_to],
    );
    assert!(
        step_outcomes(&built).iter().all(|(_, cache, _)| cache != "hit"),
        "{built}"
    );

    // A new runner: an empty store, the cache in the registry.
    let fresh = tempfile::tempdir().unwrap();
    let (rebuilt, stderr) = build(
        fresh.path(),
        ctx.path(),
        &base,
        &["--push", "-t", &image, "--cache-from", &cache],
    );
    assert_eq!(rebuilt["image"], built["image"], "the same image");
    for (instruction, outcome, from) in step_outcomes(&rebuilt) {
        if instruction.starts_with("FROM") {
            continue;
        }
        assert_eq!(outcome, "hit", "{instruction}\n{stderr}");
        assert_eq!(from.as_deref(), Some(cache.as_str()), "{instruction}");
    }
    // No cached layer was downloaded: no step needed the files of another (a COPY --from hits
    // by the key of the stage it copies from), and the push found them in the registry.
    assert_eq!(rebuilt["cache_bytes_fetched"], 0);
    let present = blobs(fresh.path());
    for step in built["steps"].as_array().unwrap() {
        if let Some(layer) = step["layer"].as_str() {
            let instruction = &step["instruction"];
            assert!(
                !present.contains(layer.trim_start_matches("sha256:")),
                "{instruction}: its layer was downloaded"
            );
        }
    }

    // One source file changed: only the steps that read it, and those after them, run.
    let changed = context("v2");
    let (partial, _) = build(fresh.path(), changed.path(), &base, &["--cache-from", &cache]);
    // The first step that missed needed the files below it: the layer of the COPY before it.
    let fetched = partial["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["instruction"] == "COPY app.txt /app.txt")
        .map(|s| s["bytes_fetched"].as_u64().unwrap());
    assert!(fetched.is_some_and(|bytes| bytes > 0), "{partial}");
    let outcomes: Vec<(String, String)> = step_outcomes(&partial)
        .into_iter()
        .map(|(instruction, outcome, _)| (instruction, outcome))
        .collect();
    let expected = [
        ("RUN echo deps > /deps && echo more > /more", "hit"),
        ("RUN echo tool > /tool", "hit"),
        ("COPY --from=deps /deps /deps", "hit"),
        ("COPY app.txt /app.txt", "miss"),
        ("RUN cat /deps /app.txt > /out", "miss"),
        ("COPY --from=tool /tool /opt/tool", "miss"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(i, o)| (i.to_string(), o.to_string()))
        .collect();
    assert_eq!(outcomes, expected);
}

#[test]
fn a_fresh_runner_builds_from_a_cache_in_rbuild_serve() {
    if !runc_available() {
        return;
    }
    let registry = RegistryProcess::start();
    fresh_runner_builds_from(&registry.host());
}

#[test]
fn a_fresh_runner_builds_from_a_cache_in_distribution() {
    if !runc_available() {
        return;
    }
    let Some(registry) = Distribution::start() else {
        return;
    };
    fresh_runner_builds_from(&registry.host());
}

#[test]
fn a_local_cache_round_trips_and_min_keeps_only_the_image_steps() {
    let Some(local) = Local::setup() else {
        return;
    };
    let min = local.dirs.path().join("min");
    let max = local.dirs.path().join("max");
    let first = tempfile::tempdir().unwrap();
    let (built, stderr) = local.build(
        first.path(),
        &[
            "--cache-to",
            &format!("type=local,dest={}", min.display()),
            "--cache-to",
            &format!("type=local,dest={},mode=max", max.display()),
        ],
    );
    assert!(stderr.contains("cache written to"), "{stderr}");

    let outcomes = |cache: &Path| {
        let fresh = tempfile::tempdir().unwrap();
        let (rebuilt, _) = local.build(
            fresh.path(),
            &["--cache-from", &format!("type=local,src={}", cache.display())],
        );
        assert_eq!(rebuilt["image"], built["image"]);
        step_outcomes(&rebuilt)
            .into_iter()
            .filter(|(_, outcome, _)| outcome != "none")
            .map(|(instruction, outcome, _)| (instruction, outcome))
            .collect::<Vec<_>>()
    };
    // mode=max: every step of every stage.
    assert!(outcomes(&max).iter().all(|(_, o)| o == "hit"));
    // mode=min: the final stage's steps; the stages it copies from are built again, and their
    // results (the same files) let the final stage's steps hit.
    let min_outcomes = outcomes(&min);
    assert_eq!(
        min_outcomes,
        [
            (
                "RUN echo deps > /deps && echo more > /more".to_owned(),
                "miss".to_owned()
            ),
            ("RUN echo tool > /tool".to_owned(), "miss".to_owned()),
            ("COPY --from=deps /deps /deps".to_owned(), "hit".to_owned()),
            ("COPY app.txt /app.txt".to_owned(), "hit".to_owned()),
            ("RUN cat /deps /app.txt > /out".to_owned(), "hit".to_owned()),
            ("COPY --from=tool /tool /opt/tool".to_owned(), "hit".to_owned()),
        ]
    );
}

/// Replaces the config of the cache in the layout `dir` by `config`, under its own digest (and
/// the manifest and index that name it): a well-formed cache holding what the test wrote.
fn readdress(dir: &Path, config: &[u8]) {
    let put = |bytes: &[u8]| {
        let hex = rbuild_oci::Digest::sha256_of(bytes).hex().to_owned();
        std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let index_path = dir.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(manifest_digest)).unwrap())
            .unwrap();
    let (digest, size) = put(config);
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = put(&serde_json::to_vec(&manifest).unwrap());
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    std::fs::write(index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn a_cache_layer_with_the_wrong_bytes_warns_and_the_build_goes_on() {
    let Some(local) = Local::setup() else {
        return;
    };
    let epoch = [&REPRODUCIBLE[..], &["--compression", "gzip"]].concat();
    let cache = local.dirs.path().join("cache");
    let cache_to = format!("type=local,dest={},mode=max", cache.display());
    let first = tempfile::tempdir().unwrap();
    let (built, _) = local.build(first.path(), &[&epoch[..], &["--cache-to", &cache_to]].concat());
    // Every layer keeps its size and loses a byte: the cache reads fine, and only fetching a
    // layer, when a step that missed needs the files below it, finds the digests wrong.
    let index: Value = serde_json::from_slice(&std::fs::read(cache.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| {
        cache
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let path = blob(layer["digest"].as_str().unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
    }

    // app.txt changed: its RUN misses and needs the layer COPY --from=deps hit.
    let changed = context("v2");
    let cache_from = format!("type=local,src={}", cache.display());
    let fresh = tempfile::tempdir().unwrap();
    let (rebuilt, stderr) = build(
        fresh.path(),
        changed.path(),
        &local.base,
        &[&epoch[..], &["--cache-from", &cache_from]].concat(),
    );
    let alone = tempfile::tempdir().unwrap();
    let (reference, _) = build(alone.path(), changed.path(), &local.base, &epoch);
    assert_eq!(rebuilt["image"], reference["image"], "a correct build:\n{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("warning: cache") && l.contains("could not be fetched"))
        .unwrap_or_else(|| panic!("no warning:\n{stderr}"));
    assert!(warning.contains(&cache.display().to_string()), "{warning}");

    // Nothing changed: every step hits, and the image kept in the store needs its layers.
    let fresh = tempfile::tempdir().unwrap();
    let (again, stderr) = local.build(
        fresh.path(),
        &[&epoch[..], &["--cache-from", &cache_from]].concat(),
    );
    assert_eq!(again["image"], built["image"], "a correct build:\n{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("warning: cache") && l.contains("could not be fetched")),
        "no warning:\n{stderr}"
    );
}

#[test]
fn a_broken_cache_warns_and_the_build_goes_on() {
    let Some(local) = Local::setup() else {
        return;
    };
    let good = local.dirs.path().join("good");
    let first = tempfile::tempdir().unwrap();
    // Reproducible, compressed layers: a step built again (its cache entry unusable) gives
    // the same one.
    let epoch = [&REPRODUCIBLE[..], &["--compression", "gzip"]].concat();
    let cache_to = format!("type=local,dest={},mode=max", good.display());
    let (built, _) = local.build(first.path(), &[&epoch[..], &["--cache-to", &cache_to]].concat());
    let index: Value = serde_json::from_slice(&std::fs::read(good.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let blob = |dir: &Path, digest: &str| {
        dir.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(&good, &manifest_digest)).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let config: Value = serde_json::from_slice(&std::fs::read(blob(&good, &config_digest)).unwrap()).unwrap();

    let broken = |name: &str, damage: &dyn Fn(&Path)| {
        let dir = local.dirs.path().join(name);
        run(std::process::Command::new("cp").arg("-a").arg(&good).arg(&dir));
        damage(&dir);
        dir
    };
    let cases = [
        (
            broken("corrupt-config", &|dir| {
                std::fs::write(blob(dir, &config_digest), b"{\"version\": 1,").unwrap()
            }),
            "config",
        ),
        (
            broken("future-version", &|dir| {
                let mut future = config.clone();
                future["version"] = 99.into();
                readdress(dir, &serde_json::to_vec(&future).unwrap());
            }),
            "version 99",
        ),
        (
            broken("missing-layer", &|dir| {
                let layer = config["layers"][0]["digest"].as_str().unwrap();
                std::fs::remove_file(blob(dir, layer)).unwrap();
            }),
            "layer",
        ),
        (
            broken("truncated-layer", &|dir| {
                let layer = config["layers"][0]["digest"].as_str().unwrap();
                let path = blob(dir, layer);
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            }),
            "layer",
        ),
        (
            broken("no-layout", &|dir| {
                std::fs::remove_file(dir.join("index.json")).unwrap()
            }),
            "index.json",
        ),
    ];
    for (cache, detail) in cases {
        let fresh = tempfile::tempdir().unwrap();
        let cache_from = format!("type=local,src={}", cache.display());
        let (rebuilt, stderr) = local.build(
            fresh.path(),
            &[&epoch[..], &["--cache-from", &cache_from]].concat(),
        );
        assert_eq!(
            rebuilt["image"],
            built["image"],
            "{}: a correct build",
            cache.display()
        );
        let warning = stderr
            .lines()
            .find(|l| l.starts_with("warning: cache"))
            .unwrap_or_else(|| panic!("{}: no warning:\n{stderr}", cache.display()));
        assert!(
            warning.contains(&cache.display().to_string()) && warning.contains(detail),
            "{warning}"
        );
    }
}

#[test]
fn an_inline_cache_is_read_back_from_the_pushed_image() {
    let Some(local) = Local::setup() else {
        return;
    };
    let registry = local.registry.host();
    let image = format!("{registry}/app/inline:1");
    let first = tempfile::tempdir().unwrap();
    local.build(
        first.path(),
        &["--push", "-t", &image, "--cache-to", "type=inline"],
    );
    let fresh = tempfile::tempdir().unwrap();
    let (rebuilt, stderr) = local.build(fresh.path(), &["--cache-from", &image]);
    // The image holds the records of its own stage's steps (mode=min): the stages it copies
    // from are built again, and their files let the final stage's steps hit.
    let outcomes: Vec<(String, String, Option<String>)> = step_outcomes(&rebuilt)
        .into_iter()
        .filter(|(_, outcome, _)| outcome != "none")
        .collect();
    for (instruction, outcome, from) in &outcomes {
        let expected = if instruction.starts_with("RUN echo") {
            "miss"
        } else {
            "hit"
        };
        assert_eq!(outcome, expected, "{instruction}\n{stderr}");
        if outcome == "hit" {
            assert_eq!(from.as_deref(), Some(image.as_str()));
        }
    }
    // An image without one is a warning, not a failure.
    let (_, stderr) = local.build(fresh.path(), &["--cache-from", &local.base]);
    assert!(stderr.contains("has no inline cache"), "{stderr}");
}

/// Reproducible, compressed layers: a step built again gives the same layer.
const REPRODUCIBLE: [&str; 2] = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];

/// The first line of `stderr` that starts with `prefix`.
fn warning<'a>(stderr: &'a str, prefix: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?}:\n{stderr}"))
}

/// The metrics of the step `instruction`.
fn step<'a>(metrics: &'a Value, instruction: &str) -> &'a Value {
    metrics["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["instruction"] == instruction)
        .unwrap_or_else(|| panic!("no step {instruction}: {metrics}"))
}

/// A document of the registry, parsed.
fn registry_json(api: &Api, path: &str) -> Value {
    let response = api
        .request(reqwest::Method::GET, path)
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "GET {path}: {}",
        response.status()
    );
    serde_json::from_slice(&response.bytes().unwrap()).unwrap()
}

/// The layers (media type, digest) of a manifest.
fn layers_of(manifest: &Value) -> Vec<(String, String)> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap().to_owned(),
                l["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn cache_compression_applies_to_the_layers_the_image_does_not_share() {
    let Some(local) = Local::setup() else {
        return;
    };
    let api = Api::new(&local.registry);
    let registry = local.registry.host();
    let media = |name: &str| format!("application/vnd.oci.image.layer.v1.tar+{name}");
    // The image's layers one way, the cache's own the other; in a registry and in a directory.
    for (image_compression, cache_compression, destination) in
        [("gzip", "zstd", "registry"), ("zstd", "gzip", "local")]
    {
        let image = format!("{registry}/app/{image_compression}:1");
        let dir = local.dirs.path().join(image_compression);
        let cache_to = match destination {
            "registry" => format!("type=registry,ref={registry}/app/cache:{image_compression}"),
            _ => format!("type=local,dest={}", dir.display()),
        };
        let cache_to = format!("{cache_to},mode=max,compression={cache_compression}");
        let writer = tempfile::tempdir().unwrap();
        let flags = [&REPRODUCIBLE[..], &["--compression", image_compression]].concat();
        let (built, stderr) = local.build(
            writer.path(),
            &[&flags[..], &["--push", "-t", &image, "--cache-to", &cache_to]].concat(),
        );
        let pushed = registry_json(&api, &format!("/v2/app/{image_compression}/manifests/1"));
        let cache_manifest = match destination {
            "registry" => registry_json(&api, &format!("/v2/app/cache/manifests/{image_compression}")),
            _ => {
                let index: Value =
                    serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
                let digest = index["manifests"][0]["digest"].as_str().unwrap();
                let path = dir
                    .join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:"));
                serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
            }
        };
        let image_layers = layers_of(&pushed);
        let (shared, own): (Vec<_>, Vec<_>) = layers_of(&cache_manifest)
            .into_iter()
            .partition(|(_, digest)| image_layers.iter().any(|(_, d)| d == digest));
        assert!(
            !shared.is_empty() && !own.is_empty(),
            "{cache_manifest}\n{stderr}"
        );
        for (media_type, digest) in &shared {
            assert_eq!(
                media_type,
                &media(image_compression),
                "{digest}: the image's own blob"
            );
        }
        for (media_type, digest) in &own {
            assert_eq!(
                media_type,
                &media(cache_compression),
                "{digest}: compressed as asked"
            );
        }

        // A fresh runner builds a change from the cache, unpacking a recompressed layer (the
        // tool stage's, under COPY --from=tool): the image the writer's own store gives.
        let changed = context("v2");
        let cache_from = match destination {
            "registry" => format!("{registry}/app/cache:{image_compression}"),
            _ => format!("type=local,src={}", dir.display()),
        };
        let fresh = tempfile::tempdir().unwrap();
        let (from_cache, stderr) = build(
            fresh.path(),
            changed.path(),
            &local.base,
            &[&flags[..], &["--cache-from", &cache_from]].concat(),
        );
        assert!(!stderr.contains("warning"), "{stderr}");
        let (from_store, _) = build(writer.path(), changed.path(), &local.base, &flags);
        assert_eq!(from_cache["image"], from_store["image"], "{stderr}");
        assert_ne!(from_cache["image"], built["image"]);
        let tool = step(&from_cache, "COPY --from=tool /tool /opt/tool");
        assert!(tool["bytes_fetched"].as_u64() > Some(0), "{from_cache}");
    }
}

/// How many times each blob was uploaded to `registry` (completed uploads in its access log).
fn uploads(registry: &RegistryProcess) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for line in registry.log().lines() {
        let completed = (line.contains("method=PUT") || line.contains("method=POST"))
            && line.contains("/blobs/uploads/")
            && line.contains(" status=201 ");
        if let Some(digest) = line
            .split("digest=")
            .nth(1)
            .filter(|_| completed)
            .and_then(|rest| rest.split([' ', '&']).next())
        {
            *counts.entry(digest.replace("%3A", ":")).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn an_image_and_its_cache_pushed_at_once_upload_each_blob_once() {
    let Some(local) = Local::setup() else {
        return;
    };
    let registry = local.registry.host();
    let cache = format!("{registry}/app/cache:main");
    let store = tempfile::tempdir().unwrap();
    let (built, stderr) = local.build(
        store.path(),
        &[
            "--push",
            "-t",
            &format!("{registry}/app/one:1"),
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
        ],
    );
    assert!(stderr.contains("cache written to"), "{stderr}");
    let counts = uploads(&local.registry);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "uploaded more than once: {twice:?}\n{}",
        local.registry.log()
    );
    // Every layer of the image and the cache is in the registry, each sent once.
    let api = Api::new(&local.registry);
    let layers: BTreeSet<String> = layers_of(&registry_json(&api, "/v2/app/cache/manifests/main"))
        .into_iter()
        .chain(layers_of(&registry_json(&api, "/v2/app/one/manifests/1")))
        .map(|(_, digest)| digest)
        .collect();
    for layer in &layers {
        assert_eq!(counts.get(layer), Some(&1), "{layer}: uploaded once\n{built}");
    }
}

#[test]
fn a_failed_cache_export_with_ignore_error_warns_and_the_build_succeeds() {
    let Some(local) = Local::setup() else {
        return;
    };
    // A registry that is not there (nothing listens on a port just freed).
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let cache_to = format!("type=registry,ref={gone}/app/cache:main,mode=max");
    let image = format!("{}/app/one:1", local.registry.host());
    let store = tempfile::tempdir().unwrap();
    let (built, stderr) = local.build(
        store.path(),
        &[
            "--push",
            "-t",
            &image,
            "--cache-to",
            &format!("{cache_to},ignore-error=true"),
        ],
    );
    assert!(built["image"].is_string());
    let warned = warning(&stderr, "warning: cache export to");
    assert!(warned.contains(&gone.to_string()), "{warned}");
    assert!(stderr.contains(&format!("pushed {image}")), "{stderr}");
    // Without it, the build fails naming the cache.
    let out = rbuild(store.path())
        .args(["build", "--progress", "plain", "--build-arg"])
        .arg(format!("BASE={}", local.base))
        .args(["--cache-to", &cache_to])
        .arg(local.ctx.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("exporting the cache to"), "{stderr}");
}

/// A cache in `local`'s registry whose layer of `COPY --from=deps` was deleted from the
/// cache's repository after the cache was written; the reproducible flags it was built with,
/// the cache's reference, the build that wrote it (its metrics) and the lost layer.
fn cache_that_lost_a_layer(local: &Local) -> (Vec<&'static str>, String, Value, String) {
    let registry = local.registry.host();
    let cache = format!("{registry}/app/cache:main");
    let flags = [&REPRODUCIBLE[..], &["--compression", "gzip"]].concat();
    let writer = tempfile::tempdir().unwrap();
    let (built, _) = local.build(
        writer.path(),
        &[
            &flags[..],
            &["--push", "-t", &format!("{registry}/app/one:1")],
            &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
        ]
        .concat(),
    );
    let copy = step(&built, "COPY --from=deps /deps /deps");
    let lost = copy["layer"].as_str().unwrap().to_owned();
    let api = Api::new(&local.registry);
    let deleted = api.delete(&format!("/v2/app/cache/blobs/{lost}"));
    assert!(deleted.status().is_success(), "DELETE: {}", deleted.status());
    (flags, cache, built, lost)
}

/// The build warned that `cache` lost `layer`, and built the step `instruction` whose layer it
/// was.
fn assert_lost_and_built(stderr: &str, metrics: &Value, cache: &str, layer: &str, instruction: &str) {
    let warned = warning(stderr, "warning: cache");
    assert!(warned.contains(cache) && warned.contains(layer), "{stderr}");
    let built = step(metrics, instruction);
    assert_eq!(built["cache"], "miss", "the step is built\n{stderr}");
}

/// Every layer of `repository:tag` is in that repository of `registry`.
fn assert_pushed_whole(registry: &RegistryProcess, repository: &str, tag: &str, stderr: &str) {
    let api = Api::new(registry);
    let pushed = registry_json(&api, &format!("/v2/{repository}/manifests/{tag}"));
    for (_, digest) in layers_of(&pushed) {
        let head = api.head(&format!("/v2/{repository}/blobs/{digest}"));
        assert!(
            head.status().is_success(),
            "{digest} missing from {repository}\n{stderr}"
        );
    }
}

/// A build kept in the store must fetch the lost layer: it warns and builds the step.
#[test]
fn a_registry_cache_that_lost_a_layer_warns_and_builds_the_step() {
    let Some(local) = Local::setup() else {
        return;
    };
    let (flags, cache, built, lost) = cache_that_lost_a_layer(&local);
    let fresh = tempfile::tempdir().unwrap();
    let (rebuilt, stderr) = local.build(fresh.path(), &[&flags[..], &["--cache-from", &cache]].concat());
    assert_eq!(rebuilt["image"], built["image"], "a correct build\n{stderr}");
    assert_lost_and_built(&stderr, &rebuilt, &cache, &lost, "COPY --from=deps /deps /deps");
}

/// A build only pushed, to another repository of the cache's registry, would mount the lost
/// layer from the cache's repository, which no longer has it: the push finds it gone, and the
/// build is made again with every layer fetched — the lost one warned about, its step built —
/// and pushed.
#[test]
fn a_push_that_finds_a_cache_layer_gone_builds_the_step_and_pushes() {
    let Some(local) = Local::setup() else {
        return;
    };
    let (flags, cache, built, lost) = cache_that_lost_a_layer(&local);
    let two = format!("{}/app/two:1", local.registry.host());
    let fresh = tempfile::tempdir().unwrap();
    let (rebuilt, stderr) = local.build(
        fresh.path(),
        &[&flags[..], &["--cache-from", &cache, "--push", "-t", &two]].concat(),
    );
    assert_eq!(rebuilt["image"], built["image"], "a correct build\n{stderr}");
    assert_lost_and_built(&stderr, &rebuilt, &cache, &lost, "COPY --from=deps /deps /deps");
    assert_pushed_whole(&local.registry, "app/two", "1", &stderr);
}

/// A layer deleted from the cache's repository while the build runs — after the build read
/// the cache, before its push mounts the layer from there (a collection, another runner
/// pruning) — is found missing by the push: the build is made again with every layer fetched,
/// the lost layer warned about and its step built, and the image pushed complete. A stage of
/// the build itself deletes the layer, so the moment is certain: a DELETE through `nc` from a
/// RUN on the host's network (its input held open a second: the server answers no request
/// whose client has already shut its side), the digest from a secret and the stage rebuilt
/// with `--no-cache-filter`, so that the steps reading it keep their keys and hit the cache
/// without needing any layer's files.
#[test]
fn a_cache_layer_deleted_during_the_build_is_built_again_and_pushed() {
    let Some(local) = Local::setup() else {
        return;
    };
    let registry = local.registry.host();
    let port = registry.rsplit(':').next().unwrap().to_owned();
    let ctx = tempfile::tempdir().unwrap();
    dockerfile(
        ctx.path(),
        &format!(
            "ARG BASE\n\
             FROM ${{BASE}} AS deleter\n\
             RUN --mount=type=secret,id=lost \
             (printf 'DELETE /v2/app/cache/blobs/%s HTTP/1.1\\r\\nHost: {registry}\\r\\nConnection: close\\r\\n\\r\\n' \
             \"$(cat /run/secrets/lost)\"; sleep 1) | nc -w 5 127.0.0.1 {port} > /dev/null; echo deleted > /deleted\n\
             FROM ${{BASE}}\n\
             COPY --from=deleter /deleted /deleted\n\
             COPY app.txt /app.txt\n"
        ),
    );
    std::fs::write(ctx.path().join("app.txt"), "app").unwrap();
    let secret = |digest: &str| {
        let path = ctx.path().join(".lost");
        std::fs::write(&path, digest).unwrap();
        format!("id=lost,src={}", path.display())
    };
    let cache = format!("{registry}/app/cache:main");
    let flags = [&REPRODUCIBLE[..], &["--network", "host"]].concat();
    let writer = tempfile::tempdir().unwrap();
    let none = secret("none");
    let (built, _) = build(
        writer.path(),
        ctx.path(),
        &local.base,
        &[
            &flags[..],
            &[
                "--secret",
                &none,
                "--push",
                "-t",
                &format!("{registry}/app/one:1"),
            ],
            &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
        ]
        .concat(),
    );
    let lost = step(&built, "COPY app.txt /app.txt")["layer"]
        .as_str()
        .unwrap()
        .to_owned();

    let two = format!("{registry}/app/two:1");
    let lost_secret = secret(&lost);
    let fresh = tempfile::tempdir().unwrap();
    let (rebuilt, stderr) = build(
        fresh.path(),
        ctx.path(),
        &local.base,
        &[
            &flags[..],
            &["--secret", &lost_secret, "--no-cache-filter", "deleter"],
            &["--cache-from", &cache, "--push", "-t", &two],
        ]
        .concat(),
    );
    let again = warning(&stderr, "warning: pushing");
    assert!(
        again.contains(&lost) && again.contains("building again with every layer fetched"),
        "{stderr}"
    );
    assert_lost_and_built(&stderr, &rebuilt, &cache, &lost, "COPY app.txt /app.txt");
    assert_pushed_whole(&local.registry, "app/two", "1", &stderr);
}
