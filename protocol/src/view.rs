//! Zero-copy decoding: [`decode_view`] checks the frame, verifies the body with the
//! FlatBuffers verifier under tight limits, and returns a [`FrameView`] that reads fields in
//! place; [`FrameView::to_owned`] converts to an owned [`Message`].

use flatbuffers::{Follow, Verifiable, VerifierOptions};

use super::frame::{FrameError, MAX_FRAME_LEN, split_frame};
use super::frames::{FrameType, FrameView, Message, frame_table};
use super::generated as wire;
use super::message::EventKind;

/// Verifier limits. The deepest legitimate body is IceBatch → candidates → Candidate, and a
/// legitimate body has no shared sub-objects, so its apparent size stays near its real size
/// (shared vtables add a little). The apparent-size cap also bounds what
/// [`FrameView::to_owned`] can allocate when a hostile body points many offsets at one
/// large string.
const VERIFIER: VerifierOptions = VerifierOptions {
    max_depth: 8,
    max_tables: MAX_FRAME_LEN / 4,
    max_apparent_size: 4 * MAX_FRAME_LEN,
    ignore_missing_null_terminator: false,
};

/// Verifies `body` as a root table `T`.
fn root<'a, T>(frame_type: FrameType, body: &'a [u8]) -> Result<T::Inner, FrameError>
where
    T: 'a + Follow<'a> + Verifiable,
{
    flatbuffers::root_with_opts::<T>(&VERIFIER, body).map_err(|e| FrameError::InvalidBody {
        frame_type,
        // The verifier's message ends with a multi-line trace; the first line says it all.
        reason: e.to_string().lines().next().unwrap_or_default().to_owned(),
    })
}

/// Generates [`view`]: the body verified as the root table of its frame type.
macro_rules! define_view {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $byte:literal, $label:literal, $owned:ident / $args:ident { $($field:ident),* $(,)? };
    )*) => {
        /// Verifies `body` as the root table of `frame_type`.
        fn view(frame_type: FrameType, body: &[u8]) -> Result<FrameView<'_>, FrameError> {
            Ok(match frame_type {
                $(FrameType::$variant => FrameView::$variant(root::<wire::$variant>(frame_type, body)?),)*
            })
        }
    };
}
frame_table!(define_view);

/// Verifies a whole message (exactly one frame) and returns a zero-copy view of the body.
pub fn decode_view(bytes: &[u8]) -> Result<FrameView<'_>, FrameError> {
    let (frame_type, body) = split_frame(bytes)?;
    let view = view(frame_type, body)?;
    // FlatBuffers enums are open; refuse event kinds this version does not know so that
    // to_owned cannot fail.
    if let FrameView::Event(event) = view
        && EventKind::from_u8(event.kind().0).is_none()
    {
        return Err(FrameError::InvalidBody {
            frame_type,
            reason: format!("unknown event kind {}", event.kind().0),
        });
    }
    Ok(view)
}

/// [`decode_view`] followed by [`FrameView::to_owned`].
pub fn decode(bytes: &[u8]) -> Result<Message, FrameError> {
    decode_view(bytes).map(|view| view.to_owned())
}
