//! The build display: a live view of running steps on a terminal (indicatif), or plain
//! BuildKit-style lines in CI and logs (`--progress=plain`, or when stderr is not a tty).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rbuild_builder::progress::{Event, Progress, StepLabel};

/// How to show progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A live view on a terminal, plain lines otherwise.
    Auto,
    /// Always the live view.
    Tty,
    /// Always plain lines.
    Plain,
}

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
            Event::Cached(label) => format!("#{} CACHED", label.number),
            Event::Missed(label, reason) => format!("#{} cache miss: {reason}", label.number),
            Event::Finished(label, took) => format!("#{} DONE {:.1}s", label.number, took.as_secs_f64()),
            Event::Output(label, text) => format!("#{} {text}", label.number),
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// One spinner per running step; finished steps stay as a line saying what happened.
struct Live {
    bars: MultiProgress,
    running: Mutex<HashMap<usize, ProgressBar>>,
    notes: Mutex<HashMap<usize, String>>,
}

impl Progress for Live {
    fn event(&self, event: Event) {
        match event {
            Event::Resolving { reference } => {
                let _ = self.bars.println(format!("  resolving {reference}"));
            }
            Event::Resolved { .. } => {}
            Event::Started(label) => {
                let bar = self.bars.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(heading(&label));
                bar.enable_steady_tick(Duration::from_millis(100));
                if let Ok(mut running) = self.running.lock() {
                    running.insert(label.number, bar);
                }
            }
            Event::Cached(label) => {
                if let Ok(mut notes) = self.notes.lock() {
                    notes.insert(label.number, "CACHED".to_owned());
                }
            }
            Event::Missed(label, reason) => {
                if let Ok(mut notes) = self.notes.lock() {
                    notes.insert(label.number, format!("miss: {reason}"));
                }
            }
            Event::Output(label, text) => {
                let _ = self.bars.println(format!("#{} {text}", label.number));
            }
            Event::Finished(label, took) => {
                let note = self
                    .notes
                    .lock()
                    .ok()
                    .and_then(|mut n| n.remove(&label.number))
                    .unwrap_or_default();
                if let Some(bar) = self.running.lock().ok().and_then(|mut r| r.remove(&label.number)) {
                    bar.finish_and_clear();
                    self.bars.remove(&bar);
                }
                let _ = self
                    .bars
                    .println(format!("✓ {} {:.1}s {note}", heading(&label), took.as_secs_f64()));
            }
        }
    }
}

/// The display for `mode`.
pub fn for_mode(mode: Mode) -> Box<dyn Progress> {
    let live = match mode {
        Mode::Auto => std::io::stderr().is_terminal(),
        Mode::Tty => true,
        Mode::Plain => false,
    };
    if live {
        Box::new(Live {
            bars: MultiProgress::new(),
            running: Mutex::new(HashMap::new()),
            notes: Mutex::new(HashMap::new()),
        })
    } else {
        Box::new(Plain)
    }
}
