import { join } from 'node:path';
import { getFromAdmin } from '../../src/cli/admin-request';
import { adminAt } from '../support/admin-http';
import { fakeClosure, makeWorld, type World } from '../support/agent-harness';
import { HEARTBEAT_STARTED, killIfRunning, type RunningAgent, startAdminAgent } from '../support/agent-process';
import { eventually } from '../support/polling';

const ROLLOUT = 'stable@a1b2c3d4';
const TARGET = fakeClosure('web-01-26.11', 'b');

type Status = {
  rollouts: { rolloutId: string; state: string; lastEventSeq: number; lastDeliveredSeq: number | null }[];
  heartbeat: {
    consecutiveFailures: number;
    lastError: { kind: string; message: string } | null;
    lastReplayFrom: { value: string; source: string } | null;
  };
  outbound: { replay: { running: boolean; rolloutId: string | null; fromSeq: number | null; resent: number } };
};

describe('fault: the control plane loses its database and answers heartbeats with an error and Replay-From', () => {
  let world: World;
  let agent: RunningAgent | null = null;
  let port: number;

  beforeEach(async () => {
    world = await makeWorld({ dispatchWaitCapMs: 60_000 });
  });
  afterEach(async () => {
    await killIfRunning(agent);
    agent = null;
    await world.close();
  });

  async function status(): Promise<Status> {
    return (await getFromAdmin(adminAt(port), '/status')).body as Status;
  }

  const held = () => world.cp.events(world.pki.machineId, ROLLOUT);

  /** The built agent takes a rollout to Converged; resolves with the events exactly as the CP stored them. */
  async function convergedRollout(): Promise<{ seq: number; raw: string }[]> {
    ({ agent, port } = await startAdminAgent(world, {
      stateDir: join(world.dir, 'state'),
      symlinkActivation: true,
      readyWhen: HEARTBEAT_STARTED,
    }));
    world.cp.queueDispatch(world.pki.machineId, {
      rollout_id: ROLLOUT,
      target_closure: TARGET,
      soak_due_at: new Date(Date.now() + 1_000).toISOString(),
    });
    await world.cp.waitFor(() => held().some((e) => e.kind === 'Converged'), 20_000, 'Converged');
    await eventually(async () => (await status()).rollouts[0]?.lastDeliveredSeq === 5, 5_000, 'seq 5 delivered');
    return held().map((e) => ({ seq: e.seq, raw: e.raw }));
  }

  it('503 + Retry-After + Replay-From: every event goes out again with its seq and bytes, while each heartbeat still counts as failed', async () => {
    const before = await convergedRollout();
    expect(before.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);

    // Restarted without its database and still restoring: every heartbeat gets 503, with the replay request.
    world.cp.loseAllState();
    world.cp.setDefault('heartbeat', { status: 503, retryAfterSecs: 1, headers: { 'X-Nixfleet-Replay-From': '0' } });
    const mark = world.cp.heartbeats.length;

    await world.cp.waitFor(() => (held().length === 5 ? true : undefined), 15_000, 'the five events replayed');
    expect(held().map((e) => ({ seq: e.seq, raw: e.raw }))).toEqual(before);
    // Only 503s answered the agent since the wipe: the replay came from a failed answer.
    const since = world.cp.heartbeats.slice(mark);
    expect(since.length).toBeGreaterThanOrEqual(1);
    expect(since.every((h) => h.status === 503)).toBe(true);

    const during = await status();
    expect(during.heartbeat.consecutiveFailures).toBeGreaterThanOrEqual(1);
    expect(during.heartbeat.lastError).toMatchObject({ kind: 'http-status' });
    expect(during.heartbeat.lastError?.message).toContain('HTTP 503');
    expect(during.heartbeat.lastReplayFrom).toMatchObject({ value: '0', source: 'heartbeat' });
    expect(agent!.output()).toContain('the control plane asks for a replay on a failed HTTP 503 answer');

    // Restored: heartbeats succeed again, and no seq ever reached the CP with two bodies.
    world.cp.setDefault('heartbeat', null);
    await eventually(async () => (await status()).heartbeat.consecutiveFailures === 0, 10_000, 'a heartbeat succeeding again');
    for (const post of world.cp.eventPosts) {
      const { event } = post.body as { event: { seq: number } };
      expect(post.raw).toBe(before.find((e) => e.seq === event.seq)?.raw);
    }

    agent!.child.kill('SIGTERM');
    expect(await agent!.exited).toBe(0);
  });

  it('403 + Replay-From: nothing is replayed, since the CP refuses our identity; the agent keeps running and says why', async () => {
    await convergedRollout();
    world.cp.loseAllState();
    world.cp.setDefault('heartbeat', { status: 403, body: { error: 'forbidden' }, headers: { 'X-Nixfleet-Replay-From': '0' } });
    const mark = world.cp.heartbeats.length;

    await world.cp.waitFor(() => world.cp.heartbeats.length >= mark + 2 || undefined, 15_000, 'two refused heartbeats');
    await agent!.waitForOutput(
      /X-Nixfleet-Replay-From: 0 came on an HTTP 403 answer, which refuses this agent's identity or protocol; ignored/,
    );
    expect(held()).toEqual([]);
    const s = await status();
    expect(s.heartbeat.lastError?.message).toContain('HTTP 403');
    expect(agent!.child.exitCode).toBeNull();

    agent!.child.kill('SIGTERM');
    expect(await agent!.exited).toBe(0);
  });
});
