//! Finding the `broker` binary, and building it when the test run did not.
//!
//! Order of lookup:
//!
//! 1. `BROKER_BIN`, when set: that file is used as it is, never rebuilt.
//! 2. `target/<profile>/broker` beside the running test executable (which is
//!    `target/<profile>/deps/<test>-<hash>`). Before it is used, `cargo build -p broker`
//!    runs once per test process with the same profile and target directory, so a
//!    test never runs a stale broker after a change to `broker/src`; when the binary
//!    is fresh that costs cargo's check only (well under a second).
//!
//! Set `SYSTEM_TESTS_NO_BUILD=1` to skip the build and take the binary as found.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::command::{Bounded, run_bounded};

/// The longest a `cargo build -p broker` may take: a cold debug build of the broker
/// and its dependencies on two cores, with room to spare.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The path of the `broker` binary, built first if needed (see the module doc).
/// Blocks, possibly for minutes on a cold build: call it from a blocking context.
/// The answer (or the failure) is computed once per process.
pub fn broker_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("BROKER_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("BROKER_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let deps = exe
        .parent()
        .context("the test executable has no directory")?;
    let profile_dir = deps
        .parent()
        .context("the test executable is not in target/<profile>/deps")?;
    let bin = profile_dir.join(format!("broker{}", std::env::consts::EXE_SUFFIX));
    if std::env::var_os("SYSTEM_TESTS_NO_BUILD").is_none() {
        build(profile_dir)?;
    }
    if !bin.is_file() {
        bail!(
            "no broker binary at {}; build it with `cargo build -p broker` or set BROKER_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Runs `cargo build -p broker --bin broker` for the profile and target directory
/// that `profile_dir` (`<target>/<profile>`) stands for.
fn build(profile_dir: &Path) -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the system-tests package is not inside the workspace")?;
    let target_dir = profile_dir
        .parent()
        .context("target/<profile> has no parent")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", "broker", "--bin", "broker"])
        .arg("--profile")
        .arg(&profile)
        .arg("--target-dir")
        .arg(target_dir);
    eprintln!("system-tests: cargo build -p broker --profile {profile} (once per test process)");
    let out = run_bounded(command, None, BUILD_TIMEOUT)?;
    match out {
        Bounded::Exited(out) if out.status.success() => Ok(()),
        Bounded::Exited(out) => bail!(
            "cargo build -p broker failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Bounded::TimedOut => bail!("cargo build -p broker took longer than {BUILD_TIMEOUT:?}"),
    }
}
