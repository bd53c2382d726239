// Pure session bookkeeping, mirroring the Rust client's `client::state`: the calls this client
// is part of (to address frames), per-room event positions (to resume and drop replays),
// request ids, call ids, and the reconnect backoff.

import type { Event, Message, Resume } from './messages.js';
import { EventKind } from './messages.js';

/** Most calls tracked at once (oldest forgotten first). */
export const MAX_CALLS = 1024;

/** The room and the other party of a call. */
export interface CallInfo {
  room: string;
  peer: string;
}

/** Whether a call-state name (as in `Event.state`) is terminal. */
export function isTerminalState(state: string): boolean {
  const s = state.toLowerCase();
  return s === 'ended' || s === 'failed';
}

/** Calls this client takes part in, bounded (insertion order = age). */
export class CallTable {
  private readonly calls = new Map<string, CallInfo>();

  /** Remembers `callId`, forgetting the oldest call beyond {@link MAX_CALLS}. */
  insert(callId: string, info: CallInfo): void {
    this.calls.delete(callId);
    this.calls.set(callId, info);
    while (this.calls.size > MAX_CALLS) {
      const oldest = this.calls.keys().next().value as string;
      this.calls.delete(oldest);
    }
  }

  /** The call, if known. */
  get(callId: string): CallInfo | undefined {
    return this.calls.get(callId);
  }

  /** Forgets a call. */
  remove(callId: string): void {
    this.calls.delete(callId);
  }

  /** Calls tracked. */
  get size(): number {
    return this.calls.size;
  }

  /** Learns and forgets calls from an incoming message (`me`: our user id). */
  observe(msg: Message, me: string): void {
    switch (msg.type) {
      case 'Invite':
        this.insert(msg.callId, { room: msg.room, peer: msg.from === me ? msg.to : msg.from });
        break;
      case 'Hangup':
        this.remove(msg.callId);
        break;
      case 'InviteResult':
        if (!msg.accepted) this.remove(msg.callId);
        break;
      case 'Event':
        if (msg.kind === EventKind.CallState && isTerminalState(msg.state)) this.remove(msg.callId);
        break;
      default:
        break;
    }
  }
}

/** Per-room event positions and the joined-room set. */
export class Rooms {
  private readonly seqs = new Map<string, number>();

  /** Marks `room` joined with its log at `lastSeq`. */
  joined(room: string, lastSeq: number): void {
    this.seqs.set(room, Math.max(this.seqs.get(room) ?? 0, lastSeq));
  }

  /** Forgets `room`. */
  left(room: string): void {
    this.seqs.delete(room);
  }

  /** Forgets every room. */
  clear(): void {
    this.seqs.clear();
  }

  /** Rooms currently joined. */
  names(): string[] {
    return [...this.seqs.keys()];
  }

  /** Whether `room` is joined. */
  has(room: string): boolean {
    return this.seqs.has(room);
  }

  /** Last seq seen in `room`. */
  seq(room: string): number | undefined {
    return this.seqs.get(room);
  }

  /** Records an event; false when it is a replay of one already seen (then dropped). */
  observeEvent(event: Event): boolean {
    const seq = this.seqs.get(event.room);
    if (seq === undefined) return true;
    if (event.seq !== 0 && event.seq <= seq) return false;
    this.seqs.set(event.room, Math.max(seq, event.seq));
    return true;
  }

  /** The seq to resume from: the smallest over joined rooms, so no room misses an event. */
  resumeSeq(): number {
    let min: number | undefined;
    for (const v of this.seqs.values()) min = min === undefined ? v : Math.min(min, v);
    return min ?? 0;
  }

  /** Resume parameters for `session`. */
  resume(session: string): Resume {
    return { session, lastSeq: this.resumeSeq() };
  }
}

/** Request ids: non-zero, increasing, wrapping past u32::MAX back to 1. */
export class RequestIds {
  constructor(private next = 1) {}

  /** The next id. */
  nextId(): number {
    const id = this.next;
    this.next = id >= 0xffffffff ? 1 : id + 1;
    return id;
  }
}

/** A fresh call id: `c-` and 16 random hex digits. */
export function newCallId(random: () => number = Math.random): string {
  let out = 'c-';
  for (let i = 0; i < 16; i++) out += Math.floor(random() * 16).toString(16);
  return out;
}

/** How the client reconnects after a dropped connection. */
export interface ReconnectPolicy {
  /** Attempts before giving up (0 = never reconnect). */
  maxAttempts: number;
  /** Wait before the first retry (ms); doubles per attempt, with ±25 % jitter. */
  initialBackoffMs: number;
  /** Upper bound of the wait (ms). */
  maxBackoffMs: number;
}

/** The defaults of the Rust client: 10 attempts, 100 ms doubling up to 5 s. */
export const DEFAULT_RECONNECT: ReconnectPolicy = {
  maxAttempts: 10,
  initialBackoffMs: 100,
  maxBackoffMs: 5000,
};

/** The wait before retry number `attempt` (1-based): exponential, capped, ±25 % jitter. */
export function backoffMs(policy: ReconnectPolicy, attempt: number, random: () => number = Math.random): number {
  const exp = policy.initialBackoffMs * 2 ** Math.min(Math.max(attempt - 1, 0), 16);
  const capped = Math.min(exp, policy.maxBackoffMs);
  return capped * (0.75 + random() * 0.5);
}

/** The `sub` claim of a JWT, read without verifying it (for `from` fields and display). */
export function tokenSubject(token: string): string | undefined {
  const payload = token.split('.')[1];
  if (!payload) return undefined;
  try {
    const b64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const json = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))) as unknown;
    if (json && typeof json === 'object' && typeof (json as { sub?: unknown }).sub === 'string') {
      return (json as { sub: string }).sub;
    }
  } catch {
    return undefined;
  }
  return undefined;
}
