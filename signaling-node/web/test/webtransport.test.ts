// WebTransport in the client, on fake sessions and sockets and a manual clock: framing on the
// stream, the WebTransport URL of a node, WebTransport first with a bounded fallback to
// WebSocket on connect, redirect, migrate and resume, and a session resumed across transports.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SwitchboardClient, type ClientOptions } from '../src/client.js';
import type { ClientError } from '../src/errors.js';
import { encodeMessage, EventKind, type Message, type Welcome } from '../src/messages.js';
import { StreamFrames, webTransportUrl } from '../src/webtransport.js';
import { FakeNetwork, FakeSocket, FakeWebTransport, FakeWebTransportNetwork, fakeToken, ManualClock, settle } from './fake.js';

const ENTRY = 'wss://node-a.example:7443/ws';

function welcome(over: Partial<Welcome> = {}): Welcome {
  return { type: 'Welcome', session: 's-1', version: 2, node: 'node-a', heartbeatMs: 1000, resumed: false, ...over };
}

function setup(over: Partial<ClientOptions> = {}, entry = ENTRY) {
  const ws = new FakeNetwork();
  const wt = new FakeWebTransportNetwork();
  const clock = new ManualClock();
  const client = new SwitchboardClient(entry, {
    token: fakeToken('alice'),
    socketFactory: ws.factory,
    webTransport: { factory: wt.factory, fallbackMs: 1000 },
    clock,
    random: () => 0.5,
    reconnect: { initialBackoffMs: 100, maxBackoffMs: 100, maxAttempts: 5 },
    ...over,
  });
  const messages: Message[] = [];
  client.on('message', (m) => messages.push(m));
  return { ws, wt, clock, client, messages };
}

/** Accepts `session` and answers its Hello with `w`. */
async function acceptWt(session: FakeWebTransport, w: Welcome = welcome()): Promise<void> {
  session.open();
  await settle();
  assert.equal(session.sent[0]?.type, 'Hello');
  session.deliver(w);
  await settle();
}

/** Opens `sock` and answers its Hello with `w`. */
async function acceptWs(sock: FakeSocket, w: Welcome = welcome()): Promise<void> {
  sock.open();
  await settle();
  assert.equal(sock.sent[0]?.type, 'Hello');
  sock.deliver(w);
  await settle();
}

test('frames are split on their length, across chunks and several in one chunk', () => {
  const a = encodeMessage({ type: 'Ping', nonce: 1n });
  const b = encodeMessage({ type: 'Leave', requestId: 3, room: 'studio' });
  const both = new Uint8Array([...a, ...b]);
  const frames = new StreamFrames();
  assert.deepEqual(frames.push(both.slice(0, 2)), []);
  assert.deepEqual(frames.push(both.slice(2, a.length + 5)), [a]);
  assert.deepEqual(frames.push(both.slice(a.length + 5)), [b]);
  assert.deepEqual(new StreamFrames().push(both), [a, b]);
  // A length the stream cannot skip.
  assert.throws(() => new StreamFrames().push(new Uint8Array([0, 1, 0, 1, 9])), RangeError);
});

test('a node\'s WebTransport URL is its wss URL on https; ws nodes have none', () => {
  assert.equal(webTransportUrl('wss://n.example:7443/ws?traceparent=00-x'), 'https://n.example:7443/ws?traceparent=00-x');
  assert.equal(webTransportUrl('ws://127.0.0.1:7000/ws'), undefined);
});

test('WebTransport first: the session runs on its stream and no WebSocket is opened', async () => {
  const { ws, wt, client } = setup();
  const done = client.connect();
  await settle();
  assert.equal(wt.last.url, 'https://node-a.example:7443/ws');
  assert.deepEqual(wt.last.protocols, ['switchboard.v2', 'switchboard.v1']);
  await acceptWt(wt.last);
  await done;
  assert.equal(ws.sockets.length, 0);
  assert.equal(client.session().transport, 'webtransport');
  // Heartbeats and joins go over the stream.
  wt.last.deliver({ type: 'Ping', nonce: 7n }, 1);
  const joined = client.join('studio');
  await settle();
  assert.deepEqual(wt.last.sentOf('Pong').map((p) => p.nonce), [7n]);
  const join = wt.last.sentOf('Join')[0]!;
  wt.last.deliver({ type: 'Joined', requestId: join.requestId, room: 'studio', members: ['alice'], lastSeq: 4 });
  assert.equal((await joined).lastSeq, 4);
  client.close();
  assert.equal(wt.last.closedByClient?.closeCode, 1000);
});

test('a refused WebTransport session falls back to WebSocket at once', async () => {
  const { ws, wt, clock, client } = setup();
  const done = client.connect();
  await settle();
  wt.last.fail();
  await settle();
  assert.equal(clock.now(), 0);
  await acceptWs(ws.last);
  await done;
  assert.equal(ws.last.url, ENTRY);
  assert.equal(client.session().transport, 'websocket');
});

test('a WebTransport session that does not open within fallbackMs gives way to WebSocket', async () => {
  const { ws, wt, clock, client } = setup();
  const done = client.connect();
  await clock.advance(999);
  assert.equal(ws.sockets.length, 0);
  await clock.advance(1);
  assert.equal(ws.sockets.length, 1);
  assert.ok(wt.last.closedByClient, 'the slow session is closed');
  // Opening late changes nothing.
  wt.last.open();
  await acceptWs(ws.last);
  await done;
  assert.equal(client.session().transport, 'websocket');
  assert.equal(wt.last.sent.length, 0);
});

