//! Reading a plan file: bounded in size, UTF-8 with the position of the first bad byte.

use std::io::Read;
use std::path::Path;

use super::ConfigError;

/// The largest plan file accepted. KernelCI's staging plan is a few KiB; parsing and
/// reporting stay fast well past this.
pub const MAX_PLAN_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Read a plan file, refusing one over [`MAX_PLAN_FILE_BYTES`] or not UTF-8.
pub(crate) fn read(path: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file at the limit from a larger one, whatever the
    // file is (a pipe or a device has no size to ask for first).
    file.take(MAX_PLAN_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    check_size(path, bytes.len())?;
    utf8(path, bytes)
}

pub(crate) fn check_size(path: &Path, len: usize) -> Result<(), ConfigError> {
    if u64::try_from(len).unwrap_or(u64::MAX) > MAX_PLAN_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            max: MAX_PLAN_FILE_BYTES,
        });
    }
    Ok(())
}

/// The text, or an error naming the line, column and offset of the first invalid byte.
pub(crate) fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let offset = e.utf8_error().valid_up_to();
        // Everything before the bad byte is valid UTF-8.
        let before = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before[line_start..].chars().count() + 1;
        ConfigError::NotUtf8 {
            path: path.to_path_buf(),
            line: line as u64,
            column: column as u64,
            offset,
            byte: bytes[offset],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_invalid_byte_is_located() {
        let err = utf8(
            Path::new("p.yaml"),
            b"version: 1\nname: \"\xc3\xa9\xff\"\n".to_vec(),
        )
        .expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "p.yaml:2:9: the plan file is not UTF-8: byte 0xff at offset 20 cannot start a character"
        );
    }

    #[test]
    fn size_limit_is_inclusive() {
        let max = MAX_PLAN_FILE_BYTES as usize;
        assert!(check_size(Path::new("p"), max).is_ok());
        assert!(check_size(Path::new("p"), max + 1).is_err());
    }
}
