// The Switchboard client: connects (WebTransport first when asked, else WebSocket) with
// subprotocol negotiation, says Hello with the token, offers typed calls for the co-host flow,
// answers heartbeats, follows Redirect and Migrate, and reconnects with backoff and resumes
// from the last seen event after a dropped connection.
// It mirrors the Rust client (client/src/driver.rs) decision for decision.
//
//   const client = new SwitchboardClient('ws://127.0.0.1:7000/ws', { token });
//   client.on('message', (msg) => console.log(msg));
//   await client.connect();
//   await client.join('studio-1');
//   const callId = await client.invite('studio-1', 'bob');
//
// One client is one connection (one node). Every queue is bounded.

import { CloseCode, ClientError, ErrorCode } from './errors.js';
import { FrameError } from './frame.js';
import type { Candidate, Joined, Message, ProtocolVersion, Resume, Welcome } from './messages.js';
import { decodeMessage, encodeMessage } from './messages.js';
import { Retries } from './retry.js';
import {
  backoffMs,
  CallTable,
  DEFAULT_RECONNECT,
  newCallId,
  RequestIds,
  Rooms,
  tokenSubject,
  type ReconnectPolicy,
} from './state.js';
import {
  defaultSocketFactory,
  messageBytes,
  systemClock,
  urlProblem,
  type Clock,
  type SocketFactory,
  type SocketLike,
  type TransportKind,
} from './transport.js';
import { fallbackSocketFactory, type WebTransportOptions } from './webtransport.js';

/** Most joins awaiting an answer at once. */
export const MAX_PENDING = 1024;
/** Most candidates merged into one IceBatch. */
export const MAX_BATCH = 64;
/** Failed reconnects in a row at a moved-to node before going back to the entry URL. */
const FAILURES_BEFORE_ENTRY = 2;

/** Per-step time limits (milliseconds). */
export interface Timeouts {
  /** WebSocket open (TCP + TLS + upgrade). */
  connectMs: number;
  /** Hello → Welcome. */
  handshakeMs: number;
  /** A join awaiting its Joined. */
  requestMs: number;
  /** Declare the connection dead after this long without any frame; default from Welcome:
   * 2.5 × heartbeat + 2 s. */
  silenceMs?: number | undefined;
}

/** What the client needs; everything but the token has a default. */
export interface ClientOptions {
  /** The join token (JWT). */
  token: string;
  /** Versions offered (the highest common one wins). Default [2, 1]. */
  versions?: ProtocolVersion[];
  /** Resume an earlier session on the first connect. */
  resume?: Resume;
  /** Time limits. */
  timeouts?: Partial<Timeouts>;
  /** Reconnect behaviour. */
  reconnect?: Partial<ReconnectPolicy>;
  /** Redirects followed in a row before giving up. Default 3. */
  maxRedirects?: number;
  /** Operations queued while (re)connecting, at most. Default 256. */
  maxQueued?: number;
  /** Socket constructor (tests, Node without a global WebSocket). */
  socketFactory?: SocketFactory;
  /** Try WebTransport first, where the runtime has it, on every connect, redirect, migrate and
   * resume, falling back to WebSocket within a bounded time (`true`: the defaults of
   * {@link WebTransportOptions}). Default: WebSocket only. */
  webTransport?: boolean | WebTransportOptions;
  /** Timers (tests). */
  clock?: Clock;
  /** Random source in [0, 1) for jitter and call ids (tests). */
  random?: () => number;
  /** W3C trace context (`00-<trace id>-<parent id>-<flags>`) sent with every connect as the
   * `traceparent` query parameter (a browser cannot set headers on a WebSocket), so the
   * nodes' spans of this session, across Redirects and resumes, form one trace. */
  traceparent?: string;
}

/** Where the client is. */
export type ClientStatus = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** The current session, as last welcomed by a node. */
export interface SessionInfo {
  /** URL of the node serving this session now (after redirects and migrations). */
  url: string;
  /** Session id (resume token). */
  session: string;
  /** Negotiated protocol version. */
  version: ProtocolVersion;
  /** The transport carrying the session now. */
  transport: TransportKind;
  /** The serving node's name. */
  node: string;
  /** Server heartbeat interval (ms). */
  heartbeatMs: number;
  /** Whether the last Welcome resumed an earlier session. */
  resumed: boolean;
  /** Reconnects (including redirects and migrations) since connect(). */
  reconnects: number;
  /** Our user id (the token's `sub`, unverified; empty if unreadable). */
  user: string;
}

/** Events the client emits. */
export interface ClientEvents {
  /** Every incoming frame for the application: relays (Invite, InviteResult, Offer, Answer,
   * ICE, Hangup), room Events (replays of already-seen ones dropped), Error frames not tied to
   * a pending join, Joined of automatic re-joins, and the Welcome of each reconnect. */
  message: Message;
  /** A node welcomed this client (first connect and every reconnect). */
  welcome: Welcome;
  /** The status changed. */
  status: ClientStatus;
  /** A recoverable problem (e.g. an undecodable frame from the server). */
  error: ClientError;
  /** The client stopped for good: `undefined` after close(), else the reason. */
  closed: ClientError | undefined;
}

