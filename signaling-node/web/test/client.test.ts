// The client driver against a scripted fake server and a manual clock: handshake and
// negotiation, joins, heartbeats, ICE batching, redirects, migration, reconnect with backoff
// and resume from the last seq, entry-URL fallback and typed errors.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SwitchboardClient, type ClientOptions } from '../src/client.js';
import { ClientError, ErrorCode } from '../src/errors.js';
import { EventKind, type Message, type Welcome } from '../src/messages.js';
import { FakeNetwork, FakeSocket, fakeToken, ManualClock, settle } from './fake.js';

const ENTRY = 'ws://127.0.0.1:7000/ws';

function welcome(over: Partial<Welcome> = {}): Welcome {
  return { type: 'Welcome', session: 's-1', version: 2, node: 'node-a', heartbeatMs: 1000, resumed: false, ...over };
}

function setup(over: Partial<ClientOptions> = {}) {
  const net = new FakeNetwork();
  const clock = new ManualClock();
  const client = new SwitchboardClient(ENTRY, {
    token: fakeToken('alice'),
    socketFactory: net.factory,
    clock,
    random: () => 0.5,
    ...over,
  });
  const messages: Message[] = [];
  client.on('message', (m) => messages.push(m));
  const closed: (ClientError | undefined)[] = [];
  client.on('closed', (e) => closed.push(e));
  return { net, clock, client, messages, closed };
}

/** Opens `sock` and answers its Hello with `w`. */
async function accept(sock: FakeSocket, w: Welcome = welcome()): Promise<void> {
  sock.open();
  await settle();
  assert.equal(sock.sent[0]?.type, 'Hello');
  sock.deliver(w);
  await settle();
}

async function connected(over: Partial<ClientOptions> = {}, w: Welcome = welcome()) {
  const env = setup(over);
  const done = env.client.connect();
  await accept(env.net.last, w);
  await done;
  return env;
}

async function joinRoom(env: Awaited<ReturnType<typeof connected>>, room: string, lastSeq: number) {
  const joined = env.client.join(room);
  await settle();
  const join = env.net.last.sentOf('Join').at(-1)!;
  env.net.last.deliver({ type: 'Joined', requestId: join.requestId, room, members: ['alice'], lastSeq });
  return joined;
}

test('connect offers both subprotocols and says Hello with the token and versions', async () => {
  const { net, client } = await connected();
  const sock = net.sockets[0]!;
  assert.deepEqual(sock.protocols, ['switchboard.v2', 'switchboard.v1']);
  assert.equal(sock.binaryType, 'arraybuffer');
  const hello = sock.sentOf('Hello')[0]!;
  assert.equal(hello.token, fakeToken('alice'));
  assert.deepEqual(hello.versions, [2, 1]);
  assert.equal(hello.resume, undefined);
  assert.equal(client.status, 'open');
  assert.deepEqual(
    { session: client.session().session, node: client.session().node, user: client.session().user, version: client.session().version },
    { session: 's-1', node: 'node-a', user: 'alice', version: 2 },
  );
});

test('join resolves with Joined; errors answering it are typed', async () => {
  const env = await connected();
  const joined = await joinRoom(env, 'studio', 4);
  assert.deepEqual(joined.members, ['alice']);
  assert.equal(env.client.lastSeq('studio'), 4);
  const refused = env.client.join('other');
  await settle();
  const id = env.net.last.sentOf('Join').at(-1)!.requestId;
  env.net.last.deliver({ type: 'Error', code: 1003, message: 'room not allowed', requestId: id });
  await assert.rejects(refused, (err: ClientError) => err.kind === 'server' && err.code === ErrorCode.AuthFailed && !err.retriable);
});

test('a join times out when nobody answers', async () => {
  const env = await connected({ timeouts: { requestMs: 500 } });
  const timedOut = assert.rejects(env.client.join('studio'), (err: ClientError) => err.kind === 'timeout');
  await env.clock.advance(600);
  await timedOut;
});

