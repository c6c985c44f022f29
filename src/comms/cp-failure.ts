import { CONNECT_TIMEOUT_CODE } from './comms.constants';
import type { HandshakeStage } from './tls-agent';

/** Why a control-plane call did not produce a usable answer; logs and /status say which. */
export type CpFailure =
  | { kind: 'connect'; detail: string }
  | { kind: 'tls'; detail: string }
  | { kind: 'timeout'; detail: string }
  | { kind: 'network'; detail: string }
  | { kind: 'aborted'; detail: string }
  | {
      kind: 'http-status';
      detail: string;
      status: number;
      /** From `Retry-After`, on the statuses in RETRY_AFTER_STATUSES only; null otherwise. */
      retryAfterSecs: number | null;
      /** A `Retry-After` that is neither delta-seconds nor an HTTP date: ignored, but said. */
      unusableRetryAfter?: string;
      /** A `Retry-After` on a status that does not set when to retry (a 500, say): ignored, but said. */
      ignoredRetryAfter?: string;
    }
  | { kind: 'bad-body'; detail: string; status: number | null };

export type CpFailureKind = CpFailure['kind'];

function retryAfterNote(f: Extract<CpFailure, { kind: 'http-status' }>): string {
  if (f.unusableRetryAfter !== undefined) return `; its Retry-After "${f.unusableRetryAfter}" is neither seconds nor an HTTP date, ignored`;
  if (f.ignoredRetryAfter !== undefined) {
    return `; its Retry-After "${f.ignoredRetryAfter}" is ignored: only a ${[...RETRY_AFTER_STATUSES].join(' or ')} sets when to retry`;
  }
  return '';
}

export function describeFailure(f: CpFailure): string {
  switch (f.kind) {
    case 'connect':
      return `cannot connect: ${f.detail}`;
    case 'tls':
      return `TLS handshake failed: ${f.detail}`;
    case 'timeout':
      return `timed out: ${f.detail}`;
    case 'network':
      return `connection failed mid-request: ${f.detail}`;
    case 'aborted':
      return `aborted: ${f.detail}`;
    case 'http-status':
      return `HTTP ${f.status}: ${f.detail}${retryAfterNote(f)}`;
    case 'bad-body':
      return `bad response body${f.status === null ? '' : ` (HTTP ${f.status})`}: ${f.detail}`;
    default: {
      const never: never = f;
      return never;
    }
  }
}

/** A failure's log fields: its kind, and the HTTP status when the CP answered with one. */
export function failureFields(f: CpFailure): { failure: CpFailureKind; status?: number } {
  if (f.kind === 'http-status') return { failure: f.kind, status: f.status };
  if (f.kind === 'bad-body' && f.status !== null) return { failure: f.kind, status: f.status };
  return { failure: f.kind };
}

const CONNECT_CODES = new Set([
  CONNECT_TIMEOUT_CODE,
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EADDRNOTAVAIL',
]);

/** OpenSSL and Node's certificate checks: anything here means identity or trust, not the network. */
function isTlsCode(code: string): boolean {
  return (
    /^(ERR_SSL_|ERR_TLS_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_MISMATCH|INVALID_CA|ERR_OSSL_)/.test(code) || code === 'EPROTO'
  );
}

export interface TransportContext {
  deadlineMs: number;
  deadlineHit: boolean;
  /** Whether the request went out on a kept-alive connection (Node's `req.reusedSocket`). */
  reusedSocket: boolean;
  /** How far the connection's TLS handshake got; null when unknown. */
  handshake: HandshakeStage | null;
}

/** Maps a transport-level error (the underlying Node error, not an HTTP status) to a failure. */
export function classifyTransportError(err: unknown, { deadlineMs, deadlineHit, reusedSocket, handshake }: TransportContext): CpFailure {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = e.cause?.code ?? e.code ?? '';
  const message = e.cause?.message ?? e.message ?? String(err);
  if (deadlineHit) return { kind: 'timeout', detail: `no complete answer within the ${deadlineMs} ms deadline` };
  if (code === 'ERR_CANCELED') return { kind: 'aborted', detail: 'the agent is shutting down' };
  if (/maxContentLength/.test(message)) {
    return { kind: 'bad-body', detail: 'response body larger than the 1 MiB limit', status: null };
  }
  if (CONNECT_CODES.has(code)) return { kind: 'connect', detail: code === message ? code : `${code}: ${message}` };
  if (isTlsCode(code) || /certificate|ssl|tls alert/i.test(message)) {
    return { kind: 'tls', detail: code ? `${code}: ${message}` : message };
  }
  // A kept-alive connection closing is ordinary network trouble.
  if (code === 'ECONNRESET' && !reusedSocket) return newConnectionReset(message, handshake);
  return { kind: 'network', detail: code ? `${code}: ${message}` : message };
}

const CHECK_CLIENT_CERT = 'check --client-cert against the CA the control plane trusts';

/** A new connection hung up on: what that means depends on how far its TLS handshake got. */
function newConnectionReset(message: string, handshake: HandshakeStage | null): CpFailure {
  switch (handshake) {
    case 'hello-sent':
      // Our certificate goes out only after the server's: it was never seen.
      return {
        kind: 'tls',
        detail: `the connection was reset during the TLS handshake, before the control plane presented a certificate (${message}); our client certificate was not sent yet, so it is not the cause: check that --control-plane-url names the control plane's TLS endpoint and that nothing in between cuts TLS`,
      };
    case 'server-certificate':
      // TLS 1.2: the server judges our certificate before its Finished.
      return {
        kind: 'tls',
        detail: `the control plane hung up during the TLS handshake, after presenting its certificate (${message}); it most likely refused our client certificate (${CHECK_CLIENT_CERT})`,
      };
    case 'complete':
      // TLS 1.3 checks the client certificate after the client's handshake is
      // done: a CP that refuses it just closes the fresh connection, and Node
      // reports a hang-up, not the alert.
      return {
        kind: 'tls',
        detail: `the control plane closed a new connection right after the TLS handshake (${message}); it most likely refused our client certificate (${CHECK_CLIENT_CERT})`,
      };
    case null:
      return { kind: 'tls', detail: `the control plane closed a new connection during or right after the TLS handshake (${message})` };
    default: {
      const never: never = handshake;
      return never;
    }
  }
}

/**
 * The statuses whose `Retry-After` the agent honours, alike for every call
 * (heartbeat, event delivery, dispatch poll): 503, the answer PROTOCOL §1
 * gives to a CP that is still starting (RFC 9110), and 429 (RFC 6585), the
 * two that define it as "come back then". On any other status the header is
 * said in the failure and ignored: the caller's own backoff applies.
 */
export const RETRY_AFTER_STATUSES: ReadonlySet<number> = new Set([429, 503]);

/**
 * The longest wait a `Retry-After` can impose. A CP (or a host clock years
 * behind, against the HTTP-date form) must not silence the agent for good;
 * past 2^31 ms Node's timers would even fire at once.
 */
export const MAX_RETRY_AFTER_SECS = 3600;

/** `Retry-After` in seconds, from the delta-seconds or HTTP-date form, at most an hour; null when absent or unusable. */
export function parseRetryAfter(value: string | undefined, now: Date): number | null {
  if (value === undefined) return null;
  const trimmed = value.trim();
  if (/^\d{1,9}$/.test(trimmed)) return Math.min(Number(trimmed), MAX_RETRY_AFTER_SECS);
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return null;
  return Math.min(Math.max(0, Math.ceil((at - now.getTime()) / 1000)), MAX_RETRY_AFTER_SECS);
}
