//! Gives each parsed node its typed meaning, checking argument counts and
//! flags as BuildKit's `instructions/parse.go` does, with error messages
//! that say how to fix the line.
//!
//! Why one long file: one function per instruction, in the Dockerfile reference's order; its
//! length is the language's, and the instructions read best side by side.

use crate::ast::{
    Add, ArgDecl, Command, CommandLine, Copy, From, Healthcheck, InlineSource, Instruction, KeyValue, Run,
    Transfer,
};
use crate::go_compat::parse_duration;
use crate::heredoc;
use crate::lint::{Lint, Rule};
use crate::run_flags;
use crate::suggest;
use crate::syntax::{Args, Node, ParseError, ParseErrorKind};

/// Every instruction keyword, for "did you mean" suggestions.
const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Bool,
    Str,
    List,
}

/// The flags an instruction was given, checked against what it accepts.
struct Flags {
    values: Vec<(&'static str, Vec<String>)>,
}

impl Flags {
    /// BuildKit's `BFlags.Parse`: unknown flags, repeated single-value flags,
    /// missing values and non-boolean booleans are errors.
    fn parse(
        node: &Node,
        instruction: &str,
        accepted: &[(&'static str, FlagKind)],
    ) -> Result<Flags, ParseError> {
        let mut values: Vec<(&'static str, Vec<String>)> = Vec::new();
        let err = |msg: String| ParseError::invalid(node.span, msg);
        for raw in &node.flags {
            if raw == "--" {
                break;
            }
            let Some(body) = raw.strip_prefix("--") else {
                return Err(err(format!("arg should start with -- : {raw}")));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(key, kind)) = accepted.iter().find(|(n, _)| *n == name) else {
                return Err(ParseError::new(
                    node.span,
                    ParseErrorKind::UnknownFlag {
                        instruction: instruction.to_string(),
                        flag: name.to_string(),
                        suggestion: suggest::closest(name, accepted.iter().map(|(n, _)| *n)),
                    },
                ));
            };
            let existing = values.iter().position(|(n, _)| *n == key);
            if existing.is_some() && kind != FlagKind::List {
                return Err(err(format!("duplicate flag specified: --{name}")));
            }
            let value = match kind {
                FlagKind::Bool => match value.map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") => "true".to_string(),
                    Some("false") => "false".to_string(),
                    Some("") => return Err(err(format!("missing a value on flag: --{name}"))),
                    Some(_) => {
                        return Err(err(format!(
                            "expecting boolean value for flag --{name}, not: {}",
                            value.unwrap_or_default()
                        )));
                    }
                },
                FlagKind::Str | FlagKind::List => match value {
                    Some(v) => v.to_string(),
                    None => return Err(err(format!("missing a value on flag: --{name}"))),
                },
            };
            match existing {
                Some(i) => values[i].1.push(value),
                None => values.push((key, vec![value])),
            }
        }
        Ok(Flags { values })
    }

    fn get(&self, name: &str) -> Option<&Vec<String>> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn string(&self, name: &str) -> Option<String> {
        self.get(name).and_then(|v| v.last().cloned())
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name).cloned().unwrap_or_default()
    }

    fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}

/// The arguments as BuildKit's flat `[]string` view, used where only the
/// count and order matter.
fn flat_args(args: &Args) -> Vec<String> {
    match args {
        Args::None => Vec::new(),
        Args::Words(w) | Args::Json(w) => w.clone(),
        Args::Text(t) => vec![t.clone()],
        Args::KeyValues(kvs) => kvs
            .iter()
            .flat_map(|kv| [kv.key.clone(), kv.value.clone()])
            .collect(),
        Args::Health(kind, rest) => {
            let mut v = vec![kind.clone()];
            v.extend(flat_args(rest));
            v
        }
        Args::Sub(node) => {
            let mut v = vec![node.keyword.clone()];
            v.extend(flat_args(&node.args));
            v
        }
    }
}

fn command_line(args: &Args) -> CommandLine {
    match args {
        Args::Json(v) => CommandLine::Exec(v.clone()),
        other => CommandLine::Shell(flat_args(other).join(" ")),
    }
}

fn at_least_one(node: &Node, name: &str) -> ParseError {
    ParseError::invalid(node.span, format!("{name} requires at least one argument"))
}

fn exactly_one(node: &Node, name: &str) -> Result<String, ParseError> {
    match flat_args(&node.args).as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(ParseError::invalid(
            node.span,
            format!("{name} requires exactly one argument"),
        )),
    }
}

/// Converts a node into a typed instruction, recording lints it implies.
pub(crate) fn from_node(node: Node, lints: &mut Vec<Lint>) -> Result<Instruction, ParseError> {
    let upper = node.keyword.to_ascii_uppercase();
    let command = match upper.as_str() {
        "ENV" | "LABEL" => {
            Flags::parse(&node, &upper, &[])?;
            let pairs = key_values(&node, &upper)?;
            if upper == "ENV" {
                Command::Env(pairs)
            } else {
                Command::Label(pairs)
            }
        }
        "MAINTAINER" => {
            let name = exactly_one(&node, "MAINTAINER")?;
            Flags::parse(&node, &upper, &[])?;
            lints.push(Lint::new(
                Rule::MaintainerDeprecated,
                node.span,
                "Maintainer instruction is deprecated in favor of using label",
            ));
            Command::Maintainer(name)
        }
        "ADD" => Command::Add(add(&node)?),
        "COPY" => Command::Copy(copy(&node)?),
        "FROM" => Command::From(from(&node, lints)?),
        "ONBUILD" => Command::Onbuild(onbuild(&node)?),
        "WORKDIR" => {
            let path = exactly_one(&node, "WORKDIR")?;
            Flags::parse(&node, &upper, &[])?;
            Command::Workdir(path)
        }
        "RUN" => Command::Run(run(&node)?),
        "CMD" => {
            Flags::parse(&node, &upper, &[])?;
            Command::Cmd(command_line(&node.args))
        }
        "ENTRYPOINT" => {
            Flags::parse(&node, &upper, &[])?;
            Command::Entrypoint(command_line(&node.args))
        }
        "HEALTHCHECK" => Command::Healthcheck(healthcheck(&node)?),
        "EXPOSE" => {
            let mut ports = flat_args(&node.args);
            if ports.is_empty() {
                return Err(at_least_one(&node, "EXPOSE"));
            }
            Flags::parse(&node, &upper, &[])?;
            ports.sort();
            Command::Expose(ports)
        }
        "USER" => {
            let user = exactly_one(&node, "USER")?;
            Flags::parse(&node, &upper, &[])?;
            Command::User(user)
        }
        "VOLUME" => {
            let args = flat_args(&node.args);
            if args.is_empty() {
                return Err(at_least_one(&node, "VOLUME"));
            }
            Flags::parse(&node, &upper, &[])?;
            let mut volumes = Vec::with_capacity(args.len());
            for v in args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(ParseError::invalid(
                        node.span,
                        "VOLUME specified can not be an empty string",
                    ));
                }
                volumes.push(v.to_string());
            }
            Command::Volume(volumes)
        }
        // BuildKit does not look at STOPSIGNAL's or ARG's flags at all.
        "STOPSIGNAL" => Command::StopSignal(exactly_one(&node, "STOPSIGNAL")?),
        "ARG" => Command::Arg(arg(&node)?),
        "SHELL" => {
            Flags::parse(&node, &upper, &[])?;
            match &node.args {
                Args::Json(v) if !v.is_empty() => Command::Shell(v.clone()),
                Args::None | Args::Json(_) => return Err(at_least_one(&node, "SHELL")),
                _ => {
                    return Err(ParseError::invalid(
                        node.span,
                        "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/bash\", \"-c\"]",
                    ));
                }
            }
        }
        _ => {
            return Err(ParseError::new(
                node.span,
                ParseErrorKind::UnknownInstruction {
                    suggestion: suggest::closest(&upper, KEYWORDS),
                    name: node.keyword.clone(),
                },
            ));
        }
    };
    Ok(Instruction {
        span: node.span,
        keyword: node.keyword,
        original: node.original.trim().to_string(),
        comments: node.comments,
        command,
    })
}

