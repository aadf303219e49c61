//! Routing key -> partition: Kafka's murmur2 hash, so a key lands on the partition a
//! Kafka producer would pick, and messages of one key stay in order.

use std::sync::atomic::{AtomicU64, Ordering};

/// Kafka's murmur2 (seed `0x9747b28c`) of `data`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ (data.len() as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match *tail {
        [a, b, c] => {
            h ^= u32::from(c) << 16;
            h ^= u32::from(b) << 8;
            h ^= u32::from(a);
            h = h.wrapping_mul(M);
        }
        [a, b] => {
            h ^= u32::from(b) << 8;
            h ^= u32::from(a);
            h = h.wrapping_mul(M);
        }
        [a] => {
            h ^= u32::from(a);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of a message with routing key `key` among `partitions` (at least
/// one): `(murmur2(key) & 0x7fffffff) % partitions`, as Kafka's default partitioner.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// The partition a message goes to among `partitions`: by its key's hash
/// ([`partition_for_key`]), or without a key each in turn, counted by `keyless`.
/// With one partition, no shared counter is bumped (and contended for) per message.
pub fn route(key: Option<&[u8]>, partitions: u32, keyless: &AtomicU64) -> u32 {
    match key {
        Some(key) => partition_for_key(key, partitions),
        None if partitions <= 1 => 0,
        None => (keyless.fetch_add(1, Ordering::Relaxed) % u64::from(partitions)) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Expected values from Kafka's UtilsTest.testMurmur2.
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input.as_bytes()) as i32, expected, "{input}");
        }
    }

    #[test]
    fn keys_spread_and_stay_put() {
        let mut seen = [0u32; 4];
        for i in 0..1000 {
            let key = format!("key-{i}");
            let p = partition_for_key(key.as_bytes(), 4);
            assert_eq!(p, partition_for_key(key.as_bytes(), 4));
            seen[p as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
    }
}
