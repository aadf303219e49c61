//! The users file, `<data>/users.json`: every user with its hash, admin flag and
//! grants, as one JSON document, replaced whole and atomically on every change
//! (see [`super::file`]), mode 0600.
//!
//! ```json
//! {
//!   "version": 1,
//!   "users": [
//!     {
//!       "name": "alice",
//!       "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$...$...",
//!       "admin": false,
//!       "grants": [{"resource": "topic", "pattern": "orders.*", "action": "produce"}],
//!       "tokens_not_before_unix_secs": 1767225600
//!     }
//!   ]
//! }
//! ```
//!
//! Loading checks everything a change would have checked (names, hashes, grant
//! patterns, no duplicates), so a hand-edited or damaged file is refused at start
//! with a message naming the file and the problem, rather than misbehaving later.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::file;
use super::password;
use super::users::{User, UserTable};
use crate::error::BrokerError;
use crate::names;

/// The name of the users file in the data directory.
pub const USERS_FILE_NAME: &str = "users.json";

/// The version of the users file this code reads and writes.
pub const USERS_FILE_VERSION: u32 = 1;

/// The largest users file read: about 20 000 users with a few grants each.
pub const USERS_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// The users file as JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    /// [`USERS_FILE_VERSION`].
    version: u32,
    /// Every user, in name order.
    users: Vec<User>,
}

/// Reads the users file at `path`; `None` when it does not exist.
pub(crate) fn load(path: &Path) -> Result<Option<UserTable>, BrokerError> {
    let Some(bytes) = file::read(path, USERS_FILE_BYTES_MAX)? else {
        return Ok(None);
    };
    decode(&bytes)
        .map(Some)
        .map_err(|reason| BrokerError::BadMetadata {
            path: path.to_owned(),
            reason,
        })
}

/// What identifies one version of the users file without reading it: every write
/// replaces the file by a rename (a new inode) and changes its times, so two
/// versions never share a stamp in practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    /// The file's inode number.
    inode: u64,
    /// Its length in bytes.
    len: u64,
    /// Its modification time, seconds and nanoseconds since the epoch.
    modified: (i64, i64),
    /// Its status change time, seconds and nanoseconds since the epoch.
    changed: (i64, i64),
}

/// The stamp of the file at `path` (one `stat`); `None` when it does not exist.
pub(crate) fn stamp(path: &Path) -> Result<Option<FileStamp>, BrokerError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(FileStamp {
            inode: meta.ino(),
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BrokerError::io(path, e)),
    }
}

/// Holds the users file's lock, taken by [`lock`]; released when dropped.
#[derive(Debug)]
pub(crate) struct WriteLock {
    _file: std::fs::File,
}

/// Takes the lock that every writer of the users file at `path` holds from
/// reading the newest version to replacing it, so that two processes (a running
/// broker and `broker user`/`broker acl` commands) never both build on one version
/// and undo each other's change. An advisory `flock` on `users.lock` beside the
/// file, released when the process ends however it ends; waits while another
/// process holds it.
pub(crate) fn lock(path: &Path) -> Result<WriteLock, BrokerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let lock_path = path.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| BrokerError::io(&lock_path, e))?;
    file.lock().map_err(|e| BrokerError::io(&lock_path, e))?;
    Ok(WriteLock { _file: file })
}

/// Replaces the users file at `path` with `table`.
pub(crate) fn save(path: &Path, table: &UserTable) -> Result<(), BrokerError> {
    file::replace(path, &encode(path, table)?)
}

/// Creates the users file at `path` with `table` unless it exists; returns
/// whether it did.
pub(crate) fn create_new(path: &Path, table: &UserTable) -> Result<bool, BrokerError> {
    file::create_new(path, &encode(path, table)?)
}

