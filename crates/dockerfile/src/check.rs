//! `rbuild check`: parse and plan without building, and report problems the
//! way BuildKit's build checks do (same rule names, messages and links,
//! honouring `# check=skip=...;error=true`).

use serde::Serialize;

use crate::ast::Span;
use crate::directives::{self, CheckConfig};
use crate::lint::{Lint, Rule};
use crate::plan::{NoResolver, PlanOptions};
use crate::stages::plan_with_lints;

/// Inputs of a check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The file name to show in messages.
    pub file_name: String,
    /// Build arguments, target and .dockerignore (through
    /// [`PlanOptions::dockerignore`], for `CopyIgnoredFile`). With no
    /// target, every stage is checked.
    pub plan: PlanOptions,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            file_name: "Dockerfile".to_string(),
            plan: PlanOptions::default(),
        }
    }
}

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A build-check warning.
    Warning,
    /// The Dockerfile cannot be built.
    Error,
}

/// One reported problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The rule name (`UndefinedVar`), or `None` for a parse/plan error.
    pub rule: Option<String>,
    /// Warning or error.
    pub severity: Severity,
    /// Where.
    pub span: Span,
    /// What, for this occurrence.
    pub message: String,
    /// The rule's general description.
    pub description: Option<String>,
    /// How to fix it.
    pub help: Option<String>,
    /// The rule's documentation page.
    pub url: Option<String>,
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The file name given in the options.
    pub file: String,
    /// Problems found, by line.
    pub diagnostics: Vec<Diagnostic>,
    /// `# check=error=true`: warnings make the check fail.
    pub warnings_are_errors: bool,
}

impl CheckReport {
    /// Whether `rbuild check` should exit with status 1.
    pub fn failed(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error || self.warnings_are_errors)
    }

    /// The process exit status for the report (0 or 1).
    pub fn exit_code(&self) -> i32 {
        i32::from(self.failed())
    }

    /// Pretty JSON, stable for tooling.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// rustc-style text: location, source line, caret, message, help.
    pub fn render(&self, source: &str) -> String {
        let lines: Vec<&str> = source
            .strip_prefix('\u{feff}')
            .unwrap_or(source)
            .lines()
            .collect();
        let mut out = String::new();
        for d in &self.diagnostics {
            let level = match (d.severity, self.warnings_are_errors) {
                (Severity::Error, _) | (Severity::Warning, true) => "error",
                (Severity::Warning, false) => "warning",
            };
            match &d.rule {
                Some(rule) => out.push_str(&format!("{level}[{rule}]: {}\n", d.message)),
                None => out.push_str(&format!("{level}: {}\n", d.message)),
            }
            let line_no = d.span.start_line;
            out.push_str(&format!(" --> {}:{}:{}\n", self.file, line_no, d.span.column));
            if let Some(text) = line_no.checked_sub(1).and_then(|i| lines.get(i)) {
                let gutter = " ".repeat(line_no.to_string().len());
                let start = d.span.column.saturating_sub(1);
                let width = text.chars().count().saturating_sub(start).max(1);
                out.push_str(&format!("{gutter} |\n{line_no} | {text}\n"));
                out.push_str(&format!(
                    "{gutter} | {}{}\n",
                    " ".repeat(start),
                    "^".repeat(width)
                ));
            }
            if let Some(help) = &d.help {
                out.push_str(&format!("  = help: {help}\n"));
            }
            if let Some(url) = &d.url {
                out.push_str(&format!("  = note: {url}\n"));
            }
            out.push('\n');
        }
        let errors = self
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        let warnings = self.diagnostics.len() - errors;
        out.push_str(&format!(
            "{}: {} error{}, {} warning{}{}\n",
            self.file,
            errors,
            if errors == 1 { "" } else { "s" },
            warnings,
            if warnings == 1 { "" } else { "s" },
            if self.warnings_are_errors && warnings > 0 {
                " (check=error=true: warnings fail the check)"
            } else {
                ""
            }
        ));
        out
    }
}

