//! The fuzz targets on stable Rust: every file of `fuzz/corpus/<target>/` goes through
//! its entry point in `log_engine::fuzzing`, then deterministic random mutations of
//! each file do. Nothing may panic.
//!
//! The mutations come from a SplitMix64 generator whose seed is printed; set
//! `FUZZ_CORPUS_SEED` to replay a run and `FUZZ_CORPUS_MUTATIONS` to change how many
//! mutations each file gets. An input that panics is written under the target's tmp
//! directory, to be kept as a corpus file once the bug is understood.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use log_engine::fuzzing;

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// The generator's seed unless `FUZZ_CORPUS_SEED` says otherwise: fixed, so that CI
/// runs are reproducible.
const SEED_DEFAULT: u64 = 0x5eed_1096_f022_c0de;
/// Mutated inputs stay below this size, well above the largest seed.
const INPUT_BYTES_MAX: usize = 128 << 10;
/// The most edits one mutation stacks up.
const EDITS_MAX: u64 = 4;
/// Seeds are replayed on this many threads at most.
const THREADS_MAX: usize = 8;
/// A thread stops after this many panicking inputs: one bug tends to make many, and
/// a few saved inputs are enough to chase it.
const FAILURES_MAX: usize = 10;

/// A fuzz target: its corpus directory name and its entry point.
#[derive(Clone, Copy)]
struct Target {
    name: &'static str,
    run: fn(&[u8]),
    /// Mutations of each corpus file unless `FUZZ_CORPUS_MUTATIONS` says otherwise.
    mutations_default: u64,
    /// Where the batches start in an input, so that a mutation can fix their CRCs.
    batches_at: fn(&[u8]) -> usize,
}

const DECODE_BATCH: Target = Target {
    name: "decode_batch",
    run: fuzzing::decode_batch,
    mutations_default: 2000,
    batches_at: |_| 0,
};

const OPEN_LOG_DIR: Target = Target {
    name: "open_log_dir",
    run: fuzzing::open_log_dir,
    // Each input opens, closes and reopens a log up to six times (two layouts, three
    // shutdown states): a few milliseconds in a debug build, so 300 mutations of each
    // of its ~30 files take 30 to 45 seconds.
    mutations_default: 300,
    batches_at: |data| {
        let (index, _) = fuzzing::split_log_dir_input(data);
        (1 + index.len()).min(data.len())
    },
};

#[test]
fn decode_batch_corpus_never_panics() -> Result {
    replay(DECODE_BATCH)
}

#[test]
fn open_log_dir_corpus_never_panics() -> Result {
    replay(OPEN_LOG_DIR)
}

fn corpus_dir(target: &Target) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().unwrap_or(manifest);
    root.join("fuzz/corpus").join(target.name)
}

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            Ok(parsed.map_err(|e| format!("{name}={text:?}: {e}"))?)
        }
        Err(_) => Ok(default),
    }
}

/// Reads the corpus, runs every file as it is, then its mutations; fails listing
/// every input that panicked.
fn replay(target: Target) -> Result {
    let seed = env_u64("FUZZ_CORPUS_SEED", SEED_DEFAULT)?;
    let mutations = env_u64("FUZZ_CORPUS_MUTATIONS", target.mutations_default)?;
    println!(
        "{}: seed {seed:#018x}, {mutations} mutations per file \
         (FUZZ_CORPUS_SEED / FUZZ_CORPUS_MUTATIONS to change)",
        target.name
    );
    let corpus = read_corpus(&corpus_dir(&target))?;
    if corpus.len() < 10 {
        return Err(format!("{}: only {} corpus files", target.name, corpus.len()).into());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, THREADS_MAX);
    let chunk = corpus.len().div_ceil(threads);
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = corpus
            .chunks(chunk)
            .map(|files| scope.spawn(|| replay_files(target, files, &corpus, seed, mutations)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec!["a replay thread died".into()])
            })
            .collect()
    });
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {} inputs panicked (seed {seed:#018x}):\n{}",
            target.name,
            failures.len(),
            failures.join("\n")
        )
        .into())
    }
}

fn read_corpus(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, std::fs::read(&path)?));
        }
    }
    files.sort();
    Ok(files)
}

