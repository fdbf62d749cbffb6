//! compose.yaml: services with `build:` become targets, as buildx maps them.

use rbuild_bake::{NamedSource, Secret, SecretSource};

use crate::{fixture, load, map, names, target};

#[test]
fn three_services_become_targets_in_dependency_order() {
    let dir = fixture("compose");
    let bake = load(&dir, &[], &[], &[], &[("GREETING", "hey")]).unwrap();
    // tools is declared first but reads app through `service:app`, so app comes first; db has
    // no build section and is no target.
    assert_eq!(names(&bake), ["app", "tools", "worker"]);
    assert_eq!(bake.groups["default"], ["tools", "app", "worker"]);

    let app = target(&bake, "app");
    assert_eq!(app.context, dir);
    assert_eq!(app.dockerfile, dir.join("Dockerfile"));
    assert_eq!(app.target.as_deref(), Some("app"));
    // `GREETING:` with no value is read from the environment.
    assert_eq!(app.args, map(&[("BASE", "busybox:latest"), ("GREETING", "hey")]));
    assert_eq!(app.labels, map(&[("org.example.role", "app")]));
    // `image` is the tag when there are no tags; a plain cache_from is a registry cache.
    assert_eq!(app.tags, ["127.0.0.1:5000/app:dev"]);
    assert_eq!(app.cache_from, ["type=registry,ref=127.0.0.1:5000/cache:app"]);
    assert_eq!(
        app.cache_to,
        ["type=registry,ref=127.0.0.1:5000/cache:app,mode=max"]
    );

    let tools = target(&bake, "tools");
    assert_eq!(tools.context, dir.join("tools"));
    assert_eq!(tools.dockerfile, dir.join("tools/Dockerfile"));
    assert_eq!(tools.contexts["app"], NamedSource::Target("app".into()));
    assert!(tools.no_cache);
    assert_eq!(tools.tags, ["127.0.0.1:5000/tools:dev"]);

    let worker = target(&bake, "worker");
    assert_eq!(worker.target.as_deref(), Some("worker"));
    assert_eq!(
        worker.secrets,
        [Secret {
            id: "token".into(),
            source: SecretSource::File(dir.join("token.txt"))
        }]
    );
}

#[test]
fn interpolation_reads_the_environment() {
    let dir = fixture("compose");
    let env = [
        ("REGISTRY", "reg.test:5000"),
        ("TAG", "1.2"),
        ("BASE", "127.0.0.1:5000/base/busybox:1"),
    ];
    let bake = load(&dir, &[], &[], &[], &env).unwrap();
    let app = target(&bake, "app");
    assert_eq!(app.tags, ["reg.test:5000/app:1.2"]);
    assert_eq!(app.args["BASE"], "127.0.0.1:5000/base/busybox:1");
    // `GREETING:` unset in the environment: left to the Dockerfile's default.
    assert!(!app.args.contains_key("GREETING"));
    assert_eq!(target(&bake, "tools").tags, ["reg.test:5000/tools:1.2"]);
}

#[test]
fn naming_one_service_brings_the_services_it_reads() {
    let dir = fixture("compose");
    let bake = load(&dir, &[], &["tools"], &[], &[]).unwrap();
    assert_eq!(names(&bake), ["app", "tools"]);
    assert_eq!(bake.groups["default"], ["tools"]);
    // app is only read by tools: built, not exported (buildx's linked target).
    assert_eq!(target(&bake, "app").outputs, ["type=cacheonly"]);
    assert!(target(&bake, "tools").outputs.is_empty());
}

#[test]
fn print_json_has_buildx_shape() {
    let dir = fixture("compose");
    let json = load(&dir, &[], &["app"], &[], &[]).unwrap().to_json();
    assert_eq!(json["group"]["default"]["targets"], serde_json::json!(["app"]));
    let app = &json["target"]["app"];
    assert_eq!(app["context"], dir.display().to_string());
    assert_eq!(app["cache-from"][0], "type=registry,ref=127.0.0.1:5000/cache:app");
    assert_eq!(app["args"]["BASE"], "busybox:latest");
    assert!(
        app.get("no-cache").is_none(),
        "false attributes are left out: {app}"
    );
}

#[test]
fn dotenv_and_service_environment_feed_interpolation_and_args() {
    let dir = fixture("dotenv");
    let bake = load(
        &dir,
        &[],
        &[],
        &[],
        &[("TAG", "from-process"), ("LEVEL", "from-process")],
    )
    .unwrap();
    let app = target(&bake, "app");
    // The process environment beats .env; .env fills in the rest.
    assert_eq!(app.tags, ["reg.test:5000/app:from-process"]);
    // A bare arg reads the service's environment before rbuild's.
    assert_eq!(
        app.args,
        map(&[
            ("GREETING", "quoted # not a comment"),
            ("LEVEL", "from-service"),
            ("PLAIN", "value")
        ])
    );
    // The secret's id is its source's name, as buildx gives it.
    assert_eq!(
        app.secrets,
        [Secret {
            id: "token".into(),
            source: SecretSource::Env("API_TOKEN".into())
        }]
    );
}

#[test]
fn x_bake_adds_to_the_build_as_buildx_does() {
    let dir = fixture("x-bake");
    let bake = load(&dir, &[], &[], &[], &[]).unwrap();
    let app = target(&bake, "app");
    // Lists are added to (a string split at spaces); image is no tag, tags being given.
    assert_eq!(app.tags, ["reg.test/app:latest", "reg.test/app:2"]);
    assert_eq!(app.cache_from, ["type=registry,ref=reg.test/cache:app"]);
    assert_eq!(app.platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(app.outputs, ["type=registry"]);
    assert!(app.no_cache);
    assert_eq!(app.secrets[0].source, SecretSource::File(dir.join("token.txt")));
    assert_eq!(app.contexts["base"], NamedSource::Image("reg.test/base:1".into()));
}