fn help(rule: Rule) -> &'static str {
    match rule {
        Rule::JSONArgsRecommended => {
            "use the exec form, e.g. CMD [\"executable\", \"arg\"], so the process receives signals"
        }
        Rule::UndefinedVar => "declare the variable with ARG or ENV before this line",
        Rule::UndefinedArgInFrom => "declare it with ARG before the first FROM",
        Rule::InvalidDefaultArgInFrom => "give the global ARG a default that makes a valid image name",
        Rule::DuplicateStageName => "give each stage its own name",
        Rule::ReservedStageName => "choose another name: `scratch` and `context` are reserved",
        Rule::StageNameCasing => "write the stage name in lowercase",
        Rule::FromAsCasing => "write AS in the same case as FROM",
        Rule::ConsistentInstructionCasing => "write every instruction in the same case",
        Rule::MaintainerDeprecated => "use LABEL org.opencontainers.image.authors=\"name <email>\"",
        Rule::WorkdirRelativePath => "use an absolute path, e.g. WORKDIR /app",
        Rule::LegacyKeyValueFormat => "write key=value",
        Rule::MultipleInstructionsDisallowed => {
            "remove this instruction: a later one in the stage replaces it"
        }
        Rule::NoEmptyContinuation => "remove the empty line, or end the instruction before it",
        Rule::SecretsUsedInArgOrEnv => {
            "pass secrets with RUN --mount=type=secret; ARG and ENV values stay in the image"
        }
        Rule::RedundantTargetPlatform => "remove --platform=$TARGETPLATFORM",
        Rule::FromPlatformFlagConstDisallowed => {
            "use a variable such as $BUILDPLATFORM, or name the stage after the platform"
        }
        Rule::CopyIgnoredFile => "remove the path from .dockerignore or from the instruction",
        Rule::ExposeProtoCasing => "write the protocol in lowercase, e.g. 53/udp",
        Rule::ExposeInvalidFormat => "EXPOSE only the container port, e.g. EXPOSE 80/tcp",
        Rule::UnsupportedSyntax => "use # syntax=docker/dockerfile:1 or remove the line",
    }
}

fn diagnostic(lint: &Lint) -> Diagnostic {
    Diagnostic {
        rule: Some(lint.rule.name().to_string()),
        severity: Severity::Warning,
        span: lint.span,
        message: lint.message.clone(),
        description: Some(lint.rule.description().to_string()),
        help: Some(help(lint.rule).to_string()),
        url: (lint.rule != Rule::UnsupportedSyntax).then(|| lint.rule.url()),
    }
}

fn error(span: Span, message: String) -> Diagnostic {
    Diagnostic {
        rule: None,
        severity: Severity::Error,
        span,
        message,
        description: None,
        help: None,
        url: None,
    }
}

/// Checks a Dockerfile. Never fails: problems, including syntax errors,
/// are diagnostics in the report.
pub fn check(text: &str, options: &CheckOptions) -> CheckReport {
    let mut report = CheckReport {
        file: options.file_name.clone(),
        diagnostics: Vec::new(),
        warnings_are_errors: false,
    };
    let check_value = options
        .plan
        .build_args
        .get("BUILDKIT_DOCKERFILE_CHECK")
        .cloned()
        .or_else(|| directives::detect(text, "check").map(|d| d.value));
    let config = match check_value.as_deref().map(CheckConfig::parse) {
        None => CheckConfig::default(),
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            let line = directives::detect(text, "check").map_or(1, |d| d.line);
            report
                .diagnostics
                .push(error(Span::lines(line, line), e.to_string()));
            return report;
        }
    };
    report.warnings_are_errors = config.error;
    let dockerfile = match crate::parse(text) {
        Ok(d) => d,
        Err(e) => {
            report.diagnostics.push(error(e.span, e.kind.to_string()));
            return report;
        }
    };
    let mut opts = options.plan.clone();
    opts.all_stages = opts.target.is_none();
    let mut lints = dockerfile.lints.clone();
    let (result, plan_lints) = plan_with_lints(&dockerfile, &opts, &NoResolver);
    lints.extend(plan_lints);
    if let Err(e) = result {
        report.diagnostics.push(error(e.span, e.kind.to_string()));
    }
    lints.sort_by_key(|l| (l.span.start_line, l.rule));
    lints.dedup();
    for lint in &lints {
        let local = dockerfile
            .instructions
            .iter()
            .find(|i| i.span.start_line == lint.span.start_line)
            .map(|i| instruction_config(&config, &i.comments))
            .unwrap_or_else(|| config.clone());
        if !local.skips(lint.rule.name()) {
            report.diagnostics.push(diagnostic(lint));
        }
    }
    report
        .diagnostics
        .sort_by_key(|d| (d.span.start_line, d.severity == Severity::Warning));
    report
}

