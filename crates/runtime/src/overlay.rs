//! The overlay a step runs in: the layers' snapshots as read-only lower directories, and a
//! fresh upper directory that collects everything the step changes — which becomes its layer.

use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags, mount, unmount};

use crate::RunError;

/// The kernel's limit on mount options is a page; leave room for the other options.
const MAX_LOWERDIR: usize = 3800;

/// Mounts an overlay of `layers` (base first; `empty` when there are none) at `target`.
pub fn mount_overlay(
    layers: &[PathBuf],
    empty: &Path,
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), RunError> {
    let lower: Vec<String> = if layers.is_empty() {
        vec![empty.display().to_string()]
    } else {
        layers.iter().rev().map(|p| p.display().to_string()).collect()
    };
    let lowerdir = lower.join(":");
    if lowerdir.len() > MAX_LOWERDIR {
        return Err(RunError::Runtime(format!(
            "the image has too many layers ({}) for one overlay mount; squash the base image",
            layers.len()
        )));
    }
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    let options = std::ffi::CString::new(options)
        .map_err(|_| RunError::Runtime("a layer path contains a NUL byte".to_owned()))?;
    mount(
        "overlay",
        target,
        "overlay",
        MountFlags::empty(),
        Some(options.as_c_str()),
    )
    .map_err(|e| RunError::io(format!("mounting the overlay at {}", target.display()), e.into()))
}

/// Unmounts `target`, detaching it if something still holds it open.
pub fn unmount_quietly(target: &Path) {
    if unmount(target, UnmountFlags::empty()).is_err() {
        let _ = unmount(target, UnmountFlags::DETACH);
    }
}
