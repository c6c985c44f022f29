import { SchedulerRegistry } from '@nestjs/schedule';
import { type AgentUnderTest, type BuildOptions, buildAgent, fakeClosure, makeWorld, type World } from '../../test/support/agent-harness';
import { FakeClock } from '../../test/support/fake-clock';
import type { ReplayFrom } from '../protocol/replay-from';
import type { HostRolloutSnapshot } from '../protocol/snapshot.wire';
import { DrainerService } from '../outbound/drainer.service';
import type { AgentEvent } from '../protocol/events.wire';
import { REPLAY_PORT, type ReplayPort } from '../recovery/recovery.ports';
import { RecoveryService } from '../recovery/recovery.service';
import { EMIT_EVENT_PORT, type EmitEventPort } from '../reducer/reducer.ports';
import { ReducerService } from '../reducer/reducer.service';
import { AGENT_VERSION } from '../version';
import { HEARTBEAT_INTERVAL_NAME, HEARTBEATS_KEPT } from './heartbeat.constants';
import { HeartbeatService } from './heartbeat.service';

const MACHINE = 'web-01';
const BOOT_CLOSURE = fakeClosure('web-01-26.05');
const NEXT_CLOSURE = fakeClosure('web-01-26.11', 'b');
const ROLLOUT = 'stable@a1b2c3d4';

function snapshot(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    rolloutId: ROLLOUT,
    hostname: MACHINE,
    channel: 'stable',
    state: 'Soaking',
    targetClosure: NEXT_CLOSURE,
    currentClosureAtDispatch: BOOT_CLOSURE,
    currentClosure: NEXT_CLOSURE,
    dispatchedAt: '2026-11-28T11:50:00.000Z',
    dispatchAckedAt: '2026-11-28T11:50:01.000Z',
    activationStartedAt: '2026-11-28T11:50:02.000Z',
    activationCompletedAt: '2026-11-28T11:51:00.000Z',
    soakDueAt: '2026-11-28T12:10:00.000Z',
    lastEventSeq: 4,
    ...over,
  };
}

class RecordingReplayPort implements ReplayPort {
  readonly requests: { value: ReplayFrom; source: string }[] = [];
  requestReplay(value: ReplayFrom, source: 'boot-recovery' | 'heartbeat'): void {
    this.requests.push({ value, source });
  }
}

/** The agent with the replay port (OutboundModule's) replaced by a recording one. */
function withReplayPort(port: ReplayPort): BuildOptions['customize'] {
  return (b) => b.overrideProvider(REPLAY_PORT).useValue(port);
}

