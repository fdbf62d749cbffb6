//! docker-bake.json and docker-bake.hcl: variables, inherits, groups; override files.

use rbuild_bake::{Bake, NamedSource, SecretSource};

use crate::{fixture, load, map, names, target};

/// What both the JSON and the HCL fixture resolve to, from `dir`.
fn check_demo(bake: &Bake, dir: &std::path::Path) {
    // Group default nests group backend; both listed as declared, as buildx prints them.
    // tools reads app, which is already before it.
    assert_eq!(bake.groups["default"], ["app", "backend"]);
    assert_eq!(bake.groups["backend"], ["tools", "worker"]);
    assert_eq!(names(bake), ["app", "tools", "worker"]);

    let app = target(bake, "app");
    assert_eq!(app.context, dir);
    assert_eq!(app.target.as_deref(), Some("app"));
    // Inherited args merged with the target's own; a variable made from another variable.
    assert_eq!(
        app.args,
        map(&[
            ("BASE", "busybox:latest"),
            ("GREETING", "hi"),
            ("LEVEL", "common")
        ])
    );
    assert_eq!(app.labels, map(&[("org.example.team", "build")]));
    assert_eq!(app.tags, ["127.0.0.1:5000/demo/app:dev"]);
    assert_eq!(
        app.cache_from,
        ["type=registry,ref=127.0.0.1:5000/demo/cache:main"]
    );
    assert_eq!(
        app.cache_to,
        ["type=registry,mode=max,ref=127.0.0.1:5000/demo/cache:app"]
    );

    // Two parents: the later (_debug) wins over the earlier, the target's own attributes last.
    let worker = target(bake, "worker");
    assert_eq!(worker.args["LEVEL"], "debug");
    assert_eq!(worker.target.as_deref(), Some("worker"));
    assert_eq!(
        worker.secrets[0].source,
        SecretSource::File(dir.join("token.txt"))
    );

    let tools = target(bake, "tools");
    assert_eq!(tools.context, dir.join("tools"));
    assert_eq!(tools.contexts["app"], NamedSource::Target("app".into()));
    assert_eq!(
        tools.contexts["busybox"],
        NamedSource::Image("busybox:latest".into())
    );
}

#[test]
fn bake_json_variables_inherits_groups() {
    let dir = fixture("json");
    let bake = load(&dir, &["docker-bake.json"], &[], &[], &[]).unwrap();
    check_demo(&bake, &dir);
}

#[test]
fn bake_hcl_reads_the_same_as_json() {
    let dir = fixture("hcl");
    let bake = load(&dir, &[], &[], &[], &[]).unwrap();
    check_demo(&bake, &dir);
    let json = load(&fixture("json"), &["docker-bake.json"], &[], &[], &[]).unwrap();
    let relocated = json
        .to_json()
        .to_string()
        .replace(&fixture("json").display().to_string(), &dir.display().to_string());
    assert_eq!(bake.to_json().to_string(), relocated);
}

#[test]
fn environment_overrides_variable_defaults() {
    for case in ["json", "hcl"] {
        let dir = fixture(case);
        let env = [("TAG", "1.0"), ("REGISTRY", "reg.test")];
        let file = format!("docker-bake.{case}");
        let bake = load(&dir, &[&file], &[], &[], &env).unwrap();
        assert_eq!(
            target(&bake, "worker").tags,
            ["reg.test/demo/worker:1.0"],
            "{case}"
        );
        let off = [("TAG", "1.0"), ("BUILDX_BAKE_DISABLE_VARS_ENV_LOOKUP", "1")];
        let bake = load(&dir, &[], &["worker"], &[], &off).unwrap();
        assert_eq!(
            target(&bake, "worker").tags,
            ["127.0.0.1:5000/demo/worker:dev"],
            "{case}"
        );
    }
}

#[test]
fn override_file_is_merged_after_the_bake_file() {
    let dir = fixture("json");
    let bake = load(&dir, &[], &["app"], &[], &[]).unwrap();
    let app = target(&bake, "app");
    // Scalars and lists of the override replace; maps merge by key; cache-from appends.
    assert_eq!(app.tags, ["127.0.0.1:5000/demo/app:override"]);
    assert_eq!(app.args["GREETING"], "hello from the override");
    assert_eq!(app.args["LEVEL"], "common");
    assert_eq!(
        app.cache_from,
        [
            "type=registry,ref=127.0.0.1:5000/demo/cache:main",
            "type=registry,ref=127.0.0.1:5000/demo/cache:app"
        ]
    );
}

#[test]
fn a_group_beats_a_same_named_target_and_groups_nest() {
    let dir = fixture("groups");
    let bake = load(&dir, &[], &[], &[], &[]).unwrap();
    assert_eq!(names(&bake), ["frontend", "backend"]);
    assert_eq!(bake.groups["default"], ["web"]);
    assert_eq!(bake.groups["web"], ["frontend", "backend"]);
    // Names asked for are listed, sorted, in group default (buildx's --print).
    let bake = load(&dir, &[], &["web", "extra"], &[], &[]).unwrap();
    assert_eq!(names(&bake), ["frontend", "backend", "extra"]);
    assert_eq!(bake.groups["default"], ["extra", "web"]);
    assert_eq!(bake.groups["web"], ["frontend", "backend"]);
}

#[test]
fn json_strings_are_templates_with_their_escapes_decoded_once() {
    let dir = fixture("templates");
    let bake = load(&dir, &[], &[], &[], &[("N", "41")]).unwrap();
    let args = &target(&bake, "default").args;
    assert_eq!(args["QUOTED"], "say \"v\" \\ back");
    assert_eq!(args["ESCAPED"], "${X}");
    assert_eq!(args["DIRECTIVE"], "yes");
    // N's default is a number, so the environment's "41" is one too.
    assert_eq!(args["SUM"], "42");
    assert_eq!(args["PLAIN"], "no template \\ here");
}
