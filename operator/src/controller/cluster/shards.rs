//! The cluster's RoomShard objects: one per shard, named `<cluster>-shard-NNNN`, owned by the
//! cluster, with the hash range of `switchboard_contract::shard::hash_range`. Only the spec is built
//! here; the shard status (owner, epoch, phase) belongs to the assignment reconciler.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use switchboard_contract::shard::hash_range;

use crate::controller::labels::{self, common_labels};
use crate::controller::{Error, Result};
use crate::crd::{RoomShard, RoomShardSpec, SignalingCluster};

/// Name of shard `index` of `cluster` (zero-padded so `kubectl get` lists shards in order).
pub fn shard_name(cluster: &str, index: u32) -> String {
    format!("{cluster}-shard-{index:04}")
}

/// Every RoomShard of `cluster`, in index order.
pub fn room_shards(cluster: &SignalingCluster) -> Result<Vec<RoomShard>> {
    let super::Identity {
        name,
        namespace,
        owner,
    } = super::identity(cluster)?;
    let (name, namespace) = (name.as_str(), namespace.as_str());
    let count = u32::try_from(cluster.spec.shards)
        .ok()
        .filter(|c| (1..=4096).contains(c))
        .ok_or_else(|| {
            Error::InvalidSpec(format!(
                "shards must be between 1 and 4096, not {}",
                cluster.spec.shards
            ))
        })?;
    (0..count)
        .map(|index| {
            let (start, end) = hash_range(index, count);
            let mut labels: BTreeMap<String, String> = common_labels(name, "shard");
            labels.insert(labels::SHARD.into(), index.to_string());
            let to_i64 = |v: u64| {
                i64::try_from(v)
                    .map_err(|_| Error::InvalidSpec(format!("hash bound {v} overflows")))
            };
            Ok(RoomShard {
                metadata: ObjectMeta {
                    name: Some(shard_name(name, index)),
                    namespace: Some(namespace.to_string()),
                    labels: Some(labels),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                spec: RoomShardSpec {
                    cluster: name.to_string(),
                    index: i32::try_from(index).unwrap_or(i32::MAX),
                    hash_start: to_i64(start)?,
                    hash_end: to_i64(end)?,
                },
                status: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cluster::testing::cluster;

    #[test]
    fn shards_tile_the_hash_space_and_are_owned() {
        let shards = room_shards(&cluster(3, 16)).unwrap();
        assert_eq!(shards.len(), 16);
        assert_eq!(shards[0].metadata.name.as_deref(), Some("demo-shard-0000"));
        assert_eq!(shards[15].metadata.name.as_deref(), Some("demo-shard-0015"));
        let mut next = 0i64;
        for (i, shard) in shards.iter().enumerate() {
            assert_eq!(shard.spec.index, i as i32);
            assert_eq!(shard.spec.cluster, "demo");
            assert_eq!(shard.spec.hash_start, next);
            assert!(shard.spec.hash_end > shard.spec.hash_start);
            next = shard.spec.hash_end;
            assert_eq!(
                shard.metadata.labels.as_ref().unwrap()[labels::SHARD],
                i.to_string()
            );
            assert_eq!(
                shard.metadata.owner_references.as_ref().unwrap()[0].controller,
                Some(true)
            );
        }
        assert_eq!(next, 1i64 << 32);
    }

    #[test]
    fn a_room_hashes_into_the_shard_whose_range_holds_it() {
        let shards = room_shards(&cluster(3, 7)).unwrap();
        for room in ["lobby", "a", "studio-42", ""] {
            let hash = i64::from(switchboard_contract::shard::room_hash(room));
            let owner = switchboard_contract::shard::shard_of(room, 7) as usize;
            let spec = &shards[owner].spec;
            assert!(spec.hash_start <= hash && hash < spec.hash_end, "{room}");
        }
    }

    #[test]
    fn out_of_range_counts_are_errors() {
        let mut c = cluster(3, 16);
        c.spec.shards = 5000;
        assert!(matches!(room_shards(&c), Err(Error::InvalidSpec(_))));
        c.spec.shards = 0;
        assert!(matches!(room_shards(&c), Err(Error::InvalidSpec(_))));
    }
}
