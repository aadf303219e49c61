//! Runs the `broker` binary as people do: `broker serve` on a free port with a
//! temporary data directory, and client commands as child processes whose HOME
//! and XDG_CONFIG_HOME point into a temporary directory, with stdin given and
//! stdout, stderr and the exit code captured.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The password of `admin`, made by the first start.
pub const ADMIN_PASSWORD: &str = "admin-password";

/// How long one command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variables of the broker that a developer's shell may have set
/// and that would change what the tests see.
const BROKER_ENV: [&str; 7] = [
    "BROKER_URL",
    "BROKER_TOKEN",
    "BROKER_DATA_DIR",
    "BROKER_PASSWORD",
    "BROKER_CONFIG",
    "BROKER_LISTEN",
    "BROKER_JWT_SECRET",
];

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_broker")
}

/// What a command did.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The outcome, or an error quoting it when the command failed.
    pub fn ok(self) -> Result<Outcome, String> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(format!("command failed: {self:#?}"))
        }
    }
}

/// A temporary home (credentials) and data directory, and the server on them.
pub struct Sandbox {
    pub root: tempfile::TempDir,
    pub url: Option<String>,
    server: Option<Child>,
}

impl Sandbox {
    pub fn new() -> Result<Sandbox, std::io::Error> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir_all(root.path().join("home"))?;
        std::fs::create_dir_all(root.path().join("config"))?;
        Ok(Sandbox {
            root,
            url: None,
            server: None,
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn credentials(&self) -> PathBuf {
        self.root.path().join("config/broker/credentials.json")
    }

    /// A `broker` command with the sandbox's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command.args(args);
        for name in BROKER_ENV {
            command.env_remove(name);
        }
        command
            .env("HOME", self.root.path().join("home"))
            .env("XDG_CONFIG_HOME", self.root.path().join("config"))
            .env("BROKER_DATA_DIR", self.data_dir())
            .env("BROKER_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("BROKER_LOG", "warn");
        if let Some(url) = &self.url {
            command.env("BROKER_URL", url);
        }
        command
    }

    /// Starts `broker serve` on a free port and waits until it listens.
    pub fn start_server(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        self.start_server_with(|_| {}).map(drop)
    }

    /// [`Sandbox::start_server`] with the command changed by `configure` (which
    /// may redirect stderr; stdout is read here); returns the lines the server
    /// printed before the one saying where it listens.
    pub fn start_server_with(
        &mut self,
        configure: impl FnOnce(&mut Command),
    ) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let mut command = self.command(&["serve", "--listen", "127.0.0.1:0"]);
        command.stdin(Stdio::null()).stderr(Stdio::inherit());
        configure(&mut command);
        let mut child = command.stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        self.server = Some(child);
        let (url, before) = listening_url(stdout)?;
        self.url = Some(url);
        Ok(before)
    }

    /// Runs `broker ARGS` with `stdin`, within [`COMMAND_TIMEOUT`].
    pub fn run(&self, args: &[&str], stdin: &str) -> Result<Outcome, Box<dyn std::error::Error>> {
        run(self.command(args), stdin)
    }
}

impl Sandbox {
    /// Stops the server as an operator does (SIGTERM), waiting up to 10 s for
    /// it to exit before killing it.
    pub fn stop_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            // SIGTERM: the broker shuts down cleanly, as an operator stops it.
            let pid = server.id() as libc::pid_t;
            // SAFETY: kill with a child's pid and a valid signal.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = server.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// Reads the server's stdout until it says where it listens, and the lines
/// before; keeps draining it afterwards so the server never blocks on a full
/// pipe.
fn listening_url(stdout: ChildStdout) -> Result<(String, Vec<String>), Box<dyn std::error::Error>> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut before = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sent {
                continue;
            }
            match line.strip_prefix("broker listening on ") {
                Some(url) => {
                    let _ = sender.send((url.trim().to_owned(), std::mem::take(&mut before)));
                    sent = true;
                }
                None => before.push(line),
            }
        }
    });
    Ok(receiver.recv_timeout(START_TIMEOUT)?)
}

/// Runs a command to its end with `stdin` written and closed.
pub fn run(mut command: Command, stdin: &str) -> Result<Outcome, Box<dyn std::error::Error>> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let input = stdin.as_bytes().to_vec();
    let mut child_stdin = child.stdin.take().ok_or("no stdin")?;
    let writer = thread::spawn(move || {
        let _ = child_stdin.write_all(&input);
    });
    let stdout = reader(child.stdout.take().ok_or("no stdout")?);
    let stderr = reader(child.stderr.take().ok_or("no stderr")?);
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{command:?} ran longer than {COMMAND_TIMEOUT:?}").into());
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Ok(Outcome {
        status,
        stdout: stdout.join().map_err(|_| "stdout reader panicked")?,
        stderr: stderr.join().map_err(|_| "stderr reader panicked")?,
    })
}

fn reader(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Retries `attempt` every 100 ms until it succeeds or `within` has passed;
/// the last failure is returned.
pub fn eventually<T>(
    within: Duration,
    mut attempt: impl FnMut() -> Result<T, Box<dyn std::error::Error>>,
) -> Result<T, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + within;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() > deadline => return Err(error),
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The mode bits of a file.
pub fn mode(path: &Path) -> Result<u32, std::io::Error> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}
