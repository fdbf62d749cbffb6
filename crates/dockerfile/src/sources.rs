//! Classifying COPY/ADD sources (local path, HTTP URL, git repository) as
//! BuildKit's `dfgitutil.ParseGitRef` and `isHTTPSource` do.

use crate::plan::{CopyStep, Source};

/// `user@host:path` (scp-like git URL).
fn is_scp_git(s: &str) -> bool {
    let Some((user, rest)) = s.split_once('@') else {
        return false;
    };
    let Some((host, _)) = rest.split_once(':') else {
        return false;
    };
    !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    (!scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric())).then_some(scheme)
}

fn git(url: &str) -> Source {
    let (remote, fragment) = match url.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (url, None),
    };
    let (reference, subdir) = match fragment {
        Some(f) => {
            let (r, d) = f.split_once(':').map_or((f, None), |(r, d)| (r, Some(d)));
            let subdir = d.map(crate::paths::clean_under_root).filter(|d| !d.is_empty());
            (Some(r.to_string()).filter(|r| !r.is_empty()), subdir)
        }
        None => (None, None),
    };
    Source::Git {
        url: url.to_string(),
        remote: remote.to_string(),
        reference,
        subdir,
    }
}

/// What kind of source `src` is.
pub(crate) fn classify(src: &str) -> Result<Source, String> {
    let path = || Source::Path {
        path: src.to_string(),
    };
    if src.starts_with("./") || src.starts_with("../") || src.starts_with("github.com/") {
        return Ok(path());
    }
    match scheme(src).map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "https") => {
            let before_query = src.split(['?', '#']).next().unwrap_or(src);
            if before_query.ends_with(".git") {
                Ok(git(src))
            } else if src.starts_with("http://") || src.starts_with("https://") {
                Ok(Source::Url { url: src.to_string() })
            } else {
                Ok(path())
            }
        }
        Some("git" | "ssh") => Ok(git(src)),
        Some(_) => Ok(path()),
        None if is_scp_git(src) => Ok(git(src)),
        None => Ok(path()),
    }
}

/// ADD-only checks on `--checksum`.
pub(crate) fn check_add(c: &mut CopyStep) -> Result<(), String> {
    let Some(checksum) = c.checksum.as_deref().filter(|s| !s.is_empty()) else {
        c.checksum = None;
        return Ok(());
    };
    let [source] = c.sources.as_slice() else {
        return Err("checksum can't be specified for multiple sources".to_string());
    };
    if !c.inline.is_empty() {
        return Err("checksum can't be specified for multiple sources".to_string());
    }
    match source {
        Source::Path { .. } => Err("checksum requires HTTP(S) or Git sources".to_string()),
        Source::Git { .. } => Ok(()),
        Source::Url { .. } => {
            let valid = checksum.split_once(':').is_some_and(|(algo, hex)| {
                let len = match algo {
                    "sha256" => 64,
                    "sha384" => 96,
                    "sha512" => 128,
                    _ => 0,
                };
                len > 0 && hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            });
            if valid {
                Ok(())
            } else {
                Err(format!(
                    "invalid checksum digest {checksum:?}: use sha256:<64 lowercase hex digits>"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(matches!(classify("src/"), Ok(Source::Path { .. })));
        assert!(matches!(
            classify("https://example.com/a.tgz"),
            Ok(Source::Url { .. })
        ));
        assert!(matches!(classify("https://github.com/o/r.git#v1:sub"),
            Ok(Source::Git { reference: Some(r), subdir: Some(d), .. }) if r == "v1" && d == "sub"));
        assert!(matches!(
            classify("git@github.com:o/r.git"),
            Ok(Source::Git { .. })
        ));
        assert!(matches!(classify("ssh://git@host/r"), Ok(Source::Git { .. })));
        assert!(matches!(classify("github.com/o/r"), Ok(Source::Path { .. })));
        assert!(matches!(classify("ftp://x/y"), Ok(Source::Path { .. })));
    }
}
