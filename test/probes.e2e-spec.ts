import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Pki } from '../dev/pki';
import { runCli } from './support/agent-cli';
import { dispatch, heldKinds, seqsWithTwoBodies } from './support/cp-record';
import {
  fakeClosure,
  killAllFaultAgents,
  makeFaultWorld,
  makeSharedPki,
  startFaultAgent,
  type FaultAgent,
  type Json,
  type World,
} from './support/fault-world';
import { eventually, until } from './support/polling';
import {
  eventOrderProblems,
  eventsOf,
  type ExecScripts,
  FAIL_SCRIPT_TAIL,
  type HealthEndpoint,
  startHealthEndpoint,
  startTcpListener,
  type TcpListener,
  writeExecScripts,
  writeHealthChecks,
} from './support/probe-targets';

// Issue 11, "What must be shown": the built agent as a child process, the dev
// CP over mTLS, the symlink backend, and real probe targets on loopback. Each
// case gets its own CP and dirs; the PKI is shared.

const ROLLOUT = 'stable@a1b2c3d4';
/** What the world's current-system link points at before any dispatch. */
const OLD = fakeClosure('web-01-26.05');
const TARGET = fakeClosure('web-01-26.11', 'b');
const THRESHOLD_SECS = 10;

describe('health probes judge a rollout: the built agent, real probe targets on loopback, the dev CP', () => {
  let shared: { pki: Pki; remove(): void };
  let world: World;
  let web: HealthEndpoint;
  let db: TcpListener;
  let scripts: ExecScripts;
  let healthChecksFile: string;

  beforeAll(async () => {
    shared = await makeSharedPki();
  }, 60_000);
  afterAll(() => shared.remove());

  beforeEach(async () => {
    world = await makeFaultWorld({}, shared.pki);
    web = await startHealthEndpoint();
    db = await startTcpListener();
    scripts = writeExecScripts(join(world.dir, 'probes'));
    healthChecksFile = join(world.dir, 'health-checks.json');
  });
  afterEach(async () => {
    await killAllFaultAgents();
    await Promise.all([web.close(), db.close()]);
    await world.close();
  });

  function start(policy: 'halt' | 'rollback-and-halt' = 'halt'): Promise<FaultAgent> {
    return startFaultAgent(world, {
      extra: ['--health-checks-file', healthChecksFile, '--probe-failure-threshold', String(THRESHOLD_SECS), '--on-health-failure', policy],
    });
  }

  const held = () => world.cp.events(world.pki.machineId, ROLLOUT);
  const holds = (kind: string, probeName?: string): boolean => eventsOf(held(), kind, probeName).length > 0;
  const one = (kind: string, probeName?: string): Json => {
    const found = eventsOf(held(), kind, probeName);
    if (found.length !== 1)
      throw new Error(`expected one ${kind}${probeName ? ` of ${probeName}` : ''}, the CP holds ${heldKinds(world, ROLLOUT).join(' ')}`);
    return found[0];
  };
  const waitHeld = (kind: string, what: string, timeoutMs = 40_000, probeName?: string): Promise<Json> =>
    until(
      () => eventsOf(held(), kind, probeName)[0] ?? null,
      timeoutMs,
      what,
      () => `the CP holds: ${heldKinds(world, ROLLOUT).join(' ')}`,
    );
  const rolloutHealth = (s: Json): Json => {
    const found = ((s.probes as Json).rollouts as Json[]).find((r) => r.rolloutId === ROLLOUT);
    if (found === undefined) throw new Error(`/status probes.rollouts has no ${ROLLOUT}: ${JSON.stringify(s.probes)}`);
    return found;
  };
  const link = (): string => readlinkSync(world.currentSystemPath);
  const ms = (iso: unknown): number => Date.parse(String(iso));

  it('healthy: http, tcp and exec probes all pass in enforce mode → Converged after the soak; every event in order, as §6 shapes it', async () => {
    writeHealthChecks(healthChecksFile, {
      web: { kind: 'http', url: web.url, intervalSeconds: 1 },
      'db-port': { kind: 'tcp', port: db.port, intervalSeconds: 5 },
      check: { kind: 'exec', command: [scripts.pass], intervalSeconds: 5, timeoutSecs: 5 },
    });
    const agent = await start();
    const soakDueMs = Date.now() + 3_000;
    dispatch(world, ROLLOUT, TARGET, 3_000);

    const converged = await waitHeld('Converged', 'Converged');
    const events = held();
    expect(eventOrderProblems(events)).toEqual([]);
    // Activation, topology, each probe's first observation and result (the probes in any order), the verdict.
    const kinds = events.map((e) => e.kind);
    expect(kinds.slice(0, 4)).toEqual(['DispatchAck', 'ActivationStarted', 'ActivationCompleted', 'ProbeTopologyDeclared']);
    expect(kinds.slice(4, -1).sort()).toEqual([...Array<string>(3).fill('ProbeObservedFirst'), ...Array<string>(3).fill('ProbeResult')]);
    expect(kinds.at(-1)).toBe('Converged');
    expect(one('ProbeTopologyDeclared').probes).toEqual([
      { probeName: 'check', kind: 'exec', mode: 'enforce' },
      { probeName: 'db-port', kind: 'tcp', mode: 'enforce' },
      { probeName: 'web', kind: 'http', mode: 'enforce' },
    ]);
    for (const name of ['check', 'db-port', 'web']) {
      expect(one('ProbeObservedFirst', name)).toMatchObject({ mode: 'enforce' });
      expect(one('ProbeResult', name)).toMatchObject({ mode: 'enforce', status: 'pass' });
    }
    expect(eventsOf(events, 'ProbeFailureFirst')).toEqual([]);
    expect(converged).toMatchObject({ currentClosure: TARGET });
    // The soak was waited out: the CP's soak_due_at is the earliest convergence.
    expect(ms(converged.convergedAt)).toBeGreaterThanOrEqual(soakDueMs);
    expect(link()).toBe(join(world.storeDir, TARGET));
    // The probes really ran against the targets.
    expect(web.hits()).toBeGreaterThan(0);
    expect(db.accepted()).toBeGreaterThan(0);

    // intervalSeconds 1 runs every 5 s (the floor of §10).
    const topology = await agent.waitForLog(/^probes of stable@a1b2c3d4 /, 'the probe topology line');
    expect(topology.message).toContain('web (http, enforce, every 5 s)');
    await agent.waitForLog(/^rollout stable@a1b2c3d4: Converged on /, 'the Converged line');

    const s = await agent.statusWhen((st) => (st.outbound as Json).pending === 0, 'every event delivered');
    expect((s.rollouts as Json[])[0]).toMatchObject({ rolloutId: ROLLOUT, state: 'Converged', lastEventSeq: events.length });
    const health = rolloutHealth(s);
    expect(health).toMatchObject({ state: 'Converged', waitingFor: [], probesDeclared: true, failedAt: null, rollback: null });
    expect((health.probes as Json[]).map((p) => [p.name, p.mode, p.lastResult])).toEqual([
      ['check', 'enforce', 'pass'],
      ['db-port', 'enforce', 'pass'],
      ['web', 'enforce', 'pass'],
    ]);
    expect(seqsWithTwoBodies(world.cp)).toEqual([]);
    expect(await agent.stop()).toBe(0);
  });

  it('failing past the threshold under rollback-and-halt (the HTTP endpoint told to fail, the TCP port closed) → Failed, then rolled back: RollbackComplete and Reverted, the link on the old closure', async () => {
    writeHealthChecks(healthChecksFile, {
      web: { kind: 'http', url: web.url, intervalSeconds: 5 },
      'db-port': { kind: 'tcp', port: db.port, intervalSeconds: 5 },
      check: { kind: 'exec', command: [scripts.pass], intervalSeconds: 5 },
    });
    const agent = await start('rollback-and-halt');
    // A long soak: only the probes can end this rollout before it.
    dispatch(world, ROLLOUT, TARGET, 60_000);

    await eventually(
      () => ['web', 'db-port', 'check'].every((name) => eventsOf(held(), 'ProbeResult', name).some((e) => e.status === 'pass')),
      30_000,
      'a first pass of every probe',
      () => `the CP holds: ${heldKinds(world, ROLLOUT).join(' ')}`,
    );
    expect(link()).toBe(join(world.storeDir, TARGET));
    web.setHealthy(false);
    await db.close();

    const failed = await waitHeld('Failed', 'Failed');
    const rolledBack = await waitHeld('RollbackComplete', 'RollbackComplete', 20_000);

    const webFirst = one('ProbeFailureFirst', 'web');
    const dbFirst = one('ProbeFailureFirst', 'db-port');
    expect(eventsOf(held(), 'ProbeResult', 'web').find((e) => e.status === 'fail')?.failureReason).toBe(
      `GET ${web.url} answered 503, expected 200`,
    );
    expect(eventsOf(held(), 'ProbeResult', 'db-port').find((e) => e.status === 'fail')?.failureReason).toBe(
      `connect to 127.0.0.1:${db.port} refused (ECONNREFUSED)`,
    );
    expect(failed.policyApplied).toBe('rollback-and-halt');
    expect(failed.sustainedDurationSecs).toBeGreaterThanOrEqual(THRESHOLD_SECS);
    // Each failing probe has failed since its first failure for at least the threshold; the passing one is not named.
    const failing = failed.failingProbes as string[];
    expect(failing.length).toBeGreaterThan(0);
    for (const name of failing) expect(['web', 'db-port']).toContain(name);
    const firsts: Record<string, Json> = { web: webFirst, 'db-port': dbFirst };
    for (const name of failing) expect(ms(failed.failedAt) - ms(firsts[name].firstFailedAt)).toBeGreaterThanOrEqual(THRESHOLD_SECS * 1000);
    expect(Math.floor((ms(failed.failedAt) - Math.min(...failing.map((n) => ms(firsts[n].firstFailedAt)))) / 1000)).toBe(
      failed.sustainedDurationSecs,
    );

    expect(one('DispatchAck').currentClosureAtDispatch).toBe(OLD);
    expect(rolledBack).toMatchObject({ revertedToClosure: OLD, exitCode: 0 });
    expect(link()).toBe(join(world.storeDir, OLD));
    expect(holds('Converged')).toBe(false);
    const events = held();
    expect(eventOrderProblems(events)).toEqual([]);
    expect(events.slice(-2).map((e) => e.kind)).toEqual(['Failed', 'RollbackComplete']);

    const s = await agent.statusWhen(
      (st) => (st.outbound as Json).pending === 0 && (st.rollouts as Json[])[0]?.state === 'Reverted',
      'Reverted, every event delivered',
    );
    expect((s.rollouts as Json[])[0]).toMatchObject({ rolloutId: ROLLOUT, lastEventSeq: events.length });
    expect(rolloutHealth(s)).toMatchObject({
      state: 'Reverted',
      policyApplied: 'rollback-and-halt',
      failedAt: failed.failedAt,
      rollback: { toClosure: OLD, exitCode: 0 },
      waitingFor: [],
    });
    // One info line per state change, the failing probes named.
    const failedLine = await agent.waitForLog(/^rollout stable@a1b2c3d4: Failed/, 'the Failed line');
    for (const name of failing) expect(failedLine.message).toContain(name);
    const revertedLine = await agent.waitForLog(/^rollout stable@a1b2c3d4: Reverted/, 'the Reverted line');
    expect(revertedLine.message).toContain(OLD);
    expect(seqsWithTwoBodies(world.cp)).toEqual([]);
    expect(await agent.stop()).toBe(0);
  }, 90_000);

  it('failing past the threshold under halt (an exec probe that exits 1) → Failed, and the link stays on the target', async () => {
    writeHealthChecks(healthChecksFile, {
      web: { kind: 'http', url: web.url, intervalSeconds: 5 },
      'db-port': { kind: 'tcp', port: db.port, intervalSeconds: 5 },
      check: { kind: 'exec', command: [scripts.fail], intervalSeconds: 5 },
    });
    const agent = await start('halt');
    dispatch(world, ROLLOUT, TARGET, 3_000);

    const failed = await waitHeld('Failed', 'Failed');
    expect(failed).toMatchObject({ failingProbes: ['check'], policyApplied: 'halt' });
    expect(failed.sustainedDurationSecs).toBeGreaterThanOrEqual(THRESHOLD_SECS);
    const first = one('ProbeFailureFirst', 'check');
    expect(ms(failed.failedAt) - ms(first.firstFailedAt)).toBeGreaterThanOrEqual(THRESHOLD_SECS * 1000);

    // §10: the exit, then the last 3 stderr lines, cut from the front to 512 characters.
    const reason = String(one('ProbeResult', 'check').failureReason);
    expect(reason.startsWith(`${scripts.fail} exited with code 1\n`)).toBe(true);
    expect(reason.endsWith(FAIL_SCRIPT_TAIL.join('\n'))).toBe(true);
    expect(Array.from(reason).length).toBeLessThanOrEqual(512);
    expect(reason).toContain('…');

    const s = await agent.statusWhen(
      (st) => (st.outbound as Json).pending === 0 && (st.rollouts as Json[])[0]?.state === 'Failed',
      'Failed, every event delivered',
    );
    expect(rolloutHealth(s)).toMatchObject({ state: 'Failed', policyApplied: 'halt', rollback: null, failedAt: failed.failedAt });
    // halt stops there: no rollback, now or a few ticks later.
    await new Promise((r) => setTimeout(r, 3_000));
    expect(link()).toBe(join(world.storeDir, TARGET));
    expect(holds('RollbackComplete')).toBe(false);
    expect(holds('Converged')).toBe(false);
    expect(eventOrderProblems(held())).toEqual([]);
    expect(held().at(-1)?.kind).toBe('Failed');
    expect((await agent.status()).rollouts).toEqual([expect.objectContaining({ state: 'Failed', lastEventSeq: held().length })]);
    expect(await agent.stop()).toBe(0);
  }, 90_000);

  it('an enforce probe that never answers holds convergence past the soak: /status waitingFor and the status CLI name it', async () => {
    // A distinctive argv, to find the process later.
    const sleeper = ['/bin/sleep', '613'];
    writeHealthChecks(healthChecksFile, {
      web: { kind: 'http', url: web.url, intervalSeconds: 5 },
      silent: { kind: 'exec', command: sleeper, intervalSeconds: 5, timeoutSecs: 600 },
    });
    const agent = await start();
    const soakDueMs = Date.now() + 2_000;
    dispatch(world, ROLLOUT, TARGET, 2_000);

    await waitHeld('ProbeResult', 'the web probe passing', 30_000, 'web');
    const waiting = 'waiting for probe silent (no result yet)';
    await agent.statusWhen((st) => rolloutHealth(st).soakRemainingSecs === 0, 'the soak over', 30_000);
    // A few advance ticks (1 s each) past the soak's end.
    await eventually(() => Date.now() > soakDueMs + 4_000, 30_000, 'four ticks past the soak');
    const s = await agent.status();
    expect((s.rollouts as Json[])[0]).toMatchObject({ rolloutId: ROLLOUT, state: 'Soaking' });
    const health = rolloutHealth(s);
    expect(health).toMatchObject({ state: 'Soaking', soakRemainingSecs: 0, probesDeclared: true });
    expect(health.waitingFor).toEqual([waiting]);
    expect((health.probes as Json[]).map((p) => [p.name, p.mode, p.lastResult])).toEqual([
      ['silent', 'enforce', null],
      ['web', 'enforce', 'pass'],
    ]);
    const runner = ((s.probes as Json).runners as Json[]).find((r) => r.name === 'silent');
    expect(runner).toMatchObject({ kind: 'exec', mode: 'enforce', running: true, runs: 0, lastRunResult: null });
    expect(holds('Converged')).toBe(false);
    expect(eventsOf(held(), 'ProbeObservedFirst', 'silent')).toEqual([]);
    expect(eventsOf(held(), 'ProbeResult', 'silent')).toEqual([]);

    const cli = await runCli(['status', '--admin-listen', `127.0.0.1:${agent.port}`]);
    expect(cli.stdout).toContain(waiting);
    expect(cli.stdout).toMatch(/probe silent \(exec, enforce\): no result yet/);
    expect(cli.stdout).toMatch(/probe web \(http, enforce\): pass/);

    // Stopping does not wait for the silent probe: its process group is killed.
    expect(await agent.stop()).toBe(0);
    await eventually(() => !sleeperRunning(sleeper), 10_000, `no ${sleeper.join(' ')} left running`);
    expect(holds('Converged')).toBe(false);
    expect(eventOrderProblems(held())).toEqual([]);
  }, 90_000);

  it('an observe probe failing past the threshold does not hold convergence: Converged, and its failing ProbeResult (mode observe) reached the CP', async () => {
    writeHealthChecks(healthChecksFile, {
      web: { kind: 'http', url: web.url, intervalSeconds: 5 },
      watcher: { kind: 'exec', command: [scripts.fail], mode: 'observe', intervalSeconds: 5 },
    });
    const agent = await start('rollback-and-halt');
    // The soak outlasts the threshold: the observe probe fails longer than an enforce one may.
    const soakMs = (THRESHOLD_SECS + 3) * 1000;
    dispatch(world, ROLLOUT, TARGET, soakMs);

    const converged = await waitHeld('Converged', 'Converged', soakMs + 30_000);
    expect(one('ProbeTopologyDeclared').probes).toEqual([
      { probeName: 'watcher', kind: 'exec', mode: 'observe' },
      { probeName: 'web', kind: 'http', mode: 'enforce' },
    ]);
    expect(one('ProbeResult', 'watcher')).toMatchObject({ mode: 'observe', status: 'fail' });
    const first = one('ProbeFailureFirst', 'watcher');
    expect(first.mode).toBe('observe');
    expect(ms(converged.convergedAt) - ms(first.firstFailedAt)).toBeGreaterThanOrEqual(THRESHOLD_SECS * 1000);
    expect(holds('Failed')).toBe(false);
    expect(eventOrderProblems(held())).toEqual([]);
    expect(held().at(-1)?.kind).toBe('Converged');
    expect(link()).toBe(join(world.storeDir, TARGET));
    const s = await agent.statusWhen((st) => (st.outbound as Json).pending === 0, 'every event delivered');
    expect(rolloutHealth(s)).toMatchObject({ state: 'Converged', failedAt: null, policyApplied: null });
    expect(await agent.stop()).toBe(0);
  }, 90_000);

  it('a malformed entry ("port": "5432"): one warning line naming the file, the probe and the field; declared, and it fails the rollout as an enforce probe', async () => {
    writeHealthChecks(healthChecksFile, {
      web: { kind: 'http', url: web.url, intervalSeconds: 5 },
      // A string port, and a typo in the mode: neither may let the refused declaration off (it stays enforce).
      'db-port': { kind: 'tcp', port: String(db.port), mode: 'observ', intervalSeconds: 5 },
    });
    const agent = await start('halt');
    const soakDueMs = Date.now() + 3_000;
    dispatch(world, ROLLOUT, TARGET, 3_000);

    await waitHeld('ProbeFailureFirst', 'the refused probe failing', 30_000, 'db-port');
    // One line says it, once: no other line of the log names the file (the probe's failing runs do not repeat it).
    const problemLines = agent.logs().filter((l) => l.message.includes(healthChecksFile));
    expect(problemLines).toHaveLength(1);
    const [line] = problemLines;
    expect(line.level).toBe('warn');
    expect(line.message.startsWith(`health-checks file ${healthChecksFile}, probe "db-port", `)).toBe(true);
    expect(line.message).toContain(`field "port"`);
    expect(line.message).toContain(`(got "${db.port}")`);
    expect(line.message).toMatch(/counts as a failing enforce probe/);
    expect(line.message.includes('\n')).toBe(false);

    expect(one('ProbeTopologyDeclared').probes).toEqual([
      { probeName: 'db-port', kind: 'tcp', mode: 'enforce' },
      { probeName: 'web', kind: 'http', mode: 'enforce' },
    ]);
    const result = one('ProbeResult', 'db-port');
    expect(result).toMatchObject({ mode: 'enforce', status: 'fail' });
    expect(String(result.failureReason)).toContain('field "port"');

    // While it soaks, /status names the refused probe as what holds the rollout.
    const soaking = await agent.statusWhen(
      (st) =>
        rolloutHealth(st).state === 'Soaking' &&
        (rolloutHealth(st).probes as Json[]).some((p) => p.name === 'db-port' && p.lastResult === 'fail'),
      'the refused probe failing while Soaking',
      30_000,
    );
    expect((soaking.probes as Json).healthChecksFile).toMatchObject({ path: healthChecksFile, state: 'invalid', problems: [line.message] });
    expect((rolloutHealth(soaking).waitingFor as string[]).some((w) => w.startsWith('probe db-port failing for'))).toBe(true);

    const failed = await waitHeld('Failed', 'Failed');
    expect(failed).toMatchObject({ failingProbes: ['db-port'], policyApplied: 'halt' });
    expect(failed.sustainedDurationSecs).toBeGreaterThanOrEqual(THRESHOLD_SECS);
    // The soak had long ended: only the refused probe kept the rollout from converging.
    expect(ms(failed.failedAt)).toBeGreaterThan(soakDueMs);
    expect(holds('Converged')).toBe(false);
    expect(eventOrderProblems(held())).toEqual([]);
    // Still said once, by the end: the failing runs and the verdict did not repeat it.
    expect(agent.logs().filter((l) => l.message.includes(healthChecksFile))).toEqual([line]);
    // The listener was never probed: the refused declaration did not run as a tcp probe.
    expect(db.accepted()).toBe(0);
    expect(await agent.stop()).toBe(0);
  }, 90_000);
});

/** Whether a process runs with exactly this argv (read from /proc). */
function sleeperRunning(argv: readonly string[]): boolean {
  const wanted = `${argv.join('\0')}\0`;
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .some((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8') === wanted;
      } catch {
        return false;
      }
    });
}
