//! A small seeded random number generator (SplitMix64), so a failing scenario can be
//! replayed: every scenario prints its seed, and `SYSTEM_TESTS_SEED=<seed>` reuses it.

use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable that fixes the seed of a run.
pub const SEED_ENV: &str = "SYSTEM_TESTS_SEED";

/// The seed of this run: `SYSTEM_TESTS_SEED` when set, else taken from the clock.
/// Printed either way, with the line that replays it.
pub fn seed() -> anyhow::Result<u64> {
    let seed = match std::env::var(SEED_ENV) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{SEED_ENV}={text:?} is not a u64: {e}"))?,
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed),
    };
    println!("seed: {seed} (replay with {SEED_ENV}={seed})");
    Ok(seed)
}

/// SplitMix64: tiny, fast, and good enough to pick delays and keys.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator that yields the same numbers for the same seed.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[low, high)`; `low` when the range is empty.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next_u64() % (high - low)
    }

    /// An independent generator derived from this one, e.g. one per task.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}
