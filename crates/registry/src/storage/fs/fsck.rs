//! `rbuild registry fsck`: re-hashes every blob and checks every link of a filesystem store.
//!
//! This is how the crash tests prove nothing was lost: after `kill -9` at any instant, fsck
//! must find no errors. It reports two kinds of finding. Errors mean data is wrong or
//! unreachable (a blob whose bytes do not match its name, a tag pointing at a missing
//! manifest). Warnings are leftovers a crash may legitimately leave and the purge removes
//! (temporary files, orphaned upload data).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rbuild_oci::atomic::is_temporary;
use rbuild_oci::{Algorithm, Digest, ManifestSummary};

use super::{BLOBS_DIR, REPOSITORIES_DIR, UPLOADS_DIR, aside, blob_path, digest_path, list_names};
use crate::storage::{ManifestRecord, StorageError, StorageResult};

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Data is wrong or unreachable.
    Error,
    /// A harmless leftover.
    Warning,
}

/// One thing fsck found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// The file concerned.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}: {}", self.path.display(), self.message)
    }
}

/// What fsck checked and found.
#[derive(Debug, Default)]
pub struct Report {
    /// Blobs re-hashed.
    pub blobs: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Repositories walked.
    pub repositories: usize,
    /// Blob links checked.
    pub links: usize,
    /// Manifests checked.
    pub manifests: usize,
    /// Tags checked.
    pub tags: usize,
    /// Upload sessions and staged uploads seen.
    pub uploads: usize,
    /// What is wrong.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    fn error(&mut self, path: &Path, message: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Error,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn warning(&mut self, path: &Path, message: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Warning,
            path: path.to_owned(),
            message: message.into(),
        });
    }
}

/// Checks the store under `root`, hashing blobs on all cores.
pub fn fsck(root: &Path) -> StorageResult<Report> {
    let mut report = Report::default();
    let blobs = root.join(BLOBS_DIR);
    check_blobs(&blobs, &mut report)?;
    let staged = list_names(&blobs.join(UPLOADS_DIR))?;
    let repositories = root.join(REPOSITORIES_DIR);
    let mut sessions: Vec<PathBuf> = Vec::new();
    walk_repositories(&repositories, &blobs, &mut report, &mut sessions)?;
    let session_id = |path: &PathBuf| path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
    let session_ids: Vec<String> = sessions.iter().filter_map(session_id).collect();
    for name in &staged {
        report.uploads += 1;
        if !session_ids.contains(name) {
            report.warning(
                &blobs.join(UPLOADS_DIR).join(name),
                "staged upload data with no session (a monolithic upload in flight, or left by a crash; purged when stale)",
            );
        }
    }
    for session in &sessions {
        if session_id(session).is_some_and(|id| !staged.contains(&id)) {
            report.warning(
                session,
                "upload session whose staged data is gone (purged when stale)",
            );
        }
    }
    Ok(report)
}

/// Every blob file must sit at the path its digest gives and hash to that digest.
fn check_blobs(blobs: &Path, report: &mut Report) -> StorageResult<()> {
    let mut files: Vec<(PathBuf, Option<Digest>)> = Vec::new();
    for algorithm_dir in list_names(blobs)? {
        if algorithm_dir == UPLOADS_DIR {
            continue;
        }
        let algorithm = Algorithm::from_name(&algorithm_dir);
        for fan in list_names(&blobs.join(&algorithm_dir))? {
            report_set_aside(&blobs.join(&algorithm_dir).join(&fan), report)?;
            for name in list_names(&blobs.join(&algorithm_dir).join(&fan))? {
                let path = blobs.join(&algorithm_dir).join(&fan).join(&name);
                let digest = algorithm
                    .and_then(|a| Digest::from_parts(a, &name).ok())
                    .filter(|d| blob_path(blobs, d) == path);
                files.push((path, digest));
            }
        }
    }
    let results = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((path, expected)) = files.get(i) else {
                        break;
                    };
                    let outcome = match expected {
                        None => Err("a file in the blob store whose name is not a digest".to_owned()),
                        Some(expected) => rehash(path, expected),
                    };
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((path.clone(), outcome));
                }
            });
        }
    });
    for (path, outcome) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        report.blobs += 1;
        match outcome {
            Ok(bytes) => report.bytes += bytes,
            Err(message) => report.error(&path, message),
        }
    }
    Ok(())
}

/// Files a garbage collection set aside and never decided on: unreadable until a collection's
/// listing puts them back.
fn report_set_aside(dir: &Path, report: &mut Report) -> StorageResult<()> {
    for path in aside::set_aside_files(dir)? {
        report.warning(
            &path,
            "set aside by a garbage collection that stopped midway; the next `rbuild registry gc` puts it back",
        );
    }
    Ok(())
}

