//! A writer process killed with SIGKILL at a random moment loses nothing it was told
//! was written. After each kill the log opens, reads back from its start to its end
//! without error, ends at or past every offset the writer acknowledged (fsynced) and
//! every offset an append returned (a process crash keeps the page cache), keeps every
//! record of earlier rounds unchanged, and holds exactly the values the writer encoded.
//!
//! The parent test re-runs this test binary with `--exact child_writer_until_killed`;
//! the child appends in a loop, printing `WROTE <next offset>` when an append returns
//! and `ACK <next offset>` once it is durable, until it is killed. The parent kills a
//! child a random 20-300 ms after its spawn or its open, or just as it announces a
//! large write (`WRITING <offset>`). Rounds rotate through flush styles (fsync per
//! append, group commit from three threads, manual flushes, large batches whose write
//! the kill sometimes cuts), some rounds kill two writers in a row before the parent
//! looks, and the parent alternates a clean close with a plain drop, so the next
//! writer's open recovers too.
//!
//! A kill keeps the page cache, so this checks recovery and the offsets, not that
//! fsyncs happen: losing an fsync needs a power cut, which a kill cannot simulate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log_engine::{FlushPolicy, Log, LogConfig, Offset, ReadBound, Record, RecordBatch};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The name of the child test, as `--exact` wants it.
const CHILD_TEST: &str = "child_writer_until_killed";
/// Tells the child where the log is; without it the child test does nothing.
const DIR_VAR: &str = "LOG_ENGINE_KILL9_CHILD_DIR";
const MODE_VAR: &str = "LOG_ENGINE_KILL9_CHILD_MODE";
const RUN_VAR: &str = "LOG_ENGINE_KILL9_CHILD_RUN";
const CHILD_SEED_VAR: &str = "LOG_ENGINE_KILL9_CHILD_SEED";
/// Replays the parent's choices (modes, delays, batch sizes) of an earlier run.
const SEED_VAR: &str = "LOG_ENGINE_KILL9_SEED";

/// Kill rounds; each round's parent check covers one or two killed writers.
const ROUNDS: u64 = 24;
/// A child is killed this long after it was spawned or opened the log.
const KILL_DELAY_MS_MIN: u64 = 20;
const KILL_DELAY_MS_MAX: u64 = 300;
/// A large write is killed up to this long after the child announced it: longer than
/// its roll (a few fsyncs) and its `pwrite` take, so kills fall in both.
const WRITE_KILL_DELAY_US_MAX: u64 = 6_000;
/// A child stops appending after this many bytes and waits to be killed: it bounds
/// the log, and so the time the parent spends reading it back every round.
const CHILD_BYTES_MAX: u64 = 3 << 20;
/// The same for a large-batch child, which is killed at its first or second write:
/// room for three of the largest batches.
const CHILD_LARGE_BYTES_MAX: u64 = 8 << 20;
/// The parent waits this long at most for a line it times a kill by.
const CHILD_SIGNAL_TIMEOUT: Duration = Duration::from_secs(20);
/// A child that is never killed gives up after this long instead of lingering.
const CHILD_IDLE_MAX: Duration = Duration::from_secs(60);
/// Appending threads of a group-commit child.
const GROUP_THREADS: u64 = 3;
/// SIGKILL's number, which Linux and the BSDs share.
const SIGKILL: i32 = 9;
/// The parent reads the log back in reads of this size.
const READ_BYTES_MAX: usize = 1 << 20;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

/// Small segments and indexes, so that kills land in and around rolls (by size and
/// by a full index).
fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes_max: 256 * 1024,
        index_interval_bytes: 1024,
        index_bytes_max: 2048,
        flush,
        ..LogConfig::default()
    }
}

