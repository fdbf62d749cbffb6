//! What ADD does beyond COPY: `ADD <url>` downloads (checked against `--checksum`), local tar
//! archives extracted rather than copied, and git sources refused with what to do instead.

use rbuild_dockerfile::plan::{CopyStep, Source};

use crate::copy::{self, Selection};
use crate::error::{BuildError, Result};
use crate::rootfs::RootfsView;
use crate::solve::StepContext;

/// ADD of a git repository is not supported: says so, and what to do instead.
pub(super) fn refuse_git(copy: &CopyStep) -> Result<()> {
    match copy.sources.iter().find(|s| matches!(s, Source::Git { .. })) {
        Some(Source::Git { url, .. }) => Err(BuildError::GitSource(url.clone())),
        _ => Ok(()),
    }
}

/// ADD <url>: each URL downloaded (every build: the content decides the cache key), checked
/// against `--checksum`, and named after the URL's last path segment; docker gives it mode
/// 0600 and the server's `Last-Modified` as its mtime.
pub(super) fn download_urls(cx: &StepContext<'_>, copy: &CopyStep) -> Result<Vec<copy::Selected>> {
    let solver = cx.solver;
    let mut downloaded = Vec::new();
    for source in &copy.sources {
        let Source::Url { url } = source else { continue };
        // The scratch directory is the build's, shared by stages running at once: each
        // download gets a name no other can have.
        let scratch = solver.scratch()?;
        let file = tempfile::Builder::new()
            .prefix("download-")
            .tempfile_in(scratch)
            .and_then(|f| f.into_temp_path().keep().map_err(|e| e.error))
            .map_err(|e| BuildError::io(format!("creating a file in {}", scratch.display()), e))?;
        let (digest, modified) =
            tokio::runtime::Handle::current().block_on(solver.remote.download(url, &file))?;
        if let Some(expected) = &copy.checksum
            && expected != &digest.to_string()
        {
            return Err(BuildError::ChecksumMismatch {
                url: url.clone(),
                expected: expected.clone(),
                actual: digest,
            });
        }
        let name = file_name(url)
            .ok_or_else(|| BuildError::UrlWithoutFileName(url.clone()))?
            .to_owned();
        downloaded.push(copy::Selected::listed(
            url.clone(),
            name,
            vec![copy::Node {
                relative: String::new(),
                kind: copy::NodeKind::File { disk: file, digest },
                mode: 0o600,
                mtime: modified.unwrap_or(solver.now),
                owner: None,
            }],
        ));
    }
    Ok(downloaded)
}

/// The file name a download takes: the URL's last path segment.
fn file_name(url: &str) -> Option<&str> {
    url.split(['?', '#'])
        .next()
        .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
        .filter(|n| !n.is_empty() && !n.contains(':'))
}

/// Local tar archives (plain or compressed) are extracted, not copied, unless
/// `--unpack=false`; downloads are extracted only with `--unpack=true`.
pub(super) fn unpack_archives(
    cx: &StepContext<'_>,
    mut selection: Selection,
    unpack: Option<bool>,
) -> Result<Selection> {
    for root in &mut selection.roots {
        let remote = root.path.starts_with("http://") || root.path.starts_with("https://");
        if unpack == Some(false) || (remote && unpack != Some(true)) {
            continue;
        }
        let Some(disk) = root.root_file() else {
            continue;
        };
        if rbuild_layer::sniff_archive(&disk)
            .map_err(|e| BuildError::io(format!("reading {}", disk.display()), e))?
            .is_none()
        {
            continue;
        }
        let dest = tempfile::tempdir_in(cx.solver.scratch()?)
            .map_err(|e| BuildError::io("creating a directory for an archive", e))?
            .keep();
        let options = rbuild_layer::UnpackOptions {
            whiteouts: rbuild_layer::WhiteoutMode::Apply,
            same_owner: crate::snapshot::is_root(),
        };
        rbuild_layer::extract_archive(&disk, &dest, &options).map_err(|source| BuildError::Extract {
            path: root.path.clone(),
            source,
        })?;
        let view = RootfsView::new(vec![dest]);
        let mut extracted = copy::select_rootfs(&view, &root.path, "", None)?;
        if let Some(mut tree) = extracted.pop() {
            tree.path = root.path.clone();
            tree.name = root.name.clone();
            *root = tree;
        }
    }
    Ok(selection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_is_named_after_the_last_path_segment() {
        let cases = [
            ("https://example.test/a/b/tool.tar.gz", Some("tool.tar.gz")),
            ("https://example.test/a/file?x=1#frag", Some("file")),
            ("https://example.test/dir/", Some("dir")),
            ("https://example.test", Some("example.test")),
            ("https://", None),
        ];
        for (url, expected) in cases {
            assert_eq!(file_name(url), expected, "{url}");
        }
    }
}
