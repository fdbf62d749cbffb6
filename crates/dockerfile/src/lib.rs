//! rbuild's Dockerfile frontend: it reads a Dockerfile the way `docker build`
//! (BuildKit, Dockerfile syntax 1.x) does and turns it into a typed build
//! plan, and it answers the two other questions a builder asks of its
//! inputs: which context files `.dockerignore` excludes, and what
//! `rbuild check` should warn about.
//!
//! The crate is pure: strings in, values out. Base-image facts that change
//! a Dockerfile's meaning (the `Env` that `ENV PATH=$PATH:/x` extends, the
//! ONBUILD triggers a stage inherits) come from the caller through the
//! [`ImageResolver`] trait.
//!
//! # Building
//!
//! ```
//! use rbuild_dockerfile::{parse, plan, PlanOptions, NoResolver, StepKind};
//!
//! let dockerfile = parse("\
//! ARG VERSION=3.20
//! FROM alpine:${VERSION} AS build
//! ARG VERSION
//! RUN echo building $VERSION
//! FROM scratch
//! COPY --from=build /etc/os-release /
//! ")?;
//! let mut options = PlanOptions::default();
//! options.build_args.insert("VERSION".into(), "3.21".into());
//! let plan = plan(&dockerfile, &options, &NoResolver)?;
//!
//! assert_eq!(plan.stages.len(), 2);
//! let build = &plan.stages[0];
//! let StepKind::Run(run) = &build.steps[1].kind else { unreachable!() };
//! assert_eq!(run.argv, ["/bin/sh", "-c", "echo building $VERSION"]);
//! assert_eq!(
//!     build.steps[1].created_by.as_deref(),
//!     Some("RUN |1 VERSION=3.21 /bin/sh -c echo building $VERSION # buildkit")
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A builder walks `plan.stages` in order (each stage only depends on
//! earlier ones), starts each from its [`Base`], and executes its steps;
//! `Step::created_by` is the image history entry and `RunStep::args` /
//! `RunStep::proxy_env` separate what belongs in cache keys from what does
//! not.
//!
//! # `rbuild check`
//!
//! The CLI needs about this much code around [`check()`]:
//!
//! ```
//! use rbuild_dockerfile::{check, CheckOptions, dockerignore::Matcher};
//!
//! let text = "FROM alpine\nCMD node server.js\n";   // read from -f
//! let mut options = CheckOptions::default();
//! options.file_name = "Dockerfile".into();
//! options.plan.build_args.insert("K".into(), "V".into()); // --build-arg
//! options.plan.target = None;                             // --target
//! options.plan.dockerignore = Matcher::from_dockerignore("*.md\n").ok();
//! let report = check(text, &options);
//! let output = report.render(text);  // or report.to_json() for --format json
//! assert!(output.contains("warning[JSONArgsRecommended]"));
//! assert_eq!(report.exit_code(), 0); // 1 on errors, or warnings under check=error=true
//! ```
//!
//! To choose the ignore file, try [`dockerignore::ignore_file_candidates`]
//! in order and use the first that exists; no other file applies.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod ast;
pub mod check;
pub mod directives;
mod dispatch;
pub mod dockerignore;
pub mod expand;
mod go_compat;
mod heredoc;
mod instructions;
mod json;
pub mod lint;
mod parser;
pub mod paths;
pub mod plan;
mod planner;
pub mod platform;
mod ports;
mod reference;
pub mod run_flags;
mod run_step;
mod signal;
mod sources;
mod span;
mod stages;
mod suggest;
mod syntax;
mod transfer;

pub use ast::{Command, CommandLine, Dockerfile, Instruction, Span};
pub use check::{CheckOptions, CheckReport, Diagnostic, Severity, check};
pub use lint::{Lint, Rule};
pub use parser::parse;
pub use plan::{
    Base, BaseImageInfo, CopyFrom, ImageResolver, NoResolver, Plan, PlanError, PlanErrorKind, PlanOptions,
    Stage, Step, StepKind,
};
pub use stages::plan;
pub use syntax::{ParseError, ParseErrorKind};
