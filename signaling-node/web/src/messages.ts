// The protocol's messages as plain TypeScript objects (a union tagged by `type`), and their
// conversion to and from frames through the flatc-generated code in `generated/`.
//
// 64-bit fields: event sequence numbers and times are `number` (exact below 2^53, far beyond
// any real log); the heartbeat `nonce` is a `bigint` because it is echoed bit for bit.

import * as flatbuffers from 'flatbuffers';

import { decodeFrame, encodeFrame, FrameError, FrameType } from './frame.js';
import * as wire from './generated/switchboard/wire.js';

/** Protocol versions this client speaks. */
export type ProtocolVersion = 1 | 2;

/** Resume request inside Hello. */
export interface Resume {
  session: string;
  lastSeq: number;
}

/** One ICE candidate (as in `RTCIceCandidateInit`). */
export interface Candidate {
  candidate: string;
  sdpMid: string;
  sdpMLineIndex: number;
}

/** Kinds of room events. */
export enum EventKind {
  MemberJoined = 0,
  MemberLeft = 1,
  CallState = 2,
  MemberSuspended = 3,
  MemberResumed = 4,
}

export interface Hello { type: 'Hello'; token: string; versions: number[]; resume?: Resume | undefined }
export interface Welcome { type: 'Welcome'; session: string; version: number; node: string; heartbeatMs: number; resumed: boolean }
export interface Join { type: 'Join'; requestId: number; room: string }
export interface Joined { type: 'Joined'; requestId: number; room: string; members: string[]; lastSeq: number }
export interface Leave { type: 'Leave'; requestId: number; room: string }
export interface Invite { type: 'Invite'; requestId: number; room: string; callId: string; from: string; to: string }
export interface InviteResult {
  type: 'InviteResult'; requestId: number; room: string; callId: string; from: string; to: string; accepted: boolean; reason: string;
}
export interface Offer { type: 'Offer'; requestId: number; room: string; callId: string; from: string; to: string; sdp: string }
export interface Answer { type: 'Answer'; requestId: number; room: string; callId: string; from: string; to: string; sdp: string }
export interface IceCandidate { type: 'IceCandidate'; room: string; callId: string; from: string; to: string; candidate: string; sdpMid: string; sdpMLineIndex: number }
export interface IceBatch { type: 'IceBatch'; room: string; callId: string; from: string; to: string; candidates: Candidate[] }
export interface Hangup { type: 'Hangup'; requestId: number; room: string; callId: string; from: string; reason: string }
export interface Event { type: 'Event'; room: string; seq: number; kind: EventKind; user: string; callId: string; state: string; atMs: number }
export interface Ping { type: 'Ping'; nonce: bigint }
export interface Pong { type: 'Pong'; nonce: bigint }
export interface Redirect { type: 'Redirect'; requestId: number; room: string; url: string }
export interface Migrate { type: 'Migrate'; room: string; url: string; resumeToken: string }
export interface ErrorFrame { type: 'Error'; code: number; message: string; requestId: number }

/** Every message of the protocol. */
export type Message =
  | Hello | Welcome | Join | Joined | Leave | Invite | InviteResult | Offer | Answer | IceCandidate
  | IceBatch | Hangup | Event | Ping | Pong | Redirect | Migrate | ErrorFrame;

/** The frame type of a message. */
export function frameTypeOf(msg: Message): FrameType {
  return FrameType[msg.type];
}

type B = flatbuffers.Builder;

function str(b: B, s: string): number {
  return b.createString(s);
}

function u64(n: number): bigint {
  return BigInt(Math.max(0, Math.trunc(n)));
}

/** Encodes a message into one frame. Throws {@link FrameError} `body_too_large`. */
export function encodeMessage(msg: Message): Uint8Array {
  const b = new flatbuffers.Builder(256);
  b.finish(buildBody(b, msg));
  return encodeFrame(frameTypeOf(msg), b.asUint8Array());
}

