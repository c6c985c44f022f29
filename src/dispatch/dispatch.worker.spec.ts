import { readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { type AgentUnderTest, buildAgent, fakeClosure, makeWorld, type World } from '../../test/support/agent-harness';
import { PATH_DISPATCH } from '../protocol/protocol.constants';
import { ReducerService } from '../reducer/reducer.service';
import type { ReducerInput } from '../reducer/reducer.types';
import { DISPATCH_WAIT_SECS, DispatchWorker } from './dispatch.worker';

const MACHINE = 'web-01';
const BOOT_CLOSURE = fakeClosure('web-01-26.05');
const TARGET = fakeClosure('web-01-26.11', 'b');

/** A §8 body as the CP sends it; tests spoil one field at a time. */
function order(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    hostname: MACHINE,
    rollout_id: 'stable@a1b2c3d4',
    target_closure: TARGET,
    soak_due_at: '2026-11-28T12:30:00.000Z',
    enqueued_at: '2026-11-28T11:59:59.000Z',
    ...over,
  };
}

/** The X of every "polling again in X s" the worker logged, in order. */
function loggedDelays(agent: AgentUnderTest): number[] {
  return agent.logs
    .messages('warn', DispatchWorker.name)
    .map((m) => /polling again in ([\d.]+) s/.exec(m)?.[1])
    .filter((x): x is string => x !== undefined)
    .map(Number);
}

