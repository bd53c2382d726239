//! Pure shard placement and weight math (no I/O): pool sizes and shard shares by weight
//! (largest remainder), shard → version by rendezvous hashing, shard → node balanced within a
//! version pool, and move plans that limit simultaneous handoffs.
//!
//! Every function is deterministic: the same inputs give the same output on every platform
//! (ties break by version order, shard index or node name; hashes are FNV-1a + SplitMix64).
//! Stability is the design goal: a shard moves only when it must — its owner is gone, its
//! node holds more than its balanced share, or its version holds more than its weighted share.

use std::collections::{BTreeMap, BTreeSet};

pub use switchboard_contract::shard::ShardId;

/// Most shards a cluster may have (the CRD's limit); bounds every allocation here.
pub const MAX_SHARDS: u32 = 4096;

/// Errors of inputs that no placement can satisfy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// No version has a positive weight, so no shard can be given a version.
    #[error("no version has a positive weight")]
    NoWeight,
    /// Two versions share a name.
    #[error("version {0:?} is listed more than once")]
    DuplicateVersion(String),
    /// More shards than [`MAX_SHARDS`].
    #[error("{0} shards is more than the limit of {MAX_SHARDS}")]
    TooManyShards(u32),
}

/// A version pool and its weight (any scale; shares are relative to the sum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionWeight {
    /// Version name.
    pub name: String,
    /// Relative weight (percent in manifests).
    pub weight: u32,
}

impl VersionWeight {
    /// A version with `weight`.
    pub fn new(name: impl Into<String>, weight: u32) -> Self {
        Self {
            name: name.into(),
            weight,
        }
    }
}

/// A signaling node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// Pod name (the node's identity in etcd and in assignments).
    pub name: String,
    /// Version pool the node belongs to (only [`place`] reads it).
    pub version: String,
    /// The node is registered and its pod passes readiness.
    pub ready: bool,
    /// The node is draining (shutting down); it must not receive shards.
    pub draining: bool,
    /// Reported load (e.g. connections); breaks ties between equally loaded nodes.
    pub load: u64,
}

impl NodeState {
    /// Whether shards may be placed on this node.
    pub fn eligible(&self) -> bool {
        self.ready && !self.draining
    }
}

/// Splits `total` by `weights` with the largest-remainder method; leftover units go to the
/// largest fractional remainders, ties to the earlier version. All zeros when no weight is
/// positive.
pub fn largest_remainder(total: u32, weights: &[u32]) -> Vec<u32> {
    let sum: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let total = u64::from(total);
    let mut counts: Vec<u32> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(u64, usize)> = Vec::with_capacity(weights.len());
    for (index, weight) in weights.iter().enumerate() {
        let exact = total * u64::from(*weight);
        // exact / sum <= total, which fits in u32.
        counts.push(u32::try_from(exact / sum).unwrap_or(u32::MAX));
        remainders.push((exact % sum, index));
    }
    let given: u64 = counts.iter().map(|c| u64::from(*c)).sum();
    let leftover = usize::try_from(total - given).unwrap_or(usize::MAX);
    // Largest remainder first; equal remainders in version order.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, index) in remainders.into_iter().take(leftover) {
        counts[index] += 1;
    }
    counts
}

/// Like [`largest_remainder`], and every version with a positive weight gets at least one
/// unit when `total` is at least the number of such versions (a canary always gets a node and
/// a shard). Units for that come from the largest share (ties: the later version).
pub fn apportion(total: u32, weights: &[u32]) -> Vec<u32> {
    let mut counts = largest_remainder(total, weights);
    let positive = weights.iter().filter(|w| **w > 0).count();
    if usize::try_from(total).unwrap_or(usize::MAX) < positive {
        return counts;
    }
    for index in 0..weights.len() {
        if weights[index] == 0 || counts[index] > 0 {
            continue;
        }
        // Pigeonhole: total >= positive versions and one of them has 0, so some share is >= 2.
        // `max_by_key` returns the last maximum: ties go to the later version.
        let donor = (0..counts.len()).max_by_key(|&i| counts[i]);
        if let Some(donor) = donor.filter(|&d| counts[d] >= 2) {
            counts[donor] -= 1;
            counts[index] = 1;
        }
    }
    counts
}

/// Number of nodes of each version pool for `replicas` nodes in total (see [`apportion`]).
pub fn pool_sizes(replicas: u32, weights: &[u32]) -> Vec<u32> {
    apportion(replicas, weights)
}

/// Number of shards each version serves out of `shard_count` (see [`apportion`]).
pub fn shard_counts(shard_count: u32, weights: &[u32]) -> Vec<u32> {
    apportion(shard_count, weights)
}

