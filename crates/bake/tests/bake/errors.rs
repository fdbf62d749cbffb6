//! Bad input gives an error naming the file and the target, group or key.

use rbuild_bake::BakeError;

use crate::{fixture, load};

fn error(case: &str, targets: &[&str]) -> (BakeError, String) {
    let err = load(&fixture(case), &[], targets, &[], &[]).unwrap_err();
    let message = format!("{err}");
    (err, message)
}

/// The error and its causes, one line, as the CLI prints them.
fn chain(err: &BakeError) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}

#[test]
fn cycles_are_errors_naming_the_ring() {
    let file = fixture("groups").join("docker-bake.hcl");
    let file = file.display();
    let (_, m) = error("groups", &["loop-a"]);
    assert_eq!(m, format!("group cycle in {file}: loop-a -> loop-b -> loop-a"));
    let (_, m) = error("groups", &["parent-a"]);
    assert_eq!(
        m,
        format!("inherits cycle in {file}: parent-a -> parent-b -> parent-a")
    );
    let (_, m) = error("groups", &["ring-a"]);
    assert_eq!(m, format!("context cycle in {file}: ring-a -> ring-b -> ring-a"));
}

#[test]
fn unknown_names_are_errors() {
    let file = fixture("groups").join("docker-bake.hcl");
    let (_, m) = error("groups", &["orphan"]);
    assert_eq!(
        m,
        format!(
            "target \"orphan\" inherits from unknown target \"missing\" in {}",
            file.display()
        )
    );
    let (_, m) = error("groups", &["dangling"]);
    assert!(
        m.starts_with("no target or group \"nowhere\" in ") && m.ends_with("docker-bake.hcl"),
        "{m}"
    );
    let (_, m) = error("groups", &["nope"]);
    assert!(m.starts_with("no target or group \"nope\""), "{m}");
}

#[test]
fn functions_are_refused_by_name() {
    let (err, m) = error("function", &[]);
    assert!(matches!(err, BakeError::UnsupportedFunction { .. }), "{m}");
    assert!(m.ends_with("docker-bake.hcl: target \"app\" tags: function \"upper\" is not supported (rbuild bake has no functions yet)"), "{m}");
}

#[test]
fn typed_variables_are_refused_naming_the_block() {
    let (_, m) = error("typed-variable", &[]);
    assert!(
        m.ends_with("docker-bake.hcl: variable \"DEBUG\": \"type\" is not supported by rbuild bake yet"),
        "{m}"
    );
}

#[test]
fn malformed_files_name_the_file_and_position() {
    for (case, kind) in [("bad-yaml", "YAML"), ("bad-json", "JSON"), ("bad-hcl", "HCL")] {
        let (err, m) = error(case, &[]);
        assert!(m.ends_with(&format!(": malformed {kind}")), "{m}");
        assert!(m.contains(case), "{m}");
        let full = chain(&err);
        assert!(full.contains("line"), "{case}: no position in {full}");
    }
}

#[test]
fn compose_refusals_name_the_service_and_key() {
    let (_, m) = error("external-secret", &[]);
    assert!(m.ends_with("compose.yaml: services.app.build.secrets: secret \"vault\" must be a file or environment secret (external secrets cannot be read)"), "{m}");
    let (_, m) = error("unsupported", &[]);
    assert!(m.ends_with("compose.yaml: services.app.build.extra_hosts: \"extra_hosts\" is not supported by rbuild bake yet"), "{m}");
    let (_, m) = error("required", &[]);
    assert!(m.ends_with("compose.yaml: services.app.build.args: required variable TOKEN is missing a value: set TOKEN to build"), "{m}");
    let ok = load(&fixture("required"), &[], &[], &[], &[("TOKEN", "t")]).unwrap();
    assert_eq!(ok.targets[0].args["TOKEN"], "t");
}

#[test]
fn no_file_is_an_error() {
    let (_, m) = error("compose/tools", &[]);
    assert!(
        m.starts_with("no bake file in ") && m.contains("compose.yaml"),
        "{m}"
    );
}