type Listener<T> = (value: T) => void;

interface PendingJoin {
  room: string;
  /** Absent for an automatic re-join after the server lost our session. */
  resolve?: (joined: Joined) => void;
  reject?: (err: ClientError) => void;
  timer?: unknown;
  /** Retryable refusals so far (1006 while the room moves, 1010); bounded by the reconnect
   * policy's attempts. */
  refusals?: number;
}

/** One queued outgoing item: an operation, or a candidate that may merge into an IceBatch. */
type Outgoing =
  | { kind: 'op'; build: () => Message; done: () => void; fail: (err: ClientError) => void }
  | { kind: 'ice'; callId: string; candidate: Candidate; done: () => void; fail: (err: ClientError) => void };

type Exit =
  | { kind: 'lost'; err: ClientError; silent?: boolean }
  | { kind: 'redirect'; url: string }
  | { kind: 'migrate'; url: string; resumeToken: string }
  | { kind: 'fatal'; err: ClientError };

type Handshake =
  | { kind: 'welcome'; sock: SocketLike; welcome: Welcome; early: Uint8Array[] }
  | { kind: 'redirect'; url: string };

function asClientError(err: unknown): ClientError {
  if (err instanceof ClientError) return err;
  if (err instanceof FrameError) return new ClientError('encode', `cannot send: ${err.message}`);
  return new ClientError('protocol', String(err));
}

/** Whether a failed reconnect attempt means trying the next known node (the entry URL, or back
 * from the entry to the node the client was on). */
export function shouldGoBackToEntry(err: ClientError, failuresInARow: number): boolean {
  return (
    err.kind === 'connect' ||
    err.kind === 'timeout' ||
    err.code === ErrorCode.NotOwner ||
    failuresInARow >= FAILURES_BEFORE_ENTRY
  );
}

/** How to react to the server closing the socket: policy and protocol closes are final,
 * everything else (going away, overload 1013, abnormal) is retried. */
export function closeIsFatal(code: number): boolean {
  return (
    code === CloseCode.PolicyViolation ||
    code === CloseCode.ProtocolError ||
    code === CloseCode.TooBig ||
    code === 1003
  );
}

/** `url` with the `traceparent` query parameter set (replacing one already there). */
export function withTraceparent(url: string, traceparent: string | undefined): string {
  if (!traceparent) return url;
  const parsed = new URL(url);
  parsed.searchParams.set('traceparent', traceparent);
  return parsed.toString();
}

/** A Switchboard signaling client. */
export class SwitchboardClient {
  private readonly options: {
    token: string;
    versions: ProtocolVersion[];
    timeouts: Timeouts;
    reconnect: ReconnectPolicy;
    maxRedirects: number;
    maxQueued: number;
    traceparent: string | undefined;
  };
  private readonly factory: SocketFactory;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly entry: string;
  private readonly user: string;
  private readonly initialResume: Resume | undefined;
  private readonly listeners = new Map<keyof ClientEvents, Set<Listener<never>>>();

  private endpoint: string;
  private sock: SocketLike | null = null;
  /** Bumped whenever the current socket is abandoned: its late events are ignored. */
  private gen = 0;
  private state: ClientStatus = 'idle';
  private sessionId = '';
  private version: ProtocolVersion = 1;
  private transport: TransportKind = 'websocket';
  private node = '';
  private heartbeatMs = 0;
  private resumed = false;
  private reconnects = 0;
  private silenceMs = 3_600_000;
  private silenceTimer: unknown = undefined;
  private readonly rooms = new Rooms();
  private readonly calls = new CallTable();
  private readonly ids = new RequestIds();
  private readonly pending = new Map<number, PendingJoin>();
  private readonly retries = new Retries();
  private retryTimer: unknown = undefined;
  private outq: Outgoing[] = [];
  private flushScheduled = false;
  private redirectsInARow = 0;
  /** The session a resume asked for when a node without its room answered `resumed: false`:
   * the re-join's Redirect leads to the owner, where it is resumed (same rule as the Rust client). */
  private unresumed: Resume | undefined = undefined;
  private stopped = false;
  private early: Uint8Array[] = [];

  constructor(url: string, options: ClientOptions) {
    this.endpoint = url;
    this.entry = url;
    this.options = {
      token: options.token,
      versions: [...(options.versions ?? [2, 1])].sort((a, b) => b - a),
      timeouts: { connectMs: 5000, handshakeMs: 5000, requestMs: 10_000, ...options.timeouts },
      reconnect: { ...DEFAULT_RECONNECT, ...options.reconnect },
      maxRedirects: options.maxRedirects ?? 3,
      maxQueued: Math.max(1, options.maxQueued ?? 256),
      traceparent: options.traceparent,
    };
    this.clock = options.clock ?? systemClock;
    const webSocket = options.socketFactory ?? defaultSocketFactory;
    const wt = options.webTransport === true ? {} : options.webTransport || undefined;
    this.factory = wt ? fallbackSocketFactory(webSocket, wt, this.clock) : webSocket;
    this.random = options.random ?? Math.random;
    this.user = tokenSubject(options.token) ?? '';
    this.initialResume = options.resume;
  }

