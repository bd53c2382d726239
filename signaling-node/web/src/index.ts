// @switchboard/client: the Switchboard signaling client (framing, messages, client driver).

export { crc32, crc32Update } from './crc32.js';
export { decodeFrame, encodeFrame, FrameError, FrameType, MAX_BODY_LEN, MAX_FRAME_LEN, MIN_FRAME_LEN } from './frame.js';
export type { FrameErrorKind, RawFrame } from './frame.js';
export * from './messages.js';
export { ClientError, CloseCode, ErrorCode, errorCodeFrom, errorLabel } from './errors.js';
export type { ClientErrorDetails, ClientErrorKind } from './errors.js';
export {
  backoffMs, CallTable, DEFAULT_RECONNECT, isTerminalState, MAX_CALLS, newCallId, RequestIds, Rooms, tokenSubject,
} from './state.js';
export type { CallInfo, ReconnectPolicy } from './state.js';
export { defaultSocketFactory, messageBytes, systemClock, urlProblem } from './transport.js';
export type { Clock, SocketCloseEvent, SocketFactory, SocketLike, TransportKind } from './transport.js';
export {
  DEFAULT_FALLBACK_MS, FallbackSocket, fallbackSocketFactory, globalWebTransport, StreamFrames, webTransportUrl, WebTransportSocket,
} from './webtransport.js';
export type { CertificateHash, WebTransportFactory, WebTransportLike, WebTransportOptions } from './webtransport.js';
export { closeIsFatal, MAX_BATCH, MAX_PENDING, shouldGoBackToEntry, SwitchboardClient } from './client.js';
export type { ClientEvents, ClientOptions, ClientStatus, SessionInfo, Timeouts } from './client.js';
