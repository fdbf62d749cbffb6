//! The OCI runtime configuration (`config.json`) for one build step: docker's defaults for a
//! container (capabilities, masked paths, devices), BuildKit's hostname, and the mounts the
//! step asked for.

use std::path::Path;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespace, LinuxNamespaceType, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder, get_default_maskedpaths,
    get_default_namespaces, get_default_readonly_paths,
};

use crate::{MountKind, Network, RunError, RunSpec};

/// The hostname BuildKit gives build containers.
pub const HOSTNAME: &str = "buildkitsandbox";

/// Docker's default capability set for containers.
fn default_capabilities() -> Vec<Capability> {
    vec![
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Result<Mount, RunError> {
    MountBuilder::default()
        .destination(destination)
        .typ(kind)
        .source(source)
        .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .build()
        .map_err(RunError::spec)
}

/// The configuration for `spec`, with the root filesystem at `rootfs`.
pub fn build(spec: &RunSpec, rootfs: &Path) -> Result<Spec, RunError> {
    let capabilities: std::collections::HashSet<Capability> = default_capabilities().into_iter().collect();
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(spec.argv.clone())
        .env(spec.env.clone())
        .cwd(spec.cwd.clone())
        .user(
            UserBuilder::default()
                .uid(spec.user.uid)
                .gid(spec.user.gid)
                .additional_gids(spec.user.additional_gids.clone())
                .build()
                .map_err(RunError::spec)?,
        )
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(capabilities.clone())
                .effective(capabilities.clone())
                .permitted(capabilities)
                .build()
                .map_err(RunError::spec)?,
        )
        .no_new_privileges(true)
        .build()
        .map_err(RunError::spec)?;

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
    ];
    for (file, source) in [
        ("/etc/resolv.conf", &spec.resolv_conf),
        ("/etc/hosts", &spec.hosts),
    ] {
        if let Some(source) = source {
            mounts.push(mount(
                file,
                "bind",
                &source.display().to_string(),
                &["rbind", "ro"],
            )?);
        }
    }
    for extra in &spec.mounts {
        let target = extra.target.as_str();
        mounts.push(match &extra.kind {
            MountKind::Bind { source, read_only } => {
                let access = if *read_only { "ro" } else { "rw" };
                mount(target, "bind", &source.display().to_string(), &["rbind", access])?
            }
            MountKind::Tmpfs { size } => {
                let size = size.map(|s| format!("size={s}"));
                let mut options = vec!["nosuid", "nodev"];
                if let Some(size) = &size {
                    options.push(size);
                }
                mount(target, "tmpfs", "tmpfs", &options)?
            }
            MountKind::Layers { .. } => {
                return Err(RunError::Spec(format!("layer mount at {target} was not merged")));
            }
        });
    }

    let namespaces: Vec<LinuxNamespace> = get_default_namespaces()
        .into_iter()
        .filter(|ns| !(spec.network == Network::Host && ns.typ() == LinuxNamespaceType::Network))
        .collect();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .build()
        .map_err(RunError::spec)?;

    let mut config = Spec::default();
    config.set_hostname(Some(HOSTNAME.to_owned()));
    config.set_process(Some(process));
    config.set_root(Some(
        RootBuilder::default()
            .path(rootfs)
            .readonly(false)
            .build()
            .map_err(RunError::spec)?,
    ));
    config.set_mounts(Some(mounts));
    config.set_linux(Some(linux));
    Ok(config)
}
