import { join } from 'node:path';
import { STATUS_EXIT } from '../src/cli/status.command';
import { type Json, statusWhen } from './support/admin-http';
import { fakeClosure } from './support/agent-harness';
import { runCli } from './support/agent-cli';
import { makeWorld, type World } from './support/agent-harness';
import { exitWithin, killIfRunning, type RunningAgent, startAdminAgent, startAgent } from './support/agent-process';
import { until } from './support/polling';
import { freePort } from '../dev/free-port';

describe('nixfleet-agent status: the built CLI against the built agent and the dev CP', () => {
  let world: World;
  let agent: RunningAgent;
  let admin: string;
  let port: number;

  beforeAll(async () => {
    world = await makeWorld();
    // The symlink backend: a rollout below really activates, soaks and converges.
    const started = await startAdminAgent(world, { stateDir: join(world.dir, 'state'), readyWhen: null, symlinkActivation: true });
    ({ agent, admin, port } = started);
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

  describe('history: a rollout through to Converged, and a heartbeat the CP answered 503', () => {
    const rollout = 'stable@5a7c0de1';
    const target = fakeClosure('web-01-26.11', 'c');
    const RESTORING = 'HTTP 503: {"error":"restoring"}';
    let doc: Json;

    beforeAll(async () => {
      const before = fakeClosure('web-01-26.05');
      // The manifest is signed by the real clock, and the soak ends by it: 2 s from now.
      world.cp.queueDispatch(world.pki.machineId, {
        rollout_id: rollout,
        target_closure: target,
        soak_due_at: new Date(Date.now() + 2_000).toISOString(),
      });
      const rolloutOf = (s: Json): Json | undefined => (s.rollouts as Json[]).find((r) => r.rolloutId === rollout);
      await statusWhen(agent, port, (s) => rolloutOf(s)?.state === 'Converged', 'the rollout Converged', 20_000);
      // After a failed beat the next waits at least 5 s: it stays among the last ten while the CLI runs.
      world.cp.respondNext('heartbeat', { status: 503, body: { error: 'restoring' } });
      doc = await statusWhen(
        agent,
        port,
        (s) => ((s.heartbeat as Json).recentOutcomes as Json[]).some((o) => o.error === RESTORING),
        'a heartbeat answered 503 among the recent outcomes',
        10_000,
      );
      expect(rolloutOf(doc)).toMatchObject({ closureBefore: before, closureAfter: target, soakDueAt: null });
    });

    it('prints the heartbeats with their outcome and latency, and the rollout with since when, its closures and its transitions', async () => {
      const r = await runCli(['status', '--admin-listen', admin]);

      // Healthy or, once the 503 is 3 intervals old, degraded: the exit status is not what this is about.
      expect(r.stderr).toBe('');
      // The last ten beats, oldest first: the first on the labelled row, the others below it.
      expect(r.stdout).toMatch(
        /^ {2}heartbeats {4}\S+Z \(\d+ \w+ ago\) {2}(ok \(HTTP 200\)|FAILED: HTTP 503) in \d+ ms( \(boot recovery\))?$/m,
      );
      expect(r.stdout).toMatch(/^ {2}(heartbeats {4}| {14})\S+Z \(\d+ \w+ ago\) {2}FAILED: HTTP 503 in \d+ ms$/m);
      expect(r.stdout).toMatch(/^ {2}(heartbeats {4}| {14})\S+Z \(\d+ \w+ ago\) {2}ok \(HTTP 200\) in \d+ ms( \(boot recovery\))?$/m);
      expect(r.stdout).toMatch(
        new RegExp(
          `^ {2}rollouts {6}${rollout} {2}Converged since \\S+Z \\(\\d+ s ago\\) \\(last seq \\d+, delivered through \\d+\\)$`,
          'm',
        ),
      );
      expect(r.stdout).toContain(`\n                  closure ${fakeClosure('web-01-26.05')} -> ${target}\n`);
      const transitions = r.stdout.split('\n').filter((l) => / -> \w+ \(\w+\)$/.test(l));
      expect(transitions.map((l) => l.replace(/^ +\S+Z \(\d+ s ago\) {2}/, ''))).toEqual([
        'new -> Activating (Activate)',
        'Activating -> Soaking (ActivationCompleted)',
        'Soaking -> Converged (Tick)',
      ]);
    });

    it('--json carries the same: each transition with its time and input, each heartbeat with its result', async () => {
      const r = await runCli(['status', '--json', '--admin-listen', admin]);

      const json = JSON.parse(r.stdout) as Json;
      const converged = (json.rollouts as Json[]).find((x) => x.rolloutId === rollout)!;
      expect(converged.transitions).toEqual([
        { from: null, to: 'Activating', at: expect.any(String), input: 'Activate' },
        { from: 'Activating', to: 'Soaking', at: expect.any(String), input: 'ActivationCompleted' },
        { from: 'Soaking', to: 'Converged', at: converged.since, input: 'Tick' },
      ]);
      const outcomes = (json.heartbeat as Json).recentOutcomes as Json[];
      expect(outcomes.length).toBeLessThanOrEqual(10);
      expect(outcomes).toContainEqual({
        at: expect.any(String),
        source: 'heartbeat',
        result: 'http-status',
        httpStatus: 503,
        latencyMs: expect.any(Number),
        error: RESTORING,
      });
      expect(outcomes.filter((o) => o.result === 'ok').every((o) => o.httpStatus === 200)).toBe(true);
    });
  });

  describe('--watch', () => {
    it('with stdout a pipe prints plain blocks, a blank line between them, no escape code; SIGTERM exits 0', async () => {
      const watch = startAgent(['status', '--watch', '--interval', '0.2', '--admin-listen', admin]);
      try {
        await watch.waitForOutput(/(^every 0\.2 s: nixfleet-agent status at [^\n]+\n[^]*?){2}/m, 10_000);
        watch.child.kill('SIGTERM');
        expect(await exitWithin(watch, 5_000)).toBe(0);
      } finally {
        await killIfRunning(watch);
      }
      const out = watch.output();
      expect(out).not.toContain('\x1b');
      const blocks = out.trimEnd().split('\n\n');
      expect(blocks.length).toBeGreaterThanOrEqual(2);
      for (const block of blocks) {
        const [header, verdict] = block.split('\n');
        expect(header).toMatch(/^every 0\.2 s: nixfleet-agent status at \d{4}-\d{2}-\d{2}T\S+Z$/);
        expect(verdict).toMatch(new RegExp(`^${world.pki.machineId} \\(nixfleet-agent .*\\): (HEALTHY|DEGRADED)`));
      }
    });

    it('--json prints one /status document per line; Ctrl-C (SIGINT) exits 0', async () => {
      const watch = startAgent(['status', '--watch', '--json', '--interval', '0.2', '--admin-listen', admin]);
      try {
        await watch.waitForOutput(/^\{.*\}\n\{.*\}\n/m, 10_000);
        watch.child.kill('SIGINT');
        expect(await exitWithin(watch, 5_000)).toBe(0);
      } finally {
        await killIfRunning(watch);
      }
      const lines = watch.output().trimEnd().split('\n');
      expect(lines.length).toBeGreaterThanOrEqual(2);
      for (const line of lines) expect(JSON.parse(line)).toMatchObject({ machineId: world.pki.machineId, pid: agent.child.pid });
    });

    it('refuses a bad --interval with exit 2, naming the flag', async () => {
      const r = await runCli(['status', '--watch', '--interval', 'abc', '--admin-listen', admin]);

      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr.split('\n')[0]).toBe('config error: --interval must be a number of seconds from 0.1 to 3600, got "abc"');
    });
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
