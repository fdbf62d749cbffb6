//! The live view on a terminal. A drawing thread redraws the [`Tree`] ten times a second: the
//! lines of steps finished since the last frame are printed once and scroll away like any
//! output; the running steps' rows are drawn beneath them and overwritten in place each frame.
//!
//! Between frames the cursor rests at the first live row. Redrawing from there needs no
//! count of rows drawn before, so a resize that reflows or cuts the old rows leaves nothing
//! behind: the next frame, sized to the terminal as it is then, clears from the cursor down.

use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rbuild_builder::progress::{Event, Progress};
use tokio::runtime::Handle;

use super::tree::Tree;

/// Time between frames: the timers show tenths of a second.
const FRAME: Duration = Duration::from_millis(100);

/// Clears from the cursor to the end of the line / of the screen.
const CLEAR_LINE: &str = "\x1b[K";
const CLEAR_BELOW: &str = "\x1b[J";

/// The view's state, fed by the builder's threads.
struct Shared(Mutex<Tree>);

impl Progress for Shared {
    fn event(&self, event: Event) {
        if let Ok(mut tree) = self.0.lock() {
            tree.apply(event, Instant::now());
        }
    }
}

/// The live view, drawing on stderr until [`finish`](Screen::finish)ed.
pub struct Screen {
    shared: Arc<Shared>,
    /// The drawing thread and what stops it; `None` once finished.
    drawing: Mutex<Option<Drawing>>,
}

struct Drawing {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Screen {
    /// Starts drawing. A Ctrl-C from then on finishes the view before the process ends (with
    /// status 130, as SIGINT's default action would): otherwise the shell's prompt would land
    /// on the live rows, where the cursor rests. `runtime` watches for the signal for as long
    /// as it runs.
    pub fn start(runtime: &Handle) -> Arc<Screen> {
        let shared = Arc::new(Shared(Mutex::new(Tree::default())));
        let (stop, stopped) = mpsc::channel();
        let tree = shared.clone();
        let thread = std::thread::spawn(move || draw(&tree, &stopped));
        let screen = Arc::new(Screen {
            shared,
            drawing: Mutex::new(Some(Drawing { stop, thread })),
        });
        let watched = screen.clone();
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                watched.finish();
                eprintln!("interrupted");
                std::process::exit(130);
            }
        });
        screen
    }

    /// Where the builder reports.
    pub fn progress(&self) -> Arc<dyn Progress> {
        self.shared.clone()
    }

    /// Prints `line` above the live rows at the next frame.
    pub fn say(&self, line: String) {
        if let Ok(mut tree) = self.shared.0.lock() {
            tree.say(line);
        }
    }

    /// Draws the last frame: what finished is printed, what still runs is printed as
    /// canceled, and the cursor is left below it all. Returns once that is written, also to
    /// a second caller.
    pub fn finish(&self) {
        let Ok(mut drawing) = self.drawing.lock() else {
            return;
        };
        if let Some(Drawing { stop, thread }) = drawing.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

/// The drawing thread: a frame every [`FRAME`] until `stopped` says the build returned.
fn draw(shared: &Shared, stopped: &mpsc::Receiver<()>) {
    let mut shown: Vec<String> = Vec::new();
    loop {
        let last = matches!(
            stopped.recv_timeout(FRAME),
            Ok(()) | Err(RecvTimeoutError::Disconnected)
        );
        let (width, height) = area();
        let now = Instant::now();
        let Ok(mut tree) = shared.0.lock() else { return };
        if last {
            tree.cancel(now);
        }
        let printed: Vec<String> = tree
            .take_finished()
            .iter()
            .flat_map(|finished| finished.rows(width))
            .collect();
        let live = tree.rows(now, width, height);
        drop(tree);
        if !printed.is_empty() || live != shown {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(frame(&printed, &live).as_bytes());
            let _ = stderr.flush();
            shown = live;
        }
        if last {
            return;
        }
    }
}

/// Columns and rows to draw in: one less than stderr's terminal has of each, so that no row
/// ends in the last column (where a terminal waits to wrap) and the live rows never fill the
/// whole screen. Read at every frame, so resizes take effect at the next one.
fn area() -> (usize, usize) {
    let (columns, rows) = rustix::termios::tcgetwinsize(std::io::stderr())
        .map(|size| (size.ws_col, size.ws_row))
        .unwrap_or_default();
    let or = |value: u16, default: usize| match value {
        0 => default,
        n => usize::from(n),
    };
    (
        or(columns, 80).saturating_sub(1).max(1),
        or(rows, 24).saturating_sub(1).max(1),
    )
}

/// The bytes of one frame, written from the first live row of the previous frame: `printed`
/// rows (the screen below them cleared first, as they may wrap), then the `live` rows, each
/// overwriting what was there (no blank frame in between, so no flicker), what is left of the
/// previous frame cleared, and the cursor back at the first live row.
fn frame(printed: &[String], live: &[String]) -> String {
    let mut out = String::from("\r");
    if !printed.is_empty() {
        out.push_str(CLEAR_BELOW);
        for line in printed {
            out.push_str(line);
            out.push('\n');
        }
    }
    for (n, line) in live.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        out.push_str(line);
        out.push_str(CLEAR_LINE);
    }
    out.push_str(CLEAR_BELOW);
    if live.len() > 1 {
        out.push_str(&format!("\x1b[{}A\r", live.len() - 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn a_frame_overwrites_the_live_rows_and_returns_to_the_first() {
        assert_eq!(
            frame(&[], &lines(&["#1 RUN a 1.0s", "  │ out"])),
            "\r#1 RUN a 1.0s\x1b[K\n  │ out\x1b[K\x1b[J\x1b[1A\r"
        );
        assert_eq!(
            frame(&[], &lines(&["#1 RUN a 1.1s"])),
            "\r#1 RUN a 1.1s\x1b[K\x1b[J"
        );
    }

    #[test]
    fn finished_lines_are_printed_above_and_stay() {
        assert_eq!(
            frame(&lines(&["#1 RUN a DONE 1.0s"]), &lines(&["#2 RUN b 0.1s"])),
            "\r\x1b[J#1 RUN a DONE 1.0s\n#2 RUN b 0.1s\x1b[K\x1b[J"
        );
        assert_eq!(
            frame(&lines(&["#2 RUN b DONE 0.2s"]), &[]),
            "\r\x1b[J#2 RUN b DONE 0.2s\n\x1b[J",
            "the last frame leaves the cursor below everything"
        );
    }
}
