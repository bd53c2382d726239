//! One readable line per frame for `signaling-node client` (pure), and the timestamped,
//! role-labelled printer the client uses.

use std::fmt::Write as _;
use std::time::Instant;

use switchboard_protocol::{EventKind, Message};

/// A frame in one line, e.g. `Event seq=3 CallState call=c1 state=negotiating`.
pub fn frame(msg: &Message) -> String {
    let mut out = String::new();
    let _ = match msg {
        Message::Hello(m) => write!(
            out,
            "Hello versions={:?}{}",
            m.versions,
            m.resume.as_ref().map_or(String::new(), |r| format!(
                " resume={} last_seq={}",
                short(&r.session),
                r.last_seq
            ))
        ),
        Message::Welcome(m) => write!(
            out,
            "Welcome session={} version=v{} node={} heartbeat={}ms{}",
            short(&m.session),
            m.version,
            or_dash(&m.node),
            m.heartbeat_ms,
            if m.resumed { " resumed" } else { "" }
        ),
        Message::Join(m) => write!(out, "Join room={} req={}", m.room, m.request_id),
        Message::Joined(m) => write!(
            out,
            "Joined room={} members=[{}] last_seq={}",
            m.room,
            m.members.join(", "),
            m.last_seq
        ),
        Message::Leave(m) => write!(out, "Leave room={}", m.room),
        Message::Invite(m) => write!(
            out,
            "Invite call={} from={} to={}",
            short(&m.call_id),
            or_dash(&m.from),
            m.to
        ),
        Message::InviteResult(m) => {
            if m.accepted {
                write!(
                    out,
                    "InviteResult call={} from={} accepted",
                    short(&m.call_id),
                    or_dash(&m.from)
                )
            } else {
                write!(
                    out,
                    "InviteResult call={} from={} rejected reason={:?}",
                    short(&m.call_id),
                    or_dash(&m.from),
                    m.reason
                )
            }
        }
        Message::Offer(m) | Message::Answer(m) => write!(
            out,
            "{} call={} from={} sdp={}B",
            if matches!(msg, Message::Offer(_)) {
                "Offer"
            } else {
                "Answer"
            },
            short(&m.call_id),
            or_dash(&m.from),
            m.sdp.len()
        ),
        Message::IceCandidate(m) => {
            if m.is_end_of_candidates() {
                write!(
                    out,
                    "IceCandidate call={} from={} end-of-candidates",
                    short(&m.call_id),
                    or_dash(&m.from)
                )
            } else {
                write!(
                    out,
                    "IceCandidate call={} from={} {}",
                    short(&m.call_id),
                    or_dash(&m.from),
                    m.candidate
                )
            }
        }
        Message::IceBatch(m) => write!(
            out,
            "IceBatch call={} from={} candidates={}{}",
            short(&m.call_id),
            or_dash(&m.from),
            m.candidates.len(),
            if m.candidates.iter().any(|c| c.candidate.is_empty()) {
                " (with end-of-candidates)"
            } else {
                ""
            }
        ),
        Message::Hangup(m) => write!(
            out,
            "Hangup call={} from={} reason={:?}",
            short(&m.call_id),
            or_dash(&m.from),
            m.reason
        ),
        Message::Event(m) => {
            let _ = write!(out, "Event seq={} {}", m.seq, event_kind(m.kind));
            match m.kind {
                EventKind::CallState => {
                    write!(out, " call={} state={}", short(&m.call_id), m.state)
                }
                _ => write!(out, " user={}", m.user),
            }
        }
        Message::Ping(m) => write!(out, "Ping nonce={}", m.nonce),
        Message::Pong(m) => write!(out, "Pong nonce={}", m.nonce),
        Message::Redirect(m) => write!(out, "Redirect room={} url={}", m.room, m.url),
        Message::Migrate(m) => write!(out, "Migrate room={} url={}", m.room, m.url),
        Message::Error(m) => {
            let label =
                switchboard_protocol::ErrorCode::from_code(m.code).map_or("unknown", |c| c.label());
            let _ = write!(out, "Error {} {}: {}", m.code, label, m.message);
            if m.request_id != 0 {
                let _ = write!(out, " (request {})", m.request_id);
            }
            Ok(())
        }
    };
    out
}