test('pings are answered with the same nonce', async () => {
  const { net } = await connected();
  net.last.deliver({ type: 'Ping', nonce: 0xffffffffffffffffn });
  await settle();
  assert.deepEqual(net.last.sentOf('Pong'), [{ type: 'Pong', nonce: 0xffffffffffffffffn }]);
});

test('the invite flow addresses frames through the call table', async () => {
  const env = await connected();
  await joinRoom(env, 'studio', 0);
  const callId = await env.client.invite('studio', 'bob');
  const invite = env.net.last.sentOf('Invite')[0]!;
  assert.deepEqual([invite.callId, invite.from, invite.to, invite.room], [callId, 'alice', 'bob', 'studio']);
  const offerId = await env.client.offer(callId, 'v=0\r\n');
  const offer = env.net.last.sentOf('Offer')[0]!;
  assert.equal(offer.requestId, offerId);
  assert.equal(offer.to, 'bob');
  await assert.rejects(env.client.offer('c-unknown', 'v=0'), (e: ClientError) => e.kind === 'unknown_call');
  // The invitee side: an incoming invite makes the call known, accept answers the inviter.
  env.net.last.deliver({ type: 'Invite', requestId: 0, room: 'studio', callId: 'c-in', from: 'carol', to: 'alice' });
  await settle();
  await env.client.accept('c-in');
  const result = env.net.last.sentOf('InviteResult')[0]!;
  assert.deepEqual([result.to, result.accepted, result.callId], ['carol', true, 'c-in']);
  // A refused SDP comes back as an Error frame message echoing the request id.
  env.net.last.deliver({ type: 'Error', code: 1001, message: 'sdp must start with v=0', requestId: offerId });
  await settle();
  const err = env.messages.find((m) => m.type === 'Error');
  assert.deepEqual(err, { type: 'Error', code: 1001, message: 'sdp must start with v=0', requestId: offerId });
});

test('an SDP too large for one frame is refused locally and the connection kept', async () => {
  const env = await connected();
  await joinRoom(env, 'studio', 0);
  const callId = await env.client.invite('studio', 'bob');
  await assert.rejects(env.client.offer(callId, 'v=0\r\n' + 'a'.repeat(70_000)), (e: ClientError) => e.kind === 'encode' && !e.retriable);
  assert.equal(env.client.status, 'open');
  await env.client.offer(callId, 'v=0\r\n');
  assert.equal(env.net.last.sentOf('Offer').length, 1);
});

test('candidates queued together go out as one IceBatch on v2, one by one on v1', async () => {
  for (const version of [2, 1]) {
    const env = await connected({}, welcome({ version }));
    await joinRoom(env, 'studio', 0);
    const callId = await env.client.invite('studio', 'bob');
    await Promise.all([0, 1, 2].map((i) => env.client.ice(callId, { candidate: `candidate:${i}`, sdpMid: '0', sdpMLineIndex: 0 })));
    await env.client.endOfCandidates(callId);
    const sock = env.net.last;
    if (version === 2) {
      assert.equal(sock.sentOf('IceBatch').length, 1);
      assert.deepEqual(sock.sentOf('IceBatch')[0]!.candidates.map((c) => c.candidate), ['candidate:0', 'candidate:1', 'candidate:2']);
      assert.deepEqual(sock.sentOf('IceCandidate').map((c) => c.candidate), ['']);
    } else {
      assert.equal(sock.sentOf('IceBatch').length, 0);
      assert.deepEqual(sock.sentOf('IceCandidate').map((c) => c.candidate), ['candidate:0', 'candidate:1', 'candidate:2', '']);
    }
    // Order is kept: end-of-candidates after the candidates.
    const kinds = sock.sent.map((m) => m.type).filter((t) => t.startsWith('Ice'));
    assert.equal(kinds.at(-1), 'IceCandidate');
  }
});

