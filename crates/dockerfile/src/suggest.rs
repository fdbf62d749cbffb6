//! "Did you mean ...?" suggestions for misspelt names.

/// The candidate closest to `word`, if one is close enough to be a likely
/// typo (a case-only difference always is).
pub(crate) fn closest<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower = word.to_lowercase();
    let limit = (word.chars().count() / 3 + 1).clamp(1, 3);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| {
            let d = if c.to_lowercase() == lower {
                0
            } else {
                edit_distance(&lower, &c.to_lowercase())
            };
            (d, c)
        })
        .filter(|&(d, _)| d <= limit)
        .min()
        .map(|(_, c)| c.to_string())
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

/// Edit distance counting a swap of neighbours as one edit (typos like
/// `chwon` are one step from `chown`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
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
