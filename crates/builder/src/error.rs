//! Build errors. A variant holds what went wrong as data — the path, reference, digest or
//! Dockerfile line involved — and chains the error beneath it as its `source`, so a program
//! embedding the builder matches on causes, not text, and the CLI prints the chain
//! (`outer: inner`). A variant's own message never repeats its source's. Once the failing
//! step is known, [`BuildError::at`] names its Dockerfile line and instruction, so a user can
//! go straight to the cause.

use std::fmt;

use rbuild_oci::report::chain;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rbuild_dockerfile::dockerignore::PatternError;
use rbuild_dockerfile::{ParseError, PlanError};
use rbuild_layer::LayerError;
use rbuild_oci::Digest;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A step failed; wraps the cause with where it happened.
    #[error("{file}:{line}: {instruction}\n  {}", chain(cause.as_ref()))]
    Step {
        /// The Dockerfile.
        file: String,
        /// The line the instruction starts on.
        line: usize,
        /// The instruction as written.
        instruction: String,
        /// The cause (shown, with its chain, in this error's message, so not its source).
        cause: Box<BuildError>,
    },
    /// An error of a stage task, shared by the stages that waited on it.
    #[error(transparent)]
    Shared(Arc<BuildError>),

    /// The Dockerfile does not parse.
    #[error("{}", at_line(file, error.span.start_line, &error.kind))]
    Parse {
        /// The Dockerfile.
        file: String,
        /// Where (shown first, as compilers do) and why.
        error: Box<ParseError>,
    },
    /// The Dockerfile does not plan (an unknown target, a word that does not expand, …).
    #[error("{}", at_line(file, error.span.start_line, &error.kind))]
    Plan {
        /// The Dockerfile.
        file: String,
        /// Where (shown first, as compilers do) and why.
        error: Box<PlanError>,
    },
    /// A `.dockerignore` pattern is malformed.
    #[error("{}", path.display())]
    IgnoreFile {
        /// The ignore file.
        path: PathBuf,
        /// The pattern and its line.
        source: PatternError,
    },
    /// A `COPY --exclude` pattern is malformed.
    #[error("--exclude")]
    ExcludePattern(#[source] PatternError),
    /// A `--chmod` value that is neither octal nor a symbolic mode.
    #[error("invalid --chmod={0}")]
    InvalidChmod(String),
    /// Several sources copied to a destination that is not a directory.
    #[error("when copying more than one source, the destination must be a directory and end with a /: {0}")]
    DestinationNotDirectory(String),
    /// A RUN mount without a target where one is needed.
    #[error("RUN --mount needs a target")]
    MountWithoutTarget,
    /// A `--network` rbuild does not know.
    #[error("--network={0}: use default, none or host")]
    UnknownNetwork(String),

    /// The context is not a directory.
    #[error("build context: {} is not a directory", .0.display())]
    ContextNotDirectory(PathBuf),
    /// A step reads the main context, but the build has none.
    #[error("build context: {0} needs a build context")]
    NoContext(&'static str),
    /// A `--from` names a context the build was not given.
    #[error("build context: unknown build context {0}")]
    UnknownContext(String),
    /// A source path climbs out of the context.
    #[error("{0}: source is outside the build context; COPY and ADD can only read files inside it")]
    OutsideContext(String),
    /// A source path does not exist in the context.
    #[error("{0}: no such file or directory in the build context")]
    SourceNotFound(String),
    /// A source path exists but `.dockerignore` excludes it.
    #[error("{0}: excluded by .dockerignore; remove it from .dockerignore to copy it")]
    SourceIgnored(String),
    /// A source path does not exist in another stage or image.
    #[error("{path}: no such file or directory in {from}")]
    NotFoundIn {
        /// The path.
        path: String,
        /// The stage or image.
        from: String,
    },
    /// Following symbolic links did not end.
    #[error("build context: too many levels of symbolic links at {0}")]
    SymlinkLoop(String),
    /// A context file a step reads was not hashed when the context was prepared.
    #[error("build context: {0} was not hashed")]
    NotHashed(String),
    /// A user or group that the stage's /etc/passwd or /etc/group does not name.
    #[error("{spec}: unable to find {} {name}: {}", kind.noun(), lookup_failure(*kind, *no_database))]
    UnknownOwner {
        /// The instruction or flag as written (`--chown=app:app`, `USER app`).
        spec: String,
        /// The user or group name.
        name: String,
        /// A user or a group.
        kind: OwnerKind,
        /// The stage has no /etc/passwd (or /etc/group) at all.
        no_database: bool,
    },
    /// A secret a RUN mount requires was not given.
    #[error("secret {0} is required; pass it with --secret id={0},src=FILE")]
    MissingSecret(String),
    /// A secret read from an environment variable that is not set.
    #[error("secret {id}: environment variable {var} is not set")]
    SecretVariableUnset {
        /// The secret.
        id: String,
        /// The variable.
        var: String,
    },
    /// A RUN mount requires an SSH agent and none was given.
    #[error("an SSH agent is required; pass --ssh default (with SSH_AUTH_SOCK set)")]
    MissingSshAgent,

    /// An image reference that does not parse.
    #[error("invalid image reference {reference:?}")]
    InvalidReference {
        /// The reference as written.
        reference: String,
        /// Why.
        source: rbuild_oci::ReferenceError,
    },
    /// An image could not be pulled.
    #[error("pulling {reference}")]
    Pull {
        /// The reference.
        reference: String,
        /// Why.
        source: Box<rbuild_client::ClientError>,
    },
    /// An image the plan names was not resolved before the stages ran.
    #[error("image {0} was not resolved")]
    Unresolved(String),
    /// A manifest, config or index that is not what it claims to be.
    #[error("{image}: {document}")]
    Document {
        /// The image (`local image busybox`, `oci-layout://dir`, a manifest digest).
        image: String,
        /// Which document (`manifest`, `config`, `index.json`).
        document: &'static str,
        /// Why it does not read.
        source: serde_json::Error,
    },
    /// An OCI layout has no image under the tag asked for.
    #[error("oci-layout://{layout}: no image tagged {}", tag.as_deref().unwrap_or("(any)"))]
    LayoutTagNotFound {
        /// The layout as given.
        layout: String,
        /// The tag asked for.
        tag: Option<String>,
    },
    /// A stored manifest that is not an image's, where an image is needed.
    #[error("{digest} is a {media_type}: only an image can be written to an archive")]
    NotAnImage {
        /// The manifest.
        digest: Digest,
        /// What it is.
        media_type: String,
    },
    /// `ADD <url>` could not download.
    #[error("downloading {url}")]
    Download {
        /// The URL.
        url: String,
        /// Why.
        source: Box<rbuild_client::ClientError>,
    },
    /// `ADD --checksum` does not match what was downloaded.
    #[error(
        "ADD --checksum={expected}: {url} has digest {actual}; the file changed or the checksum is wrong"
    )]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The checksum given.
        expected: String,
        /// The download's digest.
        actual: Digest,
    },
    /// `ADD <url>` to a directory, where the URL names no file.
    #[error("ADD {0}: no file name in the URL; give a destination file name")]
    UrlWithoutFileName(String),
    /// `ADD` of a git repository.
    #[error("ADD {0}: git sources are not supported; clone the repository into the context instead")]
    GitSource(String),
    /// `FROM` a directory build context.
    #[error("FROM {0}: a local directory build context cannot be a stage's base; use COPY --from={0}")]
    ContextAsBase(String),

    /// A remote cache that cannot be used.
    #[error("cache {cache}")]
    Cache {
        /// The cache.
        cache: String,
        /// Why.
        source: CacheFormatError,
    },
    /// A layer a remote cache gave could not be fetched from it (gone since the cache was
    /// read, or its bytes do not match its digest): the build starts again without it.
    #[error("cache {cache}: layer {layer} could not be fetched")]
    CacheLayerLost {
        /// The cache.
        cache: String,
        /// The layer.
        layer: rbuild_oci::Digest,
        /// Why.
        source: Box<BuildError>,
    },
    /// Writing a step's layer failed.
    #[error("writing the layer")]
    WriteLayer(#[source] LayerError),
    /// Reading what a RUN changed failed.
    #[error("reading the step's changes")]
    ReadChanges(#[source] LayerError),
    /// A layer could not be unpacked into a snapshot.
    #[error("unpacking layer {layer}")]
    Unpack {
        /// The layer blob.
        layer: Digest,
        /// Why.
        source: LayerError,
    },
    /// An uncompressed layer could not be compressed for export.
    #[error("compressing layer {layer}")]
    Compress {
        /// The layer.
        layer: Digest,
        /// Why.
        source: LayerError,
    },
    /// `ADD` could not extract a local archive.
    #[error("extracting {path}")]
    Extract {
        /// The archive as named in the Dockerfile.
        path: String,
        /// Why.
        source: LayerError,
    },
    /// A stored layer whose content does not hash to its name.
    #[error(
        "layer {layer} in the local store reads back as {actual}: the store is damaged; `rbuild cache prune` and build again"
    )]
    DamagedLayer {
        /// The layer's name.
        layer: Digest,
        /// What its content hashes to.
        actual: Digest,
    },

    /// A RUN command exited with a non-zero status.
    #[error("the command exited with code {exit_code}{}", tail_text(tail))]
    RunFailed {
        /// Its exit code.
        exit_code: i32,
        /// The last lines it printed.
        tail: Vec<String>,
    },
    /// The OCI runtime could not run the step.
    #[error("running the step")]
    Runtime(#[source] rbuild_runtime::RunError),
    /// `RUN --security=insecure`, which needs an entitlement rbuild does not grant.
    #[error("RUN --security=insecure needs the security.insecure entitlement, which rbuild does not grant")]
    InsecureNotGranted,
    /// `RUN --device`.
    #[error("RUN --device is not supported")]
    DevicesUnsupported,

    /// The step was stopped, or not started, because another stage of the build (or another
    /// target of the bake) failed.
    #[error("canceled: another part of the build failed")]
    Canceled,
    /// A stage task ended without a result.
    #[error("a build task failed")]
    TaskFailed(#[source] tokio::task::JoinError),
    /// A stage a step reads from had not finished (a scheduling bug).
    #[error("stage {0} did not finish")]
    StageMissing(usize),
    /// The plan has no stage to build.
    #[error("the Dockerfile has no stages")]
    NoStages,
    /// Pushing the image to a registry failed.
    #[error("pushing {reference}")]
    Push {
        /// The reference pushed to.
        reference: String,
        /// Why.
        source: Box<rbuild_client::ClientError>,
    },
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] rbuild_oci::StoreError),
    /// A file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
}

