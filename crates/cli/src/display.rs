//! The build display: BuildKit's live view of running steps on a terminal, or its plain lines
//! in CI and logs (`--progress=plain`, or when stderr, where both are written, is not a
//! terminal).

mod terminal;
mod text;
mod tree;

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use rbuild_builder::progress::{Event, Progress, StepLabel};

use terminal::Screen;
use tokio::runtime::Handle;

/// How to show progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The live view when stderr is a terminal (and TERM is not `dumb`), plain lines
    /// otherwise.
    Auto,
    /// Always the live view.
    Tty,
    /// Always plain lines.
    Plain,
}

/// `#3 [stage 2/5] RUN make`: a step as both displays name it.
fn heading(label: &StepLabel) -> String {
    format!(
        "#{} [{} {}/{}] {}",
        label.number, label.stage, label.position.0, label.position.1, label.instruction
    )
}

/// Plain lines, one per event, on stderr.
struct Plain;

impl Progress for Plain {
    fn event(&self, event: Event) {
        let line = match event {
            Event::Resolving { reference } => format!("resolving {reference}"),
            Event::Resolved { reference, digest } => format!("resolved {reference}@{digest}"),
            Event::Started(label) => heading(&label),
            Event::Cached(label, from) => format!("#{} {}", label.number, cached(from.as_deref())),
            Event::Missed(label, reason) => format!("#{} cache miss: {reason}", label.number),
            Event::Finished(label, took) => format!("#{} DONE {:.1}s", label.number, took.as_secs_f64()),
            Event::Output(label, text) => format!("#{} {text}", label.number),
            Event::Canceled(label, took) => format!("#{} CANCELED {:.1}s", label.number, took.as_secs_f64()),
            // The build's error follows, naming the step.
            Event::Failed(..) => return,
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// The display a build reports to; [`finish`](Display::finish) it when the build returns,
/// before printing anything else on stderr.
pub struct Display {
    progress: Arc<dyn Progress>,
    screen: Option<Arc<Screen>>,
}

impl Display {
    /// The display for `mode`, started; the live view watches for Ctrl-C on `runtime`.
    pub fn start(mode: Mode, runtime: &Handle) -> Display {
        let live = match mode {
            Mode::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
            }
            Mode::Tty => true,
            Mode::Plain => false,
        };
        match live {
            true => {
                let screen = Screen::start(runtime);
                Display {
                    progress: screen.progress(),
                    screen: Some(screen),
                }
            }
            false => Display {
                progress: Arc::new(Plain),
                screen: None,
            },
        }
    }

    /// Where the builder reports.
    pub fn progress(&self) -> Arc<dyn Progress> {
        self.progress.clone()
    }

    /// Prints a line of the command's own on stderr: above the live rows while they show
    /// (printed directly, it would land among them), else at once.
    pub fn say(&self, line: String) {
        match &self.screen {
            Some(screen) => screen.say(line),
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }

    /// Ends the live view, leaving the cursor below it.
    pub fn finish(&self) {
        if let Some(screen) = &self.screen {
            screen.finish();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.finish();
    }
}

/// How a cached step's status reads: `CACHED`, or `CACHED (from REF)` for a remote cache.
fn cached(from: Option<&str>) -> String {
    match from {
        None => "CACHED".to_owned(),
        Some(cache) => format!("CACHED (from {cache})"),
    }
}
