//! Names that become file and directory names: the plan's `name` (state file, `cache/<name>`,
//! `runs/<name>`, `checkouts/<name>`, `<name>.webhooks`), repo names (`cache/<plan>/<repo>.git`,
//! checkouts `<repo>-<sha>`) and step names (`runs/<plan>/<run>/<step>.log`,
//! `kernel-<step>.git`, `blame-<step>`). A safe alphabet keeps every one of them inside the
//! directory it is joined to.

/// The longest name; with the suffixes added to it, a file name stays far below 255 bytes.
pub const NAME_MAX: usize = 100;

/// The rule, for messages and the schema.
pub const NAME_RULE: &str =
    "letters, digits, `.`, `_` and `-`, starting with a letter or a digit, without `..`";

/// The file name part for a step name. A step expanded by `for_each` is named
/// `<name>[<key>]`, and a key of several values has `/` between them (`build[gcc-14/arm64]`):
/// in a file name the `/` becomes `,` (`build[gcc-14,arm64].log`). Every other character of
/// a step name is already safe (plain names by [`unsafe_name`], keys part by part), and
/// neither plain names nor keys hold `,`, so two steps never share a file.
pub fn file_name(step: &str) -> String {
    step.replace('/', ",")
}

/// Why `name` cannot name a file, if it cannot.
pub fn unsafe_name(name: &str) -> Option<&'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Some("it is empty"),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Some("it must start with a letter or a digit");
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Some("it may hold only letters, digits, `.`, `_` and `-`");
    }
    if name.contains("..") {
        return Some("it may not contain `..`");
    }
    if name.len() > NAME_MAX {
        return Some("it is longer than 100 characters");
    }
    None
}

/// The error message for an unsafe `what` (plan, repo, step) name.
pub(crate) fn check(what: &str, name: &str) -> Option<String> {
    unsafe_name(name).map(|why| {
        format!(
            "{what} name {} cannot name files: {why}",
            super::quote(name)
        )
    })
}

pub(crate) fn help(what: &str) -> String {
    format!(
        "{what} names become file and directory names under the state directory: use {NAME_RULE}"
    )
}

/// Every name of a parsed plan file that becomes part of a file name.
pub(crate) fn of(file: &super::PlanFile) -> impl Iterator<Item = (&'static str, &str)> {
    let repos = file.repos.keys().map(|r| ("repo", r.as_str()));
    let steps = file.steps.keys().map(|s| ("step", s.as_str()));
    std::iter::once(("plan", file.name.as_str()))
        .chain(repos)
        .chain(steps)
}

#[cfg(test)]
mod tests {
    use super::unsafe_name;

    #[test]
    fn names_that_would_leave_their_directory_are_unsafe() {
        for bad in [
            "",
            "../../../../tmp/x",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "a..b",
            "-rf",
            "a b",
            "caf\u{e9}",
            "x\n",
            &"x".repeat(101),
        ] {
            assert!(unsafe_name(bad).is_some(), "{bad:?}");
        }
        for good in [
            "staging",
            "kernelci-pipeline",
            "push_api.v2",
            "0day",
            &"x".repeat(100),
        ] {
            assert_eq!(unsafe_name(good), None, "{good:?}");
        }
    }
}