/// Runs `files` and their mutations; returns a line per input that panicked.
fn replay_files(
    target: Target,
    files: &[(String, Vec<u8>)],
    corpus: &[(String, Vec<u8>)],
    seed: u64,
    mutations: u64,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, bytes) in files {
        failures.extend(run_one(target, bytes, name));
        let mut rng = Rng::new(seed ^ fnv1a(name.as_bytes()));
        for i in 0..mutations {
            if failures.len() >= FAILURES_MAX {
                failures.push(format!("  (stopped after {FAILURES_MAX} failures)"));
                return failures;
            }
            let input = mutate(&target, bytes, corpus, &mut rng);
            failures.extend(run_one(target, &input, &format!("{name}.mutation-{i}")));
        }
    }
    failures
}

/// Runs one input; on a panic, saves it and describes it.
fn run_one(target: Target, input: &[u8], label: &str) -> Option<String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let panic = outcome.err()?;
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    let saved = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz_corpus-failures")
        .join(target.name)
        .join(label);
    let written = saved
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&saved, input));
    let where_ = match written {
        Ok(()) => format!("saved to {}", saved.display()),
        Err(e) => format!("not saved: {e}"),
    };
    Some(format!("  {label}: {message} ({where_})"))
}

/// SplitMix64: small, fast and good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; 0 when `n` is 0.
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Values that sit on the edges of the format's checks.
const INTERESTING_U32: [u32; 8] = [0, 1, 7, 52, 0x7f, 0x7fff_ffff, 0xffff_fffe, u32::MAX];
const INTERESTING_U64: [u64; 6] = [
    0,
    1,
    u32::MAX as u64,
    i64::MAX as u64,
    u64::MAX - 1,
    u64::MAX,
];

/// One to `EDITS_MAX` random edits of `seed`; half the time the CRCs of the batches
/// are fixed afterwards, so that the damage reaches past the CRC check.
fn mutate(target: &Target, seed: &[u8], corpus: &[(String, Vec<u8>)], rng: &mut Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    let edits = 1 + rng.next() % EDITS_MAX;
    for _ in 0..edits {
        edit(&mut data, corpus, rng);
    }
    data.truncate(INPUT_BYTES_MAX);
    if rng.chance(2) {
        let start = (target.batches_at)(&data);
        reseal_all(data.get_mut(start..).unwrap_or_default());
    }
    data
}

fn edit(data: &mut Vec<u8>, corpus: &[(String, Vec<u8>)], rng: &mut Rng) {
    let len = data.len();
    let at = rng.below(len);
    match rng.next() % 11 {
        0 => {
            if let Some(b) = data.get_mut(at) {
                *b ^= 1 << (rng.next() % 8);
            }
        }
        1 => {
            if let Some(b) = data.get_mut(at) {
                *b = rng.next() as u8;
            }
        }
        2 => {
            if let Some(b) = data.get_mut(at) {
                *b = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)];
            }
        }
        3 => {
            let value = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
            overwrite(data, at, &value.to_le_bytes());
        }
        4 => {
            let value = INTERESTING_U64[rng.below(INTERESTING_U64.len())];
            overwrite(data, at, &value.to_le_bytes());
        }
        5 => data.truncate(at),
        6 => {
            let end = (at + 1 + rng.below(64)).min(len);
            data.drain(at..end);
        }
        7 => {
            let bytes: Vec<u8> = (0..1 + rng.below(64)).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        8 => {
            let from = rng.below(len);
            let end = (from + 1 + rng.below(256)).min(len);
            let chunk = data.get(from..end).unwrap_or_default().to_vec();
            data.splice(at..at, chunk);
        }
        9 => {
            let (_, other) = &corpus[rng.below(corpus.len())];
            let from = rng.below(other.len());
            data.truncate(at);
            data.extend_from_slice(other.get(from..).unwrap_or_default());
        }
        _ => {
            let end = (at + 1 + rng.below(512)).min(len);
            data.get_mut(at..end).unwrap_or_default().fill(0);
        }
    }
}

/// Writes `value` at `at`, as far as `data` reaches.
fn overwrite(data: &mut [u8], at: usize, value: &[u8]) {
    for (dst, src) in data.iter_mut().skip(at).zip(value) {
        *dst = *src;
    }
}

/// Recomputes the CRC of every whole batch laid back to back in `bytes`, stepping by
/// each header's length field, until one does not fit.
fn reseal_all(bytes: &mut [u8]) {
    let mut at = 0usize;
    while let Some(length) = bytes.get(at + 8..at + 12) {
        let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let end = at + 12 + length;
        let Some(batch) = bytes.get_mut(at..end) else {
            break;
        };
        if length >= 4 {
            let crc = crc32fast::hash(&batch[16..]);
            batch[12..16].copy_from_slice(&crc.to_le_bytes());
        }
        at = end;
    }
}