/// Why a remote cache cannot be used (see [`crate::remote_cache::format`]).
#[derive(Debug, thiserror::Error)]
pub enum CacheFormatError {
    /// The config does not parse.
    #[error("the cache config does not parse")]
    Parse(#[source] serde_json::Error),
    /// Another format version.
    #[error("format version {found}, this rbuild reads version {supported}")]
    Version {
        /// The cache's.
        found: u32,
        /// This rbuild's.
        supported: u32,
    },
    /// Another key encoding.
    #[error("cache keys of version {found}, this rbuild makes version {supported}")]
    KeyVersion {
        /// The cache's.
        found: u32,
        /// This rbuild's.
        supported: u32,
    },
    /// A record names a layer the config does not have.
    #[error("record {record} names layer {layer}, the config has {layers}")]
    LayerIndex {
        /// The record's index.
        record: usize,
        /// The layer index it names.
        layer: usize,
        /// How many layers the config has.
        layers: usize,
    },
    /// A document of the cache is not there.
    #[error("its {document} is missing")]
    Missing {
        /// Which (`manifest`, `config`).
        document: &'static str,
    },
    /// A document of the cache does not hash to its name.
    #[error("its {document} has digest {actual}, not {expected}")]
    Digest {
        /// Which (`manifest`, `config`).
        document: &'static str,
        /// Its name.
        expected: Digest,
        /// What its bytes hash to.
        actual: Digest,
    },
    /// An image named as a cache, without an inline cache.
    #[error("the image has no inline cache (build it with --cache-to type=inline)")]
    NoInlineCache,
    /// A layer of the config is not a layer of the manifest.
    #[error("layer {0} is not in the cache manifest")]
    NotInManifest(Digest),
}

/// A user or a group, in [`BuildError::UnknownOwner`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    /// A user, looked up in /etc/passwd.
    User,
    /// A group, looked up in /etc/group.
    Group,
}

