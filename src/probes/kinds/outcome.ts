import { capFailureReason } from '../failure-reason';
import type { ProbeOutcome } from '../probe.types';

/** The reason of a run cut short by its runner (reset or stop); the runner discards it. */
export const CANCELLED = 'cancelled';

/** Milliseconds since `started` (a `performance.now()` reading), whole. */
export function elapsedMs(started: number): number {
  return Math.max(0, Math.round(performance.now() - started));
}

export function passed(started: number): ProbeOutcome {
  return { status: 'pass', durationMs: elapsedMs(started) };
}

export function failed(started: number, reason: string): ProbeOutcome {
  return { status: 'fail', failureReason: capFailureReason(reason), durationMs: elapsedMs(started) };
}

export function cancelled(started: number): ProbeOutcome {
  return failed(started, CANCELLED);
}

/** A thrown value's errno-style code, also when wrapped (axios keeps the original as `cause`; happy eyeballs as `errors`). */
export function errorCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; cause?: { code?: unknown }; errors?: { code?: unknown }[] } | null | undefined;
  for (const code of [e?.cause?.code, e?.code, e?.errors?.[0]?.code]) {
    if (typeof code === 'string' && code !== '') return code;
  }
  return undefined;
}

/** A thrown value's message on one line. */
export function errorMessage(err: unknown): string {
  const e = err as { message?: unknown; cause?: { message?: unknown } } | null | undefined;
  const message = typeof e?.cause?.message === 'string' && e.cause.message !== '' ? e.cause.message : e?.message;
  return oneLine(typeof message === 'string' && message !== '' ? message : String(err));
}

export function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/**
 * What went wrong on a connection, in an operator's words, ending in its
 * code: `connection refused (ECONNREFUSED)`. Shared by the http and tcp
 * probes.
 */
export function connectionProblem(err: unknown): string {
  const code = errorCode(err);
  const message = errorMessage(err);
  const phrase = code === undefined ? undefined : CONNECTION_PHRASES[code];
  if (phrase !== undefined && code !== undefined) return `${phrase} (${code})`;
  if (code !== undefined && isTlsCode(code)) return `TLS: ${message} (${code})`;
  if (code !== undefined && code.startsWith('HPE_')) return `answered with malformed HTTP: ${message} (${code})`;
  return code === undefined ? `failed: ${message}` : `failed: ${message} (${code})`;
}

const CONNECTION_PHRASES: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection closed or reset before an answer',
  EPIPE: 'connection closed before the request was sent',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed for now',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  EADDRNOTAVAIL: 'address not available',
  ETIMEDOUT: 'timed out',
};

/** OpenSSL's and Node's certificate and handshake codes. */
function isTlsCode(code: string): boolean {
  return (
    /^(ERR_SSL_|ERR_TLS_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_MISMATCH|INVALID_CA|ERR_OSSL_)/.test(code) || code === 'EPROTO'
  );
}
