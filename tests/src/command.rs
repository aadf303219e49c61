//! Running a short-lived command (cargo, a `broker` CLI subcommand) with a time bound.

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How often a running command is checked for exit.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How a bounded command ended.
#[derive(Debug)]
pub enum Bounded {
    /// It exited; its status and everything it printed.
    Exited(Output),
    /// It ran past the bound and was killed.
    TimedOut,
}

/// Runs `command` with stdout and stderr captured and `stdin` (or nothing) as its
/// input; kills it when it runs longer than `timeout`. Blocks the calling thread.
pub fn run_bounded(
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Bounded> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that exits without reading its input closes the pipe: not an error
        // of ours, its exit status tells.
        let _ = pipe.write_all(bytes);
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a command")? {
            break status;
        }
        if Instant::now() >= deadline {
            kill_and_reap(&mut child);
            return Ok(Bounded::TimedOut);
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    Ok(Bounded::Exited(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }))
}

/// Reads a pipe to its end on a thread of its own, so a chatty child never blocks on
/// a full pipe while we wait for it.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