fn rehash(path: &Path, expected: &Digest) -> Result<u64, String> {
    let mut hasher = expected.algorithm().hasher();
    let mut file = fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let bytes = std::io::copy(&mut file, &mut hasher).map_err(|e| format!("cannot read: {e}"))?;
    let actual = hasher.finalize();
    if &actual == expected {
        Ok(bytes)
    } else {
        Err(format!("corrupt blob: content hashes to {actual}"))
    }
}

fn walk_repositories(
    dir: &Path,
    blobs: &Path,
    report: &mut Report,
    sessions: &mut Vec<PathBuf>,
) -> StorageResult<()> {
    let names = list_names(dir)?;
    if names.iter().any(|n| n.starts_with('_')) {
        report.repositories += 1;
        check_repository(dir, blobs, report, sessions)?;
    }
    for name in names.iter().filter(|n| !n.starts_with('_')) {
        let child = dir.join(name);
        if child.is_dir() {
            walk_repositories(&child, blobs, report, sessions)?;
        }
    }
    for name in names.iter().filter(|n| is_temporary(n)) {
        report.warning(&dir.join(name), "temporary file left by an interrupted write");
    }
    Ok(())
}

/// Digests named by the files of `<base>/<alg>/<hex>`, with their paths.
fn digest_entries(base: &Path, report: &mut Report) -> StorageResult<Vec<(PathBuf, Digest)>> {
    let mut found = Vec::new();
    for algorithm in list_names(base)? {
        let dir = base.join(&algorithm);
        report_set_aside(&dir, report)?;
        for name in list_names(&dir)? {
            let path = dir.join(&name);
            match Algorithm::from_name(&algorithm).and_then(|a| Digest::from_parts(a, &name).ok()) {
                Some(digest) => found.push((path, digest)),
                None => report.error(&path, "a file whose name is not a digest"),
            }
        }
    }
    Ok(found)
}

fn check_repository(
    repo: &Path,
    blobs: &Path,
    report: &mut Report,
    sessions: &mut Vec<PathBuf>,
) -> StorageResult<()> {
    for (path, digest) in digest_entries(&repo.join("_layers"), report)? {
        report.links += 1;
        if !blob_path(blobs, &digest).is_file() {
            report.error(&path, format!("link to blob {digest}, which is not stored"));
        }
    }
    let revisions = repo.join("_manifests").join("revisions");
    for (path, digest) in digest_entries(&revisions, report)? {
        report.manifests += 1;
        check_manifest(repo, blobs, &path, &digest, report)?;
    }
    let tags = repo.join("_manifests").join("tags");
    report_set_aside(&tags, report)?;
    for tag in list_names(&tags)? {
        report.tags += 1;
        let path = tags.join(&tag);
        let text = fs::read_to_string(&path)
            .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
        match text.trim().parse::<Digest>() {
            Ok(digest) if digest_path(&revisions, &digest).is_file() => {}
            Ok(digest) => report.error(
                &path,
                format!("tag points at manifest {digest}, which is not stored"),
            ),
            Err(e) => report.error(&path, format!("tag file does not hold a digest: {e}")),
        }
    }
    for (subject_dir, _subject) in digest_entries(&repo.join("_referrers"), report)?
        .into_iter()
        .filter(|(p, _)| p.is_dir())
    {
        for marker in list_names(&subject_dir)? {
            let referrer = marker
                .split_once('-')
                .and_then(|(a, h)| Digest::from_parts(Algorithm::from_name(a)?, h).ok());
            match referrer {
                Some(d) if digest_path(&revisions, &d).is_file() => {}
                _ => report.warning(
                    &subject_dir.join(&marker),
                    "referrers entry for a manifest that is gone",
                ),
            }
        }
    }
    let uploads = repo.join("_uploads");
    sessions.extend(list_names(&uploads)?.into_iter().map(|name| uploads.join(name)));
    Ok(())
}

fn check_manifest(
    repo: &Path,
    blobs: &Path,
    path: &Path,
    digest: &Digest,
    report: &mut Report,
) -> StorageResult<()> {
    let bytes = fs::read(path).map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
    let record: ManifestRecord = match serde_json::from_slice(&bytes) {
        Ok(record) => record,
        Err(e) => {
            report.error(path, format!("manifest record is not valid JSON: {e}"));
            return Ok(());
        }
    };
    if &record.digest != digest {
        report.error(
            path,
            format!("record names {} but is filed as {digest}", record.digest),
        );
        return Ok(());
    }
    let content = match fs::read(blob_path(blobs, digest)) {
        Ok(content) => content,
        Err(_) => {
            report.error(path, format!("manifest {digest} has no stored bytes"));
            return Ok(());
        }
    };
    match ManifestSummary::parse(&content, Some(&record.media_type)) {
        Ok(summary) => {
            for blob in &summary.blobs {
                if !digest_path(&repo.join("_layers"), &blob.digest).is_file() {
                    report.error(
                        path,
                        format!(
                            "manifest {digest} references blob {} the repository does not hold",
                            blob.digest
                        ),
                    );
                }
            }
        }
        Err(e) => report.error(path, format!("stored manifest {digest} does not parse: {e}")),
    }
    Ok(())
}
