// Frame layout `length u32 BE | type u8 | body | crc32 BE` (docs/protocol.md): encoding, and
// decoding with the node's checks, each failure a typed {@link FrameError}.

import { crc32Update } from './crc32.js';

/** Smallest value of the length field: the type byte plus the CRC. */
export const MIN_FRAME_LEN = 5;
/** Largest value of the length field (64 KiB). */
export const MAX_FRAME_LEN = 65_536;
/** Largest FlatBuffers body that fits in one frame. */
export const MAX_BODY_LEN = MAX_FRAME_LEN - 1 - 4;

/** The type byte of each frame (the root table of its body). */
export enum FrameType {
  Hello = 1,
  Welcome = 2,
  Join = 3,
  Joined = 4,
  Leave = 5,
  Invite = 6,
  InviteResult = 7,
  Offer = 8,
  Answer = 9,
  IceCandidate = 10,
  IceBatch = 11,
  Hangup = 12,
  Event = 13,
  Ping = 14,
  Pong = 15,
  Redirect = 16,
  Migrate = 17,
  Error = 18,
}

/** Whether `byte` names a frame type. */
export function isFrameType(byte: number): byte is FrameType {
  return Number.isInteger(byte) && byte >= FrameType.Hello && byte <= FrameType.Error;
}

/** Why bytes are not exactly one valid frame (the node answers these with 1008). */
export type FrameErrorKind =
  | 'too_short'
  | 'too_long'
  | 'truncated'
  | 'trailing_bytes'
  | 'crc_mismatch'
  | 'unknown_type'
  | 'invalid_body'
  | 'body_too_large';

/** A malformed frame, with a label matching the node's `FrameError::label`. */
export class FrameError extends Error {
  override readonly name = 'FrameError';
  constructor(
    /** What is wrong. */
    readonly kind: FrameErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/** One decoded frame: its type and (a view of) its body. */
export interface RawFrame {
  type: FrameType;
  body: Uint8Array;
}

/** Wraps a FlatBuffers body into a frame. Throws `body_too_large` past {@link MAX_BODY_LEN}. */
export function encodeFrame(type: FrameType, body: Uint8Array): Uint8Array {
  if (body.length > MAX_BODY_LEN) {
    throw new FrameError('body_too_large', `body of ${body.length} bytes exceeds ${MAX_BODY_LEN}`);
  }
  const len = 1 + body.length + 4;
  const out = new Uint8Array(4 + len);
  const view = new DataView(out.buffer);
  view.setUint32(0, len, false);
  out[4] = type;
  out.set(body, 5);
  const crc = crc32Update(crc32Update(0, out.subarray(4, 5)), body);
  view.setUint32(5 + body.length, crc, false);
  return out;
}

/** Checks that `bytes` is exactly one frame and returns its type and body. */
export function decodeFrame(bytes: Uint8Array): RawFrame {
  if (bytes.length < 4) {
    throw new FrameError('truncated', `truncated frame: needs ${4 + MIN_FRAME_LEN} bytes, message has ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = view.getUint32(0, false);
  if (len < MIN_FRAME_LEN) {
    throw new FrameError('too_short', `frame length field ${len} is below the minimum of ${MIN_FRAME_LEN}`);
  }
  if (len > MAX_FRAME_LEN) {
    throw new FrameError('too_long', `frame length field ${len} exceeds the maximum of ${MAX_FRAME_LEN}`);
  }
  const total = 4 + len;
  if (bytes.length < total) {
    throw new FrameError('truncated', `truncated frame: needs ${total} bytes, message has ${bytes.length}`);
  }
  if (bytes.length > total) {
    throw new FrameError('trailing_bytes', `${bytes.length - total} trailing bytes after a ${total}-byte frame`);
  }
  const expected = view.getUint32(total - 4, false);
  const actual = crc32Update(0, bytes.subarray(4, total - 4));
  if (expected !== actual) {
    throw new FrameError(
      'crc_mismatch',
      `crc mismatch: trailer says 0x${hex(expected)}, type and body hash to 0x${hex(actual)}`,
    );
  }
  const type = bytes[4]!;
  if (!isFrameType(type)) {
    throw new FrameError('unknown_type', `unknown frame type byte ${type}`);
  }
  return { type, body: bytes.subarray(5, total - 4) };
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}
