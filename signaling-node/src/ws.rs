//! WebSocket framing, server side (RFC 6455 §5), kept to what an idle connection can afford:
//! the [`Decoder`] holds bytes only while a frame or a fragmented message is incomplete
//! (nothing between messages), and server frames are encoded whole, once, so every recipient
//! of a fan-out shares the same bytes (server frames are never masked).
//!
//! What the decoder enforces (each a close with [`WsError::close_code`]): client frames are
//! masked; no reserved bits (no extension is negotiated); known opcodes; control frames are
//! final and at most 125 bytes; continuation frames only inside a fragmented message; a
//! message or frame above the limit is refused before its payload is buffered (1009).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Largest control frame payload.
const MAX_CONTROL: usize = 125;

/// One complete message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A binary message (the protocol's frames).
    Binary(Bytes),
    /// A text message (not part of the protocol; its content is not kept).
    Text,
    /// A ping; the payload goes back in the pong.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// The client closed, with its close code if it sent one.
    Close(Option<u16>),
}

/// Why the client's byte stream is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A framing rule was broken (close 1002).
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// A message or frame above the limit (close 1009).
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced or accumulated size.
        size: u64,
        /// The limit.
        max: usize,
    },
}

impl WsError {
    /// The close code this error ends the connection with.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => 1002,
            WsError::TooLarge { .. } => 1009,
        }
    }
}

/// A frame header as read from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header length in bytes.
    len: usize,
    payload: u64,
}

/// Parses a client frame header from the start of `buf` (`None`: not all of it yet).
fn parse_header(buf: &[u8]) -> Result<Option<Header>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol("reserved bits set without an extension"));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol("client frames must be masked"));
    }
    let (payload, at) = match b1 & 0x7F {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut raw = [0u8; 8];
            raw.copy_from_slice(bytes);
            let len = u64::from_be_bytes(raw);
            if len >> 63 != 0 {
                return Err(WsError::Protocol("payload length has its top bit set"));
            }
            (len, 10)
        }
        short => (u64::from(short), 2),
    };
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        len: at + 4,
        payload,
    }))
}

/// XORs `data` with the frame's mask.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Turns the client's bytes into messages, keeping nothing once they are consumed.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes read but not yet consumed (an incomplete frame).
    buf: BytesMut,
    /// A fragmented message being assembled: its opcode and payload so far.
    fragments: Option<(u8, BytesMut)>,
    max_message: usize,
}

impl Decoder {
    /// A decoder refusing messages and frames above `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            fragments: None,
            max_message,
        }
    }

    /// Adds bytes just read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether nothing is held (no partial frame, no partial message).
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.fragments.is_none()
    }

    /// Bytes of memory the decoder holds (for the memory regression tests).
    pub fn held_capacity(&self) -> usize {
        self.buf.capacity() + self.fragments.as_ref().map_or(0, |(_, b)| b.capacity())
    }

    /// The next complete message in the bytes so far, if any. After an error the connection
    /// must close; the decoder is not usable any more.
    pub fn next_message(&mut self) -> Result<Option<Incoming>, WsError> {
        loop {
            let Some(header) = parse_header(&self.buf)? else {
                self.release_if_empty();
                return Ok(None);
            };
            self.check_frame(&header)?;
            let total = header.len as u64 + header.payload;
            if (self.buf.len() as u64) < total {
                // Room for the whole frame at once instead of growing read by read.
                self.buf.reserve(total as usize - self.buf.len());
                return Ok(None);
            }
            self.buf.advance(header.len);
            let mut payload = self.buf.split_to(header.payload as usize);
            unmask(&mut payload, header.mask);
            self.release_if_empty();
            if let Some(message) = self.on_frame(header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Drops an empty buffer's allocation so an idle connection holds none.
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    fn check_frame(&self, header: &Header) -> Result<(), WsError> {
        let control = header.opcode & 0x8 != 0;
        match header.opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
            _ => return Err(WsError::Protocol("unknown opcode")),
        }
        if control {
            if !header.fin {
                return Err(WsError::Protocol("fragmented control frame"));
            }
            if header.payload > MAX_CONTROL as u64 {
                return Err(WsError::Protocol("control frame above 125 bytes"));
            }
            return Ok(());
        }
        let so_far = self.fragments.as_ref().map_or(0, |(_, b)| b.len() as u64);
        match (header.opcode, self.fragments.is_some()) {
            (OP_CONTINUATION, false) => {
                return Err(WsError::Protocol("continuation without a message"));
            }
            (OP_TEXT | OP_BINARY, true) => {
                return Err(WsError::Protocol("new message inside a fragmented one"));
            }
            _ => {}
        }
        let size = so_far + header.payload;
        if size > self.max_message as u64 {
            return Err(WsError::TooLarge {
                size,
                max: self.max_message,
            });
        }
        Ok(())
    }

    fn on_frame(&mut self, header: Header, payload: BytesMut) -> Result<Option<Incoming>, WsError> {
        match header.opcode {
            OP_PING => Ok(Some(Incoming::Ping(payload.freeze()))),
            OP_PONG => Ok(Some(Incoming::Pong)),
            OP_CLOSE => close_code(&payload).map(|code| Some(Incoming::Close(code))),
            OP_CONTINUATION => {
                let Some((opcode, mut message)) = self.fragments.take() else {
                    return Err(WsError::Protocol("continuation without a message"));
                };
                message.extend_from_slice(&payload);
                if header.fin {
                    Ok(Some(data_message(opcode, message)))
                } else {
                    self.fragments = Some((opcode, message));
                    Ok(None)
                }
            }
            opcode if header.fin => Ok(Some(data_message(opcode, payload))),
            opcode => {
                self.fragments = Some((opcode, payload));
                Ok(None)
            }
        }
    }
}

fn data_message(opcode: u8, payload: BytesMut) -> Incoming {
    if opcode == OP_TEXT {
        Incoming::Text
    } else {
        Incoming::Binary(payload.freeze())
    }
}

/// The close code of a close frame's payload (empty: none), checked per RFC 6455 §7.4.
fn close_code(payload: &[u8]) -> Result<Option<u16>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::Protocol("close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(WsError::Protocol("invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(WsError::Protocol("close reason is not UTF-8"));
            }
            Ok(Some(code))
        }
    }
}

