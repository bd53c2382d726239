//! Switchboard signaling node: protocol, call state machine, rooms, server and cluster membership.
#![forbid(unsafe_code)]

pub mod bench;
pub mod routing;
pub mod shard;
pub mod store;