function buildBody(b: B, msg: Message): number {
  switch (msg.type) {
    case 'Hello': {
      const token = str(b, msg.token);
      const versions = wire.Hello.createVersionsVector(b, msg.versions);
      let resume = 0;
      if (msg.resume) {
        const session = str(b, msg.resume.session);
        wire.Resume.startResume(b);
        wire.Resume.addSession(b, session);
        wire.Resume.addLastSeq(b, u64(msg.resume.lastSeq));
        resume = wire.Resume.endResume(b);
      }
      wire.Hello.startHello(b);
      wire.Hello.addToken(b, token);
      wire.Hello.addVersions(b, versions);
      if (resume) wire.Hello.addResume(b, resume);
      return wire.Hello.endHello(b);
    }
    case 'Welcome': {
      const session = str(b, msg.session);
      const node = str(b, msg.node);
      wire.Welcome.startWelcome(b);
      wire.Welcome.addSession(b, session);
      wire.Welcome.addVersion(b, msg.version);
      wire.Welcome.addNode(b, node);
      wire.Welcome.addHeartbeatMs(b, msg.heartbeatMs);
      wire.Welcome.addResumed(b, msg.resumed);
      return wire.Welcome.endWelcome(b);
    }
    case 'Join':
      return wire.Join.createJoin(b, msg.requestId, str(b, msg.room));
    case 'Joined': {
      const room = str(b, msg.room);
      const members = wire.Joined.createMembersVector(b, msg.members.map((m) => str(b, m)));
      return wire.Joined.createJoined(b, msg.requestId, room, members, u64(msg.lastSeq));
    }
    case 'Leave':
      return wire.Leave.createLeave(b, msg.requestId, str(b, msg.room));
    case 'Invite': {
      const [room, callId, from, to] = [msg.room, msg.callId, msg.from, msg.to].map((s) => str(b, s)) as [number, number, number, number];
      return wire.Invite.createInvite(b, msg.requestId, room, callId, from, to);
    }
    case 'InviteResult': {
      const [room, callId, from, to, reason] = [msg.room, msg.callId, msg.from, msg.to, msg.reason].map((s) => str(b, s)) as [number, number, number, number, number];
      return wire.InviteResult.createInviteResult(b, msg.requestId, room, callId, from, to, msg.accepted, reason);
    }
    case 'Offer': {
      const [room, callId, from, to, sdp] = [msg.room, msg.callId, msg.from, msg.to, msg.sdp].map((s) => str(b, s)) as [number, number, number, number, number];
      return wire.Offer.createOffer(b, msg.requestId, room, callId, from, to, sdp);
    }
    case 'Answer': {
      const [room, callId, from, to, sdp] = [msg.room, msg.callId, msg.from, msg.to, msg.sdp].map((s) => str(b, s)) as [number, number, number, number, number];
      return wire.Answer.createAnswer(b, msg.requestId, room, callId, from, to, sdp);
    }
    case 'IceCandidate': {
      const [room, callId, from, to, candidate, sdpMid] = [msg.room, msg.callId, msg.from, msg.to, msg.candidate, msg.sdpMid].map((s) => str(b, s)) as [number, number, number, number, number, number];
      return wire.IceCandidate.createIceCandidate(b, room, callId, from, to, candidate, sdpMid, msg.sdpMLineIndex);
    }
    case 'IceBatch': {
      const [room, callId, from, to] = [msg.room, msg.callId, msg.from, msg.to].map((s) => str(b, s)) as [number, number, number, number];
      const candidates = msg.candidates.map((c) =>
        wire.Candidate.createCandidate(b, str(b, c.candidate), str(b, c.sdpMid), c.sdpMLineIndex),
      );
      const vec = wire.IceBatch.createCandidatesVector(b, candidates);
      return wire.IceBatch.createIceBatch(b, room, callId, from, to, vec);
    }
    case 'Hangup': {
      const [room, callId, from, reason] = [msg.room, msg.callId, msg.from, msg.reason].map((s) => str(b, s)) as [number, number, number, number];
      return wire.Hangup.createHangup(b, msg.requestId, room, callId, from, reason);
    }
    case 'Event': {
      const [room, user, callId, state] = [msg.room, msg.user, msg.callId, msg.state].map((s) => str(b, s)) as [number, number, number, number];
      return wire.Event.createEvent(b, room, u64(msg.seq), msg.kind as number as wire.EventKind, user, callId, state, u64(msg.atMs));
    }
    case 'Ping':
      return wire.Ping.createPing(b, msg.nonce);
    case 'Pong':
      return wire.Pong.createPong(b, msg.nonce);
    case 'Redirect':
      return wire.Redirect.createRedirect(b, msg.requestId, str(b, msg.room), str(b, msg.url));
    case 'Migrate': {
      const [room, url, token] = [msg.room, msg.url, msg.resumeToken].map((s) => str(b, s)) as [number, number, number];
      return wire.Migrate.createMigrate(b, room, url, token);
    }
    case 'Error':
      return wire.Error.createError(b, msg.code, str(b, msg.message), msg.requestId);
  }
}