fn key_values(node: &Node, name: &str) -> Result<Vec<KeyValue>, ParseError> {
    let Args::KeyValues(pairs) = &node.args else {
        return Err(at_least_one(node, name));
    };
    if pairs.iter().any(|kv| kv.key.is_empty()) {
        return Err(ParseError::invalid(
            node.span,
            format!("{name} names can not be blank"),
        ));
    }
    Ok(pairs.clone())
}

fn transfer(node: &Node, name: &str, flags: &Flags) -> Result<Transfer, ParseError> {
    let args = flat_args(&node.args);
    let Some((dest, sources)) = args.split_last() else {
        return Err(no_destination(node, name));
    };
    if heredoc::parse_marker(dest).ok().flatten().is_some() {
        return Err(ParseError::invalid(
            node.span,
            format!("{name} cannot accept a heredoc as a destination"),
        ));
    }
    let mut paths = Vec::new();
    let mut inline = Vec::new();
    for src in sources {
        match heredoc::parse_marker(src).ok().flatten() {
            Some(marker) => {
                let doc = node.heredocs.iter().find(|h| h.name == marker.name);
                let content = doc.map(|d| d.content.clone()).unwrap_or_default();
                inline.push(InlineSource {
                    content: if marker.chomp {
                        crate::ast::strip_leading_tabs(&content)
                    } else {
                        content
                    },
                    name: marker.name,
                    expand: marker.expand,
                });
            }
            None => paths.push(src.clone()),
        }
    }
    Ok(Transfer {
        sources: paths,
        inline,
        dest: dest.clone(),
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link").unwrap_or(false),
        exclude: flags.list("exclude"),
    })
}

