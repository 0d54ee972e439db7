//! What every layer may use and that uses nothing of kcideploy's: an HTTP client with
//! timeouts, atomic file writes, random identifiers, text helpers.

pub mod cron;
pub mod http;
pub mod rt;
pub mod text;

use std::io::Write;
use std::path::{Path, PathBuf};

/// Write a file so that readers see the old or the new content, never a mix:
/// a temporary file in the same directory, fsync, rename over the target, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".kcideploy-tmp-")
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
