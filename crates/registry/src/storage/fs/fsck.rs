//! What only the files of a filesystem store show, for `rbuild registry fsck`: the checks of
//! content through the storage traits ([`crate::storage::check`]) do not see files the stores
//! skip when they list.
//!
//! Errors: a file in the blob store or a repository's digest directories whose name is not a
//! digest, or that is not where its digest puts it. Warnings: temporary files left by an
//! interrupted write, files a garbage collection set aside and never decided on, and referrers
//! entries for manifests that are gone (a crash mid-delete).

use std::path::Path;

use rbuild_oci::atomic::is_temporary;
use rbuild_oci::{Algorithm, Digest};

use super::{BLOBS_DIR, REPOSITORIES_DIR, UPLOADS_DIR, aside, blob_path, digest_path, list_names};
use crate::storage::StorageResult;
use crate::storage::check::Finding;

/// Walks the files under `root` (blocking; directories that do not exist hold nothing).
pub fn files(root: &Path) -> StorageResult<Vec<Finding>> {
    let mut findings = Vec::new();
    check_blob_files(&root.join(BLOBS_DIR), &mut findings)?;
    report_leftovers(&root.join(BLOBS_DIR).join(UPLOADS_DIR), &mut findings)?;
    walk_repositories(&root.join(REPOSITORIES_DIR), &mut findings)?;
    Ok(findings)
}

/// Every blob file must sit at the path its digest gives.
fn check_blob_files(blobs: &Path, findings: &mut Vec<Finding>) -> StorageResult<()> {
    for algorithm_dir in list_names(blobs)? {
        if algorithm_dir == UPLOADS_DIR {
            continue;
        }
        let algorithm = Algorithm::from_name(&algorithm_dir);
        for fan in list_names(&blobs.join(&algorithm_dir))? {
            let dir = blobs.join(&algorithm_dir).join(&fan);
            report_leftovers(&dir, findings)?;
            for name in list_names(&dir)? {
                let path = dir.join(&name);
                let placed = algorithm
                    .and_then(|a| Digest::from_parts(a, &name).ok())
                    .is_some_and(|d| blob_path(blobs, &d) == path);
                if !placed {
                    findings.push(Finding::error(
                        path.display(),
                        "a file in the blob store whose name is not a digest (or not where its digest puts it)",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Leftovers in `dir`: files a garbage collection set aside and never decided on (unreadable
/// until a collection's listing puts them back), and other temporary files (an interrupted
/// write's).
fn report_leftovers(dir: &Path, findings: &mut Vec<Finding>) -> StorageResult<()> {
    let set_aside = aside::set_aside_files(dir)?;
    for path in &set_aside {
        findings.push(Finding::warning(
            path.display(),
            "set aside by a garbage collection that stopped midway; the next `rbuild registry gc` puts it back",
        ));
    }
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    for entry in entries.filter(|e| e.file_name().to_str().is_some_and(is_temporary)) {
        if !set_aside.contains(&entry.path()) {
            findings.push(Finding::warning(
                entry.path().display(),
                "temporary file left by an interrupted write",
            ));
        }
    }
    Ok(())
}

fn walk_repositories(dir: &Path, findings: &mut Vec<Finding>) -> StorageResult<()> {
    let names = list_names(dir)?;
    if names.iter().any(|n| n.starts_with('_')) {
        check_repository(dir, findings)?;
    }
    for name in names.iter().filter(|n| !n.starts_with('_')) {
        let child = dir.join(name);
        if child.is_dir() {
            walk_repositories(&child, findings)?;
        }
    }
    report_leftovers(dir, findings)
}

/// The files of `<base>/<alg>/<hex>` must be named by digests.
fn check_digest_names(base: &Path, findings: &mut Vec<Finding>) -> StorageResult<()> {
    for algorithm in list_names(base)? {
        let dir = base.join(&algorithm);
        report_leftovers(&dir, findings)?;
        for name in list_names(&dir)? {
            if Algorithm::from_name(&algorithm)
                .and_then(|a| Digest::from_parts(a, &name).ok())
                .is_none()
            {
                findings.push(Finding::error(
                    dir.join(&name).display(),
                    "a file whose name is not a digest",
                ));
            }
        }
    }
    Ok(())
}

fn check_repository(repo: &Path, findings: &mut Vec<Finding>) -> StorageResult<()> {
    check_digest_names(&repo.join("_layers"), findings)?;
    let revisions = repo.join("_manifests").join("revisions");
    check_digest_names(&revisions, findings)?;
    report_leftovers(&repo.join("_manifests").join("tags"), findings)?;
    report_leftovers(&repo.join("_uploads"), findings)?;
    let referrers = repo.join("_referrers");
    for algorithm in list_names(&referrers)? {
        for subject in list_names(&referrers.join(&algorithm))? {
            let subject_dir = referrers.join(&algorithm).join(subject);
            report_leftovers(&subject_dir, findings)?;
            for marker in list_names(&subject_dir)? {
                let referrer = marker
                    .split_once('-')
                    .and_then(|(a, h)| Digest::from_parts(Algorithm::from_name(a)?, h).ok());
                if !referrer.is_some_and(|d| digest_path(&revisions, &d).is_file()) {
                    findings.push(Finding::warning(
                        subject_dir.join(&marker).display(),
                        "referrers entry for a manifest that is gone",
                    ));
                }
            }
        }
    }
    Ok(())
}