fn no_destination(node: &Node, name: &str) -> ParseError {
    ParseError::invalid(
        node.span,
        format!(
            "{name} requires at least two arguments, but only one was provided. Destination could not be determined"
        ),
    )
}

fn add(node: &Node) -> Result<Add, ParseError> {
    if flat_args(&node.args).len() < 2 {
        return Err(no_destination(node, "ADD"));
    }
    use FlagKind::*;
    let flags = Flags::parse(
        node,
        "ADD",
        &[
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("keep-git-dir", Bool),
            ("checksum", Str),
            ("unpack", Bool),
            ("exclude", List),
        ],
    )?;
    Ok(Add {
        transfer: transfer(node, "ADD", &flags)?,
        keep_git_dir: flags.bool("keep-git-dir"),
        checksum: flags.string("checksum"),
        unpack: flags.bool("unpack"),
    })
}

fn copy(node: &Node) -> Result<Copy, ParseError> {
    if flat_args(&node.args).len() < 2 {
        return Err(no_destination(node, "COPY"));
    }
    use FlagKind::*;
    let flags = Flags::parse(
        node,
        "COPY",
        &[
            ("chown", Str),
            ("from", Str),
            ("chmod", Str),
            ("link", Bool),
            ("exclude", List),
            ("parents", Bool),
        ],
    )?;
    Ok(Copy {
        transfer: transfer(node, "COPY", &flags)?,
        from: flags.string("from"),
        parents: flags.bool("parents").unwrap_or(false),
    })
}

fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn from(node: &Node, lints: &mut Vec<Lint>) -> Result<From, ParseError> {
    let args = flat_args(&node.args);
    let (image, name, as_keyword) = match args.as_slice() {
        [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let lower = name.to_lowercase();
            if !is_valid_stage_name(&lower) {
                return Err(ParseError::invalid(
                    node.span,
                    format!(
                        "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                    ),
                ));
            }
            (image.clone(), Some(name.clone()), Some(as_kw.clone()))
        }
        [image] => (image.clone(), None, None),
        _ => {
            return Err(ParseError::invalid(
                node.span,
                "FROM requires either one or three arguments: FROM <image> [AS <name>]",
            ));
        }
    };
    if let Some(name) = &name
        && *name != name.to_lowercase()
    {
        lints.push(Lint::new(
            Rule::StageNameCasing,
            node.span,
            format!("Stage name '{name}' should be lowercase"),
        ));
    }
    if let Some(as_kw) = &as_keyword {
        let kw = &node.keyword;
        let from_lower = *kw == kw.to_lowercase();
        let from_upper = *kw == kw.to_uppercase();
        let mismatch = (from_lower && *as_kw != as_kw.to_lowercase())
            || (from_upper && !from_lower && *as_kw != as_kw.to_uppercase());
        if mismatch {
            lints.push(Lint::new(
                Rule::FromAsCasing,
                node.span,
                format!("'{as_kw}' and '{kw}' keywords' casing do not match"),
            ));
        }
    }
    let flags = Flags::parse(node, "FROM", &[("platform", FlagKind::Str)])?;
    Ok(From {
        image,
        name: name.as_ref().map(|n| n.to_lowercase()),
        name_as_written: name,
        as_keyword,
        platform: flags.string("platform"),
    })
}

fn onbuild(node: &Node) -> Result<String, ParseError> {
    let Args::Sub(child) = &node.args else {
        return Err(at_least_one(node, "ONBUILD"));
    };
    Flags::parse(node, "ONBUILD", &[])?;
    let trigger = child.keyword.to_ascii_uppercase();
    match trigger.as_str() {
        "ONBUILD" => {
            return Err(ParseError::invalid(
                node.span,
                "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
            ));
        }
        "MAINTAINER" | "FROM" => {
            return Err(ParseError::invalid(
                node.span,
                format!("{trigger} isn't allowed as an ONBUILD trigger"),
            ));
        }
        _ => {}
    }
    let original = node.original.trim_start();
    let mut expression = original
        .get(node.keyword.len()..)
        .unwrap_or_default()
        .trim_start()
        .to_string();
    for doc in &node.heredocs {
        expression.push('\n');
        expression.push_str(&doc.content);
        expression.push_str(&doc.name);
    }
    Ok(expression)
}

fn run(node: &Node) -> Result<Run, ParseError> {
    use FlagKind::*;
    let flags = Flags::parse(
        node,
        "RUN",
        &[
            ("mount", List),
            ("network", Str),
            ("security", Str),
            ("device", List),
        ],
    )?;
    let network = flags.string("network");
    if let Some(n) = &network
        && !matches!(n.as_str(), "default" | "none" | "host")
    {
        return Err(ParseError::invalid(
            node.span,
            format!("invalid network mode {n:?}: use default, none or host"),
        ));
    }
    let security = flags.string("security");
    if let Some(s) = &security
        && !matches!(s.as_str(), "sandbox" | "insecure")
    {
        return Err(ParseError::invalid(
            node.span,
            format!("security {s:?} is not valid: use sandbox or insecure"),
        ));
    }
    let mounts = flags.list("mount");
    for m in &mounts {
        run_flags::check_mount_syntax(m).map_err(|e| ParseError::invalid(node.span, e))?;
    }
    let devices = flags.list("device");
    for d in &devices {
        run_flags::parse_device(d).map_err(|e| ParseError::invalid(node.span, e))?;
    }
    Ok(Run {
        mounts,
        network,
        security,
        devices,
        command: command_line(&node.args),
        heredocs: node.heredocs.clone(),
    })
}

fn healthcheck(node: &Node) -> Result<Healthcheck, ParseError> {
    let Args::Health(kind, cmd) = &node.args else {
        return Err(at_least_one(node, "HEALTHCHECK"));
    };
    let kind = kind.to_ascii_uppercase();
    if kind == "NONE" {
        if !matches!(**cmd, Args::None) {
            return Err(ParseError::invalid(
                node.span,
                "HEALTHCHECK NONE takes no arguments",
            ));
        }
        return Ok(Healthcheck::None);
    }
    use FlagKind::*;
    let flags = Flags::parse(
        node,
        "HEALTHCHECK",
        &[
            ("interval", Str),
            ("timeout", Str),
            ("start-period", Str),
            ("start-interval", Str),
            ("retries", Str),
        ],
    )?;
    if kind != "CMD" {
        return Err(ParseError::invalid(
            node.span,
            format!("Unknown type {kind:?} in HEALTHCHECK (try CMD)"),
        ));
    }
    if flat_args(cmd).is_empty() || matches!(&**cmd, Args::Json(v) if v.is_empty()) {
        return Err(ParseError::invalid(
            node.span,
            "Missing command after HEALTHCHECK CMD",
        ));
    }
    let duration = |name: &str| -> Result<Option<std::time::Duration>, ParseError> {
        let Some(v) = flags.string(name).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let d = parse_duration(&v).map_err(|e| ParseError::invalid(node.span, format!("--{name}: {e}")))?;
        if !d.is_zero() && d < std::time::Duration::from_millis(1) {
            return Err(ParseError::invalid(
                node.span,
                format!("Interval \"{name}\" cannot be less than 1ms"),
            ));
        }
        Ok(Some(d).filter(|d| !d.is_zero()))
    };
    let retries = match flags.string("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match v.parse::<i32>() {
            Ok(n) if n < 0 => {
                return Err(ParseError::invalid(
                    node.span,
                    format!("--retries cannot be negative ({n})"),
                ));
            }
            Ok(n) => Some(n.unsigned_abs()),
            Err(_) => {
                return Err(ParseError::invalid(
                    node.span,
                    format!("--retries: invalid number {v:?}"),
                ));
            }
        },
    };
    Ok(Healthcheck::Cmd {
        test: command_line(cmd),
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
    })
}

