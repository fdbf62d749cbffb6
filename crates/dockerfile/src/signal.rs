//! STOPSIGNAL validation (moby's `signal.ParseSignal` on Linux).

const NAMES: [&str; 34] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE",
    "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU",
    "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU",
];

/// Accepts a signal number, `SIGTERM`, `TERM`, or a real-time signal
/// (`RTMIN+3`, `SIGRTMAX-1`).
pub(crate) fn validate(raw: &str) -> Result<(), String> {
    if let Ok(n) = raw.parse::<i64>() {
        return if n == 0 {
            Err(format!("Invalid signal: {raw}"))
        } else {
            Ok(())
        };
    }
    let upper = raw.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if NAMES.contains(&name) || name == "XFSZ" || name == "RTMIN" || name == "RTMAX" {
        return Ok(());
    }
    let rt = |prefix: &str, max: u32| {
        name.strip_prefix(prefix)
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=max).contains(&n))
    };
    if rt("RTMIN+", 15) || rt("RTMAX-", 14) {
        return Ok(());
    }
    Err(format!(
        "Invalid signal: {raw} (use a name such as SIGTERM or a number)"
    ))
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn signals() {
        for ok in [
            "SIGTERM",
            "TERM",
            "sigquit",
            "9",
            "SIGRTMIN+3",
            "RTMAX-1",
            "SIGWINCH",
        ] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in ["0", "SIGNOPE", "", "RTMIN+99"] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
