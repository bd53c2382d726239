//! Switchboard signaling node: protocol, call state machine, rooms, server and cluster membership.
// Denied rather than forbidden: the FlatBuffers code generated into `protocol::generated`
// reads verified buffers with `unsafe` and is the single module allowed to (see there).
#![deny(unsafe_code)]

pub mod cluster;
pub mod protocol;
pub mod routing;
pub mod session;
pub mod shard;
pub mod store;
