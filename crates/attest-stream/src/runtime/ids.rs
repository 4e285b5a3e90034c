//! Deterministic output ids and the stable key hash used for partitioning.

use uuid::Uuid;

/// Namespace of every output id (a fixed, random UUID: ids are UUIDv5 names inside it).
const OUTPUT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a7e_93b4_4d0f_a5e1_7c3b_2d94_e801);

/// The output channel an emitted record belongs to; each has its own sequence counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Operator results.
    Output,
    /// Records that arrived after their window closed.
    Late,
    /// Input records that could not be decoded.
    DeadLetter,
}

impl Channel {
    fn tag(self) -> &'static str {
        match self {
            Channel::Output => "out",
            Channel::Late => "late",
            Channel::DeadLetter => "dlq",
        }
    }
}

/// The id of the `seq`-th record of `channel` emitted by shard `shard` of job `job`.
///
/// A UUIDv5 of `(job, shard, channel, seq)`: the same job replaying the same input after a
/// crash produces the same ids, which is what lets sinks drop the copies.
pub fn output_id(job: &str, shard: u32, channel: Channel, seq: u64) -> Uuid {
    let mut name = Vec::with_capacity(job.len() + 32);
    name.extend_from_slice(job.as_bytes());
    name.push(0);
    name.extend_from_slice(&shard.to_be_bytes());
    name.extend_from_slice(channel.tag().as_bytes());
    name.push(0);
    name.extend_from_slice(&seq.to_be_bytes());
    Uuid::new_v5(&OUTPUT_NAMESPACE, &name)
}

/// 64-bit FNV-1a: a hash that is the same in every process, build and Rust version (unlike
/// `std`'s `DefaultHasher`), so every process agrees on a key's partition.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche (from MurmurHash3's fmix64) so that nearby keys spread over partitions.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The partition (of `partitions`, at least 1) that `key` belongs to.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    let n = u64::from(partitions.max(1));
    // The remainder is below `partitions`, so it fits in a u32.
    (stable_hash(key) % n) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = output_id("job", 0, Channel::Output, 7);
        assert_eq!(a, output_id("job", 0, Channel::Output, 7));
        assert_ne!(a, output_id("job", 1, Channel::Output, 7));
        assert_ne!(a, output_id("job", 0, Channel::Late, 7));
        assert_ne!(a, output_id("job", 0, Channel::Output, 8));
        assert_ne!(a, output_id("jo", 0, Channel::Output, 7));
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        // Pinned value: a change of the hash would move every key to another partition.
        assert_eq!(stable_hash(b"product-1"), 1_686_415_483_398_670_283);
        assert_eq!(partition_of(b"product-1", 8), 3);
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[partition_of(format!("k{i}").as_bytes(), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
