import { spawnSync } from 'node:child_process';
import { mkdirSync, readlinkSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ActivationService } from '../src/activation/activation.service';
import { ComponentHealthService } from '../src/health/components.service';
import { HealthService } from '../src/health/health.service';
import { MetricsService } from '../src/metrics/metrics.service';
import { EventLogService } from '../src/outbound/event-log.service';
import { RecoveryService } from '../src/recovery/recovery.service';
import { ReducerService } from '../src/reducer/reducer.service';
import { type AgentUnderTest, buildAgent, fakeClosure, makeWorld, type World } from './support/agent-harness';

const ROLLOUT = 'stable@a1b2c3d4';

function idle(): Parameters<MetricsService['scrape']>[0] {
  return {
    consecutiveFailures: 0,
    lastSuccessUnixSecs: null,
    clockSkewSecs: null,
    outbound: { pending: 0, delivered: 0, refused: 0 },
    reducerQueueDepth: 0,
    rolloutStates: [],
    clientCertSecondsToExpiry: null,
    eventLogFailing: true,
  };
}
const TARGET = fakeClosure('web-01-26.11', 'b');

// The project's machines and CI run as root, so a real full file system is at hand.
describe('the event log on a full file system, through the real module graph', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;
  let mnt: string;

  beforeAll(async () => {
    world = await makeWorld();
    mnt = join(world.dir, 'tiny');
    mkdirSync(mnt);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=128k', 'tmpfs', mnt]);
    if (mounted.status !== 0) throw new Error(`cannot mount a 128 KiB tmpfs at ${mnt} (needs root): ${mounted.stderr.toString()}`);
  });
  afterAll(async () => {
    await agent?.close();
    spawnSync('umount', [mnt]);
    await world.close();
  });

  it('reports the failed append, posts nothing, changes nothing, says it in health, and works again once there is space', async () => {
    const stateDir = join(mnt, 'state');
    agent = await buildAgent(world, { stateDir });
    await agent.app.get(RecoveryService).whenComplete();
    const reducer = agent.app.get(ReducerService);
    const filler = join(mnt, 'filler');
    const { bavail, bsize } = statfsSync(mnt);
    writeFileSync(filler, Buffer.alloc(bavail * bsize));

    const activate = {
      type: 'Activate' as const,
      rolloutId: ROLLOUT,
      targetClosure: TARGET,
      soakDueAt: '2026-11-28T13:00:00.000Z',
      currentClosure: null,
      dispatchedAt: '2026-11-28T12:00:00.000Z',
    };
    await expect(reducer.submit(activate)).rejects.toThrow(/ENOSPC/);
    expect(reducer.current().rollouts).toEqual({});
    expect(agent.logs.messages('error').join('\n')).toMatch(/Activate for stable@a1b2c3d4 not applied: its events could not be made durable .*ENOSPC.*nothing sent to the control plane/);
    // No switch fired either: the transition was not committed.
    await agent.app.get(ActivationService).idle();
    expect(readlinkSync(world.currentSystemPath)).not.toContain(TARGET);
    expect(world.cp.eventPosts).toEqual([]);

    // Health says so at once: the cause, since when, and /readyz's judgement, while the CP is reachable.
    const eventLog = agent.app.get(EventLogService);
    const failedAt = agent.clock.now().toISOString();
    expect(eventLog.writeHealth()).toMatchObject({
      path: join(stateDir, 'events.log'),
      failingSince: failedAt,
      failuresInStreak: 1,
      failuresTotal: 1,
      lastError: { code: 'ENOSPC', cause: expect.stringMatching(/^ENOSPC/), at: failedAt },
      refusingWrites: null,
    });
    expect(agent.app.get(HealthService).readiness()).toMatchObject({
      ok: false,
      reachable: true,
      eventLog: { writable: false, failingSince: failedAt, lastError: expect.stringMatching(/^ENOSPC/) },
    });
    expect(agent.app.get(ComponentHealthService).components().eventLog).toEqual({
      state: 'failing',
      detail: expect.stringMatching(/^writes to .*events\.log fail \(1 in a row\): ENOSPC/),
      since: failedAt,
    });
    expect(agent.logs.messages('error', EventLogService.name)).toEqual([expect.stringMatching(/writes fail \(ENOSPC.*status is DEGRADED until a write works again/)]);
    expect(await agent.app.get(MetricsService).scrape(idle())).toMatch(/^nixfleet_agent_event_log_append_failures_total 1$/m);

    // Still full: the probe fails too, and the streak stands.
    agent.clock.advance(5_000);
    expect(await eventLog.probeWrites()).toBe(false);
    expect(eventLog.writeHealth().failingSince).toBe(failedAt);

    rmSync(filler);
    // Space again: the probe clears the streak before any event is appended.
    expect(await eventLog.probeWrites()).toBe(true);
    expect(eventLog.writeHealth()).toMatchObject({ failingSince: null, failuresInStreak: 0, failuresTotal: 1, lastError: { code: 'ENOSPC' } });
    expect(agent.app.get(HealthService).readiness()).toMatchObject({ ok: true, eventLog: { writable: true } });
    expect(agent.app.get(ComponentHealthService).components().eventLog.state).toBe('ok');

    const applied = await reducer.submit(activate);
    expect(applied.rejected).toBeUndefined();
    await world.cp.waitFor(() => world.cp.events(world.pki.machineId, ROLLOUT).length >= 1 || undefined, 10_000, 'DispatchAck');
    expect(world.cp.events(world.pki.machineId, ROLLOUT)[0]).toMatchObject({ seq: 1, kind: 'DispatchAck' });
  });
});
