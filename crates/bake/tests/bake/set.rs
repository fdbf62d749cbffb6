//! `--set pattern.key=value`: overrides by glob over target names, `+=` to append.

use rbuild_bake::NamedSource;

use crate::{fixture, load, target};

#[test]
fn set_overrides_matching_targets() {
    let dir = fixture("json");
    let set = [
        "*.args.BASE=127.0.0.1:5000/base/busybox:1",
        "app.tags=reg.test/app:1",
        "app.tags=reg.test/app:latest",
        "t*.tags+=reg.test/tools:extra",
        "w?rker.platform=linux/amd64,linux/arm64",
        "worker.no-cache=true",
        "tools.contexts.busybox=../compose",
        "[aw]*.cache-to=type=local,dest=/tmp/cache",
    ];
    let bake = load(&dir, &["docker-bake.json"], &[], &set, &[]).unwrap();
    for t in &bake.targets {
        assert_eq!(t.args["BASE"], "127.0.0.1:5000/base/busybox:1", "{}", t.name);
    }
    let app = target(&bake, "app");
    // The first `=` of a list replaces the file's list, a repeated one adds to it.
    assert_eq!(app.tags, ["reg.test/app:1", "reg.test/app:latest"]);
    assert_eq!(app.cache_to, ["type=local,dest=/tmp/cache"]);
    let tools = target(&bake, "tools");
    assert_eq!(
        tools.tags,
        ["127.0.0.1:5000/demo/tools:dev", "reg.test/tools:extra"]
    );
    assert_eq!(
        tools.contexts["busybox"],
        NamedSource::Dir(fixture("json").join("../compose"))
    );
    assert!(tools.cache_to.is_empty());
    let worker = target(&bake, "worker");
    assert_eq!(worker.platforms, ["linux/amd64", "linux/arm64"]);
    assert!(worker.no_cache);
    assert!(!app.no_cache);
}

#[test]
fn set_on_a_parent_reaches_the_targets_inheriting_from_it() {
    let dir = fixture("json");
    let set = ["_common.args.LEVEL=release", "_debug.target=debug"];
    let bake = load(&dir, &["docker-bake.json"], &[], &set, &[]).unwrap();
    assert_eq!(target(&bake, "app").args["LEVEL"], "release");
    assert_eq!(target(&bake, "tools").args["LEVEL"], "release");
    // worker's later parent _debug sets LEVEL itself; its own target wins over _debug's.
    assert_eq!(target(&bake, "worker").args["LEVEL"], "debug");
    assert_eq!(target(&bake, "worker").target.as_deref(), Some("worker"));
}

#[test]
fn set_can_add_a_dependency() {
    let dir = fixture("json");
    let bake = load(
        &dir,
        &["docker-bake.json"],
        &["worker"],
        &["worker.contexts.tools=target:tools"],
        &[],
    )
    .unwrap();
    let order: Vec<_> = bake.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(order, ["app", "tools", "worker"]);
}

#[test]
fn bad_set_values_are_errors() {
    let dir = fixture("json");
    for (flag, want) in [
        (
            "nomatch.tags=x",
            "--set nomatch.tags=x: no target matches \"nomatch\"",
        ),
        ("app.tags", "--set app.tags: expected pattern.key=value"),
        (
            "app.tags=[a,b]",
            "--set app.tags=[a,b]: list values are not accepted: repeat the flag",
        ),
        (
            "app.colour=red",
            "--set app.colour=red: unknown or unsupported key",
        ),
        ("app.pull=maybe", "--set app.pull=maybe: expected true or false"),
        ("[app.tags=x", "--set [app.tags=x: malformed pattern"),
    ] {
        let err = load(&dir, &["docker-bake.json"], &[], &[flag], &[]).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
}

#[test]
fn set_args_without_a_value_reads_the_environment() {
    let dir = fixture("json");
    let env = [("GREETING", "from the environment")];
    let bake = load(
        &dir,
        &["docker-bake.json"],
        &["app"],
        &["app.args.GREETING", "app.args.UNSET"],
        &env,
    )
    .unwrap();
    let app = target(&bake, "app");
    assert_eq!(app.args["GREETING"], "from the environment");
    assert!(!app.args.contains_key("UNSET"));
}
