// The pure session bookkeeping: call table, room positions, request ids, backoff, tokens.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { EventKind, type Event } from '../src/messages.js';
import { backoffMs, CallTable, MAX_CALLS, newCallId, RequestIds, Rooms, tokenSubject } from '../src/state.js';
import { fakeToken } from './fake.js';

function event(room: string, seq: number): Event {
  return { type: 'Event', room, seq, kind: EventKind.MemberJoined, user: 'u', callId: '', state: '', atMs: 0 };
}

test('the call table learns calls from invites and forgets ended ones', () => {
  const calls = new CallTable();
  calls.observe({ type: 'Invite', requestId: 0, room: 'r', callId: 'c1', from: 'alice', to: 'bob' }, 'bob');
  assert.deepEqual(calls.get('c1'), { room: 'r', peer: 'alice' });
  calls.observe({ ...event('r', 1), kind: EventKind.CallState, callId: 'c1', state: 'connected' }, 'bob');
  assert.equal(calls.size, 1);
  calls.observe({ ...event('r', 2), kind: EventKind.CallState, callId: 'c1', state: 'Ended' }, 'bob');
  assert.equal(calls.size, 0);
  calls.insert('c2', { room: 'r', peer: 'p' });
  calls.observe({ type: 'InviteResult', requestId: 0, room: 'r', callId: 'c2', from: 'p', to: 'me', accepted: false, reason: '' }, 'me');
  assert.equal(calls.get('c2'), undefined);
});

test('the call table is bounded', () => {
  const calls = new CallTable();
  for (let i = 0; i < MAX_CALLS + 10; i++) calls.insert(`c${i}`, { room: 'r', peer: 'p' });
  assert.equal(calls.size, MAX_CALLS);
  assert.equal(calls.get('c0'), undefined);
  assert.ok(calls.get(`c${MAX_CALLS + 9}`));
});

test('replayed events are dropped and resume uses the lowest room', () => {
  const rooms = new Rooms();
  rooms.joined('a', 10);
  rooms.joined('b', 3);
  assert.equal(rooms.observeEvent(event('a', 11)), true);
  assert.equal(rooms.observeEvent(event('a', 11)), false);
  assert.equal(rooms.observeEvent(event('a', 5)), false);
  assert.equal(rooms.observeEvent(event('b', 4)), true);
  assert.equal(rooms.observeEvent(event('elsewhere', 1)), true);
  assert.equal(rooms.seq('a'), 11);
  assert.deepEqual(rooms.resume('s1'), { session: 's1', lastSeq: 4 });
  rooms.left('b');
  assert.equal(rooms.resumeSeq(), 11);
  rooms.clear();
  assert.equal(rooms.resumeSeq(), 0);
});

test('request ids skip zero when they wrap', () => {
  const ids = new RequestIds(0xffffffff);
  assert.equal(ids.nextId(), 0xffffffff);
  assert.equal(ids.nextId(), 1);
  assert.equal(ids.nextId(), 2);
});

test('call ids are fresh', () => {
  assert.notEqual(newCallId(), newCallId());
  assert.match(newCallId(), /^c-[0-9a-f]{16}$/);
});

test('backoff doubles, is capped and jittered by at most 25 %', () => {
  const policy = { maxAttempts: 10, initialBackoffMs: 100, maxBackoffMs: 5000 };
  assert.equal(backoffMs(policy, 1, () => 0.5), 100);
  assert.equal(backoffMs(policy, 3, () => 0.5), 400);
  assert.equal(backoffMs(policy, 30, () => 0.5), 5000);
  assert.equal(backoffMs(policy, 1, () => 0), 75);
  assert.ok(backoffMs(policy, 1, () => 0.999999) < 125);
});

test('the token subject is read without verification', () => {
  assert.equal(tokenSubject(fakeToken('alice')), 'alice');
  assert.equal(tokenSubject('not-a-jwt'), undefined);
  assert.equal(tokenSubject('a.!!!.c'), undefined);
});
