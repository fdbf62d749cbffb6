//! Validation of image references (`alpine`, `ghcr.io/o/r:1.2@sha256:...`)
//! with the grammar of distribution/reference, so a bad FROM fails while
//! planning, with its line, instead of at pull time.

use std::sync::OnceLock;

fn grammar() -> Option<&'static regex::Regex> {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        let alnum = "[a-z0-9]+";
        let separator = "(?:[._]|__|[-]+)";
        let component = format!("{alnum}(?:{separator}{alnum})*");
        let domain_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let host = format!(r"(?:{domain_component}(?:\.{domain_component})*|\[[a-fA-F0-9:]+\])");
        let domain = format!("{host}(?::[0-9]+)?");
        let name = format!("(?:{domain}/)?{component}(?:/{component})*");
        // Go's `\w` is ASCII; Rust's is Unicode (and far costlier to compile).
        let tag = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
        let digest = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
        regex::Regex::new(&format!("^({name})(?::({tag}))?(?:@({digest}))?$")).ok()
    })
    .as_ref()
}

/// Checks that `reference` is a valid image reference; the error says why not.
pub(crate) fn validate(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("the image name is empty".to_string());
    }
    if reference.len() == 64 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid repository name ({reference}), cannot specify 64-byte hexadecimal strings"
        ));
    }
    let Some(re) = grammar() else {
        return Ok(());
    };
    match re.captures(reference) {
        Some(c) if c.get(1).is_some_and(|n| n.as_str().len() > 255) => {
            Err("repository name must not be more than 255 characters".to_string())
        }
        Some(_) => Ok(()),
        None if re.is_match(&reference.to_lowercase()) => Err(format!(
            "invalid reference format: repository name ({reference}) must be lowercase"
        )),
        None => Err(format!("invalid reference format: {reference:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn valid_references() {
        for r in [
            "alpine",
            "alpine:3.20",
            "library/alpine",
            "docker.io/library/alpine:latest",
            "ghcr.io/owner/repo/sub:v1.2.3",
            "localhost:5000/app",
            "registry.example.com:443/a_b/c-d/e__f:t",
            "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "scratch",
        ] {
            assert!(validate(r).is_ok(), "{r}");
        }
    }

    #[test]
    fn invalid_references() {
        for r in [
            "",
            "Alpine",
            "alpine:",
            "a//b",
            "-a",
            "alpine:tag with space",
            ":x",
        ] {
            assert!(validate(r).is_err(), "{r}");
        }
        assert!(validate("Alpine").is_err_and(|e| e.contains("lowercase")));
    }
}
