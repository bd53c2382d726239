//! Switchboard signaling node, the server: call state machine, rooms, the WebSocket (and,
//! with the `webtransport` feature, WebTransport) server and cluster mode (membership,
//! ownership, fenced room snapshots in etcd).
#![forbid(unsafe_code)]

pub mod call;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod room;
pub mod routing;
pub mod server;
pub mod store;
pub mod stream_frames;
pub mod ws;
