//! "Did you mean ...?" suggestions for misspelt names.

/// The candidate closest to `word`, if one is close enough to be a likely
/// typo (a case-only difference always is).
/// Suggestions look at this many candidates at most, so a file defining
/// thousands of variables cannot make every warning cost thousands of
/// comparisons (callers pass the most relevant candidates first).
const MAX_CANDIDATES: usize = 256;

pub(crate) fn closest<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower: Vec<char> = word.to_lowercase().chars().collect();
    let limit = (lower.len() / 3 + 1).clamp(1, 3);
    let mut rows = Rows::default();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates.into_iter().take(MAX_CANDIDATES) {
        // Lengths further apart than the limit cannot be within it; skipping
        // them keeps suggestions cheap among thousands of variables.
        if c == word || c.chars().count().abs_diff(lower.len()) > limit {
            continue;
        }
        let other: Vec<char> = c.to_lowercase().chars().collect();
        let Some(d) = rows.distance(&lower, &other, limit) else {
            continue;
        };
        if best.is_none_or(|(bd, bc)| (d, c) < (bd, bc)) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// `" (did you mean $X?)"` with `prefix` before the suggestion, or nothing
/// when no candidate is close, in BuildKit's lint-message style.
pub(crate) fn parenthesised<'a, I>(word: &str, candidates: I, prefix: &str) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    closest(word, candidates)
        .map(|s| format!(" (did you mean {prefix}{s}?)"))
        .unwrap_or_default()
}

/// Three reusable rows of the edit-distance table, so comparing a word
/// with many candidates does not allocate per comparison.
#[derive(Default)]
struct Rows {
    before: Vec<usize>,
    prev: Vec<usize>,
    cur: Vec<usize>,
}

impl Rows {
    /// Edit distance counting a swap of neighbours as one edit (typos like
    /// `chwon` are one step from `chown`), or `None` once it must exceed `limit`.
    fn distance(&mut self, a: &[char], b: &[char], limit: usize) -> Option<usize> {
        let width = b.len() + 1;
        for row in [&mut self.before, &mut self.prev, &mut self.cur] {
            row.clear();
            row.resize(width, 0);
        }
        for (j, cell) in self.prev.iter_mut().enumerate() {
            *cell = j;
        }
        for i in 1..=a.len() {
            self.cur[0] = i;
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (self.prev[j] + 1)
                    .min(self.cur[j - 1] + 1)
                    .min(self.prev[j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(self.before[j - 2] + 1);
                }
                self.cur[j] = best;
            }
            if self.cur.iter().min().is_some_and(|&m| m > limit) {
                return None;
            }
            std::mem::swap(&mut self.before, &mut self.prev);
            std::mem::swap(&mut self.prev, &mut self.cur);
        }
        Some(self.prev[b.len()]).filter(|&d| d <= limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let flags = ["chown", "chmod", "from", "link"];
        assert_eq!(closest("chwon", flags), Some("chown".into()));
        assert_eq!(closest("form", flags), Some("from".into()));
        assert_eq!(closest("xyzzy", flags), None);
        assert_eq!(closest("RUNN", ["RUN", "CMD"]), Some("RUN".into()));
        assert_eq!(closest("Run", ["RUN"]), Some("RUN".into()));
    }
}