describe('HeartbeatService against the dev control plane over mutual TLS', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterAll(async () => {
    await world.close();
  });
  afterEach(async () => {
    await agent?.close();
    agent = null;
    world.cp.setDefault('heartbeat', null);
    world.cp.setReplayFrom(null);
    world.cp.setBootstrap(MACHINE, []);
    world.setCurrentSystem(BOOT_CLOSURE);
  });

  /** Builds the agent and waits for the boot handshake, after which the job is scheduled. */
  async function start(options: BuildOptions = {}): Promise<{ a: AgentUnderTest; hb: HeartbeatService }> {
    agent = await buildAgent(world, { extra: ['--heartbeat-interval', '60'], ...options });
    await agent.app.get(RecoveryService).whenComplete();
    const hb = agent.app.get(HeartbeatService);
    expect(agent.app.get(SchedulerRegistry).doesExist('interval', HEARTBEAT_INTERVAL_NAME)).toBe(true);
    return { a: agent, hb };
  }

  /** Moves the fake clock, runs a tick, waits for any heartbeat it started; returns how many reached the CP. */
  async function advanceAndTick(a: AgentUnderTest, hb: HeartbeatService, ms: number): Promise<number> {
    const before = world.cp.heartbeats.length;
    a.clock.advance(ms);
    hb.tick();
    await hb.settled();
    return world.cp.heartbeats.length - before;
  }

  /** Milliseconds from the fake "now" to the next due heartbeat. */
  function dueInMs(a: AgentUnderTest, hb: HeartbeatService): number {
    const next = hb.status().nextDueAt;
    if (next === null) throw new Error('no heartbeat is scheduled');
    return Date.parse(next) - a.clock.now().getTime();
  }

  const lastBody = (): Record<string, unknown> => world.cp.heartbeats.at(-1)?.body as Record<string, unknown>;
  const warnings = (a: AgentUnderTest, context: string): string[] => a.logs.messages('warn', context);

  describe('request body', () => {
    it('sends exactly the snake_case keys of PROTOCOL §2, without rollout_id, and the protocol header', async () => {
      const { a, hb } = await start();
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      const seen = world.cp.heartbeats.at(-1)!;
      expect(Object.keys(seen.body as object).sort()).toEqual(
        ['agent_version', 'at', 'current_closure', 'hostname', 'last_event_seq_by_rollout', 'uptime_secs'].sort(),
      );
      expect(seen.body).toEqual({
        hostname: MACHINE,
        current_closure: BOOT_CLOSURE,
        at: a.clock.now().toISOString(),
        agent_version: AGENT_VERSION,
        uptime_secs: 60,
        last_event_seq_by_rollout: {},
      });
      expect(seen.headers['x-nixfleet-protocol']).toBe('1');
      expect(seen.cn).toBe(MACHINE);
      expect(seen.status).toBe(200);
    });

    it('reads current_closure afresh: re-pointing the link between heartbeats changes what the next one reports', async () => {
      const { a, hb } = await start();
      await advanceAndTick(a, hb, 60_000);
      expect(lastBody().current_closure).toBe(BOOT_CLOSURE);
      world.setCurrentSystem(NEXT_CLOSURE);
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      expect(lastBody().current_closure).toBe(NEXT_CLOSURE);
    });

    it('omits current_closure while the current-system link is missing', async () => {
      const { a, hb } = await start();
      world.setCurrentSystem(null);
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      expect(lastBody()).not.toHaveProperty('current_closure');
      expect(world.cp.heartbeats.at(-1)!.status).toBe(200);
    });

    it("carries the reducer's last seq per rollout once a snapshot has been applied", async () => {
      const { a, hb } = await start();
      await a.app.get(ReducerService).submit({ type: 'Snapshot', snapshot: snapshot() as unknown as HostRolloutSnapshot });
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      expect(lastBody().last_event_seq_by_rollout).toEqual({ [ROLLOUT]: 4 });
    });
  });

  describe('cadence', () => {
    it('beats once per interval and nothing before it is due', async () => {
      const { a, hb } = await start();
      expect(dueInMs(a, hb)).toBe(60_000);
      expect(await advanceAndTick(a, hb, 59_999)).toBe(0);
      expect(await advanceAndTick(a, hb, 1)).toBe(1);
      expect(dueInMs(a, hb)).toBe(60_000);
    });

    it('fires from its own scheduler interval once the fake clock makes it due', async () => {
      const { a, hb } = await start({ extra: ['--heartbeat-interval', '1'] });
      const before = world.cp.heartbeats.length;
      a.clock.advance(1_000);
      // No direct tick(): the real interval (every 50 ms at interval 1) must notice.
      await world.cp.waitFor(() => world.cp.heartbeats.length > before, 2_000);
      await hb.settled();
      expect(world.cp.heartbeats.length).toBe(before + 1);
    });

    it('skips a tick while a heartbeat is in flight, then beats at the next scheduled slot, not in a burst', async () => {
      const { a, hb } = await start();
      world.cp.respondNext('heartbeat', { delayMs: 500 });
      const before = world.cp.heartbeats.length;
      a.clock.advance(60_000);
      const startedAt = a.clock.now().getTime();
      hb.tick();
      expect(hb.status().inFlight).toBe(true);
      await world.cp.waitFor(() => world.cp.heartbeats.length === before + 1, 2_000);
      // Several due times pass while the slow answer is pending.
      for (let i = 0; i < 3; i++) {
        a.clock.advance(50_000);
        hb.tick();
      }
      expect(hb.status().inFlight).toBe(true);
      await hb.settled();
      expect(world.cp.heartbeats.length).toBe(before + 1);
      expect(world.cp.heartbeats.at(-1)!.status).toBe(200);
      expect(hb.status().skippedTicks).toBe(1);
      // Started at T, finished at T+150 s: the next slot on the T + k·60 s grid is T+180 s.
      expect(Date.parse(hb.status().nextDueAt!)).toBe(startedAt + 180_000);
      expect(await advanceAndTick(a, hb, 29_999)).toBe(0);
      expect(await advanceAndTick(a, hb, 1)).toBe(1);
      expect(await advanceAndTick(a, hb, 0)).toBe(0);
    });
  });

  describe('failures', () => {
    it('backs off 5, 10, 20, 40, 60, 60 s on repeated HTTP 500, with one warning each, and resets on success', async () => {
      const { a, hb } = await start();
      world.cp.setDefault('heartbeat', { status: 500, body: { error: 'internal' } });
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      const expected = [5_000, 10_000, 20_000, 40_000, 60_000, 60_000];
      for (const [i, delay] of expected.entries()) {
        expect(dueInMs(a, hb)).toBe(delay);
        expect(hb.status().consecutiveFailures).toBe(i + 1);
        const warned = warnings(a, 'HeartbeatService');
        expect(warned).toHaveLength(i + 1);
        expect(warned[i]).toContain('HTTP 500');
        expect(warned[i]).toContain(`next try in ${(delay / 1000).toFixed(1)} s at ${hb.status().nextDueAt}`);
        if (i === expected.length - 1) break;
        expect(await advanceAndTick(a, hb, delay - 1)).toBe(0);
        expect(await advanceAndTick(a, hb, 1)).toBe(1);
      }
      expect(hb.status().lastError).toMatchObject({ kind: 'http-status' });

      world.cp.setDefault('heartbeat', null);
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      expect(world.cp.heartbeats.at(-1)!.status).toBe(200);
      expect(hb.status().consecutiveFailures).toBe(0);
      expect(hb.status().lastSuccessAt).toBe(a.clock.now().toISOString());
      expect(dueInMs(a, hb)).toBe(60_000);
      expect(a.logs.messages('log', 'HeartbeatService')).toContain('heartbeat succeeded again after 6 failure(s)');
    });

    it.each([
      ['the low end of the jitter, floored at 5 s', 0, [5_000, 8_000]],
      ['the high end of the jitter, +20 %', 0.999_999, [6_000, 12_000]],
    ])('jitters the backoff within ±20 %%, never under 5 s: %s', async (_name, random, delays) => {
      const { a, hb } = await start();
      a.random.value = random;
      world.cp.setDefault('heartbeat', { status: 500 });
      await advanceAndTick(a, hb, 60_000 * 1.1);
      expect(dueInMs(a, hb)).toBeCloseTo(delays[0], -1);
      // ISO times drop fractions of a millisecond: one more makes sure it is due.
      expect(await advanceAndTick(a, hb, dueInMs(a, hb) + 1)).toBe(1);
      expect(dueInMs(a, hb)).toBeCloseTo(delays[1], -1);
    });

    it.each([
      [503, 30, 30_000],
      [429, 30, 30_000],
      [503, 1, 5_000],
      // PROTOCOL §1 asks for Retry-After on 503 (and 429 means the same); other statuses keep the backoff.
      [500, 30, 5_000],
    ])('after HTTP %i with Retry-After %i s waits %i ms', async (status, retryAfterSecs, wait) => {
      const { a, hb } = await start();
      world.cp.respondNext('heartbeat', { status, retryAfterSecs });
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      expect(world.cp.heartbeats.at(-1)!.status).toBe(status);
      expect(dueInMs(a, hb)).toBe(wait);
      expect(warnings(a, 'HeartbeatService')[0]).toContain(`HTTP ${status}`);
      expect(await advanceAndTick(a, hb, wait - 1)).toBe(0);
      expect(await advanceAndTick(a, hb, 1)).toBe(1);
      expect(world.cp.heartbeats.at(-1)!.status).toBe(200);
    });

    it('keeps beating after the CP answers 403 and succeeds once the CP accepts it again', async () => {
      const { a, hb } = await start();
      const forbidden = { status: 403, body: { error: 'hostname_mismatch', message: 'hostname does not match the certificate' } };
      world.cp.respondNext('heartbeat', forbidden);
      world.cp.respondNext('heartbeat', forbidden);
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      expect(await advanceAndTick(a, hb, dueInMs(a, hb))).toBe(1);
      expect(hb.status().consecutiveFailures).toBe(2);
      expect(warnings(a, 'HeartbeatService').every((w) => w.includes('HTTP 403'))).toBe(true);
      expect(await advanceAndTick(a, hb, dueInMs(a, hb))).toBe(1);
      expect(world.cp.heartbeats.at(-1)!.status).toBe(200);
      expect(hb.status().consecutiveFailures).toBe(0);
      expect(dueInMs(a, hb)).toBe(60_000);
    });
  });

  describe('Replay-From', () => {
    it.each([
      ['plain', '3', { form: 'plain', fromSeq: 3 }],
      [
        'per-rollout',
        'stable@a1=2, canary@b2=0',
        {
          form: 'per-rollout',
          entries: [
            { rolloutId: 'stable@a1', fromSeq: 2 },
            { rolloutId: 'canary@b2', fromSeq: 0 },
          ],
        },
      ],
    ])('records the %s form in status and hands it to the replay port', async (_form, raw, parsed) => {
      const port = new RecordingReplayPort();
      const { a, hb } = await start({ customize: withReplayPort(port) });
      expect(hb.status().lastReplayFrom).toBeNull();
      world.cp.setReplayFrom(raw);
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      expect(hb.status().lastReplayFrom).toEqual({ value: raw, receivedAt: a.clock.now().toISOString(), source: 'heartbeat' });
      expect(port.requests).toEqual([{ value: parsed, source: 'heartbeat' }]);
    });

    it.each(['abc', 'stable@x=-1'])('ignores a malformed value (%s) with one warning and leaves status unchanged', async (raw) => {
      const port = new RecordingReplayPort();
      const { a, hb } = await start({ customize: withReplayPort(port) });
      world.cp.setReplayFrom('7');
      await advanceAndTick(a, hb, 60_000);
      const recorded = hb.status().lastReplayFrom;
      expect(recorded).toMatchObject({ value: '7' });
      const warningsBefore = warnings(a, 'HeartbeatExchange').length;

      world.cp.setReplayFrom(raw);
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      const added = warnings(a, 'HeartbeatExchange').slice(warningsBefore);
      expect(added).toHaveLength(1);
      expect(added[0]).toMatch(/X-Nixfleet-Replay-From .* is malformed .*ignored/);
      expect(added[0]).toContain(raw);
      expect(hb.status().lastReplayFrom).toEqual(recorded);
      expect(port.requests).toHaveLength(1);
      // A malformed header is not a failed heartbeat.
      expect(hb.status().consecutiveFailures).toBe(0);
    });
    it('replays on a 503 answer that carries Replay-From, resending the same seqs and bytes, and still counts the heartbeat as failed', async () => {
      // The real Outbound module is the replay port here: the events really go out again.
      const { a, hb } = await start();
      const rollout = 'stable@restore1';
      const events: AgentEvent[] = [1, 2, 3].map((seq) => ({
        kind: 'ProbeResult',
        seq,
        probeName: 'http',
        mode: 'enforce',
        status: 'pass',
        observedAt: '2026-11-28T12:00:00.000Z',
      }));
      await a.app
        .get<EmitEventPort>(EMIT_EVENT_PORT)
        .emit(events.map((event) => ({ type: 'EmitEvent', rolloutId: rollout, event, meta: {} })));
      const drainer = a.app.get(DrainerService);
      await drainer.idle();
      const firstSent = new Map(world.cp.events(MACHINE, rollout).map((e) => [e.seq, e.raw]));
      expect([...firstSent.keys()]).toEqual([1, 2, 3]);
      const successBefore = hb.status().lastSuccessAt;

      // The CP restarts without its database and answers heartbeats 503 while it restores.
      world.cp.loseAllState();
      world.cp.respondNext('heartbeat', { status: 503, retryAfterSecs: 30, headers: { 'X-Nixfleet-Replay-From': '0' } });
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      await drainer.idle();

      expect(world.cp.events(MACHINE, rollout).map((e) => [e.seq, e.raw])).toEqual([...firstSent.entries()]);
      expect(hb.status()).toMatchObject({
        consecutiveFailures: 1,
        lastSuccessAt: successBefore,
        lastError: { kind: 'http-status' },
        lastReplayFrom: { value: '0', source: 'heartbeat' },
      });
      expect(hb.status().lastError?.message).toContain('HTTP 503');
      // Retry-After still governs the next try.
      expect(dueInMs(a, hb)).toBe(30_000);
      expect(warnings(a, 'HeartbeatService')).toHaveLength(1);
    });
  });

  describe('bootstrap snapshots', () => {
    it('forwards a valid snapshot to the reducer', async () => {
      const { a, hb } = await start();
      world.cp.setBootstrap(MACHINE, [snapshot()]);
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      const entry = a.app.get(ReducerService).current().rollouts[ROLLOUT];
      expect(entry).toMatchObject({ rolloutId: ROLLOUT, state: 'Soaking', targetClosure: NEXT_CLOSURE, lastEventSeq: 4 });
    });

    it('drops an invalid snapshot with a warning naming the bad field, and still applies the valid ones', async () => {
      const { a, hb } = await start();
      world.cp.setBootstrap(MACHINE, [snapshot({ rolloutId: 'canary@ffff', state: 'Exploded' }), snapshot()]);
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      const rollouts = a.app.get(ReducerService).current().rollouts;
      expect(Object.keys(rollouts)).toEqual([ROLLOUT]);
      const warned = warnings(a, 'HeartbeatExchange');
      expect(warned).toHaveLength(1);
      expect(warned[0]).toContain('bootstrap_rollouts[0].state');
      expect(warned[0]).toContain('"Exploded"');
      expect(hb.status().consecutiveFailures).toBe(0);
    });

    it('drops a snapshot for another hostname with a warning', async () => {
      const { a, hb } = await start();
      world.cp.setBootstrap(MACHINE, [snapshot({ hostname: 'db-02' })]);
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      expect(a.app.get(ReducerService).current().rollouts).toEqual({});
      const warned = warnings(a, 'HeartbeatExchange');
      expect(warned).toHaveLength(1);
      expect(warned[0]).toContain('"db-02"');
    });
  });

  it("estimates clock skew from the CP's Date header: a CP 120 s ahead reads as +120 s", async () => {
    const { a, hb } = await start({ clock: new FakeClock(new Date()) });
    // Without a scripted Date the CP stamps real time, which the fake clock started at.
    await advanceAndTick(a, hb, 60_000);
    expect(hb.status().clockSkewSecs).not.toBeNull();
    // The fake clock is now 60 s past real time; script the CP's Date against the agent's own clock.
    world.cp.respondNext('heartbeat', { headers: { Date: new Date(a.clock.now().getTime() + 60_000 + 120_000).toUTCString() } });
    expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
    const skew = hb.status().clockSkewSecs!;
    // Date has whole seconds: the estimate is good to ±1 s.
    expect(Math.abs(skew - 120)).toBeLessThanOrEqual(1);
  });

  describe('recent outcomes', () => {
    it('records the handshake and each beat: ok with its status, HTTP 503, a connection cut mid-answer; oldest first', async () => {
      const { a, hb } = await start();
      const bootAt = a.clock.now().toISOString();
      expect(hb.status().recentOutcomes).toEqual([
        { at: bootAt, source: 'boot-recovery', result: 'ok', httpStatus: 200, latencyMs: 0, error: null },
      ]);

      world.cp.respondNext('heartbeat', { status: 503, body: { error: 'restoring' } });
      expect(await advanceAndTick(a, hb, 60_000)).toBe(1);
      const failedAt = a.clock.now().toISOString();
      world.cp.respondNext('heartbeat', { cutAfterBytes: 10 });
      expect(await advanceAndTick(a, hb, dueInMs(a, hb))).toBe(1);
      const cutAt = a.clock.now().toISOString();
      expect(await advanceAndTick(a, hb, dueInMs(a, hb))).toBe(1);

      expect(hb.status().recentOutcomes).toEqual([
        { at: bootAt, source: 'boot-recovery', result: 'ok', httpStatus: 200, latencyMs: 0, error: null },
        {
          at: failedAt,
          source: 'heartbeat',
          result: 'http-status',
          httpStatus: 503,
          latencyMs: 0,
          error: expect.stringContaining('HTTP 503'),
        },
        {
          at: cutAt,
          source: 'heartbeat',
          result: 'network',
          httpStatus: null,
          latencyMs: 0,
          error: expect.stringMatching(/^connection failed mid-request/),
        },
        { at: a.clock.now().toISOString(), source: 'heartbeat', result: 'ok', httpStatus: 200, latencyMs: 0, error: null },
      ]);
      // The last one is the attempt the status's own fields describe.
      expect(hb.status().lastAttemptAt).toBe(hb.status().recentOutcomes.at(-1)?.at);
    });

    it(`keeps the last ${HEARTBEATS_KEPT}: the handshake's goes first`, async () => {
      const { a, hb } = await start();
      for (let i = 0; i < HEARTBEATS_KEPT; i++) expect(await advanceAndTick(a, hb, 60_000)).toBe(1);

      const kept = hb.status().recentOutcomes;
      expect(kept).toHaveLength(HEARTBEATS_KEPT);
      expect(kept.every((o) => o.source === 'heartbeat' && o.result === 'ok')).toBe(true);
      expect(kept.at(-1)?.at).toBe(a.clock.now().toISOString());
    });
  });

  describe('shutdown', () => {
    /** Starts a heartbeat the CP answers after 300 ms of real time and waits until the CP has it. */
    async function inFlight(a: AgentUnderTest, hb: HeartbeatService): Promise<number> {
      world.cp.respondNext('heartbeat', { delayMs: 300 });
      const before = world.cp.heartbeats.length;
      a.clock.advance(60_000);
      hb.tick();
      await world.cp.waitFor(() => world.cp.heartbeats.length === before + 1, 2_000);
      expect(hb.status().inFlight).toBe(true);
      return before + 1;
    }

    it('app.close() resolves only once the heartbeat in flight has settled, and leaves no interval registered', async () => {
      const { a, hb } = await start();
      const sent = await inFlight(a, hb);
      await a.close();
      agent = null;
      expect(hb.status().inFlight).toBe(false);
      expect(hb.status().nextDueAt).toBeNull();
      expect(a.app.get(SchedulerRegistry).getIntervals()).toEqual([]);
      // Nothing more goes out once closed, however late it gets.
      a.clock.advance(600_000);
      hb.tick();
      await hb.settled();
      expect(world.cp.heartbeats.length).toBe(sent);
    });

    it('lets the heartbeat in flight finish: the CP answer is taken, the call is not cut', async () => {
      const { a, hb } = await start();
      await inFlight(a, hb);
      await a.close();
      agent = null;
      expect(hb.status().lastError).toBeNull();
      expect(hb.status().lastSuccessAt).toBe(a.clock.now().toISOString());
      expect(world.cp.heartbeats.at(-1)!.status).toBe(200);
    });
  });
});