describe('DispatchWorker: the dispatch long-poll against the dev control plane over mutual TLS', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;

  beforeAll(async () => {
    // A poll the CP holds returns 204 after 200 ms: the loop turns quickly.
    world = await makeWorld({ dispatchWaitCapMs: 200 });
  });
  afterAll(async () => {
    await world.close();
  });
  beforeEach(() => {
    world.setCurrentSystem(BOOT_CLOSURE);
  });
  afterEach(async () => {
    jest.restoreAllMocks();
    await agent?.close();
    agent = null;
    world.cp.setDefault('dispatch', null);
  });

  async function start(): Promise<AgentUnderTest> {
    agent = await buildAgent(world, { extra: ['--heartbeat-interval', '60'] });
    return agent;
  }

  /** Activate inputs the reducer was handed, so far (the spy passes every call through). */
  function spyActivates(): () => ReducerInput[] {
    const submits = jest.spyOn(ReducerService.prototype, 'submit');
    return () => submits.mock.calls.map(([input]) => input).filter((input) => input.type === 'Activate');
  }

  it('turns a dispatch queued on the CP into Activate: DispatchAck names the closure before, and the link moves to the target', async () => {
    const rolloutId = 'stable@aa000001';
    const a = await start();
    const reducer = a.app.get(ReducerService);
    await world.cp.waitFor(() => world.cp.dispatchPolls.length > 0, 5_000, 'the first poll');

    world.cp.queueDispatch(MACHINE, { rollout_id: rolloutId, target_closure: TARGET, soak_due_at: '2026-11-28T12:30:00.000Z' });

    const entry = await world.cp.waitFor(
      () => {
        const e = reducer.current().rollouts[rolloutId];
        return e?.state === 'Soaking' ? e : undefined;
      },
      5_000,
      'the rollout Soaking',
    );
    expect(entry).toMatchObject({ targetClosure: TARGET, currentClosureAtDispatch: BOOT_CLOSURE, soakDueAt: '2026-11-28T12:30:00.000Z' });
    expect(readlinkSync(world.currentSystemPath)).toBe(join(world.storeDir, TARGET));

    const ack = await world.cp.waitFor(
      () => world.cp.events(MACHINE, rolloutId).find((e) => e.kind === 'DispatchAck'),
      5_000,
      'DispatchAck on the CP',
    );
    expect(ack.seq).toBe(1);
    expect(ack.event).toMatchObject({ kind: 'DispatchAck', currentClosureAtDispatch: BOOT_CLOSURE });
    expect(a.app.get(DispatchWorker).status()).toMatchObject({
      polling: true,
      consecutiveFailures: 0,
      nextPollAt: null,
      lastOrder: { rolloutId, targetClosure: TARGET, outcome: 'accepted', detail: null },
    });
  });

  it('says in status when the reducer refuses an order: a second dispatch of a rollout it already holds is rejected, with why', async () => {
    const rolloutId = 'stable@aa000002';
    const a = await start();
    const reducer = a.app.get(ReducerService);
    const worker = a.app.get(DispatchWorker);
    await world.cp.waitFor(() => world.cp.dispatchPolls.length > 0, 5_000, 'the first poll');
    world.cp.queueDispatch(MACHINE, { rollout_id: rolloutId, target_closure: TARGET, soak_due_at: '2026-11-28T12:30:00.000Z' });
    await world.cp.waitFor(() => reducer.current().rollouts[rolloutId]?.state === 'Soaking', 5_000, 'the rollout Soaking');

    world.cp.queueDispatch(MACHINE, { rollout_id: rolloutId, target_closure: TARGET, soak_due_at: '2026-11-28T12:30:00.000Z' });

    const lastOrder = await world.cp.waitFor(
      () => {
        const o = worker.status().lastOrder;
        return o?.outcome === 'rejected' ? o : undefined;
      },
      5_000,
      'the second order rejected',
    );
    expect(lastOrder).toEqual({
      rolloutId,
      targetClosure: TARGET,
      receivedAt: a.clock.now().toISOString(),
      outcome: 'rejected',
      detail: expect.stringContaining(`Activate for ${rolloutId} is illegal in state Soaking`),
    });
    expect(a.logs.messages('warn', DispatchWorker.name)).toEqual([expect.stringContaining(`dispatch for ${rolloutId} not accepted`)]);
  });

  it('polls again after a 204, each poll asking wait=60', async () => {
    const before = world.cp.dispatchPolls.length;
    const a = await start();
    await world.cp.waitFor(
      () => world.cp.dispatchPolls.slice(before).filter((p) => p.status === 204).length >= 3,
      5_000,
      'three polls answered 204',
    );
    const polls = world.cp.dispatchPolls.slice(before);
    expect(DISPATCH_WAIT_SECS).toBe(60);
    for (const p of polls) {
      expect(p.method).toBe('GET');
      expect(p.url).toBe(`${PATH_DISPATCH}?wait=60`);
      expect(p.machineId).toBe(MACHINE);
    }
    // A 204 is not a failure: no backoff, nothing to warn about.
    expect(a.app.get(DispatchWorker).status()).toMatchObject({ polling: true, consecutiveFailures: 0, lastError: null });
    expect(a.logs.messages('warn', DispatchWorker.name)).toEqual([]);
  });

  it('refuses an order whose target_closure is an absolute or relative path, or whose rollout id is malformed, naming the field; the reducer never sees it and polling goes on', async () => {
    const activates = spyActivates();
    const a = await start();
    await world.cp.waitFor(() => world.cp.dispatchPolls.length > 0, 5_000, 'the first poll');
    const bad: { over: Record<string, unknown>; field: string; value: string }[] = [
      { over: { target_closure: '/nix/store/x' }, field: 'target_closure', value: '/nix/store/x' },
      { over: { target_closure: '../etc' }, field: 'target_closure', value: '../etc' },
      { over: { rollout_id: 'stable a1b2' }, field: 'rollout_id', value: 'stable a1b2' },
    ];
    for (const [i, b] of bad.entries()) {
      const warned = a.logs.messages('warn', DispatchWorker.name).length;
      world.cp.respondNext('dispatch', { status: 200, body: order({ rollout_id: `stable@bb00000${i}`, ...b.over }) });
      const warning = await world.cp.waitFor(
        () => a.logs.messages('warn', DispatchWorker.name)[warned],
        5_000,
        `the warning for ${b.value}`,
      );
      expect(warning).toContain('dispatch poll failed: bad response body (HTTP 200)');
      expect(warning).toContain(`${b.field}: `);
      expect(warning).toContain(JSON.stringify(b.value));
      // Polling goes on after the 1 s backoff (by the agent's clock), and the next good poll clears the failure.
      const polls = world.cp.dispatchPolls.length;
      a.clock.advance(1_000);
      await world.cp.waitFor(() => world.cp.dispatchPolls.length > polls, 5_000, 'a poll after the refusal');
      await world.cp.waitFor(() => a.app.get(DispatchWorker).status().consecutiveFailures === 0, 5_000, 'the failure cleared');
      expect(a.app.get(DispatchWorker).status()).toMatchObject({
        failingSince: null,
        lastError: expect.stringContaining('bad response body'),
      });
    }
    expect(activates()).toEqual([]);
    expect(a.app.get(ReducerService).current().rollouts).toEqual({});
    expect(a.app.get(DispatchWorker).status().lastOrder).toBeNull();
  });

  it('ignores a dispatch naming another hostname, with a warning, and keeps polling', async () => {
    const activates = spyActivates();
    const a = await start();
    await world.cp.waitFor(() => world.cp.dispatchPolls.length > 0, 5_000, 'the first poll');
    const before = world.cp.dispatchPolls.length;
    world.cp.respondNext('dispatch', { status: 200, body: order({ hostname: 'web-02', rollout_id: 'stable@cc000001' }) });

    const warning = await world.cp.waitFor(() => a.logs.messages('warn', DispatchWorker.name)[0], 5_000, 'the warning');
    expect(warning).toBe('dispatch for stable@cc000001 names host "web-02", not "web-01"; ignored');
    await world.cp.waitFor(
      () => world.cp.dispatchPolls.slice(before).filter((p) => p.status === 204).length >= 1,
      5_000,
      'a poll after the ignored order',
    );
    expect(world.cp.dispatchPolls.slice(before)[0]).toMatchObject({ status: 200, scripted: true });
    expect(activates()).toEqual([]);
    expect(a.app.get(ReducerService).current().rollouts).toEqual({});
    // Well-formed, just not ours: not a failure, no backoff.
    expect(a.app.get(DispatchWorker).status()).toMatchObject({ consecutiveFailures: 0, lastOrder: null });
  });

  it('keeps polling when the reducer fails to take an order (its events could not be made durable)', async () => {
    const a = await start();
    const reducer = a.app.get(ReducerService);
    const submit = reducer.submit.bind(reducer);
    jest
      .spyOn(reducer, 'submit')
      .mockImplementation((input) => (input.type === 'Activate' ? Promise.reject(new Error('event log: ENOSPC')) : submit(input)));
    await world.cp.waitFor(() => world.cp.dispatchPolls.length > 0, 5_000, 'the first poll');
    world.cp.queueDispatch(MACHINE, { rollout_id: 'stable@dd000001', target_closure: TARGET, soak_due_at: '2026-11-28T12:30:00.000Z' });
    const error = await world.cp.waitFor(() => a.logs.messages('error', DispatchWorker.name)[0], 5_000, 'the error');
    expect(error).toContain('stable@dd000001');
    expect(error).toContain('event log: ENOSPC');

    const polls = world.cp.dispatchPolls.length;
    await world.cp.waitFor(() => world.cp.dispatchPolls.length > polls, 5_000, 'a poll after the failed order');
    expect(a.app.get(DispatchWorker).status()).toMatchObject({
      polling: true,
      lastOrder: { rolloutId: 'stable@dd000001', outcome: 'not-applied', detail: 'event log: ENOSPC' },
    });
  });

  it('backs off on errors: 500s are retried after 1 s, then 2 s (jitter pinned)', async () => {
    world.cp.setDefault('dispatch', { status: 500, body: { error: 'internal' } });
    const before = world.cp.dispatchPolls.length;
    const a = await start();
    await world.cp.waitFor(() => loggedDelays(a).length >= 1, 5_000, 'a failed poll');
    const firstFailure = a.clock.now().toISOString();
    a.clock.advance(60_000);
    await world.cp.waitFor(() => loggedDelays(a).length >= 2, 5_000, 'two failed polls');
    expect(loggedDelays(a)).toEqual([1, 2]);
    // The streak is dated from its first failure; the last error from the last.
    expect(a.app.get(DispatchWorker).status()).toMatchObject({
      lastOutcome: 'failed',
      failingSince: firstFailure,
      lastErrorAt: a.clock.now().toISOString(),
      lastPollAt: a.clock.now().toISOString(),
    });
    expect(a.logs.messages('warn', DispatchWorker.name)[1]).toMatch(
      /^dispatch poll failed: HTTP 500: .*; polling again in 2\.0 s \(2 failure\(s\) in a row\)$/,
    );
    // The worker really waited: the second poll came no sooner than the first delay allows (−20 % jitter).
    const [p1, p2] = world.cp.dispatchPolls.slice(before);
    expect(p2.receivedAt.getTime() - p1.receivedAt.getTime()).toBeGreaterThanOrEqual(800);
    expect(a.app.get(DispatchWorker).status()).toMatchObject({ consecutiveFailures: 2, lastError: expect.stringContaining('HTTP 500') });
  });

  it('honours Retry-After: a 503 asking for 3 s puts the next poll 3 s away, not the 1 s backoff', async () => {
    world.cp.respondNext('dispatch', { status: 503, retryAfterSecs: 3 });
    const a = await start();
    await world.cp.waitFor(() => loggedDelays(a).length >= 1, 5_000, 'the failed poll');
    // The first backoff alone would be 1 s.
    expect(loggedDelays(a)).toEqual([3]);
    expect(a.app.get(DispatchWorker).status()).toMatchObject({
      consecutiveFailures: 1,
      lastError: expect.stringContaining('HTTP 503'),
      // Said in status too, not only in the warning.
      nextPollAt: new Date(a.clock.now().getTime() + 3_000).toISOString(),
    });
  });

  it('shutdown during a backoff sleep (Retry-After 60 s) ends the loop at once', async () => {
    world.cp.setDefault('dispatch', { status: 503, retryAfterSecs: 60 });
    const a = await start();
    await world.cp.waitFor(() => loggedDelays(a).length >= 1, 5_000, 'the failed poll');
    const started = Date.now();
    await a.close();
    agent = null;
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(a.app.get(DispatchWorker).status()).toMatchObject({ polling: false, nextPollAt: null });
  });
});