/** Decodes exactly one frame into a message; every failure is a {@link FrameError}. */
export function decodeMessage(bytes: Uint8Array): Message {
  const frame = decodeFrame(bytes);
  // The generated readers do not verify; a body that passed the CRC but is not a valid table
  // for its type must not read outside the body or loop over a forged vector length.
  if (frame.body.length < 8) {
    throw new FrameError('invalid_body', `invalid ${FrameType[frame.type]} body: ${frame.body.length} bytes`);
  }
  try {
    return readBody(frame.type, new flatbuffers.ByteBuffer(frame.body));
  } catch (err) {
    if (err instanceof FrameError) throw err;
    throw new FrameError('invalid_body', `invalid ${FrameType[frame.type]} body: ${String(err)}`);
  }
}

function s(v: string | null): string {
  return v ?? '';
}

function n(v: bigint): number {
  return Number(v);
}

/** A vector length read from the body, refused when it cannot fit in the body. */
function bounded(len: number, bb: flatbuffers.ByteBuffer, what: string): number {
  if (len < 0 || len > bb.capacity()) {
    throw new FrameError('invalid_body', `${what} vector length ${len} exceeds the body`);
  }
  return len;
}

function readBody(type: FrameType, bb: flatbuffers.ByteBuffer): Message {
  const root = bb.readInt32(bb.position());
  if (root < 4 || root >= bb.capacity()) {
    throw new FrameError('invalid_body', `invalid ${FrameType[type]} body: root offset ${root} out of range`);
  }
  switch (type) {
    case FrameType.Hello: {
      const t = wire.Hello.getRootAsHello(bb);
      const versions: number[] = [];
      const len = bounded(t.versionsLength(), bb, 'versions');
      for (let i = 0; i < len; i++) versions.push(t.versions(i) ?? 0);
      const r = t.resume();
      return {
        type: 'Hello',
        token: s(t.token()),
        versions,
        resume: r ? { session: s(r.session()), lastSeq: n(r.lastSeq()) } : undefined,
      };
    }
    case FrameType.Welcome: {
      const t = wire.Welcome.getRootAsWelcome(bb);
      return { type: 'Welcome', session: s(t.session()), version: t.version(), node: s(t.node()), heartbeatMs: t.heartbeatMs(), resumed: t.resumed() };
    }
    case FrameType.Join: {
      const t = wire.Join.getRootAsJoin(bb);
      return { type: 'Join', requestId: t.requestId(), room: s(t.room()) };
    }
    case FrameType.Joined: {
      const t = wire.Joined.getRootAsJoined(bb);
      const members: string[] = [];
      const len = bounded(t.membersLength(), bb, 'members');
      for (let i = 0; i < len; i++) members.push(s(t.members(i)));
      return { type: 'Joined', requestId: t.requestId(), room: s(t.room()), members, lastSeq: n(t.lastSeq()) };
    }
    case FrameType.Leave: {
      const t = wire.Leave.getRootAsLeave(bb);
      return { type: 'Leave', requestId: t.requestId(), room: s(t.room()) };
    }
    case FrameType.Invite: {
      const t = wire.Invite.getRootAsInvite(bb);
      return { type: 'Invite', requestId: t.requestId(), room: s(t.room()), callId: s(t.callId()), from: s(t.from()), to: s(t.to()) };
    }
    case FrameType.InviteResult: {
      const t = wire.InviteResult.getRootAsInviteResult(bb);
      return {
        type: 'InviteResult', requestId: t.requestId(), room: s(t.room()), callId: s(t.callId()), from: s(t.from()), to: s(t.to()),
        accepted: t.accepted(), reason: s(t.reason()),
      };
    }
    case FrameType.Offer: {
      const t = wire.Offer.getRootAsOffer(bb);
      return { type: 'Offer', requestId: t.requestId(), room: s(t.room()), callId: s(t.callId()), from: s(t.from()), to: s(t.to()), sdp: s(t.sdp()) };
    }
    case FrameType.Answer: {
      const t = wire.Answer.getRootAsAnswer(bb);
      return { type: 'Answer', requestId: t.requestId(), room: s(t.room()), callId: s(t.callId()), from: s(t.from()), to: s(t.to()), sdp: s(t.sdp()) };
    }
    case FrameType.IceCandidate: {
      const t = wire.IceCandidate.getRootAsIceCandidate(bb);
      return {
        type: 'IceCandidate', room: s(t.room()), callId: s(t.callId()), from: s(t.from()), to: s(t.to()),
        candidate: s(t.candidate()), sdpMid: s(t.sdpMid()), sdpMLineIndex: t.sdpMlineIndex(),
      };
    }
    case FrameType.IceBatch: {
      const t = wire.IceBatch.getRootAsIceBatch(bb);
      const candidates: Candidate[] = [];
      const len = bounded(t.candidatesLength(), bb, 'candidates');
      for (let i = 0; i < len; i++) {
        const c = t.candidates(i);
        if (c) candidates.push({ candidate: s(c.candidate()), sdpMid: s(c.sdpMid()), sdpMLineIndex: c.sdpMlineIndex() });
      }
      return { type: 'IceBatch', room: s(t.room()), callId: s(t.callId()), from: s(t.from()), to: s(t.to()), candidates };
    }
    case FrameType.Hangup: {
      const t = wire.Hangup.getRootAsHangup(bb);
      return { type: 'Hangup', requestId: t.requestId(), room: s(t.room()), callId: s(t.callId()), from: s(t.from()), reason: s(t.reason()) };
    }
    case FrameType.Event: {
      const t = wire.Event.getRootAsEvent(bb);
      const kind = t.kind() as number;
      if (!(kind in EventKind)) {
        throw new FrameError('invalid_body', `invalid Event body: unknown event kind ${kind}`);
      }
      return {
        type: 'Event', room: s(t.room()), seq: n(t.seq()), kind: kind as EventKind, user: s(t.user()),
        callId: s(t.callId()), state: s(t.state()), atMs: n(t.atMs()),
      };
    }
    case FrameType.Ping:
      return { type: 'Ping', nonce: wire.Ping.getRootAsPing(bb).nonce() };
    case FrameType.Pong:
      return { type: 'Pong', nonce: wire.Pong.getRootAsPong(bb).nonce() };
    case FrameType.Redirect: {
      const t = wire.Redirect.getRootAsRedirect(bb);
      return { type: 'Redirect', requestId: t.requestId(), room: s(t.room()), url: s(t.url()) };
    }
    case FrameType.Migrate: {
      const t = wire.Migrate.getRootAsMigrate(bb);
      return { type: 'Migrate', room: s(t.room()), url: s(t.url()), resumeToken: s(t.resumeToken()) };
    }
    case FrameType.Error: {
      const t = wire.Error.getRootAsError(bb);
      return { type: 'Error', code: t.code(), message: s(t.message()), requestId: t.requestId() };
    }
  }
}
