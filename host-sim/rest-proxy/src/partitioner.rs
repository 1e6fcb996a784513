//! Partition choice as the Kafka Java producer makes it: a keyed record goes to
//! `toPositive(murmur2(key)) % partitions` (`BuiltInPartitioner.partitionForKey`), an explicit
//! partition is honoured, and an unkeyed record goes round robin per topic (the Java client's
//! `RoundRobinPartitioner`; its default "sticky" batching has no meaning one request at a time).

use std::collections::HashMap;
use std::sync::Mutex;

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with seed `0x9747b28c`, as a signed Java int.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java computes in wrapping 32-bit ints; the length is an int too (keys are far below 2^31).
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(n: i32) -> u32 {
    (n & 0x7fff_ffff) as u32
}

/// The partition of a keyed record among `partitions` (> 0).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    to_positive(murmur2(key)) % partitions.max(1)
}

/// Round-robin counters per topic for unkeyed records.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: Mutex<HashMap<String, u32>>,
}

impl RoundRobin {
    /// The next partition of `topic` among `partitions` (> 0).
    pub fn next(&self, topic: &str, partitions: u32) -> u32 {
        let partitions = partitions.max(1);
        let mut next = match self.next.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let counter = next.entry(topic.to_string()).or_insert(0);
        let chosen = *counter % partitions;
        *counter = counter.wrapping_add(1);
        chosen
    }

    /// Forgets the counter of `topic` (after the topic is deleted).
    pub fn forget(&self, topic: &str) {
        let mut next = match self.next.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        next.remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "key {:?}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn to_positive_clears_the_sign_bit() {
        assert_eq!(to_positive(-1), 0x7fff_ffff);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(5), 5);
    }

    #[test]
    fn keyed_partition_is_stable_and_in_range() {
        for n in 1..20 {
            let p = partition_for_key(b"user-42", n);
            assert!(p < n);
            assert_eq!(p, partition_for_key(b"user-42", n));
        }
        // toPositive(-790332482) % 3 for "foobar".
        assert_eq!(
            partition_for_key(b"foobar", 3),
            (-790_332_482i32 & 0x7fff_ffff) as u32 % 3
        );
        assert_eq!(partition_for_key(b"", 1), 0);
    }

    #[test]
    fn round_robin_cycles_per_topic() {
        let rr = RoundRobin::default();
        let a: Vec<u32> = (0..5).map(|_| rr.next("a", 3)).collect();
        assert_eq!(a, vec![0, 1, 2, 0, 1]);
        assert_eq!(rr.next("b", 3), 0);
        rr.forget("a");
        assert_eq!(rr.next("a", 3), 0);
        assert_eq!(rr.next("z", 0), 0);
    }
}
