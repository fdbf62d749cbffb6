//! External tools the interoperability tests drive, and the rule for when they are missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Whether the suite runs in CI, where every tool must be present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Decides whether a test that needs `what` can run: in CI a missing tool fails the test;
/// elsewhere the test is skipped and says why.
pub fn require(what: &str, available: bool, hint: &str) -> bool {
    if available {
        return true;
    }
    assert!(!in_ci(), "{what} is required in CI but is not available: {hint}");
    eprintln!("SKIPPED: {what} is not available ({hint})");
    false
}

/// Finds a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Runs a command, failing the test with its output unless it succeeds; returns stdout.
pub fn run(command: &mut Command) -> String {
    let output = output(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a command and returns its output whatever its status.
pub fn output(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// The docker CLI talking to the engine `scripts/test` started (`DOCKER_HOST`).
#[derive(Clone)]
pub struct Docker {
    bin: PathBuf,
}

impl Docker {
    /// The docker client, if an engine answers; `None` (after [`require`]) otherwise.
    pub fn get() -> Option<Docker> {
        static DOCKER: OnceLock<Option<Docker>> = OnceLock::new();
        let found = DOCKER.get_or_init(|| {
            // Debian's client has BuildKit built in; prefer it to others on PATH.
            let bin = [PathBuf::from("/usr/bin/docker")]
                .into_iter()
                .find(|p| p.is_file())
                .or_else(|| which("docker"))?;
            std::env::var_os("DOCKER_HOST")?;
            let ok = Command::new(&bin)
                .arg("info")
                .output()
                .is_ok_and(|o| o.status.success());
            ok.then_some(Docker { bin })
        });
        let hint = "run the suite through scripts/test, which starts dockerd and sets DOCKER_HOST";
        if require("docker", found.is_some(), hint) {
            found.clone()
        } else {
            None
        }
    }

    /// A docker command with BuildKit enabled.
    pub fn cmd(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command.env("DOCKER_BUILDKIT", "1");
        command
    }

    /// The image every interoperability test pushes: busybox from Debian's static binary,
    /// built once per test process. Returns its local tag.
    pub fn busybox_image(&self) -> String {
        static IMAGE: OnceLock<String> = OnceLock::new();
        IMAGE
            .get_or_init(|| {
                let context = tempfile::tempdir().expect("temp dir");
                let busybox = which("busybox").expect("busybox-static is installed by scripts/test");
                std::fs::copy(busybox, context.path().join("busybox")).expect("copy busybox");
                std::fs::write(
                    context.path().join("Dockerfile"),
                    "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
                     ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nCMD [\"/bin/sh\"]\n",
                )
                .expect("write Dockerfile");
                let tag = "rbuild-test/busybox:latest".to_owned();
                run(self
                    .cmd()
                    .args(["build", "--network=none", "-q", "-t", &tag])
                    .arg(context.path()));
                tag
            })
            .clone()
    }
}

/// A program that the Debian package of the same name installs (`skopeo`, `buildah`, `umoci`),
/// if it is on PATH.
pub fn installed(program: &str) -> Option<PathBuf> {
    let found = which(program);
    let hint = format!("apt-get install {program} (scripts/test does)");
    require(program, found.is_some(), &hint).then_some(found)?
}

/// skopeo, if installed.
pub fn skopeo() -> Option<PathBuf> {
    installed("skopeo")
}

/// buildah with an image store of its own (a temporary directory, removed when dropped), so
/// tests neither see nor leave images in the machine's store.
pub struct Buildah {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Buildah {
    /// buildah and a fresh store, if buildah is installed.
    pub fn get() -> Option<Buildah> {
        let bin = installed("buildah")?;
        let dir = tempfile::tempdir().expect("temp dir");
        Some(Buildah { bin, dir })
    }

    /// A buildah command on the test's store. The `vfs` driver copies layers instead of
    /// mounting them, so nothing stays mounted under the temporary directory.
    pub fn cmd(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "vfs"]);
        command
    }

    /// `buildah build` of `context` as `tag` in `format` (`docker` or `oci`), its RUN steps in
    /// runc without a network, its base pulled over plain HTTP from a loopback registry.
    pub fn build(&self, context: &Path, tag: &str, format: &str, args: &[&str]) {
        run(self
            .cmd()
            .args(["build", "--runtime", "/usr/sbin/runc", "--network=none"])
            .args(["--tls-verify=false", "-q", "--format", format, "-t", tag])
            .args(args)
            .arg(context));
    }
}

/// containerd's `ctr`, pointed at the containerd that dockerd started.
pub struct Ctr {
    bin: PathBuf,
    address: String,
}

impl Ctr {
    /// `ctr` and a containerd socket (`RBUILD_TEST_CONTAINERD`, set by `scripts/test`).
    pub fn get() -> Option<Ctr> {
        let bin = which("ctr");
        let address = std::env::var("RBUILD_TEST_CONTAINERD").ok();
        let hint = "scripts/test sets RBUILD_TEST_CONTAINERD to the containerd that dockerd starts";
        match (bin, address) {
            (Some(bin), Some(address)) if std::path::Path::new(&address).exists() => {
                Some(Ctr { bin, address })
            }
            _ => {
                require("containerd (ctr)", false, hint);
                None
            }
        }
    }

    /// A `ctr` command in the test namespace.
    pub fn cmd(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command.args(["--address", &self.address, "--namespace", "rbuild-test"]);
        command
    }
}
