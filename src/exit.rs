//! Exit codes, in one place. Terraform's convention for `plan -detailed-exitcode`.

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: done; with `-detailed-exitcode`, nothing to do.
    Success,
    /// 1: an error (bad plan file, fetch failure, ...).
    Error,
    /// 2: with `-detailed-exitcode`, the plan has steps to run; for `run`, it applied them.
    Changes,
    /// 3: `run` held back by the policy (cooldown).
    HeldBack,
    /// 4: `coverage` or `validate --strict`: files of a repo in no component and matched by
    /// no `ignore:` glob. No success path uses it.
    Uncovered,
    /// 64 (sysexits' EX_USAGE): the command line is wrong (unknown flag or subcommand, bad
    /// value). No success path uses it, so `-detailed-exitcode` and `run` callers that treat
    /// 2 and 3 as success never mistake a typo for one.
    Usage,
}

impl ExitStatus {
    /// Every exit status, for the README's table and its test.
    pub const ALL: [ExitStatus; 6] = [
        ExitStatus::Success,
        ExitStatus::Error,
        ExitStatus::Changes,
        ExitStatus::HeldBack,
        ExitStatus::Uncovered,
        ExitStatus::Usage,
    ];

    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Error => 1,
            ExitStatus::Changes => 2,
            ExitStatus::HeldBack => 3,
            ExitStatus::Uncovered => 4,
            ExitStatus::Usage => 64,
        }
    }
}
