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
}
