//! A fetch from a repository on this machine (a path, or a `file://` URL) that would change
//! nothing is not run: the remote's refs are read in-process and compared with the cache's.
//! `git fetch` of an unchanged local remote starts `git`, `git-upload-pack`, a `rev-list` and
//! `git maintenance` (about 6 ms); reading the refs costs a fraction of a millisecond, and a
//! no-op plan is mostly that fetch. A remote reached through the network is always fetched.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The repository a URL names on this machine, as `git` decides it: a `file://` URL, or a
/// path with no `://` and no `host:` before its first slash (that form is ssh).
pub(super) fn local_path(url: &str) -> Option<PathBuf> {
    let path = match url.strip_prefix("file://") {
        Some(rest) => rest,
        None if url.contains("://") => return None,
        None => {
            let ssh = url
                .find(':')
                .is_some_and(|colon| !url[..colon].contains('/'));
            if ssh {
                return None;
            }
            url
        }
    };
    let path = PathBuf::from(path);
    path.is_dir().then_some(path)
}

/// One `+SRC:DST` refspec, each side a prefix and, for a pattern, a suffix around its `*`.
struct Refspec<'a> {
    src: (&'a str, Option<&'a str>),
    dst: (&'a str, Option<&'a str>),
}

impl<'a> Refspec<'a> {
    /// `None` for what this check does not handle (negative refspecs, no destination, a
    /// pattern on one side only): the fetch runs.
    fn parse(spec: &'a str) -> Option<Refspec<'a>> {
        let spec = spec.strip_prefix('+').unwrap_or(spec);
        if spec.starts_with('^') {
            return None;
        }
        let (src, dst) = spec.split_once(':')?;
        let split = |side: &'a str| match side.split_once('*') {
            Some((prefix, suffix)) if !suffix.contains('*') => Some((prefix, Some(suffix))),
            Some(_) => None,
            None => Some((side, None)),
        };
        let (src, dst) = (split(src)?, split(dst)?);
        (src.1.is_some() == dst.1.is_some() && !dst.0.is_empty()).then_some(Refspec { src, dst })
    }

    /// The destination of the remote ref `name`, if the source side matches it.
    fn destination(&self, name: &str) -> Option<String> {
        match (self.src, self.dst) {
            ((prefix, Some(suffix)), (dprefix, Some(dsuffix))) => {
                let middle = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
                Some(format!("{dprefix}{middle}{dsuffix}"))
            }
            ((src, None), (dst, None)) => (name == src).then(|| dst.to_string()),
            _ => None,
        }
    }

    /// Whether the cache ref `name` is one this refspec writes (and so `--prune` removes when
    /// the remote has no source for it).
    fn writes(&self, name: &str) -> bool {
        match self.dst {
            (prefix, Some(suffix)) => {
                name.len() >= prefix.len() + suffix.len()
                    && name.starts_with(prefix)
                    && name.ends_with(suffix)
            }
            (dst, None) => name == dst,
        }
    }
}

