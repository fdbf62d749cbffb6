//! Retention policies compiled for matching: which policy a repository falls under, and
//! which of its tags the policy lets go.

use std::time::Duration;

use rbuild_glob::{Pattern, Syntax};
use rbuild_oci::RepositoryName;

use super::GcError;
use super::config::GcConfig;
use crate::storage::TagInfo;

/// One `[[gc.retention]]` entry, its patterns compiled.
#[derive(Debug)]
pub(crate) struct Policy {
    repositories: Pattern,
    tags: Option<Pattern>,
    keep_last_tags: Option<usize>,
    /// From `delete_untagged_after_secs`.
    pub(crate) untagged_after: Option<Duration>,
}

fn compile(text: &str, syntax: Syntax) -> Result<Pattern, GcError> {
    Pattern::new(text, syntax).map_err(|source| GcError::Pattern {
        pattern: text.to_owned(),
        source,
    })
}

/// Every policy of a configuration, in order.
pub(crate) fn policies(config: &GcConfig) -> Result<Vec<Policy>, GcError> {
    config
        .retention
        .iter()
        .map(|p| {
            Ok(Policy {
                repositories: compile(&p.repositories, Syntax::Components)?,
                tags: p
                    .tag_pattern
                    .as_deref()
                    .map(|t| compile(t, Syntax::FilepathMatch))
                    .transpose()?,
                keep_last_tags: p.keep_last_tags,
                untagged_after: p.delete_untagged_after_secs.map(Duration::from_secs),
            })
        })
        .collect()
}

/// The first policy whose pattern matches `repo`.
pub(crate) fn policy_for<'a>(policies: &'a [Policy], repo: &RepositoryName) -> Option<&'a Policy> {
    policies.iter().find(|p| p.repositories.matches(repo.as_str()))
}

impl Policy {
    /// The tags the policy removes: of those its pattern matches, all but the `keep_last_tags`
    /// most recently pushed (ties broken by name, so a run is repeatable).
    pub(crate) fn expired_tags(&self, tags: &[TagInfo]) -> Vec<TagInfo> {
        let Some(keep) = self.keep_last_tags else {
            return Vec::new();
        };
        let mut matching: Vec<&TagInfo> = tags
            .iter()
            .filter(|t| self.tags.as_ref().is_none_or(|p| p.matches(t.tag.as_str())))
            .collect();
        matching.sort_by(|a, b| b.touched.cmp(&a.touched).then_with(|| a.tag.cmp(&b.tag)));
        matching.into_iter().skip(keep).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use rbuild_oci::Digest;

    use super::*;
    use crate::gc::config::RetentionPolicy;

    fn config(policies: &[(&str, Option<&str>, Option<usize>)]) -> GcConfig {
        GcConfig {
            retention: policies
                .iter()
                .map(|(repositories, tag_pattern, keep_last_tags)| RetentionPolicy {
                    repositories: (*repositories).to_owned(),
                    tag_pattern: tag_pattern.map(str::to_owned),
                    keep_last_tags: *keep_last_tags,
                    delete_untagged_after_secs: None,
                })
                .collect(),
            ..GcConfig::default()
        }
    }

    fn tag(name: &str, age_secs: u64) -> TagInfo {
        TagInfo {
            tag: name.parse().unwrap(),
            digest: Digest::sha256_of(name.as_bytes()),
            touched: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age_secs),
        }
    }

    #[test]
    fn the_first_matching_policy_applies() {
        let policies = policies(&config(&[("ci/**", None, Some(1)), ("**", None, None)])).unwrap();
        let name = |s: &str| s.parse::<RepositoryName>().unwrap();
        assert_eq!(
            policy_for(&policies, &name("ci/app/web")).unwrap().keep_last_tags,
            Some(1)
        );
        assert_eq!(policy_for(&policies, &name("cia")).unwrap().keep_last_tags, None);
        let only_ci = self::policies(&config(&[("ci/*", None, Some(1))])).unwrap();
        assert!(policy_for(&only_ci, &name("ci/a/b")).is_none());
    }

    #[test]
    fn keeps_the_most_recent_matching_tags_and_every_other_tag() {
        let policies = policies(&config(&[("**", Some("pr-*"), Some(2))])).unwrap();
        let tags = [
            tag("pr-1", 50),
            tag("pr-2", 40),
            tag("pr-3", 30),
            tag("pr-4", 20),
            tag("latest", 100),
            tag("v1.0", 90),
        ];
        let expired: Vec<String> = policies[0]
            .expired_tags(&tags)
            .iter()
            .map(|t| t.tag.to_string())
            .collect();
        assert_eq!(expired, ["pr-2", "pr-1"]);
    }

    #[test]
    fn without_keep_last_tags_no_tag_expires_and_bad_patterns_are_refused() {
        let policies = policies(&config(&[("**", None, None)])).unwrap();
        assert!(policies[0].expired_tags(&[tag("a", 1), tag("b", 2)]).is_empty());
        let zero = self::policies(&config(&[("**", None, Some(0))])).unwrap();
        assert_eq!(zero[0].expired_tags(&[tag("a", 1), tag("b", 2)]).len(), 2);
        let err = self::policies(&config(&[("**", Some("[z-a"), Some(1))])).unwrap_err();
        assert!(err.to_string().contains("[z-a"), "{err}");
    }
}
