import type { IncomingHttpHeaders } from 'node:http';
import * as https from 'node:https';
import { HEADER_PROTOCOL, PROTOCOL_MAJOR } from '../src/protocol/protocol.constants';

/**
 * A bare mTLS client for exercising the dev CP in its own tests (the agent has
 * its own). One connection per request, closed after it, so nothing lingers.
 */
export interface CpRequest {
  method?: string;
  path: string;
  /** Objects are JSON-serialised; strings and Buffers go out as they are. */
  body?: unknown;
  /** Merged over the defaults (protocol header, JSON content type). */
  headers?: Record<string, string>;
  /** The X-Nixfleet-Protocol value; null omits the header. Default "1". */
  protocol?: string | null;
  /** Hard deadline for the whole exchange. Default 5 s. */
  timeoutMs?: number;
}

export interface CpReply {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** The body as received (a signature is binary). */
  bytes: Buffer;
  /** Milliseconds from the request to the end of the body. */
  elapsedMs: number;
  /** Milliseconds from the request to the first body byte, if any came. */
  firstByteMs: number | null;
}

export interface TlsIdentity {
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

export function cpRequest(baseUrl: string, tls: TlsIdentity, r: CpRequest): Promise<CpReply> {
  const started = performance.now();
  const payload =
    r.body === undefined
      ? undefined
      : Buffer.isBuffer(r.body)
        ? r.body
        : Buffer.from(typeof r.body === 'string' ? r.body : JSON.stringify(r.body), 'utf8');
  const headers: Record<string, string> = {};
  const protocol = r.protocol === undefined ? String(PROTOCOL_MAJOR) : r.protocol;
  if (protocol !== null) headers[HEADER_PROTOCOL] = protocol;
  if (payload) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = String(payload.length);
  }
  Object.assign(headers, r.headers);

  return new Promise<CpReply>((resolve, reject) => {
    const req = https.request(new URL(r.path, baseUrl), {
      method: r.method ?? (payload ? 'POST' : 'GET'),
      headers,
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      agent: false,
      signal: AbortSignal.timeout(r.timeoutMs ?? 5000),
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let firstByteMs: number | null = null;
      res.on('data', (chunk: Buffer) => {
        firstByteMs ??= performance.now() - started;
        chunks.push(chunk);
      });
      res.on('error', reject);
      res.on('end', () => {
        const bytes = Buffer.concat(chunks);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          text: bytes.toString('utf8'),
          bytes,
          elapsedMs: performance.now() - started,
          firstByteMs,
        });
      });
    });
    req.end(payload);
  });
}
