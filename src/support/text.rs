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

/// Text from outside (PR titles, author names, branch names, paths) made safe for a
/// terminal: control characters (escape sequences that recolour output or set the window
/// title, carriage returns that hide a line) are shown escaped (`\u{1b}`), not sent.
pub fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
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
    }
}
