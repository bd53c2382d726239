// The demo page (src/demo/main.ts) as the browser tests read it: its `window.switchboardDemo`
// hooks and a copy of its state taken in the page.

import type { Page } from 'playwright-core';

import { eventually } from './support.js';

/** One Welcome the page got, with the transport (websocket or webtransport) that carried it. */
export interface Welcomed {
  node: string;
  resumed: boolean;
  session: string;
  transport: string;
  at: number;
}

/** The page's state, copied out of it. */
export interface DemoState {
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
  welcomes: Welcomed[];
  frames: { in: number; out: number };
}

/** The page's hooks. */
export type DemoApi = {
  switchboardDemo: {
    client: { status: string } | null;
    invite(): Promise<string>;
    send(text: string): boolean;
    hangup(): Promise<void>;
    renegotiate(label: string): Promise<void>;
    injectInvalidOffer(sdp: string): Promise<number>;
  } & Omit<DemoState, 'status'>;
};

/** The page's state now, or undefined before its script ran. */
export async function state(page: Page): Promise<DemoState | undefined> {
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

/** Waits until the page's state satisfies `pred`. */
export async function waitState(page: Page, what: string, pred: (s: DemoState) => boolean): Promise<DemoState> {
  return eventually(`${what} (${page.url()})`, async () => {
    const s = await state(page);
    return s && pred(s) ? s : undefined;
  });
}
