//! Text made safe and short for one terminal row. A step's output can hold colours, cursor
//! movement and carriage returns (progress bars), and a row wider than the terminal wraps onto
//! the next: either would break a view that redraws its rows in place, so every line it draws
//! is cleaned and cut to the terminal's width first.

use std::iter::Peekable;
use std::str::Chars;

use unicode_width::UnicodeWidthChar;

/// Columns between tab stops, as terminals set them by default.
const TAB: usize = 8;

/// What a terminal would leave visible of `line`: the text after its last carriage return (a
/// progress bar's final state), without escape sequences or control characters, tabs expanded
/// to spaces.
pub fn clean(line: &str) -> String {
    let visible = line.rsplit('\r').find(|part| !part.is_empty()).unwrap_or("");
    let mut out = String::with_capacity(visible.len());
    let mut column = 0;
    let mut chars = visible.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => skip_escape(&mut chars),
            '\t' => {
                let spaces = TAB - column % TAB;
                out.extend(std::iter::repeat_n(' ', spaces));
                column += spaces;
            }
            c if c.is_control() => {}
            c => {
                out.push(c);
                column += columns_of(c);
            }
        }
    }
    out
}

/// Skips the rest of an escape sequence whose ESC was just read: CSI (colours, cursor
/// movement) up to its final byte, string sequences (OSC titles and links, DCS, APC, PM) up to
/// BEL or ESC \, charset designations with their one argument, anything else one character.
fn skip_escape(chars: &mut Peekable<Chars<'_>>) {
    match chars.next() {
        Some('[') => {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
        Some(']' | 'P' | '_' | '^') => {
            while let Some(c) = chars.next() {
                if c == '\x07' {
                    break;
                }
                if c == '\x1b' {
                    chars.next_if_eq(&'\\');
                    break;
                }
            }
        }
        Some('(' | ')' | '*' | '+') => {
            chars.next();
        }
        _ => {}
    }
}

/// The columns `c` takes on a terminal (2 for wide East Asian characters, 0 for combining
/// marks).
fn columns_of(c: char) -> usize {
    c.width().unwrap_or(0)
}

/// The columns `text` takes on a terminal.
pub fn columns(text: &str) -> usize {
    text.chars().map(columns_of).sum()
}

/// `text` cut to at most `width` columns, ending in … where something was cut. A wide
/// character that would straddle the edge is left out whole.
pub fn fit(text: &str, width: usize) -> String {
    if columns(text) <= width {
        return text.to_owned();
    }
    let room = width.saturating_sub(1);
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = columns_of(c);
        if used + w > room {
            break;
        }
        used += w;
        out.push(c);
    }
    if width > 0 {
        out.push('…');
    }
    out
}

/// One row of `width` columns: `left` (cut if need be) and `right` against the right edge.
pub fn row(left: &str, right: &str, width: usize) -> String {
    let right_columns = columns(right);
    if right_columns == 0 {
        return fit(left, width);
    }
    if right_columns + 2 > width {
        return fit(&format!("{left} {right}"), width);
    }
    let left = fit(left, width - right_columns - 1);
    let gap = width - right_columns - columns(&left);
    format!("{left}{}{right}", " ".repeat(gap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_keeps_what_a_terminal_would_show() {
        assert_eq!(clean("plain text"), "plain text");
        assert_eq!(clean("\x1b[1;31merror\x1b[0m: no"), "error: no");
        assert_eq!(clean("\x1b]0;title\x07after"), "after");
        assert_eq!(clean("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"), "link");
        assert_eq!(clean("\x1b(Bascii"), "ascii");
        assert_eq!(clean(" 10%\r 50%\r100%"), "100%");
        assert_eq!(clean("done\r"), "done");
        assert_eq!(clean("a\tb"), "a       b");
        assert_eq!(clean("漢\tb"), "漢      b");
        assert_eq!(clean("bell\x07 and\x08 back"), "bell and back");
    }

    #[test]
    fn fit_counts_columns_not_bytes() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("exactly10!", 10), "exactly10!");
        assert_eq!(fit("a bit too long", 10), "a bit too…");
        // Each of these takes two columns: four fit in 9 with the ellipsis, not a fifth half.
        assert_eq!(fit("漢字漢字漢字", 9), "漢字漢字…");
        assert_eq!(columns(&fit("漢字漢字漢字", 10)), 9);
        assert_eq!(fit("héllo wörld", 6), "héllo…");
        assert_eq!(fit("anything", 0), "");
    }

    #[test]
    fn row_puts_the_status_at_the_edge() {
        assert_eq!(row("#1 step", "1.0s", 16), "#1 step     1.0s");
        assert_eq!(row("#1 a very long step", "1.0s", 16), "#1 a very … 1.0s");
        assert_eq!(row("#1 漢字漢字漢字漢字", "1.0s", 16), "#1 漢字漢…  1.0s");
        assert_eq!(row("#1 step", "", 5), "#1 s…");
        assert_eq!(row("#1 step", "CANCELED", 8), "#1 step…");
    }
}
