//! What a build reports as it goes: the CLI turns these events into a live display or plain
//! lines, and the metrics file into numbers.

use std::time::Duration;

use serde::Serialize;

/// A step's identity in the display: its number in the build and where it sits.
#[derive(Clone, Debug, Serialize)]
pub struct StepLabel {
    /// Build-wide step number (1-based, in plan order).
    pub number: usize,
    /// The stage's name, or its index.
    pub stage: String,
    /// Position in the stage (1-based) and the stage's step count.
    pub position: (usize, usize),
    /// The instruction as written.
    pub instruction: String,
    /// The Dockerfile line.
    pub line: usize,
}

/// A build event.
#[derive(Clone, Debug)]
pub enum Event {
    /// A base image is being resolved and its layers fetched.
    Resolving {
        /// The reference.
        reference: String,
    },
    /// A base image is ready.
    Resolved {
        /// The reference.
        reference: String,
        /// Its manifest digest.
        digest: String,
    },
    /// A step starts.
    Started(StepLabel),
    /// A step's result came from the cache: the local store, or the remote cache named.
    Cached(StepLabel, Option<String>),
    /// A step missed the cache and runs; the reason says what changed.
    Missed(StepLabel, String),
    /// A step finished.
    Finished(StepLabel, Duration),
    /// A step failed after running this long; the build's error says why. A live display
    /// prints the step's whole output at this point, as only the last lines are in the error.
    Failed(StepLabel, Duration),
    /// A step was stopped after running this long, because another part of the build failed.
    Canceled(StepLabel, Duration),
    /// A line of output from a step (RUN).
    Output(StepLabel, String),
}

/// Receives build events.
pub trait Progress: Send + Sync {
    /// Called for every event, from any thread.
    fn event(&self, event: Event);
}

/// Discards events.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event) {}
}