test('a handshake Redirect moves to the room owner', async () => {
  const env = setup();
  const done = env.client.connect();
  env.net.last.open();
  await settle();
  env.net.last.deliver({ type: 'Redirect', requestId: 0, room: 'studio', url: 'ws://127.0.0.2:7000/ws' });
  await settle();
  assert.equal(env.net.sockets.length, 2);
  assert.equal(env.net.last.url, 'ws://127.0.0.2:7000/ws');
  await accept(env.net.last, welcome({ node: 'node-b' }));
  const w = await done;
  assert.equal(w.node, 'node-b');
  assert.equal(env.client.session().url, 'ws://127.0.0.2:7000/ws');
});

test('the traceparent rides on every connect, the Redirect included', async () => {
  const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  const env = setup({ traceparent: tp });
  const done = env.client.connect();
  assert.equal(env.net.last.url, `${ENTRY}?traceparent=${tp}`);
  env.net.last.open();
  await settle();
  env.net.last.deliver({ type: 'Redirect', requestId: 0, room: 'studio', url: 'ws://127.0.0.2:7000/ws?x=1' });
  await settle();
  assert.equal(env.net.last.url, `ws://127.0.0.2:7000/ws?x=1&traceparent=${tp}`);
  await accept(env.net.last, welcome({ node: 'node-b' }));
  await done;
  // The session URL stays the node's own URL, without the parameter.
  assert.equal(env.client.session().url, 'ws://127.0.0.2:7000/ws?x=1');
});

test('too many redirects in a row fail the connect', async () => {
  const env = setup({ maxRedirects: 1 });
  const done = assert.rejects(env.client.connect(), (e: ClientError) => e.kind === 'too_many_redirects');
  for (let i = 0; i < 2; i++) {
    env.net.last.open();
    await settle();
    env.net.last.deliver({ type: 'Redirect', requestId: 0, room: 'r', url: `ws://127.0.0.${i + 2}:7000/ws` });
    await settle();
  }
  await done;
  assert.equal(env.client.status, 'closed');
});

test('a Redirect answering a join re-sends the join at the owner', async () => {
  const env = await connected();
  const joined = env.client.join('studio');
  await settle();
  const id = env.net.last.sentOf('Join')[0]!.requestId;
  env.net.last.deliver({ type: 'Redirect', requestId: id, room: 'studio', url: 'ws://127.0.0.2:7000/ws' });
  await settle();
  const owner = env.net.last;
  assert.equal(owner.url, 'ws://127.0.0.2:7000/ws');
  await accept(owner, welcome({ node: 'node-b', session: 's-2' }));
  const join = owner.sentOf('Join')[0]!;
  assert.equal(join.room, 'studio');
  owner.deliver({ type: 'Joined', requestId: join.requestId, room: 'studio', members: ['alice', 'bob'], lastSeq: 9 });
  assert.deepEqual((await joined).members, ['alice', 'bob']);
});

test('a dropped connection reconnects with backoff and resumes from the last seq', async () => {
  const env = await connected();
  await joinRoom(env, 'studio', 3);
  env.net.last.deliver({ type: 'Event', room: 'studio', seq: 4, kind: EventKind.MemberJoined, user: 'bob', callId: '', state: '', atMs: 0 });
  await settle();
  const statuses: string[] = [];
  env.client.on('status', (s) => statuses.push(s));
  env.net.last.drop(1006);
  await settle();
  assert.equal(env.client.status, 'reconnecting');
  assert.equal(env.net.sockets.length, 1, 'waits for the backoff before dialling');
  // Offered while reconnecting: queued and sent after Welcome.
  const left = env.client.leave('elsewhere');
  await env.clock.advance(100);
  assert.equal(env.net.sockets.length, 2);
  const again = env.net.last;
  again.open();
  await settle();
  assert.deepEqual(again.sentOf('Hello')[0]!.resume, { session: 's-1', lastSeq: 4 });
  again.deliver(welcome({ resumed: true }));
  await left;
  assert.deepEqual(statuses, ['reconnecting', 'open']);
  assert.equal(again.sentOf('Leave').length, 1);
  // The replay of an event already seen is dropped; a new one passes.
  for (const seq of [4, 5]) {
    again.deliver({ type: 'Event', room: 'studio', seq, kind: EventKind.MemberJoined, user: 'bob', callId: '', state: '', atMs: 0 });
  }
  await settle();
  const seqs = env.messages.filter((m) => m.type === 'Event').map((m) => (m as { seq: number }).seq);
  assert.deepEqual(seqs, [4, 5]);
  assert.equal(env.client.session().reconnects, 1);
  assert.ok(env.messages.some((m) => m.type === 'Welcome'), 'the reconnect Welcome is delivered');
});

