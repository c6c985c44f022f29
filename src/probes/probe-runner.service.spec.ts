import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { type AgentUnderTest, buildAgent, fakeClosure, makeWorld, type World } from '../../test/support/agent-harness';
import { eventually } from '../../test/support/polling';
import { ActivationService } from '../activation/activation.service';
import { JobRuntime } from '../jobs/job-runtime.service';
import { ReducerService } from '../reducer/reducer.service';
import { TrustService } from '../trust/trust.service';
import { DEFAULT_PROBE_TOOLS, PROBE_TOOLS } from './probe-checker';
import { ProbeRunnerService } from './probe-runner.service';

const MACHINE = 'web-01';
const BOOT = fakeClosure('web-01-26.05');
const TARGET = fakeClosure('web-01-26.11', 'b');

/**
 * The probe runners in the agent's real module graph, against the dev CP:
 * real files, a real HTTP target on loopback, real processes for exec
 * probes. Time is a FakeClock; probe runs are driven with runNow().
 */
describe('ProbeRunnerService', () => {
  let world: World;
  let app: Server;
  let appStatus = 200;
  let appUrl: string;
  let agent: AgentUnderTest | null = null;

  beforeAll(async () => {
    world = await makeWorld();
    app = createServer((_req, res) => {
      res.statusCode = appStatus;
      res.end();
    });
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
    appUrl = `http://127.0.0.1:${(app.address() as AddressInfo).port}/health`;
  });
  afterAll(async () => {
    await new Promise((resolve) => app.close(resolve));
    await world.close();
  });
  beforeEach(() => {
    world.setCurrentSystem(BOOT);
    appStatus = 200;
  });
  afterEach(async () => {
    await agent?.close();
    agent = null;
  });

  function healthChecks(name: string, checks: Record<string, unknown>): string {
    const path = join(world.dir, `${name}.json`);
    writeFileSync(path, JSON.stringify(checks));
    return path;
  }

  async function start(file: string): Promise<{ a: AgentUnderTest; runner: ProbeRunnerService; reducer: ReducerService }> {
    agent = await buildAgent(world, { extra: ['--heartbeat-interval', '3600', '--health-checks-file', file] });
    return { a: agent, runner: agent.app.get(ProbeRunnerService), reducer: agent.app.get(ReducerService) };
  }

  /** Dispatches and activates `rolloutId`; resolves once its probes were declared and have run once. */
  async function soak(a: AgentUnderTest, rolloutId: string): Promise<void> {
    const reducer = a.app.get(ReducerService);
    await reducer.submit({
      type: 'Activate',
      rolloutId,
      targetClosure: TARGET,
      soakDueAt: new Date(a.clock.now().getTime() + 600_000).toISOString(),
      currentClosure: BOOT,
      dispatchedAt: a.clock.now().toISOString(),
    });
    await a.app.get(ActivationService).idle();
    await a.app.get(ProbeRunnerService).settled();
    await a.app.get(ProbeRunnerService).runNow();
    await reducer.drain();
  }

  const eventsOf = (r: ReducerService, rolloutId: string): number => r.current().rollouts[rolloutId]?.lastEventSeq ?? 0;

  it('declares the topology from the file, runs each probe as a job of the runtime, and sends results on a change of status only', async () => {
    const file = healthChecks('healthy', {
      web: { kind: 'http', url: appUrl, intervalSeconds: 5, timeoutSecs: 2 },
      ok: { kind: 'exec', command: ['/bin/true'] },
      old: { kind: 'tcp', port: 1, mode: 'disabled' },
    });
    const { a, runner, reducer } = await start(file);
    const rollout = 'stable@pr000001';
    await soak(a, rollout);

    const entry = reducer.current().rollouts[rollout];
    expect(entry?.probesDeclaredAt).toBeDefined();
    expect(entry?.probes).toMatchObject({
      web: { kind: 'http', mode: 'enforce', lastStatus: 'pass' },
      ok: { kind: 'exec', mode: 'enforce', lastStatus: 'pass' },
      old: { kind: 'tcp', mode: 'disabled' },
    });
    expect(entry?.probes.old?.lastStatus).toBeUndefined();
    // One job per probe that runs; none for the disabled one.
    const jobs = a.app
      .get(JobRuntime)
      .status()
      .map((j) => j.name)
      .filter((n) => n.startsWith('probe:'))
      .sort();
    expect(jobs).toEqual(['probe:ok', 'probe:web']);
    expect(runner.status()).toMatchObject({ activeRollout: rollout, healthChecksFile: { path: file, state: 'loaded', problems: [] } });

    // The same results again: nothing new for the CP.
    const seq = eventsOf(reducer, rollout);
    await runner.runNow();
    await reducer.drain();
    expect(eventsOf(reducer, rollout)).toBe(seq);
    expect(runner.status().runners.find((r) => r.name === 'web')).toMatchObject({ runs: 2, lastRunResult: 'pass' });

    // The app breaks: one ProbeResult and one ProbeFailureFirst, with the reason.
    appStatus = 503;
    await runner.runNow();
    await reducer.drain();
    expect(reducer.current().rollouts[rollout]?.probes.web).toMatchObject({
      lastStatus: 'fail',
      failureReason: `GET ${appUrl} answered 503, expected 200`,
    });
    expect(eventsOf(reducer, rollout)).toBe(seq + 2);
  });

  it('re-reads the file on a reset and drops the result of a run that began before it', async () => {
    const file = healthChecks('reset', {
      slow: { kind: 'exec', command: ['/bin/sh', '-c', 'sleep 1; exit 1'], timeoutSecs: 5 },
    });
    const { a, runner, reducer } = await start(file);
    const rollout = 'stable@pr000002';
    await reducer.submit({
      type: 'Activate',
      rolloutId: rollout,
      targetClosure: TARGET,
      soakDueAt: new Date(a.clock.now().getTime() + 600_000).toISOString(),
      currentClosure: BOOT,
      dispatchedAt: a.clock.now().toISOString(),
    });
    await a.app.get(ActivationService).idle();
    await runner.settled();
    // The first run of `slow` is in flight (a second's sleep); the file changes and the rollout is reset.
    expect(runner.status().runners.find((r) => r.name === 'slow')?.running).toBe(true);
    writeFileSync(file, JSON.stringify({ quick: { kind: 'exec', command: ['/bin/true'] } }));
    runner.handle({ type: 'ResetProbeCache', rolloutId: rollout });
    await runner.settled();
    await runner.runNow();
    await reducer.drain();
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // past the old run's end

    const entry = reducer.current().rollouts[rollout];
    expect(Object.keys(entry?.probes ?? {})).toEqual(['quick']);
    expect(entry?.probes.quick?.lastStatus).toBe('pass');
    // The old run's failure never reached the reducer: no ProbeResult for `slow` at all.
    await a.app.get(ReducerService).drain();
    expect(
      world.cp.events(MACHINE, rollout).some((e) => JSON.stringify(e.event).includes('"slow"') && e.kind !== 'ProbeTopologyDeclared'),
    ).toBe(false);
    expect(runner.status().runners.map((r) => r.name)).toEqual(['quick']);
  });

  it('declares a malformed entry as a failing enforce probe, with one line naming the file, the probe and the field', async () => {
    const file = healthChecks('typo', { db: { kind: 'tcp', port: '5432' } });
    const { a, reducer } = await start(file);
    const rollout = 'stable@pr000003';
    await soak(a, rollout);

    expect(reducer.current().rollouts[rollout]?.probes.db).toMatchObject({ kind: 'tcp', mode: 'enforce', lastStatus: 'fail' });
    expect(reducer.current().rollouts[rollout]?.probes.db?.failureReason).toContain(`health-checks file ${file}, probe "db", field "port"`);
    const warned = a.logs.messages('warn', ProbeRunnerService.name).filter((l) => l.includes(file));
    expect(warned).toHaveLength(1);
    expect(warned[0]).toContain('field "port"');
    expect(a.app.get(ProbeRunnerService).status().healthChecksFile).toMatchObject({ state: 'invalid' });
  });

  it('runs a run-once probe once per rollout, and again after a reset', async () => {
    const file = healthChecks('once', { smoke: { kind: 'exec', command: ['/bin/true'], runOnce: true } });
    const { a, runner, reducer } = await start(file);
    const rollout = 'stable@pr000004';
    await soak(a, rollout);
    await eventually(() => runner.status().runners[0]?.runs === 1, 5_000, 'the first run');
    await runner.runNow();
    expect(runner.status().runners[0]?.runs).toBe(1);

    runner.handle({ type: 'ResetProbeCache', rolloutId: rollout });
    await runner.settled();
    await eventually(() => runner.status().runners[0]?.runs === 1, 5_000, 'the run after the reset');
    expect(reducer.current().rollouts[rollout]?.probes.smoke?.lastStatus).toBe('pass');
  });

  it('stops the probes when the rollout leaves Soaking, and says why', async () => {
    const file = healthChecks('stop', { ok: { kind: 'exec', command: ['/bin/true'], intervalSeconds: 5 } });
    const { a, runner, reducer } = await start(file);
    const rollout = 'stable@pr000005';
    await soak(a, rollout);
    expect(runner.status().activeRollout).toBe(rollout);

    a.clock.advance(600_001);
    await reducer.submit({ type: 'Tick', currentClosure: TARGET });
    await runner.settled();

    expect(reducer.current().rollouts[rollout]?.state).toBe('Converged');
    expect(runner.status()).toMatchObject({ activeRollout: null, runners: [] });
    expect(
      a.app
        .get(JobRuntime)
        .status()
        .filter((j) => j.name.startsWith('probe:')),
    ).toEqual([]);
    expect(a.logs.messages('log', ProbeRunnerService.name)).toContain(`probes of ${rollout} stopped: the rollout is Converged`);
  });

  it('keeps the probes on the newest soaking rollout: a reset of an older one that is still Soaking takes nothing from it', async () => {
    const file = healthChecks('newest', { ok: { kind: 'exec', command: ['/bin/true'] } });
    const { a, runner } = await start(file);
    await soak(a, 'stable@pr000010');
    a.clock.advance(1_000);
    await soak(a, 'stable@pr000011');
    expect(runner.status().activeRollout).toBe('stable@pr000011');

    runner.handle({ type: 'ResetProbeCache', rolloutId: 'stable@pr000010' });
    await runner.settled();
    expect(runner.status().activeRollout).toBe('stable@pr000011');
    expect(runner.status().runners.map((r) => r.name)).toEqual(['ok']);
  });

  it('warns when an enforce probe runs less often than the failure threshold: one failing run would fail the rollout', async () => {
    const file = healthChecks('slow-interval', { nightly: { kind: 'exec', command: ['/bin/true'], intervalSeconds: 300 } });
    const { a } = await start(file);
    await soak(a, 'stable@pr000012');
    expect(a.logs.messages('warn', ProbeRunnerService.name)).toContain(
      'probe nightly runs every 300 s, longer than the --probe-failure-threshold of 120 s: a single failing run fails the rollout',
    );
  });

  /**
   * An agent whose systemctl reports one failed unit, with `rollout` soaking
   * and the pair the dispatch worker would have cached for it: the manifest
   * asks for at most 0 failed units, signed by the current key or by one the
   * trust file does not name.
   */
  async function soakWithGate(rollout: string, signedBy: 'current' | 'unknown'): Promise<AgentUnderTest> {
    const systemctl = join(world.dir, 'fake-systemctl');
    writeFileSync(systemctl, '#!/bin/sh\necho "nginx.service loaded failed failed nginx"\n', { mode: 0o755 });
    const a = await buildAgent(world, {
      extra: ['--heartbeat-interval', '3600', '--health-checks-file', join(world.dir, 'absent.json')],
      customize: (b) => b.overrideProvider(PROBE_TOOLS).useValue({ ...DEFAULT_PROBE_TOOLS, systemctl }),
    });
    agent = a;
    const input = {
      rolloutId: rollout,
      hosts: [{ hostname: a.config.machineId, targetClosure: TARGET }],
      signedAt: a.clock.now(),
      healthGate: { systemdFailedUnits: { max: 0 } },
    };
    const signed = signedBy === 'current' ? world.signer.sign(input) : world.signer.signedByUnknownKey(input);
    await a.app.get(TrustService).cache.store(rollout, signed.bytes, signed.signature);
    await soak(a, rollout);
    return a;
  }

  it("adds the verified manifest's systemdFailedUnits gate as an implicit enforce probe", async () => {
    const rollout = 'stable@pr000007';
    const a = await soakWithGate(rollout, 'current');

    expect(a.app.get(ReducerService).current().rollouts[rollout]?.probes['systemd-failed-units']).toMatchObject({
      kind: 'systemd-failed-units',
      mode: 'enforce',
      lastStatus: 'fail',
      failureReason: expect.stringContaining('nginx.service') as string,
    });
  });

  it('takes no gate from a cached manifest that no longer verifies, and says so once', async () => {
    const rollout = 'stable@pr000013';
    const a = await soakWithGate(rollout, 'unknown');

    expect(a.app.get(ReducerService).current().rollouts[rollout]?.probes).toEqual({});
    const warned = a.logs.messages('warn', 'Trust').filter((l) => l.includes(rollout));
    expect(warned).toEqual([expect.stringContaining('cache-tampered') as string]);
    expect(warned[0]).toContain("its probes run without the manifest's health gate");
  });

  it('says once that there is no health-checks file, and converges on the soak alone', async () => {
    const { a, runner, reducer } = await start(join(world.dir, 'absent.json'));
    const rollout = 'stable@pr000006';
    await soak(a, rollout);
    expect(runner.status().healthChecksFile).toMatchObject({ state: 'missing' });
    expect(reducer.current().rollouts[rollout]).toMatchObject({ probes: {} });
    expect(reducer.current().rollouts[rollout]?.probesDeclaredAt).toBeDefined();
    a.clock.advance(600_001);
    await reducer.submit({ type: 'Tick', currentClosure: TARGET });
    expect(reducer.current().rollouts[rollout]?.state).toBe('Converged');
    expect(a.logs.messages('log', ProbeRunnerService.name).filter((l) => l.startsWith('no health-checks file'))).toHaveLength(1);
  });
});
