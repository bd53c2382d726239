//! The reusable [`Encoder`]: builds a message's FlatBuffers body and wraps it in a frame,
//! keeping its builder and output buffer between calls so steady-state encoding does not
//! allocate.

use flatbuffers::{FlatBufferBuilder, WIPOffset};
use thiserror::Error;

use super::frame::{MAX_BODY_LEN, MAX_FRAME_LEN, write_frame};
use super::generated as wire;
use super::message::Message;
use super::types::FrameType;

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The frame would exceed [`MAX_FRAME_LEN`]; nothing was sent.
    #[error(
        "{frame_type} frame needs a length of at least {len} bytes, above the {MAX_FRAME_LEN}-byte limit"
    )]
    TooLarge {
        /// Type of the refused message.
        frame_type: FrameType,
        /// Length-field value the frame would need (a lower bound when refused before
        /// building the body).
        len: usize,
    },
}

/// Reusable encoder: keeps its `FlatBufferBuilder` and output buffer between calls.
///
/// Empty strings and lists are left out of the body (absent decodes as empty).
pub struct Encoder {
    fbb: FlatBufferBuilder<'static>,
    out: Vec<u8>,
    strings: Vec<WIPOffset<&'static str>>,
    candidates: Vec<WIPOffset<wire::Candidate<'static>>>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("out_capacity", &self.out.capacity())
            .finish_non_exhaustive()
    }
}

