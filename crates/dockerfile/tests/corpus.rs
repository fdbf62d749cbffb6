//! Walks `fixtures/dockerfiles/`: each directory with a `Dockerfile` is a
//! case. Inputs: `args.json` (build args), `target`, `platform` (target
//! platform), `contexts` (named
//! build contexts, one per line), `images.json` (base image facts for the
//! resolver), `dockerignore`. Expected outputs:
//! `plan.json` or `error.txt`, and `check.txt`. `UPDATE_EXPECT=1`
//! rewrites the expected files (review every change: they are the spec).
//! Cases under `real-world/` must plan without errors.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use rbuild_dockerfile::dockerignore::Matcher;
use rbuild_dockerfile::{BaseImageInfo, CheckOptions, ImageResolver, PlanOptions, check, parse, plan};

#[derive(serde::Deserialize, Default)]
struct ImageFacts {
    #[serde(default)]
    env: Vec<(String, String)>,
    #[serde(default)]
    onbuild: Vec<String>,
    #[serde(default)]
    working_dir: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    shell: Vec<String>,
}

struct FixtureResolver(BTreeMap<String, ImageFacts>);

impl ImageResolver for FixtureResolver {
    fn image_config(&self, reference: &str, _platform: &str) -> Option<BaseImageInfo> {
        self.0.get(reference).map(|f| BaseImageInfo {
            env: f.env.clone(),
            onbuild: f.onbuild.clone(),
            working_dir: f.working_dir.clone(),
            user: f.user.clone(),
            shell: f.shell.clone(),
        })
    }
}

fn cases(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.join("Dockerfile").is_file() {
                out.push(path.clone());
            }
            cases(&path, out);
        }
    }
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// Compares (or, with UPDATE_EXPECT, writes) one expected file.
fn expect(path: &Path, actual: Option<&str>, failures: &mut Vec<String>) {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let expected = read(path);
    match (actual, update) {
        (Some(a), true) => {
            if expected.as_deref() != Some(a) {
                fs::write(path, a).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
        (None, true) => {
            let _ = fs::remove_file(path);
        }
        (a, false) => {
            if expected.as_deref() != a {
                failures.push(format!(
                    "{}:\n--- expected\n{}\n--- actual\n{}",
                    path.display(),
                    expected.unwrap_or_else(|| "(no file)".into()),
                    a.unwrap_or("(no output)")
                ));
            }
        }
    }
}

fn run_case(dir: &Path, failures: &mut Vec<String>) {
    let text = read(&dir.join("Dockerfile")).unwrap_or_default();
    let mut options = PlanOptions::default();
    if let Some(args) = read(&dir.join("args.json")) {
        options.build_args =
            serde_json::from_str(&args).unwrap_or_else(|e| panic!("{}: args.json: {e}", dir.display()));
    }
    options.target = read(&dir.join("target")).map(|t| t.trim().to_string());
    if let Some(platform) = read(&dir.join("platform")) {
        options.target_platform = platform.trim().to_string();
    }
    if let Some(names) = read(&dir.join("contexts")) {
        options.named_contexts = names.lines().map(str::to_string).collect();
    }
    let images: BTreeMap<String, ImageFacts> = read(&dir.join("images.json"))
        .map(|t| serde_json::from_str(&t).unwrap_or_else(|e| panic!("{}: images.json: {e}", dir.display())))
        .unwrap_or_default();
    if let Some(ignore) = read(&dir.join("dockerignore")) {
        options.dockerignore =
            Some(Matcher::from_dockerignore(&ignore).unwrap_or_else(|e| panic!("{}: {e}", dir.display())));
    }
    let resolver = FixtureResolver(images);
    let result = parse(&text)
        .map_err(|e| e.to_string())
        .and_then(|df| plan(&df, &options, &resolver).map_err(|e| e.to_string()));
    let real_world = dir.components().any(|c| c.as_os_str() == "real-world");
    match &result {
        Ok(p) => {
            let json = serde_json::to_string_pretty(p).unwrap_or_default() + "\n";
            if !real_world {
                expect(&dir.join("plan.json"), Some(&json), failures);
            }
            expect(&dir.join("error.txt"), None, failures);
        }
        Err(e) => {
            if real_world {
                failures.push(format!("{}: real-world Dockerfile failed: {e}", dir.display()));
            }
            expect(&dir.join("plan.json"), None, failures);
            expect(&dir.join("error.txt"), Some(&format!("{e}\n")), failures);
        }
    }
    let check_options = CheckOptions {
        file_name: "Dockerfile".to_string(),
        plan: PlanOptions {
            target: options.target.clone(),
            target_platform: options.target_platform.clone(),
            build_args: options.build_args.clone(),
            named_contexts: options.named_contexts.clone(),
            dockerignore: options.dockerignore.clone(),
            ..PlanOptions::default()
        },
    };
    let report = check(&text, &check_options);
    let rendered = format!("{}exit status: {}\n", report.render(&text), report.exit_code());
    expect(&dir.join("check.txt"), Some(&rendered), failures);
}

#[test]
fn fixture_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/dockerfiles");
    let mut dirs = Vec::new();
    cases(&root, &mut dirs);
    assert!(dirs.len() > 50, "expected a corpus under {}", root.display());
    let mut failures = Vec::new();
    for dir in &dirs {
        run_case(dir, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
