// What the client needs from a WebSocket (the browser's, Node's global one, a WebTransport
// stream made to look like one, or a fake in tests), the clock it schedules with, and the
// defaults for both.

/** A close as reported by the socket. */
export interface SocketCloseEvent {
  code: number;
  reason: string;
}

/** Which transport carries a connection. */
export type TransportKind = 'websocket' | 'webtransport';

/** The subset of the WHATWG `WebSocket` the client uses. */
export interface SocketLike {
  /** The transport under this socket; absent means WebSocket. */
  readonly transport?: TransportKind;
  binaryType: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: SocketCloseEvent) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** Opens a socket to `url` offering `protocols` (`Sec-WebSocket-Protocol`). */
export type SocketFactory = (url: string, protocols: string[]) => SocketLike;

/** Timers, injectable so tests can drive time. */
export interface Clock {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

/** The real clock. */
export const systemClock: Clock = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
  now: () => Date.now(),
};

/** The global `WebSocket` (browsers; Node 20 with --experimental-websocket, Node 22+). */
export const defaultSocketFactory: SocketFactory = (url, protocols) => {
  const Ctor = (globalThis as { WebSocket?: new (url: string, protocols: string[]) => SocketLike }).WebSocket;
  if (!Ctor) {
    throw new TypeError('no global WebSocket: pass options.socketFactory (Node 20: run with --experimental-websocket)');
  }
  return new Ctor(url, protocols);
};

/** The bytes of a socket message; `undefined` for a text message. */
export function messageBytes(data: unknown): Uint8Array | undefined {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return undefined;
}

/** Checks a `ws://` / `wss://` URL; returns the reason it is unusable, or undefined. */
export function urlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'not a URL';
  }
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') return 'the scheme must be ws:// or wss://';
  if (!parsed.hostname) return 'no host';
  return undefined;
}