/// The CamelCase name of an event kind, as in the schema.
pub fn event_kind(kind: EventKind) -> &'static str {
    match kind {
        EventKind::MemberJoined => "MemberJoined",
        EventKind::MemberLeft => "MemberLeft",
        EventKind::CallState => "CallState",
        EventKind::MemberSuspended => "MemberSuspended",
        EventKind::MemberResumed => "MemberResumed",
    }
}

/// Ids longer than 14 characters are shortened to their first 12 and `…`.
pub fn short(id: &str) -> String {
    if id.chars().count() > 14 {
        let head: String = id.chars().take(12).collect();
        format!("{head}…")
    } else {
        id.to_string()
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Writes `  1.234s host  ← …` lines to stdout.
#[derive(Debug, Clone)]
pub struct Printer {
    start: Instant,
    label: String,
}

impl Printer {
    /// A printer whose clock starts at `start`; `label` (e.g. `host`) prefixes every line.
    pub fn new(start: Instant, label: &str) -> Self {
        Self {
            start,
            label: label.to_string(),
        }
    }

    /// The line for `text` with `mark` (`←` received, `→` sent, `●` status, `✗` problem).
    pub fn line(&self, mark: &str, text: &str) -> String {
        let secs = self.start.elapsed().as_secs_f64();
        if self.label.is_empty() {
            format!("{secs:>8.3}s {mark} {text}")
        } else {
            format!("{secs:>8.3}s {:<5} {mark} {text}", self.label)
        }
    }

    /// Prints a received frame.
    pub fn received(&self, msg: &Message) {
        println!("{}", self.line("←", &frame(msg)));
    }

    /// Prints a sent frame (described by the caller).
    pub fn sent(&self, text: &str) {
        println!("{}", self.line("→", text));
    }

    /// Prints a status line.
    pub fn status(&self, text: &str) {
        println!("{}", self.line("●", text));
    }

    /// Prints a problem.
    pub fn problem(&self, text: &str) {
        println!("{}", self.line("✗", text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::{ErrorFrame, Event, IceCandidate, Joined, Sdp};

    #[test]
    fn formats_frames_readably() {
        let event = Message::Event(Event {
            room: "r".into(),
            seq: 3,
            kind: EventKind::CallState,
            user: "alice".into(),
            call_id: "c1".into(),
            state: "negotiating".into(),
            at_ms: 0,
        });
        assert_eq!(
            frame(&event),
            "Event seq=3 CallState call=c1 state=negotiating"
        );
        let joined = Message::Joined(Joined {
            request_id: 1,
            room: "studio".into(),
            members: vec!["alice".into(), "bob".into()],
            last_seq: 4,
        });
        assert_eq!(
            frame(&joined),
            "Joined room=studio members=[alice, bob] last_seq=4"
        );
        let offer = Message::Offer(Sdp {
            call_id: "c-0123456789abcdef".into(),
            from: "alice".into(),
            sdp: "v=0\r\n".into(),
            ..Sdp::default()
        });
        assert_eq!(frame(&offer), "Offer call=c-0123456789… from=alice sdp=5B");
        let eoc = Message::IceCandidate(IceCandidate {
            call_id: "c1".into(),
            ..IceCandidate::default()
        });
        assert_eq!(frame(&eoc), "IceCandidate call=c1 from=- end-of-candidates");
        let error = Message::Error(ErrorFrame {
            code: 1005,
            message: "room is full".into(),
            request_id: 9,
        });
        assert_eq!(
            frame(&error),
            "Error 1005 room_full: room is full (request 9)"
        );
    }

    #[test]
    fn printer_lines_carry_time_label_and_mark() {
        let p = Printer::new(Instant::now(), "guest");
        let line = p.line("←", "Invite call=c1");
        assert!(line.ends_with("guest ← Invite call=c1"), "{line}");
        assert!(line.trim_start().starts_with("0.0"), "{line}");
        let plain = Printer::new(Instant::now(), "");
        assert!(plain.line("●", "x").ends_with("s ● x"));
    }
}
