// The demo page: without a `user` parameter it shows two panes (alice invites bob); with
// `?user=U&room=R&peer=P` it is one co-host whose RTCPeerConnection negotiates through
// Switchboard. It shows the client and call state, the owner node and every frame, and exposes
// `window.switchboardDemo` for the browser end-to-end test.

import { SwitchboardClient } from '../client.js';
import { ClientError, errorLabel } from '../errors.js';
import { EventKind, type Candidate, type Message } from '../messages.js';

interface Demo {
  user: string;
  room: string;
  peer: string;
  client: SwitchboardClient | null;
  pc: RTCPeerConnection | null;
  callId: string;
  callState: string;
  pcState: string;
  node: string;
  frames: { in: number; out: number };
  received: string[];
  /** Messages received per data channel label. */
  byChannel: Record<string, number>;
  errors: { code: number; requestId: number; message: string }[];
  /** Every Welcome, with the transport (websocket or webtransport) that carried it. */
  welcomes: { node: string; resumed: boolean; session: string; transport: string; at: number }[];
  joined: boolean;
  inviteAt: number;
  connectedAt: number;
  calls: number;
  invitesReceived: number;
  invite(): Promise<string>;
  send(text: string): boolean;
  hangup(): Promise<void>;
  renegotiate(label: string): Promise<void>;
  injectInvalidOffer(sdp: string): Promise<number>;
}

const params = new URLSearchParams(location.search);
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function twoPanes(): void {
  const room = params.get('room') ?? 'studio-1';
  $('title').textContent = `room ${room}: alice invites bob; both peer connections negotiate through Switchboard`;
  const q = (user: string, peer: string) => `/demo?user=${user}&peer=${peer}&room=${encodeURIComponent(room)}`;
  $('root').innerHTML = `<div class="panes"><iframe id="alice" src="${q('alice', 'bob')}"></iframe>` +
    `<iframe id="bob" src="${q('bob', 'alice')}"></iframe></div>`;
}

function short(msg: Message): string {
  const m = msg as unknown as Record<string, unknown>;
  const parts: string[] = [];
  for (const [k, v] of Object.entries(m)) {
    if (k === 'type' || k === 'token' || v === '' || v === undefined) continue;
    let text = typeof v === 'bigint' ? v.toString() : JSON.stringify(v);
    if (k === 'sdp' && typeof v === 'string') text = `${v.length} bytes`;
    if (msg.type === 'Event' && k === 'kind') text = EventKind[v as number] ?? String(v);
    parts.push(`${k}=${text.length > 60 ? text.slice(0, 57) + '...' : text}`);
  }
  return `${msg.type} ${parts.join(' ')}`;
}

