// Browser test of WebTransport signaling: real WebRTC calls in headless Chromium whose
// signaling runs over WebTransport (HTTP/3 over QUIC) to local `signaling-node serve` processes
// built with the `webtransport` feature; no Kubernetes.
//
// Checks, each page asserting which transport carried every Welcome:
//   1. fallback: a node that serves no UDP port; pages asking for WebTransport get WebSocket
//      within the fallback time and a call connects;
//   2. standalone: calls over WebTransport; kill -9 of the node and a restart on the same
//      ports: the pages come back over WebTransport (a new session: state was in memory) and a
//      new call connects;
//   3. cluster: three nodes (wt-c without WebTransport) and a local etcd, this script standing
//      in for the operator (it writes the shard's assignment): the pages load from wt-b, which
//      does not own the room, and are redirected to the owner wt-a over WebTransport, co-host
//      calls; wt-a is killed (kill -9) and the shard assigned to wt-c: both pages resume the same
//      session there over WebSocket; wt-c is killed and the shard assigned to wt-b: they resume
//      it over WebTransport again; the call survives both and renegotiates through wt-b.
//
// Chromium trusts the nodes' self-signed ECDSA certificate for TLS and QUIC by its SPKI hash
// (--ignore-certificate-errors-spki-list with --webtransport-developer-mode), so no CA is
// installed.
//
// Environment: SIGNALING_NODE_BIN (built with --features webtransport), SWITCHBOARD_ETCD_BIN,
// CHROMIUM_BIN (default /usr/bin/chromium), RUN_DIR (default ./e2e-run), CALLS (default 5).

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium, type BrowserContext, type Page } from 'playwright-core';

import { DEFAULT_FALLBACK_MS } from '../src/webtransport.js';
import { type DemoApi, type Welcomed, state, waitState } from './demo.js';
import { env, eventually, logger, QUIET_CHROMIUM } from './support.js';

const log = logger('webtransport-e2e');
const SECRET = 'a-long-random-secret-for-the-webtransport-browser-test';
const ROOM = 'studio-wt';

// ---- processes: certificate, nodes, etcd --------------------------------------------------