/// SplitMix64: a deterministic generator, so a printed seed replays the choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// How a child writes and when it acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `FlushPolicy::ALWAYS`: every `append` returns fsynced; ACK after each.
    Always,
    /// Three threads call `append_durable` at once and share fsyncs; ACK after each.
    GroupCommit,
    /// `append`, then `flush()` every few batches; ACK after each flush.
    ManualFlush,
    /// Batches of 128 KiB to 2 MiB (most larger than a segment), each flushed; ACK
    /// after each flush. The child announces each write and the parent kills it
    /// within a millisecond or two, so the kill lands in the roll or in the middle of
    /// the write, and recovery must cut a torn batch that nobody truncated by hand.
    LargeBatches,
}

const MODES: [Mode; 4] = [
    Mode::Always,
    Mode::GroupCommit,
    Mode::ManualFlush,
    Mode::LargeBatches,
];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Always => "always",
            Mode::GroupCommit => "group-commit",
            Mode::ManualFlush => "manual-flush",
            Mode::LargeBatches => "large-batches",
        }
    }

    fn parse(name: &str) -> TestResult<Mode> {
        MODES
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| format!("unknown mode {name:?}").into())
    }

    fn budget_bytes(self) -> u64 {
        match self {
            Mode::LargeBatches => CHILD_LARGE_BYTES_MAX,
            _ => CHILD_BYTES_MAX,
        }
    }

    fn flush_policy(self) -> FlushPolicy {
        match self {
            Mode::Always => FlushPolicy::ALWAYS,
            _ => FlushPolicy::MANUAL,
        }
    }
}

// ---------------------------------------------------------------------------------
// The child: appends until killed.
// ---------------------------------------------------------------------------------

#[test]
#[ignore = "the writer process of kill9_writer_loses_nothing_acknowledged"]
fn child_writer_until_killed() -> TestResult {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return Ok(());
    };
    let mode = Mode::parse(&std::env::var(MODE_VAR)?)?;
    let run: u64 = std::env::var(RUN_VAR)?.parse()?;
    let seed: u64 = std::env::var(CHILD_SEED_VAR)?.parse()?;
    let log = Log::open(&dir, config(mode.flush_policy()))?;
    say("OPENED", log.log_end_offset())?;
    let budget = AtomicU64::new(mode.budget_bytes());
    match mode {
        Mode::GroupCommit => thread::scope(|scope| {
            let writers: Vec<_> = (0..GROUP_THREADS)
                .map(|t| {
                    let (log, budget) = (&log, &budget);
                    scope.spawn(move || group_writer(log, run, t, seed ^ t, budget))
                })
                .collect();
            writers
                .into_iter()
                .try_for_each(|w| w.join().map_err(|_| "a writer panicked")?)
        })?,
        _ => single_writer(&log, mode, run, seed, &budget)?,
    }
    thread::sleep(CHILD_IDLE_MAX);
    Err("the child was never killed".into())
}

/// One line to the parent, written and flushed at once so a kill cannot hold it back.
fn say(what: &str, offset: Offset) -> TestResult {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{what} {offset}")?;
    out.flush()?;
    Ok(())
}

/// Takes `bytes` from the child's budget; false once it is spent.
fn spend(budget: &AtomicU64, bytes: usize) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            left.checked_sub(bytes as u64)
        })
        .is_ok()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Value of a record written by a single writer: its own offset and the run, then
/// filler.
fn single_value(run: u64, offset: u64, filler: usize) -> Vec<u8> {
    let mut value = format!("r{run}:o{offset}:").into_bytes();
    value.resize(value.len() + filler, b'x');
    value
}

/// Value of a record written by thread `thread` of a group-commit run: the thread's
/// own record sequence number (its offset is not known before the append).
fn group_value(run: u64, thread: u64, seq: u64) -> Vec<u8> {
    format!("r{run}:t{thread}:s{seq}:").into_bytes()
}

