//! A bounded, stable-Rust stand-in for the `cargo fuzz` decode target
//! (protocol/fuzz/fuzz_targets/decode.rs): feeds random bytes and mutated valid frames
//! (with the length and CRC repaired half the time, so mutations reach the FlatBuffers
//! verifier) to the same decode + verify + re-encode round trip, and random bytes to the room
//! snapshot decoder. Counts inputs, typed rejections, accepted inputs, panics and hangs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use signaling_node::room::snapshot;
use switchboard_protocol::{CRC_LEN, Encoder, LEN_PREFIX, Message, decode, decode_view, frame_len};

/// What one fuzz run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FuzzReport {
    /// Inputs tried.
    pub tried: u64,
    /// Inputs the frame decoder accepted (and that round-tripped).
    pub accepted: u64,
    /// Inputs rejected with a typed error.
    pub rejected: u64,
    /// Snapshot-decoder inputs tried.
    pub snapshots_tried: u64,
    /// Inputs that panicked (hex of the first few).
    pub crashes: Vec<String>,
    /// Inputs that took longer than the hang bound (hex of the first few).
    pub hangs: Vec<String>,
}

/// One input taking longer than this counts as a hang.
pub const HANG_BOUND: Duration = Duration::from_secs(1);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(256).map(|b| format!("{b:02x}")).collect()
}

/// Every message type in default form, as JSON (the shapes the generator fills in).
fn shapes() -> Vec<Value> {
    let names = [
        "Hello",
        "Welcome",
        "Join",
        "Joined",
        "Leave",
        "Invite",
        "InviteResult",
        "Offer",
        "Answer",
        "IceCandidate",
        "IceBatch",
        "Hangup",
        "Event",
        "Ping",
        "Pong",
        "Redirect",
        "Migrate",
        "Error",
    ];
    names
        .iter()
        .filter_map(|name| {
            // Each variant's payload defaults to all-empty; serde fills the defaults in.
            let payload = default_payload(name)?;
            Some(serde_json::json!({ *name: payload }))
        })
        .collect()
}

/// The default payload of a variant, by round-tripping a sample through serde.
fn default_payload(name: &str) -> Option<Value> {
    use switchboard_protocol as p;
    let msg = match name {
        "Hello" => Message::Hello(p::Hello::default()),
        "Welcome" => Message::Welcome(p::Welcome::default()),
        "Join" => Message::Join(p::Join::default()),
        "Joined" => Message::Joined(p::Joined::default()),
        "Leave" => Message::Leave(p::Leave::default()),
        "Invite" => Message::Invite(p::Invite::default()),
        "InviteResult" => Message::InviteResult(p::InviteResult::default()),
        "Offer" => Message::Offer(p::Sdp::default()),
        "Answer" => Message::Answer(p::Sdp::default()),
        "IceCandidate" => Message::IceCandidate(p::IceCandidate::default()),
        "IceBatch" => Message::IceBatch(p::IceBatch::default()),
        "Hangup" => Message::Hangup(p::Hangup::default()),
        "Event" => Message::Event(p::Event::default()),
        "Ping" => Message::Ping(p::Ping::default()),
        "Pong" => Message::Pong(p::Pong::default()),
        "Redirect" => Message::Redirect(p::Redirect::default()),
        "Migrate" => Message::Migrate(p::Migrate::default()),
        "Error" => Message::Error(p::ErrorFrame::default()),
        _ => return None,
    };
    serde_json::to_value(msg).ok()?.get(name).cloned()
}

fn random_string(rng: &mut StdRng) -> String {
    let len = rng.random_range(0..48);
    (0..len)
        .map(|_| match rng.random_range(0..10) {
            0 => char::from_u32(rng.random_range(0x80..0x2_0000)).unwrap_or('?'),
            _ => char::from(rng.random_range(0x20u8..0x7f)),
        })
        .collect()
}

