import { readFile } from 'node:fs/promises';
import https from 'node:https';
import type { Readable } from 'node:stream';
import type { AxiosInstance } from 'axios';
import { formatMs } from '../../activation/backends/process-runner';
import type { HttpProbeSpec, ProbeOutcome } from '../probe.types';
import { deadline } from './deadline';
import { cancelled, connectionProblem, failed, passed } from './outcome';

export interface HttpProbeDeps {
  /** In production the probes' own HttpModule's `HttpService.axiosRef`. */
  readonly axios: AxiosInstance;
  /** Trusts the system CAs: `systemCaAgent()`. */
  readonly httpsAgent: https.Agent;
}

/**
 * §10 `http`: one GET, pass when the status equals `expectStatus`. The answer
 * is judged on its status line alone: a redirect is its own status (not
 * followed), the body is never read, and the whole exchange, headers
 * included, must be over by the deadline. Never rejects.
 */
export async function runHttpProbe(spec: HttpProbeSpec, signal: AbortSignal, deps: HttpProbeDeps): Promise<ProbeOutcome> {
  const started = performance.now();
  if (signal.aborted) return cancelled(started);
  const what = `GET ${shownUrl(spec.url)}`;
  // axios's own `timeout` restarts with every byte; a server that dribbles
  // its headers would never hit it. This one is a hard deadline.
  const limit = deadline(signal, spec.timeoutMs);
  try {
    const response = await deps.axios.request<Readable>({
      method: 'GET',
      url: spec.url,
      maxRedirects: 0,
      validateStatus: () => true,
      // A health endpoint is local to the host: never through an HTTP(S)_PROXY from the environment.
      proxy: false,
      responseType: 'stream',
      // The raw socket stream, so that destroying it closes the connection (no zlib stream in between).
      decompress: false,
      httpsAgent: deps.httpsAgent,
      signal: limit.signal,
    });
    response.data.destroy();
    if (response.status === spec.expectStatus) return passed(started);
    const location: unknown = response.headers.location;
    const redirect = response.status >= 300 && response.status < 400 && typeof location === 'string' ? ` (redirect to ${location})` : '';
    return failed(started, `${what} answered ${response.status}${redirect}, expected ${spec.expectStatus}`);
  } catch (err) {
    if (signal.aborted) return cancelled(started);
    if (limit.timedOut) return failed(started, `${what} timed out after ${formatMs(spec.timeoutMs)}`);
    return failed(started, `${what} ${connectionProblem(err)}`);
  } finally {
    limit.dispose();
  }
}

/** The URL as a reason shows it: a password in it stays out of logs and the CP. */
function shownUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.username === '' && parsed.password === '') return url;
    parsed.username = '***';
    parsed.password = '';
    return parsed.toString();
  } catch {
    return url;
  }
}

/** Where the system's CA bundle is looked for, in order, after the environment's SSL_CERT_FILE and NIX_SSL_CERT_FILE. */
export const DEFAULT_SYSTEM_CA_FILE = '/etc/ssl/certs/ca-certificates.crt';

export interface SystemCaBundle {
  /** The file the CAs came from; null when none was readable and Node's bundled roots are used. */
  readonly path: string | null;
  readonly pem: string | null;
}

/**
 * The host's CA bundle: `SSL_CERT_FILE`, else `NIX_SSL_CERT_FILE`, else
 * /etc/ssl/certs/ca-certificates.crt, the first one that is readable and
 * holds a certificate. These are OpenSSL's and Nix's own variables, read
 * where the bundle is loaded (they are not agent settings).
 */
export async function loadSystemCaBundle(env: Readonly<Record<string, string | undefined>> = process.env): Promise<SystemCaBundle> {
  const candidates = [env.SSL_CERT_FILE, env.NIX_SSL_CERT_FILE, DEFAULT_SYSTEM_CA_FILE].filter(
    (p): p is string => p !== undefined && p !== '',
  );
  for (const path of candidates) {
    try {
      const pem = await readFile(path, 'utf8');
      if (pem.includes('-----BEGIN CERTIFICATE-----')) return { path, pem };
    } catch {
      // Unreadable: the next candidate.
    }
  }
  return { path: null, pem: null };
}

/**
 * The https.Agent of http probes. Node ships its own copy of Mozilla's
 * roots, which would do for public sites, but a host's health endpoint is
 * more often served under the site's own internal CA, and that CA is in the
 * system bundle (NixOS `security.pki.certificates`), not in Node's: the
 * system bundle replaces Node's roots when there is one.
 */
export async function systemCaAgent(env?: Readonly<Record<string, string | undefined>>): Promise<https.Agent> {
  const bundle = await loadSystemCaBundle(env);
  // No keep-alive: each run checks a fresh connect, and no socket idles between runs.
  return new https.Agent({ keepAlive: false, ...(bundle.pem === null ? {} : { ca: bundle.pem }) });
}
