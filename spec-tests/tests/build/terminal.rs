//! The live view `rbuild build` draws on a terminal, read from a real one (tmux): one row per
//! running step with its timer and a window of its last output lines, finished steps
//! collapsed to one row, a failed step's whole output, rows cut to the terminal's width, a
//! resize mid-build, Ctrl-C; and plain lines when stderr is not a terminal.
//!
//! Nothing waits on a clock: the long step prints its lines and then blocks until the test
//! opens a [`Gate`], and the test reads the screen until what it expects is there (or a
//! deadline passes).

use std::path::Path;
use std::time::Duration;

use spec_tests::registry::rbuild_bin;
use spec_tests::tmux::Tmux;
use spec_tests::tools::{output, run};
use unicode_width::UnicodeWidthStr;

use crate::support::{busybox_store, dockerfile, rbuild};

/// How long a screen may take to show what a test waits for (a loaded CI machine).
const LIMIT: Duration = Duration::from_secs(120);

/// A build running in a terminal: its store (holding the busybox base), context and terminal.
struct TerminalBuild {
    store: tempfile::TempDir,
    base: String,
    ctx: tempfile::TempDir,
    terminal: Tmux,
}

/// Starts `rbuild build --progress <progress>` in a 100 x 30 terminal, of a context whose
/// Dockerfile is `text` of the base image's name; `None` when runc or tmux is
/// missing (outside CI).
fn start_build(progress: &str, text: impl FnOnce(&str) -> String) -> Option<TerminalBuild> {
    let (store, base, ctx) = busybox_store()?;
    dockerfile(ctx.path(), &text(&base));
    let terminal = build_in_terminal(store.path(), ctx.path(), progress)?;
    Some(TerminalBuild {
        store,
        base,
        ctx,
        terminal,
    })
}

/// `rbuild build --progress <progress>` of `context` with the store `store`, in a terminal of
/// 100 x 30.
fn build_in_terminal(store: &Path, context: &Path, progress: &str) -> Option<Tmux> {
    let bin = rbuild_bin();
    let argv = [
        bin.to_str().expect("a UTF-8 path"),
        "build",
        "--progress",
        progress,
        context.to_str().expect("a UTF-8 path"),
    ];
    let env = [
        ("RBUILD_ROOT", store.to_str().expect("a UTF-8 path")),
        ("RUST_LOG", "warn"),
    ];
    Tmux::start(&argv, &env, 100, 30)
}

/// What a step waits for after printing its lines: a file named `go` in its cache mount, a
/// directory of the store's. Opened when the test is ready, or when dropped, so that a failed
/// test does not leave the step waiting.
struct Gate<'a>(&'a Path);

impl Gate<'_> {
    fn open(&self) {
        let Ok(mounts) = std::fs::read_dir(self.0.join("cache-mounts")) else {
            return;
        };
        for dir in mounts.flatten().map(|entry| entry.path()).filter(|p| p.is_dir()) {
            let _ = std::fs::write(dir.join("go"), "");
        }
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        self.open();
    }
}

/// Whether `row` is step `number`'s row while it runs: its heading and a timer at the end.
fn running_row(row: &str, number: usize) -> bool {
    let mut words = row.rsplit(' ');
    let timer = words.next().and_then(|w| w.strip_suffix('s'));
    let status = words.find(|w| !w.is_empty()).unwrap_or_default();
    row.starts_with(&format!("#{number} ["))
        && timer.is_some_and(|t| t.parse::<f64>().is_ok())
        && !["DONE", "ERROR", "CANCELED"].contains(&status)
}

/// The rows that begin with step `number`'s heading.
fn step_rows(rows: &[String], number: usize) -> Vec<&String> {
    let heading = format!("#{number} [");
    rows.iter().filter(|row| row.starts_with(&heading)).collect()
}

/// The rows of output windows beneath running steps.
fn window_rows(rows: &[String]) -> Vec<&str> {
    rows.iter()
        .filter(|row| row.contains("│ "))
        .map(String::as_str)
        .collect()
}

/// Asserts that the screen shows step 2 running with the window of its last six lines right
/// beneath it, these rows cut to fit `width` columns, and nothing below them.
fn assert_live_window(screen: &[String], width: usize) {
    let text = screen.join("\n");
    let running: Vec<usize> = (0..screen.len())
        .filter(|&i| running_row(&screen[i], 2))
        .collect();
    assert_eq!(running.len(), 1, "one row for the running step:\n{text}");
    let expected: Vec<String> = (195..=200).map(|n| format!("  │ line-{n}")).collect();
    let window = &screen[running[0] + 1..];
    assert_eq!(
        window_rows(screen).len(),
        6,
        "no more than the window of output:\n{text}"
    );
    assert_eq!(
        window[..6],
        expected[..],
        "the last lines beneath the step:\n{text}"
    );
    assert!(
        window[6..].iter().all(|row| row.is_empty()),
        "nothing left below the live rows:\n{text}"
    );
    for row in &screen[running[0]..running[0] + 7] {
        assert!(
            row.width() < width,
            "{row:?} is not cut to {width} columns:\n{text}"
        );
    }
}

