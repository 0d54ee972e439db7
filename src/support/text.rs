//! Text helpers shared by every renderer.

/// The first 7 characters of a SHA.
pub fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// A compact age: `45s`, `12m`, `5h`, `3d`, `1h 30m` style rounding to the two largest units.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

/// An error and its sources, `: `-separated, each said once:
/// `error sending request: connection refused`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// Text from outside (PR titles, author names, branch names, paths, plan file text) made
/// safe for a terminal or a log: control characters (escape sequences that recolour output
/// or set the window title, carriage returns that hide a line, line breaks) are shown
/// escaped (`\u{1b}`, `\n`), not sent.
pub fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(clip(text, usize::MAX))
}

/// [`clean`], cut after `max` characters with `…`.
pub fn clip(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max.saturating_add(8)));
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Text from outside (paths, branch names, messages quoting them) for a GitHub comment:
/// Markdown and HTML are shown as written, not rendered (`<img>`, links, emphasis, tables
/// broken by `|`), `@name` does not notify anybody, and control characters are escaped.
pub fn markdown_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in clean(text).chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            // A zero-width space after `@` keeps GitHub from reading a mention.
            '@' => out.push_str("@\u{200b}"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '|' | '!' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Every byte but the unreserved characters of RFC 3986 (`A-Z a-z 0-9 - _ . ~`)
/// percent-encoded: a URL path segment or query value (`!room:host` → `%21room%3Ahost`).
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(age(42), "42s");
        assert_eq!(age(300), "5m");
        assert_eq!(age(5400), "1h 30m");
        assert_eq!(age(6 * 3600), "6h");
        assert_eq!(age(20 * 86_400), "20d");
        assert_eq!(age(86_400 + 7200), "1d 2h");
        assert_eq!(age(-5), "0s");
    }

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(
            clean("fix \u{1b}]0;pwned\u{7}title"),
            "fix \\u{1b}]0;pwned\\u{7}title"
        );
        assert_eq!(clean("a\rb\nc"), "a\\rb\\nc");
        assert!(matches!(clean("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(clip("abcdef", 3), "abc…");
    }

    #[test]
    fn markdown_and_mentions_are_shown_not_rendered() {
        assert_eq!(
            markdown_text("<img src=x> @kernelci/all [a](b) |x| *y*"),
            "&lt;img src=x&gt; @\u{200b}kernelci/all \\[a\\]\\(b\\) \\|x\\| \\*y\\*"
        );
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_bytes() {
        assert_eq!(percent_encode("!room:example.org"), "%21room%3Aexample.org");
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
