import { readFileSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { ActivationService } from '../src/activation/activation.service';
import { AdvanceTicker } from '../src/advance/advance.ticker';
import { statusContractProblems } from '../src/admin/status.contract';
import { listenAdmin } from '../src/agent.app';
import { DispatchWorker } from '../src/dispatch/dispatch.worker';
import { COMPONENT_NAMES, type ComponentName } from '../src/health/component-health';
import { HeartbeatService } from '../src/heartbeat/heartbeat.service';
import { DrainerService } from '../src/outbound/drainer.service';
import { EVENT_LOG_FS } from '../src/outbound/outbound.constants';
import { HEADER_REPLAY_FROM } from '../src/protocol/protocol.constants';
import { RecoveryService } from '../src/recovery/recovery.service';
import { EventsNotDurableError, ReducerService } from '../src/reducer/reducer.service';
import { type AgentUnderTest, buildAgent, fakeClosure, makeWorld, type World } from './support/agent-harness';
import { FaultyFs } from './support/faulty-log-fs';

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const ROLLOUT = 'stable@a1b2c3d4';
const TARGET = fakeClosure('web-01-26.05', 'c');
const PREVIOUS = fakeClosure('web-01-26.04', 'b');

interface Answer {
  status: number;
  contentType: string | undefined;
  text: string;
  json: unknown;
}

function get(target: { port: number } | { socketPath: string }, path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const where = 'port' in target ? { host: '127.0.0.1', port: target.port } : { socketPath: target.socketPath };
    // No keep-alive: the test must not hold a socket that app.close() would wait on.
    const req = http.request({ ...where, path, method: 'GET', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text) as unknown;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function portOf(agent: AgentUnderTest): number {
  return ((agent.app.getHttpServer() as http.Server).address() as AddressInfo).port;
}

type Json = Record<string, unknown>;

/** Every key of the /status contract, each present with a value that is not undefined, and the document conforms to its type. */
function expectContractKeys(body: Json): void {
  // The typed contract (src/admin/status.contract.ts): every key and value, and no key it does not declare.
  expect(statusContractProblems(body)).toEqual([]);
  for (const key of [
    'machineId',
    'agentVersion',
    'controlPlaneUrl',
    'pid',
    'startedAt',
    'uptimeSecs',
    'currentClosure',
    'heartbeat',
    'recovery',
    'rollouts',
  ]) {
    expect(Object.keys(body)).toContain(key);
  }
  const hb = body.heartbeat as Json;
  for (const key of [
    'intervalSecs',
    'lastAttemptAt',
    'lastSuccessAt',
    'lastError',
    'consecutiveFailures',
    'nextDueAt',
    'lastReplayFrom',
    'clockSkewSecs',
    'recentOutcomes',
  ]) {
    expect(Object.keys(hb)).toContain(key);
  }
  const rec = body.recovery as Json;
  for (const key of ['completedAt', 'reachedControlPlane', 'snapshotsApplied']) {
    expect(Object.keys(rec)).toContain(key);
  }
  for (const r of body.rollouts as Json[]) {
    expect(Object.keys(r).sort()).toEqual([
      'channel',
      'closureAfter',
      'closureBefore',
      'lastDeliveredSeq',
      'lastEventSeq',
      'rolloutId',
      'since',
      'soakDueAt',
      'state',
      'targetClosure',
      'transitions',
    ]);
  }
  expect(Object.keys(body)).toEqual(expect.arrayContaining(['outbound', 'activation']));
  const outbound = body.outbound as Json;
  for (const key of ['pending', 'delivered', 'refused', 'oldestPendingAgeSecs', 'lastDeliveredAt', 'deliveryPausedReason', 'replay']) {
    expect(Object.keys(outbound)).toContain(key);
  }
  expect(Object.keys(outbound.replay as Json).sort()).toEqual(['fromSeq', 'missing', 'resent', 'rolloutId', 'running']);
  for (const key of ['backend', 'running', 'lastResult', 'preflight']) {
    expect(Object.keys(body.activation as Json)).toContain(key);
  }
  expect(Object.keys(hb)).toContain('failingSince');
  expect(Object.keys(body.eventLog as Json).sort()).toEqual([
    'clearedBy',
    'failingSince',
    'failuresInStreak',
    'failuresTotal',
    'lastError',
    'path',
    'refusingWrites',
  ]);
  for (const key of [
    'polling',
    'lastPollAt',
    'lastOutcome',
    'consecutiveFailures',
    'failingSince',
    'lastError',
    'lastErrorAt',
    'lastOrder',
    'heldOrder',
  ]) {
    expect(Object.keys(body.dispatch as Json)).toContain(key);
  }
  // components: exactly the typed set, each { state, detail, since } and nothing else.
  const components = body.components as Record<ComponentName, Json>;
  expect(Object.keys(components).sort()).toEqual([...COMPONENT_NAMES].sort());
  for (const name of COMPONENT_NAMES) {
    const c = components[name];
    expect(Object.keys(c).sort()).toEqual(['detail', 'since', 'state']);
    expect(['ok', 'warning', 'failing']).toContain(c.state);
    expect(typeof c.detail).toBe('string');
    expect(c.since === null || (typeof c.since === 'string' && RFC3339.test(c.since))).toBe(true);
  }
}

describe('GET /status on the real module graph, over HTTP', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterEach(async () => {
    await agent?.close();
    agent = null;
  });
  afterAll(async () => {
    await world.close();
  });

  it('answers with every contract key, RFC 3339 times, and the rollout of a bootstrap snapshot', async () => {
    world.cp.setBootstrap(world.pki.machineId, [
      {
        rolloutId: ROLLOUT,
        hostname: world.pki.machineId,
        channel: 'stable',
        state: 'Soaking',
        targetClosure: TARGET,
        currentClosureAtDispatch: PREVIOUS,
        currentClosure: TARGET,
        dispatchedAt: '2026-11-28T11:50:00Z',
        dispatchAckedAt: '2026-11-28T11:50:01Z',
        soakDueAt: '2026-11-28T12:10:00Z',
        lastEventSeq: 4,
      },
    ]);
    try {
      agent = await buildAgent(world);
      await agent.app.get(RecoveryService).whenComplete();
      await listenAdmin(agent.app, { kind: 'tcp', host: '127.0.0.1', port: 0 });

      const answer = await get({ port: portOf(agent) }, '/status');

      expect(answer.status).toBe(200);
      expect(answer.contentType).toMatch(/^application\/json/);
      const body = answer.json as Json;
      expectContractKeys(body);
      expect(body).toMatchObject({
        machineId: world.pki.machineId,
        agentVersion: expect.stringMatching(/^\d+\.\d+\.\d+/),
        controlPlaneUrl: world.cp.url,
        pid: process.pid,
        startedAt: agent.clock.now().toISOString(),
        uptimeSecs: 0,
        currentClosure: fakeClosure('web-01-26.05'),
        recovery: { completedAt: agent.clock.now().toISOString(), reachedControlPlane: true, snapshotsApplied: 1 },
        rollouts: [{ rolloutId: ROLLOUT, channel: 'stable', state: 'Soaking', targetClosure: TARGET, lastEventSeq: 4 }],
      });
      const hb = body.heartbeat as Json;
      expect(hb).toMatchObject({
        intervalSecs: 60,
        lastAttemptAt: null,
        lastSuccessAt: agent.clock.now().toISOString(),
        lastError: null,
        consecutiveFailures: 0,
        nextDueAt: new Date(agent.clock.now().getTime() + 60_000).toISOString(),
        lastReplayFrom: null,
      });
      // The dev CP's Date header is real time, the agent's clock is fake: only the type is certain.
      expect(typeof hb.clockSkewSecs).toBe('number');
      // Every component says what it checked.
      expect(body.components).toEqual({
        eventLog: { state: 'ok', detail: expect.stringMatching(/^appends work; \d+ event\(s\), \d+ bytes$/), since: null },
        delivery: { state: 'ok', detail: 'nothing pending', since: null },
        dispatchPoll: { state: 'ok', detail: expect.stringMatching(/^(waiting for a dispatch|not polling yet)/), since: null },
        activationBackend: { state: 'ok', detail: 'symlink backend: everything it runs is there (checked at start)', since: null },
        // The fake clock stands before the freshly issued certificate's notBefore: not yet valid, by this clock.
        identity: { state: 'warning', detail: expect.stringMatching(/^client certificate CN \S+ is not valid before /), since: null },
        heartbeat: { state: 'ok', detail: 'last heartbeat 0 s ago', since: null },
      });
      for (const t of [body.startedAt, hb.lastSuccessAt, hb.nextDueAt, (body.recovery as Json).completedAt]) {
        expect(t).toMatch(RFC3339);
      }
      // Every periodic worker by name, as the job runtime sees it: the heartbeat's decorated tick included.
      const jobs = body.jobs as Json[];
      expect(jobs.map((j) => j.name)).toEqual(
        expect.arrayContaining(['heartbeat', 'dispatch-poll', 'outbound-drain', 'advance-tick', 'identity-poll']),
      );
      expect(jobs.find((j) => j.name === 'heartbeat')).toMatchObject({ consecutiveFailures: 0, failingSince: null });
      expect(jobs.find((j) => j.name === 'outbound-write-probe')).toMatchObject({ state: 'disabled' });

      // No key material: not in PEM form, not the key file's bytes.
      const keyPem = readFileSync(world.pki.client.keyPath, 'utf8');
      const keyBody = keyPem
        .split('\n')
        .filter((l) => l !== '' && !l.startsWith('-----'))
        .join('');
      for (const secret of ['PRIVATE KEY', 'BEGIN CERTIFICATE', keyBody, keyBody.slice(0, 24)]) {
        expect(answer.text).not.toContain(secret);
      }
    } finally {
      world.cp.setBootstrap(world.pki.machineId, []);
    }
  });

  it('reports what is not known yet as null, never missing: a handshake still waiting, no current-system link', async () => {
    // The boot heartbeat gets no answer until the agent closes.
    world.cp.respondNext('heartbeat', { stall: true });
    agent = await buildAgent(world, { currentSystemPath: join(world.dir, 'no-such-link') });
    await world.cp.waitFor(() => world.cp.heartbeats.some((h) => h.scripted && h.status === null), 5000, 'the stalled boot heartbeat');
    await listenAdmin(agent.app, { kind: 'tcp', host: '127.0.0.1', port: 0 });

    const answer = await get({ port: portOf(agent) }, '/status');

    expect(answer.status).toBe(200);
    const body = answer.json as Json;
    expectContractKeys(body);
    expect(body.currentClosure).toBeNull();
    expect(body.rollouts).toEqual([]);
    expect(body.heartbeat).toMatchObject({
      lastAttemptAt: null,
      lastSuccessAt: null,
      lastError: null,
      consecutiveFailures: 0,
      nextDueAt: null,
      lastReplayFrom: null,
      clockSkewSecs: null,
    });
    expect(body.recovery).toEqual({ completedAt: null, reachedControlPlane: null, snapshotsApplied: 0 });
  });

  it('reports a control plane that could not be reached: reachedControlPlane false, then lastError, then recovery', async () => {
    world.cp.respondNext('heartbeat', { status: 503, retryAfterSecs: 30, body: { error: 'starting' } });
    agent = await buildAgent(world);
    await agent.app.get(RecoveryService).whenComplete();
    await listenAdmin(agent.app, { kind: 'tcp', host: '127.0.0.1', port: 0 });
    const port = portOf(agent);
    const heartbeat = agent.app.get(HeartbeatService);

    let body = (await get({ port }, '/status')).json as Json;
    expectContractKeys(body);
    expect(body.recovery).toMatchObject({ reachedControlPlane: false, snapshotsApplied: 0, completedAt: expect.stringMatching(RFC3339) });
    // Retry-After: 30 outweighs the 5 s backoff.
    expect(body.heartbeat).toMatchObject({
      lastSuccessAt: null,
      consecutiveFailures: 1,
      nextDueAt: new Date(agent.clock.now().getTime() + 30_000).toISOString(),
    });

    // The first steady heartbeat fails too.
    world.cp.respondNext('heartbeat', { status: 503, body: { error: 'starting' } });
    agent.clock.advance(30_000);
    heartbeat.tick();
    await heartbeat.settled();
    body = (await get({ port }, '/status')).json as Json;
    const failedAt = agent.clock.now().toISOString();
    expect(body.heartbeat).toMatchObject({
      lastAttemptAt: failedAt,
      lastSuccessAt: null,
      lastError: { kind: 'http-status', message: expect.stringContaining('503'), at: failedAt },
      consecutiveFailures: 2,
    });
    expect((body.heartbeat as Json).nextDueAt).toMatch(RFC3339);

    // The CP answers again.
    agent.clock.advance(60_000);
    heartbeat.tick();
    await heartbeat.settled();
    body = (await get({ port }, '/status')).json as Json;
    expect(body.heartbeat).toMatchObject({
      lastSuccessAt: agent.clock.now().toISOString(),
      consecutiveFailures: 0,
      nextDueAt: new Date(agent.clock.now().getTime() + 60_000).toISOString(),
    });
  });

  it('lists the rollouts the reducer holds with their last seq; a target closure not known is null', async () => {
    agent = await buildAgent(world, { init: false });
    const reducer = agent.app.get(ReducerService);
    // As rebuilt from an event log that stored no meta: the target is unknown ('').
    reducer.restore({
      rollouts: {
        'beta@0badc0de': {
          rolloutId: 'beta@0badc0de',
          channel: 'beta',
          state: 'Deferred',
          targetClosure: '',
          dispatchedAt: '2026-11-28T11:00:00.000Z',
          lastEventSeq: 2,
          probes: {},
        },
      },
    });
    await agent.app.init();
    await agent.app.get(RecoveryService).whenComplete();
    await reducer.submit({
      type: 'Activate',
      rolloutId: 'canary@e5f6a7b8',
      targetClosure: TARGET,
      soakDueAt: '2026-11-28T12:30:00.000Z',
      currentClosure: PREVIOUS,
      dispatchedAt: '2026-11-28T12:00:00.000Z',
    });
    // The symlink backend activates for real: started, then completed.
    await agent.app.get(ActivationService).idle();
    await reducer.drain();
    await listenAdmin(agent.app, { kind: 'tcp', host: '127.0.0.1', port: 0 });

    const answer = await get({ port: portOf(agent) }, '/status');

    expect(answer.json).toMatchObject({
      rollouts: [
        { rolloutId: 'beta@0badc0de', channel: 'beta', state: 'Deferred', targetClosure: null, lastEventSeq: 2 },
        { rolloutId: 'canary@e5f6a7b8', channel: 'canary', state: 'Soaking', targetClosure: TARGET, lastEventSeq: 3 },
      ],
    });
    expect(answer.text).toContain('"targetClosure":null');
  });

  it('answers an unknown path with 404 and a JSON body', async () => {
    agent = await buildAgent(world);
    await listenAdmin(agent.app, { kind: 'tcp', host: '127.0.0.1', port: 0 });

    const answer = await get({ port: portOf(agent) }, '/no-such-thing');

    expect(answer.status).toBe(404);
    expect(answer.contentType).toMatch(/^application\/json/);
    expect(answer.json).toMatchObject({ statusCode: 404 });
  });

  it('serves /status on a unix socket created with mode 0600', async () => {
    const socketPath = join(world.dir, 'admin.sock');
    agent = await buildAgent(world);
    await agent.app.get(RecoveryService).whenComplete();
    await listenAdmin(agent.app, { kind: 'unix', path: socketPath });

    expect(statSync(socketPath).isSocket()).toBe(true);
    expect(statSync(socketPath).mode & 0o777).toBe(0o600);
    const answer = await get({ socketPath }, '/status');
    expect(answer.status).toBe(200);
    const body = answer.json as Json;
    expectContractKeys(body);
    expect(body).toMatchObject({ machineId: world.pki.machineId, recovery: { reachedControlPlane: true } });
  });
});

describe('GET /status with every section in use conforms to the typed contract', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;

  beforeAll(async () => {
    // A poll the CP holds returns 204 after 200 ms: the dispatch loop turns quickly.
    world = await makeWorld({ dispatchWaitCapMs: 200 });
  });
  afterAll(async () => {
    await agent?.close();
    await world.close();
  });

  it('after a dispatch, a refused re-dispatch, a failed heartbeat asking for a replay, a failed event-log write and failing polls', async () => {
    const fs = new FaultyFs();
    // One probe, so that the probes section holds a runner and a judged rollout.
    const healthChecks = join(world.dir, 'every-section-health-checks.json');
    writeFileSync(healthChecks, JSON.stringify({ smoke: { kind: 'exec', command: ['/bin/true'], intervalSeconds: 3600 } }));
    agent = await buildAgent(world, {
      extra: ['--health-checks-file', healthChecks],
      customize: (b) => b.overrideProvider(EVENT_LOG_FS).useValue(fs),
    });
    const a = agent;
    await a.app.get(RecoveryService).whenComplete();
    await listenAdmin(a.app, { kind: 'tcp', host: '127.0.0.1', port: 0 });
    const reducer = a.app.get(ReducerService);
    const worker = a.app.get(DispatchWorker);
    const machine = world.pki.machineId;

    // A dispatch applied by the symlink backend, then the same rollout again: the reducer refuses it.
    world.cp.queueDispatch(machine, { rollout_id: ROLLOUT, target_closure: TARGET, soak_due_at: '2026-11-28T12:30:00.000Z' });
    await world.cp.waitFor(
      () => reducer.current().rollouts[ROLLOUT]?.probes.smoke?.lastStatus === 'pass',
      5_000,
      'the rollout Soaking, its probe passing',
    );
    await a.app.get(ActivationService).idle();
    world.cp.queueDispatch(machine, { rollout_id: ROLLOUT, target_closure: TARGET, soak_due_at: '2026-11-28T12:30:00.000Z' });
    await world.cp.waitFor(() => worker.status().lastOrder?.outcome === 'rejected', 5_000, 'the re-dispatch rejected');

    // A steady heartbeat answered 503 that asks for a replay (a CP restoring its database).
    world.cp.respondNext('heartbeat', { status: 503, headers: { [HEADER_REPLAY_FROM]: '0' }, body: { error: 'restoring' } });
    const heartbeat = a.app.get(HeartbeatService);
    a.clock.advance(60_000);
    heartbeat.tick();
    await heartbeat.settled();
    await a.app.get(DrainerService).idle();

    // One append the disk refuses.
    fs.appendError = { code: 'EIO', when: () => true };
    await expect(
      reducer.submit({
        type: 'Activate',
        rolloutId: 'canary@e5f6a7b8',
        targetClosure: TARGET,
        soakDueAt: '2026-11-28T12:30:00.000Z',
        currentClosure: PREVIOUS,
        dispatchedAt: '2026-11-28T12:00:00.000Z',
      }),
    ).rejects.toBeInstanceOf(EventsNotDurableError);
    fs.appendError = null;

    // Polls failing: the next one waits out a backoff.
    world.cp.setDefault('dispatch', { status: 500, body: { error: 'internal' } });
    try {
      await world.cp.waitFor(() => worker.status().nextPollAt ?? undefined, 5_000, 'a failed poll backing off');
      const answer = await get({ port: portOf(a) }, '/status');

      expect(answer.status).toBe(200);
      const body = answer.json as Json;
      expectContractKeys(body);
      // What this document has that the others do not, each in its contracted shape.
      expect(body.heartbeat).toMatchObject({
        lastError: { kind: 'http-status', message: expect.stringContaining('503'), at: expect.stringMatching(RFC3339) },
        lastReplayFrom: { value: '0', source: 'heartbeat' },
      });
      expect(body.eventLog).toMatchObject({ lastError: { code: 'EIO', cause: expect.any(String), message: expect.any(String) } });
      expect(body.dispatch).toMatchObject({
        lastOutcome: 'failed',
        lastError: expect.stringContaining('HTTP 500'),
        nextPollAt: expect.stringMatching(RFC3339),
        lastOrder: {
          rolloutId: ROLLOUT,
          targetClosure: TARGET,
          outcome: 'rejected',
          detail: expect.stringContaining('illegal in state Soaking'),
        },
      });
      expect((body.outbound as Json).replay).toMatchObject({ rolloutId: ROLLOUT, fromSeq: 0 });
      expect(body.activation).toMatchObject({
        backend: 'symlink',
        lastResult: { rolloutId: ROLLOUT, kind: 'switch', outcome: 'completed' },
      });
      expect(body.certificate).toMatchObject({ machineId: machine });
      // DispatchAck, ActivationStarted, ActivationCompleted, ProbeTopologyDeclared, ProbeObservedFirst, ProbeResult.
      expect(body.rollouts).toEqual([expect.objectContaining({ rolloutId: ROLLOUT, state: 'Soaking', lastEventSeq: 6 })]);
      expect(body.probes).toMatchObject({
        healthChecksFile: { path: healthChecks, state: 'loaded', problems: [] },
        activeRollout: ROLLOUT,
        runners: [{ name: 'smoke', kind: 'exec', mode: 'enforce', runs: 1, lastRunResult: 'pass' }],
        rollouts: [
          {
            rolloutId: ROLLOUT,
            state: 'Soaking',
            probesDeclared: true,
            probes: [{ name: 'smoke', lastResult: 'pass', since: expect.stringMatching(RFC3339) }],
            waitingFor: [expect.stringMatching(/^soak ends in /)],
          },
        ],
      });
    } finally {
      world.cp.setDefault('dispatch', null);
    }
  });
});

describe('GET /status through a rollout: each transition with its time, and the recent heartbeats', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;

  beforeAll(async () => {
    // A poll the CP holds returns 204 after 200 ms: the dispatch loop turns quickly.
    world = await makeWorld({ dispatchWaitCapMs: 200 });
  });
  afterAll(async () => {
    await agent?.close();
    await world.close();
  });

  it('from dispatch to Converged, with a heartbeat the CP answered 503 on the way', async () => {
    // No health checks: the rollout is judged by its soak alone.
    agent = await buildAgent(world, { extra: ['--health-checks-file', join(world.dir, 'no-health-checks.json')] });
    const a = agent;
    await a.app.get(RecoveryService).whenComplete();
    await listenAdmin(a.app, { kind: 'tcp', host: '127.0.0.1', port: 0 });
    const port = portOf(a);
    const reducer = a.app.get(ReducerService);
    const heartbeat = a.app.get(HeartbeatService);
    const bootAt = a.clock.now().toISOString();
    const before = fakeClosure('web-01-26.05');
    const soakDueAt = '2026-11-28T12:30:00.000Z';

    world.cp.queueDispatch(world.pki.machineId, { rollout_id: ROLLOUT, target_closure: TARGET, soak_due_at: soakDueAt });
    await world.cp.waitFor(
      () => reducer.current().rollouts[ROLLOUT]?.probesDeclaredAt,
      5_000,
      'the rollout Soaking, its (empty) probe topology declared',
    );
    await a.app.get(ActivationService).idle();
    await a.app.get(DrainerService).idle();
    const soaking = reducer.current().rollouts[ROLLOUT];

    let body = (await get({ port }, '/status')).json as Json;
    expectContractKeys(body);
    expect(body.rollouts).toEqual([
      {
        rolloutId: ROLLOUT,
        channel: 'stable',
        state: 'Soaking',
        targetClosure: TARGET,
        lastEventSeq: soaking.lastEventSeq,
        lastDeliveredSeq: soaking.lastEventSeq,
        since: soaking.activationCompletedAt,
        soakDueAt,
        closureBefore: before,
        closureAfter: TARGET,
        transitions: [
          { from: null, to: 'Activating', at: soaking.dispatchAckedAt, input: 'Activate' },
          { from: 'Activating', to: 'Soaking', at: soaking.activationCompletedAt, input: 'ActivationCompleted' },
        ],
      },
    ]);

    // A steady heartbeat the CP answers 503, then one it answers.
    world.cp.respondNext('heartbeat', { status: 503, body: { error: 'restoring' } });
    a.clock.advance(60_000);
    heartbeat.tick();
    await heartbeat.settled();
    const failedAt = a.clock.now().toISOString();
    a.clock.advance(Date.parse(heartbeat.status().nextDueAt!) - a.clock.now().getTime());
    heartbeat.tick();
    await heartbeat.settled();
    const okAt = a.clock.now().toISOString();

    // Past the soak's end, the next tick converges it.
    a.clock.advance(Date.parse(soakDueAt) - a.clock.now().getTime() + 1_000);
    await a.app.get(AdvanceTicker).tick();
    await reducer.drain();
    const convergedAt = a.clock.now().toISOString();
    expect(reducer.current().rollouts[ROLLOUT]).toMatchObject({ state: 'Converged', convergedAt });

    body = (await get({ port }, '/status')).json as Json;
    expectContractKeys(body);
    expect(body.rollouts).toEqual([
      expect.objectContaining({
        rolloutId: ROLLOUT,
        state: 'Converged',
        since: convergedAt,
        // Only while Soaking.
        soakDueAt: null,
        closureBefore: before,
        closureAfter: TARGET,
        transitions: [
          { from: null, to: 'Activating', at: soaking.dispatchAckedAt, input: 'Activate' },
          { from: 'Activating', to: 'Soaking', at: soaking.activationCompletedAt, input: 'ActivationCompleted' },
          { from: 'Soaking', to: 'Converged', at: convergedAt, input: 'Tick' },
        ],
      }),
    ]);
    for (const t of (body.rollouts as Json[])[0].transitions as Json[]) expect(t.at).toMatch(RFC3339);
    expect((body.heartbeat as Json).recentOutcomes).toEqual([
      { at: bootAt, source: 'boot-recovery', result: 'ok', httpStatus: 200, latencyMs: expect.any(Number), error: null },
      {
        at: failedAt,
        source: 'heartbeat',
        result: 'http-status',
        httpStatus: 503,
        latencyMs: expect.any(Number),
        error: 'HTTP 503: {"error":"restoring"}',
      },
      { at: okAt, source: 'heartbeat', result: 'ok', httpStatus: 200, latencyMs: expect.any(Number), error: null },
    ]);
  });
});
