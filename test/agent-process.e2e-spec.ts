import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import type { ReceivedRequest } from '../dev/control-plane';
import { makeWorld, type World } from './support/agent-harness';
import { testArgs } from './support/agent-config';
import { type RunningAgent, runAgentSync, startAgent, killIfRunning } from './support/agent-process';
import { freePort } from '../dev/free-port';

type Json = Record<string, unknown>;

function getStatus(port: number): Promise<{ status: number; body: Json }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/status', method: 'GET', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Json });
        } catch (err) {
          reject(err as Error);
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Polls /status until `accept` holds; the agent needs a moment to start listening. */
async function statusWhen(agent: RunningAgent, port: number, accept: (body: Json) => boolean, timeoutMs: number, what: string): Promise<Json> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = 'no answer yet';
  for (;;) {
    if (agent.child.exitCode !== null || agent.child.signalCode !== null) {
      throw new Error(`agent exited (${agent.child.exitCode ?? agent.child.signalCode}) while waiting for ${what}; output:\n${agent.output()}`);
    }
    try {
      const answer = await getStatus(port);
      last = answer.body;
      if (answer.status === 200 && accept(answer.body)) return answer.body;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() >= deadline) {
      throw new Error(`/status never showed ${what} within ${timeoutMs} ms; last: ${JSON.stringify(last)}; output:\n${agent.output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The exit status, or a failure if the process is still there after `ms` (a hang, not a slow stop). */
async function exitWithin(agent: RunningAgent, ms: number): Promise<number | string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`agent still running ${ms} ms after SIGTERM; output:\n${agent.output()}`)), ms);
  });
  try {
    return await Promise.race([agent.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function connectRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

/** The agent's JSON log lines (stdout and stderr interleaved). */
function logLines(agent: RunningAgent): Json[] {
  return agent
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Json);
}

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
    const args = [
      ...testArgs({ pki: world.pki, controlPlaneUrl: world.cp.url, stateDir: join(world.dir, `state-${port}`), currentSystemPath: world.currentSystemPath }),
      '--heartbeat-interval', '1',
      '--admin-listen', `127.0.0.1:${port}`,
    ];
    agent = startAgent(args);
    return { agent, port, from };
  }

  const since = (from: number): ReceivedRequest[] => world.cp.heartbeats.slice(from);

  it('heartbeats steadily, reports it on /status and via `status`, and exits 0 on SIGTERM with its admin port closed', async () => {
    const { agent, port, from } = await start();

    // The boot handshake and at least two steady heartbeats, all answered 200.
    await world.cp.waitFor(() => since(from).filter((h) => h.status === 200).length >= 3, 15_000, '3 answered heartbeats');
    const beats = since(from);
    expect(beats.every((h) => h.machineId === world.pki.machineId)).toBe(true);
    expect((beats[0]?.body as Json).current_closure).toBe((beats[2]?.body as Json).current_closure);

    const body = await statusWhen(agent, port, (b) => (b.heartbeat as Json).lastSuccessAt !== null, 5000, 'a successful heartbeat');
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
    expect(await connectRefused(port)).toBe(true);
    expect(logLines(agent).some((l) => l.level === 'info' && String(l.message).includes('stopped cleanly'))).toBe(true);
  });

  it('starts while the control plane answers 503, then heartbeats once it recovers', async () => {
    world.cp.setDefault('heartbeat', { status: 503, retryAfterSecs: 1, body: { error: 'starting' } });
    const { agent, port, from } = await start();

    const down = await statusWhen(agent, port, (b) => (b.recovery as Json).completedAt !== null, 10_000, 'the handshake finished');
    expect(down).toMatchObject({
      recovery: { reachedControlPlane: false, snapshotsApplied: 0 },
      heartbeat: { lastSuccessAt: null, consecutiveFailures: 1 },
    });
    expect(since(from)[0]?.status).toBe(503);

    world.cp.setDefault('heartbeat', null);
    // The agent backs off at least 5 s after the first failure.
    await world.cp.waitFor(() => since(from).some((h) => h.status === 200), 15_000, 'a heartbeat answered 200');
    const up = await statusWhen(agent, port, (b) => (b.heartbeat as Json).lastSuccessAt !== null, 5000, 'a successful heartbeat');
    expect(up).toMatchObject({ recovery: { reachedControlPlane: false }, heartbeat: { consecutiveFailures: 0 } });

    agent.child.kill('SIGTERM');
    expect(await exitWithin(agent, 5000)).toBe(0);
  }, 30_000);

  it('lets an in-flight heartbeat finish on SIGTERM, then exits 0', async () => {
    const { agent, port, from } = await start();
    await world.cp.waitFor(() => since(from).filter((h) => h.status === 200).length >= 2, 15_000, '2 answered heartbeats');
    await statusWhen(agent, port, (b) => (b.heartbeat as Json).lastSuccessAt !== null, 5000, 'a successful heartbeat');

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
