// Framing, CRC-32 and message encoding: round trips of every frame type and each malformed
// input mapped to its typed error, as the node's codec checks them.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { crc32 } from '../src/crc32.js';
import { decodeFrame, encodeFrame, FrameError, FrameType, MAX_BODY_LEN } from '../src/frame.js';
import { decodeMessage, encodeMessage, EventKind, type Message } from '../src/messages.js';

const enc = new TextEncoder();

test('crc32 matches the IEEE check values', () => {
  assert.equal(crc32(enc.encode('123456789')), 0xcbf43926);
  assert.equal(crc32(new Uint8Array()), 0);
  assert.equal(crc32(enc.encode('The quick brown fox jumps over the lazy dog')), 0x414fa339);
});

test('a frame is length, type, body and crc, all big endian', () => {
  const frame = encodeFrame(FrameType.Ping, new Uint8Array([1, 2, 3]));
  assert.equal(frame.length, 4 + 1 + 3 + 4);
  const view = new DataView(frame.buffer);
  assert.equal(view.getUint32(0), 8);
  assert.equal(frame[4], FrameType.Ping);
  assert.equal(view.getUint32(8), crc32(new Uint8Array([FrameType.Ping, 1, 2, 3])));
  const raw = decodeFrame(frame);
  assert.equal(raw.type, FrameType.Ping);
  assert.deepEqual([...raw.body], [1, 2, 3]);
});

function kindOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof FrameError, `expected FrameError, got ${String(err)}`);
    return err.kind;
  }
  assert.fail('no error');
}

test('malformed frames map to typed errors', () => {
  const good = encodeFrame(FrameType.Ping, new Uint8Array([9, 9, 9, 9, 9, 9, 9, 9]));
  assert.equal(kindOf(() => decodeFrame(good.subarray(0, 3))), 'truncated');
  assert.equal(kindOf(() => decodeFrame(good.subarray(0, good.length - 1))), 'truncated');
  const extra = new Uint8Array(good.length + 2);
  extra.set(good);
  assert.equal(kindOf(() => decodeFrame(extra)), 'trailing_bytes');
  const corrupt = good.slice();
  corrupt[6] = corrupt[6]! ^ 0xff;
  assert.equal(kindOf(() => decodeFrame(corrupt)), 'crc_mismatch');
  const short = new Uint8Array([0, 0, 0, 4, 1, 0, 0, 0]);
  assert.equal(kindOf(() => decodeFrame(short)), 'too_short');
  const long = new Uint8Array(8);
  new DataView(long.buffer).setUint32(0, 65_537);
  assert.equal(kindOf(() => decodeFrame(long)), 'too_long');
  const unknown = encodeFrame(FrameType.Ping, new Uint8Array(8));
  unknown[4] = 99;
  new DataView(unknown.buffer).setUint32(unknown.length - 4, crc32(unknown.subarray(4, unknown.length - 4)));
  assert.equal(kindOf(() => decodeFrame(unknown)), 'unknown_type');
  assert.equal(kindOf(() => encodeFrame(FrameType.Offer, new Uint8Array(MAX_BODY_LEN + 1))), 'body_too_large');
  // A body that passes the CRC but is no table: refused, not read out of bounds.
  assert.equal(kindOf(() => decodeMessage(encodeFrame(FrameType.Joined, new Uint8Array([1, 2])))), 'invalid_body');
  const forged = new Uint8Array(16);
  new DataView(forged.buffer).setUint32(0, 0x7fffffff, true);
  assert.equal(kindOf(() => decodeMessage(encodeFrame(FrameType.Joined, forged))), 'invalid_body');
});

test('an oversized SDP cannot be encoded into one frame', () => {
  const sdp = 'v=0\r\n' + 'a'.repeat(70_000);
  assert.equal(
    kindOf(() => encodeMessage({ type: 'Offer', requestId: 1, room: 'r', callId: 'c', from: 'a', to: 'b', sdp })),
    'body_too_large',
  );
});

const samples: Message[] = [
  { type: 'Hello', token: 'tok', versions: [2, 1], resume: { session: 's-1', lastSeq: 42 } },
  { type: 'Hello', token: 'tok', versions: [1], resume: undefined },
  { type: 'Welcome', session: 's-1', version: 2, node: 'node-a', heartbeatMs: 15000, resumed: true },
  { type: 'Join', requestId: 7, room: 'studio' },
  { type: 'Joined', requestId: 7, room: 'studio', members: ['alice', 'bob'], lastSeq: 3 },
  { type: 'Leave', requestId: 8, room: 'studio' },
  { type: 'Invite', requestId: 9, room: 'studio', callId: 'c-1', from: 'alice', to: 'bob' },
  { type: 'InviteResult', requestId: 10, room: 'studio', callId: 'c-1', from: 'bob', to: 'alice', accepted: false, reason: 'busy' },
  { type: 'Offer', requestId: 11, room: 'studio', callId: 'c-1', from: 'alice', to: 'bob', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n' },
  { type: 'Answer', requestId: 12, room: 'studio', callId: 'c-1', from: 'bob', to: 'alice', sdp: 'v=0\r\n' },
  { type: 'IceCandidate', room: 'studio', callId: 'c-1', from: 'alice', to: 'bob', candidate: 'candidate:1 1 udp 1 127.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 },
  {
    type: 'IceBatch', room: 'studio', callId: 'c-1', from: 'alice', to: 'bob',
    candidates: [{ candidate: 'candidate:1', sdpMid: '0', sdpMLineIndex: 0 }, { candidate: 'candidate:2', sdpMid: '1', sdpMLineIndex: 1 }],
  },
  { type: 'Hangup', requestId: 13, room: 'studio', callId: 'c-1', from: 'alice', reason: 'bye' },
  { type: 'Event', room: 'studio', seq: 5, kind: EventKind.CallState, user: 'alice', callId: 'c-1', state: 'connected', atMs: 1_700_000_000_000 },
  { type: 'Ping', nonce: 0xfedcba9876543210n },
  { type: 'Pong', nonce: 1n },
  { type: 'Redirect', requestId: 14, room: 'studio', url: 'ws://127.0.0.2:7000/ws' },
  { type: 'Migrate', room: 'studio', url: 'ws://127.0.0.3:7000/ws', resumeToken: 'rt' },
  { type: 'Error', code: 1001, message: 'invalid SDP', requestId: 11 },
];

test('every message survives an encode/decode round trip', () => {
  for (const msg of samples) {
    assert.deepEqual(decodeMessage(encodeMessage(msg)), msg, msg.type);
  }
});

test('unicode strings round-trip', () => {
  const msg: Message = { type: 'Join', requestId: 1, room: 'studio-é-🎙' };
  assert.deepEqual(decodeMessage(encodeMessage(msg)), msg);
});
