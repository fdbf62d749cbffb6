//! COPY and ADD: sources classified and expanded, heredoc bodies expanded
//! when their delimiter was unquoted, `--chmod` parsed, the destination
//! resolved against WORKDIR, and the history entry BuildKit writes.

use crate::ast::{InlineSource, Span, Transfer};
use crate::expand::Lexer;
use crate::lint::{Lint, Rule};
use crate::paths::{clean, normalize_workdir};
use crate::plan::{Chmod, CopyStep, Mode, PlanError, Source};
use crate::planner::{Planner, StageState};
use crate::sources;

impl Planner<'_> {
    pub(crate) fn transfer(
        &mut self,
        state: &StageState,
        t: &Transfer,
        keyword: &str,
        parents: bool,
        context_source: bool,
        span: Span,
    ) -> Result<CopyStep, PlanError> {
        let chown = self.expand_opt(state, &t.chown, span)?;
        let chmod_text = self.expand_opt(state, &t.chmod, span)?;
        let chmod = chmod_text
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(parse_chmod)
            .transpose()
            .map_err(|e| PlanError::invalid(span, e))?;
        let mut paths = Vec::with_capacity(t.sources.len());
        for src in &t.sources {
            paths.push(self.expand(state, src, span)?);
        }
        let dest = self.expand(state, &t.dest, span)?;
        let body_lexer = Lexer::new('\\').skip_process_quotes(true);
        let mut inline = Vec::with_capacity(t.inline.len());
        for doc in &t.inline {
            let content = if doc.expand {
                self.expand_with(body_lexer, state, &doc.content, span)?
            } else {
                doc.content.clone()
            };
            inline.push(InlineSource {
                name: doc.name.clone(),
                content,
                expand: doc.expand,
            });
        }
        let mut sources = Vec::with_capacity(paths.len());
        for p in paths {
            let source = sources::classify(&p).map_err(|e| PlanError::invalid(span, e))?;
            match (&source, keyword) {
                (Source::Git { .. }, "COPY") => {
                    return Err(PlanError::invalid(
                        span,
                        format!("source can't be a git ref for COPY: {p} (use ADD)"),
                    ));
                }
                (Source::Url { .. }, "COPY") => {
                    return Err(PlanError::invalid(
                        span,
                        format!("source can't be a URL for COPY: {p} (use ADD)"),
                    ));
                }
                _ => {}
            }
            if let (Source::Path { path }, true) = (&source, context_source) {
                self.ignored_lint(keyword, path, span);
            }
            sources.push(source);
        }
        Ok(CopyStep {
            sources,
            inline,
            dest_path: dest_path(&state.workdir, &dest),
            dest,
            from: None,
            chown,
            chmod,
            link: t.link,
            parents,
            exclude: t.exclude.clone(),
            checksum: None,
            keep_git_dir: None,
            unpack: None,
            user: state.user.clone(),
        })
    }

    fn ignored_lint(&mut self, keyword: &str, src: &str, span: Span) {
        let Some(matcher) = &self.opts.dockerignore else {
            return;
        };
        if matcher.has_exclusions() {
            return;
        }
        let cleaned = clean(src);
        if (cleaned == "." || cleaned == "/") && !matcher.ignores_root() {
            return;
        }
        if matcher.matches_or_parent_matches(&cleaned) {
            let verb = if keyword == "ADD" { "Add" } else { "Copy" };
            self.lints.push(Lint::new(
                Rule::CopyIgnoredFile,
                span,
                format!("Attempting to {verb} file {cleaned:?} that is excluded by .dockerignore"),
            ));
        }
    }
}

/// A COPY destination resolved against WORKDIR; a trailing slash (meaning
/// "into this directory") is kept.
fn dest_path(workdir: &str, dest: &str) -> String {
    let dest = if dest == "." || dest.is_empty() {
        "./"
    } else {
        dest
    };
    let joined = normalize_workdir(workdir, dest);
    let dir_like = dest.ends_with('/') || dest.ends_with("/.");
    if dir_like && joined != "/" {
        format!("{joined}/")
    } else {
        joined
    }
}

