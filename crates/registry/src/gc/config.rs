//! `[gc]` and `[[gc.retention]]`: when garbage collection runs and what retention keeps.
//!
//! ```toml
//! [gc]
//! grace_secs = 3600        # nothing stored or used this recently is removed
//! interval_secs = 86400    # optional: `rbuild serve` collects this often
//! delete_untagged = true   # remove manifests nothing keeps, once past the grace period
//!
//! [[gc.retention]]         # first policy whose pattern matches a repository applies
//! repositories = "ci/**"
//! tag_pattern = "pr-*"     # the tags keep_last_tags counts (default: every tag)
//! keep_last_tags = 10      # most recently pushed matching tags kept; older ones removed
//! delete_untagged_after_secs = 604800
//! ```

use serde::{Deserialize, Serialize};

/// Garbage collection settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Blobs, links and manifests stored or used within this many seconds before a
    /// collection starts are never removed by it. It must exceed the longest time a client
    /// takes between uploading a blob and pushing the manifest that names it.
    pub grace_secs: u64,
    /// When set, `rbuild serve` runs a collection this often.
    pub interval_secs: Option<u64>,
    /// Whether manifests that no tag, index or subject keeps are removed (past the grace
    /// period, or a policy's `delete_untagged_after_secs`).
    pub delete_untagged: bool,
    /// Retention policies; the first whose `repositories` matches applies.
    pub retention: Vec<RetentionPolicy>,
}

impl Default for GcConfig {
    fn default() -> GcConfig {
        GcConfig {
            grace_secs: 60 * 60,
            interval_secs: None,
            delete_untagged: true,
            retention: Vec::new(),
        }
    }
}

/// What one retention policy keeps, in the repositories it matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Repository pattern: `*` within one name component, a `**` component for any number.
    pub repositories: String,
    /// Tags the policy counts (Go `filepath.Match` syntax); others are always kept.
    #[serde(default)]
    pub tag_pattern: Option<String>,
    /// How many of the matching tags to keep, most recently pushed first; unset keeps all.
    #[serde(default)]
    pub keep_last_tags: Option<usize>,
    /// Untagged manifests are removed once this old (and past the grace period).
    #[serde(default)]
    pub delete_untagged_after_secs: Option<u64>,
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn reads_the_gc_section_and_policies() {
        let c: Config = toml::from_str(
            r#"
            [gc]
            grace_secs = 60
            interval_secs = 600
            [[gc.retention]]
            repositories = "ci/**"
            tag_pattern = "pr-*"
            keep_last_tags = 3
            delete_untagged_after_secs = 86400
            [[gc.retention]]
            repositories = "**"
            "#,
        )
        .unwrap();
        assert_eq!(c.gc.grace_secs, 60);
        assert_eq!(c.gc.interval_secs, Some(600));
        assert!(c.gc.delete_untagged);
        assert_eq!(c.gc.retention[0].keep_last_tags, Some(3));
        assert_eq!(c.gc.retention[1].tag_pattern, None);
        assert_eq!(Config::default().gc.grace_secs, 3600);
        assert!(toml::from_str::<Config>("[gc]\ngrace = 1\n").is_err());
        assert!(toml::from_str::<Config>("[[gc.retention]]\nkeep_last_tags = 1\n").is_err());
    }
}
