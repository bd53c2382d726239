// Starts real `signaling-node serve` processes for tests: free loopback ports, a private
// secret, readiness polled on /readyz, killed when the test ends.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** `$SIGNALING_NODE_BIN`, else the workspace's target/debug/signaling-node. */
export function signalingNodeBin(): string {
  const fromEnv = process.env.SIGNALING_NODE_BIN;
  if (fromEnv) return fromEnv;
  // build/test/ -> package root -> signaling-node/ -> workspace root.
  const here = dirname(fileURLToPath(import.meta.url));
  const bin = resolve(here, '../../../../target/debug/signaling-node');
  if (!existsSync(bin)) {
    throw new Error(`${bin} not found: build it first (cargo build --bin signaling-node) or set SIGNALING_NODE_BIN`);
  }
  return bin;
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

/** A running node. */
export interface NodeProcess {
  name: string;
  wsUrl: string;
  adminUrl: string;
  child: ChildProcess;
  output: () => string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts a node with `args` added to serve's, and waits until /readyz answers 200. */
export async function startNode(name: string, secret: string, args: string[] = []): Promise<NodeProcess> {
  const [ws, admin] = [await freePort(), await freePort()];
  const child = spawn(
    signalingNodeBin(),
    [
      'serve', '--listen', `127.0.0.1:${ws}`, '--admin-listen', `127.0.0.1:${admin}`, '--node-name', name,
      '--jwt-secret', secret, '--demo', ...args,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' } },
  );
  let out = '';
  const keep = (chunk: Buffer) => {
    out = (out + chunk.toString()).slice(-20_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  const node: NodeProcess = {
    name,
    wsUrl: `ws://127.0.0.1:${ws}/ws`,
    adminUrl: `http://127.0.0.1:${admin}`,
    child,
    output: () => out,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}:\n${out}`);
    try {
      const res = await fetch(`${node.adminUrl}/readyz`);
      if (res.ok) return node;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await node.kill();
      throw new Error(`${name} not ready within 20 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
