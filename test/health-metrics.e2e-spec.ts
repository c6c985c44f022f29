import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SchedulerRegistry } from '@nestjs/schedule';
import { DevControlPlane } from '../dev/control-plane';
import { ActivationService } from '../src/activation/activation.service';
import { listenAdmin } from '../src/agent.app';
import { AGENT_CONFIG } from '../src/config/config.constants';
import { HealthService } from '../src/health/health.service';
import { HEARTBEAT_INTERVAL_NAME } from '../src/heartbeat/heartbeat.constants';
import { HeartbeatService } from '../src/heartbeat/heartbeat.service';
import { DrainerService } from '../src/outbound/drainer.service';
import { EventLogService } from '../src/outbound/event-log.service';
import { OutboundPorts } from '../src/outbound/outbound.ports';
import { ROLLOUT_STATES } from '../src/protocol/rollout';
import { RecoveryService } from '../src/recovery/recovery.service';
import type { EffectOf } from '../src/reducer/reducer.ports';
import { ReducerService } from '../src/reducer/reducer.service';
import type { ReducerInput } from '../src/reducer/reducer.types';
import { type AgentUnderTest, type BuildOptions, buildAgent, fakeClosure, makeWorld, type World } from './support/agent-harness';
import { Scrape } from './support/prometheus';

const P = 'nixfleet_agent_';
const INTERVAL_MS = 60_000;
const BOOT_CLOSURE = fakeClosure('web-01-26.05');
const TARGET = fakeClosure('web-01-26.11', 'b');
const ROLLOUT = 'stable@a1b2c3d4';

type Json = Record<string, unknown>;

const heartbeats = (m: Scrape, result: string): number => m.value(`${P}heartbeats_total`, { result });

interface Answer {
  status: number;
  contentType: string | undefined;
  text: string;
  json: Json | undefined;
}

