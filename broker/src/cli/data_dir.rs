//! How the operator commands (`broker user ...`, `broker acl ...`) open the data
//! directory: directly, as `jenkins-cli` or `grafana-cli admin` do, so they work
//! whether or not the broker runs. A running broker notices the changed users
//! file within a second (its maintenance reloads it).
//!
//! Opening does nothing surprising: it refuses a directory that holds no broker
//! (a typo in `--data-dir`, or a command run in another directory, must not
//! create one with an `admin` the running broker never sees: a new broker's data
//! directory is made by its first `broker serve`); it never writes the JWT
//! secret (these commands sign no token); and it refuses to write a users file
//! that belongs to another user, since the broker could then no longer read it.
//!
//! The directory is found as `broker serve` finds it: `--data-dir` (or
//! `BROKER_DATA_DIR`), else `data_dir` of the config file given with `--config`
//! (or `BROKER_CONFIG`), else `./data`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::auth::{Auth, AuthConfig, USERS_FILE_NAME};
use crate::config::BrokerConfig;

/// Random bytes of the signing secret the operator commands open auth with: it
/// signs nothing and is never stored, but opening needs one, and a configured
/// secret keeps opening from generating `<data>/jwt-secret`.
const THROWAWAY_SECRET_BYTES: usize = 32;

/// `--data-dir` and `--config`, shared by the operator commands.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DataDirArgs {
    /// The broker's data directory [default: `data_dir` of --config, else ./data].
    #[arg(long, env = "BROKER_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// The broker's config file, as given to `broker serve --config`; its
    /// `data_dir` is used unless --data-dir is given.
    #[arg(long, env = "BROKER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

/// The data directory the flags name, and why it is that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The directory.
    pub dir: PathBuf,
    /// Where it came from, for the error when it holds no broker.
    pub origin: String,
    /// `admin_password` of the config file, overridden by `BROKER_ADMIN_PASSWORD`.
    pub admin_password: Option<String>,
}

impl DataDirArgs {
    /// Finds the data directory as `broker serve` would with the same flags,
    /// environment and config file.
    pub fn locate(&self) -> anyhow::Result<Located> {
        let file = match &self.config {
            Some(path) => Some((path, BrokerConfig::from_file(path)?)),
            None => None,
        };
        let admin_password = std::env::var("BROKER_ADMIN_PASSWORD")
            .ok()
            .or_else(|| file.as_ref().and_then(|(_, c)| c.admin_password.clone()));
        let (dir, origin) = match (&self.data_dir, &file) {
            (Some(dir), _) => (dir.clone(), "--data-dir or BROKER_DATA_DIR".to_owned()),
            (None, Some((path, config))) => (
                config.data_dir.clone(),
                format!("data_dir of {}", path.display()),
            ),
            (None, None) => (
                BrokerConfig::default().data_dir,
                "the default, as neither --data-dir nor --config is given".to_owned(),
            ),
        };
        Ok(Located {
            dir,
            origin,
            admin_password,
        })
    }
}

/// Opens the users of the broker's data directory; refuses, saying where it
/// looked, a directory that holds no broker. A users file with no users gets
/// the first admin as `broker serve` makes it, with `BROKER_ADMIN_PASSWORD` or
/// a random password printed once.
pub fn open(args: &DataDirArgs) -> anyhow::Result<Auth> {
    let located = args.locate()?;
    let dir = &located.dir;
    let users = dir.join(USERS_FILE_NAME);
    if !users.is_file() {
        let shown = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        let what = if dir.exists() && !dir.is_dir() {
            format!("{} is not a directory", shown.display())
        } else {
            format!("{} holds no broker (no {USERS_FILE_NAME})", shown.display())
        };
        anyhow::bail!(
            "{what}; it was taken from {}: pass the broker's data directory with \
             --data-dir DIR (or BROKER_DATA_DIR), or its config file with --config FILE \
             (a new broker's data directory is made by its first `broker serve`)",
            located.origin
        );
    }
    check_owner(&users)?;
    let config = AuthConfig {
        jwt_secret: Some(throwaway_secret()?),
        admin_password: located.admin_password,
        ..AuthConfig::default()
    };
    let (auth, bootstrap) = Auth::open(dir, &config)?;
    if let Some(password) = bootstrap.created_admin_password {
        println!(
            "Created user `admin` with password: {password}\n\
             It is shown only this once; change it with `broker user passwd admin`."
        );
    }
    Ok(auth)
}

/// Refuses to rewrite a users file owned by another user: the new file would
/// belong to us, and a broker running as its owner could not read it.
fn check_owner(users: &Path) -> anyhow::Result<()> {
    let Ok(meta) = std::fs::metadata(users) else {
        return Ok(());
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        anyhow::bail!(
            "{} belongs to uid {}, and this command runs as uid {me}: run it as the broker's \
             user (for example with `sudo -u`), or the broker could no longer read the file",
            users.display(),
            meta.uid()
        );
    }
    Ok(())
}

/// A random secret of hex digits, long enough for the auth configuration.
fn throwaway_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; THROWAWAY_SECRET_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system gave no random bytes: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory with users, as a first `broker serve` leaves it (but
    /// without a JWT secret file).
    fn broker_dir(dir: &Path) -> anyhow::Result<()> {
        let config = AuthConfig {
            jwt_secret: Some("s".repeat(32)),
            admin_password: Some("admin password".to_owned()),
            ..AuthConfig::default()
        };
        Auth::open(dir, &config)?;
        Ok(())
    }

    #[test]
    fn a_directory_without_a_broker_is_refused_and_left_alone() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let args = DataDirArgs {
            data_dir: Some(dir.path().join("typo")),
            config: None,
        };
        let error = open(&args).unwrap_err().to_string();
        assert!(error.contains("holds no broker"), "{error}");
        assert!(
            error.contains("typo") && error.contains("--data-dir"),
            "{error}"
        );
        assert!(!dir.path().join("typo").exists());
        let file = dir.path().join("file");
        std::fs::write(&file, "")?;
        let args = DataDirArgs {
            data_dir: Some(file),
            config: None,
        };
        let error = open(&args).unwrap_err().to_string();
        assert!(error.contains("is not a directory"), "{error}");
        Ok(())
    }

    #[test]
    fn opening_writes_no_jwt_secret() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        broker_dir(dir.path())?;
        let args = DataDirArgs {
            data_dir: Some(dir.path().to_owned()),
            config: None,
        };
        let auth = open(&args)?;
        assert_eq!(auth.users().len(), 1);
        assert!(!dir.path().join(crate::auth::SECRET_FILE_NAME).exists());
        Ok(())
    }

    #[test]
    fn the_config_file_names_the_directory_unless_the_flag_does() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("from-config");
        broker_dir(&data)?;
        let config = dir.path().join("broker.toml");
        std::fs::write(
            &config,
            format!("data_dir = {:?}\n", data.display().to_string()),
        )?;
        let args = DataDirArgs {
            data_dir: None,
            config: Some(config.clone()),
        };
        assert_eq!(args.locate()?.dir, data);
        open(&args)?;
        let flag = DataDirArgs {
            data_dir: Some(dir.path().join("flag")),
            config: Some(config),
        };
        assert_eq!(flag.locate()?.dir, dir.path().join("flag"));
        let default = DataDirArgs::default().locate()?;
        assert_eq!(default.dir, PathBuf::from("data"));
        assert!(default.origin.contains("default"), "{}", default.origin);
        Ok(())
    }
}
