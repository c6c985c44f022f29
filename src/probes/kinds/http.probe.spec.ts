import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { getEventListeners } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import axios from 'axios';
import { freePort } from '../../../dev/free-port';
import { makePki, type Pki } from '../../../dev/pki';
import type { HttpProbeSpec } from '../probe.types';
import { DEFAULT_SYSTEM_CA_FILE, loadSystemCaBundle, runHttpProbe, systemCaAgent, type HttpProbeDeps } from './http.probe';

/** How a probe target answers the next requests. */
type Behaviour =
  | { kind: 'status'; status: number }
  | { kind: 'redirect'; status: number; location: string }
  /** Accepts the request and never sends a byte. */
  | { kind: 'stall' }
  /** Sends a status line, then one header line every 50 ms, never ending the headers. */
  | { kind: 'dribble-headers' }
  /** Sends 200 and its headers at once, then one body byte every 50 ms, never ending. */
  | { kind: 'dribble-body' };

/** A real HTTP(S) server on loopback that can be told how to answer, and counts connections still open. */
class ProbeTarget {
  behaviour: Behaviour = { kind: 'status', status: 200 };
  readonly requests: string[] = [];
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();

  private constructor(
    private readonly server: http.Server,
    readonly url: string,
  ) {}

  static async start(tls?: { key: Buffer; cert: Buffer }): Promise<ProbeTarget> {
    const server = tls ? https.createServer(tls) : http.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const target = new ProbeTarget(server, `${tls ? 'https' : 'http'}://127.0.0.1:${port}`);
    server.on('connection', (socket: Socket) => {
      target.sockets.add(socket);
      socket.on('close', () => target.sockets.delete(socket));
    });
    server.on('secureConnection', (socket: Socket) => {
      target.sockets.add(socket);
      socket.on('close', () => target.sockets.delete(socket));
    });
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => target.answer(req, res));
    return target;
  }

  get openConnections(): number {
    return this.sockets.size;
  }

  private answer(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.requests.push(`${req.method} ${req.url}`);
    const b = this.behaviour;
    switch (b.kind) {
      case 'status':
        res.writeHead(b.status, { 'Content-Type': 'text/plain' }).end('a body nobody reads\n');
        return;
      case 'redirect':
        res.writeHead(b.status, { Location: b.location }).end();
        return;
      case 'stall':
        return;
      case 'dribble-headers':
        res.socket?.write('HTTP/1.1 200 OK\r\n');
        this.every(50, () => res.socket?.write('X-Slow: 1\r\n'));
        return;
      case 'dribble-body':
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.flushHeaders();
        this.every(50, () => res.write('.'));
        return;
      default: {
        const never: never = b;
        return never;
      }
    }
  }

  private every(ms: number, f: () => void): void {
    const timer = setInterval(f, ms);
    this.timers.add(timer);
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 250; i += 1) {
    if (check()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`${what}: not within 5 s`);
}

function spec(url: string, over: Partial<HttpProbeSpec> = {}): HttpProbeSpec {
  return { kind: 'http', url, expectStatus: 200, timeoutMs: 5_000, ...over };
}

