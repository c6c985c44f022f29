import { spawnSync } from 'node:child_process';
import { mkdirSync, readlinkSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ActivationService } from '../src/activation/activation.service';
import { RecoveryService } from '../src/recovery/recovery.service';
import { ReducerService } from '../src/reducer/reducer.service';
import { type AgentUnderTest, buildAgent, fakeClosure, makeWorld, type World } from './support/agent-harness';

const ROLLOUT = 'stable@a1b2c3d4';
const TARGET = fakeClosure('web-01-26.11', 'b');

// The project's machines and CI run as root, so a real full file system is at hand.
describe('the event log on a full file system, through the real module graph', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;
  let mnt: string;

  beforeAll(async () => {
    world = await makeWorld();
    mnt = join(world.dir, 'tiny');
    mkdirSync(mnt);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=128k', 'tmpfs', mnt]);
    if (mounted.status !== 0) throw new Error(`cannot mount a 128 KiB tmpfs at ${mnt} (needs root): ${mounted.stderr.toString()}`);
  });
  afterAll(async () => {
    await agent?.close();
    spawnSync('umount', [mnt]);
    await world.close();
  });

  it('reports the failed append, posts nothing, changes nothing, and works again once there is space', async () => {
    const stateDir = join(mnt, 'state');
    agent = await buildAgent(world, { stateDir });
    await agent.app.get(RecoveryService).whenComplete();
    const reducer = agent.app.get(ReducerService);
    const filler = join(mnt, 'filler');
    const { bavail, bsize } = statfsSync(mnt);
    writeFileSync(filler, Buffer.alloc(bavail * bsize));

    const activate = {
      type: 'Activate' as const,
      rolloutId: ROLLOUT,
      targetClosure: TARGET,
      soakDueAt: '2026-11-28T13:00:00.000Z',
      currentClosure: null,
      dispatchedAt: '2026-11-28T12:00:00.000Z',
    };
    await expect(reducer.submit(activate)).rejects.toThrow(/ENOSPC/);
    expect(reducer.current().rollouts).toEqual({});
    expect(agent.logs.messages('error').join('\n')).toMatch(/Activate for stable@a1b2c3d4 not applied: its events could not be made durable .*ENOSPC.*nothing sent to the control plane/);
    // No switch fired either: the transition was not committed.
    await agent.app.get(ActivationService).idle();
    expect(readlinkSync(world.currentSystemPath)).not.toContain(TARGET);
    expect(world.cp.eventPosts).toEqual([]);

    rmSync(filler);
    const applied = await reducer.submit(activate);
    expect(applied.rejected).toBeUndefined();
    await world.cp.waitFor(() => world.cp.events(world.pki.machineId, ROLLOUT).length >= 1 || undefined, 10_000, 'DispatchAck');
    expect(world.cp.events(world.pki.machineId, ROLLOUT)[0]).toMatchObject({ seq: 1, kind: 'DispatchAck' });
  });
});