  // ---- events -------------------------------------------------------------------------

  /** Subscribes to an event; returns the unsubscribe function. */
  on<K extends keyof ClientEvents>(type: K, fn: Listener<ClientEvents[K]>): () => void {
    let set = this.listeners.get(type);
    if (!set) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(fn as Listener<never>);
    return () => set.delete(fn as Listener<never>);
  }

  private emit<K extends keyof ClientEvents>(type: K, value: ClientEvents[K]): void {
    for (const fn of [...(this.listeners.get(type) ?? [])]) {
      try {
        (fn as Listener<ClientEvents[K]>)(value);
      } catch (err) {
        // A throwing listener must not break the connection.
        console.error('switchboard client: listener failed', err);
      }
    }
  }

  private setStatus(status: ClientStatus): void {
    if (this.state === status) return;
    this.state = status;
    this.emit('status', status);
  }

  // ---- inspection ---------------------------------------------------------------------

  /** Where the client is. */
  get status(): ClientStatus {
    return this.state;
  }

  /** The current session. */
  session(): SessionInfo {
    return {
      url: this.endpoint,
      session: this.sessionId,
      version: this.version,
      transport: this.transport,
      node: this.node,
      heartbeatMs: this.heartbeatMs,
      resumed: this.resumed,
      reconnects: this.reconnects,
      user: this.user,
    };
  }

  /** The last event seq seen in `room` (undefined when not joined). */
  lastSeq(room: string): number | undefined {
    return this.rooms.seq(room);
  }

  // ---- lifecycle ----------------------------------------------------------------------

  /** Connects (following redirects), says Hello and resolves with the Welcome. */
  async connect(): Promise<Welcome> {
    if (this.state !== 'idle') throw new ClientError('protocol', `connect() called while ${this.state}`);
    this.setStatus('connecting');
    try {
      const welcome = await this.establish(this.initialResume);
      this.opened(welcome, false);
      return welcome;
    } catch (err) {
      const e = asClientError(err);
      this.shutdown(e);
      throw e;
    }
  }

  /** Closes the connection (WebSocket close 1000) and stops for good. */
  close(): void {
    if (this.stopped) return;
    const sock = this.abandonSocket();
    if (sock) {
      try {
        sock.close(CloseCode.Normal, 'client closing');
      } catch {
        // Already closing.
      }
    }
    this.stop(new ClientError('closed', 'client closed'));
    this.emit('closed', undefined);
  }

  // ---- operations ---------------------------------------------------------------------

  /** Joins `room` and resolves with Joined (following a Redirect to the room's owner). */
  join(room: string): Promise<Joined> {
    return new Promise((resolve, reject) => {
      if (this.stopped) return reject(new ClientError('closed', 'client closed'));
      if (this.pending.size >= MAX_PENDING) return reject(new ClientError('limit', 'client limit reached: pending joins'));
      const id = this.ids.nextId();
      const entry: PendingJoin = { room, resolve, reject };
      entry.timer = this.clock.setTimeout(() => {
        for (const [key, p] of this.pending) {
          if (p === entry) this.pending.delete(key);
        }
        reject(new ClientError('timeout', 'timed out waiting for Joined'));
      }, this.options.timeouts.requestMs);
      this.pending.set(id, entry);
      // While (re)connecting the join waits in `pending` and goes out after Welcome.
      if (this.state === 'open' && this.sock) {
        this.flush();
        try {
          this.write({ type: 'Join', requestId: id, room });
        } catch (err) {
          this.pending.delete(id);
          this.clock.clearTimeout(entry.timer);
          reject(asClientError(err));
        }
      }
    });
  }

  /** Leaves `room`. */
  leave(room: string): Promise<void> {
    return this.op(() => {
      this.rooms.left(room);
      return { type: 'Leave', requestId: this.ids.nextId(), room };
    });
  }

  /** Invites `to` into a call in `room`; resolves with the new call id once sent. The answer
   * arrives as an `InviteResult` message. */
  async invite(room: string, to: string): Promise<string> {
    const callId = newCallId(this.random);
    this.calls.insert(callId, { room, peer: to });
    try {
      await this.op(() => ({ type: 'Invite', requestId: this.ids.nextId(), room, callId, from: this.user, to }));
    } catch (err) {
      this.calls.remove(callId);
      throw err;
    }
    return callId;
  }

  /** Accepts an invitation. */
  accept(callId: string): Promise<void> {
    return this.answerInvite(callId, true, '');
  }

  /** Rejects an invitation. */
  reject(callId: string, reason: string): Promise<void> {
    return this.answerInvite(callId, false, reason);
  }

  private answerInvite(callId: string, accepted: boolean, reason: string): Promise<void> {
    return this.op(() => {
      // A rejected call is forgotten on its `ended` event, not here: a rejection lost in a
      // reconnect must stay possible to send again.
      const call = this.call(callId);
      return {
        type: 'InviteResult', requestId: this.ids.nextId(), room: call.room, callId, from: this.user, to: call.peer,
        accepted, reason,
      };
    });
  }

