//! The liveness stream a node serves and the operator holds open (docs/architecture.md,
//! "Failure detection"), and the indirect probe the operator asks other nodes for: wire
//! constants and pure parsers, no I/O.
//!
//! **Stream.** `GET /liveness` on the node's admin port answers `200` with the headers
//! [`NODE_HEADER`] and [`INCARNATION_HEADER`] and then a body that never ends while the
//! process runs: one [`BEAT`] byte every [`BEAT_INTERVAL`]. A node that shuts down cleanly
//! writes [`BYE`] before closing. So the stream's end without `BYE` means the process is gone
//! (the kernel closes a dead process's sockets) or the connection broke, and a stream that
//! stays open but silent means the process or its network stopped.
//!
//! **Probe.** `GET /probe?node=<pod>&timeout_ms=<n>` asks a node to open the stream of `<pod>`
//! itself (from its own registration of that pod) and report in JSON ([`ProbeReport`]) whether
//! a beat arrived within the timeout. The target is named, never an address, so the endpoint
//! cannot be pointed anywhere else.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Path of the stream on the admin port.
pub const PATH: &str = "/liveness";
/// Path of the indirect probe on the admin port.
pub const PROBE_PATH: &str = "/probe";
/// Response header naming the node (its pod name).
pub const NODE_HEADER: &str = "x-switchboard-node";
/// Response header carrying the process's incarnation (random per process start).
pub const INCARNATION_HEADER: &str = "x-switchboard-incarnation";
/// How often the node writes a beat.
pub const BEAT_INTERVAL: Duration = Duration::from_millis(100);
/// One beat.
pub const BEAT: &[u8] = b".";
/// The last bytes of a stream that ends because the node shuts down.
pub const BYE: &[u8] = b"bye\n";
/// Longest probe timeout a node accepts.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest response head accepted (status line and headers).
pub const MAX_HEAD: usize = 4096;

/// Where a node's stream is and which process serves it (part of its registration).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// `host:port` of the node's admin listener.
    pub addr: String,
    /// Random per process start: a restarted process has another one.
    pub incarnation: u64,
}

/// The request that opens a stream.
pub fn stream_request(host: &str) -> Vec<u8> {
    format!("GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n").into_bytes()
}

/// The request of an indirect probe of `node` (answered once, then the connection closes).
pub fn probe_request(host: &str, node: &str, timeout: Duration) -> Vec<u8> {
    format!(
        "GET {PROBE_PATH}?node={node}&timeout_ms={} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        timeout.as_millis()
    )
    .into_bytes()
}

/// What a probing node found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The probed node.
    pub node: String,
    /// A beat arrived within the timeout.
    pub reachable: bool,
    /// The incarnation the probed stream announced, if it answered at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,
    /// Why it was not reachable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// A stream's bytes that are not what a node sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The head is longer than [`MAX_HEAD`].
    #[error("response head longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    /// Not an HTTP 200 response.
    #[error("unexpected response: {0}")]
    Status(String),
    /// The identifying headers are missing or unreadable.
    #[error("missing or unreadable {0} header")]
    Header(&'static str),
}

/// What the bytes of a stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The head: who answers.
    Hello {
        /// The node's pod name.
        node: String,
        /// Its process incarnation.
        incarnation: u64,
    },
    /// Body bytes arrived: the process is alive.
    Beat,
    /// The node said goodbye: it shuts down cleanly.
    Bye,
}

/// Parses a stream as it arrives, whatever the read boundaries (the body may come chunked;
/// only its arrival and [`BYE`] matter).
#[derive(Debug, Default)]
pub struct StreamReader {
    head: Vec<u8>,
    in_body: bool,
    tail: Vec<u8>,
}

