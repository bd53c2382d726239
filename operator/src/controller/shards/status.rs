//! RoomShard status from the core's view (pure): owner, epoch, version, phase, rooms, the
//! last failover and the last change of owner with its reason.
//!
//! Phases: `Unassigned` — no assignment, or its owner is dead and no node of its pool can take
//! it; `HandingOff` — `handoff_to` is set; `Recovering` — failed over and the new owner has not
//! reported serving the new epoch yet (at most the recovery timeout); `Assigned` otherwise.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::core::Core;
use crate::crd::{RoomShardStatus, ShardPhase};
use crate::placement::ShardId;

/// The status of one shard.
pub fn shard_status(core: &Core, shard: ShardId, now: Instant) -> RoomShardStatus {
    let rooms = i64::try_from(core.rooms(shard)).unwrap_or(i64::MAX);
    let last_failover = core.failover(shard).map(|f| f.last.clone());
    let last_move_request = core.move_result(shard).cloned();
    let last_move = core.last_move(shard).cloned();
    let Some(assignment) = core.assignment(shard) else {
        return RoomShardStatus {
            phase: ShardPhase::Unassigned,
            rooms,
            last_failover,
            last_move_request,
            last_move,
            ..Default::default()
        };
    };
    let recovering = core.failover(shard).is_some_and(|f| {
        f.pending.as_ref().is_some_and(|p| {
            p.epoch == assignment.epoch && f.last.to == assignment.node && now < p.deadline
        })
    });
    let phase = if !core.health(&assignment.node).alive() {
        ShardPhase::Unassigned
    } else if assignment.handoff_to.is_some() {
        ShardPhase::HandingOff
    } else if recovering {
        ShardPhase::Recovering
    } else {
        ShardPhase::Assigned
    };
    RoomShardStatus {
        node: Some(assignment.node.clone()),
        epoch: i64::try_from(assignment.epoch).unwrap_or(i64::MAX),
        version: Some(assignment.version.clone()),
        phase,
        rooms,
        last_failover,
        last_move_request,
        last_move,
    }
}

/// The status of every shard.
pub fn statuses(core: &Core, now: Instant) -> BTreeMap<ShardId, RoomShardStatus> {
    (0..core.settings().shard_count)
        .map(|shard| (shard, shard_status(core, shard, now)))
        .collect()
}

/// Shards without a live owner (the `unassigned_shards` gauge).
pub fn unassigned(core: &Core) -> usize {
    (0..core.settings().shard_count)
        .filter(|shard| {
            core.assignment(*shard)
                .is_none_or(|a| !core.health(&a.node).alive())
        })
        .count()
}