describe('runHttpProbe', () => {
  let target: ProbeTarget;
  let deps: HttpProbeDeps;
  let signal: AbortSignal;

  beforeEach(async () => {
    target = await ProbeTarget.start();
    deps = { axios: axios.create(), httpsAgent: await systemCaAgent({}) };
    signal = new AbortController().signal;
  });
  afterEach(async () => {
    await target.close();
    deps.httpsAgent.destroy();
  });

  it('passes when the answer has the expected status, with one GET, and measures its duration', async () => {
    const outcome = await runHttpProbe(spec(`${target.url}/health`), signal, deps);
    expect(outcome).toEqual({ status: 'pass', durationMs: expect.any(Number) });
    expect(outcome.durationMs).toBeGreaterThanOrEqual(0);
    expect(target.requests).toEqual(['GET /health']);
  });

  it('passes on any expected status, 503 included', async () => {
    target.behaviour = { kind: 'status', status: 503 };
    expect(await runHttpProbe(spec(`${target.url}/`, { expectStatus: 503 }), signal, deps)).toMatchObject({ status: 'pass' });
  });

  it('fails on another status, naming the URL, the status and the expected one', async () => {
    target.behaviour = { kind: 'status', status: 503 };
    const url = `${target.url}/health`;
    expect(await runHttpProbe(spec(url), signal, deps)).toEqual({
      status: 'fail',
      failureReason: `GET ${url} answered 503, expected 200`,
      durationMs: expect.any(Number),
    });
  });

  it('does not follow a redirect: the redirect is the status', async () => {
    target.behaviour = { kind: 'redirect', status: 302, location: '/login' };
    const url = `${target.url}/health`;
    expect(await runHttpProbe(spec(url), signal, deps)).toMatchObject({
      status: 'fail',
      failureReason: `GET ${url} answered 302 (redirect to /login), expected 200`,
    });
    expect(await runHttpProbe(spec(url, { expectStatus: 302 }), signal, deps)).toMatchObject({ status: 'pass' });
    expect(target.requests).toEqual(['GET /health', 'GET /health']);
  });

  it('fails at the deadline when the server never answers', async () => {
    target.behaviour = { kind: 'stall' };
    const url = `${target.url}/health`;
    const outcome = await runHttpProbe(spec(url, { timeoutMs: 300 }), signal, deps);
    expect(outcome).toMatchObject({ status: 'fail', failureReason: `GET ${url} timed out after 300 ms` });
    expect(outcome.durationMs).toBeGreaterThanOrEqual(290);
    expect(outcome.durationMs).toBeLessThan(5_000);
    await until(() => target.openConnections === 0, 'the stalled connection closed');
  });

  it('fails at the deadline when the headers dribble in and never end: the deadline is hard, not an idle timeout', async () => {
    target.behaviour = { kind: 'dribble-headers' };
    const outcome = await runHttpProbe(spec(`${target.url}/`, { timeoutMs: 400 }), signal, deps);
    expect(outcome).toMatchObject({ status: 'fail', failureReason: `GET ${target.url}/ timed out after 400 ms` });
    expect(outcome.durationMs).toBeGreaterThanOrEqual(390);
    expect(outcome.durationMs).toBeLessThan(5_000);
  });

  it('judges the status alone and closes the connection without reading a body that never ends', async () => {
    target.behaviour = { kind: 'dribble-body' };
    expect(await runHttpProbe(spec(`${target.url}/`, { timeoutMs: 5_000 }), signal, deps)).toMatchObject({ status: 'pass' });
    await until(() => target.openConnections === 0, 'the probe closed its connection');
  });

  it('fails with "connection refused" when nothing listens', async () => {
    const url = `http://127.0.0.1:${await freePort()}/health`;
    expect(await runHttpProbe(spec(url), signal, deps)).toMatchObject({
      status: 'fail',
      failureReason: `GET ${url} connection refused (ECONNREFUSED)`,
    });
  });

  it('keeps a password in the URL out of the reason', async () => {
    target.behaviour = { kind: 'status', status: 401 };
    const port = new URL(target.url).port;
    expect(await runHttpProbe(spec(`http://probe:s3cret@127.0.0.1:${port}/health`), signal, deps)).toMatchObject({
      status: 'fail',
      failureReason: `GET http://***@127.0.0.1:${port}/health answered 401, expected 200`,
    });
  });

  it('resolves promptly as cancelled when its signal aborts during the request', async () => {
    target.behaviour = { kind: 'stall' };
    const controller = new AbortController();
    const running = runHttpProbe(spec(`${target.url}/`, { timeoutMs: 60_000 }), controller.signal, deps);
    await until(() => target.requests.length === 1, 'the request arrived');
    controller.abort();
    const outcome = await running;
    expect(outcome).toMatchObject({ status: 'fail', failureReason: 'cancelled' });
    expect(outcome.durationMs).toBeLessThan(5_000);
    await until(() => target.openConnections === 0, 'the cancelled connection closed');
  });

  it('does not even connect when its signal has already aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    expect(await runHttpProbe(spec(`${target.url}/`), controller.signal, deps)).toMatchObject({
      status: 'fail',
      failureReason: 'cancelled',
    });
    expect(target.requests).toEqual([]);
  });

  it("leaves no listener on the runner's signal, which outlives every run", async () => {
    const controller = new AbortController();
    target.behaviour = { kind: 'status', status: 200 };
    await runHttpProbe(spec(`${target.url}/`), controller.signal, deps);
    target.behaviour = { kind: 'stall' };
    await runHttpProbe(spec(`${target.url}/`, { timeoutMs: 200 }), controller.signal, deps);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });
});

