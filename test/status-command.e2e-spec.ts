import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { getFromAdmin } from '../src/cli/admin-request';
import { STATUS_EXIT } from '../src/cli/status.command';
import { makeWorld, type World } from './support/agent-harness';
import { testArgs } from './support/agent-config';
import { AGENT_MAIN, cleanEnv, type RunningAgent, startAgent } from './support/agent-process';
import { freePort } from '../dev/free-port';

type Json = Record<string, unknown>;

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The built CLI as a child process. Not spawnSync: the dev CP lives in this
 * process and must keep answering the agent's heartbeats meanwhile.
 */
function runCli(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [AGENT_MAIN, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function until<T>(probe: () => Promise<T | null>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await probe();
      if (v !== null) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms (last error: ${String(last)})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('nixfleet-agent status: the built CLI against the built agent and the dev CP', () => {
  let world: World;
  let agent: RunningAgent;
  let admin: string;

  beforeAll(async () => {
    world = await makeWorld();
    const port = await freePort();
    admin = `127.0.0.1:${port}`;
    agent = startAgent([
      ...testArgs({ pki: world.pki, controlPlaneUrl: world.cp.url, stateDir: join(world.dir, 'state'), currentSystemPath: world.currentSystemPath }),
      '--heartbeat-interval', '1',
      '--admin-listen', admin,
    ]);
    await until(
      async () => {
        const { body } = await getFromAdmin({ kind: 'tcp', host: '127.0.0.1', port }, '/status');
        const heartbeat = (body as Json).heartbeat as Json;
        return heartbeat.lastSuccessAt === null ? null : true;
      },
      20_000,
      'a first successful heartbeat',
    ).catch((err: Error) => {
      throw new Error(`${err.message}; agent output:\n${agent.output()}`);
    });
  });

  afterAll(async () => {
    if (agent.child.exitCode === null && agent.child.signalCode === null) agent.child.kill('SIGTERM');
    await agent.exited;
    await world.close();
  });

  it('exits 0 and prints the summary while heartbeats succeed', async () => {
    const r = await runCli(['status', '--admin-listen', admin]);

    expect(r).toMatchObject({ code: STATUS_EXIT.healthy, stderr: '' });
    expect(r.stdout).toMatch(new RegExp(`^${world.pki.machineId} \\(nixfleet-agent [^,]+, pid ${agent.child.pid}, up \\d+ s\\): HEALTHY$`, 'm'));
    expect(r.stdout).toContain(`control plane ${world.cp.url} is reachable, last heartbeat `);
    expect(r.stdout).toContain('-nixos-system-web-01-26.05');
    expect(r.stdout).toContain('rollouts      none');
    expect(r.stdout).toContain('outbound      0 pending, 0 delivered, 0 refused');
  });

  it('--json prints the /status document, parseable, with the same exit status', async () => {
    const r = await runCli(['status', '--json', '--admin-listen', admin]);

    expect(r.code).toBe(STATUS_EXIT.healthy);
    const doc = JSON.parse(r.stdout) as Json;
    expect(doc).toMatchObject({ machineId: world.pki.machineId, pid: agent.child.pid, controlPlaneUrl: world.cp.url });
    expect(doc.heartbeat).toMatchObject({ intervalSecs: 1, consecutiveFailures: 0 });
  });

  it('exits 1 once the control plane has answered 503 for more than three heartbeat intervals', async () => {
    world.cp.setDefault('heartbeat', { status: 503, body: { error: 'maintenance' } });
    try {
      const degraded = await until(
        async () => {
          const r = await runCli(['status', '--admin-listen', admin]);
          return r.code === STATUS_EXIT.degraded ? r : null;
        },
        20_000,
        'exit 1 from the status command',
      );

      expect(degraded.stderr).toBe('');
      expect(degraded.stdout).toMatch(/: DEGRADED: control plane unreachable$/m);
      expect(degraded.stdout).toMatch(/control plane https:\/\/\S+ is UNREACHABLE for \d+ s: HTTP 503: \{"error":"maintenance"\} \(\d+ failure\(s\) in a row\)/);
    } finally {
      world.cp.setDefault('heartbeat', null);
    }
  });

  it('exits 3 with one line naming the address and --admin-listen when no agent listens', async () => {
    const nobody = `127.0.0.1:${await freePort()}`;

    const r = await runCli(['status', '--admin-listen', nobody]);

    expect(r.code).toBe(STATUS_EXIT.unreachable);
    expect(r.stdout).toBe('');
    expect(r.stderr.trimEnd().split('\n')).toEqual([
      expect.stringMatching(new RegExp(`^nixfleet-agent status: no agent answers at ${nobody} \\(.*ECONNREFUSED.*\\); .*--admin-listen`)),
    ]);
  });
});
