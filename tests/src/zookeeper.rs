//! One real standalone ZooKeeper server on a loopback port, over a data directory of
//! its own, for the cluster scenarios: start, SIGKILL, restart with its data or with
//! none (which makes it forget every session).
//!
//! The server is the Debian `zookeeper` package's jar, started as Debian's
//! `zkServer.sh` would but writing only into a temporary directory:
//! `java -cp "$DIR/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"
//! org.apache.zookeeper.server.ZooKeeperServerMain $DIR/conf/zoo.cfg`. The jar's
//! manifest `Class-Path` names its libraries (netty, jute, slf4j-api, jetty,
//! jackson, ...) by their `/usr/share/java` paths; `slf4j-simple` is added, when
//! present, so the server's log reaches its output file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::{die_with_parent, end_dropped, free_port, read_tail};

/// The ZooKeeper jar of the Debian package; its manifest names its libraries.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// The SLF4J binding that prints the server's log to its standard error.
const SLF4J_SIMPLE_JAR: &str = "/usr/share/java/slf4j-simple.jar";
/// The server's main class (standalone, no quorum).
const MAIN_CLASS: &str = "org.apache.zookeeper.server.ZooKeeperServerMain";
/// The longest a server may take from spawn to answering `srvr` with
/// `Mode: standalone` (about 0.7 s on this machine; a JVM on a busy one is slower).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest one `srvr` probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest the kernel may take to reap a SIGKILLed server.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a starting server is probed.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How much of the end of the output file is shown when a scenario fails.
const LOG_TAIL_BYTES: u64 = 8 << 10;
/// The server's tick; sessions may last from 2 ticks to [`SESSION_TIMEOUT_MAX_MS`].
/// ZooKeeper expires sessions on tick boundaries, so a short tick ends a dead
/// node's session within half a second of its timeout instead of up to 2 s after.
const TICK_MS: u32 = 500;
/// The longest session the server grants.
const SESSION_TIMEOUT_MAX_MS: u32 = 60_000;

/// A `ZooKeeperServerMain` child process. Dropping it kills the process (SIGKILL)
/// and stashes its output for [`crate::scenario`] to show if the scenario fails.
#[derive(Debug)]
pub struct ZooKeeperProcess {
    /// Holds `conf/zoo.cfg`, `data/` and the output of every start (`start-<n>.log`).
    dir: TempDir,
    /// The loopback port, the same for every restart.
    port: u16,
    /// The running process; `None` once it was stopped.
    child: Option<Child>,
    /// How many times a process was started, the first included.
    starts: u32,
}

impl ZooKeeperProcess {
    /// Starts a server on a free loopback port with an empty data directory, and
    /// waits until it serves.
    pub async fn start() -> anyhow::Result<ZooKeeperProcess> {
        if !Path::new(ZOOKEEPER_JAR).exists() {
            bail!("{ZOOKEEPER_JAR} is missing: install the `zookeeper` package");
        }
        let dir = tempfile::Builder::new()
            .prefix("zookeeper-")
            .tempdir()
            .context("a directory for ZooKeeper")?;
        let mut server = ZooKeeperProcess {
            port: free_port()?,
            dir,
            child: None,
            starts: 0,
        };
        std::fs::create_dir_all(server.conf_dir())?;
        std::fs::create_dir_all(server.data_dir())?;
        std::fs::write(server.conf_dir().join("zoo.cfg"), server.config())
            .context("writing zoo.cfg")?;
        server.launch().await?;
        Ok(server)
    }

    /// `127.0.0.1:PORT`, for a client's host list.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory (snapshots and transaction logs).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// SIGKILLs the server and reaps it.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("stop: no server is running")?;
        if let Some(status) = child.try_wait()? {
            bail!("stop: the server had already exited on its own ({status})");
        }
        child.kill().context("SIGKILL to ZooKeeper")?;
        match wait_bounded(&mut child, REAP_TIMEOUT).await? {
            true => Ok(()),
            false => bail!("the server was not reaped within {REAP_TIMEOUT:?}"),
        }
    }

    /// Starts the server again on the same port and data directory (sessions and
    /// nodes survive); stops it first if it runs.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.stop().await?;
        }
        self.launch().await
    }

    /// Starts the server again on the same port with an empty data directory: it
    /// knows no node and no session, so every client session expires.
    pub async fn restart_with_fresh_data(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.stop().await?;
        }
        let data = self.data_dir();
        std::fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
        std::fs::create_dir_all(&data)?;
        self.launch().await
    }

    /// The ends of the output of every start, for a failure message.
    pub fn log_tails(&self) -> String {
        let mut out = format!(
            "--- ZooKeeper on port {} ({} start(s)) ---\n",
            self.port, self.starts
        );
        for start in 1..=self.starts {
            let tail = read_tail(&self.log_path(start), LOG_TAIL_BYTES);
            if !tail.trim().is_empty() {
                out.push_str(&format!("--- start {start} ---\n{tail}\n"));
            }
        }
        out
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("start-{start}.log"))
    }

    /// `zoo.cfg`: loopback only, no admin server (it would take port 8080 on every
    /// interface), the four-letter words the harness uses.
    fn config(&self) -> String {
        format!(
            "tickTime={TICK_MS}\n\
             dataDir={}\n\
             clientPort={}\n\
             clientPortAddress=127.0.0.1\n\
             maxSessionTimeout={SESSION_TIMEOUT_MAX_MS}\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=ruok,srvr,stat,mntr\n",
            self.data_dir().display(),
            self.port
        )
    }

    fn classpath(&self) -> String {
        let mut entries = vec![
            self.conf_dir().display().to_string(),
            ZOOKEEPER_JAR.to_owned(),
        ];
        if Path::new(SLF4J_SIMPLE_JAR).exists() {
            entries.push(SLF4J_SIMPLE_JAR.to_owned());
        }
        entries.join(":")
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        self.child = Some(self.spawn()?);
        if let Err(error) = self.wait_ready().await {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = wait_bounded(&mut child, REAP_TIMEOUT).await;
            }
            return Err(error);
        }
        Ok(())
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let path = self.log_path(self.starts);
        let log = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut command = Command::new("java");
        command
            .arg("-cp")
            .arg(self.classpath())
            .arg(MAIN_CLASS)
            .arg(self.conf_dir().join("zoo.cfg"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut command);
        command
            .spawn()
            .context("cannot start java (is a JDK installed?)")
    }

    /// Sends `srvr` until the answer says `Mode: standalone`, the process exits, or
    /// [`READY_TIMEOUT`] passes. (`ruok` answers before sessions are accepted.)
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("ZooKeeper exited during start ({status})");
            }
            let probe = tokio::time::timeout(PROBE_TIMEOUT, srvr(self.port)).await;
            if let Ok(Ok(answer)) = probe
                && answer.contains("Mode: standalone")
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("ZooKeeper did not serve within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for ZooKeeperProcess {
    fn drop(&mut self) {
        end_dropped(self.child.take(), || self.log_tails());
    }
}

/// The server's answer to the `srvr` four-letter word.
async fn srvr(port: u16) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"srvr").await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Waits for the child to exit, up to `timeout`; whether it did.
async fn wait_bounded(child: &mut Child, timeout: Duration) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
