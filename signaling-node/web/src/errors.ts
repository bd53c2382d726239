// The client's typed errors: the protocol's error codes (docs/protocol.md) and every way a
// client call can fail, mirroring the Rust client's `ClientError`.

import { FrameError } from './frame.js';
import type { ErrorFrame } from './messages.js';

/** Protocol error codes carried by `Error` frames. */
export enum ErrorCode {
  InvalidSdp = 1001,
  Timeout = 1002,
  AuthFailed = 1003,
  InvalidTransition = 1004,
  RoomFull = 1005,
  NotOwner = 1006,
  RateLimited = 1007,
  BadFrame = 1008,
  VersionUnsupported = 1009,
  Draining = 1010,
  Internal = 1011,
}

const LABELS: Record<ErrorCode, string> = {
  [ErrorCode.InvalidSdp]: 'invalid_sdp',
  [ErrorCode.Timeout]: 'timeout',
  [ErrorCode.AuthFailed]: 'auth_failed',
  [ErrorCode.InvalidTransition]: 'invalid_transition',
  [ErrorCode.RoomFull]: 'room_full',
  [ErrorCode.NotOwner]: 'not_owner',
  [ErrorCode.RateLimited]: 'rate_limited',
  [ErrorCode.BadFrame]: 'bad_frame',
  [ErrorCode.VersionUnsupported]: 'version_unsupported',
  [ErrorCode.Draining]: 'draining',
  [ErrorCode.Internal]: 'internal',
};

/** The known code for `raw`, if any. */
export function errorCodeFrom(raw: number): ErrorCode | undefined {
  return raw in LABELS ? (raw as ErrorCode) : undefined;
}

/** The label of a code (`invalid_sdp`, ...), `unknown` for codes this client does not know. */
export function errorLabel(raw: number): string {
  const code = errorCodeFrom(raw);
  return code === undefined ? 'unknown' : LABELS[code];
}

/** WebSocket close codes the node uses (RFC 6455 numbers). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  Abnormal: 1006,
  PolicyViolation: 1008,
  TooBig: 1009,
  TryAgainLater: 1013,
} as const;

/** What went wrong (stable labels, as the Rust client's `ClientError::kind`). */
export type ClientErrorKind =
  | 'invalid_url'
  | 'connect'
  | 'websocket'
  | 'server'
  | 'bad_frame'
  | 'encode'
  | 'protocol'
  | 'timeout'
  | 'too_many_redirects'
  | 'reconnect_failed'
  | 'unknown_call'
  | 'limit'
  | 'connection_lost'
  | 'closed';

/** Optional details of a {@link ClientError}. */
export interface ClientErrorDetails {
  /** The protocol error code of an `Error` frame (kind `server`). */
  rawCode?: number;
  /** The WebSocket close code that ended the connection, when one did. */
  closeCode?: number;
  /** The error this one wraps (kind `reconnect_failed`: the last attempt's). */
  cause?: ClientError;
  /** Attempts made (kind `reconnect_failed`). */
  attempts?: number;
}

/** Everything a client call can fail with. */
export class ClientError extends Error {
  override readonly name = 'ClientError';
  /** The protocol code as sent by the server, when it answered with an `Error` frame. */
  readonly rawCode: number | undefined;
  /** The close code of the WebSocket, when a close ended the connection. */
  readonly closeCode: number | undefined;
  /** Attempts made before giving up (reconnect_failed). */
  readonly attempts: number | undefined;
  /** The wrapped error (reconnect_failed). */
  override readonly cause: ClientError | undefined;

  constructor(
    /** What went wrong. */
    readonly kind: ClientErrorKind,
    message: string,
    details: ClientErrorDetails = {},
  ) {
    super(message);
    this.rawCode = details.rawCode;
    this.closeCode = details.closeCode;
    this.attempts = details.attempts;
    this.cause = details.cause;
  }

  /** The typed form of an `Error` frame. */
  static fromFrame(frame: ErrorFrame): ClientError {
    return new ClientError(
      'server',
      `server error ${frame.code} (${errorLabel(frame.code)}): ${frame.message}`,
      { rawCode: frame.code },
    );
  }

  /** A malformed frame from the server. */
  static fromFrameError(err: FrameError): ClientError {
    return new ClientError('bad_frame', `bad frame from server: ${err.message}`);
  }

  /** The protocol error code, when the server answered with an `Error` frame. */
  get code(): ErrorCode | undefined {
    if (this.kind === 'reconnect_failed') return this.cause?.code;
    return this.rawCode === undefined ? undefined : errorCodeFrom(this.rawCode);
  }

  /** Whether retrying later can help (false for auth or version refusals and local mistakes). */
  get retriable(): boolean {
    switch (this.kind) {
      case 'connect':
      case 'websocket':
      case 'timeout':
      case 'connection_lost':
        return true;
      case 'server':
        return (
          this.code === ErrorCode.Draining ||
          this.code === ErrorCode.Internal ||
          this.code === ErrorCode.Timeout ||
          this.code === ErrorCode.RateLimited
        );
      default:
        return false;
    }
  }
}
