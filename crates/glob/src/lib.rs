//! The one glob matcher of the workspace. Three places match paths against patterns, each
//! after a model whose behaviour users know, and they share the basics (`*`, `?`, classes,
//! escapes) while differing in `**`:
//!
//! - `COPY`/`ADD` source wildcards: Go's `filepath.Match`, one component at a time
//!   ([`match_component`], [`Syntax::FilepathMatch`]);
//! - `.dockerignore`: moby/patternmatcher, as docker and BuildKit use it
//!   ([`Syntax::PatternMatcher`], with [`SyntaxError`] for what Go refuses);
//! - the registry's repository rules: `**` as a whole component only
//!   ([`Syntax::Components`]).
//!
//! A [`Pattern`] is matched without backtracking, in time proportional to the path's
//! length times the pattern's, because a `.dockerignore` is user input and a pattern such
//! as `*a*a*a*a*b` would otherwise take exponential time; nor does it go through a regex
//! engine, whose syntax would leak into the patterns' meaning.
//!
//! ```
//! use rbuild_glob::{Pattern, Syntax, match_component};
//!
//! let logs = Pattern::new("**/*.log", Syntax::PatternMatcher)?;
//! assert!(logs.matches("a.log"));
//! assert!(logs.matches("var/run/a.log"));
//! assert!(!logs.matches("a.log/x"));
//!
//! let team = Pattern::new("team/**", Syntax::Components)?;
//! assert!(team.matches("team"));
//! assert!(team.matches("team/app/web"));
//! assert!(!team.matches("teams"));
//!
//! assert!(match_component("*.[ch]", "main.c"));
//! assert!(Pattern::new("[z-a]", Syntax::PatternMatcher).is_err());
//! # Ok::<(), rbuild_glob::SyntaxError>(())
//! ```
#![deny(missing_docs)]

mod class;
mod component;
mod error;
mod matcher;
mod pattern;
mod token;

pub use component::{has_wildcard, match_component};
pub use error::SyntaxError;
pub use pattern::{Pattern, Syntax};