async function oneHost(user: string): Promise<void> {
  const room = params.get('room') ?? 'studio-1';
  const peer = params.get('peer') ?? '';
  $('title').textContent = `${user} in ${room}`;
  $('root').innerHTML = `<div class="host">
    <table class="kv">
      <tr><td>client</td><td class="state" id="status">idle</td></tr>
      <tr><td>owner node</td><td id="node">-</td></tr>
      <tr><td>session</td><td id="session">-</td></tr>
      <tr><td>call</td><td class="state" id="call">none</td></tr>
      <tr><td>peer connection</td><td class="state" id="pc">-</td></tr>
      <tr><td>frames</td><td id="frames">0 in / 0 out</td></tr>
      <tr><td>data channel</td><td id="dc">-</td></tr>
    </table>
    <button id="invite" ${peer ? '' : 'disabled'}>Invite ${peer || '(no peer)'}</button>
    <button id="send">Send hello</button><button id="hangup">Hang up</button>
    <div id="log"></div></div>`;

  const log = (cls: string, text: string) => {
    const el = $('log');
    const line = document.createElement('div');
    line.className = cls;
    line.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
    el.appendChild(line);
    while (el.childElementCount > 400) el.firstElementChild?.remove();
    el.scrollTop = el.scrollHeight;
  };

  const demo: Demo = {
    user, room, peer, client: null, pc: null, callId: '', callState: 'none', pcState: '-', node: '',
    frames: { in: 0, out: 0 }, received: [], byChannel: {}, errors: [], welcomes: [], joined: false, inviteAt: 0, connectedAt: 0,
    calls: 0, invitesReceived: 0,
    invite, send, hangup, renegotiate, injectInvalidOffer,
  };
  (window as unknown as { switchboardDemo: Demo }).switchboardDemo = demo;

  const render = () => {
    const c = demo.client;
    $('status').textContent = c ? c.status : 'idle';
    $('status').className = 'state ' + (c?.status === 'open' ? 'ok' : c?.status === 'closed' ? 'bad' : 'wait');
    const s = c?.session();
    $('node').textContent = s?.node ? `${s.node}  (${s.url}, v${s.version}, ${s.transport})` : '-';
    $('session').textContent = s?.session ? `${s.session}  resumed=${s.resumed} reconnects=${s.reconnects}` : '-';
    $('call').textContent = demo.callId ? `${demo.callState}  (${demo.callId})` : 'none';
    $('call').className = 'state ' + (demo.callState === 'connected' ? 'ok' : demo.callState === 'failed' ? 'bad' : 'wait');
    $('pc').textContent = demo.pcState;
    $('pc').className = 'state ' + (demo.pcState === 'connected' ? 'ok' : demo.pcState === 'failed' ? 'bad' : 'wait');
    $('frames').textContent = `${demo.frames.in} in / ${demo.frames.out} out`;
    $('dc').textContent = demo.received.length ? demo.received.slice(-3).join(' | ') : '-';
  };

  let token = params.get('token') ?? '';
  let url = params.get('ws') ?? '';
  if (!token || !url) {
    const res = await fetch(`/demo/token?user=${encodeURIComponent(user)}&room=${encodeURIComponent(room)}`);
    if (!res.ok) {
      log('err', `token endpoint: HTTP ${res.status} ${await res.text()}`);
      return;
    }
    const body = (await res.json()) as { token: string; url: string };
    token ||= body.token;
    if (!url) {
      // The node's advertised URL with the host this page came from: a standalone node
      // listening on 0.0.0.0 advertises its host name, which the browser may not resolve.
      const advertised = new URL(body.url);
      advertised.hostname = location.hostname;
      url = advertised.toString();
    }
  }

  // `wt=1`: WebTransport first (to the node's wss URL on https), WebSocket as the fallback.
  const client = new SwitchboardClient(url, { token, webTransport: params.get('wt') === '1' });
  demo.client = client;
  // Count and log what goes out: wrap the socket factory's send.
  const outgoing = (msg: string) => {
    demo.frames.out += 1;
    log('out', `→ ${msg}`);
    render();
  };
  client.on('status', (s) => {
    log('info', `client ${s}`);
    render();
  });
  client.on('welcome', (w) => {
    demo.node = w.node;
    const transport = client.session().transport;
    demo.welcomes.push({ node: w.node, resumed: w.resumed, session: w.session, transport, at: Date.now() });
    log('info', `welcomed by ${w.node} over ${transport} (resumed=${w.resumed}, v${w.version})`);
    render();
  });
  client.on('error', (e) => log('err', e.message));
  client.on('closed', (e) => log('err', `client stopped: ${e ? e.message : 'closed'}`));

  let pendingRemote: Candidate[] = [];
  const resetCall = () => {
    demo.pc?.close();
    demo.pc = null;
    demo.pcState = '-';
    pendingRemote = [];
  };

  const newPeerConnection = (callId: string): RTCPeerConnection => {
    resetCall();
    const pc = new RTCPeerConnection();
    demo.pc = pc;
    pc.onicecandidate = (ev) => {
      if (ev.candidate && ev.candidate.candidate) {
        const c = { candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid ?? '', sdpMLineIndex: ev.candidate.sdpMLineIndex ?? 0 };
        outgoing(`IceCandidate ${c.candidate.slice(0, 40)}...`);
        client.ice(callId, c).catch((e: ClientError) => log('err', `ice: ${e.message}`));
      } else if (!ev.candidate) {
        outgoing('IceCandidate (end of candidates)');
        client.endOfCandidates(callId).catch((e: ClientError) => log('err', `end of candidates: ${e.message}`));
      }
    };
    pc.onconnectionstatechange = () => {
      if (demo.pc !== pc) return;
      demo.pcState = pc.connectionState;
      if (pc.connectionState === 'connected' && !demo.connectedAt) demo.connectedAt = Date.now();
      log('info', `peer connection ${pc.connectionState}`);
      render();
    };
    pc.ondatachannel = (ev) => wireChannel(ev.channel);
    return pc;
  };

  const channels: RTCDataChannel[] = [];
  const wireChannel = (ch: RTCDataChannel) => {
    channels.push(ch);
    ch.onmessage = (ev) => {
      demo.received.push(String(ev.data));
      demo.byChannel[ch.label] = (demo.byChannel[ch.label] ?? 0) + 1;
      log('info', `data channel ${ch.label}: ${String(ev.data)}`);
      render();
    };
  };

  const addRemote = async (c: Candidate) => {
    if (!c.candidate) return; // end of candidates
    if (!demo.pc?.remoteDescription) {
      pendingRemote.push(c);
      return;
    }
    await demo.pc.addIceCandidate({ candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex });
  };

  // Whether this host invited (and so makes the offers) in the current call, and whether the
  // session resumed since its last offer (then a "negotiating" event asks for a new one).
  let inviter = false;
  let resumedSinceOffer = false;
  client.on('welcome', (w) => {
    if (w.resumed) resumedSinceOffer = true;
  });

  const sendOffer = async (pc: RTCPeerConnection, callId: string, iceRestart = false) => {
    resumedSinceOffer = false;
    await pc.setLocalDescription(await pc.createOffer({ iceRestart }));
    outgoing('Offer');
    await client.offer(callId, pc.localDescription!.sdp);
  };

  client.on('message', (msg) => {
    demo.frames.in += 1;
    log(msg.type === 'Error' ? 'err' : '', `← ${short(msg)}`);
    void onMessage(msg).catch((e: unknown) => log('err', `handling ${msg.type}: ${String(e)}`)).finally(render);
  });

  const onMessage = async (msg: Message) => {
    switch (msg.type) {
      case 'Invite':
        inviter = false;
        demo.invitesReceived += 1;
        demo.callId = msg.callId;
        demo.callState = 'ringing';
        demo.connectedAt = 0;
        outgoing('InviteResult accepted');
        await client.accept(msg.callId);
        newPeerConnection(msg.callId);
        break;
      case 'InviteResult':
        if (msg.callId !== demo.callId) break;
        if (!msg.accepted) {
          demo.callState = `rejected: ${msg.reason}`;
          break;
        }
        {
          const pc = newPeerConnection(msg.callId);
          wireChannel(pc.createDataChannel('chat'));
          await sendOffer(pc, msg.callId);
        }
        break;
      case 'Offer': {
        const pc = demo.pc && demo.callId === msg.callId ? demo.pc : newPeerConnection(msg.callId);
        await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
        for (const c of pendingRemote.splice(0)) await addRemote(c);
        await pc.setLocalDescription(await pc.createAnswer());
        outgoing('Answer');
        await client.answer(msg.callId, pc.localDescription!.sdp);
        break;
      }
      case 'Answer':
        if (!demo.pc) break;
        await demo.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
        for (const c of pendingRemote.splice(0)) await addRemote(c);
        break;
      case 'IceCandidate':
        await addRemote(msg);
        break;
      case 'IceBatch':
        for (const c of msg.candidates) await addRemote(c);
        break;
      case 'Hangup':
        if (msg.callId === demo.callId) {
          demo.callState = 'ended';
          resetCall();
        }
        break;
      case 'Event':
        if (msg.kind === EventKind.CallState && msg.callId === demo.callId) {
          demo.callState = msg.state;
          // After a resume the node restarts a call still negotiating (its end-of-candidates
          // progress is reset) and asks the inviter for a new offer: restart ICE so both
          // sides gather and send end-of-candidates again. Any other "negotiating" event
          // (the invite being accepted) is not a request for an offer.
          if (msg.state === 'negotiating' && inviter && resumedSinceOffer && demo.pc) {
            await sendOffer(demo.pc, demo.callId, true);
          }
        }
        break;
      case 'Error':
        demo.errors.push({ code: msg.code, requestId: msg.requestId, message: msg.message });
        log('err', `server error ${msg.code} (${errorLabel(msg.code)}): ${msg.message}`);
        break;
      default:
        break;
    }
  };

  async function invite(): Promise<string> {
    resetCall();
    demo.connectedAt = 0;
    demo.inviteAt = Date.now();
    demo.callState = 'inviting';
    inviter = true;
    outgoing(`Invite ${peer}`);
    demo.callId = await client.invite(room, peer);
    demo.calls += 1;
    render();
    return demo.callId;
  }

  function send(text: string): boolean {
    const open = channels.filter((c) => c.readyState === 'open');
    for (const c of open) c.send(`${user}: ${text}`);
    log('info', `data channel → ${text} (${open.length} channel(s))`);
    return open.length > 0;
  }

  async function hangup(): Promise<void> {
    if (!demo.callId) return;
    outgoing('Hangup');
    await client.hangup(demo.callId, 'bye');
    demo.callState = 'ended';
    resetCall();
    render();
  }

  async function renegotiate(label: string): Promise<void> {
    if (!demo.pc) throw new Error('no call');
    wireChannel(demo.pc.createDataChannel(label));
    await sendOffer(demo.pc, demo.callId);
  }

  async function injectInvalidOffer(sdp: string): Promise<number> {
    outgoing('Offer (invalid SDP, injected)');
    return client.offer(demo.callId, sdp);
  }

  $('invite').onclick = () => void invite();
  $('send').onclick = () => send('hello');
  $('hangup').onclick = () => void hangup();
  render();
  try {
    await client.connect();
    await client.join(room);
    demo.joined = true;
    log('info', `joined ${room}`);
  } catch (e) {
    log('err', `connect/join failed: ${e instanceof ClientError ? `${e.kind} ${e.message}` : String(e)}`);
  }
  render();
}

const user = params.get('user');
// Inside the two-pane page each pane is a host page: the outer page has the header.
if (user && window.self !== window.top) document.querySelector('header')?.setAttribute('hidden', '');
if (user) void oneHost(user);
else twoPanes();
