import { readFileSync, readlinkSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
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

const TARGET_A = fakeClosure('web-01-26.11', 'b');
const TARGET_B = fakeClosure('web-01-26.12', 'c');

// One state dir lives through a SIGKILL, a SIGTERM and a torn log, in turn.
describe('faults: the agent process killed, stopped, and its log torn', () => {
  let world: World;
  let agent: FaultAgent;
  let port: number;
  const stateDir = (): string => join(world.dir, 'state');
  const restart = async (): Promise<FaultAgent> => startFaultAgent(world, { stateDir: stateDir(), adminPort: port });
  const rollout = (s: Json, id: string): Json | undefined => (s.rollouts as Json[]).find((r) => r.rolloutId === id);

  beforeAll(async () => {
    world = await makeFaultWorld();
  });
  afterAll(async () => {
    await killAllFaultAgents();
    await world.close();
  });

  it('kill -9 mid-rollout, an event POST in flight: after a restart every event arrives, no seq is sent with two bodies', async () => {
    agent = await startFaultAgent(world, { stateDir: stateDir() });
    port = agent.port;
    // The CP takes its time over each event, so the kill lands while one is on the wire.
    world.cp.setDefault('events', { delayMs: 700 });
    dispatch(world, ROLLOUT_A, TARGET_A, 1_500);
    const inFlight = await world.cp.waitFor(
      () => world.cp.eventPosts.find((p) => ((p.body as Json).event as Json).seq === 2 && p.status === null),
      15_000,
      'seq 2 on the wire',
    );
    expect(await agent.kill()).toBe('SIGKILL');
    expect(inFlight.status).toBeNull();

    world.cp.setDefault('events', null);
    agent = await restart();
    await world.cp.waitFor(
      () => heldKinds(world, ROLLOUT_A).length === FULL_ROLLOUT.length,
      20_000,
      'the whole rollout held after the restart',
    );
    expect(heldKinds(world, ROLLOUT_A)).toEqual(FULL_ROLLOUT);
    expect(seqsWithTwoBodies(world.cp)).toEqual([]);
    expect(readlinkSync(world.currentSystemPath)).toBe(join(world.storeDir, TARGET_A));
    const s = await agent.statusWhen((st) => (st.outbound as Json).pending === 0, 'nothing pending');
    expect(rollout(s, ROLLOUT_A)).toMatchObject({ state: 'Converged', lastEventSeq: 5, lastDeliveredSeq: 5 });
    expect(agent.logs().some((l) => /^restored 1 rollout\(s\) from \d+ logged event\(s\): stable@a1b2c3d4/.test(l.message))).toBe(true);
  });

  it('SIGTERM with a heartbeat in flight: the heartbeat finishes, nothing new starts, exit 0', async () => {
    const from = world.cp.heartbeats.length;
    world.cp.respondNext('heartbeat', { delayMs: 2_000 });
    const slow = await world.cp.waitFor(() => world.cp.heartbeats.slice(from).find((h) => h.scripted), 10_000, 'the slow heartbeat');
    agent.run.child.kill('SIGTERM');
    expect(await agent.run.exited).toBe(0);
    // The CP wrote its answer to a connection that was still open: the agent waited for it.
    expect(slow.status).toBe(200);
    expect(agent.problems().filter((m) => /heartbeat/.test(m))).toEqual([]);
    expect(world.cp.heartbeats.filter((h) => h.receivedAt > slow.receivedAt)).toEqual([]);
    expect(agent.logs().some((l) => /stopped cleanly/.test(l.message))).toBe(true);
  });

  it('a torn log tail (the last record cut mid-way while stopped): the restart repairs it, says so, and loses nothing else', async () => {
    const logPath = join(stateDir(), 'events.log');
    const before = readFileSync(logPath, 'utf8');
    const lines = before.split('\n').filter((l) => l !== '');
    const last = lines[lines.length - 1];
    // The last record of a finished rollout: the mark that its last event was delivered.
    expect(JSON.parse(last.slice(9))).toMatchObject({ t: 'delivered', rolloutId: ROLLOUT_A, seq: 5 });
    const cutAt = before.length - 1 - Math.floor(last.length / 2);
    truncateSync(logPath, Buffer.byteLength(before.slice(0, cutAt)));

    const heldBefore = world.cp.events(world.pki.machineId).map((e) => e.raw);
    const postsBefore = world.cp.eventPosts.length;
    agent = await restart();
    const said = await agent.waitForLog(/a record torn by a crash \(\d+ bytes at the end\) was cut off/, 'the repair said');
    expect(said.message).toContain(logPath);
    const repaired = readFileSync(logPath, 'utf8');
    expect(repaired.endsWith('\n')).toBe(true);
    expect(repaired.startsWith(lines.slice(0, -1).join('\n'))).toBe(true);

    const s = await agent.statusWhen((st) => (st.outbound as Json).pending === 0, 'nothing pending');
    expect(rollout(s, ROLLOUT_A)).toMatchObject({ state: 'Converged', lastEventSeq: 5, lastDeliveredSeq: 5 });
    // With its mark gone, seq 5 counts as undelivered: resent, the same bytes, taken as the duplicate it is.
    const resent = world.cp.eventPosts.slice(postsBefore).filter((p) => (p.body as Json).rolloutId === ROLLOUT_A);
    expect(resent.map((p) => [((p.body as Json).event as Json).seq, p.outcome])).toEqual([[5, 'duplicate']]);
    // The log goes on: a new rollout gets its seqs from 1, the old one is untouched.
    dispatch(world, ROLLOUT_B, TARGET_B, 1_000);
    await world.cp.waitFor(() => heldKinds(world, ROLLOUT_B).length === FULL_ROLLOUT.length, 20_000, 'the next rollout delivered');
    expect(heldKinds(world, ROLLOUT_B)).toEqual(FULL_ROLLOUT);
    expect(world.cp.events(world.pki.machineId, ROLLOUT_A).map((e) => e.raw)).toEqual(heldBefore);
    expect(seqsWithTwoBodies(world.cp)).toEqual([]);
    expect(await agent.stop()).toBe(0);
  });
});
