// WebTransport for the client: a session's one bidirectional stream presented as a socket
// (one frame per message, as on WebSocket; docs/protocol.md, "WebTransport"), and a socket that
// tries WebTransport first and falls back to WebSocket within a bounded time.

import { MAX_FRAME_LEN } from './frame.js';
import type { Clock, SocketCloseEvent, SocketFactory, SocketLike, TransportKind } from './transport.js';

/** Close code reported when a session ends without a close code the browser can read. */
const ABNORMAL_CLOSE = 1006;
/** How long to wait for the session's close after the node ended the stream: the node closes
 * the session once the client has every frame, so this only bounds a lost close. */
const CLOSE_AFTER_FIN_MS = 1000;

/** A certificate hash for `serverCertificateHashes` (self-signed ECDSA certificates valid
 * at most 14 days, no CA needed). */
export interface CertificateHash {
  algorithm: 'sha-256';
  value: BufferSource;
}

/** The subset of the WHATWG `WebTransport` the client uses. */
export interface WebTransportLike {
  ready: Promise<unknown>;
  closed: Promise<{ closeCode?: number; reason?: string }>;
  createBidirectionalStream(): Promise<{ readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> }>;
  close(info?: { closeCode?: number; reason?: string }): void;
}

/** Opens a WebTransport session to `url` offering `protocols` (`WT-Available-Protocols`). */
export type WebTransportFactory = (url: string, protocols: string[], hashes: CertificateHash[] | undefined) => WebTransportLike;

/** When and how the client tries WebTransport before WebSocket. */
export interface WebTransportOptions {
  /** The WebTransport URL of a node from its WebSocket URL (the entry URL, a Redirect's or a
   * Migrate's); `undefined` means WebSocket only for that node. Default {@link webTransportUrl}. */
  url?: (wsUrl: string) => string | undefined;
  /** How long the session and its stream may take to open before the client falls back to
   * WebSocket (milliseconds). Default 1500. */
  fallbackMs?: number;
  /** Certificate hashes the browser trusts for the session instead of the Web PKI. */
  serverCertificateHashes?: CertificateHash[];
  /** Session constructor (tests); default the global `WebTransport`. */
  factory?: WebTransportFactory;
}

/** Default fallback time (milliseconds). */
export const DEFAULT_FALLBACK_MS = 1500;

/** The default WebTransport URL of a node: its `wss://` URL with the scheme `https://` (the node
 * serves WebTransport on the UDP port of the same number); none for `ws://` (QUIC is always TLS). */
export function webTransportUrl(wsUrl: string): string | undefined {
  const parsed = new URL(wsUrl);
  if (parsed.protocol !== 'wss:') return undefined;
  return 'https:' + wsUrl.slice('wss:'.length);
}

/** The global `WebTransport`, if this runtime has one. */
export function globalWebTransport(): WebTransportFactory | undefined {
  const Ctor = (globalThis as { WebTransport?: new (url: string, options: object) => WebTransportLike }).WebTransport;
  if (typeof Ctor === 'undefined') return undefined;
  return (url, protocols, hashes) => new Ctor(url, hashes ? { protocols, serverCertificateHashes: hashes } : { protocols });
}

/** Splits a byte stream into frames: each is its 4-byte `length` and `length` more bytes. */
export class StreamFrames {
  private buf = new Uint8Array(0);

  /** Takes `chunk`; returns the frames it completes. Throws when a `length` is above
   * {@link MAX_FRAME_LEN}: such a frame cannot be skipped, the stream is out of step. */
  push(chunk: Uint8Array): Uint8Array[] {
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    const frames: Uint8Array[] = [];
    let at = 0;
    while (joined.length - at >= 4) {
      const len = new DataView(joined.buffer, at, 4).getUint32(0);
      if (len > MAX_FRAME_LEN) throw new RangeError(`frame length ${len} above ${MAX_FRAME_LEN}`);
      if (joined.length - at < 4 + len) break;
      frames.push(joined.slice(at, at + 4 + len));
      at += 4 + len;
    }
    this.buf = joined.slice(at);
    return frames;
  }
}

/** A WebTransport session's one bidirectional stream as a socket: `onopen` once the stream is
 * open, one `onmessage` per frame, `onclose` with the session's close code (1006 when the
 * browser reports none). */
export class WebTransportSocket implements SocketLike {
  /** Which transport this is. */
  readonly transport: TransportKind = 'webtransport';
  binaryType = 'arraybuffer';
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onclose: ((ev: SocketCloseEvent) => void) | null = null;
  private readonly session: WebTransportLike;
  private writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  private ended = false;

  constructor(url: string, protocols: string[], factory: WebTransportFactory, hashes?: CertificateHash[]) {
    this.session = factory(url, protocols, hashes);
    void this.run();
  }

  send(data: Uint8Array): void {
    if (this.ended || !this.writer) throw new Error('WebTransport stream not open');
    // Writes are queued in order by the writer; a failed one ends the session.
    this.writer.write(data).catch((err: unknown) => this.end({ code: ABNORMAL_CLOSE, reason: String(err) }));
  }

  close(code?: number, reason?: string): void {
    if (this.ended) return;
    this.ended = true;
    try {
      this.session.close({ closeCode: code ?? 1000, reason: reason ?? '' });
    } catch {
      // Not open yet, or already closed.
    }
  }