test('a resume the server does not know re-joins the rooms', async () => {
  const env = await connected();
  await joinRoom(env, 'studio', 3);
  env.net.last.drop(1006);
  await settle();
  await env.clock.advance(200);
  const again = env.net.last;
  await accept(again, welcome({ resumed: false, session: 's-new' }));
  const join = again.sentOf('Join')[0]!;
  assert.equal(join.room, 'studio');
  again.deliver({ type: 'Joined', requestId: join.requestId, room: 'studio', members: ['alice'], lastSeq: 10 });
  await settle();
  assert.equal(env.client.lastSeq('studio'), 10);
  assert.ok(env.messages.some((m) => m.type === 'Joined'), 'the automatic re-join is reported');
});

test('a resume welcomed by a node without the room is resumed at the owner the re-join is sent to', async () => {
  // A "*" token is not routed by its room: the resume may reach a node that does not own it.
  const env = await connected();
  await joinRoom(env, 'studio', 3);
  env.net.last.drop(1006);
  await settle();
  await env.clock.advance(200);
  const elsewhere = env.net.last;
  await accept(elsewhere, welcome({ resumed: false, session: 's-elsewhere' }));
  const join = elsewhere.sentOf('Join')[0]!;
  elsewhere.deliver({ type: 'Redirect', requestId: join.requestId, room: 'studio', url: 'ws://127.0.0.2:7000/ws' });
  await settle();
  const owner = env.net.last;
  assert.equal(owner.url, 'ws://127.0.0.2:7000/ws');
  owner.open();
  await settle();
  assert.deepEqual(owner.sentOf('Hello')[0]!.resume, { session: 's-1', lastSeq: 3 });
  owner.deliver(welcome({ resumed: true, node: 'node-b' }));
  await settle();
  assert.equal(env.client.session().session, 's-1');
  assert.equal(env.client.session().resumed, true);
});

test('a refused automatic re-join is retried after a reconnect', async () => {
  // A re-join refused with 1006 while the room is between owners must be kept and sent again,
  // or the client stays in a room the server no longer counts it in (docs/reliability.md,
  // finding 7).
  const env = await connected();
  await joinRoom(env, 'studio', 3);
  env.net.last.drop(1006);
  await settle();
  await env.clock.advance(200);
  const second = env.net.last;
  await accept(second, welcome({ resumed: false, session: 's-new' }));
  const refused = second.sentOf('Join')[0]!;
  second.deliver({ type: 'Error', code: ErrorCode.NotOwner, message: 'this node no longer owns the room', requestId: refused.requestId });
  await settle();
  await env.clock.advance(1000);
  const third = env.net.last;
  assert.notEqual(third, second, 'reconnected to retry the re-join');
  await accept(third, welcome({ resumed: true, session: 's-new' }));
  const join = third.sentOf('Join')[0]!;
  assert.equal(join.room, 'studio');
  third.deliver({ type: 'Joined', requestId: join.requestId, room: 'studio', members: ['alice'], lastSeq: 10 });
  await settle();
  assert.equal(env.client.lastSeq('studio'), 10);
  assert.ok(!env.messages.some((m) => m.type === 'Error'), 'the refusal is handled, not reported');
});