fn single_writer(log: &Log, mode: Mode, run: u64, seed: u64, budget: &AtomicU64) -> TestResult {
    let mut rng = Rng(seed);
    let flush_every = rng.range(1, 8);
    for batches in 1u64.. {
        let (count, filler) = match mode {
            Mode::LargeBatches => (rng.range(1, 4), rng.range(128, 512) as usize * 1024),
            _ => (rng.range(1, 50), rng.range(0, 40) as usize),
        };
        let base = log.log_end_offset();
        let records: Vec<Record> = (base.0..base.0 + count)
            .map(|o| Record::new(single_value(run, o, filler), now_ms()))
            .collect();
        let mut batch = RecordBatch::from_records(&records)?;
        if !spend(budget, batch.len()) {
            return Ok(());
        }
        if mode == Mode::LargeBatches {
            say("WRITING", base)?;
        }
        let info = log.append(&mut batch)?;
        ensure!(
            info.base_offset == base,
            "single writer: append went to {info:?}, not {base}"
        );
        say("WROTE", info.next_offset())?;
        let durable_now = match mode {
            Mode::Always => true,
            Mode::LargeBatches => {
                log.flush()?;
                true
            }
            Mode::ManualFlush if batches.is_multiple_of(flush_every) => {
                log.flush()?;
                true
            }
            _ => false,
        };
        if durable_now {
            ensure!(
                log.durable_offset() >= info.next_offset(),
                "durable offset {} below {} after a sync",
                log.durable_offset(),
                info.next_offset()
            );
            say("ACK", info.next_offset())?;
        }
    }
    Ok(())
}

fn group_writer(log: &Log, run: u64, thread: u64, seed: u64, budget: &AtomicU64) -> TestResult {
    let mut rng = Rng(seed);
    let mut seq = 0u64;
    loop {
        let count = rng.range(1, 20);
        let records: Vec<Record> = (seq..seq + count)
            .map(|s| Record::new(group_value(run, thread, s), now_ms()))
            .collect();
        let mut batch = RecordBatch::from_records(&records)?;
        if !spend(budget, batch.len()) {
            return Ok(());
        }
        let info = log.append_durable(&mut batch)?;
        seq += count;
        ensure!(
            log.durable_offset() >= info.next_offset(),
            "append_durable returned before {} was durable",
            info.next_offset()
        );
        say("WROTE", info.next_offset())?;
        say("ACK", info.next_offset())?;
    }
}

// ---------------------------------------------------------------------------------
// The parent: kills children and checks what they left.
// ---------------------------------------------------------------------------------

/// When the parent kills a child.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// This long after the spawn: may land while the child opens and recovers.
    SinceSpawn(Duration),
    /// This long after the child reported its open: lands while it appends.
    SinceOpen(Duration),
    /// This long after the child announced its `n`th large write.
    AtWrite(u32, Duration),
}

impl KillAt {
    fn choose(mode: Mode, rng: &mut Rng) -> KillAt {
        let delay = Duration::from_millis(rng.range(KILL_DELAY_MS_MIN, KILL_DELAY_MS_MAX));
        match mode {
            Mode::LargeBatches => {
                let after = Duration::from_micros(rng.range(0, WRITE_KILL_DELAY_US_MAX));
                KillAt::AtWrite(rng.range(1, 2) as u32, after)
            }
            _ if rng.range(0, 3) == 0 => KillAt::SinceSpawn(delay),
            _ => KillAt::SinceOpen(delay),
        }
    }
}

/// A line of the child that the parent times its kill by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Opened,
    Writing,
}

/// What a killed child reported, as the highest offsets it printed.
#[derive(Clone, Copy, Debug, Default)]
struct ChildReport {
    /// The log end the child found when it opened the log.
    opened: Option<Offset>,
    /// The highest `next_offset` of an append that returned.
    wrote: Offset,
    /// The highest offset below which the child knew everything was fsynced.
    acked: Offset,
}

/// The expected value of every record the parent has verified, as a hash.
#[derive(Debug, Default)]
struct Model {
    hashes: Vec<u64>,
}

impl Model {
    fn end(&self) -> Offset {
        Offset(self.hashes.len() as u64)
    }
}