/** A free port on 127.0.0.1 (TCP; the node binds the same number on UDP). */
function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => res(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

/** A self-signed ECDSA P-256 certificate for 127.0.0.1 and its SPKI SHA-256 (base64). */
function makeCertificate(dir: string): { cert: string; key: string; spki: string } {
  const cert = join(dir, 'node.crt');
  const key = join(dir, 'node.key');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '10',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' });
  const der = new X509Certificate(readFileSync(cert)).publicKey.export({ type: 'spki', format: 'der' });
  return { cert, key, spki: createHash('sha256').update(der).digest('base64') };
}

/** One `signaling-node serve` process on fixed ports, restartable. */
class Node {
  private child: ChildProcess | undefined;
  private out = '';

  private constructor(
    readonly name: string,
    readonly port: number,
    readonly admin: number,
    private readonly args: string[],
  ) {}

  /** Starts `name` with TLS (and WebTransport on the same port number, unless `webTransport` is false). */
  static async start(name: string, tls: { cert: string; key: string }, webTransport: boolean, extra: string[] = []): Promise<Node> {
    const [port, admin] = [await freePort(), await freePort()];
    const args = [
      'serve', '--listen', `127.0.0.1:${port}`, '--admin-listen', `127.0.0.1:${admin}`, '--node-name', name,
      '--advertise-url', `wss://127.0.0.1:${port}/ws`, '--jwt-secret', SECRET, '--demo',
      '--tls-cert', tls.cert, '--tls-key', tls.key,
      ...(webTransport ? ['--webtransport-listen', `127.0.0.1:${port}`] : []), ...extra,
    ];
    const node = new Node(name, port, admin, args);
    await node.restart();
    return node;
  }

  get wsUrl(): string {
    return `wss://127.0.0.1:${this.port}/ws`;
  }

  /** The demo page of this node for `user`, asking for WebTransport. */
  demo(user: string, peer: string): string {
    return `http://127.0.0.1:${this.admin}/demo?user=${user}&peer=${peer}&room=${ROOM}&wt=1`;
  }

  /** (Re)starts the process and waits for /readyz. */
  async restart(): Promise<void> {
    const child = spawn(env('SIGNALING_NODE_BIN'), this.args, {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' },
    });
    this.child = child;
    const keep = (chunk: Buffer) => void (this.out = (this.out + chunk.toString()).slice(-20_000));
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    await eventually(`${this.name} ready`, async () => {
      if (child.exitCode !== null) throw new Error(`${this.name} exited with ${child.exitCode}:\n${this.out}`);
      return fetch(`http://127.0.0.1:${this.admin}/readyz`).then((r) => r.ok, () => false);
    }, 30_000);
  }

  /** kill -9, and waits until the process is gone. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  }

  /** The last lines of its output. */
  output(): string {
    return this.out.split('\n').slice(-25).join('\n');
  }
}

/** A local etcd, written through its JSON gateway. */
class Etcd {
  private constructor(
    private readonly child: ChildProcess,
    readonly endpoint: string,
  ) {}

  static async start(dir: string): Promise<Etcd> {
    const [client, peer] = [await freePort(), await freePort()];
    const endpoint = `http://127.0.0.1:${client}`;
    const child = spawn(env('SWITCHBOARD_ETCD_BIN'), [
      '--name=wt', `--data-dir=${join(dir, 'etcd')}`, `--listen-client-urls=${endpoint}`, `--advertise-client-urls=${endpoint}`,
      `--listen-peer-urls=http://127.0.0.1:${peer}`, `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-cluster=wt=http://127.0.0.1:${peer}`, '--log-level=warn', '--unsafe-no-fsync',
    ], { stdio: 'ignore' });
    const etcd = new Etcd(child, endpoint);
    await eventually('etcd healthy', () => fetch(`${endpoint}/health`).then((r) => r.ok, () => false), 30_000);
    return etcd;
  }

  /** Puts `value` at `key`. */
  async put(key: string, value: string): Promise<void> {
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const res = await fetch(`${this.endpoint}/v3/kv/put`, { method: 'POST', body: JSON.stringify({ key: b64(key), value: b64(value) }) });
    if (!res.ok) throw new Error(`etcd put ${key}: HTTP ${res.status} ${await res.text()}`);
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }
}

// ---- the pages ----------------------------------------------------------------------------

const demoApi = (page: Page) => ({
  invite: () => page.evaluate(() => (window as unknown as DemoApi).switchboardDemo.invite()),
  send: (text: string) => page.evaluate((t) => (window as unknown as DemoApi).switchboardDemo.send(t), text),
  hangup: () => page.evaluate(() => (window as unknown as DemoApi).switchboardDemo.hangup()),
  renegotiate: (label: string) => page.evaluate((l) => (window as unknown as DemoApi).switchboardDemo.renegotiate(l), label),
});

/** Alice and Bob, both loaded from `node`'s demo page and joined; added to `pages` (whose logs
 * a failure prints) as `<phase> alice` and `<phase> bob`. */
async function openPair(context: BrowserContext, node: Node, phase: string, pages: [string, Page][]): Promise<[Page, Page]> {
  const open = async (user: string, peer: string) => {
    const page = await context.newPage();
    pages.push([`${phase} ${user}`, page]);
    page.on('pageerror', (e) => log(`${user} page error: ${e.message}`));
    await page.goto(node.demo(user, peer));
    return page;
  };
  const pair: [Page, Page] = [await open('alice', 'bob'), await open('bob', 'alice')];
  for (const page of pair) await waitState(page, 'joined', (s) => s.joined && s.status === 'open');
  return pair;
}

/** Throws unless every Welcome since `from` came over `transport`. */
async function assertTransport(page: Page, transport: string, from = 0): Promise<Welcomed[]> {
  const welcomes = (await state(page))!.welcomes.slice(from);
  const other = welcomes.find((w) => w.transport !== transport);
  if (welcomes.length === 0 || other) {
    throw new Error(`expected every Welcome over ${transport}, got ${JSON.stringify(welcomes)} (${page.url()})`);
  }
  return welcomes;
}

/** Invite → both peer connections connected → a data channel message each way. */
async function call(alice: Page, bob: Page, label: string): Promise<void> {
  const callId = await demoApi(alice).invite();
  await waitState(alice, `${label}: connected at alice`, (s) => s.callId === callId && s.pcState === 'connected');
  await waitState(bob, `${label}: connected at bob`, (s) => s.callId === callId && s.pcState === 'connected');
  await eventually(`${label}: alice's data channel open`, () => demoApi(alice).send(label));
  await waitState(bob, `${label}: bob received`, (s) => s.received.includes(`alice: ${label}`));
  await demoApi(bob).send(`re: ${label}`);
  await waitState(alice, `${label}: alice received the reply`, (s) => s.received.includes(`bob: re: ${label}`));
  await waitState(alice, `${label}: connected in the node's state machine`, (s) => s.callState === 'connected');
}

// ---- the test -----------------------------------------------------------------------------

async function run(): Promise<void> {
  const started = Date.now();
  const runDir = env('RUN_DIR', join(process.cwd(), 'e2e-run'));
  mkdirSync(runDir, { recursive: true });
  const calls = Number(env('CALLS', '5'));
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-wt-'));
  const tls = makeCertificate(dir);
  const nodes: Node[] = [];
  let etcd: Etcd | undefined;
  const pages: [string, Page][] = [];
  const browser = await chromium.launch({
    executablePath: env('CHROMIUM_BIN', '/usr/bin/chromium'),
    headless: true,
    args: [
      ...QUIET_CHROMIUM,
      '--disable-features=WebRtcHideLocalIpsWithMdns', '--allow-loopback-in-peer-connection',
      // Trust the nodes' self-signed certificate: the SPKI list covers TLS over TCP (wss), and
      // WebTransport's QUIC handshake only in developer mode (else "Opening handshake failed").
      `--ignore-certificate-errors-spki-list=${tls.spki}`, '--webtransport-developer-mode',
    ],
  });
  let ok = false;
  try {
    // ---- 1. fallback: no UDP port served.
    const plain = await Node.start('wt-none', tls, false);
    nodes.push(plain);
    {
      const context = await browser.newContext();
      const loadedAt = Date.now();
      const [alice, bob] = await openPair(context, plain, 'fallback', pages);
      let welcomed = 0;
      for (const page of [alice, bob]) welcomed = Math.max(welcomed, (await assertTransport(page, 'websocket'))[0]!.at - loadedAt);
      // The pages load one after the other, each falling back within DEFAULT_FALLBACK_MS.
      if (welcomed > 2 * (DEFAULT_FALLBACK_MS + 1000)) throw new Error(`the fallback took ${welcomed} ms`);
      await call(alice, bob, 'fallback call');
      console.log(`MEASURED webtransport fallback: two pages loaded and welcomed over WebSocket in ${welcomed} ms`);
      log('no WebTransport port: both pages fell back to WebSocket and a call connected');
      await context.close();
      pages.length = 0;
      await plain.kill();
    }

    // ---- 2. standalone: calls over WebTransport, kill -9 and a restart.
    const solo = await Node.start('wt-solo', tls, true);
    nodes.push(solo);
    {
      const context = await browser.newContext();
      const [alice, bob] = await openPair(context, solo, 'standalone', pages);
      for (const page of [alice, bob]) await assertTransport(page, 'webtransport');
      for (let i = 1; i <= calls; i++) {
        await call(alice, bob, `standalone call ${i}`);
        await demoApi(alice).hangup();
        await waitState(bob, `standalone call ${i} ended at bob`, (s) => s.callState === 'ended');
      }
      log(`standalone: ${calls} calls over WebTransport signaling`);
      const w0 = [(await state(alice))!.welcomes.length, (await state(bob))!.welcomes.length];
      await solo.kill();
      await solo.restart();
      log('standalone node killed (kill -9) and restarted on the same ports');
      for (const [i, page] of [alice, bob].entries()) {
        await waitState(page, 'welcomed again', (s) => s.status === 'open' && s.welcomes.length > w0[i]!);
        const again = await assertTransport(page, 'webtransport', w0[i]);
        if (again.some((w) => w.resumed)) throw new Error('resumed on a restarted standalone node, whose state was in memory');
      }
      await call(alice, bob, 'after the restart');
      log('standalone: both pages came back over WebTransport and a new call connected');
      await context.close();
      pages.length = 0;
      await solo.kill();
    }

    // ---- 3. cluster: redirect to the owner, kill -9 of the owner, resume on the other node.
    etcd = await Etcd.start(dir);
    const cluster = ['--etcd-endpoints', etcd.endpoint, '--namespace', 'wt', '--cluster', 'wt', '--shard-count', '1'];
    const assignment = `/switchboard/wt/wt/assignments/${'0'.repeat(10)}`;
    const owner = (node: string, epoch: number) => etcd!.put(assignment, JSON.stringify({ node, epoch, version: 'default' }));
    await owner('wt-a', 1);
    const a = await Node.start('wt-a', tls, true, cluster);
    const b = await Node.start('wt-b', tls, true, cluster);
    const c = await Node.start('wt-c', tls, false, cluster);
    nodes.push(a, b, c);
    const context = await browser.newContext();
    const [alice, bob] = await openPair(context, b, 'cluster', pages);
    for (const page of [alice, bob]) {
      const welcomes = await assertTransport(page, 'webtransport');
      if (welcomes.at(-1)!.node !== 'wt-a') throw new Error(`served by ${welcomes.at(-1)!.node}, expected the owner wt-a`);
    }
    log('cluster: both pages redirected from wt-b to the owner wt-a over WebTransport');
    for (let i = 1; i <= calls; i++) {
      await call(alice, bob, `cluster call ${i}`);
      if (i < calls) {
        await demoApi(alice).hangup();
        await waitState(bob, `cluster call ${i} ended at bob`, (s) => s.callState === 'ended');
      }
    }
    // The owner is killed and the shard assigned to `to`: both pages resume the same session
    // there over `transport`, and the call survives.
    const failover = async (from: Node, to: Node, epoch: number, transport: string): Promise<number[]> => {
      const before = [(await state(alice))!, (await state(bob))!];
      const killedAt = Date.now();
      await from.kill();
      await owner(to.name, epoch);
      log(`cluster: killed the owner ${from.name} (kill -9) and assigned the shard to ${to.name}`);
      const resumedMs: number[] = [];
      for (const [i, page] of [alice, bob].entries()) {
        const w0 = before[i]!.welcomes.length;
        const s = await waitState(page, `resumed on ${to.name}`, (s) => s.status === 'open' && s.welcomes.slice(w0).some((w) => w.resumed && w.node === to.name));
        const w = s.welcomes.slice(w0).find((w) => w.resumed && w.node === to.name)!;
        if (w.transport !== transport) throw new Error(`resumed over ${w.transport}, expected ${transport}`);
        if (w.session !== before[i]!.welcomes.at(-1)!.session) throw new Error('a new session, not a resume');
        if (s.callId !== before[i]!.callId || s.pcState !== 'connected') throw new Error(`the call did not survive: ${s.pcState}`);
        resumedMs.push(w.at - killedAt);
      }
      await demoApi(alice).send(`after ${from.name}`);
      await waitState(bob, `the message after ${from.name}`, (s) => s.received.includes(`alice: after ${from.name}`));
      log(`cluster: both pages resumed the same session on ${to.name} over ${transport}; the call still carries messages`);
      return resumedMs;
    };
    // The session started on WebTransport resumes on WebSocket (wt-c serves no UDP port), then
    // back on WebTransport.
    const toWebSocket = await failover(a, c, 2, 'websocket');
    const toWebTransport = await failover(c, b, 3, 'webtransport');
    await demoApi(alice).renegotiate('after-resume');
    await eventually('the renegotiated channel delivers', async () => {
      await demoApi(alice).send('renegotiated');
      const s = await state(bob);
      return s && (s.byChannel['after-resume'] ?? 0) >= 1;
    });
    await alice.screenshot({ path: join(runDir, 'webtransport-alice.png') });
    log('cluster: the call renegotiated through wt-b');
    console.log(`MEASURED webtransport owner kill -9 (WebTransport)→session resumed over WebSocket: alice ${toWebSocket[0]} ms, bob ${toWebSocket[1]} ms`);
    console.log(`MEASURED webtransport owner kill -9 (WebSocket)→session resumed over WebTransport: alice ${toWebTransport[0]} ms, bob ${toWebTransport[1]} ms`);
    console.log(`webtransport-e2e: passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    ok = true;
  } finally {
    if (!ok) {
      for (const [name, page] of pages) {
        const text = await page.locator('#log').innerText({ timeout: 2000 }).catch((e: unknown) => String(e));
        log(`--- last lines of ${name}'s page log:\n${text.split('\n').slice(-40).join('\n')}`);
        await page.screenshot({ path: join(runDir, `webtransport-${name.replace(' ', '-')}-failed.png`) }).catch(() => undefined);
      }
      for (const node of nodes) log(`--- ${node.name} (last lines):\n${node.output()}`);
    }
    await browser.close().catch(() => undefined);
    for (const node of nodes) await node.kill();
    etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

run().catch((err: unknown) => {
  log(`FAILED: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exitCode = 1;
});