impl OwnerKind {
    fn noun(self) -> &'static str {
        match self {
            OwnerKind::User => "user",
            OwnerKind::Group => "group",
        }
    }
}

fn lookup_failure(kind: OwnerKind, no_database: bool) -> String {
    let (file, number) = match kind {
        OwnerKind::User => ("/etc/passwd", "uid"),
        OwnerKind::Group => ("/etc/group", "gid"),
    };
    match no_database {
        true => format!("the stage has no {file}; use a numeric {number}"),
        false => format!("no matching entries in the stage's {file}"),
    }
}

/// `Dockerfile:3: what`, as compilers and the step errors name places (line 0: no line).
fn at_line(file: &str, line: usize, what: &dyn fmt::Display) -> String {
    match line {
        0 => format!("{file}: {what}"),
        line => format!("{file}:{line}: {what}"),
    }
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its last output:\n    {}", tail.join("\n    "))
    }
}

impl BuildError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> BuildError {
        BuildError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether this only says the build was canceled ([`BuildError::Canceled`], where it
    /// happened or shared), not why.
    pub fn is_canceled(&self) -> bool {
        match self {
            BuildError::Canceled => true,
            BuildError::Step { cause, .. } => cause.is_canceled(),
            BuildError::Shared(shared) => shared.is_canceled(),
            _ => false,
        }
    }

    /// Attaches the Dockerfile location of the step that failed (once).
    pub fn at(self, file: &str, line: usize, instruction: &str) -> BuildError {
        match self {
            located @ BuildError::Step { .. } => located,
            other => BuildError::Step {
                file: file.to_owned(),
                line,
                instruction: instruction.to_owned(),
                cause: Box::new(other),
            },
        }
    }
}

/// Shorthand for build results.
pub type Result<T, E = BuildError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_located_error_shows_its_whole_chain_once() {
        let io = io::Error::new(io::ErrorKind::NotFound, "gone");
        let located = BuildError::io("opening build context /x", io).at("Dockerfile", 3, "COPY a /a");
        assert_eq!(
            located.to_string(),
            "Dockerfile:3: COPY a /a\n  opening build context /x: gone"
        );
        assert!(std::error::Error::source(&located).is_none());
        // Located twice, the first place stays.
        let again = located.at("Dockerfile", 9, "RUN x");
        assert!(again.to_string().starts_with("Dockerfile:3: COPY a /a"));
    }

    #[test]
    fn causes_are_chained_not_repeated() {
        let io = io::Error::new(io::ErrorKind::NotFound, "gone");
        let error = BuildError::io("reading x", io);
        assert_eq!(error.to_string(), "reading x");
        assert_eq!(
            std::error::Error::source(&error).map(ToString::to_string),
            Some("gone".into())
        );
    }

    #[test]
    fn owner_messages_say_what_to_do() {
        let unknown = |kind, no_database| BuildError::UnknownOwner {
            spec: "--chown=app:staff".into(),
            name: "app".into(),
            kind,
            no_database,
        };
        assert_eq!(
            unknown(OwnerKind::User, true).to_string(),
            "--chown=app:staff: unable to find user app: the stage has no /etc/passwd; use a numeric uid"
        );
        assert_eq!(
            unknown(OwnerKind::Group, false).to_string(),
            "--chown=app:staff: unable to find group app: no matching entries in the stage's /etc/group"
        );
    }
}