/// What the rounds saw, for the summary line.
#[derive(Debug, Default)]
struct Tally {
    kills: u64,
    kills_before_open: u64,
    rounds_with_acks: u64,
    /// Opens that cut the file after its last whole batch: a torn batch, or the
    /// zeros the writer wrote ahead.
    tails_cut: u64,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

fn parent_seed() -> u64 {
    let from_env = std::env::var(SEED_VAR).ok().and_then(|s| s.parse().ok());
    from_env.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}

#[test]
fn kill9_writer_loses_nothing_acknowledged() -> TestResult {
    let seed = parent_seed();
    println!("seed {seed} (replay the choices with {SEED_VAR}={seed})");
    let dir = tempfile::tempdir()?;
    let mut rng = Rng(seed);
    let mut model = Model::default();
    let mut tally = Tally::default();
    for round in 0..ROUNDS {
        let mode = MODES[(round % MODES.len() as u64) as usize];
        run_round(dir.path(), round, mode, &mut rng, &mut model, &mut tally)
            .map_err(|e| format!("round {round} ({}), seed {seed}: {e}", mode.name()))?;
    }
    println!("{ROUNDS} rounds, log end {}: {tally:?}", model.end());
    ensure!(
        tally.rounds_with_acks >= ROUNDS / 4,
        "only {} of {ROUNDS} rounds acknowledged anything: the kills came too early",
        tally.rounds_with_acks
    );
    Ok(())
}

/// Kills one writer (two in some rounds, the second recovering the first's kill),
/// then opens the log and checks it.
fn run_round(
    dir: &Path,
    round: u64,
    mode: Mode,
    rng: &mut Rng,
    model: &mut Model,
    tally: &mut Tally,
) -> TestResult {
    let lives = if round % 5 == 4 { 2 } else { 1 };
    let mut runs = Vec::new();
    let mut reports = Vec::new();
    for life in 0..lives {
        let run = round * 2 + life;
        let kill_at = KillAt::choose(mode, rng);
        let report = run_child_and_kill(dir, mode, run, rng.next(), kill_at)?;
        println!(
            "round {round} run {run} {} killed {kill_at:?}: {report:?}",
            mode.name()
        );
        check_child_opened(&report, &reports, model)?;
        tally.kills += 1;
        tally.kills_before_open += u64::from(report.opened.is_none());
        runs.push(run);
        reports.push(report);
    }
    let wrote = reports.iter().map(|r| r.wrote).max().unwrap_or_default();
    let acked = reports.iter().map(|r| r.acked).max().unwrap_or_default();
    let file_bytes = segment_file_bytes(dir)?;
    let log = Log::open(dir, config(FlushPolicy::MANUAL))?;
    tally.tails_cut += u64::from(log.size_bytes() < file_bytes);
    let end = log.log_end_offset();
    println!("round {round}: log end {end}, {file_bytes} bytes of segment files");
    ensure!(
        end >= acked,
        "log end {end} is below the acknowledged offset {acked}"
    );
    ensure!(
        end >= wrote,
        "log end {end} is below the returned append's end {wrote}"
    );
    ensure!(
        end >= model.end(),
        "log end {end} is below the verified {}",
        model.end()
    );
    ensure!(
        log.durable_offset() == end,
        "durable offset {} after open",
        log.durable_offset()
    );
    tally.rounds_with_acks += u64::from(acked > model.end());
    verify_log(&log, mode, &runs, model)?;
    // Half the rounds leave no clean-shutdown marker: the next writer scans on open.
    if round.is_multiple_of(2) {
        log.close()?;
    }
    drop(log);
    Ok(())
}

/// A child's open must find everything verified so far and everything the children
/// before it in the round wrote.
fn check_child_opened(report: &ChildReport, earlier: &[ChildReport], model: &Model) -> TestResult {
    let Some(opened) = report.opened else {
        return Ok(());
    };
    ensure!(
        opened >= model.end(),
        "a writer opened the log at {opened}, below the verified end {}",
        model.end()
    );
    for before in earlier {
        ensure!(
            opened >= before.wrote && opened >= before.acked,
            "a writer opened the log at {opened} after a killed one wrote up to {} (acked {})",
            before.wrote,
            before.acked
        );
    }
    Ok(())
}

/// The bytes of every `.log` file, torn tails and zeros written ahead included.
fn segment_file_bytes(dir: &Path) -> TestResult<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.path().extension().is_some_and(|e| e == "log") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

fn run_child_and_kill(
    dir: &Path,
    mode: Mode,
    run: u64,
    seed: u64,
    kill_at: KillAt,
) -> TestResult<ChildReport> {
    let exe = own_executable()?;
    let mut child = Command::new(&exe)
        .args(["--exact", CHILD_TEST, "--ignored", "--nocapture"])
        .env(DIR_VAR, dir)
        .env(MODE_VAR, mode.name())
        .env(RUN_VAR, run.to_string())
        .env(CHILD_SEED_VAR, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", exe.display()))?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let mut stderr = child.stderr.take().ok_or("no child stderr")?;
    let (signals, signalled) = mpsc::channel();
    let lines = thread::spawn(move || read_report(stdout, &signals));
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let waited = wait_for_kill_moment(&signalled, kill_at);
    let status = kill_and_wait(&mut child)?;
    let report = lines.join().map_err(|_| "the stdout reader panicked")?;
    let errors = errors.join().map_err(|_| "the stderr reader panicked")?;
    ensure!(
        status.signal() == Some(SIGKILL),
        "run {run}: the child ended with {status} before it was killed\n\
         stdout: {report:?}\nstderr:\n{errors}"
    );
    waited.map_err(|e| format!("run {run}: {e}; stdout: {report:?}\nstderr:\n{errors}"))?;
    Ok(report)
}

/// Sleeps or waits for the child's lines until it is time to kill it. An error when
/// the child fell silent (it is killed all the same, and its exit explains why).
fn wait_for_kill_moment(signalled: &Receiver<Signal>, kill_at: KillAt) -> TestResult {
    match kill_at {
        KillAt::SinceSpawn(delay) => thread::sleep(delay),
        KillAt::SinceOpen(delay) => {
            wait_for_signal(signalled, Signal::Opened)?;
            thread::sleep(delay);
        }
        KillAt::AtWrite(n, delay) => {
            for _ in 0..n {
                wait_for_signal(signalled, Signal::Writing)?;
            }
            thread::sleep(delay);
        }
    }
    Ok(())
}

fn wait_for_signal(signalled: &Receiver<Signal>, want: Signal) -> TestResult {
    let deadline = Instant::now() + CHILD_SIGNAL_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match signalled.recv_timeout(left) {
            Ok(signal) if signal == want => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("waiting for the child's {want:?}: {e}").into()),
        }
    }
}

