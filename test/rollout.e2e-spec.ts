import { mkdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { getFromAdmin } from '../src/cli/admin-request';
import { adminAt } from './support/admin-http';
import { fakeClosure, makeWorld, type World } from './support/agent-harness';
import { HEARTBEAT_STARTED, killIfRunning, type RunningAgent, startAdminAgent } from './support/agent-process';
import { freePort } from '../dev/free-port';

const ROLLOUT = 'stable@a1b2c3d4';
const TARGET = fakeClosure('web-01-26.11', 'b');

/** Polls an async condition (real time) until it holds. */
async function eventually(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

type Status = {
  rollouts: { rolloutId: string; state: string; lastEventSeq: number; lastDeliveredSeq: number | null }[];
  heartbeat: { lastReplayFrom: { value: string } | null };
  outbound: {
    pending: number;
    replay: { running: boolean; rolloutId: string | null; fromSeq: number | null; resent: number; missing: number[] };
  };
  activation: { backend: string; lastResult: { outcome: string } | null };
};

describe('a rollout end to end: the built agent, the symlink backend, the dev control plane', () => {
  let world: World;
  let agent: RunningAgent | null = null;

  beforeEach(async () => {
    world = await makeWorld({ dispatchWaitCapMs: 60_000 });
  });
  afterEach(async () => {
    await killIfRunning(agent);
    agent = null;
    await world.close();
  });

  async function launch(stateDir: string, port: number, backend: string[] = ['--activation-backend', 'symlink']): Promise<RunningAgent> {
    const started = await startAdminAgent(world, {
      stateDir,
      port,
      extra: ['--store-dir', world.storeDir, ...backend],
      readyWhen: HEARTBEAT_STARTED,
    });
    return started.agent;
  }

  async function status(port: number): Promise<Status> {
    return (await getFromAdmin(adminAt(port), '/status')).body as Status;
  }

  const kinds = () => world.cp.events(world.pki.machineId, ROLLOUT).map((e) => `${e.seq}:${e.kind}`);

  it('dispatch → ack, activation, link moved, converged after the soak; then a CP wipe is healed by replay, same seqs', async () => {
    const port = await freePort();
    agent = await launch(join(world.dir, 'state'), port);

    world.cp.queueDispatch(world.pki.machineId, {
      rollout_id: ROLLOUT,
      target_closure: TARGET,
      soak_due_at: new Date(Date.now() + 2_000).toISOString(),
    });

    await world.cp.waitFor(() => kinds().includes('5:Converged'), 20_000, 'Converged at seq 5');
    expect(kinds()).toEqual(['1:DispatchAck', '2:ActivationStarted', '3:ActivationCompleted', '4:ProbeTopologyDeclared', '5:Converged']);
    expect(readlinkSync(world.currentSystemPath)).toBe(join(world.storeDir, TARGET));
    const before = world.cp.events(world.pki.machineId, ROLLOUT).map((e) => e.raw);
    const completed = world.cp.events(world.pki.machineId, ROLLOUT)[2].event;
    expect(completed).toMatchObject({ kind: 'ActivationCompleted', observedCurrentClosure: TARGET, exitCode: 0 });

    const converged = await status(port);
    expect(converged.rollouts).toEqual([expect.objectContaining({ rolloutId: ROLLOUT, state: 'Converged', lastEventSeq: 5 })]);
    await eventually(async () => (await status(port)).rollouts[0]?.lastDeliveredSeq === 5, 5_000, 'status shows seq 5 delivered');

    // The CP restarts without its database: the next heartbeat reports seq 5, the CP holds 0.
    world.cp.loseAllState();
    expect(world.cp.events(world.pki.machineId, ROLLOUT)).toEqual([]);
    await world.cp.waitFor(() => (kinds().length === 5 ? true : undefined), 15_000, 'the five events replayed');
    expect(world.cp.events(world.pki.machineId, ROLLOUT).map((e) => e.raw)).toEqual(before);

    // The CP stores an event before the agent reads its 204: wait for the agent's count to catch up.
    await eventually(async () => (await status(port)).outbound.replay.resent === 5, 5_000, 'the agent counting 5 resent');
    const replayed = await status(port);
    expect(replayed.heartbeat.lastReplayFrom?.value).toBe('0');
    expect(replayed.outbound.replay).toMatchObject({ running: false, rolloutId: ROLLOUT, fromSeq: 0, resent: 5, missing: [] });

    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
  });

  it('SIGKILL mid-rollout while the CP refuses events with 503: after a restart every event arrives, it converges, no seq reused', async () => {
    const stateDir = join(world.dir, 'state');
    const port = await freePort();
    world.cp.setDefault('events', { status: 503, retryAfterSecs: 1 });
    agent = await launch(stateDir, port);

    world.cp.queueDispatch(world.pki.machineId, {
      rollout_id: ROLLOUT,
      target_closure: TARGET,
      soak_due_at: new Date(Date.now() + 4_000).toISOString(),
    });
    // Activated (the link moved) while every event POST is refused.
    await world.cp.waitFor(
      () => {
        try {
          return readlinkSync(world.currentSystemPath) === join(world.storeDir, TARGET) || undefined;
        } catch {
          return undefined;
        }
      },
      15_000,
      'the link moved',
    );
    await world.cp.waitFor(() => world.cp.eventPosts.filter((p) => p.status === 503).length >= 1 || undefined, 10_000, 'a refused POST');
    // DispatchAck, ActivationStarted and ActivationCompleted are logged, none delivered.
    await eventually(async () => (await status(port)).outbound.pending >= 3, 5_000, 'three events pending');

    agent.child.kill('SIGKILL');
    expect(await agent.exited).toBe('SIGKILL');
    expect(world.cp.events(world.pki.machineId, ROLLOUT)).toEqual([]);

    world.cp.setDefault('events', null);
    agent = await launch(stateDir, port);
    await world.cp.waitFor(() => kinds().includes('5:Converged') || undefined, 20_000, 'Converged after the restart');
    expect(kinds()).toEqual(['1:DispatchAck', '2:ActivationStarted', '3:ActivationCompleted', '4:ProbeTopologyDeclared', '5:Converged']);
    // No seq was ever posted with two different bodies.
    const bodiesBySeq = new Map<string, Set<string>>();
    for (const post of world.cp.eventPosts) {
      const seq = (post.body as { event?: { seq?: number } } | undefined)?.event?.seq;
      const key = String(seq);
      bodiesBySeq.set(key, (bodiesBySeq.get(key) ?? new Set()).add(post.raw));
    }
    for (const [seq, bodies] of bodiesBySeq) expect({ seq, bodies: bodies.size }).toEqual({ seq, bodies: 1 });
    const final = await status(port);
    expect(final.rollouts).toEqual([expect.objectContaining({ rolloutId: ROLLOUT, state: 'Converged', lastEventSeq: 5 })]);

    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
  });
  it('SIGKILL during the activation itself: after a restart the interrupted activation is resumed and the rollout converges', async () => {
    const stateDir = join(world.dir, 'state');
    const port = await freePort();
    mkdirSync(join(world.storeDir, TARGET), { recursive: true });
    // A slow activation command that re-points the link the way the symlink backend does.
    const link = world.currentSystemPath;
    const slow = [
      '--activation-backend',
      'command',
      '--activation-command',
      JSON.stringify([
        '/bin/sh',
        '-c',
        `sleep 1.5 && ln -sfn "$1" "${link}.tmp" && mv -T "${link}.tmp" "${link}"`,
        'activate',
        '{closure}',
      ]),
    ];
    agent = await launch(stateDir, port, slow);
    world.cp.queueDispatch(world.pki.machineId, {
      rollout_id: ROLLOUT,
      target_closure: TARGET,
      soak_due_at: new Date(Date.now() + 2_000).toISOString(),
    });
    await world.cp.waitFor(() => kinds().includes('2:ActivationStarted') || undefined, 15_000, 'ActivationStarted');
    agent.child.kill('SIGKILL');
    expect(await agent.exited).toBe('SIGKILL');
    expect(kinds()).toEqual(['1:DispatchAck', '2:ActivationStarted']);

    // Whether the orphaned command finished meanwhile or not, the restart must finish the rollout.
    agent = await launch(stateDir, port, slow);
    await world.cp.waitFor(() => kinds().some((k) => k.endsWith(':Converged')) || undefined, 25_000, 'Converged after the restart');
    const seen = kinds();
    expect(seen.slice(0, 2)).toEqual(['1:DispatchAck', '2:ActivationStarted']);
    expect(seen.slice(-3).map((k) => k.split(':')[1])).toEqual(['ActivationCompleted', 'ProbeTopologyDeclared', 'Converged']);
    expect(seen.map((k) => Number(k.split(':')[0]))).toEqual(seen.map((_k, i) => i + 1));
    expect(readlinkSync(world.currentSystemPath)).toBe(join(world.storeDir, TARGET));
    expect(agent.output()).toMatch(/was Activating when the agent stopped/);

    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
  });
});
