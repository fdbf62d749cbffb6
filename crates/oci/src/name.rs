//! Repository names and tags, validated against the distribution spec's grammar.
//!
//! These are the two identifiers a registry turns into storage keys, so the validation is strict:
//! a value that passes can be joined to a path without escaping the storage root (`..`, empty
//! components and leading `/` are all impossible by construction).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest repository name rbuild accepts, as the distribution spec advises.
pub const MAX_NAME_LEN: usize = 255;

/// Why a string is not a valid repository name or tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The repository name breaks the spec's grammar.
    #[error(
        "invalid repository name {0:?}: use lowercase letters and digits, separated by '.', '_', '__' or '-', in components joined by '/'"
    )]
    InvalidName(String),
    /// The repository name is longer than [`MAX_NAME_LEN`].
    #[error("repository name is {0} characters long; the limit is {MAX_NAME_LEN}")]
    NameTooLong(usize),
    /// The tag breaks the spec's grammar.
    #[error("invalid tag {0:?}: a tag is 1 to 128 of [A-Za-z0-9_.-] and does not start with '.' or '-'")]
    InvalidTag(String),
}

/// A repository name such as `library/busybox`, valid under the distribution spec.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated components, each a valid path segment.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

/// One component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let run_start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == run_start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[sep_start..i];
        let allowed = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !allowed {
            return false;
        }
    }
}

impl FromStr for RepositoryName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<RepositoryName, NameError> {
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::NameTooLong(s.len()));
        }
        if s.split('/').all(is_valid_component) {
            Ok(RepositoryName(s.to_owned()))
        } else {
            Err(NameError::InvalidName(s.to_owned()))
        }
    }
}

/// A tag such as `latest` or `1.36.1`: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Tag, NameError> {
        let bytes = s.as_bytes();
        let valid = (1..=128).contains(&bytes.len())
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::InvalidTag(s.to_owned()))
        }
    }
}

macro_rules! string_newtype_impls {
    ($ty:ty) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype_impls!(RepositoryName);
string_newtype_impls!(Tag);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for name in [
            "a",
            "busybox",
            "library/busybox",
            "a/b/c/d/e/f/g/h",
            "my-app",
            "my--app",
            "my_app",
            "my__app",
            "my.app",
            "0x/1.2/a-b_c__d",
        ] {
            assert!(name.parse::<RepositoryName>().is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_names_that_escape_or_break_grammar() {
        for name in [
            "", "../x", "a/../b", "a//b", "/a", "a/", "A", "a..b", "a___b", "a.-b", "-a", "a-", "_a", "a/.",
            "a/_x", ".", "a b", "a\\b", "a%2fb", "\u{e9}",
        ] {
            assert!(name.parse::<RepositoryName>().is_err(), "{name:?}");
        }
    }

    #[test]
    fn limits_name_length() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            long.parse::<RepositoryName>(),
            Err(NameError::NameTooLong(MAX_NAME_LEN + 1))
        );
        assert!("a".repeat(MAX_NAME_LEN).parse::<RepositoryName>().is_ok());
    }

    #[test]
    fn validates_tags() {
        for tag in ["latest", "1.36.1", "_x", "A-b.c_d", &"t".repeat(128)] {
            assert!(tag.parse::<Tag>().is_ok(), "{tag}");
        }
        for tag in ["", ".x", "-x", "a/b", "a:b", "../x", &"t".repeat(129)] {
            assert!(tag.parse::<Tag>().is_err(), "{tag:?}");
        }
    }
}
