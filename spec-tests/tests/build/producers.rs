//! Base images made by every tool people make images with, each made on this machine by the
//! tool itself: docker's classic builder, BuildKit, `docker commit`, `docker import`, buildah
//! (docker and OCI formats, gzip and zstd layers), skopeo's conversions between docker v2s2
//! and OCI, umoci, and an index carrying a buildx-style attestation manifest.
//!
//! Every base sets what a child inherits (environment, command and entrypoint, working
//! directory, user, labels, ports, volumes, healthcheck, shell, stop signal) as far as its
//! tool can, from `fixtures/build/producers/base`. The "bare" ones set nothing, so docker
//! writes `null` for each field.

use std::path::Path;
use std::sync::OnceLock;

use rbuild_oci::{Digest, media_type};
use reqwest::header::ACCEPT;
use spec_tests::api::Api;
use spec_tests::registry::RegistryProcess;
use spec_tests::tools::{Buildah, Docker, run};

use crate::support::fixture;

/// `fixtures/build/producers/<name>`.
pub fn producers_fixture(name: &str) -> std::path::PathBuf {
    fixture("producers").join(name)
}

/// The changes `docker commit` and `docker import` apply, each a Dockerfile instruction they
/// accept (they refuse SHELL and STOPSIGNAL).
const CHANGES: [&str; 9] = [
    "ENV APP_HOME=/srv/app MODE=changed",
    "WORKDIR /srv/app",
    "USER 1234:1234",
    "LABEL org.example.base=yes",
    "EXPOSE 8080/tcp",
    "VOLUME /data",
    "HEALTHCHECK --interval=30s CMD [\"/bin/true\"]",
    "ENTRYPOINT [\"/bin/sh\", \"-c\"]",
    "CMD [\"cat /srv/app/*.txt\"]",
];

/// The images docker makes, as tags in docker's image store.
pub struct DockerMade {
    /// `DOCKER_BUILDKIT=0 docker build` of the base fixture.
    pub classic: String,
    /// The classic builder's image of the ONBUILD fixture, on `classic`.
    pub onbuild: String,
    /// `DOCKER_BUILDKIT=1 docker build` of the base fixture.
    pub buildkit: String,
    /// `docker commit` of a container that ran the fixture's setup, with [`CHANGES`] and the
    /// container's stop signal.
    pub commit: String,
    /// The same commit without changes: the container's own configuration, `null`s and all.
    pub commit_bare: String,
    /// `docker import` of that container's filesystem, with [`CHANGES`].
    pub import: String,
    /// The same import without changes: every field `null`.
    pub import_bare: String,
}