/// The rendezvous (highest random weight) score of `shard` on `key` (a version or node name).
pub fn rendezvous_score(shard: ShardId, key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(hash ^ mix64(u64::from(shard).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// SplitMix64 finalizer: spreads FNV's weak low bits over the whole word.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Orders candidates by descending rendezvous score, ties by ascending shard then key.
fn by_score(shard: ShardId, key: &str) -> (std::cmp::Reverse<u64>, ShardId) {
    (std::cmp::Reverse(rendezvous_score(shard, key)), shard)
}

/// The version of every shard `0..shard_count`, given the versions' weights and each shard's
/// current version (`current[i]` for shard `i`; missing entries count as none).
///
/// Each version gets [`shard_counts`] shards. A shard keeps its current version while that
/// version is not over its target; a version over target keeps its shards with the highest
/// rendezvous score and releases the rest; released and version-less shards go to versions
/// under target, each to the one it scores highest on. So a weight edit moves exactly the
/// surplus, and nothing else.
pub fn assign_versions(
    shard_count: u32,
    versions: &[VersionWeight],
    current: &[Option<String>],
) -> Result<Vec<String>, PlacementError> {
    if shard_count > MAX_SHARDS {
        return Err(PlacementError::TooManyShards(shard_count));
    }
    check_versions(versions)?;
    let weights: Vec<u32> = versions.iter().map(|v| v.weight).collect();
    let targets = shard_counts(shard_count, &weights);
    let index_of: BTreeMap<&str, usize> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();

    let mut members: Vec<Vec<ShardId>> = vec![Vec::new(); versions.len()];
    for shard in 0..shard_count {
        let name = current.get(shard as usize).and_then(|c| c.as_deref());
        if let Some(&version) = name.and_then(|n| index_of.get(n)) {
            members[version].push(shard);
        }
    }
    let mut assigned: Vec<Option<usize>> = vec![None; shard_count as usize];
    let mut deficit: Vec<u32> = Vec::with_capacity(versions.len());
    for (version, shards) in members.iter_mut().enumerate() {
        let name = versions[version].name.as_str();
        shards.sort_by_key(|&shard| by_score(shard, name));
        shards.truncate(targets[version] as usize);
        for &shard in shards.iter() {
            assigned[shard as usize] = Some(version);
        }
        deficit.push(targets[version] - shards.len() as u32);
    }
    // Free shards (released or never assigned) pick the best-scoring version with room.
    for shard in 0..shard_count {
        if assigned[shard as usize].is_some() {
            continue;
        }
        let best = (0..versions.len())
            .filter(|&v| deficit[v] > 0)
            .min_by_key(|&v| (by_score(shard, &versions[v].name), v));
        if let Some(version) = best {
            deficit[version] -= 1;
            assigned[shard as usize] = Some(version);
        }
    }
    // Targets sum to shard_count and a positive weight exists, so every shard has a version.
    Ok(assigned
        .into_iter()
        .map(|v| v.map(|v| versions[v].name.clone()).unwrap_or_default())
        .collect())
}

fn check_versions(versions: &[VersionWeight]) -> Result<(), PlacementError> {
    let mut seen = BTreeSet::new();
    for version in versions {
        if !seen.insert(version.name.as_str()) {
            return Err(PlacementError::DuplicateVersion(version.name.clone()));
        }
    }
    if versions.iter().all(|v| v.weight == 0) {
        return Err(PlacementError::NoWeight);
    }
    Ok(())
}

/// Owners for the shards of one version pool: balanced over the pool's eligible (ready, not
/// draining) nodes so that counts differ by at most one, and stable.
///
/// A shard stays on its current owner while that owner is eligible and not over its share.
/// The nodes allowed the larger share (`ceil`) are those already holding the most shards
/// (then the least loaded, then by name), which makes the number of moved shards minimal:
/// removing a node moves only its shards, adding one moves only what the new node takes.
/// Shards to place go to the under-share node they score highest on. With no eligible node,
/// every shard maps to `None`.
pub fn assign_nodes(
    shards: &[ShardId],
    nodes: &[NodeState],
    current: &BTreeMap<ShardId, String>,
) -> BTreeMap<ShardId, Option<String>> {
    let shards: BTreeSet<ShardId> = shards.iter().copied().collect();
    let mut eligible: BTreeMap<&str, &NodeState> = BTreeMap::new();
    for node in nodes.iter().filter(|n| n.eligible()) {
        eligible.entry(node.name.as_str()).or_insert(node);
    }
    if eligible.is_empty() {
        return shards.into_iter().map(|s| (s, None)).collect();
    }
    let total = shards.len();
    let floor = total / eligible.len();
    let ceil_slots = total % eligible.len();

    let mut kept: BTreeMap<&str, Vec<ShardId>> =
        eligible.keys().map(|n| (*n, Vec::new())).collect();
    for &shard in &shards {
        if let Some(list) = current
            .get(&shard)
            .and_then(|owner| kept.get_mut(owner.as_str()))
        {
            list.push(shard);
        }
    }
    let mut ranked: Vec<&str> = eligible.keys().copied().collect();
    ranked.sort_by_key(|name| {
        (
            std::cmp::Reverse(kept[name].len()),
            eligible[name].load,
            *name,
        )
    });
    let quota: BTreeMap<&str, usize> = ranked
        .iter()
        .enumerate()
        .map(|(rank, name)| (*name, floor + usize::from(rank < ceil_slots)))
        .collect();

    let mut result: BTreeMap<ShardId, Option<String>> = BTreeMap::new();
    let mut room: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, list) in &mut kept {
        list.sort_by_key(|&shard| by_score(shard, name));
        list.truncate(quota[name]);
        for &shard in list.iter() {
            result.insert(shard, Some((*name).to_string()));
        }
        room.insert(name, quota[name] - list.len());
    }
    for &shard in &shards {
        if result.contains_key(&shard) {
            continue;
        }
        let best = room
            .iter()
            .filter(|(_, free)| **free > 0)
            .map(|(name, _)| *name)
            .min_by_key(|name| by_score(shard, name));
        if let Some(name) = best {
            if let Some(free) = room.get_mut(name) {
                *free -= 1;
            }
            result.insert(shard, Some(name.to_string()));
        }
    }
    result
}

/// Where every shard should be: its version and, when its pool has an eligible node, its
/// owner. `current` holds each shard's current (version, owner), indexed by shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The shard's version pool.
    pub version: String,
    /// The shard's owner, or `None` when the pool has no eligible node.
    pub node: Option<String>,
}

/// What a shard has now, as input to [`place`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentShard {
    /// Version pool the shard is assigned to.
    pub version: Option<String>,
    /// Node that owns it (live or not).
    pub node: Option<String>,
}

