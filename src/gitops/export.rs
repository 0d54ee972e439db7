//! Export a revision's tree to a directory for steps to read (files, executable bits,
//! symlinks; no `.git`). The tree comes from pull requests, so nothing in it may write or
//! point outside the export: entries named `..`, `.`, `.git` or with a `/`, absolute symlinks,
//! and symlinks that climb above the export are refused with the path that was refused.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use git2::{ObjectType, Oid, Repository, Tree};

const MODE_FILE: i32 = 0o100644;
const MODE_EXEC: i32 = 0o100755;
const MODE_LINK: i32 = 0o120000;
const MODE_TREE: i32 = 0o040000;
const MODE_COMMIT: i32 = 0o160000;

/// Why an export failed: an entry that would leave the export (named by its path in the
/// tree, so the caller can name the change that brought it), or the file system.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("refused to export `{}`: {why}", path.display())]
    Refused {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("{0}")]
    Failed(String),
}

impl From<String> for ExportError {
    fn from(message: String) -> Self {
        ExportError::Failed(message)
    }
}

impl From<&str> for ExportError {
    fn from(message: &str) -> Self {
        ExportError::Failed(message.to_string())
    }
}

/// Write the tree of commit `sha` into `dest` (which must not exist). Written to a temporary
/// sibling first and renamed into place, so a half-written export is never seen; an export
/// that already exists is kept.
pub fn export_tree(repo: &Repository, sha: &str, dest: &Path) -> Result<(), ExportError> {
    if dest.exists() {
        return Ok(());
    }
    let parent = dest.parent().ok_or("export path has no parent")?;
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".export-")
        .tempdir_in(parent)
        .map_err(|e| format!("cannot create a directory in {}: {e}", parent.display()))?;
    let oid = Oid::from_str(sha).map_err(|e| format!("bad SHA {sha}: {e}"))?;
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(|e| format!("commit {sha} is not in the cache: {e}"))?;
    write_tree(repo, &tree, tmp.path(), Path::new(""))?;
    let tmp_path = tmp.keep();
    match std::fs::rename(&tmp_path, dest) {
        Ok(()) => Ok(()),
        // Another step exported the same revision meanwhile.
        Err(_) if dest.exists() => {
            let _ = std::fs::remove_dir_all(&tmp_path);
            Ok(())
        }
        Err(e) => Err(format!("cannot move the export to {}: {e}", dest.display()).into()),
    }
}

/// Write `tree` under `root/rel`.
fn write_tree(
    repo: &Repository,
    tree: &Tree<'_>,
    root: &Path,
    rel: &Path,
) -> Result<(), ExportError> {
    for entry in tree.iter() {
        let name = entry_name(entry.name_bytes(), rel)?;
        let rel_path = rel.join(name);
        let path = root.join(&rel_path);
        let io = |e: std::io::Error| format!("{}: {e}", rel_path.display());
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), MODE_TREE) => {
                std::fs::create_dir(&path).map_err(io)?;
                let sub = repo
                    .find_tree(entry.id())
                    .map_err(|e| format!("{}: {e}", rel_path.display()))?;
                write_tree(repo, &sub, root, &rel_path)?;
            }
            (Some(ObjectType::Blob), mode @ (MODE_FILE | MODE_EXEC | MODE_LINK)) => {
                let blob = repo
                    .find_blob(entry.id())
                    .map_err(|e| format!("{}: {e}", rel_path.display()))?;
                if mode == MODE_LINK {
                    check_link(rel, blob.content()).map_err(|why| refused(&rel_path, &why))?;
                    std::os::unix::fs::symlink(OsStr::from_bytes(blob.content()), &path)
                        .map_err(io)?;
                } else {
                    std::fs::write(&path, blob.content()).map_err(io)?;
                    if mode == MODE_EXEC {
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                            .map_err(io)?;
                    }
                }
            }
            // Submodules are not exported.
            (_, MODE_COMMIT) => {}
            (_, mode) => return Err(refused(&rel_path, &format!("unknown mode {mode:o}"))),
        }
    }
    Ok(())
}

fn refused(path: &Path, why: &str) -> ExportError {
    ExportError::Refused {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// An entry name that stays one component inside its directory.
fn entry_name<'a>(name: &'a [u8], rel: &Path) -> Result<&'a OsStr, ExportError> {
    let shown = rel.join(String::from_utf8_lossy(name).as_ref());
    let why = if name.is_empty() || name == b"." || name == b".." {
        Some("not a file name")
    } else if name.contains(&b'/') || name.contains(&0) {
        Some("a name with `/` or NUL")
    } else if name.eq_ignore_ascii_case(b".git") {
        Some("`.git` would make the export a repository")
    } else {
        None
    };
    match why {
        Some(why) => Err(refused(&shown, why)),
        None => Ok(OsStr::from_bytes(name)),
    }
}

