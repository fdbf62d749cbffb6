//! An error and its causes as one line, `outer: inner: root`, for messages and logs that show
//! a whole chain where only one error fits. A cause whose text the line already holds (many
//! errors repeat their source's) is not repeated.

use std::error::Error;

/// `error: source: source…`.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{what}")]
    struct Outer {
        what: &'static str,
        source: io::Error,
    }

    #[test]
    fn causes_follow_once() {
        let outer = |what| Outer {
            what,
            source: io::Error::other("disk full"),
        };
        assert_eq!(chain(&outer("writing x")), "writing x: disk full");
        assert_eq!(chain(&outer("writing x: disk full")), "writing x: disk full");
    }
}
