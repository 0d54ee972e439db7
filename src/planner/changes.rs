//! Which pending changes may be merged: trust, skip list, age. Pure.

use jiff::Timestamp;

use super::types::ExclusionReason;
use crate::config::PendingRules;
use crate::forge::PendingChange;

/// `None` when the change may be merged, else why not.
pub fn screen(
    rules: &PendingRules,
    change: &PendingChange,
    now: Timestamp,
) -> Option<(ExclusionReason, String)> {
    for skip in &rules.skip {
        let listed = crate::config::glob(&skip.value)
            .map(|g| g.compile_matcher().is_match(&change.id))
            .unwrap_or(false)
            || skip.value == change.id;
        if listed {
            return Some((
                ExclusionReason::SkipList,
                format!("listed in pending.skip (`{}`)", skip.value),
            ));
        }
    }
    if change.draft {
        return Some((ExclusionReason::Draft, "draft".into()));
    }
    if change.labels.contains(&rules.skip_label) {
        return Some((
            ExclusionReason::SkipLabel,
            format!("carries the label `{}`", rules.skip_label),
        ));
    }
    if let Some(trusted) = &rules.trusted {
        let ok = trusted
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&change.author));
        if !ok {
            let who = if change.author.is_empty() {
                "(no email)"
            } else {
                &change.author
            };
            return Some((
                ExclusionReason::Untrusted,
                format!("author {who} is not in pending.trusted"),
            ));
        }
    }
    if let Some(max_age) = rules.max_age {
        let age = now.as_second() - change.updated_at.as_second();
        if age > 0 && age as u64 > max_age.as_secs() {
            return Some((
                ExclusionReason::Stale,
                format!(
                    "head commit is {} old, more than pending.max_age ({max_age})",
                    crate::planner::render::age(age)
                ),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HumanDuration, unspanned};

    fn change(author: &str, at: i64) -> PendingChange {
        PendingChange {
            id: "pr/7".into(),
            head: "0".repeat(40),
            author: author.into(),
            title: "t".into(),
            labels: vec![],
            draft: false,
            updated_at: Timestamp::from_second(at).expect("ts"),
        }
    }

    #[test]
    fn rules_in_order() {
        let now = Timestamp::from_second(100 * 86_400).expect("ts");
        let mut rules = PendingRules {
            trusted: Some(vec!["Alice@Example.org".into()]),
            max_age: Some(HumanDuration::from_secs(14 * 86_400)),
            ..PendingRules::default()
        };
        assert_eq!(
            screen(&rules, &change("alice@example.org", 99 * 86_400), now),
            None
        );
        let untrusted = screen(&rules, &change("eve@example.org", 99 * 86_400), now);
        assert_eq!(untrusted.map(|r| r.0), Some(ExclusionReason::Untrusted));
        let stale = screen(&rules, &change("alice@example.org", 80 * 86_400), now);
        assert_eq!(stale.as_ref().map(|r| r.0), Some(ExclusionReason::Stale));
        assert!(stale.map(|r| r.1).unwrap_or_default().contains("20d old"));
        rules.skip = vec![unspanned("pr/*".into())];
        let skipped = screen(&rules, &change("eve@example.org", 0), now);
        assert_eq!(skipped.map(|r| r.0), Some(ExclusionReason::SkipList));
    }

    #[test]
    fn no_trusted_list_trusts_everyone_and_empty_list_nobody() {
        let now = Timestamp::from_second(0).expect("ts");
        let open = PendingRules::default();
        assert_eq!(screen(&open, &change("anyone@x", 0), now), None);
        let closed = PendingRules {
            trusted: Some(vec![]),
            ..PendingRules::default()
        };
        assert!(screen(&closed, &change("anyone@x", 0), now).is_some());
    }
}