test('a resume refused while its room moves reports nothing and follows the Migrate', async () => {
  // Scenario d (issue 15): a node that took the resume just before the shard moved answered the
  // fenced resume with 1006 and no request id; the library must follow the Migrate instead of
  // reporting a retryable error.
  const env = await connected();
  await joinRoom(env, 'studio', 2);
  env.net.last.drop(1006);
  await settle();
  await env.clock.advance(200);
  const second = env.net.last;
  await accept(second, welcome({ resumed: true }));
  second.deliver({ type: 'Error', code: ErrorCode.NotOwner, message: 'this node no longer owns the room', requestId: 0 });
  second.deliver({ type: 'Migrate', room: 'studio', url: 'ws://127.0.0.3:7000/ws', resumeToken: 's-1' });
  await settle();
  const third = env.net.last;
  assert.equal(third.url, 'ws://127.0.0.3:7000/ws');
  await accept(third, welcome({ resumed: true }));
  assert.ok(!env.messages.some((m) => m.type === 'Error'), 'no retryable error reaches the application');
});

test('a request refused while its room moves is sent again after the move', async () => {
  const env = await connected();
  await joinRoom(env, 'studio', 2);
  await env.client.invite('studio', 'bob');
  const invite = env.net.last.sentOf('Invite')[0]!;
  env.net.last.deliver({ type: 'Error', code: ErrorCode.NotOwner, message: 'this node no longer owns the room', requestId: invite.requestId });
  env.net.last.deliver({ type: 'Migrate', room: 'studio', url: 'ws://127.0.0.3:7000/ws', resumeToken: 's-1' });
  await settle();
  const next = env.net.last;
  await accept(next, welcome({ resumed: true }));
  const again = next.sentOf('Invite');
  assert.equal(again.length, 1, 'the invite is sent again on the new node');
  assert.equal(again[0]!.callId, invite.callId);
  assert.ok(!env.messages.some((m) => m.type === 'Error'));
});

test('a request refused with 1010 is retried after a backoff, then reported', async () => {
  const env = await connected({ reconnect: { maxAttempts: 2, initialBackoffMs: 10 } });
  await joinRoom(env, 'studio', 2);
  const sock = env.net.last;
  await env.client.sendRaw({ type: 'Hangup', requestId: 41, room: 'studio', callId: 'c1', from: '', reason: '' });
  for (let i = 1; i <= 3; i++) {
    sock.deliver({ type: 'Error', code: ErrorCode.Draining, message: 'state store unavailable, retry', requestId: 41 });
    await settle();
    await env.clock.advance(100);
  }
  assert.equal(sock.sentOf('Hangup').length, 3, 'sent, then retried twice');
  const errors = env.messages.filter((m) => m.type === 'Error');
  assert.equal(errors.length, 1, 'reported once the retries are used up');
});

test('a join refused while its room has no owner is retried', async () => {
  const env = await connected();
  const joined = env.client.join('studio');
  await settle();
  const first = env.net.last;
  const join = first.sentOf('Join')[0]!;
  first.deliver({ type: 'Error', code: ErrorCode.Draining, message: "the room's shard has no owner right now; retry", requestId: join.requestId });
  await settle();
  await env.clock.advance(200);
  const second = env.net.last;
  assert.notEqual(second, first, 'reconnected to retry the join');
  await accept(second, welcome({ resumed: true }));
  const retried = second.sentOf('Join')[0]!;
  second.deliver({ type: 'Joined', requestId: retried.requestId, room: 'studio', members: ['alice'], lastSeq: 5 });
  assert.equal((await joined).lastSeq, 5);
});

