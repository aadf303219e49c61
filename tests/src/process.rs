//! One real `broker serve` process on a loopback port, over a data directory that
//! outlives it, so a scenario can kill it, restart it, and look at what survived.

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::api::Api;
use crate::binary::broker_bin;
use crate::command::{Bounded, run_bounded};

/// The password of the `admin` user, given to every broker the harness starts
/// through `BROKER_ADMIN_PASSWORD`.
pub const ADMIN_PASSWORD: &str = "system-tests-admin-password";
/// The longest a broker may take from spawn to answering `/healthz` with 200. A
/// debug build opening a few logs takes well under a second; recovery after a kill
/// scans only the tails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest a broker may take to exit after SIGTERM (a graceful shutdown flushes
/// and closes every log).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest the kernel may take to reap a SIGKILLed process.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a starting or stopping broker is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How much of the end of each output file is shown when a scenario fails.
const LOG_TAIL_BYTES: u64 = 6 << 10;

/// The output tails of brokers that are gone, kept until the scenario ends so that
/// [`crate::scenario`] can show them when it fails. One scenario per test binary, so
/// nothing else shares this.
static STASHED_LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Takes the output tails stashed by dropped [`BrokerProcess`]es.
pub(crate) fn take_stashed_logs() -> Vec<String> {
    std::mem::take(&mut *STASHED_LOGS.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Keeps the output tails of a process that is gone (a broker, a ZooKeeper server)
/// until the scenario ends, for [`crate::scenario`] to show if it fails.
pub(crate) fn stash_logs(tails: String) {
    STASHED_LOGS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(tails);
}

/// A `broker serve` child process. Dropping it kills the process (SIGKILL).
///
/// Output of each start goes to `start-<n>.stdout` and `start-<n>.stderr` in a
/// temporary directory of its own; [`BrokerProcess::log_tails`] shows their ends.
/// Errors do not repeat the output: when dropped, the process stashes it for
/// [`crate::scenario`] to print if the scenario fails (and prints it itself when
/// dropped by a panic).
#[derive(Debug)]
pub struct BrokerProcess {
    /// The broker executable.
    bin: PathBuf,
    /// The data directory; owned by the scenario, reused by every restart.
    data_dir: PathBuf,
    /// The loopback port, the same for every restart.
    port: u16,
    /// Holds the output files of every start.
    logs: TempDir,
    /// The running process; `None` once it was killed or stopped.
    child: Option<Child>,
    /// How many times a process was started, the first included.
    starts: u32,
    /// A client logged in as `admin` to the current process.
    api: Api,
    /// Flags added to `broker serve` at every start.
    extra_args: Vec<String>,
}

impl BrokerProcess {
    /// Starts a broker on a free loopback port over `data_dir` (created by the
    /// broker when missing), waits until it answers `/healthz`, and logs in as
    /// `admin`.
    pub async fn start(data_dir: &Path) -> anyhow::Result<BrokerProcess> {
        Self::start_with(data_dir, free_port()?, Vec::new()).await
    }

    /// [`BrokerProcess::start`] on `port` with `extra_args` added to `broker serve`
    /// at this and every later start (a cluster member's `--zookeeper`,
    /// `--node-id`, ...).
    pub async fn start_with(
        data_dir: &Path,
        port: u16,
        extra_args: Vec<String>,
    ) -> anyhow::Result<BrokerProcess> {
        let bin = tokio::task::spawn_blocking(broker_bin).await??;
        let mut broker = BrokerProcess {
            bin,
            data_dir: data_dir.to_path_buf(),
            port,
            logs: tempfile::Builder::new()
                .prefix("broker-logs-")
                .tempdir()
                .context("a directory for broker output")?,
            child: None,
            starts: 0,
            api: Api::new(format!("http://127.0.0.1:{port}"))?,
            extra_args,
        };
        broker.launch().await?;
        Ok(broker)
    }

    /// Starts the broker again on the same data directory and port; the old process
    /// must be gone ([`BrokerProcess::kill9`] or [`BrokerProcess::terminate`]). Makes
    /// a new client: connections to the old process are dead.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("restart: the broker is still running; kill or stop it first");
        }
        self.api = Api::new(self.base_url())?;
        self.launch().await
    }

    /// Logs the client in as `admin` again, for a token issued now.
    pub async fn login_again(&mut self) -> anyhow::Result<()> {
        self.api.login("admin", ADMIN_PASSWORD).await
    }

    /// A client logged in as `admin` (clone it for concurrent tasks).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The broker executable.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Whether a process is running (started and not yet killed or stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILLs the broker and reaps it: no chance to flush anything. Fails when the
    /// process had already exited on its own (a crash is a finding, not a kill).
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("kill9: no broker is running")?;
        if let Some(status) = child.try_wait()? {
            bail!("kill9: the broker had already exited on its own ({status})",);
        }
        signal(&child, libc::SIGKILL)?;
        let status = wait_bounded(&mut child, REAP_TIMEOUT).await?;
        match status {
            Some(status) if status.signal() == Some(libc::SIGKILL) => Ok(()),
            Some(status) => bail!("kill9: the broker exited with {status}, not by SIGKILL"),
            None => bail!("kill9: the broker was not reaped within {REAP_TIMEOUT:?}"),
        }
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets but answers nothing, as a
    /// hung machine would.
    pub fn pause(&self) -> anyhow::Result<()> {
        signal(
            self.child.as_ref().context("pause: no broker is running")?,
            libc::SIGSTOP,
        )
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        signal(
            self.child
                .as_ref()
                .context("resume: no broker is running")?,
            libc::SIGCONT,
        )
    }

    /// SIGTERMs the broker and waits for a graceful shutdown: the process must exit
    /// with status 0 within [`STOP_TIMEOUT`], else it is SIGKILLed and this fails.
    /// Returns how long the shutdown took.
    pub async fn terminate(&mut self) -> anyhow::Result<Duration> {
        self.terminate_within(STOP_TIMEOUT).await
    }

    /// [`BrokerProcess::terminate`] with another bound than [`STOP_TIMEOUT`].
    pub async fn terminate_within(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let mut child = self
            .child
            .take()
            .context("terminate: no broker is running")?;
        if let Some(status) = child.try_wait()? {
            bail!("terminate: the broker had already exited on its own ({status})",);
        }
        let started = Instant::now();
        signal(&child, libc::SIGTERM)?;
        match wait_bounded(&mut child, timeout).await? {
            Some(status) if status.success() => Ok(started.elapsed()),
            Some(status) => bail!("after SIGTERM the broker exited with {status}, not 0",),
            None => {
                let _ = signal(&child, libc::SIGKILL);
                let _ = wait_bounded(&mut child, REAP_TIMEOUT).await;
                bail!("the broker did not exit within {timeout:?} of SIGTERM",)
            }
        }
    }

    /// The ends of the output files of every start, for a failure message.
    pub fn log_tails(&self) -> String {
        let mut out = format!(
            "--- broker on port {} over {} ({} start(s)) ---\n",
            self.port,
            self.data_dir.display(),
            self.starts
        );
        for start in 1..=self.starts {
            for stream in ["stdout", "stderr"] {
                let path = self.logs.path().join(format!("start-{start}.{stream}"));
                let tail = read_tail(&path, LOG_TAIL_BYTES);
                if !tail.trim().is_empty() {
                    out.push_str(&format!("--- start {start} {stream} ---\n{tail}\n"));
                }
            }
        }
        out
    }

    /// Spawns the process and waits until it is ready and logged in.
    async fn launch(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let child = self.spawn()?;
        self.child = Some(child);
        if let Err(error) = self.wait_ready().await {
            if let Some(mut child) = self.child.take() {
                let _ = signal(&child, libc::SIGKILL);
                let _ = wait_bounded(&mut child, REAP_TIMEOUT).await;
            }
            return Err(error);
        }
        Ok(())
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let open = |stream: &str| {
            let path = self
                .logs
                .path()
                .join(format!("start-{}.{stream}", self.starts));
            File::create(&path).with_context(|| format!("creating {}", path.display()))
        };
        let mut command = Command::new(&self.bin);
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(open("stdout")?)
            .stderr(open("stderr")?);
        hermetic_env(&mut command);
        die_with_parent(&mut command);
        command
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))
    }

    /// Polls `/healthz` until it answers 200, the process exits, or
    /// [`READY_TIMEOUT`] passes; then logs in.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("the broker exited during start ({status})");
            }
            let probe = tokio::time::timeout_at(deadline, self.api.get("/healthz")).await;
            match probe {
                Ok(Ok((200, _))) => break,
                Ok(_) => {}
                Err(_) => bail!("the broker did not answer /healthz within {READY_TIMEOUT:?}"),
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the broker did not answer /healthz within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let login = self.api.login("admin", ADMIN_PASSWORD);
        tokio::time::timeout_at(deadline, login)
            .await
            .map_err(|_| anyhow::anyhow!("login took longer than {READY_TIMEOUT:?}"))?
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        end_dropped(self.child.take(), || self.log_tails());
    }
}

