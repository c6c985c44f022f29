import { DevControlPlane, type ReceivedRequest } from '../../dev/control-plane';
import { type AgentUnderTest, type BuildOptions, buildAgent, fakeClosure, makeWorld, type World } from '../../test/support/agent-harness';
import { ActivationService } from '../activation/activation.service';
import { HeartbeatService } from '../heartbeat/heartbeat.service';
import { BootGate } from '../lifecycle/boot-gate';
import type { AgentEvent } from '../protocol/events.wire';
import { EMIT_EVENT_PORT, type EmitEventPort } from '../reducer/reducer.ports';
import { ProbeRunnerService } from '../probes/probe-runner.service';
import { ReducerService } from '../reducer/reducer.service';
import { DrainerService } from './drainer.service';
import { EventLogService } from './event-log.service';
import { freePort } from '../../dev/free-port';
import { DELIVERY_CONNECTIONS } from '../comms/comms.constants';
import { DELIVERY_PACING, DELIVERY_PACING_SETTINGS } from './outbound.constants';

const MACHINE = 'web-01';
const BOOT_CLOSURE = fakeClosure('web-01-26.05');
const TARGET = fakeClosure('web-01-26.11', 'b');

/** A hand-made event the CP accepts; the drainer does not care which kind it carries. */
function probeResult(seq: number): AgentEvent {
  return { kind: 'ProbeResult', seq, probeName: 'http', mode: 'enforce', status: 'pass', observedAt: '2026-11-28T12:00:00.000Z' };
}

