//! Recognising the call-state events the e2e call drivers wait for.

use switchboard_protocol::{Event, EventKind, Message};

/// `msg` as the call-state event of `call` reaching `state` (compared case-insensitively, as
/// nodes may capitalise it), or `None` for any other frame.
pub fn call_state_event<'a>(msg: &'a Message, call: &str, state: &str) -> Option<&'a Event> {
    match msg {
        Message::Event(e)
            if e.kind == EventKind::CallState
                && e.call_id == call
                && e.state.eq_ignore_ascii_case(state) =>
        {
            Some(e)
        }
        _ => None,
    }
}