  /** Sends an SDP offer; resolves with its request id (an `Error` frame refusing it echoes it). */
  async offer(callId: string, sdp: string): Promise<number> {
    let id = 0;
    await this.op(() => {
      const call = this.call(callId);
      id = this.ids.nextId();
      return { type: 'Offer', requestId: id, room: call.room, callId, from: this.user, to: call.peer, sdp };
    });
    return id;
  }

  /** Sends an SDP answer; resolves with its request id. */
  async answer(callId: string, sdp: string): Promise<number> {
    let id = 0;
    await this.op(() => {
      const call = this.call(callId);
      id = this.ids.nextId();
      return { type: 'Answer', requestId: id, room: call.room, callId, from: this.user, to: call.peer, sdp };
    });
    return id;
  }

  /** Sends one ICE candidate; on v2, candidates for the same call queued back to back go out
   * as one IceBatch. */
  ice(callId: string, candidate: Candidate): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.enqueue({ kind: 'ice', callId, candidate, done: resolve, fail: reject }, reject)) return;
      // Let candidates gathered in the same task join the batch.
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        queueMicrotask(() => {
          this.flushScheduled = false;
          this.flush();
        });
      }
    });
  }

  /** Signals that no more candidates follow for this call. */
  endOfCandidates(callId: string): Promise<void> {
    return this.op(() => {
      const call = this.call(callId);
      return { type: 'IceCandidate', room: call.room, callId, from: this.user, to: call.peer, candidate: '', sdpMid: '', sdpMLineIndex: 0 };
    });
  }

  /** Hangs a call up. */
  hangup(callId: string, reason: string): Promise<void> {
    return this.op(() => {
      // Forgotten on the call's `ended` event (CallTable.observe), not here: a hangup lost
      // in a reconnect or refused must stay possible to send again.
      const call = this.call(callId);
      return { type: 'Hangup', requestId: this.ids.nextId(), room: call.room, callId, from: this.user, reason };
    });
  }

  /** Sends any message as is (tools and tests; no bookkeeping). */
  sendRaw(msg: Message): Promise<void> {
    return this.op(() => msg);
  }

  private call(callId: string) {
    const call = this.calls.get(callId);
    if (!call) throw new ClientError('unknown_call', `unknown call ${JSON.stringify(callId)}`);
    return call;
  }

  private op(build: () => Message): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.enqueue({ kind: 'op', build, done: resolve, fail: reject }, reject)) this.flush();
    });
  }

  private enqueue(item: Outgoing, reject: (err: ClientError) => void): boolean {
    if (this.stopped) {
      reject(new ClientError('closed', 'client closed'));
      return false;
    }
    if (this.outq.length >= this.options.maxQueued) {
      reject(new ClientError('limit', 'client limit reached: queued operations'));
      return false;
    }
    this.outq.push(item);
    return true;
  }

  /** Writes the queue in order while the connection is open, merging back-to-back candidates
   * of one call into IceBatch frames on v2. */
  private flush(): void {
    while (this.state === 'open' && this.sock && this.outq.length > 0) {
      const item = this.outq.shift()!;
      if (item.kind === 'op') {
        let msg: Message;
        try {
          msg = item.build();
        } catch (err) {
          item.fail(asClientError(err));
          continue;
        }
        if (!this.send(msg, [item])) return;
        continue;
      }
      const batch: Outgoing[] = [item];
      if (this.version >= 2) {
        while (batch.length < MAX_BATCH) {
          const next = this.outq[0];
          if (!next || next.kind !== 'ice' || next.callId !== item.callId) break;
          batch.push(this.outq.shift()!);
        }
      }
      const call = this.calls.get(item.callId);
      if (!call) {
        const err = new ClientError('unknown_call', `unknown call ${JSON.stringify(item.callId)}`);
        for (const b of batch) b.fail(err);
        continue;
      }
      const candidates = batch.map((b) => (b as Extract<Outgoing, { kind: 'ice' }>).candidate);
      const msg: Message =
        candidates.length > 1
          ? { type: 'IceBatch', room: call.room, callId: item.callId, from: this.user, to: call.peer, candidates }
          : {
              type: 'IceCandidate', room: call.room, callId: item.callId, from: this.user, to: call.peer,
              candidate: candidates[0]!.candidate, sdpMid: candidates[0]!.sdpMid, sdpMLineIndex: candidates[0]!.sdpMLineIndex,
            };
      if (!this.send(msg, batch)) return;
    }
  }

  /** Sends `msg` for `items`; false when the socket failed (the connection is then lost). */
  private send(msg: Message, items: Outgoing[]): boolean {
    try {
      this.write(msg);
    } catch (err) {
      const e = asClientError(err);
      for (const i of items) i.fail(e.kind === 'encode' ? e : new ClientError('connection_lost', 'connection lost while the request was in flight'));
      return e.kind === 'encode';
    }
    for (const i of items) i.done();
    return true;
  }

  /** Encodes and sends on the current socket. An encode failure throws `encode` (the
   * connection is fine); a socket failure ends the connection and throws `connection_lost`. */
  private write(msg: Message): void {
    let frame: Uint8Array;
    try {
      frame = encodeMessage(msg);
    } catch (err) {
      throw asClientError(err);
    }
    const sock = this.sock;
    if (!sock) throw new ClientError('connection_lost', 'not connected');
    try {
      sock.send(frame);
    } catch (err) {
      this.exit({ kind: 'lost', err: new ClientError('websocket', `send failed: ${String(err)}`) });
      throw new ClientError('connection_lost', 'connection lost while the request was in flight');
    }
    this.retries.sent(msg);
  }

  /** Arms the timer of the next retry of a request refused with 1010. */
  private armRetry(): void {
    this.clock.clearTimeout(this.retryTimer);
    const due = this.retries.nextDue();
    if (due === undefined) return;
    const gen = this.gen;
    this.retryTimer = this.clock.setTimeout(() => {
      if (gen !== this.gen || !this.sock) return;
      for (const msg of this.retries.takeDue(this.clock.now())) {
        try {
          this.write(msg);
        } catch {
          // write() ended the connection; the request is sent again after the reconnect.
          return;
        }
      }
      this.armRetry();
    }, Math.max(0, due - this.clock.now()));
  }

  // ---- connection establishment -------------------------------------------------------

  /** Opens a socket, says Hello and waits for Welcome, following handshake redirects; then
   * re-joins rooms the server forgot and re-sends joins still awaiting an answer. */
  private async establish(resume: Resume | undefined): Promise<Welcome> {
    let redirects = 0;
    for (;;) {
      if (this.stopped) throw new ClientError('closed', 'client closed');
      const outcome = await this.handshake(resume);
      if (outcome.kind === 'welcome') {
        if (this.stopped) {
          outcome.sock.close(CloseCode.Normal, 'client closing');
          throw new ClientError('closed', 'client closed');
        }
        this.welcomed(outcome.sock, outcome.welcome, resume !== undefined, outcome.early);
        return outcome.welcome;
      }
      redirects += 1;
      if (redirects > this.options.maxRedirects) {
        throw new ClientError('too_many_redirects', `too many redirects (limit ${this.options.maxRedirects})`);
      }
      const problem = urlProblem(outcome.url);
      if (problem) throw new ClientError('invalid_url', `invalid URL ${JSON.stringify(outcome.url)}: ${problem}`);
      this.endpoint = outcome.url;
      // A resuming Hello keeps its resume: the room's owner resumes the session (or answers
      // resumed: false, and the rooms are re-joined there).
      if (!resume) this.rooms.clear();
    }
  }

  private handshake(resume: Resume | undefined): Promise<Handshake> {
    const url = this.endpoint;
    const problem = urlProblem(url);
    if (problem) return Promise.reject(new ClientError('invalid_url', `invalid URL ${JSON.stringify(url)}: ${problem}`));
    const { connectMs, handshakeMs } = this.options.timeouts;
    return new Promise<Handshake>((resolve, reject) => {
      let sock: SocketLike;
      try {
        sock = this.factory(withTraceparent(url, this.options.traceparent), this.options.versions.map((v) => `switchboard.v${v}`));
      } catch (err) {
        reject(new ClientError('invalid_url', `invalid URL ${JSON.stringify(url)}: ${String(err)}`));
        return;
      }
      sock.binaryType = 'arraybuffer';
      let opened = false;
      let done = false;
      const early: Uint8Array[] = [];
      let timer = this.clock.setTimeout(() => {
        fail(opened
          ? new ClientError('timeout', 'timed out waiting for Welcome')
          : new ClientError('timeout', `timed out connecting to ${url}`));
      }, connectMs);
      const finish = () => {
        done = true;
        this.clock.clearTimeout(timer);
      };
      const fail = (err: ClientError) => {
        if (done) return;
        finish();
        sock.onopen = sock.onmessage = sock.onerror = sock.onclose = null;
        try {
          sock.close(CloseCode.Normal, 'handshake failed');
        } catch {
          // Not open yet.
        }
        reject(err);
      };
      const sendPong = (nonce: bigint) => {
        try {
          sock.send(encodeMessage({ type: 'Pong', nonce }));
        } catch (err) {
          fail(new ClientError('websocket', `send failed: ${String(err)}`));
        }
      };
      sock.onopen = () => {
        if (done) return;
        opened = true;
        this.clock.clearTimeout(timer);
        timer = this.clock.setTimeout(() => fail(new ClientError('timeout', 'timed out waiting for Welcome')), handshakeMs);
        try {
          sock.send(encodeMessage({ type: 'Hello', token: this.options.token, versions: this.options.versions, resume }));
        } catch (err) {
          fail(asClientError(err));
        }
      };
      sock.onmessage = (ev) => {
        const bytes = messageBytes(ev.data);
        if (done) {
          // Frames right behind Welcome, before the serve handlers are installed.
          if (bytes && early.length < this.options.maxQueued) early.push(bytes);
          return;
        }
        if (!bytes) return fail(new ClientError('protocol', 'text message during the handshake'));
        let msg: Message;
        try {
          msg = decodeMessage(bytes);
        } catch (err) {
          return fail(err instanceof FrameError ? ClientError.fromFrameError(err) : asClientError(err));
        }
        switch (msg.type) {
          case 'Welcome':
            finish();
            resolve({ kind: 'welcome', sock, welcome: msg, early });
            return;
          case 'Redirect':
            finish();
            sock.onopen = sock.onmessage = sock.onerror = sock.onclose = null;
            try {
              sock.close(CloseCode.Normal, 'redirected');
            } catch {
              // Already closing.
            }
            resolve({ kind: 'redirect', url: msg.url });
            return;
          case 'Error':
            return fail(ClientError.fromFrame(msg));
          case 'Ping':
            return sendPong(msg.nonce);
          default:
            return fail(new ClientError('protocol', `expected Welcome, got ${msg.type}`));
        }
      };
      sock.onerror = () => {
        // The close event that follows carries what there is to know.
      };
      sock.onclose = (ev) => {
        if (!opened) {
          fail(new ClientError('connect', `cannot connect to ${url} (close ${ev.code})`, { closeCode: ev.code }));
        } else {
          const err = closeIsFatal(ev.code)
            ? new ClientError('websocket', `closed during handshake: ${ev.code} ${ev.reason}`, { closeCode: ev.code })
            : new ClientError('connection_lost', `closed during handshake: ${ev.code} ${ev.reason}`, { closeCode: ev.code });
          fail(err);
        }
      };
    });
  }

  /** Adopts a welcomed socket: session, version, heartbeat; re-joins and re-sends joins. */
  private welcomed(sock: SocketLike, welcome: Welcome, askedResume: boolean, early: Uint8Array[]): void {
    if (welcome.version !== 1 && welcome.version !== 2) {
      sock.close(CloseCode.Normal, 'unknown version');
      throw new ClientError('protocol', `server picked unknown protocol version ${welcome.version}`);
    }
    const asked = this.sessionId;
    this.sessionId = welcome.session;
    this.version = welcome.version;
    this.transport = sock.transport ?? 'websocket';
    this.node = welcome.node;
    this.heartbeatMs = welcome.heartbeatMs;
    this.resumed = welcome.resumed;
    this.silenceMs =
      this.options.timeouts.silenceMs ?? (welcome.heartbeatMs === 0 ? 3_600_000 : welcome.heartbeatMs * 2.5 + 2000);
    this.gen += 1;
    const gen = this.gen;
    this.sock = sock;
    sock.onmessage = (ev) => this.onData(gen, ev.data);
    sock.onclose = (ev) => this.onClose(gen, ev.code, ev.reason);
    sock.onerror = () => {};
    this.armSilence();
    this.unresumed = undefined;
    if (askedResume && !welcome.resumed) {
      // The server no longer knows our session: join our rooms again. If the session lives on
      // at the owner of a room, the join's Redirect leads there.
      if (this.rooms.names().length > 0) this.unresumed = this.rooms.resume(asked);
      for (const room of this.rooms.names()) this.pending.set(this.ids.nextId(), { room });
      this.rooms.clear();
    }
    // (Re-)send every join awaiting an answer under a fresh request id.
    const joins = [...this.pending.values()];
    this.pending.clear();
    for (const join of joins) {
      const id = this.ids.nextId();
      this.pending.set(id, join);
      try {
        sock.send(encodeMessage({ type: 'Join', requestId: id, room: join.room }));
      } catch (err) {
        // The caller (connect or reconnect) retries; joins stay pending.
        this.abandonSocket();
        throw new ClientError('connection_lost', `send failed: ${String(err)}`);
      }
    }
    // Requests refused while the room moved go to where the session was resumed.
    for (const msg of this.retries.takeOnWelcome(welcome.resumed)) {
      try {
        sock.send(encodeMessage(msg));
      } catch (err) {
        this.abandonSocket();
        throw new ClientError('connection_lost', `send failed: ${String(err)}`);
      }
      this.retries.sent(msg);
    }
    this.early = early;
  }

  /** Becomes open: handles frames that arrived right behind Welcome, then sends the queue. */
  private opened(welcome: Welcome, announce: boolean): void {
    this.setStatus('open');
    this.emit('welcome', welcome);
    if (announce) this.emit('message', welcome);
    const gen = this.gen;
    const early = this.early;
    this.early = [];
    for (const bytes of early) {
      if (this.gen !== gen) return;
      this.onData(gen, bytes);
    }
    this.flush();
  }

  // ---- serving a connection -----------------------------------------------------------

  private armSilence(): void {
    this.clock.clearTimeout(this.silenceTimer);
    const gen = this.gen;
    this.silenceTimer = this.clock.setTimeout(() => {
      if (gen === this.gen) {
        this.exit({
          kind: 'lost',
          err: new ClientError('timeout', 'timed out waiting for any frame from the server (heartbeat)'),
          silent: true,
        });
      }
    }, this.silenceMs);
  }

  private onData(gen: number, data: unknown): void {
    if (gen !== this.gen) return;
    this.armSilence();
    const bytes = messageBytes(data);
    if (!bytes) {
      this.emit('error', new ClientError('bad_frame', 'bad frame from server: text message'));
      return;
    }
    let msg: Message;
    try {
      msg = decodeMessage(bytes);
    } catch (err) {
      this.emit('error', err instanceof FrameError ? ClientError.fromFrameError(err) : asClientError(err));
      return;
    }
    this.onFrame(msg);
  }

  private onFrame(msg: Message): void {
    switch (msg.type) {
      case 'Ping':
        try {
          this.write({ type: 'Pong', nonce: msg.nonce });
        } catch {
          // write() already ended the connection.
        }
        return;
      case 'Pong':
      case 'Welcome':
      case 'Hello':
        return;
      case 'Joined': {
        this.redirectsInARow = 0;
        const pending = this.pending.get(msg.requestId);
        if (pending) {
          this.pending.delete(msg.requestId);
          this.clock.clearTimeout(pending.timer);
          this.rooms.joined(msg.room || pending.room, msg.lastSeq);
          if (pending.resolve) pending.resolve(msg);
          else this.emit('message', msg);
        } else {
          // A resync after a resume whose replay had a gap.
          if (this.rooms.has(msg.room)) this.rooms.joined(msg.room, msg.lastSeq);
          this.emit('message', msg);
        }
        return;
      }
      case 'Error':
        this.onError(msg);
        return;
      case 'Redirect': {
        this.redirectsInARow += 1;
        if (this.redirectsInARow > this.options.maxRedirects) {
          const pending = this.pending.get(msg.requestId);
          if (pending?.reject) {
            this.pending.delete(msg.requestId);
            this.clock.clearTimeout(pending.timer);
            pending.reject(new ClientError('too_many_redirects', `too many redirects (limit ${this.options.maxRedirects})`));
          }
          this.redirectsInARow = 0;
          return;
        }
        this.exit({ kind: 'redirect', url: msg.url });
        return;
      }
      case 'Migrate':
        this.exit({ kind: 'migrate', url: msg.url, resumeToken: msg.resumeToken });
        return;
      case 'Event':
        if (this.rooms.observeEvent(msg)) {
          this.calls.observe(msg, this.user);
          this.emit('message', msg);
        }
        return;
      default:
        this.calls.observe(msg, this.user);
        this.emit('message', msg);
    }
  }

  /** An Error frame: a retryable refusal of a join or a tracked request is retried by the
   * library (docs/protocol.md, "Retryable refusals"); anything else goes to its caller or the
   * application. */
  private onError(msg: Extract<Message, { type: 'Error' }>): void {
    const policy = this.options.reconnect;
    const err = ClientError.fromFrame(msg);
    const pending = msg.requestId !== 0 ? this.pending.get(msg.requestId) : undefined;
    if (pending) {
      this.pending.delete(msg.requestId);
      const refusals = pending.refusals ?? 0;
      if ((err.retriable || msg.code === ErrorCode.NotOwner) && refusals < policy.maxAttempts) {
        // The room is between owners (or the node cannot commit now): keep the join and
        // reconnect, so it is sent again where the room lives (same rule as the Rust client).
        pending.refusals = refusals + 1;
        this.pending.set(msg.requestId, pending);
        this.exit({ kind: 'lost', err });
        return;
      }
      this.clock.clearTimeout(pending.timer);
      if (pending.reject) pending.reject(err);
      else this.emit('message', msg);
      return;
    }
    const refusal = this.retries.refused(msg, this.clock.now(), (n) => backoffMs(policy, n, this.random), policy.maxAttempts);
    switch (refusal.kind) {
      case 'deliver':
        if (msg.requestId === 0 && msg.code === ErrorCode.AuthFailed) {
          this.exit({ kind: 'fatal', err });
          return;
        }
        this.emit('message', msg);
        return;
      case 'later':
        this.armRetry();
        return;
      case 'after_move':
      case 'ignore':
        // The node's Migrate follows; the request is sent again after the move.
        return;
    }
  }

  private onClose(gen: number, code: number, reason: string): void {
    if (gen !== this.gen) return;
    const text = `server closed the connection: ${code} ${reason}`.trim();
    if (closeIsFatal(code)) {
      this.exit({ kind: 'fatal', err: new ClientError('websocket', text, { closeCode: code }) });
    } else {
      this.exit({ kind: 'lost', err: new ClientError('websocket', text, { closeCode: code }) });
    }
  }

  /** Detaches the current socket (its late events are ignored) and returns it. */
  private abandonSocket(): SocketLike | null {
    this.gen += 1;
    this.clock.clearTimeout(this.silenceTimer);
    this.clock.clearTimeout(this.retryTimer);
    const sock = this.sock;
    this.sock = null;
    if (sock) sock.onopen = sock.onmessage = sock.onerror = sock.onclose = null;
    return sock;
  }

  /** Ends the current connection and decides what comes next. */
  private exit(exit: Exit): void {
    const sock = this.abandonSocket();
    if (sock) {
      try {
        sock.close(CloseCode.Normal, 'client closing');
      } catch {
        // Already closed.
      }
    }
    void this.afterExit(exit);
  }

  private async afterExit(exit: Exit): Promise<void> {
    if (this.stopped) return;
    // Where we were: a reconnect may come back here if the node it is sent to (and the entry
    // URL) do not answer.
    const left = this.endpoint;
    let resume: Resume | undefined;
    let immediate: boolean;
    switch (exit.kind) {
      case 'fatal':
        this.shutdown(exit.err);
        return;
      case 'lost':
        if (this.options.reconnect.maxAttempts === 0) {
          this.shutdown(exit.err);
          return;
        }
        resume = this.rooms.resume(this.sessionId);
        immediate = false;
        if (exit.silent) {
          // A node that fell silent (stopped, cut off) would only time out again: the first
          // attempt goes at once to the next known node, which redirects the resume to the
          // room's new owner (same rule as the Rust client).
          const next = [this.endpoint, left, this.entry].find((c) => c !== left);
          if (next !== undefined) {
            this.endpoint = next;
            immediate = true;
          }
        }
        break;
      case 'redirect': {
        const problem = urlProblem(exit.url);
        if (problem) {
          this.shutdown(new ClientError('invalid_url', `invalid URL ${JSON.stringify(exit.url)}: ${problem}`));
          return;
        }
        this.endpoint = exit.url;
        // The connection moves to the room's owner; rooms on the old node are left.
        this.rooms.clear();
        // A resume that reached a node without our room (a "*" token is not routed by its
        // room) continues at the owner the re-join was sent to.
        resume = this.unresumed;
        this.unresumed = undefined;
        immediate = true;
        break;
      }
      case 'migrate': {
        // An empty URL (a standalone node draining) means: wherever we are connected.
        if (exit.url) {
          const problem = urlProblem(exit.url);
          if (problem) {
            this.shutdown(new ClientError('invalid_url', `invalid URL ${JSON.stringify(exit.url)}: ${problem}`));
            return;
          }
          this.endpoint = exit.url;
        }
        resume = this.rooms.resume(this.sessionId);
        if (exit.resumeToken) resume.session = exit.resumeToken;
        immediate = exit.url !== '';
        break;
      }
    }
    this.reconnects += 1;
    this.setStatus('reconnecting');
    try {
      const welcome = await this.reconnect(resume, immediate, left);
      this.opened(welcome, true);
    } catch (err) {
      this.shutdown(asClientError(err));
    }
  }

  /** Retries establish() with backoff; when the target stops answering, moves on in turn to the
   * node it was on (`left`) and the entry URL, so one dead node cannot use up every attempt
   * (docs/reliability.md, finding 2). */
  private async reconnect(resume: Resume | undefined, immediate: boolean, left: string): Promise<Welcome> {
    const policy = this.options.reconnect;
    const attempts = Math.max(1, policy.maxAttempts);
    let last = new ClientError('connection_lost', 'connection lost');
    let failuresHere = 0;
    const candidates = [...new Set([this.endpoint, left, this.entry])];
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (!(immediate && attempt === 1)) await this.sleep(backoffMs(policy, attempt, this.random));
      if (this.stopped) throw new ClientError('closed', 'client closed');
      try {
        return await this.establish(resume);
      } catch (err) {
        const e = asClientError(err);
        // NotOwner: the node answering our resume lost the room; ask the entry node.
        if (!(e.retriable || e.code === ErrorCode.NotOwner)) throw e;
        failuresHere += 1;
        if (shouldGoBackToEntry(e, failuresHere)) {
          // A node a handshake redirect led to is none of the candidates: the entry URL
          // redirects a resuming Hello to the room's current owner.
          const at = candidates.indexOf(this.endpoint);
          const next = at < 0 ? this.entry : candidates[(at + 1) % candidates.length];
          if (next !== this.endpoint) {
            this.endpoint = next;
            failuresHere = 0;
          }
        }
        last = e;
      }
    }
    throw new ClientError('reconnect_failed', `reconnect failed after ${attempts} attempts: ${last.message}`, {
      attempts,
      cause: last,
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimeout(resolve, ms));
  }

  /** Stops for good with `err`: fails every waiting join and queued operation. */
  private shutdown(err: ClientError): void {
    if (this.stopped) return;
    this.abandonSocket();
    this.stop(err);
    this.emit('closed', err);
  }

  private stop(err: ClientError): void {
    this.stopped = true;
    for (const p of this.pending.values()) {
      this.clock.clearTimeout(p.timer);
      p.reject?.(err.kind === 'closed' ? err : new ClientError('connection_lost', `connection lost: ${err.message}`));
    }
    this.pending.clear();
    const queued = this.outq;
    this.outq = [];
    for (const item of queued) item.fail(err);
    this.setStatus('closed');
  }
}
