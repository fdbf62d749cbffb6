//! Reading a secret the way `docker login` does: from stdin (`--password-stdin`), or from a
//! terminal prompt that does not echo.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context as _;
use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};

/// The first line of stdin, without its line ending. An empty secret is an error.
pub fn from_stdin(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("reading the {what} from stdin"))?;
    let secret = line.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        anyhow::bail!("the {what} on stdin is empty");
    }
    Ok(secret)
}

/// Whether there is a terminal to prompt on.
pub fn can_prompt() -> bool {
    std::io::stdin().is_terminal()
}

/// Prints `prompt` and reads one line from the terminal.
pub fn prompt_line(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Prints `prompt` and reads one line from the terminal with echo off.
pub fn prompt_secret(prompt: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("reading the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("turning terminal echo off")?;
    let line = prompt_line(prompt);
    // Restore echo whatever happened; the newline the user typed was not echoed.
    let restored = tcsetattr(&stdin, OptionalActions::Now, &saved);
    eprintln!();
    restored.context("restoring terminal echo")?;
    line
}
