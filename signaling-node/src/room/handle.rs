//! The public face of a room actor: [`RoomHandle`] and the commands it sends over the
//! actor's bounded channel, with the replies they get.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::call::Call;
use switchboard_contract::shard::ShardId;
use switchboard_protocol::{Hangup, Invite, InviteResult, Sdp};

use super::peer::Peer;
use super::state::{IceMsg, Member};

/// A call-related frame for a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomFrame {
    /// Invite a member.
    Invite(Invite),
    /// Answer an invite.
    InviteResult(InviteResult),
    /// SDP offer.
    Offer(Sdp),
    /// SDP answer.
    Answer(Sdp),
    /// ICE candidate(s).
    Ice(IceMsg),
    /// End a call.
    Hangup(Hangup),
}

impl RoomFrame {
    /// The name of the span relaying this frame: `call.<request>` for frames that change a
    /// call's state, `relay.<kind>` for the negotiation passed through.
    pub fn span_name(&self) -> &'static str {
        match self {
            RoomFrame::Invite(_) => "call.invite",
            RoomFrame::InviteResult(_) => "call.invite_result",
            RoomFrame::Hangup(_) => "call.hangup",
            RoomFrame::Offer(_) => "relay.offer",
            RoomFrame::Answer(_) => "relay.answer",
            RoomFrame::Ice(_) => "relay.ice",
        }
    }

    pub(super) fn request_id(&self) -> u32 {
        match self {
            RoomFrame::Invite(m) => m.request_id,
            RoomFrame::InviteResult(m) => m.request_id,
            RoomFrame::Offer(m) | RoomFrame::Answer(m) => m.request_id,
            RoomFrame::Ice(_) => 0,
            RoomFrame::Hangup(m) => m.request_id,
        }
    }

    pub(super) fn may_mutate(&self) -> bool {
        match self {
            RoomFrame::Offer(_) | RoomFrame::Answer(_) => false,
            RoomFrame::Ice(IceMsg::One(m)) => m.is_end_of_candidates(),
            RoomFrame::Ice(IceMsg::Batch(m)) => m.candidates.iter().any(|c| c.candidate.is_empty()),
            RoomFrame::Invite(_) | RoomFrame::InviteResult(_) | RoomFrame::Hangup(_) => true,
        }
    }
}

/// How a room answered a join, leave or resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomReply {
    /// Done (the acknowledgement was queued to the requester).
    Done,
    /// Refused (for a join or leave the Error frame was queued to the requester; a resume
    /// gets none, its session sends the client on).
    Refused,
    /// The commit was fenced: the shard moved and the room stops. A leaving member was told
    /// (1006, then `Migrate`); a joiner or resumer was told nothing and is routed again.
    Moved,
    /// The room stopped before handling it (emptied, released or fenced): look it up again.
    Gone,
    /// Not committed for now: the store is unavailable (a joiner or leaver got 1010; a resume
    /// gets no Error frame, its session closes with 1013 so the client backs off).
    Unavailable,
}

/// A read-only copy of a room's state (tests, admin, debugging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// Room id.
    pub room: String,
    /// Shard.
    pub shard: ShardId,
    /// Epoch.
    pub epoch: u64,
    /// Members.
    pub members: Vec<Member>,
    /// Live calls.
    pub calls: Vec<Call>,
    /// Latest event seq.
    pub last_seq: u64,
}

/// What a room actor is asked to do. It travels boxed ([`Command::boxed`]): a tokio bounded
/// channel allocates its slots in blocks of 32 up front, so every room pays 32 × the slot
/// size while idle. Boxed, a slot is one pointer (≈ 0.3 KiB per room instead of ≈ 6.7 KiB
/// with the largest variant inline); the price is one small allocation per command.
pub(super) enum Command {
    Join {
        user: String,
        session: String,
        peer: Peer,
        request_id: u32,
        started: Instant,
        reply: oneshot::Sender<RoomReply>,
    },
    Leave {
        user: String,
        session: String,
        peer: Peer,
        request_id: u32,
        reply: oneshot::Sender<RoomReply>,
    },
    Resume {
        user: String,
        session: String,
        peer: Peer,
        last_seq: u64,
        reply: oneshot::Sender<RoomReply>,
    },
    Detach {
        user: String,
        session: String,
        conn: u64,
    },
    Frame {
        user: String,
        session: String,
        peer: Peer,
        frame: RoomFrame,
    },
    Release {
        url: String,
        reply: oneshot::Sender<()>,
    },
    Inspect {
        reply: oneshot::Sender<RoomInfo>,
    },
}

