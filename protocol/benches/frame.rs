//! Per-frame cost of the wire checks every inbound message pays: the CRC32 over type + body
//! (`split_frame`), the FlatBuffers verifier on top (`decode_view`), and the owned decode
//! (`decode`), for a trickle ICE candidate (the hot relay frame) and an SDP offer (the largest
//! common frame). `e2e/bench` reads the estimates from target/criterion/*/new/estimates.json.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard_protocol::{Encoder, IceCandidate, Message, Sdp, decode, decode_view, split_frame};

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let ice = Message::IceCandidate(IceCandidate {
        room: "bench-0000abcd-17".into(),
        call_id: "c-0123456789abcdef".into(),
        from: "u-0000abcd-17-0".into(),
        to: "u-0000abcd-17-1".into(),
        candidate: "candidate:1 1 udp 2122260223 192.0.2.10 54321 typ host generation 0".into(),
        sdp_mid: "0".into(),
        sdp_mline_index: 0,
    });
    let sdp = format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n{}",
        "a=x\r\n".repeat(400)
    );
    let offer = Message::Offer(Sdp {
        request_id: 7,
        room: "bench-0000abcd-17".into(),
        call_id: "c-0123456789abcdef".into(),
        from: "u-0000abcd-17-0".into(),
        to: "u-0000abcd-17-1".into(),
        sdp,
    });
    let mut encoder = Encoder::new();
    [("ice", ice), ("offer", offer)]
        .into_iter()
        .map(|(name, msg)| {
            let bytes = encoder.encode_to_vec(&msg).expect("bench frames encode");
            (name, bytes)
        })
        .collect()
}

fn frame_checks(c: &mut Criterion) {
    for (name, bytes) in frames() {
        let mut group = c.benchmark_group(format!("frame_{name}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function("crc32", |b| {
            b.iter(|| split_frame(black_box(&bytes)).map(|(t, body)| (t, body.len())))
        });
        group.bench_function("crc32_verify", |b| {
            b.iter(|| decode_view(black_box(&bytes)).is_ok())
        });
        group.bench_function("decode_owned", |b| {
            b.iter(|| decode(black_box(&bytes)).is_ok())
        });
        group.finish();
    }
}

criterion_group!(benches, frame_checks);
criterion_main!(benches);