impl DockerMade {
    /// Every image, with the name of the tool that made it.
    pub fn all(&self) -> [(&'static str, &str); 7] {
        [
            ("docker-classic", &self.classic),
            ("docker-classic-onbuild", &self.onbuild),
            ("buildkit", &self.buildkit),
            ("docker-commit", &self.commit),
            ("docker-commit-bare", &self.commit_bare),
            ("docker-import", &self.import),
            ("docker-import-bare", &self.import_bare),
        ]
    }
}

/// The build arguments of the base fixtures: the image to build on, and the producer's name
/// (which the image records in a label, the environment and a file).
fn base_args(from: &str, producer: &str) -> Vec<String> {
    vec![
        "--build-arg".to_owned(),
        format!("BASE={from}"),
        "--build-arg".to_owned(),
        format!("PRODUCER={producer}"),
    ]
}

/// docker's images, made once per test process (docker's store outlives each test; scripts/test
/// removes it with the engine).
pub fn docker_made(docker: &Docker) -> &'static DockerMade {
    static MADE: OnceLock<DockerMade> = OnceLock::new();
    MADE.get_or_init(|| {
        let busybox = docker.busybox_image();
        let base = producers_fixture("base");
        let build = |tag: &str, buildkit: &str, context: &Path, args: &[String]| {
            run(docker
                .cmd()
                .env("DOCKER_BUILDKIT", buildkit)
                .args(["build", "--network=none", "-q", "-t", tag])
                .args(args)
                .arg(context));
            tag.to_owned()
        };
        let classic = build(
            "rbuild-test/producer-classic:1",
            "0",
            &base,
            &base_args(&busybox, "docker-classic"),
        );
        let onbuild = build(
            "rbuild-test/producer-onbuild:1",
            "0",
            &producers_fixture("onbuild"),
            &base_args(&classic, "docker-classic-onbuild"),
        );
        let buildkit = build(
            "rbuild-test/producer-buildkit:1",
            "1",
            &base,
            &base_args(&busybox, "buildkit"),
        );

        let setup = std::fs::read_to_string(base.join("setup.sh")).expect("setup.sh");
        let container = run(docker.cmd().args([
            "create",
            "--network=none",
            "--stop-signal",
            "SIGQUIT",
            &busybox,
            "/bin/sh",
            "-c",
            &setup,
            "setup",
            "docker-commit",
        ]))
        .trim()
        .to_owned();
        run(docker.cmd().args(["start", "-a", &container]));
        let mut commit = docker.cmd();
        commit.arg("commit");
        for change in CHANGES {
            commit.args(["--change", change]);
        }
        run(commit.args([&container, "rbuild-test/producer-commit:1"]));
        run(docker
            .cmd()
            .args(["commit", &container, "rbuild-test/producer-commit-bare:1"]));

        let dir = tempfile::tempdir().expect("temp dir");
        let filesystem = dir.path().join("filesystem.tar");
        export_and_remove(docker, &container, &filesystem);
        let mut import = docker.cmd();
        import.arg("import");
        for change in CHANGES {
            import.args(["--change", change]);
        }
        run(import.arg(&filesystem).arg("rbuild-test/producer-import:1"));
        run(docker
            .cmd()
            .arg("import")
            .arg(&filesystem)
            .arg("rbuild-test/producer-import-bare:1"));

        DockerMade {
            classic,
            onbuild,
            buildkit,
            commit: "rbuild-test/producer-commit:1".to_owned(),
            commit_bare: "rbuild-test/producer-commit-bare:1".to_owned(),
            import: "rbuild-test/producer-import:1".to_owned(),
            import_bare: "rbuild-test/producer-import-bare:1".to_owned(),
        }
    })
}

/// `docker export` of a container's filesystem to the tar file `to`; then the container goes.
fn export_and_remove(docker: &Docker, container: &str, to: &Path) {
    run(docker.cmd().args(["export", "-o"]).arg(to).arg(container));
    run(docker.cmd().args(["rm", container]));
}

/// Tags `image` (in docker's store) as `<registry>/corpus/<name>:1` and pushes it; returns
/// the reference.
pub fn docker_push(docker: &Docker, registry: &RegistryProcess, image: &str, name: &str) -> String {
    let reference = format!("{}/corpus/{name}:1", registry.host());
    run(docker.cmd().args(["tag", image, &reference]));
    run(docker.cmd().args(["push", &reference]));
    reference
}

/// One base image of the corpus.
pub struct Base {
    /// The tool that made it (and how).
    pub producer: &'static str,
    /// Where it is: what rbuild's `FROM` names.
    pub reference: String,
    /// What docker builds the oracle from: the same image, except for zstd layers, which
    /// docker 20.10 cannot unpack; then its gzip twin (the same config blob).
    pub oracle: String,
    /// Whether its layers are zstd: docker cannot pull a child that keeps them, containerd
    /// runs it instead.
    pub zstd: bool,
}

/// The corpus: every producer's base, pushed to registries of the corpus's own, which stop
/// when it is dropped.
pub struct Corpus {
    /// Where the bases are (except the zstd one).
    pub registry: RegistryProcess,
    /// The bases.
    pub bases: Vec<Base>,
    /// A second registry for zstd layers: buildah and skopeo remember which blobs a registry
    /// holds for a layer (in /var/lib/containers/cache) and push an existing gzip blob for a
    /// layer asked to be zstd, so zstd images go where no gzip copy of their layers is.
    _zstd_registry: RegistryProcess,
}

