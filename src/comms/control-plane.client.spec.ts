import { getEventListeners } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Test } from '@nestjs/testing';
import { DevControlPlane } from '../../dev/control-plane';
import { type ClientIdentity, makePki, type Pki } from '../../dev/pki';
import { testConfig } from '../../test/support/agent-config';
import { ClockModule } from '../clock/clock.module';
import { ConfigModule } from '../config/config.module';
import type { HeartbeatRequest } from '../protocol/heartbeat.wire';
import { AGENT_VERSION } from '../version';
import { CommsModule } from './comms.module';
import { DELIVERY_CONNECTIONS } from './comms.constants';
import { ControlPlaneClient } from './control-plane.client';
import { describeFailure } from './cp-failure';
import { loadIdentity } from './identity';
import { buildTlsAgent } from './tls-agent';

describe('ControlPlaneClient over real mutual TLS', () => {
  let dir: string;
  let pki: Pki;
  let cp: DevControlPlane;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-comms-'));
    pki = await makePki(join(dir, 'pki'));
    cp = await DevControlPlane.start({ pki });
  });
  afterAll(async () => {
    await cp.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function clientFor(identity: ClientIdentity, caCertPath = pki.caCertPath, url = cp.url) {
    const config = testConfig({ pki, controlPlaneUrl: url, stateDir: join(dir, 'state'), identity, caCertPath });
    const module = await Test.createTestingModule({
      imports: [ConfigModule.forRoot(config), ClockModule, CommsModule],
    }).compile();
    await module.init();
    return { client: module.get(ControlPlaneClient), close: () => module.close() };
  }

  const body = (): HeartbeatRequest => ({
    hostname: pki.machineId,
    at: new Date().toISOString(),
    agent_version: AGENT_VERSION,
    uptime_secs: 1,
    last_event_seq_by_rollout: {},
  });

  it('presents the client certificate: the CP sees its CN, the protocol header and the agent version', async () => {
    const { client, close } = await clientFor(pki.client);
    try {
      const before = cp.heartbeats.length;
      const result = await client.heartbeat(body());
      expect(result.ok).toBe(true);
      const seen = cp.heartbeats[before];
      expect(seen.cn).toBe(pki.machineId);
      expect(seen.headers['x-nixfleet-protocol']).toBe('1');
      expect(seen.headers['user-agent']).toBe(`nixfleet-agent/${AGENT_VERSION}`);
      expect(result.ok && result.response.status).toBe(200);
    } finally {
      await close();
    }
  });

  it.each([
    ['an OpenSSH ed25519 host key', (p: Pki) => p.clientOpensshEd25519],
    ['a SEC1 EC key', (p: Pki) => p.clientSec1],
    ['a PKCS#1 RSA key', (p: Pki) => p.clientPkcs1],
    ['a canonical agent-<id>.<suffix> CN', (p: Pki) => p.clientCanonical],
  ])('completes the handshake with %s', async (_name, pick) => {
    const identity = pick(pki);
    const { client, close } = await clientFor(identity);
    try {
      const before = cp.heartbeats.length;
      const result = await client.heartbeat(body());
      expect(result).toMatchObject({ ok: true });
      expect(cp.heartbeats[before].cn).toBe(identity.cn);
      expect(cp.heartbeats[before].machineId).toBe(pki.machineId);
    } finally {
      await close();
    }
  });

  it('classifies a CA that did not sign the CP certificate as a TLS failure', async () => {
    const { client, close } = await clientFor(pki.client, pki.foreignCaCertPath);
    try {
      const result = await client.heartbeat(body());
      expect(result.ok).toBe(false);
      expect(!result.ok && result.failure.kind).toBe('tls');
      expect(!result.ok && result.failure.detail).toMatch(/certificate/i);
    } finally {
      await close();
    }
  });

  it('classifies a client certificate the CP does not trust as a TLS failure', async () => {
    const { client, close } = await clientFor(pki.foreign);
    try {
      const result = await client.heartbeat(body());
      expect(!result.ok && result.failure.kind).toBe('tls');
      expect(!result.ok && result.failure.detail).toMatch(/refused our client certificate/);
      // TLS 1.3: the CP judges our certificate once our side of the handshake is done.
      expect(!result.ok && result.failure.detail).toMatch(/^the control plane closed a new connection right after the TLS handshake/);
    } finally {
      await close();
    }
  });

  /** A loopback TCP server; `onClient` gets each accepted socket. Closes everything on `close()`. */
  async function tcpServer(onClient: (s: net.Socket) => void): Promise<{ url: string; close: () => Promise<void> }> {
    const sockets = new Set<net.Socket>();
    const server = net.createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
      onClient(s);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      url: `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
      close: async () => {
        for (const s of sockets) s.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  }

  it.each([
    ['resets the connection (RST)', (s: net.Socket) => s.resetAndDestroy()],
    ['closes it quietly (FIN)', (s: net.Socket) => s.end()],
  ])('says the control plane never presented a certificate when the peer %s right after our ClientHello', async (_how, hangUp) => {
    const peer = await tcpServer((s) => s.once('data', () => hangUp(s)));
    const { client, close } = await clientFor(pki.client, pki.caCertPath, peer.url);
    try {
      const result = await client.heartbeat(body());
      expect(!result.ok && result.failure.kind).toBe('tls');
      const detail = !result.ok ? result.failure.detail : '';
      expect(detail).toMatch(/^the connection was reset during the TLS handshake, before the control plane presented a certificate \(/);
      expect(detail).toContain('our client certificate was not sent yet, so it is not the cause');
      expect(detail).not.toMatch(/refused our client certificate/);
    } finally {
      await close();
      await peer.close();
    }
  });

  it('blames the client certificate when a TLS 1.2 control plane hangs up after presenting its certificate', async () => {
    // A real TLS 1.2 server behind a relay that cuts the connection when our
    // second flight (certificate, key exchange, Finished) arrives: the server's
    // certificate has reached us, the handshake has not completed.
    const tls = await import('node:tls');
    const { readFileSync } = await import('node:fs');
    const real = tls.createServer({
      key: readFileSync(pki.serverKeyPath),
      cert: readFileSync(pki.serverCertPath),
      maxVersion: 'TLSv1.2',
      requestCert: true,
      rejectUnauthorized: false,
    });
    real.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve) => real.listen(0, '127.0.0.1', resolve));
    const upstreams: net.Socket[] = [];
    const relay = await tcpServer((s) => {
      const up = net.connect((real.address() as net.AddressInfo).port, '127.0.0.1');
      upstreams.push(up);
      up.on('error', () => undefined);
      let serverSpoke = false;
      up.on('data', (d) => {
        serverSpoke = true;
        s.write(d);
      });
      s.on('data', (d) => {
        if (!serverSpoke) {
          up.write(d);
          return;
        }
        up.destroy();
        s.resetAndDestroy();
      });
    });
    const { client, close } = await clientFor(pki.client, pki.caCertPath, relay.url);
    try {
      const result = await client.heartbeat(body());
      expect(!result.ok && result.failure.kind).toBe('tls');
      const detail = !result.ok ? result.failure.detail : '';
      expect(detail).toMatch(/^the control plane hung up during the TLS handshake, after presenting its certificate \(/);
      expect(detail).toContain('it most likely refused our client certificate');
    } finally {
      await close();
      for (const up of upstreams) up.destroy();
      await relay.close();
      await new Promise<void>((resolve) => real.close(() => resolve()));
    }
  });

  it('cuts a stalled call off at its deadline and says it timed out', async () => {
    const { client, close } = await clientFor(pki.client);
    try {
      cp.respondNext('heartbeat', { stall: true });
      const started = performance.now();
      const result = await client.heartbeat(body(), { deadlineMs: 400 });
      const elapsed = performance.now() - started;
      expect(result.ok).toBe(false);
      expect(!result.ok && result.failure).toEqual({ kind: 'timeout', detail: 'no complete answer within the 400 ms deadline' });
      // Not cut early; the upper side is the deadline itself, not a wall-clock budget.
      expect(elapsed).toBeGreaterThanOrEqual(390);
    } finally {
      await close();
    }
  });

  it("cuts a call when the caller aborts (shutdown), and a finished call leaves no listener on the caller's signal", async () => {
    const { client, close } = await clientFor(pki.client);
    try {
      const shutdown = new AbortController();
      for (let i = 0; i < 3; i++) expect((await client.heartbeat(body(), { signal: shutdown.signal })).ok).toBe(true);
      // A replay makes thousands of calls under one run's signal: nothing may pile up on it.
      expect(getEventListeners(shutdown.signal, 'abort')).toHaveLength(0);

      cp.respondNext('heartbeat', { stall: true });
      const pending = client.heartbeat(body(), { signal: shutdown.signal });
      await cp.waitFor(() => cp.heartbeats.at(-1)?.status === null, 2_000, 'the stalled heartbeat');
      shutdown.abort();
      const result = await pending;
      expect(!result.ok && result.failure).toEqual({ kind: 'aborted', detail: 'the agent is shutting down' });
      expect(getEventListeners(shutdown.signal, 'abort')).toHaveLength(0);

      const already = await client.heartbeat(body(), { signal: shutdown.signal });
      expect(!already.ok && already.failure.kind).toBe('aborted');
    } finally {
      await close();
    }
  });

  it(`event POSTs have a pool of their own: ${DELIVERY_CONNECTIONS} connections at most, and a heartbeat never waits behind them`, async () => {
    const { client, close } = await clientFor(pki.client);
    const envelope = (seq: number): string =>
      JSON.stringify({
        hostname: pki.machineId,
        rolloutId: `stable@pool${seq}aaa`,
        event: { kind: 'ActivationStarted', seq, startedAt: '2026-11-28T12:00:01Z', switchMethod: 'switch' },
      });
    const before = cp.eventPosts.length;
    const cut = new AbortController();
    cp.setDefault('events', { stall: true });
    try {
      const posts = Array.from({ length: DELIVERY_CONNECTIONS + 2 }, (_, i) => client.postEvent(envelope(i + 1), { signal: cut.signal }));
      await cp.waitFor(() => cp.eventPosts.length - before === DELIVERY_CONNECTIONS, 2_000, 'the stalled POSTs');
      // Every delivery connection is held by a stalled POST; the heartbeat has connections of its own.
      const beat = await client.heartbeat(body());
      expect(beat.ok).toBe(true);
      // The two extra POSTs are still waiting in the pool, not sent on new connections.
      expect(cp.eventPosts.length - before).toBe(DELIVERY_CONNECTIONS);
      cut.abort();
      const results = await Promise.all(posts);
      expect(results.map((r) => !r.ok && r.failure.kind)).toEqual(Array<string>(DELIVERY_CONNECTIONS + 2).fill('aborted'));
    } finally {
      cp.setDefault('events', null);
      await close();
    }
  });

  it('says whether a call opened its connection (its time then includes the handshakes) or reused a kept-alive one', async () => {
    const { client, close } = await clientFor(pki.client);
    try {
      const first = await client.heartbeat(body());
      const second = await client.heartbeat(body());
      expect(first.ok && first.response.newConnection).toBe(true);
      expect(second.ok && !second.response.newConnection).toBe(true);
    } finally {
      await close();
    }
  });

  it('holds a dribbling server to the deadline too, though bytes keep arriving', async () => {
    const { client, close } = await clientFor(pki.client);
    try {
      cp.respondNext('heartbeat', { status: 200, bodyBytes: 10_000, dribbleBytesEveryMs: 20 });
      const result = await client.heartbeat(body(), { deadlineMs: 500 });
      expect(!result.ok && result.failure.kind).toBe('timeout');
    } finally {
      await close();
    }
  });

  it.each([
    ['declared with Content-Length', false],
    ['sent chunked, size undeclared', true],
  ])('refuses a response body over 1 MiB (%s)', async (_name, chunked) => {
    const { client, close } = await clientFor(pki.client);
    try {
      cp.respondNext('heartbeat', { status: 200, bodyBytes: 2 * 1024 * 1024, chunked });
      const result = await client.heartbeat(body());
      expect(!result.ok && result.failure).toEqual({
        kind: 'bad-body',
        detail: 'response body larger than the 1 MiB limit',
        status: null,
      });
    } finally {
      await close();
    }
  });

  it('does not follow redirects: a 302 is an HTTP-status failure', async () => {
    const { client, close } = await clientFor(pki.client);
    try {
      cp.respondNext('heartbeat', { status: 302, headers: { Location: 'https://127.0.0.1:1/elsewhere' } });
      const before = cp.requests.length;
      const result = await client.heartbeat(body());
      expect(!result.ok && result.failure).toMatchObject({ kind: 'http-status', status: 302 });
      expect(cp.requests.length).toBe(before + 1);
    } finally {
      await close();
    }
  });

  it('classifies a 503 with Retry-After (naming one it cannot read), and a 200 whose body is not the protocol as a bad body', async () => {
    const { client, close } = await clientFor(pki.client);
    try {
      cp.respondNext('heartbeat', { status: 503, retryAfterSecs: 17 });
      const busy = await client.heartbeat(body());
      expect(!busy.ok && busy.failure).toMatchObject({ kind: 'http-status', status: 503, retryAfterSecs: 17 });
      expect(!busy.ok && busy.failure).not.toHaveProperty('unusableRetryAfter');

      cp.respondNext('heartbeat', { status: 503, headers: { 'Retry-After': 'in a bit' } });
      const garbled = await client.heartbeat(body());
      expect(!garbled.ok && garbled.failure).toMatchObject({
        kind: 'http-status',
        status: 503,
        retryAfterSecs: null,
        unusableRetryAfter: 'in a bit',
      });
      expect(!garbled.ok && describeFailure(garbled.failure)).toMatch(
        /; its Retry-After "in a bit" is neither seconds nor an HTTP date, ignored$/,
      );

      cp.respondNext('heartbeat', { status: 200, body: '<html>proxy error</html>' });
      const html = await client.heartbeat(body());
      expect(!html.ok && html.failure).toMatchObject({ kind: 'bad-body', status: 200 });
      expect(!html.ok && html.failure.detail).toMatch(/not JSON/);

      cp.respondNext('heartbeat', { status: 200, body: { bootstrap_rollouts: 'none' } });
      const wrongShape = await client.heartbeat(body());
      expect(!wrongShape.ok && wrongShape.failure.detail).toMatch(/bootstrap_rollouts/);
    } finally {
      await close();
    }
  });

  it.each([
    [429, 30],
    [503, 30],
    [500, null],
    [502, null],
    [409, null],
    [403, null],
  ])('takes Retry-After: 30 on HTTP %i as %p, alike on heartbeats, events and dispatch polls', async (status, expected) => {
    const { client, close } = await clientFor(pki.client);
    try {
      const calls = {
        heartbeat: () => client.heartbeat(body()),
        events: () => client.postEvent('{"hostname":"web-01","rolloutId":"stable@a1b2c3d4","event":{"kind":"Converged","seq":1}}'),
        dispatch: () => client.pollDispatch(1),
      } as const;
      for (const [route, call] of Object.entries(calls)) {
        cp.respondNext(route as keyof typeof calls, { status, retryAfterSecs: 30, body: { error: 'busy' } });
        const result = await call();
        expect([route, !result.ok && result.failure]).toEqual([
          route,
          expect.objectContaining({ kind: 'http-status', status, retryAfterSecs: expected }),
        ]);
        const said = !result.ok ? describeFailure(result.failure) : '';
        if (expected === null) expect(said).toMatch(/; its Retry-After "30" is ignored: only a 429 or 503 sets when to retry$/);
        else expect(said).not.toMatch(/Retry-After/);
      }
    } finally {
      await close();
    }
  });

  it('classifies a refused connection as a connect failure', async () => {
    const closed = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const port = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(port));
      });
    });
    const { client, close } = await clientFor(pki.client, pki.caCertPath, `https://127.0.0.1:${closed}`);
    try {
      const result = await client.heartbeat(body());
      expect(!result.ok && result.failure.kind).toBe('connect');
      expect(!result.ok && result.failure.detail).toMatch(/ECONNREFUSED/);
    } finally {
      await close();
    }
  });

  it('gives up on a TLS handshake that never completes after the connect timeout', async () => {
    // Accepts TCP, never speaks TLS: a black-holed handshake.
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    const agent = buildTlsAgent(loadIdentity({ machineId: pki.machineId, caCert: pki.caCertPath }), 300);
    try {
      const https = await import('node:https');
      const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
        https.get({ host: '127.0.0.1', port, path: '/', agent }, () => resolve(new Error('answered'))).on('error', resolve);
      });
      expect(err.code).toBe('ECONNECTTIMEOUT');
      expect(err.message).toBe('TLS connection not established within 300 ms');
    } finally {
      agent.destroy();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });
});
