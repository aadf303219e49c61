//! Small files beside the segments: the recovery point and the clean-shutdown marker.
//!
//! `recovery-point` holds 16 bytes: the offset below which every batch was fsynced
//! (u64), a CRC-32 of those 8 bytes (u32) and the format version (u32), little-endian.
//! It is rewritten in place by a sync of the log at most once a second, and by
//! `Log::checkpoint` when that limit held a write back, without an fsync of its own:
//! it only tells recovery where its scan may start, and a stale or damaged one means a
//! longer scan, never lost data.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::offset::Offset;

/// The name of the recovery point file.
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point";
/// The name of the clean-shutdown marker.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
const VERSION: u32 = 1;

/// The recovery point file: held open (and locked) for the life of the log, or, when
/// the embedder locks a parent directory itself, opened by path for each write.
#[derive(Debug)]
pub(crate) struct RecoveryPoint {
    path: PathBuf,
    file: Option<File>,
}

impl RecoveryPoint {
    /// Opens (or creates) the file and reads the point it holds, if valid. With
    /// `lock`, keeps it open under an exclusive lock, so two processes, or two
    /// handles, never open one log.
    pub(crate) fn open(dir: &Path, lock: bool) -> Result<(RecoveryPoint, Option<Offset>)> {
        let path = dir.join(RECOVERY_POINT_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        match if lock { file.try_lock() } else { Ok(()) } {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(crate::error::Error::io(
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        "the log directory is in use by another process or handle",
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(crate::error::Error::io(&path, e)),
        }
        let mut buf = [0u8; 16];
        let point = match file.read_exact_at(&mut buf, 0) {
            Ok(()) => decode(&buf),
            Err(_) => None,
        };
        let file = lock.then_some(file);
        Ok((RecoveryPoint { path, file }, point))
    }

    /// Records that everything below `offset` is on disk.
    pub(crate) fn store(&self, offset: Offset) -> Result<()> {
        let bytes = encode(offset);
        match &self.file {
            Some(file) => file.write_all_at(&bytes, 0),
            None => OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
                .and_then(|file| file.write_all_at(&bytes, 0)),
        }
        .at(&self.path)
    }
}

fn encode(offset: Offset) -> [u8; 16] {
    let mut buf = [0u8; 16];
    let value = offset.0.to_le_bytes();
    buf[..8].copy_from_slice(&value);
    buf[8..12].copy_from_slice(&crc32fast::hash(&value).to_le_bytes());
    buf[12..].copy_from_slice(&VERSION.to_le_bytes());
    buf
}

fn decode(buf: &[u8; 16]) -> Option<Offset> {
    let (value, rest) = buf.split_first_chunk::<8>()?;
    let (crc, rest) = rest.split_first_chunk::<4>()?;
    let version = u32::from_le_bytes(*rest.first_chunk::<4>()?);
    (version == VERSION && u32::from_le_bytes(*crc) == crc32fast::hash(value))
        .then(|| Offset(u64::from_le_bytes(*value)))
}

/// Syncs a directory so that files created, renamed or deleted in it stay so.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_round_trip_and_damage_is_ignored() {
        assert_eq!(decode(&encode(Offset(1234))), Some(Offset(1234)));
        let mut damaged = encode(Offset(1234));
        damaged[3] ^= 4;
        assert_eq!(decode(&damaged), None);
        assert_eq!(decode(&[0; 16]), None);
    }
}