/// Fills every leaf of a default payload with random values of the same JSON type.
fn fill(value: &mut Value, rng: &mut StdRng) {
    match value {
        Value::String(s) => *s = random_string(rng),
        Value::Number(n) => {
            let limit: u64 = match rng.random_range(0..3) {
                0 => 0xff,
                1 => 0xffff,
                _ => u64::from(u32::MAX),
            };
            *n = rng.random_range(0..=limit).into();
        }
        Value::Bool(b) => *b = rng.random(),
        Value::Array(items) => {
            if let Some(first) = items.first().cloned() {
                let n = rng.random_range(0..4);
                items.clear();
                for _ in 0..n {
                    let mut item = first.clone();
                    fill(&mut item, rng);
                    items.push(item);
                }
            } else if rng.random_bool(0.5) {
                // Empty by default: most arrays hold strings or small numbers.
                let n = rng.random_range(0..4);
                for _ in 0..n {
                    items.push(if rng.random() {
                        Value::String(random_string(rng))
                    } else {
                        rng.random_range(0..3u8).into()
                    });
                }
            }
        }
        Value::Object(map) => map.values_mut().for_each(|v| fill(v, rng)),
        Value::Null => {}
    }
}

/// A random valid message encoded as a frame (falls back to a default one when the random
/// fill does not deserialize, e.g. an array of the wrong element type).
fn valid_frame(rng: &mut StdRng, shapes: &[Value], encoder: &mut Encoder) -> Vec<u8> {
    let shape = &shapes[rng.random_range(0..shapes.len())];
    let mut filled = shape.clone();
    fill(&mut filled, rng);
    let msg: Message = serde_json::from_value(filled)
        .or_else(|_| serde_json::from_value(shape.clone()))
        .unwrap_or(Message::Ping(switchboard_protocol::Ping::default()));
    encoder.encode_to_vec(&msg).unwrap_or_default()
}

