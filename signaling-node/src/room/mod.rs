//! Rooms: one actor task per room owning its members, calls and event log; the registry of
//! live rooms (with the session index used by resume); durable snapshots; and the pure room
//! logic the actors run.
//!
//! - [`state`]: the pure decision logic (what to commit, what to send to whom).
//! - [`log`]: the gapless event log and its replay ring.
//! - [`snapshot`]: FlatBuffers encoding of the durable room state (`schemas/snapshot.fbs`).
//! - [`peer`]: a connection's bounded outbound queue as rooms see it.
//! - `actor`: the room task: commands in over a bounded channel, commit through the
//!   [`crate::store::RoomStore`] before acknowledging, then deliver.
//! - [`registry`]: live rooms by id, sessions by id, restore/release of shards, drain; it is
//!   also cluster mode's `ShardRestorer`.
//! - `shared`: what the registry and the actors share (store, ownership, indexes).

mod actor;
mod handle;
pub mod log;
pub mod peer;
pub mod registry;
mod restorer;
mod shared;
pub mod snapshot;
pub mod state;

pub use handle::{RoomFrame, RoomHandle, RoomInfo, RoomReply};
pub use peer::Peer;
pub use registry::{RegistryError, RestoreError, RoomRegistry};
pub use shared::SessionEntry;
pub use state::{IceMsg, Limits, Member, Presence, RoomError, RoomState, SeatMap, check_id};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Unix milliseconds that advance with tokio's clock, so paused-time tests move them too.
/// Rooms use it for event timestamps and call/resume deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_unix_ms: u64,
    base: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock anchored at the system time now.
    pub fn new() -> Self {
        let base_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            base_unix_ms,
            base: Instant::now(),
        }
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_unix_ms.saturating_add(elapsed)
    }

    /// The tokio instant at Unix milliseconds `ms` (clamped to now for past instants).
    pub fn instant_at(&self, ms: u64) -> Instant {
        let now_ms = self.now_ms();
        Instant::now() + Duration::from_millis(ms.saturating_sub(now_ms))
    }
}
