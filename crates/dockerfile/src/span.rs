//! Source positions: where an instruction, a finding or an error is in the Dockerfile. Its
//! own module because the syntax tree, the findings and the errors all carry one.

use serde::Serialize;

/// Where something is in the Dockerfile. Lines and columns count from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Span {
    /// First line of the instruction.
    pub start_line: usize,
    /// Last line (the heredoc terminator for heredocs).
    pub end_line: usize,
    /// Column of the instruction keyword on `start_line`.
    pub column: usize,
}

impl Span {
    /// A span covering `start..=end` lines, starting at column 1.
    pub fn lines(start: usize, end: usize) -> Self {
        Span {
            start_line: start,
            end_line: end.max(start),
            column: 1,
        }
    }
}
