// Which refused requests the client sends again by itself (pure, time passed in): a room between
// owners answers 1006 (the node follows it with Migrate) or 1010 (retry), and neither may reach
// the application as a failure (docs/protocol.md, "Retryable refusals"). Mirrors the Rust
// client's client/src/retry.rs.
//
// Tracked are the requests whose refusal rolls nothing forward: Invite, InviteResult, Hangup and
// Leave (each commits a room transition, so a refusal means it did not happen). A 1006 keeps the
// request until the session is resumed on the room's new node; a 1010 sends it again after a
// backoff, a bounded number of times. Offer, Answer and ICE are not re-sent: a resumed room
// restarts negotiation itself. Joins are the client's own pending table.

import { ErrorCode } from './errors.js';
import type { ErrorFrame, Message } from './messages.js';

/** Most sent requests remembered for a possible refusal; older ones are forgotten. */
export const MAX_TRACKED = 64;

/** What to do with an Error frame. */
export type Refusal =
  | { kind: 'deliver' }
  | { kind: 'after_move' }
  | { kind: 'later'; at: number }
  | { kind: 'ignore' };

interface Tracked {
  id: number;
  msg: Message;
  attempts: number;
}

function retryableId(msg: Message): number | undefined {
  switch (msg.type) {
    case 'Invite':
    case 'InviteResult':
    case 'Hangup':
    case 'Leave':
      return msg.requestId !== 0 ? msg.requestId : undefined;
    default:
      return undefined;
  }
}

/** The client's retry bookkeeping. */
export class Retries {
  private sentList: Tracked[] = [];
  private afterMove: Tracked[] = [];
  private laterList: { at: number; t: Tracked }[] = [];

  /** Remembers a request that was just written (a retry, tracked again when it was taken out,
   * keeps its attempt count). */
  sent(msg: Message): void {
    const id = retryableId(msg);
    if (id === undefined) return;
    this.track(msg, this.sentList.find((t) => t.id === id)?.attempts ?? 0);
  }

  private track(msg: Message, attempts: number): void {
    const id = retryableId(msg);
    if (id === undefined) return;
    this.sentList = this.sentList.filter((t) => t.id !== id);
    this.sentList.push({ id, msg, attempts });
    while (this.sentList.length > MAX_TRACKED) this.sentList.shift();
  }

  /** Decides about an Error frame received at `now` (ms); `backoff(n)` is the wait before the
   * n-th retry and `maxAttempts` the most retries of one request. */
  refused(error: ErrorFrame, now: number, backoff: (attempt: number) => number, maxAttempts: number): Refusal {
    if (error.requestId === 0) return error.code === ErrorCode.NotOwner ? { kind: 'ignore' } : { kind: 'deliver' };
    const at = this.sentList.findIndex((t) => t.id === error.requestId);
    if (at < 0) return { kind: 'deliver' };
    const [tracked] = this.sentList.splice(at, 1);
    if (error.code === ErrorCode.NotOwner) {
      this.afterMove.push(tracked!);
      return { kind: 'after_move' };
    }
    if (error.code === ErrorCode.Draining && tracked!.attempts < maxAttempts) {
      tracked!.attempts += 1;
      const due = now + backoff(tracked!.attempts);
      this.laterList.push({ at: due, t: tracked! });
      return { kind: 'later', at: due };
    }
    return { kind: 'deliver' };
  }

  /** When the next delayed retry is due (ms), if any. */
  nextDue(): number | undefined {
    return this.laterList.length === 0 ? undefined : Math.min(...this.laterList.map((l) => l.at));
  }

  /** The delayed retries due at `now`, in the order they were refused (tracked again). */
  takeDue(now: number): Message[] {
    const due = this.laterList.filter((l) => l.at <= now);
    this.laterList = this.laterList.filter((l) => l.at > now);
    return this.resend(due.map((l) => l.t));
  }

  /** After a new Welcome: what to send again on the new connection. A resumed session gets every
   * kept request; a session the server lost gets none (its rooms are joined afresh). */
  takeOnWelcome(resumed: boolean): Message[] {
    const kept = [...this.afterMove, ...this.laterList.map((l) => l.t)];
    this.afterMove = [];
    this.laterList = [];
    this.sentList = [];
    return resumed ? this.resend(kept) : [];
  }

  private resend(kept: Tracked[]): Message[] {
    return kept.map((t) => {
      this.track(t.msg, t.attempts);
      return t.msg;
    });
  }
}