/// Handle to a live room actor. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RoomHandle {
    pub(super) room: Arc<str>,
    pub(super) shard: ShardId,
    pub(super) actor: u64,
    pub(super) tx: mpsc::Sender<Box<Command>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Join { .. } => "Join",
            Command::Leave { .. } => "Leave",
            Command::Resume { .. } => "Resume",
            Command::Detach { .. } => "Detach",
            Command::Frame { .. } => "Frame",
            Command::Release { .. } => "Release",
            Command::Inspect { .. } => "Inspect",
        })
    }
}

impl Command {
    /// The command as it travels over the actor's channel.
    pub(super) fn boxed(self) -> Box<Self> {
        Box::new(self)
    }
}

impl RoomHandle {
    /// Room id.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// Shard of the room.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    async fn ask(&self, cmd: Command, rx: oneshot::Receiver<RoomReply>) -> RoomReply {
        if self.tx.send(cmd.boxed()).await.is_err() {
            return RoomReply::Gone;
        }
        rx.await.unwrap_or(RoomReply::Gone)
    }

    /// `user` (session `session`, connection `peer`) joins; Joined or an Error is queued
    /// to `peer` before this returns.
    pub async fn join(&self, user: &str, session: &str, peer: &Peer, request_id: u32) -> RoomReply {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Join {
            user: user.to_owned(),
            session: session.to_owned(),
            peer: peer.clone(),
            request_id,
            started: Instant::now(),
            reply,
        };
        self.ask(cmd, rx).await
    }

    /// `user` leaves.
    pub async fn leave(
        &self,
        user: &str,
        session: &str,
        peer: &Peer,
        request_id: u32,
    ) -> RoomReply {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Leave {
            user: user.to_owned(),
            session: session.to_owned(),
            peer: peer.clone(),
            request_id,
            reply,
        };
        self.ask(cmd, rx).await
    }

    /// Re-attaches `session` on a new connection and replays events after `last_seq`.
    pub async fn resume(&self, user: &str, session: &str, peer: &Peer, last_seq: u64) -> RoomReply {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Resume {
            user: user.to_owned(),
            session: session.to_owned(),
            peer: peer.clone(),
            last_seq,
            reply,
        };
        self.ask(cmd, rx).await
    }

    /// The connection `conn` of `session` dropped (suspends the member if it is the attached one).
    pub async fn detach(&self, user: &str, session: &str, conn: u64) {
        let cmd = Command::Detach {
            user: user.to_owned(),
            session: session.to_owned(),
            conn,
        };
        let _ = self.tx.send(cmd.boxed()).await;
    }

    /// A call frame from `user`; errors are queued to `peer`. Returns false if the room is gone.
    pub async fn frame(&self, user: &str, session: &str, peer: &Peer, frame: RoomFrame) -> bool {
        let cmd = Command::Frame {
            user: user.to_owned(),
            session: session.to_owned(),
            peer: peer.clone(),
            frame,
        };
        self.tx.send(cmd.boxed()).await.is_ok()
    }

    /// Stops the room: members get `Migrate{url}`; its durable state stays for the next owner.
    /// Returns once the actor has stopped and left the registry.
    pub async fn release(&self, url: &str) {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(
                Command::Release {
                    url: url.to_owned(),
                    reply,
                }
                .boxed(),
            )
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// A copy of the room's state, or None if it stopped.
    pub async fn inspect(&self) -> Option<RoomInfo> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Inspect { reply }.boxed())
            .await
            .ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_bytes<T>(_: &mpsc::Sender<T>) -> usize {
        std::mem::size_of::<T>()
    }

    #[test]
    fn a_room_channel_slot_is_one_pointer() {
        // Memory regression guard: tokio allocates a block of 32 slots per channel up front,
        // so an inline Command (≈ 200 bytes) cost every idle room ≈ 6.7 KiB.
        let (tx, _rx) = mpsc::channel(1);
        let handle = RoomHandle {
            room: Arc::from("r"),
            shard: 0,
            actor: 1,
            tx,
        };
        assert_eq!(slot_bytes(&handle.tx), std::mem::size_of::<usize>());
    }
}
