//! How the operator commands (`broker user ...`, `broker acl ...`) open the data
//! directory: directly, as `jenkins-cli` or `grafana-cli admin` do, so they work
//! whether or not the broker runs. A running broker notices the changed users
//! file within a second (its maintenance reloads it).
//!
//! Opening does nothing surprising: it refuses a directory that holds no broker
//! (a typo in `--data-dir` must not create one), except for `user add`, which
//! may prepare a new one; it never writes the JWT secret (these commands sign no
//! token); and it refuses to write a users file that belongs to another user,
//! since the broker could then no longer read it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::auth::{Auth, AuthConfig, USERS_FILE_NAME};

/// Random bytes of the signing secret the operator commands open auth with: it
/// signs nothing and is never stored, but opening needs one, and a configured
/// secret keeps opening from generating `<data>/jwt-secret`.
const THROWAWAY_SECRET_BYTES: usize = 32;

/// `--data-dir`, shared by the operator commands.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArgs {
    /// The broker's data directory.
    #[arg(long, env = "BROKER_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
}

/// Whether opening may prepare a data directory that holds no broker yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Refuse: the command only reads or changes existing users.
    Refuse,
    /// Create it (`user add` before the first start).
    Create,
}

/// Opens the users of the data directory. When it holds no users yet (and
/// `missing` allows), the first admin is made as `broker serve` makes it, with
/// `BROKER_ADMIN_PASSWORD` or a random password printed once.
pub fn open(args: &DataDirArgs, missing: Missing) -> anyhow::Result<Auth> {
    let dir = &args.data_dir;
    let users = dir.join(USERS_FILE_NAME);
    if missing == Missing::Refuse && !users.exists() {
        anyhow::bail!(
            "{} holds no broker (no {USERS_FILE_NAME}): pass --data-dir or set BROKER_DATA_DIR",
            dir.display()
        );
    }
    check_owner(&users)?;
    let config = AuthConfig {
        jwt_secret: Some(throwaway_secret()?),
        admin_password: std::env::var("BROKER_ADMIN_PASSWORD").ok(),
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

    #[test]
    fn a_directory_without_a_broker_is_refused_and_left_alone() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let args = DataDirArgs {
            data_dir: dir.path().join("typo"),
        };
        let error = open(&args, Missing::Refuse).unwrap_err().to_string();
        assert!(error.contains("holds no broker"), "{error}");
        assert!(!args.data_dir.exists());
        Ok(())
    }

    #[test]
    fn opening_writes_no_jwt_secret() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let args = DataDirArgs {
            data_dir: dir.path().to_owned(),
        };
        let auth = open(&args, Missing::Create)?;
        assert_eq!(auth.users().len(), 1);
        assert!(dir.path().join(USERS_FILE_NAME).exists());
        assert!(!dir.path().join(crate::auth::SECRET_FILE_NAME).exists());
        open(&args, Missing::Refuse)?;
        Ok(())
    }
}
