//! The client's saved logins: `$XDG_CONFIG_HOME/broker/credentials.json`, else
//! `~/.config/broker/credentials.json`, mode 0600 in a directory of mode 0700,
//! as `gh auth login` and `docker login` keep theirs.
//!
//! ```json
//! {
//!   "version": 1,
//!   "current_url": "http://127.0.0.1:8080",
//!   "logins": {
//!     "http://127.0.0.1:8080": {"username": "alice", "token": "eyJ...", "expires_at_unix_secs": 1767229200}
//!   }
//! }
//! ```
//!
//! A token is kept per broker URL and sent only to that URL, so `--url` pointing
//! elsewhere never leaks it. `current_url` is the URL of the last login: client
//! commands use it when neither `--url` nor `BROKER_URL` is given.
//!
//! `broker login` and `broker logout` change the file under a lock
//! ([`Credentials::update`]), so two of them at once each keep the other's login.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The file's mode: read and write for the owner only (it holds tokens).
pub const CREDENTIALS_FILE_MODE: u32 = 0o600;

/// The mode of the `broker` directory made for the file.
const CREDENTIALS_DIR_MODE: u32 = 0o700;

/// The version of the file this code reads and writes.
const CREDENTIALS_VERSION: u32 = 1;

/// The largest credentials file read; a few hundred logins fit.
const CREDENTIALS_FILE_BYTES_MAX: u64 = 1 << 20;

/// The lock file beside the credentials file: whoever holds its `flock` may
/// read, change and write the credentials.
const LOCK_FILE_NAME: &str = ".credentials.lock";

/// How long a change waits for another to release the lock; a change holds it
/// for one read and one write.
const LOCK_WAIT_MAX: Duration = Duration::from_secs(10);

/// How often a waiting change tries the lock again.
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// The saved logins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// [`CREDENTIALS_VERSION`].
    pub version: u32,
    /// The broker URL of the last login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_url: Option<String>,
    /// One login per broker URL (normalized: no trailing `/`).
    #[serde(default)]
    pub logins: BTreeMap<String, Login>,
}

/// A token for one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// Who logged in.
    pub username: String,
    /// The bearer token.
    pub token: String,
    /// When the token stops working, in Unix seconds.
    pub expires_at_unix_secs: u64,
}

/// Where the file lives: under `$XDG_CONFIG_HOME` when it is set to an absolute
/// path (the XDG rule), else under `$HOME/.config`.
pub fn path_from(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let base = match xdg_config_home.map(PathBuf::from) {
        Some(xdg) if xdg.is_absolute() => xdg,
        _ => PathBuf::from(home.filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(base.join("broker").join("credentials.json"))
}

/// [`path_from`] the environment.
pub fn default_path() -> anyhow::Result<PathBuf> {
    path_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
    .context("cannot tell where to keep credentials: set HOME or XDG_CONFIG_HOME")
}

impl Credentials {
    /// Reads the file; no file means no logins.
    pub fn load(path: &Path) -> anyhow::Result<Credentials> {
        let file = match fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Credentials::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        warn_if_open_to_others(path, &file);
        let mut bytes = Vec::new();
        file.take(CREDENTIALS_FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if bytes.len() as u64 > CREDENTIALS_FILE_BYTES_MAX {
            anyhow::bail!(
                "{} is larger than {CREDENTIALS_FILE_BYTES_MAX} bytes; it is not a credentials \
                 file",
                path.display()
            );
        }
        let credentials: Credentials = serde_json::from_slice(&bytes).with_context(|| {
            format!("{} is damaged; remove it and log in again", path.display())
        })?;
        if credentials.version != CREDENTIALS_VERSION {
            anyhow::bail!(
                "{} has version {}; this broker reads version {CREDENTIALS_VERSION}",
                path.display(),
                credentials.version
            );
        }
        Ok(credentials)
    }

    /// Writes the file atomically (a temporary file of mode 0600, renamed over
    /// the old one), making its directory with mode 0700 when missing. With no
    /// logins left, removes the file instead.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if self.logins.is_empty() {
            return match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
            };
        }
        let dir = make_dir(path)?;
        let mut bytes = serde_json::to_vec_pretty(&Credentials {
            version: CREDENTIALS_VERSION,
            ..self.clone()
        })?;
        bytes.push(b'\n');
        let temp = dir.join(format!(".credentials.json.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&temp);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(CREDENTIALS_FILE_MODE)
            .open(&temp)
            .and_then(|mut file| {
                file.write_all(&bytes)?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&temp, path));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e).with_context(|| format!("cannot write {}", path.display()));
        }
        Ok(())
    }

    /// Reads the file, applies `edit` and writes the result back, holding the
    /// lock beside the file throughout, so that a concurrent change is neither
    /// lost nor undone. Returns what `edit` returned.
    pub fn update<T>(path: &Path, edit: impl FnOnce(&mut Credentials) -> T) -> anyhow::Result<T> {
        let lock_path = make_dir(path)?.join(LOCK_FILE_NAME);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(CREDENTIALS_FILE_MODE)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        let deadline = Instant::now() + LOCK_WAIT_MAX;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(LOCK_RETRY_INTERVAL);
                }
                Err(fs::TryLockError::WouldBlock) => anyhow::bail!(
                    "{} stayed locked by another `broker login` or `logout` for {} s",
                    lock_path.display(),
                    LOCK_WAIT_MAX.as_secs()
                ),
                Err(fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
                }
            }
        }
        let mut credentials = Credentials::load(path)?;
        let outcome = edit(&mut credentials);
        credentials.save(path)?;
        Ok(outcome)
    }

    /// Records a login to `url` and makes it the current one.
    pub fn insert(&mut self, url: &str, login: Login) {
        self.logins.insert(url.to_owned(), login);
        self.current_url = Some(url.to_owned());
    }

    /// Forgets the login to `url`; returns whether there was one.
    pub fn remove(&mut self, url: &str) -> bool {
        let removed = self.logins.remove(url).is_some();
        if self.current_url.as_deref() == Some(url) {
            self.current_url = None;
        }
        removed
    }
}

