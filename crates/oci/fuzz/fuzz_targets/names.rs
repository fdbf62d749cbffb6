//! Any text as a reference, repository name, tag and digest: parsing returns, never panics,
//! and whatever parses prints as text that parses back to the same value. A repository name
//! that parses has no component that could step out of a directory (`.`, `..`, empty). Any
//! bytes as a manifest: summarising returns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_oci::{Digest, ManifestSummary, Reference, RepositoryName, Tag};

fn round_trips<T>(text: &str)
where
    T: std::str::FromStr + std::fmt::Display + std::fmt::Debug + PartialEq,
{
    if let Ok(value) = text.parse::<T>() {
        let printed = value.to_string();
        let again: T = printed
            .parse()
            .unwrap_or_else(|_| panic!("{text:?} parsed, but its printed form {printed:?} does not"));
        assert_eq!(again, value, "{text:?} printed as {printed:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = ManifestSummary::parse(data, None);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    round_trips::<Reference>(text);
    round_trips::<RepositoryName>(text);
    round_trips::<Tag>(text);
    round_trips::<Digest>(text);
    if let Ok(name) = text.parse::<RepositoryName>() {
        for component in name.components() {
            assert!(
                !component.is_empty() && component != "." && component != ".." && !component.contains('\0'),
                "{text:?} parsed with the component {component:?}"
            );
        }
    }
});