/// Whether fetching `refspecs` from the local repository `remote` into the cache `git_dir`
/// would change nothing: every remote ref a refspec takes is in the cache at the same object,
/// an exact source exists, and (with `prune`) no cache ref a pattern writes is gone from the
/// remote. Anything unreadable or unusual answers `false`, and the fetch runs.
pub(super) fn up_to_date(git_dir: &Path, remote: &Path, refspecs: &[String], prune: bool) -> bool {
    let (Ok(remote), Ok(cache)) = (
        git2::Repository::open(remote),
        git2::Repository::open_bare(git_dir),
    ) else {
        return false;
    };
    let Some(specs) = refspecs
        .iter()
        .map(|s| Refspec::parse(s))
        .collect::<Option<Vec<_>>>()
    else {
        return false;
    };
    let Ok(refs) = remote.references() else {
        return false;
    };
    let mut written = HashSet::new();
    let mut exact_found = vec![false; specs.len()];
    for reference in refs {
        let Ok(reference) = reference else {
            return false;
        };
        let Ok(name) = reference.name() else {
            continue;
        };
        for (i, spec) in specs.iter().enumerate() {
            let Some(dst) = spec.destination(name) else {
                continue;
            };
            let Some(oid) = reference.resolve().ok().and_then(|r| r.target()) else {
                return false;
            };
            if cache.refname_to_id(&dst).ok() != Some(oid) {
                return false;
            }
            exact_found[i] = true;
            written.insert(dst);
        }
    }
    // An exact source missing on the remote is an error of `git fetch`: let it say so.
    if specs
        .iter()
        .zip(&exact_found)
        .any(|(spec, found)| spec.src.1.is_none() && !found)
    {
        return false;
    }
    if prune {
        let Ok(mine) = cache.references() else {
            return false;
        };
        for reference in mine {
            let Ok(reference) = reference else {
                return false;
            };
            let Ok(name) = reference.name() else {
                continue;
            };
            if specs.iter().any(|s| s.src.1.is_some() && s.writes(name)) && !written.contains(name)
            {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::scratch;

    const NS: &str = "+refs/heads/*:refs/kcideploy/remote/*";

    fn fetch(cache: &Path, remote: &Path, specs: &[String], prune: bool) {
        let mut cmd = std::process::Command::new("git");
        cmd.arg("--git-dir").arg(cache).args(["fetch", "--quiet"]);
        if prune {
            cmd.arg("--prune");
        }
        let ok = cmd.arg(remote).args(specs).status().map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "git fetch");
    }

    #[test]
    fn local_urls_are_told_from_remote_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_string_lossy().into_owned();
        assert_eq!(local_path(&d), Some(dir.path().to_path_buf()));
        assert_eq!(
            local_path(&format!("file://{d}")),
            Some(dir.path().to_path_buf())
        );
        assert_eq!(local_path(&format!("{d}/missing")), None);
        assert_eq!(
            local_path("https://github.com/kernelci/kernelci-core"),
            None
        );
        assert_eq!(
            local_path("git@github.com:kernelci/kernelci-core.git"),
            None
        );
        assert_eq!(local_path("host:repo.git"), None);
    }

    #[test]
    fn an_unchanged_remote_is_up_to_date_and_every_change_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (remote_dir, cache) = (dir.path().join("remote.git"), dir.path().join("cache.git"));
        let remote = git2::Repository::init_bare(&remote_dir).expect("remote");
        git2::Repository::init_bare(&cache).expect("cache");
        let who = ("A", "a@example.org");
        let c1 = scratch::commit(&remote, None, &[("a", Some("1"))], who, 1, "one").expect("c1");
        let c2 =
            scratch::commit(&remote, Some(c1), &[("a", Some("2"))], who, 2, "two").expect("c2");
        let branch = |name: &str, oid| {
            remote
                .reference(&format!("refs/heads/{name}"), oid, true, "test")
                .expect("ref");
        };
        branch("main", c1);
        branch("pr/1", c2);
        let specs = vec![NS.to_string()];
        let exact = vec![format!("+refs/heads/main:refs/kcideploy/base")];
        assert!(
            !up_to_date(&cache, &remote_dir, &specs, true),
            "empty cache"
        );
        fetch(&cache, &remote_dir, &specs, true);
        assert!(up_to_date(&cache, &remote_dir, &specs, true));
        assert!(
            !up_to_date(&cache, &remote_dir, &exact, false),
            "not fetched yet"
        );
        fetch(&cache, &remote_dir, &exact, false);
        assert!(up_to_date(&cache, &remote_dir, &exact, false));

        branch("main", c2);
        assert!(
            !up_to_date(&cache, &remote_dir, &specs, true),
            "a moved branch"
        );
        assert!(
            !up_to_date(&cache, &remote_dir, &exact, false),
            "a moved exact ref"
        );
        fetch(&cache, &remote_dir, &specs, true);
        branch("pr/2", c1);
        assert!(
            !up_to_date(&cache, &remote_dir, &specs, true),
            "a new branch"
        );
        fetch(&cache, &remote_dir, &specs, true);
        assert!(up_to_date(&cache, &remote_dir, &specs, true));

        let mut gone = remote.find_reference("refs/heads/pr/1").expect("pr/1");
        gone.delete().expect("delete");
        assert!(!up_to_date(&cache, &remote_dir, &specs, true), "pruned");
        assert!(
            up_to_date(&cache, &remote_dir, &specs, false),
            "without --prune a deleted branch changes nothing"
        );
        let missing = vec!["+refs/heads/nope:refs/kcideploy/nope".to_string()];
        assert!(!up_to_date(&cache, &remote_dir, &missing, false));
    }
}