/// Makes the directory of the credentials file at `path` (mode 0700) when it is
/// missing; returns it.
fn make_dir(path: &Path) -> anyhow::Result<&Path> {
    let dir = path
        .parent()
        .context("the credentials path has no directory")?;
    DirBuilder::new()
        .recursive(true)
        .mode(CREDENTIALS_DIR_MODE)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Warns when the file can be read by others than its owner.
fn warn_if_open_to_others(path: &Path, file: &fs::File) {
    if let Ok(meta) = file.metadata() {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "warning: {} holds tokens but has mode {mode:o}; run `chmod 600` on it",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn login(user: &str) -> Login {
        Login {
            username: user.to_owned(),
            token: format!("token-of-{user}"),
            expires_at_unix_secs: 1_767_229_200,
        }
    }

    #[test]
    fn the_path_follows_xdg_then_home() {
        let path = |xdg: Option<&str>, home: Option<&str>| {
            path_from(xdg.map(OsString::from), home.map(OsString::from))
        };
        assert_eq!(
            path(Some("/x"), Some("/home/a")),
            Some(PathBuf::from("/x/broker/credentials.json"))
        );
        assert_eq!(
            path(Some("relative"), Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/broker/credentials.json"))
        );
        assert_eq!(
            path(None, Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/broker/credentials.json"))
        );
        assert_eq!(path(None, None), None);
        assert_eq!(path(Some(""), Some("")), None);
    }

    #[test]
    fn logins_round_trip_with_mode_0600() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir
            .path()
            .join("cfg")
            .join("broker")
            .join("credentials.json");
        assert_eq!(Credentials::load(&path)?, Credentials::default());
        let mut credentials = Credentials::default();
        credentials.insert("http://a:1", login("alice"));
        credentials.insert("http://b:2", login("bob"));
        credentials.save(&path)?;
        let loaded = Credentials::load(&path)?;
        assert_eq!(loaded.current_url.as_deref(), Some("http://b:2"));
        assert_eq!(loaded.logins.get("http://a:1"), Some(&login("alice")));
        assert_eq!(loaded.logins.len(), 2);
        let mode =
            |p: &Path| -> io::Result<u32> { Ok(fs::metadata(p)?.permissions().mode() & 0o777) };
        assert_eq!(mode(&path)?, CREDENTIALS_FILE_MODE);
        assert_eq!(
            mode(path.parent().ok_or("no parent")?)?,
            CREDENTIALS_DIR_MODE
        );
        let entries: Vec<_> = fs::read_dir(path.parent().ok_or("no parent")?)?.collect();
        assert_eq!(entries.len(), 1, "no temporary file is left");
        Ok(())
    }

    #[test]
    fn a_too_open_file_is_rewritten_with_mode_0600() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("credentials.json");
        let mut credentials = Credentials::default();
        credentials.insert("http://a:1", login("alice"));
        credentials.save(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        credentials.save(&path)?;
        assert_eq!(
            fs::metadata(&path)?.permissions().mode() & 0o777,
            CREDENTIALS_FILE_MODE
        );
        Ok(())
    }

    #[test]
    fn removing_the_last_login_removes_the_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("credentials.json");
        let mut credentials = Credentials::default();
        credentials.insert("http://a:1", login("alice"));
        credentials.save(&path)?;
        assert!(!credentials.remove("http://other:1"));
        assert!(credentials.remove("http://a:1"));
        assert_eq!(credentials.current_url, None);
        credentials.save(&path)?;
        assert!(!path.exists());
        Ok(())
    }

    #[test]
    fn concurrent_updates_keep_every_login() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("broker").join("credentials.json");
        let updates: Vec<_> = (0..8)
            .map(|n| {
                let path = path.clone();
                std::thread::spawn(move || {
                    Credentials::update(&path, |c| c.insert(&format!("http://h:{n}"), login("a")))
                })
            })
            .collect();
        for update in updates {
            update.join().map_err(|_| "an update panicked")??;
        }
        assert_eq!(Credentials::load(&path)?.logins.len(), 8);
        let removed = Credentials::update(&path, |c| c.remove("http://h:3"))?;
        assert!(removed);
        assert_eq!(Credentials::load(&path)?.logins.len(), 7);
        Ok(())
    }

    #[test]
    fn damaged_files_are_refused_with_advice() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("credentials.json");
        fs::write(&path, b"{not json")?;
        let error = format!("{:#}", Credentials::load(&path).unwrap_err());
        assert!(error.contains("remove it and log in again"), "{error}");
        fs::write(&path, br#"{"version": 9, "logins": {}}"#)?;
        let error = format!("{:#}", Credentials::load(&path).unwrap_err());
        assert!(error.contains("version 9"), "{error}");
        Ok(())
    }
}
