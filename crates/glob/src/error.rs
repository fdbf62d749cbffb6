//! What is wrong with a pattern, and where.

/// A malformed pattern. Offsets are in bytes from the start of the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// A `\` with nothing after it to escape.
    #[error("the `\\` at byte {at} escapes nothing (write `\\\\` for a backslash)")]
    TrailingEscape {
        /// Where the `\` is.
        at: usize,
    },
    /// A `[` whose class never ends with `]`.
    #[error("the `[` at byte {at} is never closed by `]` (write `\\[` for a bracket)")]
    UnclosedClass {
        /// Where the `[` is.
        at: usize,
    },
    /// A `-` or `]` where Go wants a class member: first in the class (`[]a]`, `[-a]`),
    /// after a range (`[a-b-c]`) or ending one (`[a-]`).
    #[error("the `{found}` at byte {at} must be escaped inside a class (`\\{found}`)")]
    UnescapedInClass {
        /// Where it is.
        at: usize,
        /// The character: `-` or `]`.
        found: char,
    },
    /// A range whose end comes before its start, like `[z-a]` (which Go's regexp refuses).
    #[error("the range at byte {at} runs backwards")]
    ReversedRange {
        /// Where the range's first character is.
        at: usize,
    },
}

impl SyntaxError {
    /// The same error with its offset moved `by` bytes, for a part read on its own.
    pub(crate) fn shifted(self, by: usize) -> SyntaxError {
        match self {
            SyntaxError::TrailingEscape { at } => SyntaxError::TrailingEscape { at: at + by },
            SyntaxError::UnclosedClass { at } => SyntaxError::UnclosedClass { at: at + by },
            SyntaxError::UnescapedInClass { at, found } => {
                SyntaxError::UnescapedInClass { at: at + by, found }
            }
            SyntaxError::ReversedRange { at } => SyntaxError::ReversedRange { at: at + by },
        }
    }
}
