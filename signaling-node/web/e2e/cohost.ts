// Browser end-to-end test: real WebRTC in headless Chromium, negotiated through Switchboard.
//
// Setup: a real etcd, two `signaling-node serve --demo` processes in cluster mode (one shard,
// so every room lives on it) and this script standing in for the operator's shard manager
// (docs/architecture.md): it places the shard on node A, and when A is killed it fences A
// (revokes its lease) and reassigns the shard to B with epoch + 1, as the operator's crash
// failover does. Two Chromium pages load the demo page from node B; B redirects them to A.
//
// Checks: 20 calls where both RTCPeerConnections reach `connected` and exchange a data-channel
// message (invite → both connected is measured); an invalid SDP is refused with 1001; the
// owner is killed (SIGKILL) and both pages resume on B without a new invite, the data channel
// still works and a renegotiation goes through B; then B hands the shard off to a third node C
// (two-phase, as a drain does) and the pages follow Migrate to C. Screenshots go to $RUN_DIR.
//
// Environment: SIGNALING_NODE_BIN, SWITCHBOARD_ETCD_BIN, CHROMIUM_BIN (default
// /usr/bin/chromium), RUN_DIR (default ./e2e-run), CALLS (default 20).

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium, type Browser, type Page } from 'playwright-core';

import { freePort, startNode, type NodeProcess } from '../test/node-process.js';

const NAMESPACE = 'default';
const CLUSTER = 'browser';
const SHARD_KEY = '0000000000';
const ROOM = 'studio-1';
const PATIENCE_MS = 30_000;

function env(name: string, fallback?: string): string {
  const v = process.env[name] ?? fallback;
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

function log(text: string): void {
  process.stderr.write(`browser-e2e: ${text}\n`);
}

async function eventually<T>(what: string, check: () => Promise<T | undefined | false>, ms = PATIENCE_MS): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---- etcd through its JSON gateway --------------------------------------------------------

const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string) => Buffer.from(s, 'base64').toString();

class Etcd {
  private constructor(
    readonly url: string,
    private readonly child: ChildProcess,
    private readonly dir: string,
  ) {}

