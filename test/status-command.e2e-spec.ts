import { join } from 'node:path';
import { STATUS_EXIT } from '../src/cli/status.command';
import { type Json, statusWhen } from './support/admin-http';
import { runCli } from './support/agent-cli';
import { makeWorld, type World } from './support/agent-harness';
import { type RunningAgent, startAdminAgent } from './support/agent-process';
import { until } from './support/polling';
import { freePort } from '../dev/free-port';

describe('nixfleet-agent status: the built CLI against the built agent and the dev CP', () => {
  let world: World;
  let agent: RunningAgent;
  let admin: string;

  beforeAll(async () => {
    world = await makeWorld();
    const started = await startAdminAgent(world, { stateDir: join(world.dir, 'state'), readyWhen: null });
    ({ agent, admin } = started);
    await statusWhen(agent, started.port, (s) => (s.heartbeat as Json).lastSuccessAt !== null, 'a first successful heartbeat', 20_000);
  });

  afterAll(async () => {
    if (agent.child.exitCode === null && agent.child.signalCode === null) agent.child.kill('SIGTERM');
    await agent.exited;
    await world.close();
  });

  it('exits 0 and prints the summary while heartbeats succeed', async () => {
    const r = await runCli(['status', '--admin-listen', admin]);

    expect(r).toMatchObject({ code: STATUS_EXIT.healthy, stderr: '' });
    expect(r.stdout).toMatch(
      new RegExp(`^${world.pki.machineId} \\(nixfleet-agent [^,]+, pid ${agent.child.pid}, up \\d+ s\\): HEALTHY$`, 'm'),
    );
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
      expect(degraded.stdout).toMatch(
        /control plane https:\/\/\S+ is UNREACHABLE for \d+ s: HTTP 503: \{"error":"maintenance"\} \(\d+ failure\(s\) in a row\)/,
      );
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
