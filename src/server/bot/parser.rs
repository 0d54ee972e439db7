//! `@kcibot` commands in PR comments: a small parser returning typed commands. Code blocks,
//! inline code and quoted lines are not read; `None`-like (an empty list) is "not for me";
//! an `Err` is "for me but malformed", with a did-you-mean.

/// What a maintainer asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotCommand {
    /// Deploy now with this PR included (partial cycle).
    Deploy,
    /// Deploy and run a full cycle with the pipe-cleaner.
    Trigger,
    /// Where this PR stands.
    Status,
    /// The commands.
    Help,
    /// Deploy again what an earlier successful run deployed (`rollback [RUN_ID]`).
    Rollback,
}

impl BotCommand {
    pub const ALL: [(&'static str, BotCommand); 5] = [
        ("deploy", BotCommand::Deploy),
        ("trigger", BotCommand::Trigger),
        ("status", BotCommand::Status),
        ("help", BotCommand::Help),
        ("rollback", BotCommand::Rollback),
    ];
}

/// A command for the bot that it does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The word after the mention (empty when there is none).
    pub word: String,
    pub suggestion: Option<&'static str>,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known = BotCommand::ALL.map(|(w, _)| format!("`{w}`")).join(", ");
        match (&self.word, self.suggestion) {
            (w, _) if w.is_empty() => write!(f, "no command after the mention; commands: {known}"),
            (w, Some(s)) => write!(f, "unknown command `{w}`: did you mean `{s}`?"),
            (w, None) => write!(f, "unknown command `{w}`; commands: {known}"),
        }
    }
}

/// The text of a comment that commands are read from: no fenced code blocks, no inline code,
/// no quoted lines.
fn readable(body: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in body.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced || trimmed.starts_with('>') {
            continue;
        }
        // Drop `inline code` spans.
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// A command and its optional argument: `@kcibot deploy 1a2b3c4` binds the approval to the
/// PR head starting with that SHA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub command: BotCommand,
    pub sha: Option<String>,
    /// `rollback RUN_ID`: the run (as `state history` names it).
    pub run: Option<String>,
}

/// A commit SHA or a prefix of one (7 to 40 hex digits).
fn sha_like(word: &str) -> bool {
    (7..=40).contains(&word.len()) && word.chars().all(|c| c.is_ascii_hexdigit())
}

/// A run id or a prefix of one (`20261124T080000Z-1a2b3c`): a digit first, then digits,
/// `T`, `Z`, `-` and hex digits; at most 64.
fn run_like(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit())
        && word.len() <= 64
        && word
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, 'T' | 'Z' | '-'))
}

/// Every command addressed to `@<bot>` in `body`, in order.
pub fn parse(body: &str, bot: &str) -> Vec<Result<Parsed, ParseError>> {
    let mention = format!("@{}", bot.to_ascii_lowercase());
    let text = readable(body);
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            let w = word
                .trim_end_matches([',', ':', '.', '!'])
                .to_ascii_lowercase();
            if w != mention {
                continue;
            }
            let next = words
                .get(i + 1)
                .map(|n| {
                    n.trim_end_matches([',', '.', '!', '?'])
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            match BotCommand::ALL.iter().find(|(name, _)| *name == next) {
                Some((_, cmd)) => {
                    let arg = words
                        .get(i + 2)
                        .map(|w| w.trim_end_matches([',', '.', '!']));
                    let (sha, run) = match cmd {
                        BotCommand::Rollback => (None, arg.filter(|w| run_like(w))),
                        _ => (
                            arg.map(str::to_ascii_lowercase).filter(|w| sha_like(w)),
                            None,
                        ),
                    };
                    out.push(Ok(Parsed {
                        command: *cmd,
                        sha,
                        run: run.map(str::to_string),
                    }))
                }
                None => {
                    let suggestion = BotCommand::ALL
                        .iter()
                        .map(|(name, _)| (strsim::jaro_winkler(&next, name), *name))
                        .filter(|(score, _)| *score > 0.8)
                        .max_by(|a, b| a.0.total_cmp(&b.0))
                        .map(|(_, name)| name);
                    out.push(Err(ParseError {
                        word: next,
                        suggestion,
                    }));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(body: &str) -> String {
        parse(body, "kcibot")
            .iter()
            .map(|r| match r {
                Ok(Parsed {
                    command,
                    sha: None,
                    run: None,
                }) => format!("{command:?}"),
                Ok(Parsed {
                    command,
                    sha: Some(arg),
                    ..
                })
                | Ok(Parsed {
                    command,
                    run: Some(arg),
                    ..
                }) => format!("{command:?}({arg})"),
                Err(e) => format!("Err({e})"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn table() {
        let cases = [
            ("@kcibot deploy", "Deploy"),
            ("@kcibot trigger", "Trigger"),
            ("@KciBot Status", "Status"),
            ("@kcibot help", "Help"),
            ("@kcibot, deploy please", "Deploy"),
            ("@kcibot deploy 1A2B3C4d.", "Deploy(1a2b3c4d)"),
            ("@kcibot deploy abc now", "Deploy"),
            ("Looks good.\n\n@kcibot deploy", "Deploy"),
            ("@kcibot deploy\n@kcibot trigger", "Deploy Trigger"),
            ("@kcibot rollback", "Rollback"),
            (
                "@kcibot rollback 20261124T080000Z-1a2b3c.",
                "Rollback(20261124T080000Z-1a2b3c)",
            ),
            ("@kcibot rollback please", "Rollback"),
            ("@kcibot deploy 20261124T080000Z-1a2b3c", "Deploy"),
            ("thanks!", ""),
            ("ping @kcibot2 deploy", ""),
            ("mail me at x@kcibot deploy", ""),
            ("> @kcibot deploy", ""),
            ("```\n@kcibot deploy\n```", ""),
            ("run `@kcibot deploy` to deploy", ""),
            (
                "@kcibot",
                "Err(no command after the mention; commands: `deploy`, `trigger`, `status`, `help`, `rollback`)",
            ),
            (
                "@kcibot depoly",
                "Err(unknown command `depoly`: did you mean `deploy`?)",
            ),
            (
                "@kcibot merge",
                "Err(unknown command `merge`; commands: `deploy`, `trigger`, `status`, `help`, `rollback`)",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(show(body), expected, "{body:?}");
        }
    }
}
