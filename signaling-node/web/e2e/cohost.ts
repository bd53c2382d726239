// Browser end-to-end test: real WebRTC in headless Chromium, negotiated through a Switchboard
// fleet on the real Kubernetes node (containers, the operator, the fleet etcd; e2e/scripts/
// browser-e2e brings it up with e2e/scripts/deploy --fleet --demo and tears it down).
//
// Checks: two Chromium pages load the demo page from a node that does not own the room and are
// redirected to its owner; 20 calls where both RTCPeerConnections reach `connected` and exchange
// a data-channel message (invite → both connected is measured); an invalid SDP is refused with
// 1001; the owner's container is killed (kill -9) and the real operator fails the shard over:
// both pages resume on the new owner without a new invite, the data channel still works and a
// renegotiation goes through it; then `kubectl switchboard failover SHARD` moves the shard by
// two-phase handoff and the pages follow Migrate. Screenshots go to $RUN_DIR.
//
// Environment: KUBECONFIG (the fleet's cluster), NODE_SCRIPT (e2e/scripts/node, for the fault),
// KUBECTL_SWITCHBOARD (the plugin binary), FLEET_NAMESPACE (default `default`), FLEET_CLUSTER
// (default `demo`), CHROMIUM_BIN (default /usr/bin/chromium), RUN_DIR (default ./e2e-run),
// CALLS (default 20).

import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { chromium, type Browser, type Page } from 'playwright-core';

import { type DemoApi, state, waitState } from './demo.js';
import { env, eventually, logger, PATIENCE_MS, QUIET_CHROMIUM } from './support.js';

const ROOM = 'studio-1';

const log = logger('browser-e2e');

// ---- the fleet, as a user sees it: kubectl, the plugin, the node's fault injection ---------

interface FleetPod {
  name: string;
  ip: string;
  ready: boolean;
}

interface RoomOwner {
  shard: number;
  owner: string;
  epoch: number;
}

class Fleet {
  readonly namespace = env('FLEET_NAMESPACE', 'default');
  readonly cluster = env('FLEET_CLUSTER', 'demo');
  private readonly kubeconfig = env('KUBECONFIG');
  private readonly nodeScript = env('NODE_SCRIPT');
  private readonly plugin = env('KUBECTL_SWITCHBOARD');

