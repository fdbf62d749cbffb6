//! Authorization: which identity may do what on which repository, from `[[auth.rules]]`.
//!
//! A rule names repositories by pattern (`*` within one path component, `**` across any
//! number), principals (users, `"*"` for every authenticated user, groups), and actions. A
//! request is allowed when any rule allows it. With no rules at all, every authenticated user
//! may do everything (distribution's htpasswd behaviour). Unauthenticated clients only ever
//! pull: from every repository with `anonymous_pull`, or from those of rules marked
//! `anonymous = true`.

use std::collections::HashMap;

use rbuild_glob::Syntax;

use super::{AuthError, Identity, Resource};
use crate::config::{Action, AuthConfig};

/// A compiled `[[auth.rules]]` entry.
#[derive(Debug)]
struct Rule {
    repositories: Vec<Pattern>,
    users: Vec<String>,
    groups: Vec<String>,
    actions: Vec<Action>,
    anonymous: bool,
    catalog: bool,
}

/// The authorization policy of a registry.
#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    member_of: HashMap<String, Vec<String>>,
    anonymous_pull: bool,
}

/// The actions a grant can hold, in the order tokens list them.
pub const ACTIONS: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

impl Policy {
    /// Compiles the rules of `config`, refusing patterns that could never match a name.
    pub fn from_config(config: &AuthConfig) -> Result<Policy, AuthError> {
        let mut member_of: HashMap<String, Vec<String>> = HashMap::new();
        for (group, members) in &config.groups {
            for member in members {
                member_of.entry(member.clone()).or_default().push(group.clone());
            }
        }
        let mut rules = Vec::new();
        for (i, rule) in config.rules.iter().enumerate() {
            let fail = |reason: String| AuthError::Config(format!("auth.rules[{i}]: {reason}"));
            for group in &rule.groups {
                if !config.groups.contains_key(group) {
                    return Err(fail(format!("group {group:?} is not defined in [auth.groups]")));
                }
            }
            if rule.actions.is_empty() && !rule.catalog {
                return Err(fail("no actions: the rule allows nothing".to_owned()));
            }
            rules.push(Rule {
                repositories: rule
                    .repositories
                    .iter()
                    .map(|p| Pattern::parse(p).map_err(fail))
                    .collect::<Result<_, _>>()?,
                users: rule.users.clone(),
                groups: rule.groups.clone(),
                actions: rule.actions.clone(),
                anonymous: rule.anonymous,
                catalog: rule.catalog,
            });
        }
        Ok(Policy {
            rules,
            member_of,
            anonymous_pull: config.anonymous_pull,
        })
    }

    fn applies_to(&self, rule: &Rule, who: &Identity) -> bool {
        match who {
            Identity::Anonymous => rule.anonymous,
            Identity::User(user) => {
                rule.users.iter().any(|u| u == "*" || u == user)
                    || self
                        .member_of
                        .get(user)
                        .is_some_and(|groups| groups.iter().any(|g| rule.groups.contains(g)))
            }
        }
    }

    /// Whether `who` may do `action` on `resource`.
    pub fn allows(&self, who: &Identity, resource: &Resource, action: Action) -> bool {
        let anonymous = matches!(who, Identity::Anonymous);
        if anonymous && action != Action::Pull {
            return false;
        }
        if let Resource::Repository(_) = resource
            && anonymous
            && self.anonymous_pull
        {
            return true;
        }
        if self.rules.is_empty() {
            return !anonymous;
        }
        self.rules
            .iter()
            .filter(|rule| self.applies_to(rule, who))
            .any(|rule| match resource {
                Resource::Catalog => rule.catalog,
                Resource::Repository(name) => {
                    rule.actions.iter().any(|a| *a == action || *a == Action::All)
                        && rule.repositories.iter().any(|p| p.matches(name))
                }
            })
    }

    /// The part of `wanted` that `who` holds on `resource` (a partial grant is not an error).
    pub fn grant(&self, who: &Identity, resource: &Resource, wanted: &[Action]) -> Vec<Action> {
        let wanted: Vec<Action> = if wanted.contains(&Action::All) {
            ACTIONS.to_vec()
        } else {
            wanted.to_vec()
        };
        match resource {
            Resource::Catalog => {
                if self.allows(who, resource, Action::Pull) {
                    vec![Action::All]
                } else {
                    Vec::new()
                }
            }
            Resource::Repository(_) => ACTIONS
                .into_iter()
                .filter(|a| wanted.contains(a) && self.allows(who, resource, *a))
                .collect(),
        }
    }
}

