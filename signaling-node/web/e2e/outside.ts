// The browser outside the cluster (issue 16): headless Chromium runs in the real node's client
// network namespace (its only route is to the node's external address), loads the demo page
// over https through the Ingress, and the two pages co-host through the entry URL and the
// nodes' URLs (wss://, TLS ended at the proxy). Driven by the Rust scenario
// (e2e/tests/scenarios/outside.rs, scenario p), which owns the cluster:
//
//   1. both pages join through ENTRY_URL and are redirected to the room's owner under that
//      node's external URL; a call connects (real RTCPeerConnections, a data channel);
//   2. this script prints `OWNER <pod>` and waits for `KILLED <unix ms>` on stdin (the
//      scenario kills the owner's container with kill -9);
//   3. both pages resume the same session on a new owner, again under its external URL, and
//      the data channel still carries messages. The resume time is printed as MEASURED.
//
// Environment: CLIENT_NETNS, EXTERNAL_HOST, EXTERNAL_IP, ORIGIN (the page's https origin),
// ENTRY_URL, ROOM, ALICE_TOKEN, BOB_TOKEN, CERT_SPKI (base64 SHA-256 of the proxy
// certificate's public key, which Chromium is told to accept), CHROMIUM_BIN (default
// /usr/bin/chromium), RUN_DIR (screenshots).

import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { chromium, type Browser, type Page } from 'playwright-core';

const PATIENCE_MS = 60_000;