  private async run(): Promise<void> {
    let reader: ReadableStreamDefaultReader<Uint8Array>;
    try {
      await this.session.ready;
      const stream = await this.session.createBidirectionalStream();
      if (this.ended) return;
      this.writer = stream.writable.getWriter();
      reader = stream.readable.getReader();
    } catch (err) {
      this.end({ code: ABNORMAL_CLOSE, reason: `cannot open WebTransport: ${String(err)}` });
      return;
    }
    this.onopen?.({});
    const frames = new StreamFrames();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.ended) break;
        for (const frame of frames.push(value)) {
          if (this.ended) return;
          this.onmessage?.({ data: frame });
        }
      }
    } catch (err) {
      if (err instanceof RangeError) {
        // A frame too large to skip: the node closes with 1009 after it, as on WebSocket.
        this.close(1009, 'frame too large');
        this.end({ code: 1009, reason: err.message });
        return;
      }
    }
    this.end(await this.closeInfo());
  }

  /** The session's close code and reason, once the node closed it (or after a bounded wait). */
  private async closeInfo(): Promise<SocketCloseEvent> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const lost = new Promise<SocketCloseEvent>((resolve) => {
      timer = setTimeout(() => resolve({ code: ABNORMAL_CLOSE, reason: 'no session close after the stream ended' }), CLOSE_AFTER_FIN_MS);
    });
    const closed = this.session.closed.then(
      (info) => ({ code: info.closeCode ?? ABNORMAL_CLOSE, reason: info.reason ?? '' }),
      (err: unknown) => ({ code: ABNORMAL_CLOSE, reason: String(err) }),
    );
    try {
      return await Promise.race([closed, lost]);
    } finally {
      clearTimeout(timer);
    }
  }

  private end(ev: SocketCloseEvent): void {
    const wasEnded = this.ended;
    this.ended = true;
    if (!wasEnded) {
      try {
        this.session.close({ closeCode: ev.code, reason: ev.reason.slice(0, 100) });
      } catch {
        // Already closed.
      }
    }
    const onclose = this.onclose;
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    onclose?.(ev);
  }
}

/** A socket that opens WebTransport and, when it fails before carrying a frame or has not opened
 * within `fallbackMs`, WebSocket instead; {@link transport} says which one carries it. */
export class FallbackSocket implements SocketLike {
  /** The transport in use (WebTransport until the fallback). */
  transport: TransportKind = 'webtransport';
  binaryType = 'arraybuffer';
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onclose: ((ev: SocketCloseEvent) => void) | null = null;
  private inner: SocketLike;
  private timer: unknown;
  /** A frame arrived: the transport works, and its close is the connection's. */
  private received = false;
  private closed = false;

  constructor(
    private readonly wsUrl: string,
    wtUrl: string,
    private readonly protocols: string[],
    openWebTransport: (url: string, protocols: string[]) => SocketLike,
    private readonly openWebSocket: SocketFactory,
    fallbackMs: number,
    private readonly clock: Clock,
  ) {
    let wt: SocketLike;
    try {
      wt = openWebTransport(wtUrl, protocols);
    } catch {
      // E.g. a URL or certificate hash the browser refuses: WebSocket at once.
      this.transport = 'websocket';
      this.inner = this.attach(openWebSocket(wsUrl, protocols));
      return;
    }
    this.inner = this.attach(wt);
    this.timer = clock.setTimeout(() => this.fallBack(), fallbackMs);
  }

  send(data: Uint8Array): void {
    this.inner.send(data);
  }

  close(code?: number, reason?: string): void {
    this.closed = true;
    this.clock.clearTimeout(this.timer);
    this.inner.close(code, reason);
  }

  private attach(sock: SocketLike): SocketLike {
    sock.binaryType = 'arraybuffer';
    sock.onopen = (ev) => {
      this.clock.clearTimeout(this.timer);
      this.onopen?.(ev);
    };
    sock.onmessage = (ev) => {
      this.received = true;
      this.onmessage?.(ev);
    };
    sock.onerror = (ev) => this.onerror?.(ev);
    sock.onclose = (ev) => {
      // A session lost before its first frame may have lost that frame: Chromium drops stream
      // data it has not handed to the page when the node closes the QUIC connection right after
      // a Redirect. The Hello goes again over WebSocket (onopen fires again).
      if (!this.received && this.transport === 'webtransport') this.fallBack();
      else this.onclose?.(ev);
    };
    return sock;
  }

  /** Gives WebTransport up (not open in time, or failed before its first frame) for WebSocket. */
  private fallBack(): void {
    if (this.received || this.closed || this.transport === 'websocket') return;
    this.clock.clearTimeout(this.timer);
    const wt = this.inner;
    wt.onopen = wt.onmessage = wt.onerror = wt.onclose = null;
    try {
      wt.close(1000, 'falling back to WebSocket');
    } catch {
      // Never opened.
    }
    this.transport = 'websocket';
    try {
      this.inner = this.attach(this.openWebSocket(this.wsUrl, this.protocols));
    } catch (err) {
      this.onclose?.({ code: ABNORMAL_CLOSE, reason: `cannot open WebSocket: ${String(err)}` });
    }
  }
}

/** A socket factory that tries WebTransport first for every node `options.url` maps to a
 * WebTransport URL, falling back to `webSocket`; plain `webSocket` when there is no WebTransport
 * (no `options.factory` and no global `WebTransport`). */
export function fallbackSocketFactory(webSocket: SocketFactory, options: WebTransportOptions, clock: Clock): SocketFactory {
  const factory = options.factory ?? globalWebTransport();
  if (!factory) return webSocket;
  const toWt = options.url ?? webTransportUrl;
  const fallbackMs = options.fallbackMs ?? DEFAULT_FALLBACK_MS;
  const open = (url: string, protocols: string[]) => new WebTransportSocket(url, protocols, factory, options.serverCertificateHashes);
  return (url, protocols) => {
    const wtUrl = toWt(url);
    if (wtUrl === undefined) return webSocket(url, protocols);
    return new FallbackSocket(url, wtUrl, protocols, open, webSocket, fallbackMs, clock);
  };
}
