//! What every layer may use and that uses nothing of kcideploy's: an HTTP client with
//! timeouts, atomic file writes, random identifiers, text helpers.

pub mod cron;
pub mod diff;
pub mod http;
pub mod retry;
pub mod rt;
pub mod text;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Prefix of [`write_atomic`]'s temporary files.
pub const TEMP_PREFIX: &str = ".kcideploy-tmp-";

/// A temporary file of [`write_atomic`] older than this was left by a killed writer.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(60);

/// Write a file so that readers see the old or the new content, never a mix:
/// a temporary file in the same directory, fsync, rename over the target, fsync the directory.
/// Temporary files that a killed writer left in that directory ([`STALE_TEMP_AGE`] old) go.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    remove_stale_temp_files(&dir, STALE_TEMP_AGE);
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(&dir) {
        // Directory fsync makes the rename durable; not every filesystem supports it.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Remove the files of `dir` named [`TEMP_PREFIX`]`*` last modified more than `age` ago (a
/// writer that is alive finishes within seconds); best effort. Returns how many went.
pub fn remove_stale_temp_files(dir: &Path, age: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let stale = |entry: &std::fs::DirEntry| {
        entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && entry.file_type().is_ok_and(|t| t.is_file())
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| now.duration_since(m).is_ok_and(|d| d > age))
    };
    entries
        .flatten()
        .filter(stale)
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// A short random identifier (lock ids).
pub fn random_id() -> String {
    random_hex::<8>()
}

pub fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    // getrandom only fails when the OS has no entropy source at all.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = jiff::Timestamp::now().as_nanosecond().to_le_bytes();
        for (b, n) in bytes.iter_mut().zip(nanos.iter().cycle()) {
            *b = *n;
        }
    }
    hex::encode(bytes)
}
