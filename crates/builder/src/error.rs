//! Build errors. Each names what failed and, once it is known, the Dockerfile line and
//! instruction, so a user can go straight to the cause.

use std::io;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A step failed; wraps the cause with where it happened.
    #[error("{file}:{line}: {instruction}\n  {cause}")]
    Step {
        /// The Dockerfile.
        file: String,
        /// The line the instruction starts on.
        line: usize,
        /// The instruction as written.
        instruction: String,
        /// The cause (shown in this error's message, so not chained as its source).
        cause: Box<BuildError>,
    },
    /// An error of a stage task, shared by the stages that waited on it.
    #[error(transparent)]
    Shared(std::sync::Arc<BuildError>),
    /// The Dockerfile does not parse or plan.
    #[error("{0}")]
    Dockerfile(String),
    /// The context is unusable.
    #[error("build context: {0}")]
    Context(String),
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
    /// A `--chown` user or group that the stage's /etc/passwd or /etc/group does not know.
    #[error("{0}")]
    UnknownOwner(String),
    /// An instruction or option rbuild does not support (yet).
    #[error("{0}")]
    Unsupported(String),
    /// A RUN command exited with a non-zero status.
    #[error("the command exited with code {exit_code}{}", tail_text(tail))]
    RunFailed {
        /// Its exit code.
        exit_code: i32,
        /// The last lines it printed.
        tail: Vec<String>,
    },
    /// A base image or other input could not be fetched.
    #[error("{0}")]
    Fetch(String),
    /// Pushing the image to a registry failed.
    #[error("pushing {reference}: {source}")]
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
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
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
