//! How each kind of message field crosses the wire, once per field type rather than once per
//! frame: [`ToWire`] writes it into the FlatBuffers builder, [`FromWire`] reads it back from a
//! verified table, [`PayloadLen`] bounds its encoded size. The frame table (`frames`) applies
//! them field by field.
//!
//! Empty strings and lists are not written (absent reads as empty), so a message carries only
//! what it says.

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};

use crate::generated as wire;
use crate::message::{Candidate, EventKind, Resume};

/// The builder a body is written into, with scratch space reused between messages.
pub(crate) struct BodyBuilder {
    pub(crate) fbb: FlatBufferBuilder<'static>,
    strings: Vec<WIPOffset<&'static str>>,
    candidates: Vec<WIPOffset<wire::Candidate<'static>>>,
}

impl BodyBuilder {
    /// A builder with a small initial buffer (it grows to the largest body built).
    pub(crate) fn new() -> Self {
        Self {
            fbb: FlatBufferBuilder::with_capacity(1024),
            strings: Vec::new(),
            candidates: Vec::new(),
        }
    }
}

/// Writes a field into the body being built.
pub(crate) trait ToWire {
    /// What the generated `...Args` struct holds for the field.
    type Out;

    /// Writes the field's out-of-line data (if any) and returns what the table stores.
    fn to_wire(&self, b: &mut BodyBuilder) -> Self::Out;
}

/// Reads a field from a verified table (`W` is the generated accessor's type).
pub(crate) trait FromWire<W> {
    /// The owned value.
    fn from_wire(wire: W) -> Self;
}

/// Bytes of variable-length payload a field carries: a lower bound of its encoded size.
pub(crate) trait PayloadLen {
    /// The bound.
    fn payload_len(&self) -> usize;
}

macro_rules! scalars {
    ($($t:ty),*) => {$(
        impl ToWire for $t {
            type Out = $t;
            fn to_wire(&self, _: &mut BodyBuilder) -> $t {
                *self
            }
        }
        impl PayloadLen for $t {
            fn payload_len(&self) -> usize {
                0
            }
        }
    )*};
}
scalars!(bool, u8, u16, u32, u64);

impl<T> FromWire<T> for T {
    fn from_wire(wire: T) -> T {
        wire
    }
}

impl ToWire for String {
    type Out = Option<WIPOffset<&'static str>>;
    fn to_wire(&self, b: &mut BodyBuilder) -> Self::Out {
        (!self.is_empty()).then(|| b.fbb.create_string(self))
    }
}

impl FromWire<Option<&str>> for String {
    fn from_wire(wire: Option<&str>) -> Self {
        wire.unwrap_or_default().to_owned()
    }
}

impl PayloadLen for String {
    fn payload_len(&self) -> usize {
        self.len()
    }
}

impl ToWire for Vec<u8> {
    type Out = Option<WIPOffset<Vector<'static, u8>>>;
    fn to_wire(&self, b: &mut BodyBuilder) -> Self::Out {
        (!self.is_empty()).then(|| b.fbb.create_vector(self))
    }
}

impl FromWire<Option<Vector<'_, u8>>> for Vec<u8> {
    fn from_wire(wire: Option<Vector<'_, u8>>) -> Self {
        wire.map(|v| v.bytes().to_vec()).unwrap_or_default()
    }
}

impl PayloadLen for Vec<u8> {
    fn payload_len(&self) -> usize {
        self.len()
    }
}

impl ToWire for Vec<String> {
    type Out = Option<WIPOffset<Vector<'static, ForwardsUOffset<&'static str>>>>;
    fn to_wire(&self, b: &mut BodyBuilder) -> Self::Out {
        if self.is_empty() {
            return None;
        }
        b.strings.clear();
        for s in self {
            let offset = b.fbb.create_string(s);
            b.strings.push(offset);
        }
        Some(b.fbb.create_vector(&b.strings))
    }
}

impl<'a> FromWire<Option<Vector<'a, ForwardsUOffset<&'a str>>>> for Vec<String> {
    fn from_wire(wire: Option<Vector<'a, ForwardsUOffset<&'a str>>>) -> Self {
        wire.map(|v| v.iter().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

impl PayloadLen for Vec<String> {
    fn payload_len(&self) -> usize {
        self.iter().map(|s| s.len() + 4).sum()
    }
}

impl ToWire for Option<Resume> {
    type Out = Option<WIPOffset<wire::Resume<'static>>>;
    fn to_wire(&self, b: &mut BodyBuilder) -> Self::Out {
        self.as_ref().map(|r| {
            let args = wire::ResumeArgs {
                session: r.session.to_wire(b),
                last_seq: r.last_seq,
            };
            wire::Resume::create(&mut b.fbb, &args)
        })
    }
}

impl<'a> FromWire<Option<wire::Resume<'a>>> for Option<Resume> {
    fn from_wire(wire: Option<wire::Resume<'a>>) -> Self {
        wire.map(|r| Resume {
            session: String::from_wire(r.session()),
            last_seq: r.last_seq(),
        })
    }
}

impl PayloadLen for Option<Resume> {
    fn payload_len(&self) -> usize {
        self.as_ref().map_or(0, |r| r.session.len())
    }
}

impl ToWire for Vec<Candidate> {
    type Out = Option<WIPOffset<Vector<'static, ForwardsUOffset<wire::Candidate<'static>>>>>;
    fn to_wire(&self, b: &mut BodyBuilder) -> Self::Out {
        if self.is_empty() {
            return None;
        }
        b.candidates.clear();
        for c in self {
            let args = wire::CandidateArgs {
                candidate: c.candidate.to_wire(b),
                sdp_mid: c.sdp_mid.to_wire(b),
                sdp_mline_index: c.sdp_mline_index,
            };
            let offset = wire::Candidate::create(&mut b.fbb, &args);
            b.candidates.push(offset);
        }
        Some(b.fbb.create_vector(&b.candidates))
    }
}

impl<'a> FromWire<Option<Vector<'a, ForwardsUOffset<wire::Candidate<'a>>>>> for Vec<Candidate> {
    fn from_wire(wire: Option<Vector<'a, ForwardsUOffset<wire::Candidate<'a>>>>) -> Self {
        wire.map(|v| {
            v.iter()
                .map(|c| Candidate {
                    candidate: String::from_wire(c.candidate()),
                    sdp_mid: String::from_wire(c.sdp_mid()),
                    sdp_mline_index: c.sdp_mline_index(),
                })
                .collect()
        })
        .unwrap_or_default()
    }
}

impl PayloadLen for Vec<Candidate> {
    fn payload_len(&self) -> usize {
        self.iter()
            .map(|c| c.candidate.len() + c.sdp_mid.len() + 4)
            .sum()
    }
}

impl ToWire for EventKind {
    type Out = wire::EventKind;
    fn to_wire(&self, _: &mut BodyBuilder) -> wire::EventKind {
        wire::EventKind(self.as_u8())
    }
}

impl FromWire<wire::EventKind> for EventKind {
    fn from_wire(wire: wire::EventKind) -> Self {
        // decode_view refuses kinds this version does not know.
        EventKind::from_u8(wire.0).unwrap_or_default()
    }
}

impl PayloadLen for EventKind {
    fn payload_len(&self) -> usize {
        0
    }
}