impl StreamReader {
    /// Feeds the next bytes read; returns what they showed, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Seen>, StreamError> {
        let mut seen = Vec::new();
        let mut body = bytes;
        if !self.in_body {
            self.head.extend_from_slice(bytes);
            let Some(end) = find(&self.head, b"\r\n\r\n") else {
                if self.head.len() > MAX_HEAD {
                    return Err(StreamError::HeadTooLong);
                }
                return Ok(seen);
            };
            let head = std::mem::take(&mut self.head);
            let (node, incarnation) = parse_head(&head[..end])?;
            seen.push(Seen::Hello { node, incarnation });
            self.in_body = true;
            // What followed the head in this read is body.
            let consumed = bytes.len() - (head.len() - end - 4);
            body = &bytes[consumed..];
        }
        if body.is_empty() {
            return Ok(seen);
        }
        seen.push(Seen::Beat);
        // Keep enough of the end to find BYE across reads.
        self.tail.extend_from_slice(body);
        if find(&self.tail, BYE).is_some() {
            seen.push(Seen::Bye);
            self.tail.clear();
        } else if self.tail.len() > BYE.len() {
            let cut = self.tail.len() - BYE.len();
            self.tail.drain(..cut);
        }
        Ok(seen)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Result<(String, u64), StreamError> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1);
    if !status.starts_with("HTTP/1.") || code != Some("200") {
        return Err(StreamError::Status(status.chars().take(80).collect()));
    }
    let mut node = None;
    let mut incarnation = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case(NODE_HEADER) {
            node = Some(value.to_string());
        } else if name.eq_ignore_ascii_case(INCARNATION_HEADER) {
            incarnation = value.parse::<u64>().ok();
        }
    }
    Ok((
        node.filter(|n| !n.is_empty())
            .ok_or(StreamError::Header(NODE_HEADER))?,
        incarnation.ok_or(StreamError::Header(INCARNATION_HEADER))?,
    ))
}

/// The report in a complete probe response (head and JSON body), if it is one.
pub fn parse_probe_response(response: &[u8]) -> Result<ProbeReport, StreamError> {
    let Some(end) = find(response, b"\r\n\r\n") else {
        return Err(StreamError::Status("incomplete response".into()));
    };
    let status = String::from_utf8_lossy(&response[..end]);
    let status = status.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(StreamError::Status(status.chars().take(80).collect()));
    }
    serde_json::from_slice(&response[end + 4..])
        .map_err(|e| StreamError::Status(format!("probe report: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nx-switchboard-node: n-0\r\nX-Switchboard-Incarnation: 42\r\ntransfer-encoding: chunked\r\n\r\n";

    #[test]
    fn a_stream_is_read_whatever_the_read_boundaries() {
        let mut whole = HEAD.to_vec();
        whole.extend_from_slice(b"1\r\n.\r\n1\r\n.\r\n4\r\nbye\n\r\n0\r\n\r\n");
        for split in 1..whole.len() {
            let mut reader = StreamReader::default();
            let mut seen = reader.feed(&whole[..split]).unwrap();
            seen.extend(reader.feed(&whole[split..]).unwrap());
            assert_eq!(
                seen.first(),
                Some(&Seen::Hello {
                    node: "n-0".into(),
                    incarnation: 42
                }),
                "split at {split}"
            );
            assert!(seen.contains(&Seen::Beat), "split at {split}");
            assert_eq!(
                seen.iter().filter(|s| **s == Seen::Bye).count(),
                1,
                "split at {split}"
            );
        }
    }

    #[test]
    fn bye_split_over_many_reads_is_found() {
        let mut reader = StreamReader::default();
        reader.feed(HEAD).unwrap();
        let mut seen = Vec::new();
        for b in b"..b".iter().chain(b"y").chain(b"e\n") {
            seen.extend(reader.feed(&[*b]).unwrap());
        }
        assert_eq!(seen.last(), Some(&Seen::Bye));
    }

    #[test]
    fn foreign_answers_are_errors() {
        let mut reader = StreamReader::default();
        assert!(matches!(
            reader.feed(b"HTTP/1.1 404 Not Found\r\n\r\n"),
            Err(StreamError::Status(_))
        ));
        let mut reader = StreamReader::default();
        assert_eq!(
            reader.feed(b"HTTP/1.1 200 OK\r\nx-switchboard-node: a\r\n\r\n"),
            Err(StreamError::Header(INCARNATION_HEADER))
        );
        let mut reader = StreamReader::default();
        assert_eq!(
            reader.feed(&vec![b'x'; MAX_HEAD + 1]),
            Err(StreamError::HeadTooLong)
        );
    }

    #[test]
    fn probe_reports_round_trip() {
        let report = ProbeReport {
            node: "n-1".into(),
            reachable: false,
            incarnation: None,
            error: "timed out".into(),
        };
        let mut response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n".to_vec();
        response.extend(serde_json::to_vec(&report).unwrap());
        assert_eq!(parse_probe_response(&response).unwrap(), report);
        assert!(parse_probe_response(b"HTTP/1.1 500 Oops\r\n\r\n").is_err());
        let request = String::from_utf8(probe_request(
            "10.0.0.1:9100",
            "n-1",
            Duration::from_millis(250),
        ))
        .unwrap();
        assert!(request.starts_with("GET /probe?node=n-1&timeout_ms=250 HTTP/1.1\r\n"));
    }
}
