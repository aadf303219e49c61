//! Small file helpers: atomic replacement of a file and directory syncs.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::BrokerError;

/// Replaces `path` with `bytes` atomically: writes a temporary file beside it with
/// `mode`, fsyncs it, renames it over `path` and fsyncs the directory. A crash leaves
/// either the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BrokerError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| BrokerError::io(path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Fsyncs a directory, so entries created, renamed or removed in it stay so.
pub fn sync_dir(dir: &Path) -> Result<(), BrokerError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BrokerError::io(dir, e))
}

/// Creates a directory and its parents. A path that exists as something else than
/// a directory is reported as such (the system says only "File exists").
pub fn create_dir_all(dir: &Path) -> Result<(), BrokerError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        if dir.exists() && !dir.is_dir() {
            BrokerError::NotADirectory {
                path: dir.to_owned(),
            }
        } else {
            BrokerError::io(dir, e)
        }
    })
}

/// The file that marks a directory whose creation has not finished.
const UNFINISHED_MARK: &str = ".creating";

/// Creates `dir` for a new topic, queue or subscription, marked unfinished until
/// [`finish_create`]: a crash in between leaves a directory that
/// [`remove_if_unfinished`] recognises on the next start, instead of one without its
/// settings file that stops the start.
pub fn begin_create(dir: &Path) -> Result<(), BrokerError> {
    create_dir_all(dir)?;
    let mark = dir.join(UNFINISHED_MARK);
    std::fs::File::create(&mark).map_err(|e| BrokerError::io(&mark, e))?;
    sync_dir(dir)?;
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Ends what [`begin_create`] began: the directory is complete.
pub fn finish_create(dir: &Path) -> Result<(), BrokerError> {
    let mark = dir.join(UNFINISHED_MARK);
    std::fs::remove_file(&mark).map_err(|e| BrokerError::io(&mark, e))?;
    sync_dir(dir)
}

/// Removes `dir` (through `trash`) when its creation never finished: it still has
/// the mark of [`begin_create`], or nothing at all. No request that made it was
/// answered, so nothing acknowledged is lost. Returns whether it was removed.
pub fn remove_if_unfinished(dir: &Path, trash: &Path) -> Result<bool, BrokerError> {
    let marked = dir.join(UNFINISHED_MARK).exists();
    let empty = std::fs::read_dir(dir)
        .map_err(|e| BrokerError::io(dir, e))?
        .next()
        .is_none();
    if !marked && !empty {
        return Ok(false);
    }
    tracing::warn!(
        dir = %dir.display(),
        "removing a directory whose creation never finished (the broker stopped before \
         answering the request that made it)"
    );
    remove_dir_via_trash(dir, trash)?;
    Ok(true)
}

/// Checks that a topic or queue in `dir` still has the directory of each of its
/// `partitions` (named by number): opening a missing one would make it anew, empty,
/// and its messages would be gone without a word. Standalone only: in a cluster
/// the node copies a missing partition from its leader again.
pub fn check_partition_dirs(
    dir: &Path,
    partitions: u32,
    clustered: bool,
) -> Result<(), BrokerError> {
    if clustered {
        return Ok(());
    }
    for p in 0..partitions {
        let partition = dir.join(p.to_string());
        if !partition.is_dir() {
            return Err(BrokerError::BadMetadata {
                path: partition,
                reason: "missing: the partition's messages are gone; restore the \
                         directory, or delete the whole topic or queue directory"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Reads a JSON file of type `T`; `Ok(None)` when it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, BrokerError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| BrokerError::BadMetadata {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BrokerError::io(path, e)),
    }
}

/// Moves `dir` into `trash` under a unique name and removes it there, so a crash in
/// the middle never leaves a half-deleted directory in place.
pub fn remove_dir_via_trash(dir: &Path, trash: &Path) -> Result<(), BrokerError> {
    create_dir_all(trash)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = dir
        .file_name()
        .map_or_else(|| "x".into(), |n| n.to_string_lossy().into_owned());
    let target = trash.join(format!("{name}-{nanos}"));
    std::fs::rename(dir, &target).map_err(|e| BrokerError::io(dir, e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    std::fs::remove_dir_all(&target).map_err(|e| BrokerError::io(&target, e))
}

/// Empties the trash left by a crash during a delete.
pub fn empty_trash(trash: &Path) -> Result<(), BrokerError> {
    match std::fs::remove_dir_all(trash) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BrokerError::io(trash, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_where_a_directory_belongs_is_named_as_such() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("data");
        std::fs::write(&file, "")?;
        let error = create_dir_all(&file)
            .err()
            .ok_or("a file became a directory")?;
        assert_eq!(
            error.to_string(),
            format!("{} is not a directory", file.display())
        );
        create_dir_all(&dir.path().join("a/b"))?;
        create_dir_all(&dir.path().join("a/b"))?;
        Ok(())
    }
}