test('a session lost before its first frame says Hello again over WebSocket', async () => {
  const { ws, wt, client } = setup();
  const done = client.connect();
  await settle();
  wt.last.open();
  await settle();
  assert.equal(wt.last.sentOf('Hello').length, 1);
  // The node's Redirect was lost with the QUIC connection.
  wt.last.lose();
  await settle();
  await acceptWs(ws.last);
  await done;
  assert.equal(ws.last.sentOf('Hello').length, 1);
  assert.equal(client.session().transport, 'websocket');
});

test('a connect given up during the WebTransport attempt opens no WebSocket', async () => {
  const { ws, wt, clock, client } = setup({ timeouts: { connectMs: 500 } });
  const failed = assert.rejects(client.connect(), (e: ClientError) => e.kind === 'timeout');
  await clock.advance(500);
  await failed;
  wt.last.fail();
  await clock.advance(2000);
  assert.equal(ws.sockets.length, 0);
});

test('a ws:// node is reached over WebSocket only', async () => {
  const { ws, wt, client } = setup({}, 'ws://127.0.0.1:7000/ws');
  const done = client.connect();
  await acceptWs(ws.last);
  await done;
  assert.equal(wt.sessions.length, 0);
  assert.equal(client.session().transport, 'websocket');
});

test('Redirect and Migrate go to the new node over WebTransport first', async () => {
  const { ws, wt, client } = setup();
  const done = client.connect();
  await settle();
  await acceptWt(wt.last);
  await done;
  // A Join answered with Redirect: the client moves to the owner.
  const joined = client.join('studio');
  await settle();
  const join = wt.last.sentOf('Join')[0]!;
  wt.last.deliver({ type: 'Redirect', requestId: join.requestId, room: 'studio', url: 'wss://node-b.example:7443/ws' });
  await settle();
  assert.equal(wt.last.url, 'https://node-b.example:7443/ws');
  await acceptWt(wt.last, welcome({ node: 'node-b', session: 's-2' }));
  const join2 = wt.last.sentOf('Join')[0]!;
  wt.last.deliver({ type: 'Joined', requestId: join2.requestId, room: 'studio', members: ['alice'], lastSeq: 2 });
  await joined;
  // Migrate: resume on node C, whose UDP port is not served, so over WebSocket.
  wt.last.deliver({ type: 'Migrate', room: 'studio', url: 'wss://node-c.example:7443/ws', resumeToken: 's-2' });
  await settle();
  assert.equal(wt.last.url, 'https://node-c.example:7443/ws');
  wt.last.fail();
  await settle();
  assert.equal(ws.last.url, 'wss://node-c.example:7443/ws');
  await acceptWs(ws.last, welcome({ node: 'node-c', session: 's-2', resumed: true }));
  assert.deepEqual(ws.last.sentOf('Hello')[0]!.resume, { session: 's-2', lastSeq: 2 });
  assert.deepEqual({ node: client.session().node, transport: client.session().transport }, { node: 'node-c', transport: 'websocket' });
});

test('a session started on WebTransport resumes on WebSocket, and back', async () => {
  const { ws, wt, clock, client, messages } = setup();
  const done = client.connect();
  await settle();
  await acceptWt(wt.last);
  await done;
  const joined = client.join('studio');
  await settle();
  wt.last.deliver({ type: 'Joined', requestId: wt.last.sentOf('Join')[0]!.requestId, room: 'studio', members: ['alice'], lastSeq: 5 });
  await joined;
  // The owner dies: the QUIC connection is lost without a close code.
  wt.last.lose();
  await settle();
  assert.equal(client.status, 'reconnecting');
  await clock.advance(100);
  wt.last.fail();
  await settle();
  await acceptWs(ws.last, welcome({ resumed: true }));
  assert.deepEqual(ws.last.sentOf('Hello')[0]!.resume, { session: 's-1', lastSeq: 5 });
  assert.equal(client.session().transport, 'websocket');
  assert.equal(client.session().resumed, true);
  // The WebSocket drops (1001, going away); WebTransport answers again and the session resumes there.
  ws.last.deliver({ type: 'Event', room: 'studio', seq: 6, kind: EventKind.MemberJoined, user: 'bob', callId: '', state: '', atMs: 0 });
  ws.last.drop(1001, 'going away');
  await settle();
  await clock.advance(100);
  await acceptWt(wt.last, welcome({ resumed: true }));
  assert.deepEqual(wt.last.sentOf('Hello')[0]!.resume, { session: 's-1', lastSeq: 6 });
  assert.equal(client.session().transport, 'webtransport');
  assert.ok(messages.some((m) => m.type === 'Event'));
});

test('the node\'s close code on WebTransport decides like a WebSocket close: 1008 is final', async () => {
  const { wt, client } = setup();
  const closed: unknown[] = [];
  client.on('closed', (e) => closed.push(e));
  const done = client.connect();
  await settle();
  await acceptWt(wt.last);
  await done;
  wt.last.end(1008, 'authentication failed');
  await settle();
  assert.equal(client.status, 'closed');
  assert.equal((closed[0] as { closeCode?: number }).closeCode, 1008);
});
