//! Protocol frames on a byte stream (a WebTransport bidirectional stream): the frames are the
//! same bytes as WebSocket binary messages, back to back, each delimited by its own `length`
//! prefix (docs/protocol.md, "Frame layout"). Like the WebSocket [`Decoder`](crate::ws::Decoder),
//! the [`StreamDecoder`] holds bytes only while a frame is incomplete, and refuses a length
//! above the limit from its four prefix bytes, before any of the frame is buffered.

use bytes::{Bytes, BytesMut};

use crate::ws::{Incoming, WsError};

/// Bytes of the `length` prefix.
const PREFIX: usize = 4;

/// Cuts the stream's bytes into whole protocol frames, keeping nothing once they are out.
#[derive(Debug)]
pub struct StreamDecoder {
    /// Bytes read but not yet a whole frame.
    buf: BytesMut,
    /// Largest frame accepted, prefix included.
    max_frame: usize,
}

impl StreamDecoder {
    /// A decoder refusing frames above `max_frame` bytes (the `length` prefix included).
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame,
        }
    }

    /// Adds bytes just read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes of memory the decoder holds (for the memory regression tests).
    pub fn held_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next whole frame (prefix included, as [`Incoming::Binary`], so the connection
    /// handles it like a WebSocket binary message), if all of it has arrived. A length above
    /// the limit is [`WsError::TooLarge`] (close 1009, as on WebSocket); after an error the
    /// stream cannot be cut into frames any more and the connection must close.
    pub fn next_message(&mut self) -> Result<Option<Incoming>, WsError> {
        let Some(prefix) = self.buf.get(..PREFIX) else {
            self.release_if_empty();
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let total = PREFIX as u64 + u64::from(len);
        if total > self.max_frame as u64 {
            return Err(WsError::TooLarge {
                size: total,
                max: self.max_frame,
            });
        }
        // `total` is at most `max_frame` here, so it fits a usize.
        let total = total as usize;
        if self.buf.len() < total {
            // Room for the whole frame at once instead of growing read by read.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let frame: Bytes = self.buf.split_to(total).freeze();
        self.release_if_empty();
        Ok(Some(Incoming::Binary(frame)))
    }

    /// Drops an empty buffer's allocation so an idle connection holds none.
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    fn decode_all(d: &mut StreamDecoder) -> Result<Vec<Incoming>, WsError> {
        let mut out = Vec::new();
        while let Some(m) = d.next_message()? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn frames_come_out_whole_with_their_prefix() {
        let mut d = StreamDecoder::new(4 + 65_536);
        let (a, b) = (frame(b"\x01hello"), frame(&[7; 65_536]));
        d.extend(&[a.clone(), b.clone()].concat());
        assert_eq!(
            decode_all(&mut d).unwrap(),
            vec![Incoming::Binary(a.into()), Incoming::Binary(b.into())]
        );
        assert_eq!(d.held_capacity(), 0, "nothing kept after a frame");
    }

    #[test]
    fn a_length_above_the_limit_is_refused_from_the_prefix_alone() {
        let mut d = StreamDecoder::new(4 + 65_536);
        d.extend(&65_537u32.to_be_bytes());
        let err = d.next_message().unwrap_err();
        assert_eq!(
            err,
            WsError::TooLarge {
                size: 4 + 65_537,
                max: 4 + 65_536
            }
        );
        assert_eq!(err.close_code(), 1009);
        assert!(
            d.held_capacity() < 64,
            "the frame's bytes were not reserved"
        );
    }

    #[test]
    fn a_short_length_is_still_one_frame() {
        // Lengths below the protocol minimum are cut like any other; decoding the frame
        // refuses them (Error 1008), and the stream stays in step.
        let mut d = StreamDecoder::new(100);
        d.extend(&[0, 0, 0, 0, 0, 0, 0, 1, 9]);
        assert_eq!(
            decode_all(&mut d).unwrap(),
            vec![
                Incoming::Binary(Bytes::from_static(&[0, 0, 0, 0])),
                Incoming::Binary(Bytes::from_static(&[0, 0, 0, 1, 9])),
            ]
        );
    }

    proptest! {
        /// However the bytes are cut into reads, the same frames come out, and nothing is held
        /// once the last one is out.
        #[test]
        fn any_split_of_the_stream_decodes_the_same(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8),
            cuts in prop::collection::vec(1usize..64, 1..50),
        ) {
            let frames: Vec<Vec<u8>> = bodies.iter().map(|b| frame(b)).collect();
            let stream = frames.concat();
            let mut d = StreamDecoder::new(1 << 16);
            let mut out = Vec::new();
            let mut rest = &stream[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                d.extend(&rest[..n]);
                rest = &rest[n..];
                out.extend(decode_all(&mut d).unwrap());
            }
            let expected: Vec<Incoming> =
                frames.into_iter().map(|f| Incoming::Binary(f.into())).collect();
            prop_assert_eq!(out, expected);
            prop_assert_eq!(d.held_capacity(), 0);
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut d = StreamDecoder::new(1024);
            d.extend(&bytes);
            let _ = decode_all(&mut d);
        }
    }
}