/// The file's bytes: pretty JSON (it is small, and operators read it).
fn encode(path: &Path, table: &UserTable) -> Result<Vec<u8>, BrokerError> {
    let mut bytes =
        serde_json::to_vec_pretty(&document(table)).map_err(|e| BrokerError::io(path, e.into()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The same document as the file, as compact JSON: what a cluster keeps in the
/// coordination service. [`decode`] reads both forms.
pub(crate) fn encode_compact(table: &UserTable) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&document(table))
}

/// The document of `table`.
fn document(table: &UserTable) -> UsersFile {
    UsersFile {
        version: USERS_FILE_VERSION,
        users: table.iter().cloned().collect(),
    }
}

/// The table in the file's bytes; the error says what is wrong, without
/// quoting any password hash.
pub(crate) fn decode(bytes: &[u8]) -> Result<UserTable, String> {
    let document: UsersFile =
        serde_json::from_slice(bytes).map_err(|e| format!("not a valid users file: {e}"))?;
    if document.version != USERS_FILE_VERSION {
        return Err(format!(
            "users file version {} is not supported (this broker reads version \
             {USERS_FILE_VERSION})",
            document.version
        ));
    }
    for user in &document.users {
        check_user(user).map_err(|reason| format!("user {:?}: {reason}", user.name))?;
    }
    UserTable::from_users(document.users)
}

/// Checks what the table's operations would have checked when the user was made.
fn check_user(user: &User) -> Result<(), String> {
    names::validate("user", &user.name).map_err(|e| e.message)?;
    password::check_stored(&user.password_hash)?;
    for grant in &user.grants {
        grant.validate().map_err(|e| e.message)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::auth::acl::{Action, Grant, ResourceKind};

    fn table() -> UserTable {
        UserTable::from_users(vec![User {
            name: "alice".to_owned(),
            password_hash: password::hash("pw").unwrap(),
            admin: false,
            grants: vec![Grant::new(ResourceKind::Queue, "jobs", Action::Consume)],
            tokens_not_before_unix_secs: 1_767_225_600,
        }])
        .unwrap()
    }

    #[test]
    fn a_saved_table_loads_back() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(USERS_FILE_NAME);
        assert_eq!(load(&path)?, None);
        let table = table();
        save(&path, &table)?;
        assert_eq!(load(&path)?, Some(table));
        Ok(())
    }

    #[test]
    fn damaged_files_are_refused_with_the_path_and_the_reason()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(USERS_FILE_NAME);
        let table = table();
        let good = String::from_utf8(encode(&path, &table)?)?;
        let hash = table.get("alice").unwrap().password_hash.clone();
        let cases = [
            ("{\"version\": 1, \"users\": [", "not a valid users file"),
            ("\u{0}\u{1}garbage", "not a valid users file"),
            ("", "not a valid users file"),
            (
                &good.replace("\"version\": 1", "\"version\": 2"),
                "version 2",
            ),
            (&good.replace("\"alice\"", "\"a/b\""), "contains '/'"),
            (&good.replace(&hash, "plaintext"), "PHC"),
            (&good.replace("\"jobs\"", "\"jo*bs\""), "grant pattern"),
            (&good.replace("\"consume\"", "\"read\""), "unknown variant"),
            (&good.replace("\"admin\"", "\"root\""), "unknown field"),
        ];
        for (content, expected) in cases {
            fs::write(&path, content)?;
            let error = load(&path).unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(error, BrokerError::BadMetadata { .. }),
                "{message}"
            );
            assert!(
                message.starts_with(&path.display().to_string()),
                "{message}"
            );
            assert!(message.contains(expected), "{expected:?} not in {message}");
            assert!(!message.contains(&hash), "{message}");
        }
        Ok(())
    }

    #[test]
    fn duplicate_users_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(USERS_FILE_NAME);
        let user = serde_json::to_value(table().get("alice").unwrap())?;
        let document = serde_json::json!({"version": 1, "users": [user.clone(), user]});
        fs::write(&path, serde_json::to_vec(&document)?)?;
        assert!(load(&path).unwrap_err().to_string().contains("twice"));
        Ok(())
    }
}
