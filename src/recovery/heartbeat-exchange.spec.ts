import { type AgentUnderTest, buildAgent, fakeClosure, makeWorld, type World } from '../../test/support/agent-harness';
import type { ReplayFrom } from '../protocol/replay-from';
import { ReducerService } from '../reducer/reducer.service';
import { HeartbeatExchange } from './heartbeat-exchange';
import { REPLAY_PORT, type ReplayPort } from './recovery.ports';
import { RecoveryService } from './recovery.service';

const MACHINE = 'web-01';
const ROLLOUT = 'stable@a1b2c3d4';

function snapshot(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    rolloutId: ROLLOUT,
    hostname: MACHINE,
    channel: 'stable',
    state: 'Activating',
    targetClosure: fakeClosure('web-01-26.11', 'b'),
    dispatchedAt: '2026-11-28T11:50:00.000Z',
    lastEventSeq: 2,
    ...over,
  };
}

describe('HeartbeatExchange against the dev control plane over mutual TLS', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;
  let replays: { value: ReplayFrom; source: string }[];

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterAll(async () => {
    await world.close();
  });
  afterEach(async () => {
    await agent?.close();
    agent = null;
    world.cp.setBootstrap(MACHINE, []);
    world.cp.setReplayFrom(null);
  });

  /** The agent, its boot handshake done; the steady job stays idle as long as the fake clock stands still. */
  async function exchange(): Promise<{ a: AgentUnderTest; ex: HeartbeatExchange }> {
    replays = [];
    const port: ReplayPort = { requestReplay: (value, source) => replays.push({ value, source }) };
    // OutboundModule's replay port, replaced by one that records.
    agent = await buildAgent(world, { customize: (b) => b.overrideProvider(REPLAY_PORT).useValue(port) });
    await agent.app.get(RecoveryService).whenComplete();
    return { a: agent, ex: agent.app.get(HeartbeatExchange) };
  }

  it('reports success with the snapshots it applied and the ones it rejected', async () => {
    const { a, ex } = await exchange();
    world.cp.setBootstrap(MACHINE, [snapshot(), snapshot({ rolloutId: 'not-a-rollout-id' }), snapshot({ hostname: 'db-02' })]);
    const outcome = await ex.send('heartbeat', 10_000);
    expect(outcome).toEqual({
      ok: true,
      failure: null,
      retryAfterSecs: null,
      snapshotsApplied: 1,
      snapshotsRejected: 2,
      replayFrom: null,
      // The fake clock stands still during the call: no time passes by it.
      attempt: { sentAt: a.clock.now().toISOString(), latencyMs: 0, httpStatus: 200 },
    });
    expect(a.app.get(ReducerService).current().rollouts[ROLLOUT]).toMatchObject({ state: 'Activating', lastEventSeq: 2 });
    expect(a.logs.messages('warn', 'HeartbeatExchange').join('\n')).toContain('bootstrap_rollouts[1].rolloutId');
  });

  it.each([
    ['HTTP 503 with Retry-After: 30 → wait at least 30 s', 503, 30, 30],
    ['HTTP 429 with Retry-After: 30 → wait at least 30 s', 429, 30, 30],
    ['HTTP 503 without Retry-After → no minimum', 503, undefined, null],
    ['HTTP 500 with Retry-After: 30 → no minimum', 500, 30, null],
    ['HTTP 502 with Retry-After: 30 → no minimum', 502, 30, null],
  ])('passes on Retry-After from 503 and 429 only: %s', async (_name, status, retryAfterSecs, expected) => {
    const { ex } = await exchange();
    world.cp.respondNext('heartbeat', { status, retryAfterSecs });
    const outcome = await ex.send('heartbeat', 10_000);
    expect(outcome.ok).toBe(false);
    expect(outcome.failure).toMatchObject({ kind: 'http-status', status });
    expect(outcome.retryAfterSecs).toBe(expected);
  });

  it('takes no snapshots from a failed answer', async () => {
    const { a, ex } = await exchange();
    world.cp.respondNext('heartbeat', { status: 500, body: { received_at: null, bootstrap_rollouts: [snapshot()] } });
    const outcome = await ex.send('heartbeat', 10_000);
    expect(outcome).toMatchObject({ ok: false, snapshotsApplied: 0, snapshotsRejected: 0 });
    expect(a.app.get(ReducerService).current().rollouts).toEqual({});
  });

  it.each([
    ['HTTP 503 with Retry-After (a CP restoring its database)', { status: 503, retryAfterSecs: 30 }],
    ['HTTP 500', { status: 500 }],
    ['HTTP 502', { status: 502 }],
    ['HTTP 429', { status: 429 }],
    ['HTTP 404', { status: 404 }],
    ['HTTP 200 with a body that breaks the schema', { status: 200, body: { bootstrap_rollouts: 'none' } }],
  ])('honours Replay-From on a failed answer, %s, and still reports the heartbeat as failed', async (_name, script) => {
    const { a, ex } = await exchange();
    world.cp.respondNext('heartbeat', {
      ...script,
      headers: { 'X-Nixfleet-Replay-From': '3' },
      body: 'body' in script ? script.body : { received_at: null, bootstrap_rollouts: [snapshot()] },
    });
    const outcome = await ex.send('heartbeat', 10_000);
    expect(outcome.ok).toBe(false);
    expect(outcome.failure).toMatchObject({ status: script.status });
    expect(outcome.replayFrom).toEqual({ form: 'plain', fromSeq: 3 });
    expect(outcome.snapshotsApplied).toBe(0);
    expect(replays).toEqual([{ value: { form: 'plain', fromSeq: 3 }, source: 'heartbeat' }]);
    expect(ex.lastReplayFrom).toMatchObject({ value: '3', source: 'heartbeat' });
    expect(a.logs.messages('warn', 'HeartbeatExchange')).toContain(
      `the control plane asks for a replay on a failed HTTP ${script.status} answer (X-Nixfleet-Replay-From: 3); replaying from the event log`,
    );
  });

  it.each([401, 403, 426])(
    'ignores Replay-From on an HTTP %i answer, which refuses our identity or protocol, with one warning',
    async (status) => {
      const { a, ex } = await exchange();
      world.cp.respondNext('heartbeat', { status, headers: { 'X-Nixfleet-Replay-From': '3' } });
      const outcome = await ex.send('heartbeat', 10_000);
      expect(outcome).toMatchObject({ ok: false, failure: { kind: 'http-status', status }, replayFrom: null });
      expect(replays).toEqual([]);
      expect(ex.lastReplayFrom).toBeNull();
      expect(a.logs.messages('warn', 'HeartbeatExchange')).toEqual([
        `X-Nixfleet-Replay-From: 3 came on an HTTP ${status} answer, which refuses this agent's identity or protocol; ignored, nothing is replayed`,
      ]);
    },
  );

  it('ignores a malformed Replay-From on a failed answer with one warning', async () => {
    const { a, ex } = await exchange();
    world.cp.respondNext('heartbeat', { status: 503, headers: { 'X-Nixfleet-Replay-From': 'soon' } });
    const outcome = await ex.send('heartbeat', 10_000);
    expect(outcome).toMatchObject({ ok: false, replayFrom: null });
    expect(replays).toEqual([]);
    const warned = a.logs.messages('warn', 'HeartbeatExchange');
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatch(/X-Nixfleet-Replay-From .* is malformed .*"soon".*ignored/);
  });

  it('treats a 200 whose body breaks the response schema as a failure', async () => {
    const { ex } = await exchange();
    world.cp.respondNext('heartbeat', { status: 200, body: { bootstrap_rollouts: 'none' } });
    const outcome = await ex.send('heartbeat', 10_000);
    expect(outcome.ok).toBe(false);
    expect(outcome.failure).toMatchObject({ kind: 'bad-body', status: 200 });
    expect(outcome.failure?.detail).toContain('bootstrap_rollouts');
  });

  it('accepts an answer without bootstrap_rollouts as an empty list', async () => {
    const { ex } = await exchange();
    world.cp.respondNext('heartbeat', { status: 200, body: { received_at: null } });
    expect(await ex.send('heartbeat', 10_000)).toMatchObject({ ok: true, snapshotsApplied: 0, snapshotsRejected: 0 });
  });

  it('says which exchange a Replay-From came from: the boot handshake or a steady heartbeat', async () => {
    world.cp.setReplayFrom('5');
    const { ex } = await exchange();
    expect(ex.lastReplayFrom).toMatchObject({ value: '5', source: 'boot-recovery' });
    expect(replays).toEqual([{ value: { form: 'plain', fromSeq: 5 }, source: 'boot-recovery' }]);
    world.cp.setReplayFrom('stable@a1b2c3d4=1');
    const outcome = await ex.send('heartbeat', 10_000);
    expect(outcome.replayFrom).toEqual({ form: 'per-rollout', entries: [{ rolloutId: ROLLOUT, fromSeq: 1 }] });
    expect(ex.lastReplayFrom).toMatchObject({ value: 'stable@a1b2c3d4=1', source: 'heartbeat' });
    expect(replays).toHaveLength(2);
  });

  it('estimates clock skew from the Date header of a failed answer too', async () => {
    const { a, ex } = await exchange();
    world.cp.respondNext('heartbeat', {
      status: 500,
      headers: { Date: new Date(a.clock.now().getTime() - 300_000).toUTCString() },
    });
    await ex.send('heartbeat', 10_000);
    expect(Math.abs(ex.clockSkewSecs! - -300)).toBeLessThanOrEqual(1);
  });

  it('warns once when the clocks part, again when the host crosses to the other side, and says when they agree again', async () => {
    const { a, ex } = await exchange();
    const cpAt = (offsetSecs: number) => ({ headers: { Date: new Date(a.clock.now().getTime() + offsetSecs * 1000).toUTCString() } });
    // The harness's fake clock is days off the CP's real one: start from agreement.
    world.cp.respondNext('heartbeat', cpAt(0));
    await ex.send('heartbeat', 10_000);
    const before = a.logs.messages('warn', 'ClockSkew').length;
    const infoBefore = a.logs.messages('log', 'ClockSkew').length;
    const warnings = () => a.logs.messages('warn', 'ClockSkew').slice(before);
    world.cp.respondNext('heartbeat', cpAt(-3600));
    world.cp.respondNext('heartbeat', cpAt(-3601));
    await ex.send('heartbeat', 10_000);
    await ex.send('heartbeat', 10_000);
    expect(warnings()).toEqual([
      expect.stringMatching(/^this host's clock is 360\d s ahead of the control plane's \(by its Date header\)/),
    ]);
    world.cp.respondNext('heartbeat', cpAt(600));
    await ex.send('heartbeat', 10_000);
    expect(warnings()[1]).toMatch(/^this host's clock is 60\d s behind the control plane's/);
    world.cp.respondNext('heartbeat', cpAt(0));
    await ex.send('heartbeat', 10_000);
    expect(warnings()).toHaveLength(2);
    expect(a.logs.messages('log', 'ClockSkew').slice(infoBefore)).toEqual([
      expect.stringMatching(/^this host's clock agrees with the control plane's again \(within \d s\)$/),
    ]);
  });

  it('takes no skew estimate from a call during which the wall clock stepped', async () => {
    const { a, ex } = await exchange();
    world.cp.respondNext('heartbeat', { headers: { Date: a.clock.now().toUTCString() } });
    await ex.send('heartbeat', 10_000);
    const before = ex.clockSkewSecs;
    expect(Math.abs(before!)).toBeLessThanOrEqual(1);
    // The wall clock jumps a day while the CP holds the answer: the midpoint would be half a day off.
    world.cp.respondNext('heartbeat', { delayMs: 100, headers: { Date: a.clock.now().toUTCString() } });
    const sent = ex.send('heartbeat', 10_000);
    await world.cp.waitFor(
      () => world.cp.heartbeats.at(-1)?.scripted && world.cp.heartbeats.at(-1)?.status === null,
      2000,
      'the held heartbeat',
    );
    a.clock.stepWall(86_400_000);
    await sent;
    expect(ex.clockSkewSecs).toBe(before);
    // Half a day, as a number of its own: the boot heartbeat's skew (the fake clock against today's date) may contain those digits.
    expect(a.logs.messages('warn', 'ClockSkew').filter((m) => /\b43\d\d\d s/.test(m))).toEqual([]);
  });

  it('cuts the call at the deadline it is given', async () => {
    const { ex } = await exchange();
    world.cp.respondNext('heartbeat', { stall: true });
    const outcome = await ex.send('heartbeat', 300);
    expect(outcome).toMatchObject({ ok: false, failure: { kind: 'timeout' }, retryAfterSecs: null });
    expect(outcome.failure?.detail).toContain('300 ms');
  });

  it('remembers the closure the last heartbeat reported', async () => {
    const { ex } = await exchange();
    expect(ex.currentClosure).toBe(fakeClosure('web-01-26.05'));
    world.setCurrentSystem(null);
    try {
      await ex.send('heartbeat', 10_000);
      expect(ex.currentClosure).toBeNull();
    } finally {
      world.setCurrentSystem(fakeClosure('web-01-26.05'));
    }
  });
});