/// Creates a string in the builder unless it is empty.
fn opt_str(fbb: &mut FlatBufferBuilder<'static>, s: &str) -> Option<WIPOffset<&'static str>> {
    (!s.is_empty()).then(|| fbb.create_string(s))
}

impl Encoder {
    /// A new encoder with small initial buffers (they grow to the largest frame encoded,
    /// at most [`MAX_FRAME_LEN`] plus a little).
    pub fn new() -> Self {
        Self {
            fbb: FlatBufferBuilder::with_capacity(1024),
            out: Vec::with_capacity(1024),
            strings: Vec::new(),
            candidates: Vec::new(),
        }
    }

    /// Encodes `msg` as one whole frame and returns it; the slice is valid until the next
    /// call. Messages whose frame would exceed [`MAX_FRAME_LEN`] are refused.
    pub fn encode(&mut self, msg: &Message) -> Result<&[u8], EncodeError> {
        let frame_type = msg.frame_type();
        let payload = msg.payload_len();
        if payload > MAX_BODY_LEN {
            // Refuse before building so an absurd message cannot grow the builder.
            return Err(EncodeError::TooLarge {
                frame_type,
                len: payload.saturating_add(MAX_FRAME_LEN - MAX_BODY_LEN),
            });
        }
        self.fbb.reset();
        self.build_body(msg);
        let body = self.fbb.finished_data();
        if body.len() > MAX_BODY_LEN {
            return Err(EncodeError::TooLarge {
                frame_type,
                len: body.len() + (MAX_FRAME_LEN - MAX_BODY_LEN),
            });
        }
        self.out.clear();
        write_frame(&mut self.out, frame_type, body);
        Ok(&self.out)
    }

    /// Encodes `msg` as one whole frame into a new `Vec`.
    pub fn encode_to_vec(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        self.encode(msg).map(<[u8]>::to_vec)
    }

    /// Builds the FlatBuffers body of `msg` into `self.fbb` and finishes it.
    fn build_body(&mut self, msg: &Message) {
        let fbb = &mut self.fbb;
        match msg {
            Message::Hello(m) => {
                let token = opt_str(fbb, &m.token);
                let versions = (!m.versions.is_empty()).then(|| fbb.create_vector(&m.versions));
                let resume = m.resume.as_ref().map(|r| {
                    let session = opt_str(fbb, &r.session);
                    wire::Resume::create(
                        fbb,
                        &wire::ResumeArgs {
                            session,
                            last_seq: r.last_seq,
                        },
                    )
                });
                let root = wire::Hello::create(
                    fbb,
                    &wire::HelloArgs {
                        token,
                        versions,
                        resume,
                    },
                );
                fbb.finish_minimal(root);
            }
            Message::Welcome(m) => {
                let args = wire::WelcomeArgs {
                    session: opt_str(fbb, &m.session),
                    version: m.version,
                    node: opt_str(fbb, &m.node),
                    heartbeat_ms: m.heartbeat_ms,
                    resumed: m.resumed,
                };
                let root = wire::Welcome::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::Join(m) => {
                let args = wire::JoinArgs {
                    request_id: m.request_id,
                    room: opt_str(fbb, &m.room),
                };
                let root = wire::Join::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::Joined(m) => {
                let room = opt_str(fbb, &m.room);
                let members = if m.members.is_empty() {
                    None
                } else {
                    self.strings.clear();
                    for member in &m.members {
                        let s = fbb.create_string(member);
                        self.strings.push(s);
                    }
                    Some(fbb.create_vector(&self.strings))
                };
                let args = wire::JoinedArgs {
                    request_id: m.request_id,
                    room,
                    members,
                    last_seq: m.last_seq,
                };
                let root = wire::Joined::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::Leave(m) => {
                let args = wire::LeaveArgs {
                    request_id: m.request_id,
                    room: opt_str(fbb, &m.room),
                };
                let root = wire::Leave::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::Invite(m) => {
                let args = wire::InviteArgs {
                    request_id: m.request_id,
                    room: opt_str(fbb, &m.room),
                    call_id: opt_str(fbb, &m.call_id),
                    from: opt_str(fbb, &m.from),
                    to: opt_str(fbb, &m.to),
                };
                let root = wire::Invite::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::InviteResult(m) => {
                let args = wire::InviteResultArgs {
                    request_id: m.request_id,
                    room: opt_str(fbb, &m.room),
                    call_id: opt_str(fbb, &m.call_id),
                    from: opt_str(fbb, &m.from),
                    to: opt_str(fbb, &m.to),
                    accepted: m.accepted,
                    reason: opt_str(fbb, &m.reason),
                };
                let root = wire::InviteResult::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::Offer(m) => {
                let args = wire::OfferArgs {
                    request_id: m.request_id,
                    room: opt_str(fbb, &m.room),
                    call_id: opt_str(fbb, &m.call_id),
                    from: opt_str(fbb, &m.from),
                    to: opt_str(fbb, &m.to),
                    sdp: opt_str(fbb, &m.sdp),
                };
                let root = wire::Offer::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::Answer(m) => {
                let args = wire::AnswerArgs {
                    request_id: m.request_id,
                    room: opt_str(fbb, &m.room),
                    call_id: opt_str(fbb, &m.call_id),
                    from: opt_str(fbb, &m.from),
                    to: opt_str(fbb, &m.to),
                    sdp: opt_str(fbb, &m.sdp),
                };
                let root = wire::Answer::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::IceCandidate(m) => {
                let args = wire::IceCandidateArgs {
                    room: opt_str(fbb, &m.room),
                    call_id: opt_str(fbb, &m.call_id),
                    from: opt_str(fbb, &m.from),
                    to: opt_str(fbb, &m.to),
                    candidate: opt_str(fbb, &m.candidate),
                    sdp_mid: opt_str(fbb, &m.sdp_mid),
                    sdp_mline_index: m.sdp_mline_index,
                };
                let root = wire::IceCandidate::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::IceBatch(m) => {
                let room = opt_str(fbb, &m.room);
                let call_id = opt_str(fbb, &m.call_id);
                let from = opt_str(fbb, &m.from);
                let to = opt_str(fbb, &m.to);
                let candidates = if m.candidates.is_empty() {
                    None
                } else {
                    self.candidates.clear();
                    for c in &m.candidates {
                        let args = wire::CandidateArgs {
                            candidate: opt_str(fbb, &c.candidate),
                            sdp_mid: opt_str(fbb, &c.sdp_mid),
                            sdp_mline_index: c.sdp_mline_index,
                        };
                        let offset = wire::Candidate::create(fbb, &args);
                        self.candidates.push(offset);
                    }
                    Some(fbb.create_vector(&self.candidates))
                };
                let args = wire::IceBatchArgs {
                    room,
                    call_id,
                    from,
                    to,
                    candidates,
                };
                let root = wire::IceBatch::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::Hangup(m) => {
                let args = wire::HangupArgs {
                    request_id: m.request_id,
                    room: opt_str(fbb, &m.room),
                    call_id: opt_str(fbb, &m.call_id),
                    from: opt_str(fbb, &m.from),
                    reason: opt_str(fbb, &m.reason),
                };
                let root = wire::Hangup::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::Event(m) => {
                let args = wire::EventArgs {
                    room: opt_str(fbb, &m.room),
                    seq: m.seq,
                    kind: wire::EventKind(m.kind.as_u8()),
                    user: opt_str(fbb, &m.user),
                    call_id: opt_str(fbb, &m.call_id),
                    state: opt_str(fbb, &m.state),
                    at_ms: m.at_ms,
                };
                let root = wire::Event::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::Ping(m) => {
                let root = wire::Ping::create(fbb, &wire::PingArgs { nonce: m.nonce });
                fbb.finish_minimal(root);
            }
            Message::Pong(m) => {
                let root = wire::Pong::create(fbb, &wire::PongArgs { nonce: m.nonce });
                fbb.finish_minimal(root);
            }
            Message::Redirect(m) => {
                let args = wire::RedirectArgs {
                    request_id: m.request_id,
                    room: opt_str(fbb, &m.room),
                    url: opt_str(fbb, &m.url),
                };
                let root = wire::Redirect::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::Migrate(m) => {
                let args = wire::MigrateArgs {
                    room: opt_str(fbb, &m.room),
                    url: opt_str(fbb, &m.url),
                    resume_token: opt_str(fbb, &m.resume_token),
                };
                let root = wire::Migrate::create(fbb, &args);
                fbb.finish_minimal(root);
            }
            Message::Error(m) => {
                let args = wire::ErrorArgs {
                    code: m.code,
                    message: opt_str(fbb, &m.message),
                    request_id: m.request_id,
                };
                let root = wire::Error::create(fbb, &args);
                fbb.finish_minimal(root);
            }
        }
    }
}