/// A symlink in directory `dir` (relative to the export) may point only inside the export:
/// relative, with `..` only at its start and no more of them than `dir` is deep. Then no
/// chain of links can leave the export either: each climbs at most to the root through real
/// directories and only descends after that.
fn check_link(dir: &Path, target: &[u8]) -> Result<(), String> {
    let target = Path::new(OsStr::from_bytes(target));
    let depth = dir.components().count();
    let mut climbed = 0usize;
    let mut descended = false;
    for component in target.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "the link points to the absolute path {}",
                    target.display()
                ));
            }
            Component::CurDir => {}
            Component::ParentDir if descended => {
                return Err(format!(
                    "the link target {} has `..` after a name",
                    target.display()
                ));
            }
            Component::ParentDir => climbed += 1,
            Component::Normal(_) => descended = true,
        }
    }
    if climbed > depth {
        return Err(format!(
            "the link target {} points outside the export",
            target.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mode (octal text), name, blob content (`None`: an empty tree).
    type Entry<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);

    /// A commit whose root tree has these raw entries (mode, name, blob content or subtree):
    /// written as raw objects, so names git2's tree builder would refuse can be made.
    fn crafted(repo: &Repository, entries: &[Entry<'_>]) -> String {
        let odb = repo.odb().expect("odb");
        let mut raw = Vec::new();
        let mut sorted: Vec<_> = entries.to_vec();
        sorted.sort_by(|a, b| a.1.cmp(b.1));
        for (mode, name, content) in sorted {
            let oid = match content {
                Some(c) => odb.write(ObjectType::Blob, c).expect("blob"),
                None => repo
                    .treebuilder(None)
                    .and_then(|b| b.write())
                    .expect("empty tree"),
            };
            raw.extend_from_slice(mode.as_bytes());
            raw.push(b' ');
            raw.extend_from_slice(name);
            raw.push(0);
            raw.extend_from_slice(oid.as_bytes());
        }
        let tree = odb.write(ObjectType::Tree, &raw).expect("tree");
        let tree = repo.find_tree(tree).expect("find");
        let sig = git2::Signature::now("Eve", "eve@example.net").expect("sig");
        repo.commit(None, &sig, &sig, "crafted", &tree, &[])
            .expect("commit")
            .to_string()
    }

    fn export(entries: &[Entry<'_>]) -> (tempfile::TempDir, Result<(), ExportError>) {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = Repository::init_bare(dir.path().join("r.git")).expect("init");
        let sha = crafted(&repo, entries);
        let result = export_tree(&repo, &sha, &dir.path().join("out"));
        (dir, result)
    }

    #[test]
    fn entries_that_leave_the_export_are_refused() {
        let cases: &[(Entry<'_>, &str)] = &[
            (("100644", b"..", Some(b"x")), "not a file name"),
            (("40000", b".git", None), "`.git`"),
            (("40000", b".GIT", None), "`.git`"),
            (("100644", b"a/b", Some(b"x")), "`/`"),
            (("120000", b"passwd", Some(b"/etc/passwd")), "absolute path"),
            (("120000", b"up", Some(b"../../etc")), "outside the export"),
            (
                ("120000", b"sneak", Some(b"s/../../x")),
                "`..` after a name",
            ),
        ];
        for ((mode, name, content), why) in cases {
            let (dir, result) = export(&[(mode, name, *content), ("100644", b"ok", Some(b"ok"))]);
            let err = result
                .expect_err(&String::from_utf8_lossy(name))
                .to_string();
            assert!(
                err.contains("refused to export") && err.contains(why),
                "{err}"
            );
            assert!(
                !dir.path().join("out").exists(),
                "nothing half-written: {err}"
            );
        }
    }

    #[test]
    fn links_inside_the_export_and_exec_bits_are_kept() {
        let (dir, result) = export(&[
            ("100755", b"run.sh", Some(b"#!/bin/sh\n")),
            ("120000", b"here", Some(b"./run.sh")),
            ("120000", b"dir", Some(b"sub")),
            ("40000", b"sub", None),
        ]);
        result.expect("exported");
        let out = dir.path().join("out");
        let mode = std::fs::metadata(out.join("run.sh"))
            .expect("m")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        assert_eq!(
            std::fs::read_link(out.join("here")).expect("link"),
            Path::new("./run.sh")
        );
        assert!(out.join("sub").is_dir());
    }

    #[test]
    fn a_link_may_climb_as_far_as_its_directory_is_deep() {
        assert!(check_link(Path::new("a/b"), b"../../c").is_ok());
        assert!(check_link(Path::new("a/b"), b"../../../c").is_err());
        assert!(check_link(Path::new(""), b"c/d").is_ok());
    }
}
