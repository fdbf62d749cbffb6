//! A real terminal for tests that read what a program draws on one: a private tmux server (its
//! own socket in a temporary directory, stopped when dropped) running one command in a window of
//! a given size, whose screen and scrollback are read back as text.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::tools::{output, require, run, which};

/// How often [`Tmux::wait_for`] reads the screen.
const POLL: Duration = Duration::from_millis(50);

/// A tmux server with one pane running the command it was started with. The pane stays after
/// the command exits, so its last screen can still be read.
pub struct Tmux {
    bin: PathBuf,
    /// Holds the server's socket and configuration.
    dir: tempfile::TempDir,
}

impl Tmux {
    /// Starts `argv` (no shell) with `env` added to its environment, in a terminal of `width`
    /// columns and `height` rows; `None` (after [`require`]) when tmux is missing.
    pub fn start(argv: &[&str], env: &[(&str, &str)], width: u16, height: u16) -> Option<Tmux> {
        let found = which("tmux");
        if !require(
            "tmux",
            found.is_some(),
            "apt-get install tmux (scripts/test does)",
        ) {
            return None;
        }
        let tmux = Tmux {
            bin: found?,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        // No status line: the window is all pane, `height` rows of it.
        let config = tmux.dir.path().join("tmux.conf");
        std::fs::write(
            &config,
            "set -g status off\nset -g remain-on-exit on\nset -g history-limit 100000\n",
        )
        .expect("write tmux.conf");
        let mut command = tmux.cmd();
        command
            .arg("-f")
            .arg(&config)
            .args(["new-session", "-d", "-s", "test"]);
        command.args(["-x", &width.to_string(), "-y", &height.to_string()]);
        for (name, value) in env {
            command.arg("-e").arg(format!("{name}={value}"));
        }
        // The exit status goes to a file: tmux 3.3 can miss the exit of a command that ends
        // within moments of the server starting, and then never reports the pane's status.
        // The shell outlives a Ctrl-C to write it (a trap, unlike an ignored signal, is not
        // inherited by the command).
        let status = tmux.status_file();
        let script = r#"trap : INT; status=$1; shift; "$@"; echo $? > "$status""#;
        command.args(["--", "sh", "-c", script, "sh"]);
        run(command.arg(&status).args(argv));
        Some(tmux)
    }

    fn status_file(&self) -> PathBuf {
        self.dir.path().join("status")
    }

    /// A tmux command talking to this server, in UTF-8 whatever the locale.
    fn cmd(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command.arg("-u").arg("-S").arg(self.dir.path().join("socket"));
        command
    }

    fn capture(&self, extra: &[&str]) -> Vec<String> {
        let text = run(self.cmd().args(["capture-pane", "-p", "-t", "test"]).args(extra));
        text.lines().map(str::to_owned).collect()
    }

    /// The visible screen, one string per row (trailing blanks dropped).
    pub fn screen(&self) -> Vec<String> {
        self.capture(&[])
    }

    /// Everything the pane showed, scrollback then screen, with rows the terminal wrapped
    /// joined back into the line that was written.
    pub fn history(&self) -> Vec<String> {
        self.capture(&["-J", "-S", "-"])
    }

    /// Resizes the terminal, as a user dragging the window's corner does.
    pub fn resize(&self, width: u16, height: u16) {
        let (x, y) = (width.to_string(), height.to_string());
        run(self
            .cmd()
            .args(["resize-window", "-t", "test", "-x", &x, "-y", &y]));
    }

    /// Types Ctrl-C.
    pub fn interrupt(&self) {
        run(self.cmd().args(["send-keys", "-t", "test", "C-c"]));
    }

    /// The screen once `done` holds for it; fails the test with `what` and the last screen
    /// after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited {limit:?} for {what}; the screen:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(POLL);
        }
    }

    /// The command's exit status once it has exited; fails the test after `limit`.
    pub fn wait_exit(&self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            let written = std::fs::read_to_string(self.status_file()).unwrap_or_default();
            if let Ok(status) = written.trim().parse() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the command did not exit in {limit:?}; the screen:\n{}",
                self.screen().join("\n")
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        output(self.cmd().arg("kill-server"));
    }
}