#[test]
fn live_view_in_a_terminal_collapses_steps_and_survives_a_resize() {
    let wide = "漢字".repeat(40);
    let Some(TerminalBuild {
        store, ctx, terminal, ..
    }) = start_build("tty", |base| {
        format!(
            "FROM {base}\nRUN echo quick\n\
             RUN --mount=type=cache,id=gate,target=/gate for i in $(seq 1 200); do echo line-$i; done; \
             timeout 300 sh -c 'until [ -e /gate/go ]; do sleep 0.05; done'\n\
             RUN echo {wide}\n"
        )
    })
    else {
        return;
    };
    let gate = Gate(store.path());

    let screen = terminal.wait_for("step 2's last line in its window", LIMIT, |screen| {
        screen.iter().any(|row| row == "  │ line-200")
    });
    assert_live_window(&screen, 100);
    let written = terminal.history();
    for row in &written {
        assert!(row.width() < 100, "a row the terminal had to wrap: {row:?}");
    }
    let finished = step_rows(&screen, 1);
    assert!(
        finished.len() == 1 && finished[0].contains(" DONE "),
        "step 1 collapsed to one finished row:\n{}",
        screen.join("\n")
    );
    assert!(
        !screen.iter().any(|row| row.ends_with("│ quick")),
        "step 1's output went with it:\n{}",
        screen.join("\n")
    );

    terminal.resize(60, 15);
    let screen = terminal.wait_for("a frame at the new width", LIMIT, |screen| {
        screen.iter().any(|row| running_row(row, 2) && row.width() < 60)
    });
    assert_live_window(&screen, 60);

    gate.open();
    assert_eq!(terminal.wait_exit(LIMIT), 0, "{}", terminal.history().join("\n"));

    let history = terminal.history();
    let text = history.join("\n");
    assert!(window_rows(&history).is_empty(), "no output window left:\n{text}");
    assert!(
        !history.iter().any(|row| row.ends_with("line-200")),
        "the long step's output is not left behind:\n{text}"
    );
    for step in 1..=3 {
        let rows = step_rows(&history, step);
        assert!(
            rows.len() == 1 && rows[0].contains(" DONE "),
            "step {step} is one finished row:\n{text}"
        );
    }
    let last = step_rows(&history, 3)[0];
    assert!(
        last.contains('…') && last.width() < 60,
        "step 3's wide heading is cut to the narrowed terminal: {last:?}"
    );
    assert!(text.contains("built sha256:"), "{text}");

    let Some(again) = build_in_terminal(store.path(), ctx.path(), "tty") else {
        return;
    };
    assert_eq!(again.wait_exit(LIMIT), 0, "{}", again.history().join("\n"));
    let history = again.history();
    for step in 1..=3 {
        let rows = step_rows(&history, step);
        assert!(
            rows.len() == 1 && rows[0].ends_with(" CACHED"),
            "step {step} is one cached row:\n{}",
            history.join("\n")
        );
    }
}

#[test]
fn a_failed_step_prints_all_its_output_and_auto_is_plain_off_a_terminal() {
    let Some(TerminalBuild {
        store, ctx, terminal, ..
    }) = start_build("auto", |base| {
        format!("FROM {base}\nRUN echo before\nRUN for i in $(seq 1 200); do echo line-$i; done; exit 3\n")
    })
    else {
        return;
    };
    assert_ne!(terminal.wait_exit(LIMIT), 0, "the build fails");
    let history = terminal.history();
    let text = history.join("\n");
    let failed = step_rows(&history, 2);
    assert!(
        failed.len() == 1 && failed[0].contains(" ERROR "),
        "step 2 is one failed row:\n{text}"
    );
    let first = history
        .iter()
        .position(|row| row == "#2 line-1")
        .unwrap_or_else(|| panic!("step 2's output is printed:\n{text}"));
    let expected: Vec<String> = (1..=200).map(|n| format!("#2 line-{n}")).collect();
    assert_eq!(
        history.get(first..first + 200),
        Some(&expected[..]),
        "all of it, in order:\n{text}"
    );
    assert!(
        text.contains("error: ") && text.contains("exited with code 3"),
        "the error follows:\n{text}"
    );
    let before = step_rows(&history, 1);
    assert!(
        before.len() == 1 && before[0].contains(" DONE ") && !text.contains("#1 DONE"),
        "auto chose the live view on a terminal (finished steps on one row, not plain lines):\n{text}"
    );

    let plain = output(
        rbuild(store.path())
            .args(["build", "--progress", "auto"])
            .arg(ctx.path()),
    );
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success());
    assert!(
        stderr.contains("#1 CACHED") && stderr.contains("#2 line-200") && !stderr.contains('\x1b'),
        "auto writes plain lines when stderr is not a terminal:\n{stderr}"
    );
}

#[test]
fn ctrl_c_finishes_the_view_before_exiting() {
    let Some(TerminalBuild {
        store,
        base,
        ctx,
        terminal,
    }) = start_build("tty", |base| {
        format!("FROM {base}\nRUN for i in $(seq 1 600); do echo tick-$i; sleep 0.1; done\n")
    })
    else {
        return;
    };
    terminal.wait_for("the step's output", LIMIT, |screen| {
        screen.iter().any(|row| row == "  │ tick-3")
    });
    terminal.interrupt();
    assert_eq!(
        terminal.wait_exit(LIMIT),
        130,
        "{}",
        terminal.history().join("\n")
    );
    let history = terminal.history();
    let text = history.join("\n");
    let canceled = step_rows(&history, 1);
    assert!(
        canceled.len() == 1 && canceled[0].contains(" CANCELED "),
        "the running step is one canceled row:\n{text}"
    );
    assert!(window_rows(&history).is_empty(), "no output window left:\n{text}");
    assert!(
        history.iter().any(|row| row == "interrupted"),
        "and the cursor below it:\n{text}"
    );

    // As after any interrupted build, the next one clears what the last one left mounted.
    dockerfile(ctx.path(), &format!("FROM {base}\nRUN true\n"));
    run(rbuild(store.path())
        .args(["build", "--progress", "plain"])
        .arg(ctx.path()));
}