/// CRC-32 (IEEE, reflected) over the type byte and the body, as the frame trailer carries it
/// (the node's own helper is private to its protocol module).
fn frame_crc(type_byte: u8, body: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in std::iter::once(&type_byte).chain(body) {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Applies 1–8 random mutations; half the time repairs the length prefix and CRC.
fn mutate(frame: &mut Vec<u8>, rng: &mut StdRng) {
    for _ in 0..rng.random_range(1..=8) {
        if frame.is_empty() {
            frame.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..frame.len());
        match rng.random_range(0..7) {
            0 => frame[at] ^= 1 << rng.random_range(0..8),
            1 => frame[at] = rng.random(),
            2 => frame[at] = [0, 0x7f, 0x80, 0xff][rng.random_range(0..4)],
            3 => frame.insert(at, rng.random()),
            4 => {
                frame.remove(at);
            }
            5 => frame.truncate(at),
            _ => {
                let end = (at + rng.random_range(1..16)).min(frame.len());
                let chunk = frame[at..end].to_vec();
                let to = rng.random_range(0..=frame.len());
                frame.splice(to..to, chunk);
            }
        }
    }
    if rng.random_bool(0.5) && frame.len() >= LEN_PREFIX + 1 + CRC_LEN {
        let len = frame.len() - LEN_PREFIX;
        frame[..LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
        let crc_at = frame.len() - CRC_LEN;
        let crc = frame_crc(frame[LEN_PREFIX], &frame[LEN_PREFIX + 1..crc_at]);
        frame[crc_at..].copy_from_slice(&crc.to_be_bytes());
    }
}

/// The fuzz target's property: a typed error, or a message that re-encodes to a frame that
/// decodes to the same message. `Err` describes a broken round trip (counted as a crash).
pub fn check_frame(data: &[u8]) -> Result<bool, String> {
    if let Ok(Some(len)) = frame_len(data) {
        if len > data.len() {
            return Err(format!("frame_len {len} > input {}", data.len()));
        }
        let _ = decode(&data[..len]);
    }
    match decode_view(data) {
        Ok(view) => {
            let msg = view.to_owned();
            if msg.frame_type() != view.frame_type() {
                return Err("owned and viewed frame types differ".into());
            }
            let again = Encoder::new()
                .encode_to_vec(&msg)
                .map_err(|e| format!("an accepted message does not re-encode: {e}"))?;
            match decode(&again) {
                Ok(back) if back == msg => Ok(true),
                other => Err(format!(
                    "round trip changed the message: {other:?} != {msg:?}"
                )),
            }
        }
        Err(err) => {
            let _ = err.to_string();
            let _ = err.closes_connection();
            Ok(false)
        }
    }
}

/// Runs `iterations` inputs from `seed` (or stops at `budget`), on a worker thread watched for
/// hangs.
pub fn run(seed: u64, iterations: u64, budget: Duration) -> FuzzReport {
    let progress = Arc::new(AtomicU64::new(0));
    let seen = progress.clone();
    let worker = std::thread::spawn(move || fuzz_loop(seed, iterations, budget, &seen));
    // Watchdog: the worker advances `progress` per input; a stall longer than 10 × the hang
    // bound is a hang we cannot interrupt, so report it and leave the thread behind.
    let mut last = (0, Instant::now());
    loop {
        if worker.is_finished() {
            return worker.join().unwrap_or_else(|_| FuzzReport {
                crashes: vec!["the fuzz worker itself panicked".into()],
                ..FuzzReport::default()
            });
        }
        std::thread::sleep(Duration::from_millis(100));
        let now = progress.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > HANG_BOUND * 10 {
            return FuzzReport {
                tried: now,
                hangs: vec![format!(
                    "input #{now} did not finish in {:?}",
                    HANG_BOUND * 10
                )],
                ..FuzzReport::default()
            };
        }
    }
}

fn fuzz_loop(seed: u64, iterations: u64, budget: Duration, progress: &AtomicU64) -> FuzzReport {
    let mut rng = StdRng::seed_from_u64(seed);
    let shapes = shapes();
    let mut encoder = Encoder::new();
    let mut report = FuzzReport::default();
    let started = Instant::now();
    // Quiet the default panic printer while we catch panics on purpose.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while report.tried < iterations && started.elapsed() < budget {
        let input: Vec<u8> = match rng.random_range(0..10) {
            0 => (0..rng.random_range(0..96)).map(|_| rng.random()).collect(),
            1 => valid_frame(&mut rng, &shapes, &mut encoder),
            _ => {
                let mut frame = valid_frame(&mut rng, &shapes, &mut encoder);
                mutate(&mut frame, &mut rng);
                frame
            }
        };
        let t0 = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| check_frame(&input)));
        let body = input.get(LEN_PREFIX + 1..).unwrap_or_default();
        let snap = catch_unwind(AssertUnwindSafe(|| snapshot::decode(body).is_ok()));
        report.snapshots_tried += 1;
        if t0.elapsed() > HANG_BOUND && report.hangs.len() < 5 {
            report.hangs.push(hex(&input));
        }
        match outcome {
            Ok(Ok(true)) => report.accepted += 1,
            Ok(Ok(false)) => report.rejected += 1,
            Ok(Err(why)) => {
                if report.crashes.len() < 5 {
                    report.crashes.push(format!("{why}: {}", hex(&input)));
                }
            }
            Err(_) => {
                if report.crashes.len() < 5 {
                    report.crashes.push(format!("panic: {}", hex(&input)));
                }
            }
        }
        if snap.is_err() && report.crashes.len() < 5 {
            report
                .crashes
                .push(format!("snapshot decoder panic: {}", hex(body)));
        }
        report.tried += 1;
        progress.store(report.tried, Ordering::Relaxed);
    }
    std::panic::set_hook(hook);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_type_has_a_shape() {
        assert_eq!(shapes().len(), 18);
    }

    #[test]
    fn valid_frames_decode_and_mutations_mostly_do_not() {
        let mut rng = StdRng::seed_from_u64(7);
        let shapes = shapes();
        let mut enc = Encoder::new();
        for _ in 0..200 {
            let frame = valid_frame(&mut rng, &shapes, &mut enc);
            assert_eq!(check_frame(&frame), Ok(true), "{}", hex(&frame));
        }
    }

    #[test]
    fn a_short_run_finds_no_crash_and_counts_every_input() {
        let report = run(1, 2_000, Duration::from_secs(60));
        assert_eq!(report.tried, 2_000);
        assert_eq!(report.accepted + report.rejected, 2_000, "{report:?}");
        assert!(report.rejected > 0 && report.accepted > 0, "{report:?}");
        assert!(
            report.crashes.is_empty() && report.hangs.is_empty(),
            "{report:?}"
        );
    }

    #[test]
    fn the_crc_matches_the_frames_the_encoder_writes() {
        let frame = Encoder::new()
            .encode_to_vec(&Message::Ping(switchboard_protocol::Ping::default()))
            .unwrap_or_default();
        let crc_at = frame.len() - CRC_LEN;
        let crc = frame_crc(frame[LEN_PREFIX], &frame[LEN_PREFIX + 1..crc_at]);
        assert_eq!(frame[crc_at..], crc.to_be_bytes());
    }

    #[test]
    fn a_broken_round_trip_is_reported_not_swallowed() {
        // A frame that is not even a frame is a typed rejection, not an error.
        assert_eq!(check_frame(&[0, 0, 0, 1]), Ok(false));
    }
}