/// This test binary. `/proc/self/exe` where there is one: a `cargo test` running
/// beside this one may rebuild the binary under its path while the rounds go on, and
/// the link still reaches the running image.
fn own_executable() -> TestResult<PathBuf> {
    let proc_link = Path::new("/proc/self/exe");
    if proc_link.exists() {
        return Ok(proc_link.to_path_buf());
    }
    Ok(std::env::current_exe()?)
}

/// `Child::kill` sends SIGKILL on Unix.
fn kill_and_wait(child: &mut Child) -> TestResult<std::process::ExitStatus> {
    child.kill()?;
    Ok(child.wait()?)
}

/// Reads the child's lines until the kill closes the pipe, passing on the ones the
/// parent times its kill by. A line cut by the kill parses as a smaller number or
/// not at all, which only weakens the check.
fn read_report(stdout: impl Read, signals: &Sender<Signal>) -> ChildReport {
    let mut report = ChildReport::default();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Some((what, n)) = line.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.trim().parse::<u64>() else {
            continue;
        };
        // The parent may have stopped listening; the report still counts.
        match what {
            "OPENED" => {
                report.opened = Some(Offset(n));
                let _ = signals.send(Signal::Opened);
            }
            "WRITING" => {
                let _ = signals.send(Signal::Writing);
            }
            "WROTE" => report.wrote = report.wrote.max(Offset(n)),
            "ACK" => report.acked = report.acked.max(Offset(n)),
            _ => {}
        }
    }
    report
}

