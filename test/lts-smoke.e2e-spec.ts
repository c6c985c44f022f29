import { readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { createSocket, type UnixDgramSocket } from 'unix-dgram';
import { getFromAdmin } from '../src/cli/admin-request';
import { fakeClosure, makeWorld, type World } from './support/agent-harness';
import { exitWithin, killIfRunning, logLines, type RunningAgent, runAgentSync, startAgent, worldAgentArgs } from './support/agent-process';
import { until } from './support/polling';

/*
 * The smoke test `npm run test:lts` runs on the Node.js LTS of the container
 * image (scripts/test-lts.sh sets NIXFLEET_TEST_NODE_VERSION); `npm test` runs
 * it on the machine's Node.js like any other e2e spec. One pass through what a
 * new Node.js could break: both native addons (unix-dgram: sd_notify; fs-ext:
 * the state dir's flock), mutual TLS with the OpenSSH ed25519 host key, the
 * signed manifest (ed25519), the event log (zlib.crc32, fsync), the admin
 * endpoint, and a clean stop.
 */

const ROLLOUT = 'stable@a1b2c3d4';
const TARGET = fakeClosure('web-01-26.11', 'b');

describe('smoke: the built agent on this Node.js', () => {
  let world: World;
  let notify: UnixDgramSocket | null = null;
  let agent: RunningAgent | null = null;

  beforeAll(async () => {
    world = await makeWorld({ dispatchWaitCapMs: 60_000 });
  });
  afterAll(async () => {
    await killIfRunning(agent);
    notify?.close();
    await world.close();
  });

  it('runs on the Node.js it was asked to (test:lts), one the agent supports', () => {
    const wanted = process.env.NIXFLEET_TEST_NODE_VERSION;
    if (wanted !== undefined) expect(process.versions.node).toBe(wanted);
    // Whatever runs here also runs the agent: it is spawned with this process's node.
    const r = runAgentSync(['--version']);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
  });

  it('starts (READY=1), heartbeats over mTLS, verifies and converges a signed rollout, answers /status and /healthz, and stops cleanly', async () => {
    // systemd's notify socket, as a real unix datagram socket: unix-dgram loaded in this process too.
    const datagrams: string[] = [];
    notify = createSocket('unix_dgram', (buf) => datagrams.push(buf.toString('utf8')));
    const notifyPath = join(world.dir, 'notify.sock');
    notify.bind(notifyPath);

    const stateDir = join(world.dir, 'state');
    const adminSocket = join(world.dir, 'admin.sock');
    const args = worldAgentArgs(world, {
      stateDir,
      adminListen: `unix:${adminSocket}`,
      identity: world.pki.clientOpensshEd25519,
      symlinkActivation: true,
    });
    const a = startAgent(args, { NOTIFY_SOCKET: notifyPath });
    agent = a;
    const admin = { kind: 'unix' as const, path: adminSocket };
    const output = (): string => `agent output:\n${a.output()}\ndatagrams: ${JSON.stringify(datagrams)}`;

    await until(() => (datagrams.some((d) => d.split('\n').includes('READY=1')) ? true : null), 30_000, 'READY=1', output);
    expect(world.cp.heartbeats.filter((h) => h.status === 200).length).toBeGreaterThanOrEqual(1);

    // The state dir's lock (fs-ext flock) holds: a second agent on it is refused, with exit 2.
    expect(readFileSync(join(stateDir, 'lock'), 'utf8').trim()).toBe(String(a.child.pid));
    const second = runAgentSync(worldAgentArgs(world, { stateDir, adminListen: `unix:${join(world.dir, 'admin-2.sock')}` }));
    expect(second.status).toBe(2);
    expect(second.stderr).toContain(`is in use by another agent, pid ${a.child.pid}`);

    world.cp.queueDispatch(world.pki.machineId, {
      rollout_id: ROLLOUT,
      target_closure: TARGET,
      soak_due_at: new Date(Date.now() + 1000).toISOString(),
    });
    const converged = await until(
      async () => {
        const body = (await getFromAdmin(admin, '/status')).body as {
          rollouts: { rolloutId: string; state: string }[];
          currentClosure: string;
        };
        return body.rollouts.some((r) => r.rolloutId === ROLLOUT && r.state === 'Converged') ? body : null;
      },
      30_000,
      `${ROLLOUT} Converged`,
      output,
    );
    expect(converged.currentClosure).toBe(TARGET);
    expect(readlinkSync(world.currentSystemPath)).toBe(join(world.storeDir, TARGET));
    await world.cp.waitFor(
      () => world.cp.events(world.pki.machineId, ROLLOUT).some((e) => e.kind === 'Converged'),
      15_000,
      'Converged at the CP',
    );
    expect(world.cp.events(world.pki.machineId, ROLLOUT).map((e) => e.kind)).toEqual([
      'DispatchAck',
      'ActivationStarted',
      'ActivationCompleted',
      'ProbeTopologyDeclared',
      'Converged',
    ]);
    expect(world.cp.manifestFetches.length).toBeGreaterThanOrEqual(1);

    const healthz = await getFromAdmin(admin, '/healthz');
    expect(healthz).toMatchObject({ status: 200, body: { status: 'ok' } });

    a.child.kill('SIGTERM');
    expect(await exitWithin(a, 30_000)).toBe(0);
    expect(datagrams.some((d) => d.split('\n').includes('STOPPING=1'))).toBe(true);
    expect(a.output()).toContain('stopped cleanly');
    const problems = logLines(a)
      .filter((l) => l.level === 'error' || l.level === 'fatal')
      .map((l) => l.message);
    expect(problems).toEqual([]);
  }, 90_000);
});