describe('runHttpProbe over https', () => {
  let dir: string;
  let pki: Pki;
  let target: ProbeTarget;
  const signal = new AbortController().signal;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-http-probe-'));
    pki = await makePki(join(dir, 'pki'));
    target = await ProbeTarget.start({ key: readFileSync(pki.serverKeyPath), cert: readFileSync(pki.serverCertPath) });
  });
  afterAll(async () => {
    await target.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('verifies the server against the CA bundle named by SSL_CERT_FILE and passes', async () => {
    const httpsAgent = await systemCaAgent({ SSL_CERT_FILE: pki.caCertPath });
    try {
      expect(await runHttpProbe(spec(`${target.url}/health`), signal, { axios: axios.create(), httpsAgent })).toMatchObject({
        status: 'pass',
      });
    } finally {
      httpsAgent.destroy();
    }
  });

  it('fails with a TLS reason when the CA that signed the server is not in the bundle', async () => {
    const httpsAgent = await systemCaAgent({ SSL_CERT_FILE: pki.foreignCaCertPath });
    try {
      const outcome = await runHttpProbe(spec(`${target.url}/health`), signal, { axios: axios.create(), httpsAgent });
      expect(outcome.status).toBe('fail');
      expect(outcome.failureReason).toMatch(
        new RegExp(
          `^GET ${target.url}/health TLS: .+ \\((UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\\)$`,
        ),
      );
    } finally {
      httpsAgent.destroy();
    }
  });

  it("fails with a TLS reason on the host's own bundle or Node's roots, which do not hold the test CA", async () => {
    const httpsAgent = await systemCaAgent({});
    try {
      const outcome = await runHttpProbe(spec(`${target.url}/health`), signal, { axios: axios.create(), httpsAgent });
      expect(outcome.failureReason).toMatch(/ TLS: .+ \([A-Z_]+\)$/);
    } finally {
      httpsAgent.destroy();
    }
  });
});

describe('loadSystemCaBundle', () => {
  let dir: string;
  let ca: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-ca-bundle-'));
    ca = join(dir, 'ca.crt');
    writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    writeFileSync(join(dir, 'empty.crt'), '');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('takes SSL_CERT_FILE first, then NIX_SSL_CERT_FILE', async () => {
    const other = join(dir, 'other.crt');
    writeFileSync(other, readFileSync(ca));
    expect((await loadSystemCaBundle({ SSL_CERT_FILE: ca, NIX_SSL_CERT_FILE: other })).path).toBe(ca);
    expect((await loadSystemCaBundle({ NIX_SSL_CERT_FILE: other })).path).toBe(other);
  });

  it('skips a file that is missing or holds no certificate', async () => {
    expect(await loadSystemCaBundle({ SSL_CERT_FILE: join(dir, 'missing.crt'), NIX_SSL_CERT_FILE: join(dir, 'empty.crt') })).toEqual(
      existsSync(DEFAULT_SYSTEM_CA_FILE) ? { path: DEFAULT_SYSTEM_CA_FILE, pem: expect.any(String) } : { path: null, pem: null },
    );
    expect((await loadSystemCaBundle({ SSL_CERT_FILE: join(dir, 'missing.crt'), NIX_SSL_CERT_FILE: ca })).path).toBe(ca);
  });
});
