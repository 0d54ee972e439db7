//! Make commits without a work tree: used by `kcideploy demo` and by tests to build real
//! repositories quickly.

use git2::{IndexEntry, IndexTime, Oid, Repository, Signature, Time};

/// A file edit: `Some(content)` writes the file, `None` deletes it.
pub type Edit<'a> = (&'a str, Option<&'a str>);

/// Commit `edits` on top of `parent` (or as a root commit) and return the new commit.
/// No ref is moved; see [`set_branch`].
pub fn commit<C: AsRef<[u8]>>(
    repo: &Repository,
    parent: Option<Oid>,
    edits: &[(&str, Option<C>)],
    author: (&str, &str),
    time: i64,
    message: &str,
) -> Result<Oid, git2::Error> {
    let mut index = git2::Index::new()?;
    let parent_commit = match parent {
        Some(p) => Some(repo.find_commit(p)?),
        None => None,
    };
    if let Some(pc) = &parent_commit {
        index.read_tree(&pc.tree()?)?;
    }
    for (path, content) in edits {
        match content {
            Some(content) => {
                let bytes = content.as_ref();
                let blob = repo.blob(bytes)?;
                index.add(&IndexEntry {
                    ctime: IndexTime::new(0, 0),
                    mtime: IndexTime::new(0, 0),
                    dev: 0,
                    ino: 0,
                    mode: if path.ends_with(".sh") || path.ends_with("busybox") {
                        0o100755
                    } else {
                        0o100644
                    },
                    uid: 0,
                    gid: 0,
                    file_size: bytes.len() as u32,
                    id: blob,
                    flags: 0,
                    flags_extended: 0,
                    path: path.as_bytes().to_vec(),
                })?;
            }
            None => index.remove_path(std::path::Path::new(path))?,
        }
    }
    let tree = repo.find_tree(index.write_tree_to(repo)?)?;
    let sig = Signature::new(author.0, author.1, &Time::new(time, 0))?;
    let parents: Vec<&git2::Commit<'_>> = parent_commit.iter().collect();
    repo.commit(None, &sig, &sig, message, &tree, &parents)
}

/// Point `refs/heads/<name>` at `oid`, creating or moving it.
pub fn set_branch(repo: &Repository, name: &str, oid: Oid) -> Result<(), git2::Error> {
    repo.reference(
        &format!("refs/heads/{name}"),
        oid,
        true,
        "kcideploy scratch",
    )?;
    Ok(())
}

/// Delete `refs/heads/<name>`.
pub fn delete_branch(repo: &Repository, name: &str) -> Result<(), git2::Error> {
    repo.find_reference(&format!("refs/heads/{name}"))?.delete()
}
