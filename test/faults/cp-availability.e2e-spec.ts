import { dispatch, FULL_ROLLOUT, heldKinds, ROLLOUT_A, ROLLOUT_B, seqsWithTwoBodies } from '../support/cp-record';
import {
  fakeClosure,
  killAllFaultAgents,
  makeFaultWorld,
  startFaultAgent,
  type FaultAgent,
  type Json,
  type World,
} from '../support/fault-world';
import { eventually } from '../support/polling';

// One agent lives through the three outages in turn: the CP absent at boot,
// gone for a while mid-run, and back without its database.
describe('faults: the control plane goes away', () => {
  let world: World;
  let agent: FaultAgent;

  beforeAll(async () => {
    // Two rollouts lose their events at once below: the per-rollout Replay-From names both.
    world = await makeFaultWorld({ replayForm: 'per-rollout' });
  });
  afterAll(async () => {
    await killAllFaultAgents();
    await world.close();
  });

  const heartbeat = (s: Json): Json => s.heartbeat as Json;
  const outbound = (s: Json): Json => s.outbound as Json;
  const rollout = (s: Json, id: string): Json | undefined => (s.rollouts as Json[]).find((r) => r.rolloutId === id);

  it('CP down at boot: the agent starts anyway, says why, and heartbeats once the CP is up on that port', async () => {
    await world.cp.goOffline();
    agent = await startFaultAgent(world);

    const said = await agent.waitForLog(/^boot recovery: control plane not reached/, 'the boot-recovery warning');
    expect(said.level).toBe('warn');
    expect(said.message).toMatch(/cannot connect: ECONNREFUSED.*starting anyway, the heartbeat keeps trying/);
    const down = await agent.status();
    expect(down.recovery).toMatchObject({ reachedControlPlane: false });
    expect(heartbeat(down)).toMatchObject({ lastSuccessAt: null, lastError: { kind: 'connect' } });
    expect((heartbeat(down).lastError as Json).message).toMatch(/ECONNREFUSED/);
    expect((await agent.admin('/readyz')).status).toBe(503);
    expect((await agent.admin('/healthz')).status).toBe(200);

    await world.cp.comeBackOnline();
    await world.cp.waitFor(() => world.cp.heartbeats.filter((h) => h.status === 200).length >= 2, 15_000, 'two answered heartbeats');
    const up = await agent.statusWhen((s) => heartbeat(s).consecutiveFailures === 0, 'a successful heartbeat');
    expect(heartbeat(up).lastSuccessAt).not.toBeNull();
    expect((await agent.admin('/readyz')).status).toBe(200);
    expect(agent.logs().some((l) => /^heartbeat succeeded again after \d+ failure/.test(l.message))).toBe(true);
    expect(agent.run.child.exitCode).toBeNull();
  });

  it('CP down mid-run: an event logged during the outage is kept, and delivered once the CP is back; heartbeats resume', async () => {
    dispatch(world, ROLLOUT_A, fakeClosure('web-01-26.11', 'b'), 3_000);
    await world.cp.waitFor(
      () => heldKinds(world, ROLLOUT_A).length === 4,
      15_000,
      'DispatchAck, ActivationStarted, ActivationCompleted, ProbeTopologyDeclared held',
    );

    await world.cp.goOffline();
    const heartbeatsBefore = world.cp.heartbeats.length;
    // The soak ends during the outage: Converged is logged with nowhere to go.
    const during = await agent.statusWhen(
      (s) => rollout(s, ROLLOUT_A)?.state === 'Converged' && heartbeat(s).consecutiveFailures !== 0,
      'Converged logged and a failed heartbeat, while the CP is away',
    );
    expect(outbound(during).pending).toBe(1);
    expect(rollout(during, ROLLOUT_A)).toMatchObject({ lastEventSeq: 5, lastDeliveredSeq: 4 });
    expect((heartbeat(during).lastError as Json).message).toMatch(/ECONNREFUSED/);
    expect(agent.problems().some((m) => /^heartbeat to the control plane failed: cannot connect/.test(m))).toBe(true);

    await world.cp.comeBackOnline();
    await world.cp.waitFor(
      () => heldKinds(world, ROLLOUT_A).length === FULL_ROLLOUT.length,
      20_000,
      'Converged delivered after the outage',
    );
    expect(heldKinds(world, ROLLOUT_A)).toEqual(FULL_ROLLOUT);
    await world.cp.waitFor(
      () => world.cp.heartbeats.slice(heartbeatsBefore).filter((h) => h.status === 200).length >= 2,
      15_000,
      'heartbeats answered again',
    );
    const after = await agent.statusWhen((s) => outbound(s).pending === 0, 'nothing pending');
    expect(rollout(after, ROLLOUT_A)).toMatchObject({ lastDeliveredSeq: 5 });
    expect(seqsWithTwoBodies(world.cp)).toEqual([]);
  });

  it('CP loses its database: the replay gives it back every event, same seqs, same bytes', async () => {
    dispatch(world, ROLLOUT_B, fakeClosure('web-01-26.12', 'c'), 1_000);
    await world.cp.waitFor(
      () => heldKinds(world, ROLLOUT_B).length === FULL_ROLLOUT.length,
      15_000,
      'the second rollout converged and held',
    );
    await agent.statusWhen((s) => outbound(s).pending === 0, 'nothing pending');
    const held = (): string[] => world.cp.events(world.pki.machineId).map((e) => `${e.rolloutId}#${e.seq} ${e.raw}`);
    const before = held();
    expect(before).toHaveLength(2 * FULL_ROLLOUT.length);

    world.cp.loseAllState();
    await world.cp.waitFor(() => held().length === 2 * FULL_ROLLOUT.length, 15_000, 'all ten events held again');
    expect(held().sort()).toEqual([...before].sort());
    expect(heldKinds(world, ROLLOUT_A)).toEqual(FULL_ROLLOUT);
    expect(heldKinds(world, ROLLOUT_B)).toEqual(FULL_ROLLOUT);
    expect(seqsWithTwoBodies(world.cp)).toEqual([]);
    expect(agent.logs().some((l) => /the control plane asks for a replay/.test(l.message))).toBe(true);
    // Nothing new was invented to fill the gap: the agent's seqs did not move.
    const after = await agent.status();
    expect(rollout(after, ROLLOUT_A)).toMatchObject({ lastEventSeq: 5, lastDeliveredSeq: 5 });
    expect(rollout(after, ROLLOUT_B)).toMatchObject({ lastEventSeq: 5, lastDeliveredSeq: 5 });
    await eventually(async () => !(((await agent.status()).outbound as Json).replay as Json).running, 10_000, 'the replay finished');

    expect(await agent.stop()).toBe(0);
  });
});