  static async start(bin: string, dir: string): Promise<Etcd> {
    const [client, peer] = [await freePort(), await freePort()];
    const url = `http://127.0.0.1:${client}`;
    const child = spawn(bin, [
      '--name=browser', `--data-dir=${join(dir, 'etcd')}`, `--listen-client-urls=${url}`,
      `--advertise-client-urls=${url}`, `--listen-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`, `--initial-cluster=browser=http://127.0.0.1:${peer}`,
      '--log-level=warn', '--unsafe-no-fsync',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    const etcd = new Etcd(url, child, dir);
    await eventually('etcd health', async () => {
      try {
        return (await fetch(`${url}/health`)).ok;
      } catch {
        return false;
      }
    });
    return etcd;
  }

  private async call(path: string, body: unknown): Promise<Record<string, unknown>> {
    const res = await fetch(`${this.url}${path}`, { method: 'POST', body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`etcd ${path}: HTTP ${res.status} ${await res.text()}`);
    return (await res.json()) as Record<string, unknown>;
  }

  async put(key: string, value: string): Promise<void> {
    await this.call('/v3/kv/put', { key: b64(key), value: b64(value) });
  }

  async get(key: string): Promise<{ value: string; lease: string } | undefined> {
    const r = await this.call('/v3/kv/range', { key: b64(key) });
    const kv = (r.kvs as { value: string; lease?: string }[] | undefined)?.[0];
    return kv ? { value: unb64(kv.value), lease: kv.lease ?? '0' } : undefined;
  }

  async revoke(lease: string): Promise<void> {
    await this.call('/v3/lease/revoke', { ID: lease });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGKILL');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The operator's shard-manager moves for this test's single shard. */
class StandInOperator {
  private readonly prefix = `/switchboard/${NAMESPACE}/${CLUSTER}/`;
  constructor(private readonly etcd: Etcd) {}

  async registered(node: string): Promise<boolean> {
    return (await this.etcd.get(`${this.prefix}nodes/${node}`)) !== undefined;
  }

  async assign(node: string, epoch: number): Promise<void> {
    await this.etcd.put(`${this.prefix}assignments/${SHARD_KEY}`, JSON.stringify({ node, epoch, version: 'default' }));
  }

  async serving(node: string, epoch: number): Promise<boolean> {
    const ack = await this.etcd.get(`${this.prefix}acks/${node}`);
    if (!ack) return false;
    const serving = (JSON.parse(ack.value) as { serving?: Record<string, number> }).serving ?? {};
    return Object.values(serving).some((e) => e === epoch);
  }

  async released(node: string, epoch: number): Promise<boolean> {
    const ack = await this.etcd.get(`${this.prefix}acks/${node}`);
    if (!ack) return false;
    const released = (JSON.parse(ack.value) as { released?: Record<string, number> }).released ?? {};
    return Object.values(released).some((e) => e === epoch);
  }

  /** Two-phase handoff: `handoff_to`, the owner's release ack, then the new owner at epoch + 1. */
  async handOff(from: string, to: string, epoch: number): Promise<void> {
    const key = `${this.prefix}assignments/${SHARD_KEY}`;
    await this.etcd.put(key, JSON.stringify({ node: from, epoch, version: 'default', handoff_to: to }));
    await eventually(`${from} released the shard`, () => this.released(from, epoch));
    await this.assign(to, epoch + 1);
  }

  /** Crash failover: fence the dead node (revoke its lease), then hand its shard over. */
  async failover(dead: string, to: string, epoch: number): Promise<void> {
    const reg = await this.etcd.get(`${this.prefix}nodes/${dead}`);
    if (reg && reg.lease !== '0') await this.etcd.revoke(reg.lease);
    await this.assign(to, epoch);
  }
}

// ---- the pages ----------------------------------------------------------------------------

interface DemoState {
  status: string;
  node: string;
  joined: boolean;
  callId: string;
  callState: string;
  pcState: string;
  inviteAt: number;
  connectedAt: number;
  calls: number;
  invitesReceived: number;
  received: string[];
  byChannel: Record<string, number>;
  errors: { code: number; requestId: number; message: string }[];
  welcomes: { node: string; resumed: boolean; session: string; at: number }[];
  frames: { in: number; out: number };
}

type DemoApi = {
  switchboardDemo: {
    client: { status: string } | null;
    invite(): Promise<string>;
    send(text: string): boolean;
    hangup(): Promise<void>;
    renegotiate(label: string): Promise<void>;
    injectInvalidOffer(sdp: string): Promise<number>;
  } & Omit<DemoState, 'status'>;
};

async function state(page: Page): Promise<DemoState | undefined> {
  return page.evaluate(() => {
    const d = (window as unknown as Partial<DemoApi>).switchboardDemo;
    if (!d) return undefined;
    return {
      status: d.client?.status ?? 'idle', node: d.node, joined: d.joined, callId: d.callId, callState: d.callState,
      pcState: d.pcState, inviteAt: d.inviteAt, connectedAt: d.connectedAt, calls: d.calls,
      invitesReceived: d.invitesReceived, received: [...d.received], byChannel: { ...d.byChannel }, errors: [...d.errors], welcomes: [...d.welcomes],
      frames: { ...d.frames },
    };
  });
}

async function waitState(page: Page, what: string, pred: (s: DemoState) => boolean): Promise<DemoState> {
  return eventually(`${what} (${page.url()})`, async () => {
    const s = await state(page);
    return s && pred(s) ? s : undefined;
  });
}

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
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-browser-'));
  const started = Date.now();
  let etcd: Etcd | undefined;
  const nodes: NodeProcess[] = [];
  let browser: Browser | undefined;
  const pages: [string, Page][] = [];
  let ok = false;
  try {
    etcd = await Etcd.start(env('SWITCHBOARD_ETCD_BIN'), dir);
    const secret = `browser-e2e-secret-${Math.random().toString(36).slice(2)}`;
    const cluster = [
      '--etcd-endpoints', etcd.url, '--namespace', NAMESPACE, '--cluster', CLUSTER, '--shard-count', '1',
      '--heartbeat-interval', '2s',
    ];
    const a = await startNode('sig-a', secret, cluster);
    nodes.push(a);
    const b = await startNode('sig-b', secret, cluster);
    nodes.push(b);
    const operator = new StandInOperator(etcd);
    await eventually('both nodes registered', async () => (await operator.registered('sig-a')) && operator.registered('sig-b'));
    await operator.assign('sig-a', 1);
    await eventually('sig-a serving the shard', () => operator.serving('sig-a', 1));
    log(`etcd ${etcd.url}; sig-a ${a.wsUrl} owns the shard; pages load from sig-b ${b.adminUrl}/demo`);

    browser = await chromium.launch({
      executablePath: env('CHROMIUM_BIN', '/usr/bin/chromium'),
      headless: true,
      args: [
        '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--no-first-run',
        '--disable-default-apps', '--disable-sync', '--metrics-recording-only', '--disable-domain-reliability',
        // Host candidates with real addresses instead of mDNS names, and permission to use
        // loopback addresses (tested here on a machine that also has a non-loopback interface).
        '--disable-features=WebRtcHideLocalIpsWithMdns', '--allow-loopback-in-peer-connection',
      ],
    });
    const context = await browser.newContext({ viewport: { width: 900, height: 900 } });
    const open = async (user: string, peer: string) => {
      const page = await context.newPage();
      page.on('pageerror', (e) => log(`${user} page error: ${e.message}`));
      await page.goto(`${b.adminUrl}/demo?user=${user}&peer=${peer}&room=${ROOM}`);
      return page;
    };
    const alice = await open('alice', 'bob');
    const bob = await open('bob', 'alice');
    pages.push(['alice', alice], ['bob', bob]);
    for (const [name, page] of [['alice', alice], ['bob', bob]] as const) {
      const s = await waitState(page, `${name} joined`, (s) => s.joined && s.status === 'open');
      if (s.node !== 'sig-a') throw new Error(`${name} is served by ${s.node}, expected the owner sig-a (redirect from sig-b)`);
    }
    log('both pages joined through a redirect to the owner sig-a');

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

    // ---- kill the owner; the pages resume on the new owner without a new invite.
    const before = { alice: (await state(alice))!, bob: (await state(bob))! };
    const owner = nodes.find((n) => n.name === before.alice.node)!;
    const killedAt = Date.now();
    await owner.kill('SIGKILL');
    await operator.failover(owner.name, 'sig-b', 2);
    log(`killed the owner ${owner.name}; shard reassigned to sig-b (epoch 2)`);
    const resumedAt: Record<string, number> = {};
    for (const [name, page, w0] of [['alice', alice, before.alice.welcomes.length], ['bob', bob, before.bob.welcomes.length]] as const) {
      const s = await waitState(page, `${name} resumed on sig-b`, (s) =>
        s.status === 'open' && s.welcomes.slice(w0).some((w) => w.resumed && w.node === 'sig-b'));
      const w = s.welcomes.slice(w0).find((w) => w.resumed && w.node === 'sig-b')!;
      if (w.session !== before[name].welcomes.at(-1)!.session) throw new Error(`${name} got a new session, not a resume`);
      resumedAt[name] = w.at - killedAt;
    }
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
    const final = { alice: (await state(alice))!, bob: (await state(bob))! };
    if (final.alice.node !== 'sig-b' || final.bob.node !== 'sig-b') throw new Error('pages are not on the new owner');
    if (final.alice.callState !== 'connected') throw new Error(`call state after renegotiation: ${final.alice.callState}`);
    await alice.screenshot({ path: join(runDir, 'browser-alice-after-failover.png') });
    await bob.screenshot({ path: join(runDir, 'browser-bob-after-failover.png') });
    log('after the failover: same session and call, data channel and renegotiation through sig-b');

    // ---- a planned move (drain): the owner migrates the pages to a third node.
    const c = await startNode('sig-c', secret, cluster);
    nodes.push(c);
    await eventually('sig-c registered', () => operator.registered('sig-c'));
    const beforeMove = { alice: (await state(alice))!, bob: (await state(bob))! };
    const movedAt = Date.now();
    await operator.handOff('sig-b', 'sig-c', 2);
    const migratedAt: Record<string, number> = {};
    for (const [name, page] of [['alice', alice], ['bob', bob]] as const) {
      const w0 = beforeMove[name].welcomes.length;
      const s = await waitState(page, `${name} migrated to sig-c`, (s) =>
        s.status === 'open' && s.welcomes.slice(w0).some((w) => w.resumed && w.node === 'sig-c'));
      migratedAt[name] = s.welcomes.slice(w0).find((w) => w.resumed && w.node === 'sig-c')!.at - movedAt;
      if (s.pcState !== 'connected' || s.callId !== beforeMove[name].callId) throw new Error(`${name}'s call did not survive the move`);
    }
    await alice.evaluate(() => (window as unknown as DemoApi).switchboardDemo.renegotiate('after-migrate'));
    await eventually('a renegotiation through sig-c delivers', async () => {
      await alice.evaluate(() => (window as unknown as DemoApi).switchboardDemo.send('migrated'));
      const s = await state(bob);
      return s && (s.byChannel['after-migrate'] ?? 0) >= 1;
    });
    const afterMove = (await state(alice))!;
    if (afterMove.calls !== beforeMove.alice.calls) throw new Error('a new invite was sent after the move');
    log('handoff sig-b -> sig-c: both pages followed Migrate and resumed; the call renegotiated through sig-c');

    // ---- the page a person opens: two panes (iframes), the Invite button clicked.
    const panes = await context.newPage();
    await panes.setViewportSize({ width: 1500, height: 900 });
    await panes.goto(`${b.adminUrl}/demo?room=panes`);
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
    console.log(`MEASURED browser owner kill→session resumed: alice ${ms(resumedAt.alice!)}, bob ${ms(resumedAt.bob!)}`);
    console.log(`MEASURED browser handoff start→session resumed on the new owner: alice ${ms(migratedAt.alice!)}, bob ${ms(migratedAt.bob!)}`);
    console.log(`browser-e2e: passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${runDir}`);
    ok = true;
  } finally {
    if (!ok) {
      for (const [name, page] of pages) {
        const text = await page.locator('#log').innerText({ timeout: 2000 }).catch((e: unknown) => String(e));
        log(`--- last lines of ${name}'s page log:\n${text.split('\n').slice(-40).join('\n')}`);
        await page.screenshot({ path: join(runDir, `browser-${name}-failed.png`) }).catch(() => undefined);
      }
    }
    await browser?.close().catch(() => undefined);
    for (const n of nodes) {
      if (!ok) log(`--- last output of ${n.name}:\n${n.output().split('\n').slice(-25).join('\n')}`);
      await n.kill();
    }
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

run().catch((err: unknown) => {
  log(`FAILED: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exitCode = 1;
});