/// `skopeo copy --format <format>` from `from` (any transport) to the reference `to` in a
/// loopback registry (plain HTTP); returns `to`.
fn skopeo_copy(skopeo: &Path, format: &str, from: &str, to: String) -> String {
    run(std::process::Command::new(skopeo)
        .args(["copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .args(["--format", format, from])
        .arg(format!("docker://{to}")));
    to
}

impl Corpus {
    /// Makes every base and pushes it.
    pub fn make(docker: &Docker, skopeo: &Path, buildah: &Buildah, umoci: &Path) -> Corpus {
        let registry = RegistryProcess::start();
        let zstd_registry = RegistryProcess::start();
        let host = registry.host();
        let mut bases = Vec::new();
        let mut add = |producer: &'static str, reference: String, oracle: Option<String>| {
            bases.push(Base {
                producer,
                oracle: oracle.clone().unwrap_or_else(|| reference.clone()),
                zstd: oracle.is_some(),
                reference,
            });
        };
        let made = docker_made(docker);
        for (producer, image) in made.all() {
            add(producer, docker_push(docker, &registry, image, producer), None);
        }

        let busybox = docker_push(docker, &registry, &docker.busybox_image(), "busybox");
        for (format, producer) in [("docker", "buildah-docker"), ("oci", "buildah-oci")] {
            let args = base_args(&busybox, producer);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            buildah.build(&producers_fixture("base"), producer, format, &args);
        }
        let buildah_push = |image: &str, to: String, extra: &[&str]| {
            run(buildah
                .cmd()
                .args(["push", "-q", "--tls-verify=false"])
                .args(extra)
                .arg(image)
                .arg(format!("docker://{to}")));
            to
        };
        let docker_format = buildah_push(
            "buildah-docker",
            format!("{host}/corpus/buildah-docker:gzip"),
            &[],
        );
        add("buildah-docker-gzip", docker_format, None);
        let oci_gzip = buildah_push("buildah-oci", format!("{host}/corpus/buildah-oci:gzip"), &[]);
        add("buildah-oci-gzip", oci_gzip.clone(), None);
        let oci_zstd = buildah_push(
            "buildah-oci",
            format!("{}/corpus/buildah-oci:zstd", zstd_registry.host()),
            &["--compression-format", "zstd"],
        );
        add("buildah-oci-zstd", oci_zstd, Some(oci_gzip.clone()));

        let conversions = [
            (
                "skopeo-v2s2-to-oci",
                "oci",
                format!("docker://{host}/corpus/docker-classic:1"),
            ),
            ("skopeo-oci-to-v2s2", "v2s2", format!("docker://{oci_gzip}")),
        ];
        for (producer, format, from) in conversions {
            let to = skopeo_copy(skopeo, format, &from, format!("{host}/corpus/{producer}:1"));
            add(producer, to, None);
        }

        let work = tempfile::tempdir().expect("temp dir");
        let layout = umoci_base(docker, umoci, work.path(), &made.commit_bare);
        add(
            "umoci",
            skopeo_copy(skopeo, "oci", &layout, format!("{host}/corpus/umoci:1")),
            None,
        );

        let buildkit = format!("docker://{host}/corpus/buildkit:1");
        skopeo_copy(skopeo, "oci", &buildkit, format!("{host}/corpus/attested:image"));
        add(
            "index-with-attestation",
            attested_index(&registry, "corpus/attested"),
            None,
        );

        Corpus {
            registry,
            bases,
            _zstd_registry: zstd_registry,
        }
    }
}

/// An OCI layout made by umoci (in `work`), holding the filesystem of `image` (a container
/// of it, exported by docker) and a config umoci writes; returns `oci:<layout>:base`, its
/// name for skopeo.
fn umoci_base(docker: &Docker, umoci: &Path, work: &Path, image: &str) -> String {
    let layout = work.join("layout");
    let bundle = work.join("bundle");
    let image_ref = format!("{}:base", layout.display());
    let umoci_run = |args: &[&str]| run(std::process::Command::new(umoci).args(args));
    umoci_run(&["init", "--layout", &layout.to_string_lossy()]);
    umoci_run(&["new", "--image", &image_ref]);
    umoci_run(&["unpack", "--image", &image_ref, &bundle.to_string_lossy()]);
    let container = run(docker.cmd().args(["create", image, "/bin/true"]))
        .trim()
        .to_owned();
    let filesystem = work.join("filesystem.tar");
    export_and_remove(docker, &container, &filesystem);
    run(std::process::Command::new("tar")
        .args(["-x", "--numeric-owner", "-p", "-C"])
        .arg(bundle.join("rootfs"))
        .arg("-f")
        .arg(&filesystem));
    umoci_run(&["repack", "--image", &image_ref, &bundle.to_string_lossy()]);
    let mut config = vec!["config", "--image", &image_ref];
    config.extend([
        "--config.env=PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "--config.env=MODE=umoci",
        "--config.workingdir=/srv/app",
        "--config.user=1234:1234",
        "--config.label=org.example.producer=umoci",
        "--config.exposedports=8080/tcp",
        "--config.volume=/data",
        "--config.stopsignal=SIGQUIT",
        "--config.entrypoint=/bin/sh",
        "--config.entrypoint=-c",
        "--config.cmd=cat /srv/app/*.txt",
    ]);
    umoci_run(&config);
    format!("oci:{image_ref}")
}

/// Puts an index in `repo` (tagged `1`) over the OCI image tagged `image` there and a
/// buildx-style attestation manifest for it (platform `unknown/unknown`, an in-toto layer).
/// The attestation comes first: a client must choose by platform, not by position.
fn attested_index(registry: &RegistryProcess, repo: &str) -> String {
    let api = Api::new(registry);
    let image = api
        .request(reqwest::Method::GET, &format!("/v2/{repo}/manifests/image"))
        .header(ACCEPT, media_type::OCI_MANIFEST)
        .send()
        .expect("GET manifest")
        .bytes()
        .expect("manifest bytes");
    let image_digest = Digest::sha256_of(&image);
    let statement = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": "_", "digest": {"sha256": image_digest.hex()}}],
        "predicate": {"buildType": "https://mobyproject.org/buildkit@v1", "builder": {"id": ""}},
    }))
    .expect("statement");
    let statement_digest = api.push_blob(repo, &statement);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [statement_digest.to_string()]},
    }))
    .expect("config");
    let config_digest = api.push_blob(repo, &config);
    let attestation = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": {"mediaType": media_type::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.in-toto+json",
            "digest": statement_digest.to_string(),
            "size": statement.len(),
            "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
        }],
    }))
    .expect("attestation manifest");
    let attestation_digest = Digest::sha256_of(&attestation);
    let put = |reference: &str, kind: &str, bytes: &[u8]| {
        let response = api.put_manifest(repo, reference, kind, bytes);
        assert_eq!(response.status(), 201, "{}", response.text().unwrap_or_default());
    };
    put(
        &attestation_digest.to_string(),
        media_type::OCI_MANIFEST,
        &attestation,
    );
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [
            {
                "mediaType": media_type::OCI_MANIFEST,
                "digest": attestation_digest.to_string(),
                "size": attestation.len(),
                "annotations": {
                    "vnd.docker.reference.digest": image_digest.to_string(),
                    "vnd.docker.reference.type": "attestation-manifest",
                },
                "platform": {"architecture": "unknown", "os": "unknown"},
            },
            {
                "mediaType": media_type::OCI_MANIFEST,
                "digest": image_digest.to_string(),
                "size": image.len(),
                "platform": {"architecture": "amd64", "os": "linux"},
            },
        ],
    }))
    .expect("index");
    put("1", media_type::OCI_INDEX, &index);
    format!("{}/{repo}:1", registry.host())
}
