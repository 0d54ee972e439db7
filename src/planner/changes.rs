//! Which pending changes may be merged: trust, skip list, age, the PR's own CI. Pure.

use jiff::Timestamp;

use super::types::ExclusionReason;
use crate::config::{Config, PendingRules, RequireChecks};
use crate::forge::{Check, CheckState, PendingChange};

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

/// `pending.require_checks` on a change's head: `None` when every required check passed;
/// `checks` when one failed or is missing; `waiting_for_checks` while one runs. The detail
/// lists each required check and its state, failed and missing first.
pub fn gate(
    required: &RequireChecks,
    checks: Option<&[Check]>,
) -> Option<(ExclusionReason, String)> {
    let Some(checks) = checks else {
        return Some((
            ExclusionReason::Checks,
            "its checks are unknown: `pending.require_checks` reads them from GitHub \
             (`forge: github`)"
                .into(),
        ));
    };
    let mut failed = Vec::new();
    let mut missing = Vec::new();
    let mut running = Vec::new();
    let mut passed = Vec::new();
    for c in checks.iter().filter(|c| required.requires(&c.name)) {
        let named = format!("{} ({})", c.name, c.detail);
        match c.state {
            CheckState::Failed => failed.push(named),
            CheckState::Running => running.push(named),
            CheckState::Passed => passed.push(c.name.clone()),
        }
    }
    match required {
        RequireChecks::Names(names) => missing.extend(
            names
                .iter()
                .filter(|n| !checks.iter().any(|c| &c.name == *n))
                .cloned(),
        ),
        RequireChecks::All if checks.is_empty() => {
            missing.push("any check run or status (`require_checks: all`)".into());
        }
        RequireChecks::All => {}
    }
    let groups = [
        ("failed", &failed),
        ("missing", &missing),
        ("running", &running),
        ("passed", &passed),
    ];
    let detail = groups
        .iter()
        .filter(|(_, list)| !list.is_empty())
        .map(|(what, list)| format!("{what}: {}", list.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    if !failed.is_empty() || !missing.is_empty() {
        Some((ExclusionReason::Checks, detail))
    } else if !running.is_empty() {
        Some((ExclusionReason::WaitingForChecks, detail))
    } else {
        None
    }
}

/// The `ci_covers` components a change touches when it touches no other component (then its
/// CI covers it), else `None`. Needs the change's files (the github forge lists them).
pub fn covered_by_ci(config: &Config, repo: &str, change: &PendingChange) -> Option<Vec<String>> {
    let files = change.files.as_ref()?;
    let mut covering: Vec<String> = Vec::new();
    for (name, component) in &config.file.components {
        if component.repo.value != repo
            || !files
                .iter()
                .any(|f| super::graph::component_matches(config, name, f))
        {
            continue;
        }
        if !component.ci_covers {
            return None;
        }
        covering.push(name.clone());
    }
    (!covering.is_empty()).then_some(covering)
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
            checks: None,
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
    fn required_checks_fail_wait_or_pass() {
        let check = |name: &str, state, detail: &str| Check {
            name: name.into(),
            state,
            detail: detail.into(),
        };
        let names = RequireChecks::Names(vec!["build".into(), "e2e".into()]);
        let heads = [
            check("build", CheckState::Passed, "success"),
            check("lint", CheckState::Failed, "failure"),
        ];
        // `lint` is not required; `e2e` is, and is missing.
        assert_eq!(
            gate(&names, Some(&heads)),
            Some((
                ExclusionReason::Checks,
                "missing: e2e; passed: build".into()
            ))
        );
        let running = [
            check("build", CheckState::Passed, "success"),
            check("e2e", CheckState::Running, "in_progress"),
        ];
        assert_eq!(
            gate(&names, Some(&running)).map(|g| g.0),
            Some(ExclusionReason::WaitingForChecks)
        );
        // A failure outweighs a check still running.
        assert_eq!(
            gate(
                &RequireChecks::All,
                Some(&[heads[1].clone(), running[1].clone()])
            ),
            Some((
                ExclusionReason::Checks,
                "failed: lint (failure); running: e2e (in_progress)".into()
            ))
        );
        let green = [
            check("build", CheckState::Passed, "success"),
            check("e2e", CheckState::Passed, "neutral"),
        ];
        assert_eq!(gate(&names, Some(&green)), None);
        assert_eq!(gate(&RequireChecks::All, Some(&green)), None);
        assert_eq!(
            gate(&RequireChecks::All, Some(&[])).map(|g| g.0),
            Some(ExclusionReason::Checks)
        );
        assert_eq!(
            gate(&names, None).map(|g| g.0),
            Some(ExclusionReason::Checks)
        );
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
