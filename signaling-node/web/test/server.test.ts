// The client against a real `signaling-node serve` process (standalone): the demo token
// endpoint, negotiation, join, the full co-host flow with a batched ICE exchange reaching a
// `connected` call state, an invalid SDP refused with 1001, and resume after the connection
// is cut. Needs Node's global WebSocket (run with --experimental-websocket on Node 20).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { SwitchboardClient } from '../src/client.js';
import { ErrorCode } from '../src/errors.js';
import { EventKind, type Message } from '../src/messages.js';
import type { SocketLike } from '../src/transport.js';
import { startNode, type NodeProcess } from './node-process.js';

let node: NodeProcess;

before(async () => {
  node = await startNode('web-test-node', 'a-long-random-test-secret-for-the-ts-client');
});

after(async () => {
  await node?.kill();
});

async function token(user: string, room: string): Promise<{ token: string; url: string; node: string }> {
  const res = await fetch(`${node.adminUrl}/demo/token?user=${user}&room=${room}`);
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()) as { token: string; url: string; node: string };
}

/** A client that records its messages and lets a test wait for one. */
function recorder(client: SwitchboardClient) {
  const seen: Message[] = [];
  const waiters: { pred: (m: Message) => boolean; res: (m: Message) => void }[] = [];
  client.on('message', (m) => {
    seen.push(m);
    for (const w of [...waiters]) {
      if (w.pred(m)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.res(m);
      }
    }
  });
  return {
    seen,
    next<T extends Message = Message>(pred: ((m: Message) => m is T) | ((m: Message) => boolean), ms = 5000): Promise<T> {
      const found = seen.find(pred);
      if (found) return Promise.resolve(found as T);
      return new Promise<T>((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`timed out; seen: ${seen.map((m) => m.type).join(',')}`)), ms);
        waiters.push({ pred, res: (m) => { clearTimeout(timer); res(m as T); } });
      });
    },
  };
}

test('the demo token endpoint refuses bad names', async () => {
  assert.equal((await fetch(`${node.adminUrl}/demo/token?user=a%20b&room=r`)).status, 400);
  assert.equal((await fetch(`${node.adminUrl}/demo/token?room=r`)).status, 400);
  const page = await fetch(`${node.adminUrl}/demo`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /demo\.js/);
  const js = await fetch(`${node.adminUrl}/demo/demo.js`);
  assert.match(js.headers.get('content-type') ?? '', /javascript/);
});

test('two co-hosts negotiate a call through a real node; invalid SDP gets 1001', async () => {
  const room = 'ts-room-1';
  const a = await token('alice', room);
  const b = await token('bob', room);
  assert.equal(a.url, node.wsUrl);
  const alice = new SwitchboardClient(a.url, { token: a.token });
  const bob = new SwitchboardClient(b.url, { token: b.token });
  const ra = recorder(alice);
  const rb = recorder(bob);
  try {
    const wa = await alice.connect();
    assert.equal(wa.version, 2);
    assert.equal(wa.node, 'web-test-node');
    await bob.connect();
    await alice.join(room);
    const joined = await bob.join(room);
    assert.deepEqual([...joined.members].sort(), ['alice', 'bob']);

    const callId = await alice.invite(room, 'bob');
    const invite = await rb.next((m): m is Extract<Message, { type: 'Invite' }> => m.type === 'Invite');
    assert.equal(invite.from, 'alice');
    await bob.accept(callId);
    const result = await ra.next((m): m is Extract<Message, { type: 'InviteResult' }> => m.type === 'InviteResult');
    assert.equal(result.accepted, true);

    await alice.offer(callId, 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n');
    await rb.next((m) => m.type === 'Offer');
    await bob.answer(callId, 'v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n');
    await ra.next((m) => m.type === 'Answer');
    await Promise.all([1, 2, 3].map((i) => alice.ice(callId, { candidate: `candidate:${i} 1 udp 1 127.0.0.1 ${5000 + i} typ host`, sdpMid: '0', sdpMLineIndex: 0 })));
    const batch = await rb.next((m): m is Extract<Message, { type: 'IceBatch' }> => m.type === 'IceBatch');
    assert.equal(batch.candidates.length, 3, 'three candidates queued together arrive as one v2 batch');
    await alice.endOfCandidates(callId);
    await bob.endOfCandidates(callId);
    await ra.next((m) => m.type === 'Event' && m.kind === EventKind.CallState && m.state === 'connected');

    const bad = await alice.offer(callId, 'this is not an SDP');
    const err = await ra.next((m): m is Extract<Message, { type: 'Error' }> => m.type === 'Error');
    assert.equal(err.code, ErrorCode.InvalidSdp);
    assert.equal(err.requestId, bad);
  } finally {
    alice.close();
    bob.close();
  }
});

test('a cut connection resumes the session and replays missed events', async () => {
  const room = 'ts-room-2';
  const a = await token('carol', room);
  const b = await token('dave', room);
  const sockets: SocketLike[] = [];
  const factory = (url: string, protocols: string[]) => {
    const Ctor = (globalThis as unknown as { WebSocket: new (u: string, p: string[]) => SocketLike }).WebSocket;
    const s = new Ctor(url, protocols);
    sockets.push(s);
    return s;
  };
  const carol = new SwitchboardClient(a.url, { token: a.token, socketFactory: factory, reconnect: { initialBackoffMs: 20 } });
  const dave = new SwitchboardClient(b.url, { token: b.token });
  const rc = recorder(carol);
  try {
    const first = await carol.connect();
    await carol.join(room);
    await dave.connect();
    // Cut carol's socket (as a network drop would) and let dave join meanwhile.
    sockets[0]!.close(4000, 'test cut');
    const resumed = new Promise<void>((res) => carol.on('welcome', (w) => w.resumed && res()));
    await dave.join(room);
    await resumed;
    assert.equal(carol.session().session, first.session);
    const ev = await rc.next((m) => m.type === 'Event' && m.kind === EventKind.MemberJoined && m.user === 'dave');
    assert.equal(ev.type, 'Event');
    assert.equal(carol.session().reconnects, 1);
  } finally {
    carol.close();
    dave.close();
  }
});