/// Length of the header of a server frame with `len` payload bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Appends a final, unmasked frame header for `len` payload bytes of `opcode` to `out`.
pub fn put_header(out: &mut impl BufMut, opcode: u8, len: usize) {
    out.put_u8(0x80 | opcode);
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

/// One whole server frame: header and payload in one buffer.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_header(&mut out, opcode, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// A close frame with `code` and `reason` (the reason is cut to fit a control frame).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OP_CLOSE, &payload)
}

/// The payload of a whole server frame made by [`frame`] (its opcode and bytes).
pub fn payload_of(frame: &[u8]) -> Option<(u8, &[u8])> {
    let opcode = frame.first()? & 0x0F;
    let at = match frame.get(1)? & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Some((opcode, frame.get(at..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A client frame: masked with `mask`, `fin` and `opcode` as given.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(if fin { 0x80 } else { 0 } | opcode);
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let mut masked = payload.to_vec();
        unmask(&mut masked, mask);
        out.extend_from_slice(&masked);
        out
    }

    fn decode_all(decoder: &mut Decoder) -> Result<Vec<Incoming>, WsError> {
        let mut out = Vec::new();
        while let Some(m) = decoder.next_message()? {
            out.push(m);
        }
        Ok(out)
    }

    const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    #[test]
    fn messages_of_every_length_class_decode() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut d = Decoder::new(1 << 20);
            d.extend(&client_frame(true, OP_BINARY, &payload, MASK));
            assert_eq!(
                decode_all(&mut d).unwrap(),
                vec![Incoming::Binary(payload.into())]
            );
            assert!(d.is_idle());
            assert_eq!(d.held_capacity(), 0, "nothing kept after a message");
        }
    }

    #[test]
    fn control_frames_and_fragments_interleave() {
        let mut bytes = client_frame(false, OP_BINARY, b"ab", MASK);
        bytes.extend(client_frame(true, OP_PING, b"p", MASK));
        bytes.extend(client_frame(false, OP_CONTINUATION, b"cd", MASK));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"e", MASK));
        bytes.extend(client_frame(true, OP_TEXT, b"hi", MASK));
        bytes.extend(client_frame(true, OP_PONG, b"", MASK));
        bytes.extend(client_frame(
            true,
            OP_CLOSE,
            &[0x03, 0xE8, b'o', b'k'],
            MASK,
        ));
        let mut d = Decoder::new(1024);
        d.extend(&bytes);
        assert_eq!(
            decode_all(&mut d).unwrap(),
            vec![
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Binary(Bytes::from_static(b"abcde")),
                Incoming::Text,
                Incoming::Pong,
                Incoming::Close(Some(1000)),
            ]
        );
        assert_eq!(d.held_capacity(), 0);
    }

    #[test]
    fn protocol_violations_close_with_1002() {
        let unmasked = {
            let mut f = client_frame(true, OP_BINARY, b"x", MASK);
            f[1] &= 0x7F;
            f.truncate(2);
            f.push(b'x');
            f
        };
        let rsv = {
            let mut f = client_frame(true, OP_BINARY, b"x", MASK);
            f[0] |= 0x40;
            f
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (unmasked, "client frames must be masked"),
            (rsv, "reserved bits set without an extension"),
            (client_frame(true, 0x3, b"", MASK), "unknown opcode"),
            (
                client_frame(false, OP_PING, b"", MASK),
                "fragmented control frame",
            ),
            (
                client_frame(true, OP_PING, &[0; 126], MASK),
                "control frame above 125 bytes",
            ),
            (
                client_frame(true, OP_CONTINUATION, b"x", MASK),
                "continuation without a message",
            ),
            (
                [
                    client_frame(false, OP_BINARY, b"x", MASK),
                    client_frame(true, OP_BINARY, b"y", MASK),
                ]
                .concat(),
                "new message inside a fragmented one",
            ),
            (
                client_frame(true, OP_CLOSE, &[3], MASK),
                "close frame with a one-byte payload",
            ),
            (
                client_frame(true, OP_CLOSE, &[0x03, 0xED], MASK),
                "invalid close code",
            ),
            (
                client_frame(true, OP_CLOSE, &[0x03, 0xE8, 0xFF], MASK),
                "close reason is not UTF-8",
            ),
        ];
        for (bytes, why) in cases {
            let mut d = Decoder::new(1024);
            d.extend(&bytes);
            let err = decode_all(&mut d).unwrap_err();
            assert_eq!(err, WsError::Protocol(why));
            assert_eq!(err.close_code(), 1002);
        }
    }

    #[test]
    fn oversized_frames_and_messages_are_refused_before_buffering() {
        let mut d = Decoder::new(100);
        // Only the header of a 1 MiB frame: refused without waiting for the payload.
        let big = client_frame(true, OP_BINARY, &vec![0; 1 << 20], MASK);
        d.extend(&big[..14]);
        let err = d.next_message().unwrap_err();
        assert_eq!(
            err,
            WsError::TooLarge {
                size: 1 << 20,
                max: 100
            }
        );
        assert_eq!(err.close_code(), 1009);
        assert!(d.held_capacity() < 1024);
        // Fragments adding up past the limit.
        let mut d = Decoder::new(100);
        d.extend(&client_frame(false, OP_BINARY, &[0; 60], MASK));
        d.extend(&client_frame(true, OP_CONTINUATION, &[0; 60], MASK));
        assert!(matches!(
            decode_all(&mut d),
            Err(WsError::TooLarge { size: 120, .. })
        ));
    }

    #[test]
    fn server_frames_round_trip_their_payload() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let payload = vec![7u8; len];
            let f = frame(OP_BINARY, &payload);
            assert_eq!(f.len(), header_len(len) + len);
            assert_eq!(payload_of(&f), Some((OP_BINARY, &payload[..])));
        }
        let close = close_frame(1013, &"é".repeat(200));
        let (op, payload) = payload_of(&close).unwrap();
        assert_eq!(op, OP_CLOSE);
        assert!(payload.len() <= MAX_CONTROL);
        assert_eq!(&payload[..2], &1013u16.to_be_bytes());
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }

    proptest! {
        /// However the bytes are cut into reads, the same messages come out, and nothing is
        /// held once the last one is out.
        #[test]
        fn any_split_of_the_stream_decodes_the_same(
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8),
            cuts in prop::collection::vec(1usize..64, 1..50),
            mask in any::<[u8; 4]>(),
        ) {
            let mut stream = Vec::new();
            for m in &messages {
                // Every other message in two fragments.
                if m.len() > 1 && m.len() % 2 == 0 {
                    let (a, b) = m.split_at(m.len() / 2);
                    stream.extend(client_frame(false, OP_BINARY, a, mask));
                    stream.extend(client_frame(true, OP_CONTINUATION, b, mask));
                } else {
                    stream.extend(client_frame(true, OP_BINARY, m, mask));
                }
            }
            let mut d = Decoder::new(1 << 16);
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
                messages.iter().map(|m| Incoming::Binary(Bytes::from(m.clone()))).collect();
            prop_assert_eq!(out, expected);
            prop_assert_eq!(d.held_capacity(), 0);
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut d = Decoder::new(1024);
            d.extend(&bytes);
            let _ = decode_all(&mut d);
        }
    }
}