function env(name: string, fallback?: string): string {
  const v = process.env[name] ?? fallback;
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

function log(text: string): void {
  process.stderr.write(`browser-outside: ${text}\n`);
}

async function eventually<T>(what: string, check: () => Promise<T | undefined | false>, ms = PATIENCE_MS): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface PageState {
  status: string;
  node: string;
  /** What the page shows as its connection: `<node>  (<url>, v<n>)`. */
  nodeText: string;
  joined: boolean;
  callId: string;
  pcState: string;
  received: string[];
  welcomes: { node: string; resumed: boolean; session: string; at: number }[];
}

type Demo = {
  client: { status: string } | null;
  node: string;
  joined: boolean;
  callId: string;
  pcState: string;
  received: string[];
  welcomes: PageState['welcomes'];
  invite(): Promise<string>;
  send(text: string): boolean;
};

async function state(page: Page): Promise<PageState | undefined> {
  return page.evaluate(() => {
    const d = (window as unknown as { switchboardDemo?: Demo }).switchboardDemo;
    if (!d) return undefined;
    return {
      status: d.client?.status ?? 'idle', node: d.node, joined: d.joined, callId: d.callId, pcState: d.pcState,
      received: [...d.received], welcomes: [...d.welcomes],
      nodeText: document.getElementById('node')?.textContent ?? '',
    };
  });
}

async function waitState(page: Page, what: string, pred: (s: PageState) => boolean): Promise<PageState> {
  return eventually(what, async () => {
    const s = await state(page);
    return s && pred(s) ? s : undefined;
  });
}

/** The node URL a page is connected to, from what it shows. */
function urlOf(s: PageState): string {
  return /\((\S+),/.exec(s.nodeText)?.[1] ?? '';
}

async function killedAt(): Promise<number> {
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const m = /^KILLED (\d+)/.exec(line.trim());
    if (m) {
      lines.close();
      return Number(m[1]);
    }
  }
  throw new Error('stdin closed before KILLED');
}

async function run(): Promise<void> {
  const netns = env('CLIENT_NETNS');
  const host = env('EXTERNAL_HOST');
  const origin = env('ORIGIN');
  const entry = env('ENTRY_URL');
  const room = env('ROOM');
  const nodeUrl = (node: string) => `${origin.replace(/^https:/, 'wss:')}/nodes/${node}/ws`;
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-outside-'));
  // Chromium itself runs in the client namespace: playwright talks to it over a pipe.
  const wrapper = join(dir, 'chromium-outside');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec '${netns}' '${env('CHROMIUM_BIN', '/usr/bin/chromium')}' "$@"\n`);
  chmodSync(wrapper, 0o755);
  let browser: Browser | undefined;
  const pages: [string, Page][] = [];
  let ok = false;
  try {
    browser = await chromium.launch({
      executablePath: wrapper,
      headless: true,
      args: [
        '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--no-first-run',
        '--disable-default-apps', '--disable-sync', '--metrics-recording-only', '--disable-domain-reliability',
        '--disable-features=WebRtcHideLocalIpsWithMdns',
        // The proxy's certificate comes from the scenario's own CA, which this browser does not
        // know: accept exactly that key, nothing else.
        `--ignore-certificate-errors-spki-list=${env('CERT_SPKI')}`,
        `--host-resolver-rules=MAP ${host} ${env('EXTERNAL_IP')}`,
      ],
    });
    const context = await browser.newContext({ viewport: { width: 900, height: 900 } });
    const open = async (user: string, peer: string, token: string) => {
      const page = await context.newPage();
      page.on('pageerror', (e) => log(`${user} page error: ${e.message}`));
      const q = new URLSearchParams({ user, peer, room, ws: entry, token });
      await page.goto(`${origin}/demo?${q.toString()}`);
      return page;
    };
    const alice = await open('alice', 'bob', env('ALICE_TOKEN'));
    const bob = await open('bob', 'alice', env('BOB_TOKEN'));
    pages.push(['alice', alice], ['bob', bob]);
    let owner = '';
    for (const [name, page] of pages) {
      const s = await waitState(page, `${name} joined`, (s) => s.joined && s.status === 'open');
      if (owner && s.node !== owner) throw new Error(`${name} is on ${s.node}, alice on ${owner}`);
      owner = s.node;
      if (urlOf(s) !== nodeUrl(s.node)) throw new Error(`${name} is connected to ${urlOf(s)}, not ${nodeUrl(s.node)}`);
    }
    log(`both pages joined through ${entry} and were redirected to ${nodeUrl(owner)}`);

    const callId = await alice.evaluate(() => (window as unknown as { switchboardDemo: Demo }).switchboardDemo.invite());
    await waitState(alice, 'alice connected', (s) => s.callId === callId && s.pcState === 'connected');
    await waitState(bob, 'bob connected', (s) => s.pcState === 'connected');
    await eventually("alice's data channel open", () =>
      alice.evaluate(() => (window as unknown as { switchboardDemo: Demo }).switchboardDemo.send('hello from outside')));
    await waitState(bob, 'bob got the message', (s) => s.received.includes('alice: hello from outside'));
    await alice.screenshot({ path: join(env('RUN_DIR', dir), 'browser-outside-alice.png') });
    const before = { alice: (await state(alice))!, bob: (await state(bob))! };

    console.log(`OWNER ${owner}`);
    const killed = await killedAt();
    const resumed: Record<string, number> = {};
    for (const [name, page] of pages) {
      const w0 = before[name as 'alice' | 'bob'].welcomes.length;
      const s = await waitState(page, `${name} resumed on a new owner`, (s) =>
        s.status === 'open' && s.welcomes.slice(w0).some((w) => w.resumed && w.node !== owner));
      const w = s.welcomes.slice(w0).find((w) => w.resumed && w.node !== owner)!;
      const session = before[name as 'alice' | 'bob'].welcomes.at(-1)?.session;
      if (session && w.session !== session) throw new Error(`${name} got a new session, not a resume`);
      if (urlOf(s) !== nodeUrl(s.node)) throw new Error(`${name} resumed at ${urlOf(s)}, not ${nodeUrl(s.node)}`);
      resumed[name] = w.at - killed;
    }
    const after = (await state(alice))!;
    if (after.callId !== callId || after.pcState !== 'connected') throw new Error(`the call did not survive: ${after.pcState}`);
    await alice.evaluate(() => (window as unknown as { switchboardDemo: Demo }).switchboardDemo.send('after the failover'));
    await waitState(bob, 'bob got the post-failover message', (s) => s.received.includes('alice: after the failover'));
    console.log(`MEASURED browser outside: owner kill -> session resumed: alice ${resumed.alice} ms, bob ${resumed.bob} ms`);
    log(`both pages resumed on ${after.node} at ${urlOf(after)}; the data channel still works`);
    ok = true;
  } finally {
    if (!ok) {
      for (const [name, page] of pages) {
        const text = await page.locator('#log').innerText({ timeout: 2000 }).catch((e: unknown) => String(e));
        log(`--- last lines of ${name}'s page log:\n${text.split('\n').slice(-40).join('\n')}`);
      }
    }
    await browser?.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

run().catch((err: unknown) => {
  log(`FAILED: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exitCode = 1;
});
