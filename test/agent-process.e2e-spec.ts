import { join } from 'node:path';
import type { ReceivedRequest } from '../dev/control-plane';
import { freePort } from '../dev/free-port';
import { type Json, statusWhen, tcpConnect } from './support/admin-http';
import { makeWorld, type World } from './support/agent-harness';
import { exitWithin, killIfRunning, logLines, type RunningAgent, runAgentSync, startAdminAgent } from './support/agent-process';

describe('the built agent as a child process, against the dev control plane', () => {
  let world: World;
  let agent: RunningAgent | null = null;

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterEach(async () => {
    world.cp.setDefault('heartbeat', null);
    await killIfRunning(agent);
    agent = null;
  });
  afterAll(async () => {
    await world.close();
  });

  async function start(): Promise<{ agent: RunningAgent; port: number; from: number }> {
    const port = await freePort();
    const from = world.cp.heartbeats.length;
    const started = await startAdminAgent(world, { stateDir: join(world.dir, `state-${port}`), port, readyWhen: null });
    agent = started.agent;
    return { agent: started.agent, port, from };
  }

  const since = (from: number): ReceivedRequest[] => world.cp.heartbeats.slice(from);

  it('heartbeats steadily, reports it on /status and via `status`, and exits 0 on SIGTERM with its admin port closed', async () => {
    const { agent, port, from } = await start();

    // The boot handshake and at least two steady heartbeats, all answered 200.
    await world.cp.waitFor(() => since(from).filter((h) => h.status === 200).length >= 3, 15_000, '3 answered heartbeats');
    const beats = since(from);
    expect(beats.every((h) => h.machineId === world.pki.machineId)).toBe(true);
    expect((beats[0]?.body as Json).current_closure).toBe((beats[2]?.body as Json).current_closure);

    const body = await statusWhen(agent, port, (b) => (b.heartbeat as Json).lastSuccessAt !== null, 'a successful heartbeat', 5000);
    expect(body).toMatchObject({
      machineId: world.pki.machineId,
      controlPlaneUrl: world.cp.url,
      pid: agent.child.pid,
      recovery: { reachedControlPlane: true },
      heartbeat: { intervalSecs: 1, consecutiveFailures: 0, lastError: null },
    });
    expect((body.heartbeat as Json).lastSuccessAt).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);

    const status = runAgentSync(['status', '--admin-listen', `127.0.0.1:${port}`]);
    expect(status.stderr).toBe('');
    expect(status.status).toBe(0);
    expect(status.stdout).toContain(`${world.pki.machineId} (nixfleet-agent `);
    expect(status.stdout).toContain(`pid ${agent.child.pid}`);
    expect(status.stdout).toContain(`control plane ${world.cp.url}`);

    agent.child.kill('SIGTERM');
    expect(await exitWithin(agent, 5000)).toBe(0);
    expect(await tcpConnect('127.0.0.1', port)).toBe('ECONNREFUSED');
    expect(logLines(agent).some((l) => l.level === 'info' && String(l.message).includes('stopped cleanly'))).toBe(true);
  });

  it('starts while the control plane answers 503, then heartbeats once it recovers', async () => {
    world.cp.setDefault('heartbeat', { status: 503, retryAfterSecs: 1, body: { error: 'starting' } });
    const { agent, port, from } = await start();

    const down = await statusWhen(agent, port, (b) => (b.recovery as Json).completedAt !== null, 'the handshake finished', 10_000);
    expect(down).toMatchObject({
      recovery: { reachedControlPlane: false, snapshotsApplied: 0 },
      heartbeat: { lastSuccessAt: null, consecutiveFailures: 1 },
    });
    expect(since(from)[0]?.status).toBe(503);

    world.cp.setDefault('heartbeat', null);
    // The agent backs off at least 5 s after the first failure.
    await world.cp.waitFor(() => since(from).some((h) => h.status === 200), 15_000, 'a heartbeat answered 200');
    const up = await statusWhen(agent, port, (b) => (b.heartbeat as Json).lastSuccessAt !== null, 'a successful heartbeat', 5000);
    expect(up).toMatchObject({ recovery: { reachedControlPlane: false }, heartbeat: { consecutiveFailures: 0 } });

    agent.child.kill('SIGTERM');
    expect(await exitWithin(agent, 5000)).toBe(0);
  }, 30_000);

  it('lets an in-flight heartbeat finish on SIGTERM, then exits 0', async () => {
    const { agent, port, from } = await start();
    await world.cp.waitFor(() => since(from).filter((h) => h.status === 200).length >= 2, 15_000, '2 answered heartbeats');
    await statusWhen(agent, port, (b) => (b.heartbeat as Json).lastSuccessAt !== null, 'a successful heartbeat', 5000);

    world.cp.respondNext('heartbeat', { delayMs: 1500 });
    const slow = await world.cp.waitFor(() => since(from).find((h) => h.scripted), 5000, 'the delayed heartbeat');
    agent.child.kill('SIGTERM');

    expect(await exitWithin(agent, 8000)).toBe(0);
    // A cut heartbeat would show here as "heartbeat to the control plane failed: ... socket hang up".
    // The start-up preflight's warning (this host has no nix-env for the default nixos backend) is not about the stop.
    const warnings = logLines(agent).filter((l) => (l.level === 'warn' || l.level === 'error') && l.context !== 'ActivationPreflight');
    expect(warnings.map((l) => l.message)).toEqual([]);
    // The CP wrote its answer to a connection that was still open: the agent waited for it.
    expect(slow.status).toBe(200);
    expect(logLines(agent).some((l) => String(l.message).includes('stopped cleanly'))).toBe(true);
    // Nothing new started after the signal.
    expect(since(from).filter((h) => h.receivedAt > slow.receivedAt)).toEqual([]);
  });
});
