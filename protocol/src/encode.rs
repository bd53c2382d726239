//! The reusable [`Encoder`]: builds a message's FlatBuffers body and wraps it in a frame,
//! keeping its builder and output buffer between calls so steady-state encoding does not
//! allocate.

use thiserror::Error;

use super::fields::{BodyBuilder, ToWire};
use super::frame::{MAX_BODY_LEN, MAX_FRAME_LEN, write_frame};
use super::frames::{FrameType, Message, frame_table};
use super::generated as wire;

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

/// Generates [`build_body`]: each field written in table order, then the root table.
macro_rules! define_build_body {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $byte:literal, $label:literal, $owned:ident / $args:ident { $($field:ident),* $(,)? };
    )*) => {
        /// Builds the FlatBuffers body of `msg` into `b.fbb` and finishes it.
        fn build_body(b: &mut BodyBuilder, msg: &Message) {
            match msg {
                $(Message::$variant(_m) => {
                    let args = wire::$args {
                        $($field: _m.$field.to_wire(b),)*
                    };
                    let root = wire::$variant::create(&mut b.fbb, &args);
                    b.fbb.finish_minimal(root);
                })*
            }
        }
    };
}
frame_table!(define_build_body);

/// Reusable encoder: keeps its `FlatBufferBuilder` and output buffer between calls.
///
/// Empty strings and lists are left out of the body (absent decodes as empty).
pub struct Encoder {
    body: BodyBuilder,
    out: Vec<u8>,
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

impl Encoder {
    /// A new encoder with small initial buffers (they grow to the largest frame encoded,
    /// at most [`MAX_FRAME_LEN`] plus a little).
    pub fn new() -> Self {
        Self {
            body: BodyBuilder::new(),
            out: Vec::with_capacity(1024),
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
        self.body.fbb.reset();
        build_body(&mut self.body, msg);
        let body = self.body.fbb.finished_data();
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
}
