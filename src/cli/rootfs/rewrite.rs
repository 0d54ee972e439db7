//! Rewriting rootfs URLs in a configuration file. A build publishes the URL of the directory
//! of the version it published (`https://storage.kernelci.org/images/rootfs/debian/trixie/20261130.0`,
//! as `rootfs.yml` publishes `<name>/<YYYYMMDD.N>/<arch>`); every URL of the file with the
//! same path before its version (either scheme: the real `config/rootfs.yaml` has both)
//! gets the new version, whatever follows it (`/{debarch}`, `/amd64/`).

use std::collections::BTreeSet;

/// A published URL: the path before its version (host included, scheme left out, ending
/// in `/`), and the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub stem: String,
    pub version: String,
}

/// `YYYYMMDD.N`.
fn version_len(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    if b.len() < 10 || !b[..8].iter().all(u8::is_ascii_digit) || b[8] != b'.' {
        return None;
    }
    let n = b[9..].iter().take_while(|c| c.is_ascii_digit()).count();
    (n > 0).then_some(9 + n)
}

/// Split a published URL, or say why it cannot be promoted.
pub fn published(url: &str) -> Result<Published, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{url}` is not an http(s) URL"))?;
    let rest = rest.trim_end_matches('/');
    let (stem, version) = rest
        .rsplit_once('/')
        .filter(|(stem, _)| stem.contains('/'))
        .ok_or_else(|| format!("`{url}` has no path before its version"))?;
    if version_len(version) != Some(version.len()) {
        return Err(format!(
            "`{url}` does not end in a version `YYYYMMDD.N` (rootfs.yml publishes `<name>/<version>/<arch>`)"
        ));
    }
    Ok(Published {
        stem: format!("{stem}/"),
        version: version.to_string(),
    })
}

/// What rewriting one URL did to the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub text: String,
    /// The versions replaced (empty: the file names this path at the new version only, or
    /// not at all).
    pub old: BTreeSet<String>,
    /// How many URLs of the file have this path.
    pub found: usize,
}

/// `text` with every `http(s)://<stem><version>` given the published version.
pub fn rewrite(text: &str, p: &Published) -> Rewritten {
    let mut out = String::with_capacity(text.len());
    let mut old = BTreeSet::new();
    let mut found = 0;
    let mut last = 0;
    let mut from = 0;
    while let Some(i) = text[from..].find(&p.stem) {
        let start = from + i;
        let after = start + p.stem.len();
        from = after;
        let before = &text[..start];
        if !(before.ends_with("https://") || before.ends_with("http://")) {
            continue;
        }
        let Some(len) = version_len(&text[after..]) else {
            continue;
        };
        found += 1;
        let version = &text[after..after + len];
        if version != p.version {
            old.insert(version.to_string());
        }
        out.push_str(&text[last..after]);
        out.push_str(&p.version);
        last = after + len;
        from = last;
    }
    out.push_str(&text[last..]);
    Rewritten {
        text: out,
        old,
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "rootfs:\n  trixie:\n    nfsroot: 'http://storage.kernelci.org/images/rootfs/debian/trixie/20260917.0/{debarch}'\n  trixie-ltp:\n    nfsroot: 'https://storage.kernelci.org/images/rootfs/debian/trixie-ltp/20260917.0/{debarch}'\n  trixie-b:\n    rootfs: 'https://storage.kernelci.org/images/rootfs/debian/trixie/20250101.1/amd64/'\n";

    #[test]
    fn every_url_of_the_path_gets_the_new_version_and_no_other() {
        let p = published("https://storage.kernelci.org/images/rootfs/debian/trixie/20261130.0")
            .expect("a published URL");
        assert_eq!(p.version, "20261130.0");
        let r = rewrite(FILE, &p);
        assert_eq!(r.found, 2);
        assert_eq!(
            r.old.iter().map(String::as_str).collect::<Vec<_>>(),
            ["20250101.1", "20260917.0"]
        );
        assert!(r.text.contains(
            "'http://storage.kernelci.org/images/rootfs/debian/trixie/20261130.0/{debarch}'"
        ));
        assert!(r.text.contains("debian/trixie/20261130.0/amd64/'"));
        assert!(
            r.text.contains("trixie-ltp/20260917.0/{debarch}"),
            "another config is left alone"
        );
        let again = rewrite(&r.text, &p);
        assert_eq!((again.found, again.old.len()), (2, 0));
        assert_eq!(again.text, r.text);
    }

    #[test]
    fn urls_that_cannot_be_promoted() {
        assert!(published("ftp://x/a/20261130.0").is_err());
        assert!(
            published("https://x/a/latest")
                .unwrap_err()
                .contains("YYYYMMDD.N")
        );
        assert!(published("https://x/20261130.0").is_err());
        assert!(published("https://x/a/2026113.0").is_err());
        assert_eq!(
            published("https://x/a/b/20261130.12/")
                .expect("trailing slash")
                .stem,
            "x/a/b/"
        );
    }
}