/// What dropping a harness server does: kills its process (SIGKILL) and waits for
/// it, then prints its output tails if the test is panicking and stashes them with
/// [`stash_logs`].
pub(crate) fn end_dropped(child: Option<Child>, tails: impl FnOnce() -> String) {
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
    let tails = tails();
    if std::thread::panicking() {
        eprintln!("{tails}");
    }
    stash_logs(tails);
}

/// A port that was free a moment ago: bind port 0 on loopback, read it, let go.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding port 0")?;
    Ok(listener.local_addr()?.port())
}

/// The brokers' log filter, unless `SYSTEM_TESTS_BROKER_LOG` gives another (`info`
/// to see elections and role changes in a failing scenario's output).
const BROKER_LOG_DEFAULT: &str = "warn";

/// Clears every `BROKER_*` variable the test run inherited (a developer's
/// `BROKER_CONFIG` must not leak into a test), then sets the harness's own.
fn hermetic_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BROKER_") {
            command.env_remove(name);
        }
    }
    let log =
        std::env::var("SYSTEM_TESTS_BROKER_LOG").unwrap_or_else(|_| BROKER_LOG_DEFAULT.to_owned());
    command
        .env("BROKER_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("BROKER_LOG", log);
}

fn signal(child: &Child, signal: libc::c_int) -> anyhow::Result<()> {
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    // SAFETY: kill(2) with the pid of our own child, which has not been reaped yet (we
    // hold its `Child` and have not waited on it successfully), so the pid cannot
    // have been reused by another process.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(std::io::Error::last_os_error()).context("kill(2)");
    }
    Ok(())
}

