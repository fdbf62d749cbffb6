//! Build-check findings raised while parsing and planning.
//!
//! The parser and planner notice most of what BuildKit's linter reports
//! (they are the ones that see the casing of a keyword or an undefined
//! variable), so they record findings here; the [`crate::check`] module
//! filters them through the `# check=` directive and renders them.

use serde::Serialize;

use crate::span::Span;

/// A build-check rule. Names and documentation links are BuildKit's, so a
/// user can look a rule up on docs.docker.com and skip it with the same
/// `# check=skip=<Name>` line under `docker build` and rbuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Rule {
    /// CMD/ENTRYPOINT in shell form.
    JSONArgsRecommended,
    /// A variable used before it is defined.
    UndefinedVar,
    /// FROM uses an ARG that was not declared before the first FROM.
    UndefinedArgInFrom,
    /// A global ARG's default makes the FROM image empty or invalid.
    InvalidDefaultArgInFrom,
    /// Two stages with one name.
    DuplicateStageName,
    /// A stage named `scratch` or `context`.
    ReservedStageName,
    /// A stage name with upper-case letters.
    StageNameCasing,
    /// `FROM ... as` with casing that differs from FROM's.
    FromAsCasing,
    /// Keywords whose casing differs from the majority.
    ConsistentInstructionCasing,
    /// MAINTAINER is deprecated.
    MaintainerDeprecated,
    /// The first WORKDIR of the file is relative.
    WorkdirRelativePath,
    /// `ENV key value` / `LABEL key value` legacy form.
    LegacyKeyValueFormat,
    /// Several CMD, ENTRYPOINT or HEALTHCHECK in one stage.
    MultipleInstructionsDisallowed,
    /// An empty line inside a continued instruction.
    NoEmptyContinuation,
    /// An ARG or ENV whose name suggests a secret.
    SecretsUsedInArgOrEnv,
    /// `FROM --platform=$TARGETPLATFORM`, which is the default anyway.
    RedundantTargetPlatform,
    /// `FROM --platform=linux/amd64` with a constant.
    FromPlatformFlagConstDisallowed,
    /// COPY/ADD of a path that .dockerignore excludes.
    CopyIgnoredFile,
    /// EXPOSE with an upper-case protocol.
    ExposeProtoCasing,
    /// EXPOSE with an IP address or host port.
    ExposeInvalidFormat,
    /// A `# syntax=` image other than BuildKit's Dockerfile frontend; rbuild
    /// uses its built-in frontend anyway. (rbuild's own rule.)
    UnsupportedSyntax,
}

impl Rule {
    /// All rules, in documentation order.
    pub const ALL: [Rule; 21] = [
        Rule::JSONArgsRecommended,
        Rule::UndefinedVar,
        Rule::UndefinedArgInFrom,
        Rule::InvalidDefaultArgInFrom,
        Rule::DuplicateStageName,
        Rule::ReservedStageName,
        Rule::StageNameCasing,
        Rule::FromAsCasing,
        Rule::ConsistentInstructionCasing,
        Rule::MaintainerDeprecated,
        Rule::WorkdirRelativePath,
        Rule::LegacyKeyValueFormat,
        Rule::MultipleInstructionsDisallowed,
        Rule::NoEmptyContinuation,
        Rule::SecretsUsedInArgOrEnv,
        Rule::RedundantTargetPlatform,
        Rule::FromPlatformFlagConstDisallowed,
        Rule::CopyIgnoredFile,
        Rule::ExposeProtoCasing,
        Rule::ExposeInvalidFormat,
        Rule::UnsupportedSyntax,
    ];