test('a node that falls silent is left for the entry node at once', async () => {
  // A stopped or cut-off node accepts nothing in time: retrying it first costs a connect
  // timeout and a backoff before the entry node redirects the resume to the new owner.
  const env = await connected({ timeouts: { silenceMs: 200 }, reconnect: { initialBackoffMs: 30_000 } });
  await joinRoom(env, 'studio', 2);
  env.net.last.deliver({ type: 'Migrate', room: 'studio', url: 'ws://127.0.0.3:7000/ws', resumeToken: 's-1' });
  await settle();
  const owner = env.net.last;
  assert.equal(owner.url, 'ws://127.0.0.3:7000/ws');
  await accept(owner, welcome({ resumed: true }));
  // Silent from here on.
  await env.clock.advance(250);
  const next = env.net.last;
  assert.notEqual(next, owner);
  assert.equal(next.url, ENTRY, 'the first attempt goes to the entry node, without a backoff');
  await accept(next, welcome({ resumed: true }));
  assert.equal(env.client.status, 'open');
});

test('Migrate reconnects at once to the new owner with the resume token', async () => {
  const env = await connected();
  await joinRoom(env, 'studio', 2);
  env.net.last.deliver({ type: 'Migrate', room: 'studio', url: 'ws://127.0.0.3:7000/ws', resumeToken: 'rt-9' });
  await settle();
  const next = env.net.last;
  assert.equal(next.url, 'ws://127.0.0.3:7000/ws');
  next.open();
  await settle();
  assert.deepEqual(next.sentOf('Hello')[0]!.resume, { session: 'rt-9', lastSeq: 2 });
});

test('when the moved-to node is dead the client goes back to the entry URL', async () => {
  const env = await connected();
  await joinRoom(env, 'studio', 1);
  env.net.last.deliver({ type: 'Migrate', room: 'studio', url: 'ws://127.0.0.3:7000/ws', resumeToken: '' });
  await settle();
  assert.equal(env.net.last.url, 'ws://127.0.0.3:7000/ws');
  env.net.last.drop(1006); // refused before open: a connect error
  await settle();
  await env.clock.advance(200);
  assert.equal(env.net.last.url, ENTRY);
  await accept(env.net.last, welcome({ resumed: true, node: 'node-c' }));
  assert.equal(env.client.status, 'open');
  assert.equal(env.client.session().node, 'node-c');
});

test('a dead entry URL does not strand a client whose node comes back', async () => {
  // The entry pod is gone; the node the client moved to lost its etcd lease, sent
  // Migrate{url: ""} and answers 1010 until it re-registers (docs/reliability.md, finding 2).
  const env = await connected();
  await joinRoom(env, 'studio', 1);
  const B = 'ws://127.0.0.3:7000/ws';
  env.net.last.deliver({ type: 'Migrate', room: 'studio', url: B, resumeToken: '' });
  await settle();
  await accept(env.net.last, welcome({ resumed: true, node: 'node-b' }));
  env.net.last.deliver({ type: 'Migrate', room: 'studio', url: '', resumeToken: '' });
  await settle();
  for (let i = 0; i < 2; i++) {
    await env.clock.advance(2000);
    assert.equal(env.net.last.url, B);
    env.net.last.open();
    await settle();
    env.net.last.deliver({ type: 'Error', code: ErrorCode.Draining, message: 'no owner; retry', requestId: 0 });
    await settle();
  }
  await env.clock.advance(2000);
  assert.equal(env.net.last.url, ENTRY);
  env.net.last.drop(1006); // the entry pod is gone: refused
  await settle();
  await env.clock.advance(2000);
  assert.equal(env.net.last.url, B, 'back to the node it was on');
  await accept(env.net.last, welcome({ resumed: true, node: 'node-b' }));
  assert.equal(env.client.status, 'open');
  assert.equal(env.client.session().node, 'node-b');
});