fn parse_chmod(text: &str) -> Result<Chmod, String> {
    let non_octal =
        || format!("invalid chmod parameter: '{text}'. it should be octal string and between 0 and 07777");
    let chmod = |mode| Chmod {
        text: text.to_string(),
        mode,
    };
    if text.starts_with(|c: char| c.is_ascii_digit()) {
        return match u32::from_str_radix(text, 8) {
            Ok(m) if m <= 0o7777 => Ok(chmod(Mode::Octal(m))),
            _ => Err(non_octal()),
        };
    }
    if is_symbolic_mode(text) {
        Ok(chmod(Mode::Symbolic(text.to_string())))
    } else {
        Err(format!(
            "invalid chmod parameter: '{text}': use an octal mode (0755) or a symbolic one (u+x,go-w)"
        ))
    }
}

/// `[ugoa]*([-+=]([rwxXst]*|[ugo]))+` clauses separated by commas.
fn is_symbolic_mode(text: &str) -> bool {
    text.split(',').all(|clause| {
        let ops = clause.trim_start_matches(['u', 'g', 'o', 'a']);
        if ops.is_empty() {
            return false;
        }
        let mut rest = ops;
        while let Some(c) = rest.chars().next() {
            if !matches!(c, '+' | '-' | '=') {
                return false;
            }
            rest = &rest[1..];
            let perm_len = rest.find(['+', '-', '=']).unwrap_or(rest.len());
            let perms = &rest[..perm_len];
            let ok =
                perms.chars().all(|p| "rwxXst".contains(p)) || (perms.len() == 1 && "ugo".contains(perms));
            if !ok {
                return false;
            }
            rest = &rest[perm_len..];
        }
        true
    })
}

pub(crate) fn transfer_history(keyword: &str, parents: bool, c: &CopyStep) -> String {
    let mut out = keyword.to_string();
    if parents {
        out.push_str(" --parents");
    }
    if let Some(chown) = c.chown.as_deref().filter(|v| !v.is_empty()) {
        out.push_str(&format!(" --chown={chown}"));
    }
    if let Some(chmod) = &c.chmod {
        out.push_str(&format!(" --chmod={}", chmod.text));
    }
    for s in &c.sources {
        let text = match s {
            Source::Path { path } => path,
            Source::Url { url } | Source::Git { url, .. } => url,
        };
        out.push(' ');
        out.push_str(text);
    }
    for doc in &c.inline {
        out.push_str(&format!(" <<{}", doc.name));
    }
    out.push(' ');
    out.push_str(&c.dest);
    out.push_str(" # buildkit");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_keep_directory_slash() {
        assert_eq!(dest_path("/app", "."), "/app/");
        assert_eq!(dest_path("", "."), "/");
        assert_eq!(dest_path("/app", "bin/"), "/app/bin/");
        assert_eq!(dest_path("/app", "/etc/x"), "/etc/x");
    }

    #[test]
    fn chmod_forms() {
        let mode = |t: &str| parse_chmod(t).map(|c| c.mode);
        assert_eq!(mode("0755"), Ok(Mode::Octal(0o755)));
        assert_eq!(mode("644"), Ok(Mode::Octal(0o644)));
        assert!(parse_chmod("08").is_err());
        assert!(parse_chmod("17777").is_err());
        assert_eq!(mode("u+x,go-w"), Ok(Mode::Symbolic("u+x,go-w".into())));
        assert_eq!(mode("a=rX"), Ok(Mode::Symbolic("a=rX".into())));
        assert_eq!(mode("+x"), Ok(Mode::Symbolic("+x".into())));
        assert!(parse_chmod("u+q").is_err());
        assert!(parse_chmod("rwx").is_err());
    }
}