/// Waits for the child to exit, up to `timeout`; `None` when it did not.
async fn wait_bounded(child: &mut Child, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The last `bytes` of the file at `path`, or nothing when it cannot be read.
pub(crate) fn read_tail(path: &Path, bytes: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(bytes);
    if file.seek(SeekFrom::Start(from)).is_err() {
        return String::new();
    }
    let mut tail = Vec::new();
    let _ = file.take(bytes).read_to_end(&mut tail);
    let text = String::from_utf8_lossy(&tail).into_owned();
    if from > 0 {
        format!("[... {from} bytes before ...]\n{text}")
    } else {
        text
    }
}

/// Makes the kernel SIGKILL the process `command` spawns when the thread that
/// spawned it exits (PR_SET_PDEATHSIG), so a test process that is itself killed
/// leaves no server behind. Servers are spawned from the test's runtime threads,
/// which live as long as the test.
pub(crate) fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // prctl, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The longest a `broker` command-line subcommand (not `serve`) may run.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `broker <args>` (e.g. `user add NAME --data-dir DIR`) with `stdin` as its
/// input, the same clean environment as a served broker, and [`CLI_TIMEOUT`].
pub async fn broker_cli(args: Vec<String>, stdin: Option<String>) -> anyhow::Result<Bounded> {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(broker_bin()?);
        command.args(&args);
        hermetic_env(&mut command);
        run_bounded(command, stdin.as_deref().map(str::as_bytes), CLI_TIMEOUT)
    })
    .await?
}

/// Runs `broker <args> --data-dir DIR` with `stdin`; fails unless it exits 0.
pub async fn broker_cli_on(
    args: &[&str],
    data_dir: &Path,
    stdin: Option<String>,
) -> anyhow::Result<()> {
    let mut argv: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    argv.push("--data-dir".to_owned());
    argv.push(data_dir.display().to_string());
    match broker_cli(argv, stdin).await? {
        Bounded::Exited(out) if out.status.success() => Ok(()),
        Bounded::Exited(out) => bail!(
            "broker {}: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Bounded::TimedOut => bail!("broker {} did not finish", args.join(" ")),
    }
}
