//! Unified diffs of text (the similar crate), capped to a number of lines.

use serde::{Deserialize, Serialize};
use similar::{ChangeTag, TextDiff};

/// One hunk: its `@@ -a,b +c,d @@` header and its lines, each starting with ` `, `-` or `+`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hunk {
    pub header: String,
    pub lines: Vec<String>,
}

/// The hunks of the diff from `old` to `new` (2 lines of context), at most `max_lines` lines
/// in all; and how many lines were left out.
pub fn unified(old: &str, new: &str, max_lines: usize) -> (Vec<Hunk>, usize) {
    let diff = TextDiff::from_lines(old, new);
    let mut hunks = Vec::new();
    let mut shown = 0;
    let mut omitted = 0;
    for hunk in diff.unified_diff().context_radius(2).iter_hunks() {
        let mut lines = Vec::new();
        for change in hunk.iter_changes() {
            if shown >= max_lines {
                omitted += 1;
                continue;
            }
            let sign = match change.tag() {
                ChangeTag::Equal => ' ',
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
            };
            lines.push(format!("{sign}{}", change.value().trim_end_matches('\n')));
            shown += 1;
        }
        if !lines.is_empty() {
            hunks.push(Hunk {
                header: hunk.header().to_string(),
                lines,
            });
        }
    }
    (hunks, omitted)
}

#[cfg(test)]
mod tests {
    use super::unified;

    #[test]
    fn a_capped_diff_counts_what_it_leaves_out() {
        let old: String = (0..50).map(|i| format!("{i}\n")).collect();
        let new: String = (0..50).map(|i| format!("{}\n", i * 2)).collect();
        let (hunks, omitted) = unified(&old, &new, 10);
        let shown: usize = hunks.iter().map(|h| h.lines.len()).sum();
        assert_eq!(shown, 10);
        assert!(omitted > 0);
        let (all, none) = unified(&old, &new, usize::MAX);
        assert_eq!(none, 0);
        assert_eq!(
            all.iter().map(|h| h.lines.len()).sum::<usize>(),
            shown + omitted
        );
    }
}