describe('DispatchWorker: a CP that answers "nothing" at once instead of holding the poll', () => {
  let world: World;

  beforeAll(async () => {
    world = await makeWorld({ dispatchWaitCapMs: 0 });
  });
  afterAll(async () => {
    await world.close();
  });

  it('polls at most once a second: no request loop', async () => {
    const agent = await buildAgent(world, { extra: ['--heartbeat-interval', '60'] });
    try {
      await world.cp.waitFor(() => world.cp.dispatchPolls.length >= 3 || undefined, 10_000, 'three polls');
      const [p1, p2, p3] = world.cp.dispatchPolls;
      expect([p1.status, p2.status, p3.status]).toEqual([204, 204, 204]);
      // Each empty answer came at once; the worker waited out the rest of the second (timer slack allowed).
      expect(p2.receivedAt.getTime() - p1.receivedAt.getTime()).toBeGreaterThanOrEqual(950);
      expect(p3.receivedAt.getTime() - p2.receivedAt.getTime()).toBeGreaterThanOrEqual(950);
    } finally {
      await agent.close();
    }
  });
});

describe('DispatchWorker: shutdown while the CP holds the long-poll', () => {
  let world: World;

  beforeAll(async () => {
    world = await makeWorld({ dispatchWaitCapMs: 60_000 });
  });
  afterAll(async () => {
    await world.close();
  });

  it('cuts a held long-poll: app.close() resolves well before the 60 s hold ends', async () => {
    const agent = await buildAgent(world, { extra: ['--heartbeat-interval', '60'] });
    await world.cp.waitFor(() => world.cp.heldPolls(MACHINE) === 1, 5_000, 'a held poll');

    const started = Date.now();
    await agent.close();
    expect(Date.now() - started).toBeLessThan(10_000);

    expect(agent.app.get(DispatchWorker).status().polling).toBe(false);
    // The CP saw the client leave; an abort is shutdown, not a failed poll.
    await world.cp.waitFor(() => world.cp.heldPolls(MACHINE) === 0, 5_000, 'the CP let go of the poll');
    expect(world.cp.dispatchPolls).toHaveLength(1);
    expect(agent.logs.messages('warn', DispatchWorker.name)).toEqual([]);
  });
});