    /// The rule's name as used in `# check=skip=` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Rule::JSONArgsRecommended => "JSONArgsRecommended",
            Rule::UndefinedVar => "UndefinedVar",
            Rule::UndefinedArgInFrom => "UndefinedArgInFrom",
            Rule::InvalidDefaultArgInFrom => "InvalidDefaultArgInFrom",
            Rule::DuplicateStageName => "DuplicateStageName",
            Rule::ReservedStageName => "ReservedStageName",
            Rule::StageNameCasing => "StageNameCasing",
            Rule::FromAsCasing => "FromAsCasing",
            Rule::ConsistentInstructionCasing => "ConsistentInstructionCasing",
            Rule::MaintainerDeprecated => "MaintainerDeprecated",
            Rule::WorkdirRelativePath => "WorkdirRelativePath",
            Rule::LegacyKeyValueFormat => "LegacyKeyValueFormat",
            Rule::MultipleInstructionsDisallowed => "MultipleInstructionsDisallowed",
            Rule::NoEmptyContinuation => "NoEmptyContinuation",
            Rule::SecretsUsedInArgOrEnv => "SecretsUsedInArgOrEnv",
            Rule::RedundantTargetPlatform => "RedundantTargetPlatform",
            Rule::FromPlatformFlagConstDisallowed => "FromPlatformFlagConstDisallowed",
            Rule::CopyIgnoredFile => "CopyIgnoredFile",
            Rule::ExposeProtoCasing => "ExposeProtoCasing",
            Rule::ExposeInvalidFormat => "ExposeInvalidFormat",
            Rule::UnsupportedSyntax => "UnsupportedSyntax",
        }
    }

    /// One line saying what the rule is about (BuildKit's description).
    pub fn description(self) -> &'static str {
        match self {
            Rule::JSONArgsRecommended => {
                "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals"
            }
            Rule::UndefinedVar => "Variables should be defined before their use",
            Rule::UndefinedArgInFrom => "FROM command must use declared ARGs",
            Rule::InvalidDefaultArgInFrom => {
                "Default value for global ARG results in an empty or invalid base image name"
            }
            Rule::DuplicateStageName => "Stage names should be unique",
            Rule::ReservedStageName => "Reserved words should not be used as stage names",
            Rule::StageNameCasing => "Stage names should be lowercase",
            Rule::FromAsCasing => "The 'as' keyword should match the case of the 'from' keyword",
            Rule::ConsistentInstructionCasing => {
                "All commands within the Dockerfile should use the same casing (either upper or lower)"
            }
            Rule::MaintainerDeprecated => {
                "The MAINTAINER instruction is deprecated, use a label instead to define an image author"
            }
            Rule::WorkdirRelativePath => {
                "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes"
            }
            Rule::LegacyKeyValueFormat => {
                "Legacy key/value format with whitespace separator should not be used"
            }
            Rule::MultipleInstructionsDisallowed => {
                "Multiple instructions of the same type should not be used in the same stage"
            }
            Rule::NoEmptyContinuation => "Empty continuation lines will become errors in a future release",
            Rule::SecretsUsedInArgOrEnv => "Sensitive data should not be used in the ARG or ENV commands",
            Rule::RedundantTargetPlatform => {
                "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"
            }
            Rule::FromPlatformFlagConstDisallowed => "FROM --platform flag should not use a constant value",
            Rule::CopyIgnoredFile => "Attempting to Copy file that is excluded by .dockerignore",
            Rule::ExposeProtoCasing => "Protocol in EXPOSE instruction should be lowercase",
            Rule::ExposeInvalidFormat => {
                "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release"
            }
            Rule::UnsupportedSyntax => {
                "rbuild always uses its built-in Dockerfile frontend; other syntax images are ignored"
            }
        }
    }

    /// The documentation page for the rule.
    pub fn url(self) -> String {
        let name = self.name();
        let mut kebab = String::with_capacity(name.len() + 4);
        let chars: Vec<char> = name.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            // "JSONArgs" → "json-args": a capital starts a word when it
            // follows a lower-case letter or precedes one after a capital run.
            let starts_word = c.is_ascii_uppercase()
                && i > 0
                && (chars[i - 1].is_ascii_lowercase()
                    || chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()));
            if starts_word {
                kebab.push('-');
            }
            kebab.push(c.to_ascii_lowercase());
        }
        format!("https://docs.docker.com/go/dockerfile/rule/{kebab}/")
    }

    /// Looks a rule up by its name (case-sensitive, as BuildKit does).
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// One finding: which rule, where, and the message for this occurrence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lint {
    /// The rule that fired.
    pub rule: Rule,
    /// Where (the instruction's lines).
    pub span: Span,
    /// The message for this occurrence, e.g. "Usage of undefined variable '$FOO'".
    pub message: String,
}

impl Lint {
    pub(crate) fn new(rule: Rule, span: Span, message: impl Into<String>) -> Self {
        Lint {
            rule,
            span,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_kebab_case() {
        assert_eq!(
            Rule::JSONArgsRecommended.url(),
            "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
        );
        assert_eq!(
            Rule::FromPlatformFlagConstDisallowed.url(),
            "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/"
        );
        assert_eq!(
            Rule::UndefinedVar.url(),
            "https://docs.docker.com/go/dockerfile/rule/undefined-var/"
        );
    }

    #[test]
    fn names_round_trip() {
        for r in Rule::ALL {
            assert_eq!(Rule::from_name(r.name()), Some(r));
        }
    }
}