fn arg(node: &Node) -> Result<Vec<ArgDecl>, ParseError> {
    let args = flat_args(&node.args);
    if args.is_empty() {
        return Err(at_least_one(node, "ARG"));
    }
    args.into_iter()
        .map(|a| match a.split_once('=') {
            Some(("", _)) => Err(ParseError::invalid(node.span, "ARG names can not be blank")),
            Some((k, v)) => Ok(ArgDecl {
                name: k.to_string(),
                default: Some(v.to_string()),
            }),
            None => Ok(ArgDecl {
                name: a,
                default: None,
            }),
        })
        .collect()
}

/// Checks that need the whole file: stage-name rules and keyword casing.
pub(crate) fn check_file(instructions: &[Instruction], lints: &mut Vec<Lint>) {
    let mut seen: Vec<&str> = Vec::new();
    for ins in instructions {
        if let Command::From(From { name: Some(name), .. }) = &ins.command {
            if name == "context" || name == "scratch" {
                lints.push(Lint::new(
                    Rule::ReservedStageName,
                    ins.span,
                    format!("Stage name should not use the same name as reserved stage {name:?}"),
                ));
            }
            if seen.contains(&name.as_str()) {
                lints.push(Lint::new(
                    Rule::DuplicateStageName,
                    ins.span,
                    format!("Duplicate stage name {name:?}, stage names should be unique"),
                ));
            }
            seen.push(name);
        }
    }
    // BuildKit counts only instructions inside stages (not global ARGs).
    let first_from = instructions
        .iter()
        .position(|i| matches!(i.command, Command::From(_)))
        .unwrap_or(instructions.len());
    let in_stages = &instructions[first_from..];
    let consistent = |k: &str| k == k.to_lowercase() || k == k.to_uppercase();
    let lower = in_stages
        .iter()
        .filter(|i| consistent(&i.keyword) && i.keyword == i.keyword.to_lowercase())
        .count();
    let upper = in_stages
        .iter()
        .filter(|i| consistent(&i.keyword) && i.keyword != i.keyword.to_lowercase())
        .count();
    let majority_lower = lower > upper;
    for ins in in_stages {
        let k = &ins.keyword;
        let expected = if majority_lower && *k != k.to_lowercase() {
            Some("lowercase")
        } else if !majority_lower && *k != k.to_uppercase() {
            Some("uppercase")
        } else {
            None
        };
        if let Some(case) = expected {
            lints.push(Lint::new(
                Rule::ConsistentInstructionCasing,
                ins.span,
                format!("Command '{k}' should match the case of the command majority ({case})"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ast::Command;
    use crate::{ParseErrorKind, parse};

    fn commands(text: &str) -> Vec<Command> {
        match parse(text) {
            Ok(d) => d.instructions.into_iter().map(|i| i.command).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unknown_instruction_suggests() {
        assert_eq!(
            error("FROM a\nRUNN x\n"),
            "line 2: unknown instruction: RUNN; did you mean RUN?"
        );
    }

    #[test]
    fn unknown_flag_suggests() {
        assert_eq!(
            error("FROM a\nCOPY --chwon=1 a b\n"),
            "line 2: unknown flag --chwon for COPY; did you mean --chown?"
        );
    }

    #[test]
    fn flag_errors() {
        assert!(error("FROM a\nCOPY --link=maybe a b").contains("expecting boolean value"));
        assert!(error("FROM a\nCOPY --from a b").contains("missing a value"));
        assert!(error("FROM a\nCOPY --from=x --from=y a b").contains("duplicate flag"));
        assert!(error("FROM a\nCOPY --link= a b").contains("missing a value"));
    }

    #[test]
    fn argument_counts() {
        assert!(error("FROM a\nCOPY a").contains("requires at least two arguments"));
        assert!(error("FROM a b").contains("one or three arguments"));
        assert!(error("FROM a\nUSER").contains("exactly one"));
        assert!(error("FROM a\nEXPOSE").contains("at least one"));
        assert!(error("FROM a\nENV").contains("at least one"));
        assert!(error("FROM a\nENV A").contains("two arguments"));
        assert!(error("FROM a\nENV A=1 B").contains("can't find ="));
        assert!(error("FROM a\nARG =x").contains("can not be blank"));
        assert!(error("FROM a\nSHELL sh -c").contains("JSON form"));
    }

    #[test]
    fn stage_names() {
        assert!(error("FROM a AS 1x").contains("invalid name for build stage"));
        let c = commands("FROM a AS Build");
        assert!(matches!(&c[0], Command::From(f) if f.name.as_deref() == Some("build")));
    }

    #[test]
    fn onbuild_rules() {
        assert!(error("FROM a\nONBUILD ONBUILD RUN x").contains("Chaining ONBUILD"));
        assert!(error("FROM a\nONBUILD FROM b").contains("isn't allowed"));
        assert!(error("FROM a\nONBUILD MAINTAINER b").contains("isn't allowed"));
        let c = commands("FROM a\nonbuild   RUN echo hi\n");
        assert_eq!(c[1], Command::Onbuild("RUN echo hi".into()));
        let c = commands("FROM a\nONBUILD COPY <<EOF /x\nhello\nEOF\n");
        assert_eq!(c[1], Command::Onbuild("COPY <<EOF /x\nhello\nEOF".into()));
    }

    #[test]
    fn healthcheck_forms() {
        assert!(error("FROM a\nHEALTHCHECK NONE x").contains("takes no arguments"));
        assert!(error("FROM a\nHEALTHCHECK CMD").contains("Missing command"));
        assert!(error("FROM a\nHEALTHCHECK FOO x").contains("Unknown type"));
        assert!(error("FROM a\nHEALTHCHECK --interval=1us CMD x").contains("less than 1ms"));
        assert!(error("FROM a\nHEALTHCHECK --retries=-1 CMD x").contains("negative"));
        // NONE ignores flags, as BuildKit does.
        assert!(parse("FROM a\nHEALTHCHECK --interval=5s NONE").is_ok());
    }

    #[test]
    fn run_flags_validated() {
        assert!(error("FROM a\nRUN --network=bridge x").contains("invalid network mode"));
        assert!(error("FROM a\nRUN --security=x y").contains("not valid"));
        assert!(error("FROM a\nRUN --mount=from=$X,target=/x y").contains("variable expansion"));
        assert!(parse("FROM a\nRUN --mount=type=cache,target=/x --network=none y").is_ok());
    }

    #[test]
    fn json_must_be_strings() {
        assert!(matches!(
            parse("FROM a\nCMD [1]").map_err(|e| e.kind),
            Err(ParseErrorKind::JsonNotStrings)
        ));
    }

    #[test]
    fn stopsignal_and_arg_ignore_flags() {
        assert!(parse("FROM a\nSTOPSIGNAL --x SIGTERM").is_ok());
        assert!(parse("FROM a\nARG --x=1 A").is_ok());
    }

    #[test]
    fn heredoc_destination_rejected() {
        assert!(error("FROM a\nCOPY x <<EOF\nEOF").contains("heredoc as a destination"));
    }
}
