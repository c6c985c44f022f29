import { readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { dispatch, heldKinds, seqsWithTwoBodies } from './support/cp-record';
import {
  fakeClosure,
  killAllFaultAgents,
  makeFaultWorld,
  startFaultAgent,
  type FaultAgent,
  type Json,
  type World,
} from './support/fault-world';
import { until } from './support/polling';
import {
  eventOrderProblems,
  eventsOf,
  type ExecScripts,
  type HealthEndpoint,
  startHealthEndpoint,
  writeExecScripts,
  writeHealthChecks,
} from './support/probe-targets';

// Issue 11: kill -9 during Soaking, restart on the same state dir → the same
// verdict, from the same first failure, and no seq reused.

const ROLLOUT = 'stable@a1b2c3d4';
const OLD = fakeClosure('web-01-26.05');
const TARGET = fakeClosure('web-01-26.11', 'b');
/** Long enough that the agent is back well before it runs out. */
const THRESHOLD_SECS = 20;
/** Ticks are 1 s apart and a restart replays the log: what the verdict may lag the threshold by. */
const SLACK_MS = 4_000;
/** The agent stays down until this long after the first failure. */
const DOWN_UNTIL_MS = 8_000;

describe('health probes across a kill -9: the built agent restarted on its state dir', () => {
  let world: World;
  let web: HealthEndpoint;
  let scripts: ExecScripts;

  beforeAll(async () => {
    world = await makeFaultWorld();
    web = await startHealthEndpoint();
    scripts = writeExecScripts(join(world.dir, 'probes'));
  }, 60_000);
  afterAll(async () => {
    await killAllFaultAgents();
    await web.close();
    await world.close();
  });

  it('SIGKILL while an enforce probe fails: after the restart the rollout fails from the original first failure, is rolled back, and no seq is reused', async () => {
    const healthChecksFile = join(world.dir, 'health-checks.json');
    writeHealthChecks(healthChecksFile, {
      web: { kind: 'http', url: web.url, intervalSeconds: 5 },
      check: { kind: 'exec', command: [scripts.fail], intervalSeconds: 5 },
    });
    const stateDir = join(world.dir, 'state');
    const flags = [
      '--health-checks-file',
      healthChecksFile,
      '--probe-failure-threshold',
      String(THRESHOLD_SECS),
      '--on-health-failure',
      'rollback-and-halt',
    ];
    let agent: FaultAgent = await startFaultAgent(world, { stateDir, extra: flags });
    const port = agent.port;
    dispatch(world, ROLLOUT, TARGET, 3_000);

    const held = () => world.cp.events(world.pki.machineId, ROLLOUT);
    const context = () => `the CP holds: ${heldKinds(world, ROLLOUT).join(' ')}\noutput:\n${agent.run.output()}`;
    const waitHeld = (kind: string, what: string, timeoutMs: number, probeName?: string): Promise<Json> =>
      until(() => eventsOf(held(), kind, probeName)[0] ?? null, timeoutMs, what, context);

    const first = await waitHeld('ProbeFailureFirst', 'the first failure of check', 30_000, 'check');
    const soaking = await agent.status();
    expect((soaking.rollouts as Json[])[0]).toMatchObject({ rolloutId: ROLLOUT, state: 'Soaking' });
    const seqBeforeKill = ((soaking.rollouts as Json[])[0].lastEventSeq as number) ?? 0;

    expect(await agent.kill()).toBe('SIGKILL');
    const heldAtKill = held().map((e) => e.raw);
    // Down long enough that a streak restarted at the restart would end well past the original's threshold.
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(String(first.firstFailedAt)) + DOWN_UNTIL_MS - Date.now())));
    agent = await startFaultAgent(world, { stateDir, adminPort: port, extra: flags });
    const backAtMs = Date.now();
    await agent.waitForLog(/^restored 1 rollout\(s\) from \d+ logged event\(s\)/, 'the rollout restored from the log');

    const failed = await waitHeld('Failed', 'Failed after the restart', 60_000);
    const rolledBack = await waitHeld('RollbackComplete', 'RollbackComplete', 20_000);

    // The same streak: one first failure, the original one; the verdict counted from it.
    expect(eventsOf(held(), 'ProbeFailureFirst', 'check')).toEqual([first]);
    expect(failed).toMatchObject({ failingProbes: ['check'], policyApplied: 'rollback-and-halt' });
    expect(failed.sustainedDurationSecs).toBeGreaterThanOrEqual(THRESHOLD_SECS);
    const firstMs = Date.parse(String(first.firstFailedAt));
    const failedMs = Date.parse(String(failed.failedAt));
    expect(failedMs - firstMs).toBeGreaterThanOrEqual(THRESHOLD_SECS * 1000);
    // A restart that reset the streak would fail a threshold after the restart, not after the first failure.
    expect(failedMs).toBeLessThanOrEqual(Math.max(firstMs + THRESHOLD_SECS * 1000, backAtMs) + SLACK_MS);
    expect(Math.floor((failedMs - firstMs) / 1000)).toBe(failed.sustainedDurationSecs);

    expect(rolledBack).toMatchObject({ revertedToClosure: OLD, exitCode: 0 });
    expect(readlinkSync(world.currentSystemPath)).toBe(join(world.storeDir, OLD));

    // No seq was given twice: every event the CP held at the kill is unchanged, every seq has one body, none missing.
    const events = held();
    expect(events.slice(0, heldAtKill.length).map((e) => e.raw)).toEqual(heldAtKill);
    expect(seqsWithTwoBodies(world.cp)).toEqual([]);
    expect(eventOrderProblems(events)).toEqual([]);
    expect(events.length).toBeGreaterThan(seqBeforeKill);
    expect(events.slice(-2).map((e) => e.kind)).toEqual(['Failed', 'RollbackComplete']);

    const s = await agent.statusWhen(
      (st) => (st.outbound as Json).pending === 0 && (st.rollouts as Json[])[0]?.state === 'Reverted',
      'Reverted, every event delivered',
    );
    expect((s.rollouts as Json[])[0]).toMatchObject({ rolloutId: ROLLOUT, lastEventSeq: events.length, lastDeliveredSeq: events.length });
    expect(await agent.stop()).toBe(0);
  }, 120_000);
});