describe('DrainerService against the dev control plane over mutual TLS', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;
  let lateCp: DevControlPlane | null = null;

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterAll(async () => {
    await world.close();
  });
  afterEach(async () => {
    await agent?.close();
    agent = null;
    await lateCp?.close();
    lateCp = null;
    world.cp.setDefault('events', null);
    world.setCurrentSystem(BOOT_CLOSURE);
  });

  /** Builds the agent and waits until the boot handshake opened the gate, so the drainer runs. */
  async function start(options: BuildOptions = {}): Promise<{ a: AgentUnderTest; drainer: DrainerService; log: EventLogService }> {
    agent = await buildAgent(world, {
      extra: ['--heartbeat-interval', '60'],
      // The latency-rise rule is the pacer's own spec's; here a loaded CI machine's loopback spikes
      // (tens of ms) must not halve a window these tests expect to open: 100 ms of slack, not 20.
      customize: (b) => b.overrideProvider(DELIVERY_PACING_SETTINGS).useValue({ ...DELIVERY_PACING, riseSlackMs: 100 }),
      ...options,
    });
    await agent.app.get(BootGate).whenOpen();
    await new Promise((resolve) => setImmediate(resolve));
    return { a: agent, drainer: agent.app.get(DrainerService), log: agent.app.get(EventLogService) };
  }

  /** Logs hand-made events through the reducer's emit port (append, then the drainer is told). */
  async function emit(a: AgentUnderTest, rolloutId: string, seqs: number[]): Promise<void> {
    const port = a.app.get<EmitEventPort>(EMIT_EVENT_PORT);
    await port.emit(seqs.map((seq) => ({ type: 'EmitEvent', rolloutId, event: probeResult(seq), meta: {} })));
  }

  /** A real dispatch: the symlink backend activates and the reducer emits DispatchAck, ActivationStarted, ActivationCompleted. */
  async function activate(a: AgentUnderTest, rolloutId: string): Promise<void> {
    const reducer = a.app.get(ReducerService);
    await reducer.submit({
      type: 'Activate',
      rolloutId,
      targetClosure: TARGET,
      soakDueAt: new Date(a.clock.now().getTime() + 3_600_000).toISOString(),
      currentClosure: BOOT_CLOSURE,
      dispatchedAt: a.clock.now().toISOString(),
    });
    await a.app.get(ActivationService).idle();
    // Soaking: the probe runners declare the rollout's (empty) topology, its fourth event.
    await a.app.get(ProbeRunnerService).settled();
    await reducer.drain();
  }

  /** Moves the fake clock past a backoff and lets the drainer run what is due. */
  async function advanceAndKick(a: AgentUnderTest, drainer: DrainerService, ms: number): Promise<void> {
    a.clock.advance(ms);
    drainer.kick();
    await drainer.idle();
  }

  const postsOf = (rolloutId: string): ReceivedRequest[] =>
    world.cp.eventPosts.filter((p) => (p.body as { rolloutId?: string } | undefined)?.rolloutId === rolloutId);
  const seqOf = (p: ReceivedRequest): number => (p.body as { event: { seq: number } }).event.seq;
  /** `seq:status` of every POST of a rollout, in arrival order. */
  const trail = (rolloutId: string): string[] => postsOf(rolloutId).map((p) => `${seqOf(p)}:${p.status}`);
  const storedSeqs = (rolloutId: string): number[] => world.cp.events(MACHINE, rolloutId).map((e) => e.seq);
  const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);
  const rolloutsNamed = (tag: string, n: number): string[] => Array.from({ length: n }, (_, i) => `stable@${tag}${i}aaaa`);

  /** Logs seqs for several rollouts in one append: the drainer learns of them all at once. */
  async function emitAll(a: AgentUnderTest, rollouts: string[], seqs: number[]): Promise<void> {
    const port = a.app.get<EmitEventPort>(EMIT_EVENT_PORT);
    await port.emit(
      rollouts.flatMap((rolloutId) => seqs.map((seq) => ({ type: 'EmitEvent' as const, rolloutId, event: probeResult(seq), meta: {} }))),
    );
  }

  /** Enough delivered events over more rollouts than lanes for the window to open all the way (the CP keeps up). */
  async function openWindow(a: AgentUnderTest, drainer: DrainerService, tag: string): Promise<string[]> {
    const rollouts = rolloutsNamed(tag, DELIVERY_CONNECTIONS * 2);
    await emitAll(a, rollouts, range(1, 10));
    await drainer.idle();
    expect(drainer.pacing()).toEqual({ window: DELIVERY_CONNECTIONS, lanes: DELIVERY_CONNECTIONS, inFlight: 0 });
    return rollouts;
  }

  it('204: marks the event delivered; the CP stores the exact envelope bytes of the log, camelCase with kind and seq', async () => {
    const rollout = 'stable@d204aaaa';
    const { a, drainer, log } = await start();
    await activate(a, rollout);
    await drainer.idle();

    expect(storedSeqs(rollout)).toEqual([1, 2, 3, 4]);
    expect(trail(rollout)).toEqual(['1:204', '2:204', '3:204', '4:204']);
    expect(log.stats()).toMatchObject({ pending: 0, delivered: 4, refused: 0 });
    expect(log.lastDeliveredSeq(rollout)).toBe(4);
    const logged = log.events(rollout);
    expect(logged.map((e) => e.delivery.state)).toEqual(['delivered', 'delivered', 'delivered', 'delivered']);

    const stored = world.cp.events(MACHINE, rollout);
    expect(stored.map((e) => e.raw)).toEqual(logged.map((e) => e.envelope));
    expect(stored.map((e) => e.kind)).toEqual(['DispatchAck', 'ActivationStarted', 'ActivationCompleted', 'ProbeTopologyDeclared']);
    const first = JSON.parse(stored[0].raw) as Record<string, unknown>;
    expect(Object.keys(first).sort()).toEqual(['event', 'hostname', 'rolloutId']);
    expect(first).toMatchObject({ hostname: MACHINE, rolloutId: rollout });
    expect(first.event).toEqual({
      kind: 'DispatchAck',
      seq: 1,
      currentClosureAtDispatch: BOOT_CLOSURE,
      receivedAt: a.clock.now().toISOString(),
    });
    const completed = JSON.parse(stored[2].raw) as { event: Record<string, unknown> };
    expect(completed.event).toEqual({
      kind: 'ActivationCompleted',
      seq: 3,
      observedCurrentClosure: TARGET,
      exitCode: 0,
      completedAt: a.clock.now().toISOString(),
    });
    for (const e of stored) expect(e.raw).not.toMatch(/"[a-z]+_[a-z_]+"\s*:/);
  });

  it('503 / 500 / 429: retries the same seq with a doubling backoff and Retry-After, and seq n+1 waits for seq n', async () => {
    const rollout = 'stable@d5xxaaaa';
    const { a, drainer, log } = await start();
    world.cp.setDefault('events', { status: 503 });
    await emit(a, rollout, [1, 2]);
    await drainer.idle();
    expect(trail(rollout)).toEqual(['1:503']);

    // Jitter is pinned to the middle: the delays are exactly 1 s, 2 s, 4 s, 8 s.
    await advanceAndKick(a, drainer, 999);
    expect(trail(rollout)).toEqual(['1:503']);
    await advanceAndKick(a, drainer, 1);
    expect(trail(rollout)).toEqual(['1:503', '1:503']);

    world.cp.setDefault('events', { status: 500 });
    await advanceAndKick(a, drainer, 1_999);
    expect(trail(rollout)).toHaveLength(2);
    await advanceAndKick(a, drainer, 1);
    expect(trail(rollout)).toEqual(['1:503', '1:503', '1:500']);

    // 429 with Retry-After: 30 outlasts the 4 s step of the backoff.
    world.cp.setDefault('events', { status: 429, retryAfterSecs: 30 });
    await advanceAndKick(a, drainer, 4_000);
    expect(trail(rollout)).toEqual(['1:503', '1:503', '1:500', '1:429']);
    await advanceAndKick(a, drainer, 29_999);
    expect(trail(rollout)).toHaveLength(4);

    // A 503 with Retry-After shorter than the backoff (16 s by now) waits the backoff.
    world.cp.setDefault('events', null);
    world.cp.respondNext('events', { status: 503, retryAfterSecs: 2 });
    await advanceAndKick(a, drainer, 1);
    expect(trail(rollout)).toEqual(['1:503', '1:503', '1:500', '1:429', '1:503']);
    await advanceAndKick(a, drainer, 15_999);
    expect(trail(rollout)).toHaveLength(5);
    expect(log.stats()).toMatchObject({ pending: 2, delivered: 0 });

    await advanceAndKick(a, drainer, 1);
    expect(trail(rollout)).toEqual(['1:503', '1:503', '1:500', '1:429', '1:503', '1:204', '2:204']);
    expect(storedSeqs(rollout)).toEqual([1, 2]);
    expect(log.stats()).toMatchObject({ pending: 0, delivered: 2 });
    const warnings = a.logs.messages('warn', DrainerService.name);
    expect(warnings.filter((w) => w.includes('retrying the same seq'))).toHaveLength(5);
    expect(warnings[0]).toMatch(/ProbeResult seq 1 of stable@d5xxaaaa failed: HTTP 503.*retrying the same seq in 1\.0 s/);
  });

  it('ignores Retry-After on a 500 or a 409 (the backoff applies) and honours it on a 429, as the heartbeat and dispatch poll do', async () => {
    const rollout = 'stable@draaaaaa';
    const { a, drainer } = await start();
    world.cp.respondNext('events', { status: 500, retryAfterSecs: 30 });
    world.cp.respondNext('events', { status: 409, retryAfterSecs: 30 });
    world.cp.respondNext('events', { status: 429, retryAfterSecs: 30 });
    await emit(a, rollout, [1]);
    await drainer.idle();
    expect(trail(rollout)).toEqual(['1:500']);

    // Jitter is pinned to the middle: 1 s, then 2 s, not 30 s.
    await advanceAndKick(a, drainer, 1_000);
    expect(trail(rollout)).toEqual(['1:500', '1:409']);
    await advanceAndKick(a, drainer, 2_000);
    expect(trail(rollout)).toEqual(['1:500', '1:409', '1:429']);
    // The 4 s step is outlasted by the 429's 30 s.
    await advanceAndKick(a, drainer, 29_999);
    expect(trail(rollout)).toHaveLength(3);
    await advanceAndKick(a, drainer, 1);
    expect(trail(rollout)).toEqual(['1:500', '1:409', '1:429', '1:204']);
    const warnings = a.logs.messages('warn', DrainerService.name);
    expect(warnings.map((w) => /retrying the same seq in (\d+\.\d) s/.exec(w)?.[1])).toEqual(['1.0', '2.0', '30.0']);
    expect(warnings[0]).toMatch(/HTTP 500: .*; its Retry-After "30" is ignored: only a 429 or 503 sets when to retry; retrying/);
  });

  it('keeps the backoff within ±20 % of its doubling steps', async () => {
    const rollout = 'stable@djitaaaa';
    const { a, drainer } = await start();
    world.cp.setDefault('events', { status: 503 });
    a.random.value = 0.9999; // the top of the range: 1 s +20 %
    await emit(a, rollout, [1]);
    await drainer.idle();
    await advanceAndKick(a, drainer, 1_199);
    expect(trail(rollout)).toHaveLength(1);
    a.random.value = 0; // the bottom, for the delay after the next failure: 2 s -20 %
    await advanceAndKick(a, drainer, 1);
    expect(trail(rollout)).toHaveLength(2);
    await advanceAndKick(a, drainer, 1_599);
    expect(trail(rollout)).toHaveLength(2);
    await advanceAndKick(a, drainer, 1);
    expect(trail(rollout)).toHaveLength(3);
    // Then 4 s -20 %.
    await advanceAndKick(a, drainer, 3_199);
    expect(trail(rollout)).toHaveLength(3);
    await advanceAndKick(a, drainer, 1);
    expect(trail(rollout)).toHaveLength(4);
    expect(new Set(postsOf(rollout).map(seqOf))).toEqual(new Set([1]));
  });

  it('a network failure (the CP is down) is retried with the same seq once it is back', async () => {
    const rollout = 'stable@dnetaaaa';
    const port = await freePort();
    const { a, drainer, log } = await start({ controlPlaneUrl: `https://127.0.0.1:${port}` });
    await emit(a, rollout, [1, 2]);
    await drainer.idle();
    expect(log.stats().pending).toBe(2);
    const failedAt = a.clock.now().toISOString();
    expect(drainer.deliveryStatus()).toEqual({
      started: true,
      consecutiveFailures: 1,
      lastError: expect.stringMatching(/^cannot connect: ECONNREFUSED/),
      failingSince: failedAt,
      pausedReason: null,
    });
    const warnings = a.logs.messages('warn', DrainerService.name);
    expect(warnings.at(-1)).toMatch(
      /ProbeResult seq 1 of stable@dnetaaaa failed: cannot connect: ECONNREFUSED.*retrying the same seq in 1\.0 s/,
    );

    lateCp = await DevControlPlane.start({ pki: world.pki, port });
    await advanceAndKick(a, drainer, 999);
    expect(lateCp.eventPosts).toHaveLength(0);
    await advanceAndKick(a, drainer, 1);
    expect(lateCp.eventPosts.map((p) => `${seqOf(p)}:${p.status}`)).toEqual(['1:204', '2:204']);
    expect(log.stats()).toMatchObject({ pending: 0, delivered: 2 });
    expect(a.logs.messages('log', DrainerService.name)).toContain('event delivery works again (stable@dnetaaaa seq 1 accepted)');
    // The streak is over; its last error stays on record.
    expect(drainer.deliveryStatus()).toMatchObject({
      consecutiveFailures: 0,
      failingSince: null,
      lastError: expect.stringMatching(/^cannot connect/),
    });
  });

  it('409: retries the same seq later', async () => {
    const rollout = 'stable@d409aaaa';
    const { a, drainer, log } = await start();
    world.cp.respondNext('events', { status: 409 });
    await emit(a, rollout, [1, 2]);
    await drainer.idle();
    expect(trail(rollout)).toEqual(['1:409']);
    expect(log.get(rollout, 1)?.delivery.state).toBe('pending');
    expect(drainer.deliveryPausedReason()).toBeNull();

    await advanceAndKick(a, drainer, 1_000);
    expect(trail(rollout)).toEqual(['1:409', '1:204', '2:204']);
    expect(log.stats()).toMatchObject({ pending: 0, delivered: 2, refused: 0 });
  });

  it.each([401, 403, 426])('%i: pauses delivery, keeps the events, and resumes in order once the CP accepts again', async (status) => {
    const rollout = `stable@dp${status}aa`;
    const { a, drainer, log } = await start();
    world.cp.setDefault('events', { status });
    await emit(a, rollout, [1, 2, 3]);
    await drainer.idle();

    expect(trail(rollout)).toEqual([`1:${status}`]);
    const reason = drainer.deliveryPausedReason();
    expect(reason).toContain(`HTTP ${status}`);
    expect(log.stats()).toMatchObject({ pending: 3, delivered: 0, refused: 0 });
    expect(a.logs.messages('error', DrainerService.name)).toEqual([expect.stringContaining(`event delivery paused: HTTP ${status}`)]);

    // Still refused: still paused, still the same seq, nothing dropped.
    await advanceAndKick(a, drainer, 1_000);
    expect(trail(rollout)).toEqual([`1:${status}`, `1:${status}`]);
    expect(drainer.deliveryPausedReason()).toContain(`HTTP ${status}`);
    expect(log.stats().pending).toBe(3);

    world.cp.setDefault('events', null);
    await advanceAndKick(a, drainer, 2_000);
    expect(trail(rollout)).toEqual([`1:${status}`, `1:${status}`, '1:204', '2:204', '3:204']);
    expect(drainer.deliveryPausedReason()).toBeNull();
    expect(log.stats()).toMatchObject({ pending: 0, delivered: 3 });
  });

  it.each([400, 422])('%i: refuses the event for good, never resends it, and goes on with the next seq', async (status) => {
    const rollout = `stable@dr${status}aa`;
    const { a, drainer, log } = await start();
    world.cp.respondNext('events', { status, body: { error: 'invalid_event', message: 'judged invalid' } });
    await emit(a, rollout, [1, 2, 3]);
    await drainer.idle();

    expect(trail(rollout)).toEqual([`1:${status}`, '2:204', '3:204']);
    expect(log.stats()).toMatchObject({ pending: 0, delivered: 2, refused: 1 });
    expect(log.get(rollout, 1)?.delivery).toMatchObject({ state: 'refused', status });
    expect(drainer.deliveryPausedReason()).toBeNull();
    expect(a.logs.messages('warn', DrainerService.name)).toEqual([
      expect.stringMatching(new RegExp(`refused event ProbeResult seq 1 of ${rollout} \\(HTTP ${status}: .*judged invalid.*not retried`)),
    ]);

    // Much later, and after more events: seq 1 is never POSTed again.
    await advanceAndKick(a, drainer, 600_000);
    await emit(a, rollout, [4]);
    await drainer.idle();
    expect(trail(rollout)).toEqual([`1:${status}`, '2:204', '3:204', '4:204']);
    expect(storedSeqs(rollout)).toEqual([2, 3, 4]);
  });

  it('delivers the events left pending by a restart, in order, and the rebuilt reducer continues with the next seq', async () => {
    const rollout = 'stable@drstaaaa';
    world.cp.setDefault('events', { status: 503 });
    const first = await start();
    await activate(first.a, rollout);
    await first.drainer.idle();
    expect(trail(rollout)).toEqual(['1:503']);
    expect(first.log.stats().pending).toBe(4);
    expect(first.a.app.get(ReducerService).lastEventSeqByRollout()).toEqual({ [rollout]: 4 });
    const stateDir = first.a.stateDir;
    await first.a.close();
    agent = null;

    world.cp.setDefault('events', null);
    const { a, drainer, log } = await start({ stateDir, clock: first.a.clock });
    await drainer.idle();
    expect(trail(rollout)).toEqual(['1:503', '1:204', '2:204', '3:204', '4:204']);
    expect(world.cp.events(MACHINE, rollout).map((e) => e.kind)).toEqual([
      'DispatchAck',
      'ActivationStarted',
      'ActivationCompleted',
      'ProbeTopologyDeclared',
    ]);
    expect(log.stats()).toMatchObject({ pending: 0, delivered: 4 });

    const reducer = a.app.get(ReducerService);
    // The runners re-declared the same topology at start: nothing new to say, no event.
    await a.app.get(ProbeRunnerService).settled();
    expect(reducer.lastEventSeqByRollout()).toEqual({ [rollout]: 4 });
    expect(reducer.current().rollouts[rollout]?.state).toBe('Soaking');
    // Soak over, on target: Converged is the rollout's next event, seq 5 — no seq reused.
    a.clock.advance(3_600_000);
    await reducer.submit({ type: 'Tick', currentClosure: TARGET });
    await reducer.drain();
    await drainer.idle();
    expect(reducer.lastEventSeqByRollout()).toEqual({ [rollout]: 5 });
    expect(world.cp.events(MACHINE, rollout).map((e) => `${e.seq}:${e.kind}`)).toEqual([
      '1:DispatchAck',
      '2:ActivationStarted',
      '3:ActivationCompleted',
      '4:ProbeTopologyDeclared',
      '5:Converged',
    ]);
    expect(postsOf(rollout).filter((p) => p.outcome === 'duplicate')).toEqual([]);
  });

  it('sends one POST per rollout at a time, and several rollouts at once: as many as the pacer allows, starting at two', async () => {
    const rollouts = rolloutsNamed('dlan', 6);
    const { a, drainer } = await start();
    const mark = world.cp.eventPosts.length;
    world.cp.setDefault('events', { stall: true });
    // One by one: each new rollout takes a free lane at once, while the POSTs before it are still out.
    for (const rollout of rollouts) await emit(a, rollout, [1, 2, 3]);
    const lanes = DELIVERY_PACING.initialWindow;
    await world.cp.waitFor(() => world.cp.eventPosts.length - mark >= lanes, 2_000, 'the stalled POSTs');
    expect(drainer.pacing()).toEqual({ window: lanes, lanes, inFlight: lanes });
    // The first rollouts in turn, each with its seq 1 only; seq 2 of each waits for seq 1's answer.
    expect(world.cp.eventPosts.slice(mark).map((p) => `${(p.body as { rolloutId: string }).rolloutId}#${seqOf(p)}`)).toEqual([
      `${rollouts[0]}#1`,
      `${rollouts[1]}#1`,
    ]);
  });

  it('opens up to one rollout per delivery connection while the CP keeps up; 503s halve it, and nothing is lost or reordered', async () => {
    const { a, drainer, log } = await start();
    const rollouts = await openWindow(a, drainer, 'daim');
    const mark = world.cp.eventPosts.length;

    world.cp.setDefault('events', { status: 503 });
    await emitAll(a, rollouts, [11]);
    await drainer.idle();
    // All lanes went at once; the first 503 stopped anything new, and the window halved.
    const failedPosts = world.cp.eventPosts.slice(mark);
    expect(failedPosts.map((p) => p.status)).toEqual(Array<number>(DELIVERY_CONNECTIONS).fill(503));
    expect(new Set(failedPosts.map((p) => (p.body as { rolloutId: string }).rolloutId)).size).toBe(DELIVERY_CONNECTIONS);
    expect(drainer.pacing().window).toBeLessThanOrEqual(DELIVERY_CONNECTIONS / 2);
    expect(log.stats().pending).toBe(rollouts.length);

    // The backoff (1 s, jitter pinned to the middle) is over: every rollout's seq 11 goes, after its seq 10.
    world.cp.setDefault('events', null);
    await advanceAndKick(a, drainer, 1_000);
    expect(log.stats().pending).toBe(0);
    for (const rollout of rollouts) {
      expect(storedSeqs(rollout)).toEqual(range(1, 11));
      expect(postsOf(rollout).map(seqOf)).toEqual([
        ...range(1, 10),
        ...postsOf(rollout)
          .slice(10)
          .map(() => 11),
      ]);
    }
  });

  it('a Retry-After on any POST of a run holds back every rollout: the longest one is waited out', async () => {
    const [first, second] = rolloutsNamed('dret', 2);
    const { a, drainer, log } = await start();
    const mark = world.cp.eventPosts.length;
    world.cp.respondNext('events', { status: 503 });
    world.cp.respondNext('events', { status: 429, retryAfterSecs: 30 });
    await emitAll(a, [first, second], [1, 2]);
    await drainer.idle();
    expect(world.cp.eventPosts.slice(mark).map((p) => p.status)).toEqual([503, 429]);

    // 1 s is the backoff of the 503; the 429 asked for 30 s, for this agent, not for one rollout.
    await advanceAndKick(a, drainer, 29_999);
    expect(world.cp.eventPosts.length - mark).toBe(2);
    await advanceAndKick(a, drainer, 1);
    expect(log.stats().pending).toBe(0);
    expect(storedSeqs(first)).toEqual([1, 2]);
    expect(storedSeqs(second)).toEqual([1, 2]);
    const warnings = a.logs.messages('warn', DrainerService.name);
    expect(warnings.at(-1)).toMatch(/HTTP 429.*retrying the same seq in 30\.0 s/);
  });

  it('a CP whose answers slow down sees fewer rollouts in flight, and still gets every event in order', async () => {
    const { a, drainer, log } = await start();
    const rollouts = await openWindow(a, drainer, 'dslo');
    // From ~1 ms to 400 ms a POST: far above twice the base plus the slack.
    world.cp.setDefault('events', { delayMs: 400 });
    await emitAll(a, rollouts, [11]);
    await drainer.idle();
    expect(drainer.pacing().window).toBeLessThan(DELIVERY_CONNECTIONS);
    expect(log.stats().pending).toBe(0);
    for (const rollout of rollouts) expect(postsOf(rollout).map(seqOf)).toEqual(range(1, 11));
  });

  it('a delivery in progress never blocks heartbeats: with every delivery connection stalled, heartbeats go out on schedule', async () => {
    const { a, drainer } = await start();
    const hb = a.app.get(HeartbeatService);
    const others = await openWindow(a, drainer, 'dstl');
    const rollout = 'stable@dstlaaaa';
    world.cp.setDefault('events', { stall: true });
    await emit(a, rollout, [1, 2]);
    await emitAll(a, others, [11]);
    await world.cp.waitFor(() => postsOf(rollout).length === 1, 2_000, 'the stalled POST of seq 1');
    await world.cp.waitFor(() => drainer.pacing().inFlight === DELIVERY_CONNECTIONS, 2_000, 'every lane stalled');

    for (let i = 1; i <= 3; i++) {
      const before = world.cp.heartbeats.length;
      a.clock.advance(60_000);
      hb.tick();
      await hb.settled();
      expect(world.cp.heartbeats.length).toBe(before + 1);
      expect(world.cp.heartbeats.at(-1)?.status).toBe(200);
    }
    expect(hb.status()).toMatchObject({ consecutiveFailures: 0, skippedTicks: 0 });
    // Still the one POST, unanswered: the drainer is waiting on it, not sending seq 2.
    expect(trail(rollout)).toEqual(['1:null']);
    expect(drainer.replayStatus().running).toBe(false);
  });
});
