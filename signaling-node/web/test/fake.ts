// Test doubles: a scripted socket and a scripted WebTransport session the test plays the
// server through, and a manual clock.

import { decodeMessage, encodeMessage, type Message } from '../src/messages.js';
import type { Clock, SocketCloseEvent, SocketLike } from '../src/transport.js';
import { StreamFrames, type WebTransportFactory, type WebTransportLike } from '../src/webtransport.js';

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

/** A WebTransport session whose node side is the test: frames written to its one stream are
 * decoded into `sent`; `deliver` writes frames back, split at `splitAt` bytes to exercise framing. */
export class FakeWebTransport implements WebTransportLike {
  readonly ready: Promise<unknown>;
  readonly closed: Promise<{ closeCode?: number; reason?: string }>;
  /** Frames the client sent, decoded. */
  readonly sent: Message[] = [];
  /** The close the client asked for, if any. */
  closedByClient: { closeCode?: number | undefined; reason?: string | undefined } | undefined;
  private accept!: (v: unknown) => void;
  private refuse!: (e: unknown) => void;
  private resolveClosed!: (info: { closeCode?: number; reason?: string }) => void;
  private rejectClosed!: (e: unknown) => void;
  private down: ReadableStreamDefaultController<Uint8Array> | undefined;

  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {
    this.ready = new Promise((res, rej) => {
      this.accept = res;
      this.refuse = rej;
    });
    this.closed = new Promise((res, rej) => {
      this.resolveClosed = res;
      this.rejectClosed = rej;
    });
    // Unobserved rejections must not fail the test run.
    this.ready.catch(() => undefined);
    this.closed.catch(() => undefined);
  }

  async createBidirectionalStream() {
    const readable = new ReadableStream<Uint8Array>({ start: (c) => void (this.down = c) });
    const frames = new StreamFrames();
    const writable = new WritableStream<Uint8Array>({
      write: (chunk) => {
        for (const f of frames.push(chunk)) this.sent.push(decodeMessage(f));
      },
    });
    return { readable, writable };
  }

  close(info?: { closeCode?: number; reason?: string }): void {
    this.closedByClient ??= { closeCode: info?.closeCode, reason: info?.reason };
    this.resolveClosed({ closeCode: info?.closeCode ?? 0, reason: info?.reason ?? '' });
  }

  /** Node side: accept the session. */
  open(): void {
    this.accept(undefined);
  }

  /** Node side: refuse the session (e.g. HTTP 403, or nothing listening on the UDP port). */
  fail(): void {
    this.refuse(new Error('WebTransport refused'));
  }

  /** Node side: send a message, in two chunks split at `splitAt`. */
  deliver(msg: Message, splitAt = 3): void {
    const bytes = encodeMessage(msg);
    this.down!.enqueue(bytes.slice(0, splitAt));
    this.down!.enqueue(bytes.slice(splitAt));
  }

  /** Node side: end the stream and close the session with `code` (the WebSocket close code). */
  end(code: number, reason = ''): void {
    this.down?.close();
    this.resolveClosed({ closeCode: code, reason });
  }

  /** The network: the session is gone without a close code. */
  lose(): void {
    this.down?.error(new Error('connection lost'));
    this.rejectClosed(new Error('connection lost'));
  }

  /** Frames of one type the client sent. */
  sentOf<T extends Message['type']>(type: T): Extract<Message, { type: T }>[] {
    return this.sent.filter((m): m is Extract<Message, { type: T }> => m.type === type);
  }
}

/** Records every WebTransport session a client opens. */
export class FakeWebTransportNetwork {
  readonly sessions: FakeWebTransport[] = [];
  readonly factory: WebTransportFactory = (url, protocols) => {
    const s = new FakeWebTransport(url, protocols);
    this.sessions.push(s);
    return s;
  };

  /** The newest session. */
  get last(): FakeWebTransport {
    const s = this.sessions[this.sessions.length - 1];
    if (!s) throw new Error('no session opened yet');
    return s;
  }
}