/// Reads the whole log: offsets consecutive from the start, records below the model's
/// end unchanged, and the new ones as the round's writers encoded them. Extends the
/// model with the new records.
fn verify_log(log: &Log, mode: Mode, runs: &[u64], model: &mut Model) -> TestResult {
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    ensure!(
        start == Offset::ZERO,
        "log start {start}: nothing was deleted"
    );
    let mut checker = NewRecords::new(mode, runs);
    let mut from = start;
    while from < end {
        let read = log.read(from, READ_BYTES_MAX, ReadBound::LogEnd)?;
        ensure!(
            read.next_offset() > from,
            "a read at {from} below the end {end} is empty"
        );
        for record in read.records() {
            let record = record?;
            let offset = record.offset.0;
            ensure!(
                offset == from.0,
                "record at offset {offset} where {from} was due"
            );
            match model.hashes.get(offset as usize) {
                Some(hash) => ensure!(
                    fnv1a(record.value) == *hash,
                    "offset {offset} changed: now {:?}",
                    String::from_utf8_lossy(record.value)
                ),
                None => {
                    checker.check(offset, record.value)?;
                    model.hashes.push(fnv1a(record.value));
                }
            }
            from = Offset(offset + 1);
        }
        ensure!(
            read.next_offset() == from,
            "read ends at {} not {from}",
            read.next_offset()
        );
    }
    ensure!(from == end, "read up to {from}, log end {end}");
    Ok(())
}

/// Checks the records a round added: each value names a run of this round, runs
/// never go back, and within a run a single writer's values name their own offset
/// and a group writer's threads number their records 0, 1, 2... with no gap.
struct NewRecords<'a> {
    mode: Mode,
    runs: &'a [u64],
    /// The run of the last record seen.
    run: Option<u64>,
    /// For a group run: the next sequence number of each thread.
    next_seq: Vec<u64>,
}

impl<'a> NewRecords<'a> {
    fn new(mode: Mode, runs: &'a [u64]) -> Self {
        NewRecords {
            mode,
            runs,
            run: None,
            next_seq: vec![0; GROUP_THREADS as usize],
        }
    }

    fn check(&mut self, offset: u64, value: &[u8]) -> TestResult {
        let text = std::str::from_utf8(value).map_err(|_| format!("offset {offset}: not UTF-8"))?;
        let fields: Vec<&str> = text.split(':').collect();
        let shown = text.get(..text.len().min(40)).unwrap_or_default();
        let run = field(&fields, 0, 'r').ok_or_else(|| format!("offset {offset}: {shown:?}"))?;
        ensure!(
            self.runs.contains(&run),
            "offset {offset}: run {run} is not of this round"
        );
        ensure!(
            self.run <= Some(run),
            "offset {offset}: run {run} after run {:?}",
            self.run
        );
        if self.run != Some(run) {
            self.run = Some(run);
            self.next_seq.fill(0);
        }
        let filler = fields.last().copied().unwrap_or_default();
        ensure!(
            filler.bytes().all(|b| b == b'x'),
            "offset {offset}: bad filler in {shown:?}"
        );
        match self.mode {
            Mode::GroupCommit => self.check_group(offset, &fields, shown),
            _ => {
                let named = field(&fields, 1, 'o');
                ensure!(named == Some(offset), "offset {offset} holds {shown:?}");
                Ok(())
            }
        }
    }

    fn check_group(&mut self, offset: u64, fields: &[&str], shown: &str) -> TestResult {
        let (Some(thread), Some(seq)) = (field(fields, 1, 't'), field(fields, 2, 's')) else {
            return Err(format!("offset {offset}: {shown:?} is not a group value").into());
        };
        let next = self
            .next_seq
            .get_mut(thread as usize)
            .ok_or_else(|| format!("offset {offset}: thread {thread} in {shown:?}"))?;
        ensure!(
            seq == *next,
            "offset {offset}: thread {thread} seq {seq}, expected {next}"
        );
        *next += 1;
        Ok(())
    }
}

/// The number after `tag` in field `i`, as in `r12` or `o345`.
fn field(fields: &[&str], i: usize, tag: char) -> Option<u64> {
    fields.get(i)?.strip_prefix(tag)?.parse().ok()
}
