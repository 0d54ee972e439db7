//! Which pending changes may be merged: trust, skip list, age. Pure.

use jiff::Timestamp;

use super::types::ExclusionReason;
use crate::config::PendingRules;
use crate::forge::PendingChange;

/// `None` when the change may be merged, else why not. `trusted` is the effective list
/// (`None`: everyone); `base`/`staging_branch` decide `other_base`.
pub fn screen(
    rules: &PendingRules,
    trusted: Option<&[String]>,
    (base, staging_branch): (&str, &str),
    change: &PendingChange,
    now: Timestamp,
) -> Option<(ExclusionReason, String)> {
    for skip in &rules.skip {
        let matcher = crate::config::glob(&skip.value)
            .map(|g| g.compile_matcher())
            .ok();
        let listed = [Some(change.id.as_str()), change.source.as_deref()]
            .into_iter()
            .flatten()
            .any(|name| name == skip.value || matcher.as_ref().is_some_and(|m| m.is_match(name)));
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
    if let Some(target) = change.base.as_deref()
        && target != base
    {
        let label = format!("staging:{staging_branch}");
        if !change.labels.contains(&label) {
            return Some((
                ExclusionReason::OtherBase,
                format!("targets {target}, not {base} (the label `{label}` brings it in)"),
            ));
        }
    }
    if let Some(trusted) = trusted {
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
                    crate::support::text::age(age)
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
            base: None,
            source: None,
            files: None,
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
        let scr = |rules: &PendingRules, c: &PendingChange| {
            screen(rules, rules.trusted.as_deref(), ("main", "staging"), c, now)
        };
        assert_eq!(scr(&rules, &change("alice@example.org", 99 * 86_400)), None);
        let untrusted = scr(&rules, &change("eve@example.org", 99 * 86_400));
        assert_eq!(untrusted.map(|r| r.0), Some(ExclusionReason::Untrusted));
        let stale = scr(&rules, &change("alice@example.org", 80 * 86_400));
        assert_eq!(stale.as_ref().map(|r| r.0), Some(ExclusionReason::Stale));
        assert!(stale.map(|r| r.1).unwrap_or_default().contains("20d old"));
        rules.skip = vec![unspanned("pr/*".into())];
        let skipped = scr(&rules, &change("eve@example.org", 0));
        assert_eq!(skipped.map(|r| r.0), Some(ExclusionReason::SkipList));
        // github: `user/branch`, and other bases unless labelled `staging:<branch>`.
        rules.skip = vec![unspanned("mallory/*".into())];
        let mut pr = change("alice@example.org", 99 * 86_400);
        pr.source = Some("mallory/fix".into());
        assert_eq!(
            scr(&rules, &pr).map(|r| r.0),
            Some(ExclusionReason::SkipList)
        );
        pr.source = Some("alice/fix".into());
        pr.base = Some("release".into());
        assert_eq!(
            scr(&rules, &pr).map(|r| r.0),
            Some(ExclusionReason::OtherBase)
        );
        pr.labels.push("staging:staging".into());
        assert_eq!(scr(&rules, &pr), None);
    }

    #[test]
    fn no_trusted_list_trusts_everyone_and_empty_list_nobody() {
        let now = Timestamp::from_second(0).expect("ts");
        let open = PendingRules::default();
        let scr = |rules: &PendingRules, c: &PendingChange| {
            screen(rules, rules.trusted.as_deref(), ("main", "staging"), c, now)
        };
        assert_eq!(scr(&open, &change("anyone@x", 0)), None);
        let closed = PendingRules {
            trusted: Some(vec![]),
            ..PendingRules::default()
        };
        assert!(scr(&closed, &change("anyone@x", 0)).is_some());
    }
}