function get(port: number, path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    // No keep-alive: the test must not hold a socket that app.close() would wait on.
    const req = http.request({ host: '127.0.0.1', port, path, method: 'GET', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: Json | undefined;
        try {
          json = JSON.parse(text) as Json;
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

/** A gate in front of the event log's append: shut, the log has stopped answering. */
class Gate {
  private release: (() => void) | null = null;
  readonly opened = new Promise<void>((resolve) => {
    this.release = resolve;
  });
  private notifyEntered: (() => void) | null = null;
  /** Resolves once an emit waits at the gate. */
  readonly entered = new Promise<void>((resolve) => {
    this.notifyEntered = resolve;
  });

  async pass(): Promise<void> {
    this.notifyEntered?.();
    await this.opened;
  }

  open(): void {
    this.release?.();
  }
}

/** The real outbound ports (replay included), with every emit held at the gate first. */
class GatedOutboundPorts extends OutboundPorts {
  constructor(
    private readonly gate: Gate,
    ...deps: ConstructorParameters<typeof OutboundPorts>
  ) {
    super(...deps);
  }

  override async emit(effects: readonly EffectOf<'EmitEvent'>[]): Promise<void> {
    await this.gate.pass();
    await super.emit(effects);
  }
}

describe('/healthz, /readyz and /metrics on the real module graph, against the dev CP over mutual TLS', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;
  let port = 0;
  /** A CP started again on the world's port; the world closes only the one it started. */
  let revived: DevControlPlane | null = null;

  beforeEach(async () => {
    world = await makeWorld();
  });
  afterEach(async () => {
    await agent?.close();
    agent = null;
    await revived?.close();
    revived = null;
    await world.close();
  });

  /** Builds the agent, waits for the boot handshake (the heartbeat job then starts) and opens the admin listener. */
  async function start(options: BuildOptions = {}): Promise<AgentUnderTest> {
    agent = await buildAgent(world, { ...options, extra: ['--heartbeat-interval', String(INTERVAL_MS / 1000), ...(options.extra ?? [])] });
    await agent.app.get(RecoveryService).whenComplete();
    await listenAdmin(agent.app, { kind: 'tcp', host: '127.0.0.1', port: 0 });
    port = ((agent.app.getHttpServer() as http.Server).address() as AddressInfo).port;
    return agent;
  }

  /** Moves the fake clock to the next due heartbeat and runs it to its end. */
  async function beat(a: AgentUnderTest): Promise<void> {
    const hb = a.app.get(HeartbeatService);
    const due = hb.progress().nextDueMono;
    if (due === null) throw new Error('the heartbeat job has not started');
    a.clock.advance(Math.max(0, due - a.clock.monotonicMs()));
    hb.tick();
    await hb.settled();
  }

  async function scrape(): Promise<Scrape> {
    const answer = await get(port, '/metrics');
    expect(answer.status).toBe(200);
    return new Scrape(answer.text);
  }

  const answered = (status: number): number => world.cp.heartbeats.filter((h) => h.status === status).length;

  describe('GET /healthz', () => {
    it('answers 200 with every check while the agent makes progress', async () => {
      await start();

      const answer = await get(port, '/healthz');

      expect(answer.status).toBe(200);
      expect(answer.contentType).toMatch(/^application\/json/);
      expect(answer.json).toEqual({
        status: 'ok',
        checks: [
          { name: 'event-loop', ok: true, detail: 'responsive' },
          { name: 'boot', ok: true, detail: 'boot recovery done' },
          { name: 'heartbeat-job', ok: true, detail: 'attempting on schedule' },
          { name: 'reducer', ok: true, detail: 'queue empty' },
        ],
      });
    });

    it('turns 503 naming heartbeat-job when the job stops running, and 200 once it runs again', async () => {
      const a = await start();
      const hb = a.app.get(HeartbeatService);
      const scheduler = a.app.get(SchedulerRegistry);
      // Both of the job's prompts go: its decorated tick and the timeout armed for its due time.
      scheduler.deleteInterval(HEARTBEAT_INTERVAL_NAME);
      scheduler.deleteTimeout(HEARTBEAT_INTERVAL_NAME);

      a.clock.advance(2 * INTERVAL_MS + 10_000 + 1_000);
      let answer = await get(port, '/healthz');

      expect(answer.status).toBe(503);
      expect(answer.json).toMatchObject({
        status: 'stuck',
        failing: ['heartbeat-job: no heartbeat attempted for 131 s though one was due 71 s ago (limit 130 s)'],
      });
      const checks = answer.json?.checks as { name: string; ok: boolean }[];
      expect(checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(['heartbeat-job']);
      expect(world.cp.heartbeats).toHaveLength(1); // the boot handshake only: the job really did not run

      // The job's interval is back; its next tick sends the overdue heartbeat.
      scheduler.addInterval(
        HEARTBEAT_INTERVAL_NAME,
        setInterval(() => hb.tick(), 50),
      );
      await world.cp.waitFor(() => world.cp.heartbeats.length === 2, 5000, 'the overdue heartbeat');
      await hb.settled();
      answer = await get(port, '/healthz');

      expect(answer.status).toBe(200);
      expect(answer.json).toMatchObject({ status: 'ok' });
    });

    it('turns 503 naming heartbeat-job while a heartbeat is in flight past its deadline, and 200 once it ends', async () => {
      const a = await start();
      const hb = a.app.get(HeartbeatService);
      // The CP holds this answer 1.5 s (real time), well inside the 10 s real deadline of the request...
      world.cp.respondNext('heartbeat', { delayMs: 1_500 });
      a.clock.advance(INTERVAL_MS);
      hb.tick();
      await world.cp.waitFor(() => world.cp.heartbeats.length === 2, 5000, 'the held heartbeat');
      // ...while the agent's clock runs past deadline + grace: what liveness sees if that deadline never fired.
      a.clock.advance(16_000);

      let answer = await get(port, '/healthz');

      expect(answer.status).toBe(503);
      expect(answer.json).toMatchObject({
        status: 'stuck',
        failing: ['heartbeat-job: a heartbeat has been in flight for 16 s, past its 10 s deadline'],
      });

      await hb.settled();
      answer = await get(port, '/healthz');

      expect(answer.status).toBe(200);
      expect(hb.status()).toMatchObject({ consecutiveFailures: 0, lastError: null });
    });

    it('turns 503 naming reducer when queued input waits > 30 s behind an event log that does not answer, and 200 once it does', async () => {
      const held = new Gate();
      const a = await start({
        customize: (b) =>
          b.overrideProvider(OutboundPorts).useFactory({
            factory: (...deps: ConstructorParameters<typeof OutboundPorts>) => new GatedOutboundPorts(held, ...deps),
            inject: [EventLogService, DrainerService, AGENT_CONFIG],
          }),
      });
      const reducer = a.app.get(ReducerService);
      const activate = (rolloutId: string): ReducerInput => ({
        type: 'Activate',
        rolloutId,
        targetClosure: TARGET,
        soakDueAt: new Date(a.clock.now().getTime() + 3_600_000).toISOString(),
        currentClosure: BOOT_CLOSURE,
        dispatchedAt: a.clock.now().toISOString(),
      });
      // The first input's DispatchAck waits in the port; the second queues behind it.
      const first = reducer.submit(activate(ROLLOUT));
      const second = reducer.submit(activate('stable@b2c3d4e5'));
      await held.entered;
      expect(reducer.statistics().queueDepth).toBe(1);

      let answer = await get(port, '/healthz');
      expect(answer.status).toBe(200);
      expect((answer.json?.checks as Json[])[3]).toEqual({ name: 'reducer', ok: true, detail: '1 input(s) queued, moving' });

      a.clock.advance(31_000);
      answer = await get(port, '/healthz');

      expect(answer.status).toBe(503);
      expect(answer.json).toMatchObject({ status: 'stuck', failing: ['reducer: 1 input(s) queued but none taken for 31 s'] });

      held.open();
      await Promise.all([first, second]);
      await a.app.get(ActivationService).idle();
      await reducer.drain();
      answer = await get(port, '/healthz');

      expect(answer.status).toBe(200);
    });
  });

  describe('GET /readyz', () => {
    it('follows the CP: 200 after a success, still 200 within 3 intervals of failures, 503 past them, 200 when it answers again', async () => {
      const a = await start();
      const lastSuccessAt = a.clock.now().toISOString();
      const lastSuccessMono = a.clock.monotonicMs();

      let answer = await get(port, '/readyz');
      expect(answer.status).toBe(200);
      expect(answer.json).toEqual({
        status: 'ok',
        reachable: true,
        lastError: null,
        failingForSecs: null,
        lastSuccessAt,
        consecutiveFailures: 0,
        thresholdSecs: 180,
        eventLog: { writable: true, failingSince: null, lastError: null },
      });

      world.cp.setDefault('heartbeat', { status: 503, body: { error: 'maintenance' } });
      const seen: number[] = [];
      while (a.clock.monotonicMs() - lastSuccessMono <= 3 * INTERVAL_MS) {
        await beat(a);
        const failingMs = a.clock.monotonicMs() - lastSuccessMono;
        answer = await get(port, '/readyz');
        seen.push(answer.status);
        expect(answer.status).toBe(failingMs <= 3 * INTERVAL_MS ? 200 : 503);
      }
      const failures = a.app.get(HeartbeatService).status().consecutiveFailures;
      expect(failures).toBeGreaterThan(3);
      expect(seen.at(-1)).toBe(503);
      expect(seen.slice(0, -1).every((s) => s === 200)).toBe(true);
      expect(answer.json).toEqual({
        status: 'unreachable',
        reachable: false,
        lastError: expect.stringMatching(/^HTTP 503/),
        failingForSecs: Math.floor((a.clock.monotonicMs() - lastSuccessMono) / 1000),
        lastSuccessAt,
        consecutiveFailures: failures,
        thresholdSecs: 180,
        eventLog: { writable: true, failingSince: null, lastError: null },
      });

      world.cp.setDefault('heartbeat', null);
      await beat(a);
      answer = await get(port, '/readyz');

      expect(answer.status).toBe(200);
      expect(answer.json).toMatchObject({ status: 'ok', lastSuccessAt: a.clock.now().toISOString(), consecutiveFailures: 0 });
    });

    it('turns 503 with the connect error while the CP is down past 3 intervals, and 200 when it is back on its port', async () => {
      const a = await start();
      const cpPort = Number(new URL(world.cp.url).port);
      await world.cp.close();

      while (a.app.get(HealthService).readiness().ok) await beat(a);
      let answer = await get(port, '/readyz');

      expect(answer.status).toBe(503);
      expect(answer.json).toMatchObject({
        status: 'unreachable',
        lastError: expect.stringMatching(/^cannot connect: ECONNREFUSED/),
        consecutiveFailures: expect.any(Number),
      });
      expect(answer.json?.failingForSecs).toBeGreaterThan(180);

      revived = await DevControlPlane.start({ pki: world.pki, port: cpPort });
      await beat(a);
      answer = await get(port, '/readyz');

      expect(answer.status).toBe(200);
      expect(revived.heartbeats.map((h) => h.status)).toEqual([200]);
    });
  });

  describe('GET /metrics', () => {
    it('is Prometheus text from the agent’s own registry, every metric with HELP, all rollout states present', async () => {
      const a = await start();

      const answer = await get(port, '/metrics');

      expect(answer.status).toBe(200);
      expect(answer.contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
      const m = new Scrape(answer.text);
      const expected: [string, string][] = [
        ['heartbeats_total', 'COUNTER'],
        ['heartbeat_duration_seconds', 'HISTOGRAM'],
        ['heartbeat_consecutive_failures', 'GAUGE'],
        ['heartbeat_last_success_timestamp_seconds', 'GAUGE'],
        ['outbound_events', 'GAUGE'],
        ['replayed_events_total', 'COUNTER'],
        ['reducer_queue_depth', 'GAUGE'],
        ['rollouts', 'GAUGE'],
        ['activations_total', 'COUNTER'],
        ['client_certificate_expiry_seconds', 'GAUGE'],
      ];
      for (const [name, type] of expected) {
        expect({ name, type: m.family(P + name).type, help: m.family(P + name).help.length > 0 }).toEqual({ name, type, help: true });
      }
      expect(m.has('process_resident_memory_bytes')).toBe(true);
      // The boot handshake's answer (its Date header) already gave a skew.
      expect(m.value(`${P}clock_skew_seconds`)).toBe(a.app.get(HeartbeatService).status().clockSkewSecs);
      expect(m.family(`${P}rollouts`).metrics.map((s) => [s.labels?.state, s.value])).toEqual(ROLLOUT_STATES.map((s) => [s, '0']));
      expect(m.value(`${P}heartbeat_last_success_timestamp_seconds`)).toBe(a.clock.now().getTime() / 1000);
      const notAfter = new Date(new X509Certificate(readFileSync(world.pki.client.certPath)).validTo).getTime();
      expect(m.value(`${P}client_certificate_expiry_seconds`)).toBe(Math.floor((notAfter - a.clock.now().getTime()) / 1000));
      // The boot handshake is the recovery's, not the job's: no steady heartbeat yet.
      expect(heartbeats(m, 'ok')).toBe(0);
      expect(m.histogram(`${P}heartbeat_duration_seconds`).count).toBe(0);
    });

    it('counts real heartbeats: ok by exactly what the CP answered, a 500 as http-status, the latency histogram alike', async () => {
      const a = await start();
      const before = await scrape();
      const answeredBefore = answered(200);

      for (let i = 0; i < 3; i++) await beat(a);
      world.cp.respondNext('heartbeat', { status: 500, body: { error: 'internal' } });
      await beat(a);
      const after = await scrape();

      expect(answered(200) - answeredBefore).toBe(3);
      expect(heartbeats(after, 'ok') - heartbeats(before, 'ok')).toBe(3);
      expect(heartbeats(after, 'http-status') - heartbeats(before, 'http-status')).toBe(1);
      for (const other of ['connect', 'tls', 'timeout', 'network', 'bad-body', 'aborted']) expect(heartbeats(after, other)).toBe(0);
      expect(after.histogram(`${P}heartbeat_duration_seconds`).count).toBe(4);
      expect(after.value(`${P}heartbeat_consecutive_failures`)).toBe(1);

      // A slow answer: the agent's clock moves 1.5 s while the CP holds it.
      world.cp.respondNext('heartbeat', { delayMs: 300 });
      const hb = a.app.get(HeartbeatService);
      a.clock.advance(Math.max(0, (hb.progress().nextDueMono ?? 0) - a.clock.monotonicMs()));
      const sent = world.cp.heartbeats.length;
      hb.tick();
      await world.cp.waitFor(() => world.cp.heartbeats.length === sent + 1, 5000, 'the slow heartbeat');
      a.clock.advance(1_500);
      await hb.settled();
      const slow = await scrape();

      const latency = slow.histogram(`${P}heartbeat_duration_seconds`);
      const earlier = after.histogram(`${P}heartbeat_duration_seconds`);
      expect(latency.count).toBe(5);
      expect(latency.sum - earlier.sum).toBeCloseTo(1.5);
      expect(latency.buckets['1'] - earlier.buckets['1']).toBe(0);
      expect(latency.buckets['2.5'] - earlier.buckets['2.5']).toBe(1);
      expect(heartbeats(slow, 'ok')).toBe(4);
      expect(slow.value(`${P}heartbeat_consecutive_failures`)).toBe(0);
      expect(slow.value(`${P}heartbeat_last_success_timestamp_seconds`)).toBe(a.clock.now().getTime() / 1000);
    });

    it('follows a dispatch: activations by outcome, rollouts by state, outbound events; and a replay’s resent count', async () => {
      const a = await start();
      world.cp.queueDispatch(world.pki.machineId, {
        rollout_id: ROLLOUT,
        target_closure: TARGET,
        soak_due_at: new Date(a.clock.now().getTime() + 3_600_000).toISOString(),
      });
      const reducer = a.app.get(ReducerService);
      await world.cp.waitFor(() => reducer.current().rollouts[ROLLOUT]?.state === 'Soaking', 5000, 'the rollout soaking');
      await a.app.get(ActivationService).idle();
      await reducer.drain();
      const drainer = a.app.get(DrainerService);
      // DispatchAck, ActivationStarted, ActivationCompleted, and the (empty) probe topology.
      await world.cp.waitFor(() => world.cp.events(world.pki.machineId, ROLLOUT).length === 4, 5000, 'four events delivered');
      await drainer.idle();

      let m = await scrape();
      expect(m.value(`${P}activations_total`, { kind: 'switch', outcome: 'completed' })).toBe(1);
      expect(m.value(`${P}activations_total`, { kind: 'switch', outcome: 'failed' })).toBe(0);
      expect(m.value(`${P}rollouts`, { state: 'Soaking' })).toBe(1);
      expect(m.value(`${P}rollouts`, { state: 'Pending' })).toBe(0);
      expect(m.value(`${P}outbound_events`, { state: 'delivered' })).toBe(4);
      expect(m.value(`${P}outbound_events`, { state: 'pending' })).toBe(0);
      expect(m.value(`${P}reducer_queue_depth`)).toBe(0);
      expect(m.value(`${P}replayed_events_total`)).toBe(0);

      // A CP that lost its database asks for a replay on the next heartbeat.
      world.cp.loseAllState();
      await beat(a);
      await world.cp.waitFor(() => world.cp.events(world.pki.machineId, ROLLOUT).length === 4, 5000, 'the replay');
      await drainer.idle();

      m = await scrape();
      expect(m.value(`${P}replayed_events_total`)).toBe(4);
      expect(m.value(`${P}outbound_events`, { state: 'delivered' })).toBe(4);
    });
  });
});
