//! `rbuild check` on every fixture of `fixtures/dockerfiles/` prints what the fixture's
//! `check.txt` documents and exits with the status it records.

use std::path::Path;

use spec_tests::tools::output;

use crate::support::rbuild;

#[test]
fn rbuild_check_gives_the_documented_result_for_every_fixture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/dockerfiles");
    let store = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut dirs: Vec<_> = walk_dirs(&root);
    dirs.sort();
    for dir in dirs {
        let expected = dir.join("check.txt");
        // Fixtures whose inputs the CLI takes differently (resolver data, named contexts, a
        // platform, an ignore file under another name) are covered by the library's test.
        let special = ["images.json", "contexts", "platform", "dockerignore"];
        if !expected.is_file() || special.iter().any(|f| dir.join(f).exists()) {
            continue;
        }
        let mut command = rbuild(store.path());
        command.current_dir(&dir).args(["check", "-f", "Dockerfile"]);
        if let Ok(args) = std::fs::read(dir.join("args.json")) {
            let args: std::collections::BTreeMap<String, String> = serde_json::from_slice(&args).unwrap();
            for (k, v) in args {
                command.arg("--build-arg").arg(format!("{k}={v}"));
            }
        }
        if let Ok(target) = std::fs::read_to_string(dir.join("target")) {
            command.args(["--target", target.trim()]);
        }
        let out = output(command.arg("."));
        let got = format!(
            "{}exit status: {}\n",
            String::from_utf8_lossy(&out.stdout),
            out.status.code().unwrap_or(-1)
        );
        let want = std::fs::read_to_string(&expected).unwrap();
        if got != want {
            failures.push(format!("{}:\n--- expected\n{want}--- got\n{got}", dir.display()));
        }
        checked += 1;
    }
    assert!(checked > 50, "only {checked} fixtures checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn walk_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.join("Dockerfile").is_file() {
                out.push(path.clone());
            }
            out.extend(walk_dirs(&path));
        }
    }
    out
}
