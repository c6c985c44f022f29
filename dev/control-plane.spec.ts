import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadTrustFile, type TrustRoots } from '../src/trust/trust-file';
import { checkDispatch, verifyManifest, type DispatchFailure, type VerifyFailure } from '../src/trust/manifest';
import { DevControlPlane, MANIFEST_VARIANTS, OTHER_TARGET, type DevCpOptions, type ManifestVariant } from './control-plane';
import { cpRequest, type CpReply, type CpRequest, type TlsIdentity } from './cp-client';
import { ManifestSigner, toDer } from './manifest-signer';
import { clientTlsOptions, makePki, type ClientIdentity, type Pki } from './pki';

const R1 = 'stable@a1b2c3d4';
const R2 = 'edge@e5f6a7b8';
const CLOSURE = '0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web-01-26.05';

describe('DevControlPlane', () => {
  let dir: string;
  let pki: Pki;
  let cp: DevControlPlane | undefined;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nixfleet-devcp-'));
    pki = await makePki(path.join(dir, 'pki'));
  });

  afterEach(async () => {
    await cp?.close();
    cp = undefined;
  });

  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  async function start(opts: Partial<DevCpOptions> = {}): Promise<DevControlPlane> {
    cp = await DevControlPlane.start({ pki, dispatchWaitCapMs: 300, ...opts });
    return cp;
  }

  const as = (id: ClientIdentity): TlsIdentity => clientTlsOptions(pki.caCertPath, id);

  function send(r: CpRequest, id: ClientIdentity = pki.client): Promise<CpReply> {
    if (!cp) throw new Error('start the CP first');
    return cpRequest(cp.url, as(id), r);
  }

  function heartbeat(body: Record<string, unknown> = {}, id?: ClientIdentity, extra: Partial<CpRequest> = {}) {
    return send(
      {
        path: '/v1/agent/heartbeat',
        body: { hostname: 'web-01', at: '2026-11-28T12:00:00Z', agent_version: '0.1.0', uptime_secs: 5, ...body },
        ...extra,
      },
      id,
    );
  }

  function envelope(seq: number, rolloutId = R1, hostname = 'web-01'): Record<string, unknown> {
    return {
      hostname,
      rolloutId,
      event: { kind: 'ActivationStarted', seq, startedAt: '2026-11-28T12:00:01Z', switchMethod: 'switch' },
    };
  }

  function postEvent(body: unknown, id?: ClientIdentity): Promise<CpReply> {
    return send({ path: '/v1/agent/events', body }, id);
  }

  function poll(wait: number | string = 60, id?: ClientIdentity): Promise<CpReply> {
    return send({ path: `/v1/agent/dispatch?wait=${wait}` }, id);
  }

  describe('identity', () => {
    it('takes the machine id from a bare CN', async () => {
      await start();
      const res = await heartbeat();
      expect(res.status).toBe(200);
      const body = JSON.parse(res.text) as { received_at: string; bootstrap_rollouts: unknown[] };
      expect(Number.isNaN(Date.parse(body.received_at))).toBe(false);
      expect(body.bootstrap_rollouts).toEqual([]);
      expect(cp!.heartbeats).toHaveLength(1);
      expect(cp!.heartbeats[0]).toMatchObject({ machineId: 'web-01', cn: 'web-01', status: 200 });
      expect(cp!.heartbeats[0].headers['x-nixfleet-protocol']).toBe('1');
    });

    it('takes the machine id from a canonical agent-<id>.<suffix> CN', async () => {
      await start();
      const res = await heartbeat({}, pki.clientCanonical);
      expect(res.status).toBe(200);
      expect(cp!.heartbeats[0]).toMatchObject({ machineId: 'web-01', cn: 'agent-web-01.fleet.test' });
    });

    it('accepts clients whose keys are SEC1 and PKCS#1 PEM', async () => {
      await start();
      expect((await heartbeat({}, pki.clientSec1)).status).toBe(200);
      expect((await heartbeat({}, pki.clientPkcs1)).status).toBe(200);
    });

    it('refuses a client cert from a foreign CA during the TLS handshake', async () => {
      await start();
      await expect(heartbeat({}, pki.foreign)).rejects.toThrow();
      await cp!.waitFor(() => cp!.tlsRejections.length > 0, 2000, 'a TLS rejection');
      expect(cp!.requests).toHaveLength(0);
    });

    it('refuses a client that presents no certificate', async () => {
      await start();
      await expect(cpRequest(cp!.url, { ca: fs.readFileSync(pki.caCertPath) }, { path: '/v1/agent/dispatch' })).rejects.toThrow();
      expect(cp!.requests).toHaveLength(0);
    });

    it('is not trusted by a client that trusts only the foreign CA', async () => {
      await start();
      const tls = { ...as(pki.client), ca: fs.readFileSync(pki.foreignCaCertPath) };
      await expect(cpRequest(cp!.url, tls, { path: '/v1/agent/dispatch' })).rejects.toMatchObject({
        code: expect.stringMatching(/SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/),
      });
      expect(cp!.requests).toHaveLength(0);
    });

    it('answers 403 when the body hostname is not the cert machine id', async () => {
      await start();
      const hb = await heartbeat({ hostname: 'web-01' }, pki.otherMachine);
      expect(hb.status).toBe(403);
      expect(JSON.parse(hb.text)).toMatchObject({ error: 'hostname_mismatch' });
      const ev = await postEvent(envelope(1, R1, 'web-01'), pki.otherMachine);
      expect(ev.status).toBe(403);
      expect(cp!.events('web-01')).toEqual([]);
      expect(cp!.eventPosts[0]).toMatchObject({ machineId: 'db-02', status: 403 });
    });
  });

  describe('protocol header and request checks', () => {
    it('answers 400 to a missing or malformed protocol header and 426 to another major', async () => {
      await start();
      expect((await heartbeat({}, undefined, { protocol: null })).status).toBe(400);
      expect((await heartbeat({}, undefined, { protocol: 'v1' })).status).toBe(400);
      expect((await heartbeat({}, undefined, { protocol: '-1' })).status).toBe(400);
      const two = await heartbeat({}, undefined, { protocol: '2' });
      expect(two.status).toBe(426);
      expect(two.headers['content-type']).toBe('application/json');
      expect(JSON.parse(two.text)).toMatchObject({ error: 'protocol_mismatch' });
      expect((await send({ path: '/v1/agent/dispatch?wait=0', protocol: '2' })).status).toBe(426);
      expect((await send({ path: '/v1/agent/events', body: envelope(1), protocol: null })).status).toBe(400);
      expect(cp!.events('web-01')).toEqual([]);
    });

    it('answers 400 to an invalid heartbeat, naming the field', async () => {
      await start();
      const res = await heartbeat({ at: undefined });
      expect(res.status).toBe(400);
      expect((JSON.parse(res.text) as { problems: string[] }).problems.join()).toMatch(/^at:/);
      expect((await heartbeat({ current_closure: `/nix/store/${CLOSURE}` })).status).toBe(400);
      expect((await heartbeat({ last_event_seq_by_rollout: { [R1]: -1 } })).status).toBe(400);
      expect((await heartbeat({ at: '2026-11-28T13:00:00+01:00' })).status).toBe(400);
      expect((await send({ path: '/v1/agent/heartbeat', body: '{not json' })).status).toBe(400);
    });

    it('answers 415 to a body not sent as application/json', async () => {
      await start();
      const res = await send({
        path: '/v1/agent/events',
        body: envelope(1),
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      });
      expect(res.status).toBe(415);
    });

    it('answers 404 to an unknown path and 405 to a wrong method, as JSON', async () => {
      await start();
      const nf = await send({ path: '/v1/agent/nope' });
      expect(nf.status).toBe(404);
      expect(JSON.parse(nf.text)).toMatchObject({ error: 'not_found' });
      const wrong = await send({ path: '/v1/agent/heartbeat', method: 'GET' });
      expect(wrong.status).toBe(405);
      expect(cp!.requests.map((r) => r.status)).toEqual([404, 405]);
    });

    it('answers 413 to a request body over 1 MiB', async () => {
      await start();
      const big = JSON.stringify({ ...envelope(1), signature: 'x'.repeat(1024 * 1024) });
      const res = await send({ path: '/v1/agent/events', body: big });
      expect(res.status).toBe(413);
      expect(cp!.eventPosts[0]).toMatchObject({ status: 413, raw: '' });
    });
  });

  describe('events', () => {
    it('stores a seq once, answers 204 to the duplicate, and keeps the exact bytes first posted', async () => {
      await start();
      const first = `{"hostname":"web-01",  "rolloutId":"${R1}","event":{"seq":1,"kind":"DispatchAck","currentClosureAtDispatch":null,"receivedAt":"2026-11-28T12:00:00Z"}}`;
      const again = JSON.stringify(JSON.parse(first));
      expect((await postEvent(first)).status).toBe(204);
      expect((await postEvent(again)).status).toBe(204);
      const stored = cp!.events('web-01', R1);
      expect(stored).toHaveLength(1);
      expect(stored[0]).toMatchObject({ hostname: 'web-01', rolloutId: R1, seq: 1, kind: 'DispatchAck', raw: first });
      expect(stored[0].event).toEqual({
        seq: 1,
        kind: 'DispatchAck',
        currentClosureAtDispatch: null,
        receivedAt: '2026-11-28T12:00:00Z',
      });
      expect(cp!.eventPosts.map((p) => [p.status, p.outcome, p.raw])).toEqual([
        [204, 'stored', first],
        [204, 'duplicate', again],
      ]);
    });

    it('returns events sorted by seq and tracks the gap-free held seq', async () => {
      await start();
      for (const seq of [3, 1, 2, 5]) expect((await postEvent(envelope(seq))).status).toBe(204);
      expect((await postEvent(envelope(1, R2))).status).toBe(204);
      expect(cp!.events('web-01', R1).map((e) => e.seq)).toEqual([1, 2, 3, 5]);
      expect(cp!.events('web-01').map((e) => `${e.rolloutId}#${e.seq}`)).toEqual([`${R1}#1`, `${R1}#2`, `${R1}#3`, `${R1}#5`, `${R2}#1`]);
      expect(cp!.heldSeq('web-01', R1)).toBe(3);
      expect(cp!.heldSeq('web-01', 'stable@unknown')).toBe(0);
    });

    it('answers 400 to an invalid envelope and stores nothing', async () => {
      await start();
      const bad = { ...envelope(1), event: { kind: 'Nope', seq: 0 } };
      const res = await postEvent(bad);
      expect(res.status).toBe(400);
      expect((JSON.parse(res.text) as { problems: string[] }).problems.join('\n')).toMatch(/event\.kind[\s\S]*event\.seq/);
      expect((await postEvent({ ...envelope(1), rolloutId: 'no-at-sign' })).status).toBe(400);
      expect(cp!.events('web-01')).toEqual([]);
    });
  });

  describe('dispatch long-poll', () => {
    it('answers 204 once the hold cap passes', async () => {
      await start({ dispatchWaitCapMs: 200 });
      const res = await poll(60);
      expect(res.status).toBe(204);
      expect(res.elapsedMs).toBeGreaterThanOrEqual(190);
      expect(res.elapsedMs).toBeLessThan(1500);
      expect(cp!.dispatchPolls[0]).toMatchObject({ machineId: 'web-01', status: 204 });
    });

    it('answers a held poll at once when an order is queued during the hold', async () => {
      await start({ dispatchWaitCapMs: 5000 });
      const pending = poll(60);
      await cp!.waitFor(() => cp!.heldPolls('web-01') === 1, 2000, 'a held poll');
      cp!.queueDispatch('db-02', { rollout_id: R2, target_closure: CLOSURE, soak_due_at: '2026-11-28T12:10:00Z' });
      cp!.queueDispatch('web-01', {
        rollout_id: R1,
        target_closure: CLOSURE,
        soak_due_at: '2026-11-28T12:10:00Z',
        enqueued_at: '2026-11-28T12:00:00Z',
      });
      const res = await pending;
      expect(res.status).toBe(200);
      expect(res.elapsedMs).toBeLessThan(2000);
      expect(JSON.parse(res.text)).toEqual({
        hostname: 'web-01',
        rollout_id: R1,
        target_closure: CLOSURE,
        soak_due_at: '2026-11-28T12:10:00Z',
        enqueued_at: '2026-11-28T12:00:00Z',
      });
      expect(cp!.queuedDispatches('db-02')).toBe(1);
      expect(cp!.queuedDispatches('web-01')).toBe(0);
    });

    it('hands out an order queued before the poll, once', async () => {
      await start({ dispatchWaitCapMs: 100 });
      cp!.queueDispatch('web-01', { rollout_id: R1, target_closure: CLOSURE, soak_due_at: '2026-11-28T12:10:00Z' });
      const res = await poll(60);
      expect(res.status).toBe(200);
      expect(res.elapsedMs).toBeLessThan(100);
      expect((JSON.parse(res.text) as { enqueued_at: string }).enqueued_at).toMatch(/Z$/);
      expect((await poll(0)).status).toBe(204);
    });

    it('does not give an order to a poll whose client already left', async () => {
      await start({ dispatchWaitCapMs: 5000 });
      await expect(cpRequest(cp!.url, as(pki.client), { path: '/v1/agent/dispatch?wait=60', timeoutMs: 100 })).rejects.toThrow();
      await cp!.waitFor(() => cp!.heldPolls('web-01') === 0, 2000, 'the abandoned poll to be dropped');
      cp!.queueDispatch('web-01', { rollout_id: R1, target_closure: CLOSURE, soak_due_at: '2026-11-28T12:10:00Z' });
      expect(cp!.queuedDispatches('web-01')).toBe(1);
      expect(cp!.dispatchPolls[0].status).toBeNull();
    });

    it('answers 400 to a wait that is not whole seconds', async () => {
      await start();
      expect((await poll('abc')).status).toBe(400);
    });

    it('lets close() end a held poll promptly', async () => {
      await start({ dispatchWaitCapMs: 60_000 });
      const pending = poll(60).catch((err: unknown) => err);
      await cp!.waitFor(() => cp!.heldPolls('web-01') === 1, 2000, 'a held poll');
      const started = performance.now();
      await cp!.close();
      expect(performance.now() - started).toBeLessThan(500);
      expect(await pending).toMatchObject({ code: 'ECONNRESET' });
    });
  });

  describe('scripted responses', () => {
    it('answers the next request with a scripted status and Retry-After, then behaves normally', async () => {
      await start();
      cp!.respondNext('heartbeat', { status: 503, retryAfterSecs: 7, body: { error: 'starting' } });
      const first = await heartbeat();
      expect(first.status).toBe(503);
      expect(first.headers['retry-after']).toBe('7');
      expect(JSON.parse(first.text)).toEqual({ error: 'starting' });
      expect((await heartbeat()).status).toBe(200);
      expect(cp!.heartbeats.map((h) => [h.status, h.scripted])).toEqual([
        [503, true],
        [200, false],
      ]);
    });

    it('delays the normal answer and lets headers such as Date be overridden', async () => {
      await start();
      const skewed = 'Wed, 01 Jan 2020 00:00:00 GMT';
      cp!.respondNext('heartbeat', { delayMs: 150, headers: { Date: skewed } });
      const res = await heartbeat();
      expect(res.status).toBe(200);
      expect(res.elapsedMs).toBeGreaterThanOrEqual(140);
      expect(res.headers.date).toBe(skewed);
      expect(JSON.parse(res.text)).toHaveProperty('bootstrap_rollouts', []);
    });

    it('keeps a stalled request open without an answer until close()', async () => {
      await start();
      cp!.respondNext('heartbeat', { stall: true });
      await expect(heartbeat({}, undefined, { timeoutMs: 200 })).rejects.toThrow();
      expect(cp!.heartbeats[0].status).toBeNull();
      cp!.respondNext('events', { stall: true });
      const pending = postEvent(envelope(1)).catch((err: unknown) => err);
      await cp!.waitFor(() => cp!.eventPosts.length === 1, 2000, 'the stalled event POST');
      const started = performance.now();
      await cp!.close();
      expect(performance.now() - started).toBeLessThan(500);
      expect(await pending).toMatchObject({ code: 'ECONNRESET' });
    });

    it('sends a body of exactly bodyBytes, declared or chunked', async () => {
      await start();
      const size = 2 * 1024 * 1024;
      cp!.respondNext('dispatch', { status: 200, bodyBytes: size });
      const declared = await poll(0);
      expect(declared.text.length).toBe(size);
      expect(declared.headers['content-length']).toBe(String(size));
      expect(declared.text.startsWith('{"pad":"xxx')).toBe(true);
      cp!.respondNext('dispatch', { status: 200, bodyBytes: size, chunked: true });
      const chunked = await poll(0);
      expect(chunked.text.length).toBe(size);
      expect(chunked.headers['content-length']).toBeUndefined();
      expect(chunked.headers['transfer-encoding']).toBe('chunked');
    });

    it('dribbles a body one byte at a time', async () => {
      await start();
      cp!.respondNext('heartbeat', { status: 200, body: '{"a":1}', dribbleBytesEveryMs: 25 });
      const res = await heartbeat();
      expect(res.text).toBe('{"a":1}');
      expect(res.elapsedMs).toBeGreaterThanOrEqual(7 * 25 - 10);
    });

    it('uses a persistent default until cleared, and a scripted 2xx stores nothing', async () => {
      await start();
      cp!.setDefault('events', { status: 503, retryAfterSecs: 1 });
      expect((await postEvent(envelope(1))).status).toBe(503);
      expect((await postEvent(envelope(1))).status).toBe(503);
      cp!.respondNext('events', { status: 204 });
      expect((await postEvent(envelope(1))).status).toBe(204);
      expect(cp!.events('web-01')).toEqual([]);
      cp!.setDefault('events', null);
      expect((await postEvent(envelope(1))).status).toBe(204);
      expect(cp!.events('web-01')).toHaveLength(1);
      expect(cp!.eventPosts.map((p) => p.status)).toEqual([503, 503, 204, 204]);
    });

    it('answers only a share of the requests with a default, evenly spread; the others are handled normally', async () => {
      await start();
      cp!.setDefault('events', { status: 503, retryAfterSecs: 2 }, { share: 0.5 });
      const statuses: number[] = [];
      for (let seq = 1; seq <= 6; seq++) statuses.push((await postEvent(envelope(seq))).status);
      expect(statuses).toEqual([204, 503, 204, 503, 204, 503]);
      expect(cp!.eventPosts.map((p) => p.scripted)).toEqual([false, true, false, true, false, true]);
      expect(cp!.eventPosts[1].status).toBe(503);
      expect(cp!.events('web-01').map((e) => e.seq)).toEqual([1, 3, 5]);

      // A one-shot still goes first and does not count towards the share.
      cp!.respondNext('events', { status: 429 });
      cp!.setDefault('events', { status: 503 }, { share: 1 / 3 });
      const more: number[] = [];
      for (let seq = 7; seq <= 13; seq++) more.push((await postEvent(envelope(seq))).status);
      expect(more).toEqual([429, 204, 204, 503, 204, 204, 503]);

      cp!.setDefault('events', null);
      expect((await postEvent(envelope(14))).status).toBe(204);
      expect(() => cp!.setDefault('events', { status: 503 }, { share: 0 })).toThrow('setDefault: share must be in (0, 1], got 0');
      expect(() => cp!.setDefault('events', { status: 503 }, { share: 1.5 })).toThrow(/share must be in \(0, 1\]/);
    });

    it('sends Retry-After as an HTTP date the given seconds after the answer', async () => {
      await start();
      cp!.respondNext('heartbeat', { status: 503, retryAfterDateInSecs: 30 });
      const before = Date.now();
      const res = await heartbeat();
      expect(res.status).toBe(503);
      const at = Date.parse(String(res.headers['retry-after']));
      expect(String(res.headers['retry-after'])).toMatch(/^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
      // An HTTP date has whole seconds.
      expect(at).toBeGreaterThanOrEqual(before + 29_000);
      expect(at).toBeLessThanOrEqual(Date.now() + 30_000);
    });

    it('cuts a response after some body bytes, the status and full Content-Length already sent', async () => {
      await start();
      cp!.respondNext('heartbeat', { status: 200, body: { received_at: null, bootstrap_rollouts: [] }, cutAfterBytes: 5 });
      const failed = await heartbeat().catch((err: unknown) => err);
      expect(failed).toMatchObject({ code: 'ECONNRESET' });
      expect(cp!.heartbeats[0]).toMatchObject({ status: 200, cut: true });
      expect((await heartbeat()).status).toBe(200);
    });

    it('cuts a body-less answer before its status line, after acting on the request', async () => {
      await start();
      cp!.respondNext('events', { cutAfterBytes: 0 });
      const failed = await postEvent(envelope(1)).catch((err: unknown) => err);
      expect(failed).toMatchObject({ code: 'ECONNRESET' });
      expect(cp!.eventPosts[0]).toMatchObject({ status: null, cut: true, outcome: 'stored' });
      expect(cp!.events('web-01').map((e) => e.seq)).toEqual([1]);
      // The client's resend is the duplicate it is.
      expect((await postEvent(envelope(1))).status).toBe(204);
      expect(cp!.eventPosts[1]).toMatchObject({ status: 204, outcome: 'duplicate' });
    });

    it('applies a script even to a request the CP would refuse', async () => {
      await start();
      cp!.respondNext('heartbeat', { status: 200, body: { received_at: null } });
      expect((await heartbeat({}, undefined, { protocol: '9' })).status).toBe(200);
    });
  });

  describe('outages', () => {
    it('goes offline (connects refused, open requests cut) and comes back on the same port with its state', async () => {
      await start();
      await postEvent(envelope(1));
      cp!.respondNext('heartbeat', { stall: true });
      const stalled = heartbeat({}, undefined, { timeoutMs: 3000 }).catch((err: unknown) => err);
      await cp!.waitFor(() => cp!.heartbeats.length === 1, 2000, 'the stalled heartbeat');
      const url = cp!.url;
      await cp!.goOffline();
      expect(await stalled).toMatchObject({ code: 'ECONNRESET' });
      expect(await heartbeat().catch((err: unknown) => err)).toMatchObject({ code: 'ECONNREFUSED' });

      await cp!.comeBackOnline();
      expect(cp!.url).toBe(url);
      expect((await heartbeat()).status).toBe(200);
      expect(cp!.events('web-01').map((e) => e.seq)).toEqual([1]);
    });

    it('resets new connections before the TLS handshake while told to', async () => {
      await start();
      cp!.setResetConnections(true);
      expect(await heartbeat().catch((err: unknown) => err)).toMatchObject({ code: 'ECONNRESET' });
      expect(cp!.resets).toHaveLength(1);
      expect(cp!.heartbeats).toHaveLength(0);
      cp!.setResetConnections(false);
      expect((await heartbeat()).status).toBe(200);
    });
  });

  describe('heartbeat answers', () => {
    it('returns bootstrap snapshots to boot-recovery-shaped heartbeats only', async () => {
      await start();
      const snapshot = { rolloutId: R1, hostname: 'web-01', state: 'Bogus' };
      cp!.setBootstrap('web-01', [snapshot]);
      expect(JSON.parse((await heartbeat()).text)).toMatchObject({ bootstrap_rollouts: [snapshot] });
      expect(JSON.parse((await heartbeat({ rollout_id: R1 })).text)).toMatchObject({ bootstrap_rollouts: [] });
      cp!.loseAllState();
      expect(JSON.parse((await heartbeat()).text)).toMatchObject({ bootstrap_rollouts: [] });
    });

    it('sends an exact Replay-From value when told, even a malformed one', async () => {
      await start();
      cp!.setReplayFrom('not a seq');
      expect((await heartbeat()).headers['x-nixfleet-replay-from']).toBe('not a seq');
      cp!.setReplayFrom(null);
      expect((await heartbeat()).headers['x-nixfleet-replay-from']).toBeUndefined();
    });

    it('after losing its state, asks for a replay (plain form) until it holds the reported seq again', async () => {
      await start();
      for (const seq of [1, 2, 3]) await postEvent(envelope(seq));
      for (const seq of [1, 2, 3, 4, 5]) await postEvent(envelope(seq, R2));
      const report = { last_event_seq_by_rollout: { [R1]: 3, [R2]: 5 } };
      expect((await heartbeat(report)).headers['x-nixfleet-replay-from']).toBeUndefined();

      cp!.loseAllState();
      expect(cp!.events('web-01')).toEqual([]);
      expect(cp!.eventPosts).toHaveLength(8);
      await postEvent(envelope(1, R2));
      await postEvent(envelope(2, R2));
      // R2 reports the highest seq, so the plain value is what the CP holds for R2.
      expect((await heartbeat(report)).headers['x-nixfleet-replay-from']).toBe('2');
      for (const seq of [3, 4, 5]) await postEvent(envelope(seq, R2));
      expect((await heartbeat(report)).headers['x-nixfleet-replay-from']).toBe('0');
      for (const seq of [1, 2, 3]) await postEvent(envelope(seq));
      expect((await heartbeat(report)).headers['x-nixfleet-replay-from']).toBeUndefined();
    });

    it('after losing its state, names each lagging rollout in the per-rollout form', async () => {
      await start({ replayForm: 'per-rollout' });
      cp!.loseAllState();
      await postEvent(envelope(1, R2));
      await postEvent(envelope(2, R2));
      const report = { last_event_seq_by_rollout: { [R1]: 3, [R2]: 5 } };
      expect((await heartbeat(report)).headers['x-nixfleet-replay-from']).toBe(`${R1}=0, ${R2}=2`);
      for (const seq of [1, 2, 3]) await postEvent(envelope(seq));
      expect((await heartbeat(report)).headers['x-nixfleet-replay-from']).toBe(`${R2}=2`);
    });

    it('never asks for a replay when told not to', async () => {
      await start({ autoReplayFrom: 'never' });
      cp!.loseAllState();
      expect((await heartbeat({ last_event_seq_by_rollout: { [R1]: 3 } })).headers['x-nixfleet-replay-from']).toBeUndefined();
    });

    it('forgets queued dispatches when it loses its state', async () => {
      await start();
      cp!.queueDispatch('web-01', { rollout_id: R1, target_closure: CLOSURE, soak_due_at: '2026-11-28T12:10:00Z' });
      cp!.loseAllState();
      expect(cp!.queuedDispatches('web-01')).toBe(0);
      expect((await poll(0)).status).toBe(204);
    });
  });

  describe('signed rollout manifests (PROTOCOL §12)', () => {
    const REJECT_BEFORE = new Date(Date.now() - 24 * 3600 * 1000);
    let signer: ManifestSigner;
    let trust: TrustRoots;

    beforeAll(async () => {
      signer = new ManifestSigner({ rejectBefore: REJECT_BEFORE });
      const file = path.join(dir, 'trust.json');
      await signer.writeTrustFile(file);
      const loaded = await loadTrustFile(file);
      if (!loaded.ok) throw new Error(loaded.problems.join('\n'));
      trust = loaded.trust;
    });

    const fetchManifest = (rolloutId: string, id?: ClientIdentity): Promise<CpReply> =>
      send({ path: `/v1/rollouts/${encodeURIComponent(rolloutId)}` }, id);
    const fetchSignature = (rolloutId: string, id?: ClientIdentity): Promise<CpReply> =>
      send({ path: `/v1/rollouts/${encodeURIComponent(rolloutId)}/sig` }, id);
    const dispatchR1 = (hostname = 'web-01', target = CLOSURE): void =>
      cp!.queueDispatch(hostname, { rollout_id: R1, target_closure: target, soak_due_at: '2026-11-28T12:10:00Z' });

    /** Fetches the pair as the agent would, then judges it as the agent would. */
    async function judge(rolloutId = R1, hostname = 'web-01', target = CLOSURE) {
      const manifest = await fetchManifest(rolloutId);
      const sig = await fetchSignature(rolloutId);
      if (manifest.status !== 200 || sig.status !== 200) return { http: [manifest.status, sig.status] };
      const verified = verifyManifest(manifest.bytes, sig.bytes, trust, new Date());
      if (!verified.ok) return { verify: verified.reason };
      const covers = checkDispatch(verified.manifest, { rolloutId, hostname, targetClosure: target });
      return covers.ok ? { ok: verified.keySlot } : { dispatch: covers.reason };
    }

    it('answers 404 with a JSON error on both routes when started without a signer', async () => {
      await start();
      dispatchR1();
      for (const res of [await fetchManifest(R1), await fetchSignature(R1)]) {
        expect(res.status).toBe(404);
        expect(res.headers['content-type']).toBe('application/json');
        expect(JSON.parse(res.text)).toMatchObject({ error: 'no_manifest' });
      }
      expect(cp!.manifest(R1)).toBeNull();
      expect(() => cp!.setManifest(R1, 'good')).toThrow('without a signer');
      expect(cp!.manifestFetches).toEqual([expect.objectContaining({ route: 'manifest', rolloutId: R1, status: 404 })]);
      expect(cp!.signatureFetches).toEqual([expect.objectContaining({ route: 'signature', rolloutId: R1, status: 404 })]);
    });

    it('serves, for a queued dispatch, the manifest exactly as signed and its raw signature; they verify and cover the dispatch', async () => {
      await start({ signer });
      dispatchR1();
      const manifest = await fetchManifest(R1);
      const sig = await fetchSignature(R1);
      expect(manifest.status).toBe(200);
      expect(manifest.headers['content-type']).toBe('application/json');
      expect(sig.status).toBe(200);
      expect(sig.headers['content-type']).toBe('application/octet-stream');
      expect(sig.bytes).toHaveLength(64);
      const held = cp!.manifest(R1);
      expect(manifest.bytes.equals(held!.bytes)).toBe(true);
      expect(sig.bytes.equals(held!.signature)).toBe(true);
      // Pretty-printed: only JCS makes these bytes match the signature.
      expect(manifest.text).toContain('\n  "hostSet": [');

      const verified = verifyManifest(manifest.bytes, sig.bytes, trust, new Date());
      if (!verified.ok) throw new Error(verified.detail);
      expect(verified.keySlot).toBe('current');
      expect(verified.manifest.hostSet).toEqual([{ hostname: 'web-01', waveIndex: 0, targetClosure: CLOSURE }]);
      expect(checkDispatch(verified.manifest, { rolloutId: R1, hostname: 'web-01', targetClosure: CLOSURE })).toEqual({ ok: true });
      expect(JSON.parse((await poll(0)).text)).toMatchObject({ rollout_id: R1, target_closure: CLOSURE });
    });

    it('signs one manifest per rollout naming every host dispatched, again only when that changes it', async () => {
      await start({ signer });
      dispatchR1('web-01');
      const first = cp!.manifest(R1);
      dispatchR1('web-01');
      expect(cp!.manifest(R1)).toBe(first);
      dispatchR1('db-02');
      expect(await judge(R1, 'web-01')).toEqual({ ok: 'current' });
      expect(await judge(R1, 'db-02')).toEqual({ ok: 'current' });
      dispatchR1('web-01', OTHER_TARGET);
      expect(await judge(R1, 'web-01', OTHER_TARGET)).toEqual({ ok: 'current' });
      expect(await judge(R1, 'web-01', CLOSURE)).toEqual({ dispatch: 'wrong-target' });
    });

    it('serves a manifest to any fleet member, whatever hosts it names', async () => {
      await start({ signer });
      dispatchR1('web-01');
      expect((await fetchManifest(R1, pki.otherMachine)).status).toBe(200);
      expect(cp!.manifestFetches[0]).toMatchObject({ machineId: 'db-02', rolloutId: R1, status: 200 });
    });

    it('holds no manifest for a rollout id the signer cannot sign or a path cannot carry, and still queues the order', async () => {
      await start({ signer });
      cp!.queueDispatch('web-01', { rollout_id: 'no-at-sign', target_closure: CLOSURE, soak_due_at: '2026-11-28T12:10:00Z' });
      cp!.queueDispatch('web-01', { rollout_id: 'stable@a/../b', target_closure: CLOSURE, soak_due_at: '2026-11-28T12:10:00Z' });
      expect(cp!.queuedDispatches('web-01')).toBe(2);
      expect((await fetchManifest('no-at-sign')).status).toBe(404);
      expect(cp!.manifest('stable@a/../b')).toBeNull();
      expect((await fetchManifest('stable@unknown')).status).toBe(404);
    });

    const expected: Record<ManifestVariant, Awaited<ReturnType<typeof judge>>> = {
      good: { ok: 'current' },
      'previous-key': { ok: 'previous' },
      tampered: { verify: 'bad-signature' satisfies VerifyFailure },
      'unknown-key': { verify: 'bad-signature' },
      stale: { verify: 'stale' },
      future: { verify: 'from-the-future' },
      'before-reject-before': { verify: 'signed-before-reject-before' },
      'other-host': { dispatch: 'not-for-this-host' satisfies DispatchFailure },
      'wrong-target': { dispatch: 'wrong-target' },
      'other-rollout': { dispatch: 'wrong-rollout' },
      'no-signature': { http: [200, 404] },
      'short-signature': { verify: 'malformed-signature' },
      'server-error': { http: [500, 500] },
      missing: { http: [404, 404] },
    };

    it.each(MANIFEST_VARIANTS.map((v) => [v, expected[v]] as const))('serves the %s variant, judged %j', async (variant, outcome) => {
      await start({ signer });
      // Set before the dispatch on one rollout, after it on another: both orders work.
      cp!.setManifest(R1, variant);
      dispatchR1();
      cp!.queueDispatch('web-01', { rollout_id: R2, target_closure: CLOSURE, soak_due_at: '2026-11-28T12:10:00Z' });
      cp!.setManifest(R2, variant);
      expect(await judge(R1)).toEqual(outcome);
      expect(await judge(R2)).toEqual(outcome);
    });

    it('goes back to a good manifest when told', async () => {
      await start({ signer });
      dispatchR1();
      cp!.setManifest(R1, 'unknown-key');
      expect(await judge()).toEqual({ verify: 'bad-signature' });
      cp!.setManifest(R1, 'good');
      expect(await judge()).toEqual({ ok: 'current' });
    });

    it('serves exact bytes and signature when given a pair, whatever is dispatched', async () => {
      await start({ signer });
      const p256 = new ManifestSigner({ current: 'ecdsa-p256', previous: null });
      const signed = p256.sign({ rolloutId: R1, hosts: [{ hostname: 'web-01', targetClosure: CLOSURE }], signedAt: new Date() });
      cp!.setManifest(R1, { bytes: signed.bytes, signature: toDer(signed.signature) });
      dispatchR1('web-01', OTHER_TARGET);
      const sig = await fetchSignature(R1);
      expect(sig.bytes.equals(toDer(signed.signature))).toBe(true);
      expect((await fetchManifest(R1)).bytes.equals(signed.bytes)).toBe(true);
      expect(await judge()).toEqual({ verify: 'malformed-signature' });
    });

    it('refuses variants the signer cannot make', async () => {
      await start({ signer: new ManifestSigner({ previous: null }) });
      expect(() => cp!.setManifest(R1, 'previous-key')).toThrow('no previous key');
      expect(() => cp!.setManifest(R1, 'before-reject-before')).toThrow('without rejectBefore');
    });

    it('logs each fetch with its rollout id, so a test can count them', async () => {
      await start({ signer });
      dispatchR1();
      cp!.queueDispatch('web-01', { rollout_id: R2, target_closure: CLOSURE, soak_due_at: '2026-11-28T12:10:00Z' });
      await fetchManifest(R1);
      await fetchSignature(R1);
      await fetchManifest(R1);
      await send({ path: `/v1/rollouts/${R2}` });
      expect(cp!.manifestFetches.map((r) => [r.rolloutId, r.machineId, r.status])).toEqual([
        [R1, 'web-01', 200],
        [R1, 'web-01', 200],
        [R2, 'web-01', 200],
      ]);
      expect(cp!.signatureFetches.map((r) => [r.rolloutId, r.status])).toEqual([[R1, 200]]);
      expect(cp!.manifestFetches.filter((r) => r.rolloutId === R1)).toHaveLength(2);
      expect(cp!.requests.filter((r) => r.route === 'manifest' || r.route === 'signature')).toHaveLength(4);
    });

    it('checks method, protocol header and path like the other routes, and takes per-route scripts', async () => {
      await start({ signer });
      dispatchR1();
      const wrong = await send({ path: `/v1/rollouts/${R1}`, body: {} });
      expect(wrong.status).toBe(405);
      expect(wrong.headers.allow).toBe('GET');
      expect((await send({ path: `/v1/rollouts/${R1}/sig`, protocol: '2' })).status).toBe(426);
      expect((await send({ path: `/v1/rollouts/${R1}`, protocol: null })).status).toBe(400);
      for (const bad of [`/v1/rollouts/${R1}/other`, `/v1/rollouts/${R1}/sig/x`, '/v1/rollouts/', '/v1/rollouts/%E0%A4%A']) {
        const res = await send({ path: bad });
        expect(res.status).toBe(404);
        expect(JSON.parse(res.text)).toMatchObject({ error: 'not_found' });
      }
      cp!.respondNext('signature', { status: 503, retryAfterSecs: 2 });
      const busy = await fetchSignature(R1);
      expect(busy.status).toBe(503);
      expect(busy.headers['retry-after']).toBe('2');
      expect((await fetchSignature(R1)).status).toBe(200);
      cp!.setDefault('manifest', { cutAfterBytes: 10 });
      expect(await fetchManifest(R1).catch((err: unknown) => err)).toMatchObject({ code: 'ECONNRESET' });
      cp!.setDefault('manifest', null);
      expect((await fetchManifest(R1)).status).toBe(200);
      expect(cp!.signatureFetches.map((r) => [r.status, r.scripted])).toEqual([
        [426, false],
        [503, true],
        [200, false],
      ]);
    });
  });

  describe('waitFor', () => {
    it('rejects with the description when the probe stays false', async () => {
      await start();
      await expect(cp!.waitFor(() => false, 50, 'a heartbeat that never comes')).rejects.toThrow(
        /timed out after 50 ms: a heartbeat that never comes/,
      );
    });

    it('resolves with the first truthy value', async () => {
      await start();
      const seen = cp!.waitFor(() => cp!.heartbeats[0]);
      await heartbeat();
      await expect(seen).resolves.toMatchObject({ machineId: 'web-01' });
    });
  });
});