/// A `# check=...` comment right above an instruction adds to the file's
/// configuration for that instruction.
fn instruction_config(file: &CheckConfig, comments: &[String]) -> CheckConfig {
    for c in comments {
        let Some(rest) = c.strip_prefix("check") else {
            continue;
        };
        let Some(value) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        let value = value.split(' ').find(|s| !s.is_empty()).unwrap_or_default();
        return match CheckConfig::parse(value) {
            Ok(local) => file.merged(&local),
            Err(_) => file.clone(),
        };
    }
    file.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerignore::Matcher;

    fn rules(text: &str) -> Vec<String> {
        check(text, &CheckOptions::default())
            .diagnostics
            .into_iter()
            .map(|d| d.rule.unwrap_or_else(|| format!("error: {}", d.message)))
            .collect()
    }

    fn fires(rule: &str, text: &str) {
        let found = rules(text);
        assert!(
            found.iter().any(|r| r == rule),
            "{rule} should fire on {text:?}: {found:?}"
        );
    }

    fn silent(rule: &str, text: &str) {
        let found = rules(text);
        assert!(
            !found.iter().any(|r| r == rule),
            "{rule} should not fire on {text:?}: {found:?}"
        );
    }

    #[test]
    fn json_args_recommended() {
        fires("JSONArgsRecommended", "FROM scratch\nCMD run me\n");
        fires("JSONArgsRecommended", "FROM scratch\nENTRYPOINT run me\n");
        silent("JSONArgsRecommended", "FROM scratch\nCMD [\"run\", \"me\"]\n");
        silent(
            "JSONArgsRecommended",
            "FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]\nCMD run me\n",
        );
    }

    #[test]
    fn undefined_var() {
        fires("UndefinedVar", "FROM scratch\nENV A=$NOPE\n");
        silent("UndefinedVar", "FROM scratch\nARG X\nENV A=$X\n");
        silent("UndefinedVar", "FROM scratch\nENV P=$PATH:/x\n");
        // An unknown base image may define anything.
        silent("UndefinedVar", "FROM alpine\nENV A=$NOPE\n");
        // RUN is never expanded.
        silent("UndefinedVar", "FROM scratch\nRUN echo $NOPE\n");
    }

    #[test]
    fn undefined_arg_in_from() {
        fires("UndefinedArgInFrom", "FROM alpine:$VERSION\n");
        silent("UndefinedArgInFrom", "ARG VERSION=3\nFROM alpine:$VERSION\n");
        silent("UndefinedArgInFrom", "FROM --platform=$BUILDPLATFORM alpine\n");
    }

    #[test]
    fn invalid_default_arg_in_from() {
        fires("InvalidDefaultArgInFrom", "ARG IMAGE\nFROM $IMAGE\n");
        silent("InvalidDefaultArgInFrom", "ARG IMAGE=alpine\nFROM $IMAGE\n");
    }

    #[test]
    fn stage_names() {
        fires("DuplicateStageName", "FROM scratch AS a\nFROM scratch AS a\n");
        silent("DuplicateStageName", "FROM scratch AS a\nFROM scratch AS b\n");
        fires("ReservedStageName", "FROM alpine AS scratch\n");
        silent("ReservedStageName", "FROM alpine AS base\n");
        fires("StageNameCasing", "FROM alpine AS Base\n");
        silent("StageNameCasing", "FROM alpine AS base\n");
        fires("FromAsCasing", "FROM alpine as base\n");
        fires("FromAsCasing", "from alpine AS base\n");
        silent("FromAsCasing", "from alpine as base\n");
        silent("FromAsCasing", "FROM alpine AS base\n");
    }

    #[test]
    fn instruction_casing() {
        fires("ConsistentInstructionCasing", "FROM scratch\nrun x\nRUN y\n");
        fires("ConsistentInstructionCasing", "FROM scratch\nRun x\n");
        silent("ConsistentInstructionCasing", "from scratch\nrun x\n");
    }

    #[test]
    fn misc_rules() {
        fires("MaintainerDeprecated", "FROM scratch\nMAINTAINER me\n");
        silent("MaintainerDeprecated", "FROM scratch\nLABEL a=b\n");
        fires("WorkdirRelativePath", "FROM scratch\nWORKDIR app\n");
        silent("WorkdirRelativePath", "FROM scratch\nWORKDIR /app\nWORKDIR sub\n");
        fires("LegacyKeyValueFormat", "FROM scratch\nENV A b\n");
        silent("LegacyKeyValueFormat", "FROM scratch\nENV A=b\n");
        fires(
            "MultipleInstructionsDisallowed",
            "FROM scratch\nCMD [\"a\"]\nCMD [\"b\"]\n",
        );
        silent(
            "MultipleInstructionsDisallowed",
            "FROM scratch\nCMD [\"a\"]\nFROM scratch\nCMD [\"b\"]\n",
        );
        fires("NoEmptyContinuation", "FROM scratch\nRUN a \\\n\n b\n");
        silent("NoEmptyContinuation", "FROM scratch\nRUN a \\\n b\n");
        fires("SecretsUsedInArgOrEnv", "FROM scratch\nARG GITHUB_TOKEN\n");
        silent("SecretsUsedInArgOrEnv", "FROM scratch\nARG PUBLIC_KEY\n");
        fires(
            "RedundantTargetPlatform",
            "FROM --platform=$TARGETPLATFORM alpine\n",
        );
        silent(
            "RedundantTargetPlatform",
            "FROM --platform=$BUILDPLATFORM alpine\n",
        );
        fires(
            "FromPlatformFlagConstDisallowed",
            "FROM --platform=linux/amd64 alpine\n",
        );
        silent(
            "FromPlatformFlagConstDisallowed",
            "FROM --platform=linux/amd64 alpine AS build-amd64\n",
        );
    }

    #[test]
    fn copy_ignored_file() {
        let mut opts = CheckOptions::default();
        opts.plan.dockerignore = Matcher::new(&["secret.txt"]).ok();
        let r = check("FROM scratch\nCOPY secret.txt /\n", &opts);
        assert!(
            r.diagnostics
                .iter()
                .any(|d| d.rule.as_deref() == Some("CopyIgnoredFile"))
        );
        let r = check("FROM scratch\nCOPY other.txt /\n", &opts);
        assert!(r.diagnostics.is_empty());
        let r = check(
            "FROM scratch AS a\nFROM scratch\nCOPY --from=a secret.txt /\n",
            &opts,
        );
        assert!(r.diagnostics.is_empty());
    }

    #[test]
    fn check_directive() {
        silent(
            "JSONArgsRecommended",
            "# check=skip=JSONArgsRecommended\nFROM scratch\nCMD x\n",
        );
        silent("JSONArgsRecommended", "# check=skip=all\nFROM scratch\nCMD x\n");
        let r = check(
            "# check=error=true\nFROM scratch\nCMD x\n",
            &CheckOptions::default(),
        );
        assert!(r.failed());
        let r = check("FROM scratch\nCMD x\n", &CheckOptions::default());
        assert!(!r.failed() && r.diagnostics.len() == 1);
        let r = check("# check=bogus\nFROM scratch\n", &CheckOptions::default());
        assert!(r.failed());
        // A comment above one instruction skips a rule for it only.
        let text = "FROM scratch\n# check=skip=JSONArgsRecommended\nCMD x\nENTRYPOINT y\n";
        assert_eq!(rules(text), vec!["JSONArgsRecommended"]);
    }

    #[test]
    fn errors_are_reported_not_returned() {
        let r = check("FROM scratch\nCOPY --chwon=1 a b\n", &CheckOptions::default());
        assert!(r.failed());
        assert_eq!(r.diagnostics[0].span.start_line, 2);
    }

    #[test]
    fn renders_json() {
        let r = check("FROM scratch\nCMD run me\n", &CheckOptions::default());
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap_or_default();
        assert_eq!(json["diagnostics"][0]["rule"], "JSONArgsRecommended");
        assert_eq!(json["diagnostics"][0]["severity"], "warning");
        assert_eq!(json["diagnostics"][0]["span"]["start_line"], 2);
        assert_eq!(
            json["diagnostics"][0]["url"],
            "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
        );
        assert_eq!(json["warnings_are_errors"], false);
    }

    #[test]
    fn renders_like_rustc() {
        let text = "FROM scratch\nCMD run me\n";
        let out = check(text, &CheckOptions::default()).render(text);
        assert!(out.starts_with("warning[JSONArgsRecommended]: JSON arguments recommended for CMD"));
        assert!(out.contains(" --> Dockerfile:2:1\n  |\n2 | CMD run me\n  | ^^^^^^^^^^\n"));
        assert!(out.contains("= note: https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"));
    }
}
