//! What can go wrong reading bake and compose files: every error names the file and the
//! target, group, variable or key involved, so a user can find the line to fix.

use std::path::PathBuf;

/// An error reading, evaluating or resolving bake/compose files.
#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    /// No file was named and none of the default names exists.
    #[error(
        "no bake file in {}: looked for compose.yaml, compose.yml, docker-compose.yml, \
         docker-compose.yaml, docker-bake.json, docker-bake.hcl and their overrides",
        dir.display()
    )]
    NoFiles {
        /// The directory searched.
        dir: PathBuf,
    },
    /// A file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A compose file is not valid YAML.
    #[error("{}: malformed YAML", path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: yaml_rust2::ScanError,
    },
    /// A bake JSON file is not valid JSON.
    #[error("{}: malformed JSON", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A bake HCL file is not valid HCL.
    #[error("{}: malformed HCL", path.display())]
    Hcl {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: hcl::Error,
    },
    /// A value has the wrong shape (a string where a list belongs, say).
    #[error("{}: {at}: expected {expected}", path.display())]
    Type {
        /// The file.
        path: PathBuf,
        /// Where in the file: `services.web.build.args`, `target "app" tags`.
        at: String,
        /// What was expected there.
        expected: &'static str,
    },
    /// A key neither bake nor compose defines there.
    #[error("{}: {at}: unknown key {key:?}", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        at: String,
        /// The key.
        key: String,
    },
    /// A key buildx knows that rbuild does not do yet; refused rather than silently dropped,
    /// since it would change what is built.
    #[error("{}: {at}: {key:?} is not supported by rbuild bake yet", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        at: String,
        /// The key.
        key: String,
    },
    /// A name that is not `[a-zA-Z0-9_-]+`.
    #[error("{}: invalid name {name:?}: names may hold only letters, digits, '_' and '-'", path.display())]
    InvalidName {
        /// The file.
        path: PathBuf,
        /// The name.
        name: String,
    },
    /// An HCL expression (or a `${…}` template in JSON) failed to evaluate.
    #[error("{}: {at}", path.display())]
    Eval {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        at: String,
        /// The evaluator's error.
        #[source]
        source: hcl::eval::Error,
    },
    /// A function call: bake's function library is not implemented.
    #[error("{}: {at}: function {function:?} is not supported (rbuild bake has no functions yet)", path.display())]
    UnsupportedFunction {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        at: String,
        /// The function's name.
        function: String,
    },
    /// Compose's `${VAR:?message}` (or `${VAR?message}`) with the variable unset.
    #[error("{}: {at}: required variable {var} is missing a value: {message}", path.display())]
    RequiredVariable {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        at: String,
        /// The variable.
        var: String,
        /// The file's message.
        message: String,
    },
    /// A `$` that does not start a valid interpolation (`${` without `}`, say).
    #[error("{}: {at}: invalid interpolation in {value:?}", path.display())]
    Interpolation {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        at: String,
        /// The string.
        value: String,
    },
    /// A compose build secret that is not a file or environment secret.
    #[error("{}: {at}: secret {name:?} must be a file or environment secret (external secrets cannot be read)", path.display())]
    Secret {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        at: String,
        /// The secret.
        name: String,
    },
    /// A name asked for (on the command line, in a group) that is neither a group nor a target.
    #[error("no target or group {name:?} in {files}")]
    UnknownTarget {
        /// The name.
        name: String,
        /// The files read, comma-separated.
        files: String,
    },
    /// A target inherits from one that does not exist.
    #[error("target {target:?} inherits from unknown target {parent:?} in {files}")]
    UnknownParent {
        /// The target.
        target: String,
        /// The missing parent.
        parent: String,
        /// The files read, comma-separated.
        files: String,
    },
    /// Groups that contain each other, targets that inherit from each other, or targets that
    /// read each other through `target:` contexts.
    #[error("{kind} cycle in {files}: {}", chain.join(" -> "))]
    Cycle {
        /// `group`, `inherits` or `context`.
        kind: &'static str,
        /// The names around the cycle, the first repeated at the end.
        chain: Vec<String>,
        /// The files read, comma-separated.
        files: String,
    },
    /// A malformed `--set` value.
    #[error("--set {value}: {reason}")]
    Set {
        /// The flag's value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A `--set` pattern that matches none of the targets being resolved.
    #[error("--set {value}: no target matches {pattern:?}")]
    SetNoMatch {
        /// The flag's value.
        value: String,
        /// The pattern.
        pattern: String,
    },
    /// A malformed secret, cache or context value in a target or `--set`.
    #[error("{at}: invalid {what} {value:?}")]
    Value {
        /// Which target and key (`target "app" secret`).
        at: String,
        /// What the value is meant to be.
        what: &'static str,
        /// The value.
        value: String,
    },
}
