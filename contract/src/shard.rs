//! Room → shard routing: a stable hash of the room id mapped onto equal hash ranges.
//!
//! The hash is FNV-1a (32 bit) of the room id's UTF-8 bytes: stable across versions, platforms
//! and languages, so every node, the operator and the kubectl plugin agree without talking.
//! Shard `i` of `n` owns the hash range `[i * 2^32 / n, (i + 1) * 2^32 / n)`.

/// Index of a shard within its cluster (`0..shard_count`).
pub type ShardId = u32;

/// The stable 32-bit hash of a room id (FNV-1a).
pub fn room_hash(room: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in room.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The shard that owns `room` in a cluster of `shard_count` shards (`shard_count > 0`).
pub fn shard_of(room: &str, shard_count: u32) -> ShardId {
    shard_for_hash(room_hash(room), shard_count)
}

/// The shard whose hash range contains `hash`.
pub fn shard_for_hash(hash: u32, shard_count: u32) -> ShardId {
    let count = u64::from(shard_count.max(1));
    ((u64::from(hash) * count) >> 32) as ShardId
}

/// The inclusive start and exclusive end of shard `shard`'s hash range, as u64 so the last
/// range can end at 2^32.
pub fn hash_range(shard: ShardId, shard_count: u32) -> (u64, u64) {
    let count = u64::from(shard_count.max(1));
    let start = (u64::from(shard) << 32).div_ceil(count);
    let end = ((u64::from(shard) + 1) << 32).div_ceil(count);
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_fnv1a() {
        assert_eq!(room_hash(""), 0x811c_9dc5);
        assert_eq!(room_hash("a"), 0xe40c_292c);
        assert_eq!(room_hash("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn every_hash_falls_in_its_shards_range() {
        for count in [1u32, 2, 3, 7, 16, 1000] {
            for hash in [0u32, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX, 123_456_789] {
                let shard = shard_for_hash(hash, count);
                assert!(shard < count);
                let (start, end) = hash_range(shard, count);
                assert!(
                    start <= u64::from(hash) && u64::from(hash) < end,
                    "{hash} {count}"
                );
            }
        }
    }

    #[test]
    fn ranges_tile_the_hash_space() {
        for count in [1u32, 3, 16, 1000] {
            let mut next = 0u64;
            for shard in 0..count {
                let (start, end) = hash_range(shard, count);
                assert_eq!(start, next);
                assert!(end > start);
                next = end;
            }
            assert_eq!(next, 1u64 << 32);
        }
    }
}
