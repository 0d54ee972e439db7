//! Reading files of a revision in a cache repository (for `plan --diff`).

use std::path::Path;

use git2::{Oid, Repository};

/// The content of `path` in commit `sha` of the bare repository `git_dir`; `None` when the
/// path does not exist there (the file is new, or removed).
pub fn file_at(git_dir: &Path, sha: &str, path: &str) -> Result<Option<Vec<u8>>, git2::Error> {
    let repo = Repository::open_bare(git_dir)?;
    let commit = repo.find_commit(Oid::from_str(sha)?)?;
    let entry = match commit.tree()?.get_path(Path::new(path)) {
        Ok(entry) => entry,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match entry.to_object(&repo)?.into_blob() {
        Ok(blob) => Ok(Some(blob.content().to_vec())),
        // A directory or submodule where a file was: nothing to show as text.
        Err(_) => Ok(None),
    }
}