  private run(program: string, args: string[]): string {
    return execFileSync(program, args, {
      env: { ...process.env, KUBECONFIG: this.kubeconfig },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }

  /** The cluster's node pods (not terminating). */
  pods(): FleetPod[] {
    const list = JSON.parse(this.run('kubectl', [
      '-n', this.namespace, 'get', 'pods', '-l', `switchboard.dev/cluster=${this.cluster}`, '-o', 'json',
    ])) as { items: { metadata: { name: string; deletionTimestamp?: string }; status?: { podIP?: string; conditions?: { type: string; status: string }[] } }[] };
    return list.items
      .filter((p) => !p.metadata.deletionTimestamp)
      .map((p) => ({
        name: p.metadata.name,
        ip: p.status?.podIP ?? '',
        ready: (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True'),
      }));
  }

  /** The room's shard and owner, from `kubectl switchboard rooms`. */
  room(room: string): RoomOwner | undefined {
    const out = this.run(this.plugin, ['rooms', room, '-n', this.namespace, '--cluster', this.cluster]);
    const shard = /shard (\d+) of/.exec(out);
    const owner = /owner: (\S+) \(epoch (\d+)/.exec(out);
    if (!shard || !owner) return undefined;
    return { shard: Number(shard[1]), owner: owner[1]!, epoch: Number(owner[2]) };
  }

  /** kill -9 of a pod's container process (the kubelet restarts it in place). */
  kill(pod: string): void {
    this.run(this.nodeScript, ['fault', 'kill', `${this.namespace}/${pod}`]);
  }

  /** `kubectl switchboard failover SHARD`: a two-phase handoff to another node. */
  move(shard: number): string {
    return this.run(this.plugin, ['failover', String(shard), '-n', this.namespace, '--cluster', this.cluster]);
  }

  /** The last lines of a pod's log, for failure reports. */
  logs(pod: string): string {
    try {
      return this.run('kubectl', ['-n', this.namespace, 'logs', pod, '--tail=25']);
    } catch (e) {
      return String(e);
    }
  }
}

// ---- the pages ----------------------------------------------------------------------------

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

// ---- the test -----------------------------------------------------------------------------

async function run(): Promise<void> {
  const runDir = env('RUN_DIR', join(process.cwd(), 'e2e-run'));
  mkdirSync(runDir, { recursive: true });
  const calls = Number(env('CALLS', '20'));
  const started = Date.now();
  const fleet = new Fleet();
  let browser: Browser | undefined;
  const pages: [string, Page][] = [];
  let ok = false;
  try {
    const first = await eventually(`an owner of ${ROOM}`, async () => fleet.room(ROOM));
    const entry = await eventually('a Ready node that does not own the room', async () =>
      fleet.pods().find((p) => p.ready && p.ip && p.name !== first.owner));
    const demoUrl = `http://${entry.ip}:9100/demo`;
    log(`${ROOM} is on shard ${first.shard}, owned by ${first.owner} (epoch ${first.epoch}); pages load from ${entry.name} ${demoUrl}`);

    browser = await chromium.launch({
      executablePath: env('CHROMIUM_BIN', '/usr/bin/chromium'),
      headless: true,
      args: [
        ...QUIET_CHROMIUM,
        // Host candidates with real addresses instead of mDNS names, and permission to use
        // loopback addresses (tested here on a machine that also has a non-loopback interface).
        '--disable-features=WebRtcHideLocalIpsWithMdns', '--allow-loopback-in-peer-connection',
      ],
    });
    const context = await browser.newContext({ viewport: { width: 900, height: 900 } });
    const open = async (user: string, peer: string) => {
      const page = await context.newPage();
      page.on('pageerror', (e) => log(`${user} page error: ${e.message}`));
      await page.goto(`${demoUrl}?user=${user}&peer=${peer}&room=${ROOM}`);
      return page;
    };
    const alice = await open('alice', 'bob');
    const bob = await open('bob', 'alice');
    pages.push(['alice', alice], ['bob', bob]);
    for (const [name, page] of [['alice', alice], ['bob', bob]] as const) {
      const s = await waitState(page, `${name} joined`, (s) => s.joined && s.status === 'open');
      if (s.node !== first.owner) throw new Error(`${name} is served by ${s.node}, expected the owner ${first.owner} (redirect from ${entry.name})`);
    }
    log(`both pages joined through a redirect to the owner ${first.owner}`);

    // ---- calls: invite -> both RTCPeerConnections connected -> data channel message.
    const times: number[] = [];
    for (let i = 1; i <= calls; i++) {
      const callId = await alice.evaluate(() => (window as unknown as DemoApi).switchboardDemo.invite());
      const sa = await waitState(alice, `call ${i} connected at alice`, (s) => s.callId === callId && s.pcState === 'connected');
      const sb = await waitState(bob, `call ${i} connected at bob`, (s) => s.callId === callId && s.pcState === 'connected');
      times.push(Math.max(sa.connectedAt, sb.connectedAt) - sa.inviteAt);
      const text = `message ${i}`;
      await eventually(`alice's data channel open (call ${i})`, () => alice.evaluate((t) => (window as unknown as DemoApi).switchboardDemo.send(t), text));
      await waitState(bob, `bob received "${text}"`, (s) => s.received.includes(`alice: ${text}`));
      await bob.evaluate((t) => (window as unknown as DemoApi).switchboardDemo.send(`re: ${t}`), text);
      await waitState(alice, `alice received the reply to "${text}"`, (s) => s.received.includes(`bob: re: ${text}`));
      await waitState(alice, `call ${i} connected in the node's state machine`, (s) => s.callState === 'connected');
      if (i < calls) {
        await alice.evaluate(() => (window as unknown as DemoApi).switchboardDemo.hangup());
        await waitState(bob, `call ${i} ended at bob`, (s) => s.callState === 'ended' && s.pcState === '-');
      }
    }
    log(`${calls} calls connected; the last one stays up`);
    await alice.screenshot({ path: join(runDir, 'browser-alice.png') });
    await bob.screenshot({ path: join(runDir, 'browser-bob.png') });

    // ---- an invalid SDP is refused with 1001.
    const badId = await alice.evaluate(() => (window as unknown as DemoApi).switchboardDemo.injectInvalidOffer('this is not an SDP'));
    const refused = await waitState(alice, 'the invalid SDP refused', (s) => s.errors.some((e) => e.requestId === badId));
    const err = refused.errors.find((e) => e.requestId === badId)!;
    if (err.code !== 1001) throw new Error(`invalid SDP answered with ${err.code} (${err.message}), expected 1001`);
    log(`invalid SDP refused with 1001: ${err.message}`);

    // ---- kill -9 of the owner's container; the real operator fails the shard over and the
    // pages resume on the new owner without a new invite.
    const before = { alice: (await state(alice))!, bob: (await state(bob))! };
    const dead = before.alice.node;
    const killedAt = Date.now();
    fleet.kill(dead);
    log(`killed the owner ${dead} (kill -9 of its container)`);
    const resumedAt: Record<string, number> = {};
    for (const [name, page, w0] of [['alice', alice, before.alice.welcomes.length], ['bob', bob, before.bob.welcomes.length]] as const) {
      const s = await waitState(page, `${name} resumed away from ${dead}`, (s) =>
        s.status === 'open' && s.welcomes.slice(w0).some((w) => w.resumed && w.node !== dead));
      const w = s.welcomes.slice(w0).find((w) => w.resumed && w.node !== dead)!;
      if (w.session !== before[name].welcomes.at(-1)!.session) throw new Error(`${name} got a new session, not a resume`);
      resumedAt[name] = w.at - killedAt;
    }
    const failedOver = await eventually('the shard reassigned away from the dead owner', async () => {
      const r = fleet.room(ROOM);
      return r && r.epoch > first.epoch ? r : undefined;
    });
    log(`the operator moved shard ${failedOver.shard} to ${failedOver.owner} (epoch ${failedOver.epoch})`);
    const afterKill = { alice: (await state(alice))!, bob: (await state(bob))! };
    if (afterKill.alice.calls !== before.alice.calls || afterKill.bob.invitesReceived !== before.bob.invitesReceived) {
      throw new Error('a new invite was sent after the failover');
    }
    if (afterKill.alice.callId !== before.alice.callId || afterKill.alice.pcState !== 'connected' || afterKill.bob.pcState !== 'connected') {
      throw new Error(`the call did not survive: alice ${afterKill.alice.pcState}, bob ${afterKill.bob.pcState}`);
    }
    await alice.evaluate(() => (window as unknown as DemoApi).switchboardDemo.send('after failover'));
    await waitState(bob, 'bob received the post-failover message', (s) => s.received.includes('alice: after failover'));
    // Renegotiate the same call (new data channel) through the new owner.
    await alice.evaluate(() => (window as unknown as DemoApi).switchboardDemo.renegotiate('after-resume'));
    await eventually('the renegotiated channel delivers', async () => {
      await alice.evaluate(() => (window as unknown as DemoApi).switchboardDemo.send('renegotiated'));
      const s = await state(bob);
      return s && (s.byChannel['after-resume'] ?? 0) >= 1;
    });
    // Both pages sit on the room's owner as of now (a rebalance may have moved it again).
    await eventually('both pages on the room\'s current owner', async () => {
      const owner = fleet.room(ROOM)?.owner;
      const [a, b] = [await state(alice), await state(bob)];
      return owner !== undefined && a?.node === owner && b?.node === owner;
    });
    const final = (await state(alice))!;
    if (final.callState !== 'connected') throw new Error(`call state after renegotiation: ${final.callState}`);
    await alice.screenshot({ path: join(runDir, 'browser-alice-after-failover.png') });
    await bob.screenshot({ path: join(runDir, 'browser-bob-after-failover.png') });
    log(`after the failover: same session and call, data channel and renegotiation through ${final.node}`);

    // ---- a planned move (kubectl switchboard failover): the owner migrates the pages.
    const beforeMove = { alice: (await state(alice))!, bob: (await state(bob))! };
    const from = beforeMove.alice.node;
    const shard = fleet.room(ROOM)!.shard;
    const movedAt = Date.now();
    log(fleet.move(shard).trim());
    const migratedAt: Record<string, number> = {};
    for (const [name, page] of [['alice', alice], ['bob', bob]] as const) {
      const w0 = beforeMove[name].welcomes.length;
      const s = await waitState(page, `${name} migrated away from ${from}`, (s) =>
        s.status === 'open' && s.welcomes.slice(w0).some((w) => w.resumed && w.node !== from));
      migratedAt[name] = s.welcomes.slice(w0).find((w) => w.resumed && w.node !== from)!.at - movedAt;
      if (s.pcState !== 'connected' || s.callId !== beforeMove[name].callId) throw new Error(`${name}'s call did not survive the move`);
    }
    await alice.evaluate(() => (window as unknown as DemoApi).switchboardDemo.renegotiate('after-migrate'));
    await eventually('a renegotiation through the new owner delivers', async () => {
      await alice.evaluate(() => (window as unknown as DemoApi).switchboardDemo.send('migrated'));
      const s = await state(bob);
      return s && (s.byChannel['after-migrate'] ?? 0) >= 1;
    });
    const afterMove = (await state(alice))!;
    if (afterMove.calls !== beforeMove.alice.calls) throw new Error('a new invite was sent after the move');
    log(`handoff ${from} -> ${afterMove.node}: both pages followed Migrate and resumed; the call renegotiated through it`);

    // ---- the page a person opens: two panes (iframes), the Invite button clicked.
    const panes = await context.newPage();
    await panes.setViewportSize({ width: 1500, height: 900 });
    await panes.goto(`${demoUrl}?room=panes`);
    const frame = (name: string) => panes.frameLocator(`#${name}`);
    await frame('alice').locator('#status', { hasText: 'open' }).waitFor({ timeout: PATIENCE_MS });
    await frame('bob').locator('#status', { hasText: 'open' }).waitFor({ timeout: PATIENCE_MS });
    await eventually('both panes joined', async () => {
      const joined = await Promise.all(panes.frames().slice(1).map((f) =>
        f.evaluate(() => (window as unknown as Partial<DemoApi>).switchboardDemo?.joined ?? false)));
      return joined.length === 2 && joined.every(Boolean);
    });
    await frame('alice').locator('#invite').click();
    for (const name of ['alice', 'bob']) {
      await frame(name).locator('#pc', { hasText: 'connected' }).waitFor({ timeout: PATIENCE_MS });
    }
    await frame('alice').locator('#send').click();
    await frame('bob').locator('#dc', { hasText: 'alice: hello' }).waitFor({ timeout: PATIENCE_MS });
    await panes.screenshot({ path: join(runDir, 'browser-demo.png') });
    log('the two-pane demo page connected a call from its Invite button');

    const ms = (x: number) => `${Math.round(x)} ms`;
    console.log(`MEASURED browser invite→both connected (${times.length} calls): median ${ms(median(times))}, p90 ${ms(percentile(times, 90))}, min ${ms(Math.min(...times))}, max ${ms(Math.max(...times))}`);
    console.log(`MEASURED browser owner kill -9 (real operator)→session resumed: alice ${ms(resumedAt.alice!)}, bob ${ms(resumedAt.bob!)}`);
    console.log(`MEASURED browser kubectl switchboard failover→session resumed on the new owner: alice ${ms(migratedAt.alice!)}, bob ${ms(migratedAt.bob!)}`);
    console.log(`browser-e2e: passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${runDir}`);
    ok = true;
  } finally {
    if (!ok) {
      for (const [name, page] of pages) {
        const text = await page.locator('#log').innerText({ timeout: 2000 }).catch((e: unknown) => String(e));
        log(`--- last lines of ${name}'s page log:\n${text.split('\n').slice(-40).join('\n')}`);
        await page.screenshot({ path: join(runDir, `browser-${name}-failed.png`) }).catch(() => undefined);
      }
      for (const pod of fleet.pods()) log(`--- kubectl logs ${pod.name} (last lines):\n${fleet.logs(pod.name)}`);
    }
    await browser?.close().catch(() => undefined);
  }
}

run().catch((err: unknown) => {
  log(`FAILED: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exitCode = 1;
});
