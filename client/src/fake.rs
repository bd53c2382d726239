//! Fake but syntactically valid WebRTC payloads for demos and benches: an SDP offer/answer and
//! host ICE candidates, each able to carry a send timestamp the receiver reads back to measure
//! the relay hop.
//!
//! The timestamp rides in places a real parser accepts: the SDP's `o=` session version and an
//! `a=x-switchboard-sent` attribute, and the candidate's foundation field.

use std::fmt::Write as _;

use switchboard_protocol::Candidate;

/// Which side of the negotiation an SDP is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpKind {
    /// `a=setup:actpass`
    Offer,
    /// `a=setup:active`
    Answer,
}

/// A minimal audio+video WebRTC session description (CRLF line ends), carrying `stamp`.
pub fn sdp(kind: SdpKind, stamp: u64) -> String {
    let setup = match kind {
        SdpKind::Offer => "actpass",
        SdpKind::Answer => "active",
    };
    let mut out = String::with_capacity(900);
    let mut line = |text: &str| {
        out.push_str(text);
        out.push_str("\r\n");
    };
    line("v=0");
    line(&format!("o=- 4611731400430051336 {stamp} IN IP4 127.0.0.1"));
    line("s=-");
    line("t=0 0");
    line("a=group:BUNDLE 0 1");
    line("a=msid-semantic: WMS switchboard");
    line(&format!("a=x-switchboard-sent:{stamp}"));
    line("m=audio 9 UDP/TLS/RTP/SAVPF 111");
    line("c=IN IP4 0.0.0.0");
    line("a=rtcp:9 IN IP4 0.0.0.0");
    line("a=ice-ufrag:sBfk");
    line("a=ice-pwd:5sM0pVhQmQeGnYBbsAqW3rU2");
    line("a=ice-options:trickle");
    line(
        "a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:\
         DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08",
    );
    line(&format!("a=setup:{setup}"));
    line("a=mid:0");
    line("a=sendrecv");
    line("a=rtcp-mux");
    line("a=rtpmap:111 opus/48000/2");
    line("a=fmtp:111 minptime=10;useinbandfec=1");
    line("m=video 9 UDP/TLS/RTP/SAVPF 96");
    line("c=IN IP4 0.0.0.0");
    line("a=rtcp:9 IN IP4 0.0.0.0");
    line("a=ice-ufrag:sBfk");
    line("a=ice-pwd:5sM0pVhQmQeGnYBbsAqW3rU2");
    line(&format!("a=setup:{setup}"));
    line("a=mid:1");
    line("a=sendrecv");
    line("a=rtcp-mux");
    line("a=rtpmap:96 VP8/90000");
    out
}

/// The stamp an [`sdp`] carries.
pub fn sdp_stamp(sdp: &str) -> Option<u64> {
    sdp.lines()
        .find_map(|line| line.trim_end().strip_prefix("a=x-switchboard-sent:"))
        .and_then(|v| v.parse().ok())
}

/// Host candidate number `n` (port 50000 + n), carrying `stamp` in its foundation.
pub fn candidate(n: u16, stamp: u64) -> Candidate {
    let mut text = String::with_capacity(96);
    let port = 50_000u32 + u32::from(n);
    let _ = write!(
        text,
        "candidate:{stamp} 1 udp 2122260223 127.0.0.1 {port} typ host generation 0"
    );
    Candidate {
        candidate: text,
        sdp_mid: "0".to_string(),
        sdp_mline_index: 0,
    }
}

/// The stamp a [`candidate`] carries.
pub fn candidate_stamp(candidate: &str) -> Option<u64> {
    candidate
        .strip_prefix("candidate:")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_round_trips_its_stamp_and_looks_like_sdp() {
        let offer = sdp(SdpKind::Offer, 123_456_789);
        assert!(offer.starts_with("v=0\r\no=- "));
        assert!(offer.ends_with("\r\n"));
        assert!(offer.contains("a=setup:actpass"));
        assert!(
            offer
                .lines()
                .all(|l| l.len() >= 3 && l.as_bytes()[1] == b'=')
        );
        assert_eq!(sdp_stamp(&offer), Some(123_456_789));
        let answer = sdp(SdpKind::Answer, 7);
        assert!(answer.contains("a=setup:active"));
        assert_eq!(sdp_stamp(&answer), Some(7));
        assert_eq!(sdp_stamp("v=0\r\n"), None);
    }

    #[test]
    fn candidate_round_trips_its_stamp() {
        let c = candidate(3, 42);
        assert_eq!(
            c.candidate,
            "candidate:42 1 udp 2122260223 127.0.0.1 50003 typ host generation 0"
        );
        assert_eq!(candidate_stamp(&c.candidate), Some(42));
        assert_eq!(candidate_stamp(""), None);
        assert_eq!(candidate_stamp("candidate:abc 1 udp"), None);
    }
}