/// A repository pattern: `*` within one component, a `**` component for any number of them
/// (see [`Syntax::Components`]).
#[derive(Debug)]
struct Pattern(rbuild_glob::Pattern);

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        let refuse = |why: &str| format!("repository pattern {text:?}: {why}");
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-*".contains(c);
        if text.is_empty() || text.split('/').any(|s| s.is_empty() || !s.chars().all(valid)) {
            return Err(refuse(
                "use lower-case name components separated by '/', with * and **",
            ));
        }
        rbuild_glob::Pattern::new(text, Syntax::Components)
            .map(Pattern)
            .map_err(|e| refuse(&e.to_string()))
    }

    fn matches(&self, name: &str) -> bool {
        self.0.matches(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rule as RuleConfig;

    fn user(name: &str) -> Identity {
        Identity::User(name.to_owned())
    }

    fn repo(name: &str) -> Resource {
        Resource::Repository(name.to_owned())
    }

    #[test]
    fn patterns() {
        let cases = [
            ("a/*", "a/b", true),
            ("a/*", "a/b/c", false),
            ("a/**", "a/b/c", true),
            ("a/**", "a", true),
            ("**", "x/y/z", true),
            ("team-*/app", "team-x/app", true),
            ("team-*/app", "team-x/lib", false),
            ("*", "a/b", false),
            ("a/**/z", "a/z", true),
            ("a/**/z", "a/b/c/z", true),
            ("a/**/z", "a/b/c/y", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                Pattern::parse(pattern).unwrap().matches(name),
                expected,
                "{pattern} {name}"
            );
        }
        for bad in ["", "A", "a//b", "/a", "a b", "a/"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_rules_means_authenticated_users_do_everything() {
        let policy = Policy::from_config(&AuthConfig::default()).unwrap();
        for action in ACTIONS {
            assert!(policy.allows(&user("a"), &repo("x"), action));
            assert!(!policy.allows(&Identity::Anonymous, &repo("x"), action));
        }
        assert!(policy.allows(&user("a"), &Resource::Catalog, Action::Pull));
    }

    #[test]
    fn rules_groups_anonymous_and_partial_grants() {
        let mut config = AuthConfig::default();
        config.groups.insert("ci".into(), vec!["bot".into()]);
        config.rules = vec![
            RuleConfig {
                repositories: vec!["team/**".into()],
                groups: vec!["ci".into()],
                actions: vec![Action::Pull, Action::Push],
                ..Default::default()
            },
            RuleConfig {
                repositories: vec!["**".into()],
                users: vec!["*".into()],
                actions: vec![Action::Pull],
                ..Default::default()
            },
            RuleConfig {
                repositories: vec!["public/*".into()],
                anonymous: true,
                actions: vec![Action::All],
                ..Default::default()
            },
            RuleConfig {
                users: vec!["admin".into()],
                repositories: vec!["**".into()],
                actions: vec![Action::All],
                catalog: true,
                ..Default::default()
            },
        ];
        let policy = Policy::from_config(&config).unwrap();
        assert!(policy.allows(&user("bot"), &repo("team/app"), Action::Push));
        assert!(!policy.allows(&user("bot"), &repo("team/app"), Action::Delete));
        assert!(!policy.allows(&user("bot"), &repo("other"), Action::Push));
        assert!(policy.allows(&user("alice"), &repo("other"), Action::Pull));
        assert!(!policy.allows(&user("alice"), &repo("team/app"), Action::Push));
        assert!(policy.allows(&Identity::Anonymous, &repo("public/x"), Action::Pull));
        assert!(!policy.allows(&Identity::Anonymous, &repo("public/x"), Action::Push));
        assert!(!policy.allows(&Identity::Anonymous, &repo("private"), Action::Pull));
        assert!(policy.allows(&user("admin"), &repo("any/thing"), Action::Delete));
        assert!(policy.allows(&user("admin"), &Resource::Catalog, Action::Pull));
        assert!(!policy.allows(&user("bot"), &Resource::Catalog, Action::Pull));

        assert_eq!(
            policy.grant(&user("alice"), &repo("team/app"), &[Action::Pull, Action::Push]),
            [Action::Pull]
        );
        assert_eq!(
            policy.grant(&user("admin"), &repo("x"), &[Action::All]),
            [Action::Pull, Action::Push, Action::Delete]
        );
        assert!(
            policy
                .grant(&Identity::Anonymous, &repo("x"), &[Action::Pull])
                .is_empty()
        );
        assert_eq!(
            policy.grant(&user("admin"), &Resource::Catalog, &[Action::All]),
            [Action::All]
        );

        config.anonymous_pull = true;
        let open = Policy::from_config(&config).unwrap();
        assert!(open.allows(&Identity::Anonymous, &repo("private"), Action::Pull));
        assert!(!open.allows(&Identity::Anonymous, &repo("private"), Action::Push));
        assert!(!open.allows(&Identity::Anonymous, &Resource::Catalog, Action::Pull));
    }

    #[test]
    fn refuses_undefined_groups_and_empty_rules() {
        let mut config = AuthConfig {
            rules: vec![RuleConfig {
                groups: vec!["nope".into()],
                actions: vec![Action::Pull],
                ..Default::default()
            }],
            ..AuthConfig::default()
        };
        assert!(Policy::from_config(&config).is_err());
        config.rules = vec![RuleConfig::default()];
        assert!(Policy::from_config(&config).is_err());
    }
}
