//! Switchboard signaling node: protocol, call state machine, rooms, server and cluster membership.
// Denied rather than forbidden: the FlatBuffers code generated into `protocol::generated`
// reads verified buffers with `unsafe` and is the single module allowed to (see there).
#![deny(unsafe_code)]

pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod protocol;
pub mod room;
pub mod routing;
pub mod server;
pub mod session;
pub mod store;
