// Test doubles: a scripted socket the test plays the server through, and a manual clock.

import { decodeMessage, encodeMessage, type Message } from '../src/messages.js';
import type { Clock, SocketCloseEvent, SocketLike } from '../src/transport.js';

/** A socket whose server side is the test. */
export class FakeSocket implements SocketLike {
  binaryType = 'blob';
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onclose: ((ev: SocketCloseEvent) => void) | null = null;
  /** Frames the client sent, decoded. */
  readonly sent: Message[] = [];
  closed: { code?: number | undefined; reason?: string | undefined } | undefined;

  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {}

  send(data: Uint8Array): void {
    if (this.closed) throw new Error('socket closed');
    this.sent.push(decodeMessage(data));
  }

  close(code?: number, reason?: string): void {
    this.closed ??= { code, reason };
  }

  /** Server side: accept the upgrade. */
  open(): void {
    this.onopen?.({});
  }

  /** Server side: send a message. */
  deliver(msg: Message): void {
    const bytes = encodeMessage(msg);
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }

  /** Server side: raw bytes or text. */
  deliverRaw(data: unknown): void {
    this.onmessage?.({ data });
  }

  /** Server side (or network): the connection ends. */
  drop(code = 1006, reason = ''): void {
    this.closed ??= { code, reason };
    this.onclose?.({ code, reason });
  }

  /** Frames of one type the client sent. */
  sentOf<T extends Message['type']>(type: T): Extract<Message, { type: T }>[] {
    return this.sent.filter((m): m is Extract<Message, { type: T }> => m.type === type);
  }
}

/** Records every socket a client opens. */
export class FakeNetwork {
  readonly sockets: FakeSocket[] = [];
  readonly factory = (url: string, protocols: string[]): SocketLike => {
    const s = new FakeSocket(url, protocols);
    this.sockets.push(s);
    return s;
  };

  /** The newest socket. */
  get last(): FakeSocket {
    const s = this.sockets[this.sockets.length - 1];
    if (!s) throw new Error('no socket opened yet');
    return s;
  }
}

interface Timer {
  at: number;
  fn: () => void;
  id: number;
}

/** A clock that only moves when told. */
export class ManualClock implements Clock {
  private t = 0;
  private nextId = 1;
  private timers: Timer[] = [];

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.push({ at: this.t + Math.max(0, ms), fn, id });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }

  now(): number {
    return this.t;
  }

  /** Pending timers. */
  get pending(): number {
    return this.timers.length;
  }

  /** Moves time forward by `ms`, firing due timers in order (and letting promises settle). */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

/** Lets queued promise continuations and microtasks run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
  await new Promise((r) => setImmediate(r));
}

/** A JWT-shaped token whose payload names `sub` (unsigned: the fake server does not check). */
export function fakeToken(sub: string): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64url');
  return `${b64('{"alg":"HS256","typ":"JWT"}')}.${b64(JSON.stringify({ sub, rooms: ['*'] }))}.sig`;
}
