import { DevControlPlane } from '../../dev/control-plane';
import { type AgentUnderTest, buildAgent, fakeClosure, makeWorld, type World } from '../../test/support/agent-harness';
import { HEARTBEAT_INTERVAL_NAME } from '../heartbeat/heartbeat.constants';
import { HeartbeatService } from '../heartbeat/heartbeat.service';
import { JobRuntime } from '../jobs/job-runtime.service';
import { TIMEOUTS } from '../protocol/protocol.constants';
import { ReducerService } from '../reducer/reducer.service';
import { BootGate } from '../lifecycle/boot-gate';
import { HeartbeatExchange } from './heartbeat-exchange';
import { RecoveryService } from './recovery.service';
import { freePort } from '../../dev/free-port';

const MACHINE = 'web-01';

function snapshot(rolloutId: string, lastEventSeq: number): Record<string, unknown> {
  return {
    rolloutId,
    hostname: MACHINE,
    channel: rolloutId.split('@')[0],
    state: 'Soaking',
    targetClosure: fakeClosure('web-01-26.11', 'b'),
    dispatchedAt: '2026-11-28T11:50:00.000Z',
    soakDueAt: '2026-11-28T12:10:00.000Z',
    lastEventSeq,
  };
}

describe('RecoveryService: the boot-recovery handshake', () => {
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
    jest.restoreAllMocks();
    await agent?.close();
    agent = null;
    await lateCp?.close();
    lateCp = null;
    world.cp.setDefault('heartbeat', null);
    world.cp.setBootstrap(MACHINE, []);
  });

  // The decorated tick is mounted at bootstrap; the job it drives starts only after the handshake.
  const hasJob = (a: AgentUnderTest): boolean =>
    a.app
      .get(JobRuntime)
      .status()
      .some((j) => j.name === HEARTBEAT_INTERVAL_NAME && j.state !== 'waiting' && j.state !== 'stopped');

  async function advanceAndTick(a: AgentUnderTest, ms: number): Promise<void> {
    const hb = a.app.get(HeartbeatService);
    a.clock.advance(ms);
    hb.tick();
    await hb.settled();
  }

  it('applies the handshake snapshots to the reducer before the first steady heartbeat', async () => {
    world.cp.setBootstrap(MACHINE, [snapshot('stable@a1b2c3d4', 4), snapshot('canary@e5f6', 1)]);
    const before = world.cp.heartbeats.length;
    agent = await buildAgent(world, { extra: ['--heartbeat-interval', '60'] });
    const outcome = await agent.app.get(RecoveryService).whenComplete();

    expect(outcome).toMatchObject({ ok: true, snapshotsApplied: 2, snapshotsRejected: 0 });
    expect(agent.app.get(ReducerService).lastEventSeqByRollout()).toEqual({ 'stable@a1b2c3d4': 4, 'canary@e5f6': 1 });
    expect(world.cp.heartbeats.length).toBe(before + 1);
    expect(agent.app.get(RecoveryService).status()).toEqual({
      completedAt: agent.clock.now().toISOString(),
      reachedControlPlane: true,
      snapshotsApplied: 2,
    });
    // The job starts after the snapshots were applied, and its first beat is a full interval away.
    const order = agent.logs.entries.map((e) => e.message);
    const applied = order.findIndex((m) => m.startsWith('boot-recovery answer: 2 rollout snapshot(s)'));
    const jobStarted = order.findIndex((m) => m.startsWith('heartbeat every 60 s'));
    expect(applied).toBeGreaterThanOrEqual(0);
    expect(jobStarted).toBeGreaterThan(applied);
    expect(agent.app.get(HeartbeatService).status().nextDueAt).toBe(new Date(agent.clock.now().getTime() + 60_000).toISOString());

    // The first steady heartbeat already reports the seqs the handshake brought.
    await advanceAndTick(agent, 60_000);
    expect(world.cp.heartbeats.length).toBe(before + 2);
    expect((world.cp.heartbeats.at(-1)!.body as Record<string, unknown>).last_event_seq_by_rollout).toEqual({
      'stable@a1b2c3d4': 4,
      'canary@e5f6': 1,
    });
  });

  it('runs the handshake exactly once, with the 30 s boot-recovery deadline', async () => {
    const send = jest.spyOn(HeartbeatExchange.prototype, 'send');
    const before = world.cp.heartbeats.length;
    agent = await buildAgent(world);
    const recovery = agent.app.get(RecoveryService);
    const first = await recovery.whenComplete();

    // Asked again (a second bootstrap call, a direct run()): the same outcome, no second request.
    recovery.onApplicationBootstrap();
    expect(await recovery.run()).toBe(first);
    expect(await recovery.whenComplete()).toBe(first);
    expect(world.cp.heartbeats.length).toBe(before + 1);
    expect(send).toHaveBeenCalledTimes(1);
    expect(send.mock.calls[0].slice(0, 2)).toEqual(['boot-recovery', TIMEOUTS.bootRecoveryMs]);
    expect(TIMEOUTS.bootRecoveryMs).toBe(30_000);
  });

  it('opens the boot gate and completes even when the exchange rejects with something that is not an Error', async () => {
    // A rejection value without .message once threw inside the handler: the gate never opened and shutdown waited forever.
    // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- a non-Error rejection is what this case is about
    jest.spyOn(HeartbeatExchange.prototype, 'send').mockImplementationOnce(() => Promise.reject(undefined));
    agent = await buildAgent(world);
    const recovery = agent.app.get(RecoveryService);
    expect(await recovery.whenComplete()).toMatchObject({ ok: false, failure: { kind: 'network', detail: 'undefined' } });
    expect(agent.app.get(BootGate).isOpen()).toBe(true);
    expect(agent.logs.messages('warn', 'RecoveryService')).toEqual([
      expect.stringMatching(/^boot recovery: control plane not reached .*; starting anyway/),
    ]);
  });

  it('makes the heartbeat job wait for the handshake, though app.init() does not', async () => {
    world.cp.respondNext('heartbeat', { delayMs: 300 });
    const before = world.cp.heartbeats.length;
    agent = await buildAgent(world, { extra: ['--heartbeat-interval', '1'] });
    const recovery = agent.app.get(RecoveryService);
    const hb = agent.app.get(HeartbeatService);

    // init() returned while the CP still holds the handshake.
    expect(recovery.status().completedAt).toBeNull();
    expect(hb.status().nextDueAt).toBeNull();
    expect(hasJob(agent)).toBe(false);
    agent.clock.advance(10_000);
    hb.tick();
    expect(hb.status().inFlight).toBe(false);

    await recovery.whenComplete();
    expect(hasJob(agent)).toBe(true);
    expect(world.cp.heartbeats.length).toBe(before + 1);
    expect(world.cp.heartbeats.at(-1)!.status).toBe(200);
  });

  it('starts with the control plane unreachable, and the heartbeat gets through once it is up', async () => {
    const port = await freePort();
    agent = await buildAgent(world, { controlPlaneUrl: `https://127.0.0.1:${port}`, extra: ['--heartbeat-interval', '60'] });
    const recovery = agent.app.get(RecoveryService);
    const hb = agent.app.get(HeartbeatService);
    const outcome = await recovery.whenComplete();

    expect(outcome).toMatchObject({ ok: false, failure: { kind: 'connect' } });
    expect(recovery.status()).toMatchObject({ reachedControlPlane: false, snapshotsApplied: 0 });
    expect(agent.logs.messages('warn', 'RecoveryService')).toEqual([
      expect.stringMatching(/^boot recovery: control plane not reached \(cannot connect: ECONNREFUSED.*\); starting anyway/),
    ]);
    expect(hasJob(agent)).toBe(true);
    expect(hb.status()).toMatchObject({ consecutiveFailures: 1, lastError: { kind: 'connect' } });
    // The first retry follows the backoff, not the steady interval.
    expect(hb.status().nextDueAt).toBe(new Date(agent.clock.now().getTime() + 5_000).toISOString());

    lateCp = await DevControlPlane.start({ pki: world.pki, port });
    await advanceAndTick(agent, 5_000);
    expect(lateCp.heartbeats).toHaveLength(1);
    expect(lateCp.heartbeats[0].status).toBe(200);
    expect(hb.status()).toMatchObject({ consecutiveFailures: 0, lastSuccessAt: agent.clock.now().toISOString() });
  });

  it('starts while the control plane answers 503 with Retry-After, and the heartbeat waits that long before retrying', async () => {
    world.cp.setDefault('heartbeat', { status: 503, retryAfterSecs: 20, body: { error: 'starting' } });
    const before = world.cp.heartbeats.length;
    agent = await buildAgent(world, { extra: ['--heartbeat-interval', '60'] });
    const recovery = agent.app.get(RecoveryService);
    const hb = agent.app.get(HeartbeatService);
    const outcome = await recovery.whenComplete();
    expect(outcome).toMatchObject({ ok: false, retryAfterSecs: 20, failure: { kind: 'http-status', status: 503 } });
    expect(recovery.status().reachedControlPlane).toBe(false);
    expect(agent.logs.messages('warn', 'RecoveryService')[0]).toContain('HTTP 503');

    world.cp.setDefault('heartbeat', null);
    await advanceAndTick(agent, 19_999);
    expect(world.cp.heartbeats.length).toBe(before + 1);
    await advanceAndTick(agent, 1);
    expect(world.cp.heartbeats.length).toBe(before + 2);
    expect(world.cp.heartbeats.at(-1)!.status).toBe(200);
    expect(hb.status().consecutiveFailures).toBe(0);
  });

  it('starts no heartbeat job when the agent is closed during the handshake', async () => {
    world.cp.respondNext('heartbeat', { stall: true });
    agent = await buildAgent(world);
    const recovery = agent.app.get(RecoveryService);
    const a = agent;
    await a.close();
    agent = null;
    // close() resolved only after it had ended the stalled handshake, well before its 30 s deadline.
    expect(recovery.status().reachedControlPlane).toBe(false);
    expect(await recovery.whenComplete()).toMatchObject({ ok: false, failure: { kind: 'aborted' } });
    expect(a.logs.messages('log', 'RecoveryService')).toContain('boot recovery: abandoned, the agent is shutting down');
    expect(a.logs.messages('warn', 'RecoveryService')).toEqual([]);
    expect(hasJob(a)).toBe(false);
    expect(a.app.get(HeartbeatService).status().nextDueAt).toBeNull();
  });
});
