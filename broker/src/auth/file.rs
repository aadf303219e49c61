//! Small, secret files written whole and atomically: the users file and the JWT
//! secret. Both are created with mode 0600 (owner read/write only).
//!
//! A write goes to a temporary file in the same directory, which is fsynced, then
//! moved into place (rename, or a hard link when the file must not exist yet),
//! and the directory is fsynced so the new name survives a crash. A reader
//! therefore sees the old file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::BrokerError;

/// The mode of every file this module creates: read and write for the owner only.
pub const SECRET_FILE_MODE: u32 = 0o600;

/// Replaces `path` with `bytes`, atomically and durably.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> Result<(), BrokerError> {
    let temp = write_temp(path, bytes)?;
    fs::rename(&temp, path).map_err(|e| BrokerError::io(path, e))?;
    sync_parent(path)
}

/// Creates `path` with `bytes`, atomically and durably, unless it exists already.
/// Returns whether this call created it; when two processes race, exactly one does
/// and the other finds the winner's file.
pub(crate) fn create_new(path: &Path, bytes: &[u8]) -> Result<bool, BrokerError> {
    let temp = write_temp(path, bytes)?;
    // Unlike rename, link never replaces an existing file.
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => sync_parent(path).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(BrokerError::io(path, e)),
    }
}

/// Reads a whole file of at most `bytes_max` bytes; `None` when it does not exist.
pub(crate) fn read(path: &Path, bytes_max: u64) -> Result<Option<Vec<u8>>, BrokerError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BrokerError::io(path, e)),
    };
    warn_if_open_to_others(path, &file);
    let mut bytes = Vec::new();
    file.take(bytes_max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| BrokerError::io(path, e))?;
    if bytes.len() as u64 > bytes_max {
        return Err(BrokerError::BadMetadata {
            path: path.to_owned(),
            reason: format!("the file is larger than the limit of {bytes_max} bytes"),
        });
    }
    Ok(Some(bytes))
}

/// Writes `bytes` to a fresh temporary file beside `path` (mode 0600) and fsyncs
/// it.
fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, BrokerError> {
    let temp = temp_path(path)?;
    // A temporary file left by a crash is stale; removing it first lets
    // `create_new` apply the mode, which `open` ignores for existing files.
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(BrokerError::io(&temp, e)),
    }
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SECRET_FILE_MODE)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(BrokerError::io(&temp, e));
    }
    Ok(temp)
}

/// `<dir>/.<name>.<pid>.tmp`: hidden, and distinct per process.
fn temp_path(path: &Path) -> Result<PathBuf, BrokerError> {
    let name = path.file_name().ok_or_else(|| {
        BrokerError::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
        )
    })?;
    let temp_name = format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id());
    Ok(path.with_file_name(temp_name))
}

/// Fsyncs the directory holding `path`, so a rename or link in it is durable.
fn sync_parent(path: &Path) -> Result<(), BrokerError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BrokerError::io(dir, e))
}

/// Logs a warning when a secret file can be read by group or others (an operator
/// made it so; the broker never does).
fn warn_if_open_to_others(path: &Path, file: &File) {
    if let Ok(meta) = file.metadata() {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:o}"),
                "a secret file is readable by others than its owner; chmod 600 it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> io::Result<u32> {
        Ok(fs::metadata(path)?.permissions().mode() & 0o777)
    }

    #[test]
    fn replace_writes_mode_0600_and_leaves_no_temporary_file()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("users.json");
        replace(&path, b"one")?;
        replace(&path, b"two")?;
        assert_eq!(fs::read(&path)?, b"two");
        assert_eq!(mode(&path)?, SECRET_FILE_MODE);
        assert_eq!(fs::read_dir(dir.path())?.count(), 1);
        Ok(())
    }

    #[test]
    fn replace_fixes_a_too_open_mode() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("users.json");
        fs::write(&path, b"old")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        replace(&path, b"new")?;
        assert_eq!(mode(&path)?, SECRET_FILE_MODE);
        Ok(())
    }

    #[test]
    fn create_new_never_replaces() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("jwt-secret");
        assert!(create_new(&path, b"first")?);
        assert!(!create_new(&path, b"second")?);
        assert_eq!(fs::read(&path)?, b"first");
        assert_eq!(mode(&path)?, SECRET_FILE_MODE);
        assert_eq!(fs::read_dir(dir.path())?.count(), 1);
        Ok(())
    }

    #[test]
    fn read_is_bounded_and_tells_a_missing_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        assert_eq!(read(&path, 4)?, None);
        fs::write(&path, b"1234")?;
        assert_eq!(read(&path, 4)?, Some(b"1234".to_vec()));
        fs::write(&path, b"12345")?;
        assert!(matches!(
            read(&path, 4),
            Err(BrokerError::BadMetadata { .. })
        ));
        Ok(())
    }
}