/// Versions by weight ([`assign_versions`]), then owners within each version pool
/// ([`assign_nodes`], nodes grouped by [`NodeState::version`]).
pub fn place(
    shard_count: u32,
    versions: &[VersionWeight],
    nodes: &[NodeState],
    current: &[CurrentShard],
) -> Result<Vec<Placement>, PlacementError> {
    let current_versions: Vec<Option<String>> = current.iter().map(|c| c.version.clone()).collect();
    let shard_versions = assign_versions(shard_count, versions, &current_versions)?;
    let mut placements: Vec<Placement> = shard_versions
        .iter()
        .map(|v| Placement {
            version: v.clone(),
            node: None,
        })
        .collect();
    for version in versions {
        let shards: Vec<ShardId> = (0..shard_count)
            .filter(|&s| shard_versions[s as usize] == version.name)
            .collect();
        let pool: Vec<NodeState> = nodes
            .iter()
            .filter(|n| n.version == version.name)
            .cloned()
            .collect();
        let owners: BTreeMap<ShardId, String> = shards
            .iter()
            .filter_map(|&s| {
                current
                    .get(s as usize)
                    .and_then(|c| c.node.clone())
                    .map(|n| (s, n))
            })
            .collect();
        for (shard, node) in assign_nodes(&shards, &pool, &owners) {
            placements[shard as usize].node = node;
        }
    }
    Ok(placements)
}

/// Why a shard moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MoveKind {
    /// The shard has no owner (new shard or failover): placed at once, never throttled.
    Place,
    /// The owner is leaving (draining, not ready): handed off at once, never throttled.
    Evacuate,
    /// The owner is fine but the plan wants the shard elsewhere (weight change, new node):
    /// a handoff, throttled by `max_moving`.
    Rebalance,
}

/// One reassignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The shard.
    pub shard: ShardId,
    /// Its current owner, if any.
    pub from: Option<String>,
    /// Its new owner.
    pub to: String,
    /// Why it moves.
    pub kind: MoveKind,
}

/// The moves that take `current` owners toward `desired` ones (both indexed by shard).
///
/// Shards without an owner are placed and shards on a node in `leaving` (draining, not
/// ready or gone) are evacuated, all at once; other changes are rebalancing handoffs, at most `max_moving` of them (the caller
/// passes its remaining budget: the limit minus handoffs already in flight), lowest shard
/// first. A shard whose desired owner is `None` stays where it is (no node to move it to).
pub fn plan_moves(
    current: &[Option<String>],
    desired: &[Option<String>],
    max_moving: usize,
    leaving: &BTreeSet<String>,
) -> Vec<Move> {
    let mut moves = Vec::new();
    let mut rebalancing = 0usize;
    for (index, target) in desired.iter().enumerate() {
        let Some(to) = target else { continue };
        let from = current.get(index).cloned().flatten();
        if from.as_deref() == Some(to.as_str()) {
            continue;
        }
        let kind = match &from {
            None => MoveKind::Place,
            Some(owner) if leaving.contains(owner) => MoveKind::Evacuate,
            Some(_) => MoveKind::Rebalance,
        };
        if kind == MoveKind::Rebalance {
            if rebalancing >= max_moving {
                continue;
            }
            rebalancing += 1;
        }
        let shard = ShardId::try_from(index).unwrap_or(ShardId::MAX);
        moves.push(Move {
            shard,
            from,
            to: to.clone(),
            kind,
        });
    }
    moves
}

#[cfg(test)]
mod tests;