test('reconnecting gives up after the configured attempts with a typed error', async () => {
  const env = await connected({ reconnect: { maxAttempts: 2, initialBackoffMs: 10, maxBackoffMs: 10 } });
  env.net.last.drop(1006);
  await settle();
  for (let i = 0; i < 2; i++) {
    await env.clock.advance(20);
    env.net.last.drop(1006);
    await settle();
  }
  assert.equal(env.client.status, 'closed');
  const err = env.closed[0];
  assert.ok(err instanceof ClientError);
  assert.equal(err.kind, 'reconnect_failed');
  assert.equal(err.attempts, 2);
  assert.equal(err.cause?.kind, 'connect');
});

test('policy closes and auth failures are final', async () => {
  const env = await connected();
  env.net.last.drop(1008, 'flooding');
  await settle();
  assert.equal(env.client.status, 'closed');
  assert.equal(env.closed[0]?.closeCode, 1008);
  const env2 = await connected();
  env2.net.last.deliver({ type: 'Error', code: 1003, message: 'token expired', requestId: 0 });
  await settle();
  assert.equal(env2.client.status, 'closed');
  assert.equal(env2.closed[0]?.code, ErrorCode.AuthFailed);
  await assert.rejects(env2.client.join('x'), (e: ClientError) => e.kind === 'closed');
});

test('silence past the heartbeat deadline counts as a lost connection', async () => {
  const env = await connected({}, welcome({ heartbeatMs: 1000 }));
  await env.clock.advance(4400);
  assert.equal(env.client.status, 'open');
  await env.clock.advance(200);
  assert.equal(env.client.status, 'reconnecting');
});

test('a handshake refused with an Error frame fails connect with its code', async () => {
  const env = setup();
  const done = env.client.connect();
  env.net.last.open();
  await settle();
  env.net.last.deliver({ type: 'Error', code: 1003, message: 'bad token', requestId: 0 });
  await assert.rejects(done, (e: ClientError) => e.code === ErrorCode.AuthFailed);
});

test('a bad frame from the server is reported and the connection kept', async () => {
  const env = await connected();
  const errors: ClientError[] = [];
  env.client.on('error', (e) => errors.push(e));
  env.net.last.deliverRaw(new Uint8Array([0, 0, 0, 5, 14, 0, 0, 0, 0]).buffer);
  env.net.last.deliverRaw('text');
  await settle();
  assert.deepEqual(errors.map((e) => e.kind), ['bad_frame', 'bad_frame']);
  assert.equal(env.client.status, 'open');
});

test('close() stops for good and fails what waits', async () => {
  const env = await connected();
  const joined = env.client.join('studio');
  env.client.close();
  await assert.rejects(joined, (e: ClientError) => e.kind === 'closed');
  assert.equal(env.net.last.closed?.code, 1000);
  assert.deepEqual(env.closed, [undefined]);
  assert.equal(env.clock.pending, 0, 'no timer left behind');
});

test('an invalid URL is refused before dialling', async () => {
  const env = setup();
  const c = new SwitchboardClient('http://example/ws', { token: 't', socketFactory: env.net.factory, clock: env.clock });
  await assert.rejects(c.connect(), (e: ClientError) => e.kind === 'invalid_url' && !e.retriable);
  assert.equal(env.net.sockets.length, 0);
});

test('a hangup lost in a reconnect can be sent again until the call ends', async () => {
  const env = await connected({ reconnect: { initialBackoffMs: 10 } });
  await joinRoom(env, 'studio', 2);
  const callId = await env.client.invite('studio', 'bob');
  await env.client.hangup(callId, 'bye');
  env.net.last.drop(1006);
  await settle();
  await env.clock.advance(100);
  await accept(env.net.last, welcome({ resumed: true }));
  // The room never saw the first hangup: the application sends it again.
  await env.client.hangup(callId, 'bye');
  assert.equal(env.net.last.sentOf('Hangup').length, 1);
  env.net.last.deliver({ type: 'Event', room: 'studio', seq: 3, kind: EventKind.CallState, user: 'alice', callId, state: 'ended', atMs: 0 });
  await settle();
  await assert.rejects(env.client.hangup(callId, 'bye'), (e: ClientError) => e.kind === 'unknown_call');
});
