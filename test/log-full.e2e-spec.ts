import { spawnSync } from 'node:child_process';
import { mkdirSync, readlinkSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ActivationService } from '../src/activation/activation.service';
import { ComponentHealthService } from '../src/health/components.service';
import { HealthService } from '../src/health/health.service';
import { MetricsService } from '../src/metrics/metrics.service';
import { JobRuntime } from '../src/jobs/job-runtime.service';
import { EventLogService, WRITE_PROBE_MS, WRITE_PROBE_NAME } from '../src/outbound/event-log.service';
import { EVENT_LOG_FS } from '../src/outbound/outbound.constants';
import { RecoveryService } from '../src/recovery/recovery.service';
import { EventsNotDurableError, ReducerService } from '../src/reducer/reducer.service';
import { type AgentUnderTest, buildAgent, fakeClosure, makeWorld, type World } from './support/agent-harness';
import { FaultyFs } from './support/faulty-log-fs';

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
    expect(agent.logs.messages('error').join('\n')).toMatch(
      /Activate for stable@a1b2c3d4 not applied: its events could not be made durable .*ENOSPC.*nothing sent to the control plane/,
    );
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
    expect(agent.logs.messages('error', EventLogService.name)).toEqual([
      expect.stringMatching(/writes fail \(ENOSPC.*status is DEGRADED until a write works again/),
    ]);
    expect(await agent.app.get(MetricsService).scrape(idle())).toMatch(/^nixfleet_agent_event_log_append_failures_total 1$/m);

    // The write probe, a job of the runtime, is switched on while the cause is the file system's.
    const probeJob = () =>
      agent!.app
        .get(JobRuntime)
        .status()
        .find((j) => j.name === WRITE_PROBE_NAME);
    expect(probeJob()).toMatchObject({ state: 'scheduled', nextDueAt: new Date(Date.parse(failedAt) + WRITE_PROBE_MS).toISOString() });

    // Still full: the probe fails too, and the streak stands.
    agent.clock.advance(5_000);
    expect(await eventLog.probeWrites()).toBe(false);
    expect(eventLog.writeHealth().failingSince).toBe(failedAt);

    rmSync(filler);
    // Space again: the probe clears the streak before any event is appended.
    expect(await eventLog.probeWrites()).toBe(true);
    expect(eventLog.writeHealth()).toMatchObject({
      failingSince: null,
      failuresInStreak: 0,
      failuresTotal: 1,
      lastError: { code: 'ENOSPC' },
    });
    expect(probeJob()).toMatchObject({ state: 'disabled', nextDueAt: null });
    expect(agent.app.get(HealthService).readiness()).toMatchObject({ ok: true, eventLog: { writable: true } });
    expect(agent.app.get(ComponentHealthService).components().eventLog.state).toBe('ok');

    const applied = await reducer.submit(activate);
    expect(applied.rejected).toBeUndefined();
    await world.cp.waitFor(() => world.cp.events(world.pki.machineId, ROLLOUT).length >= 1 || undefined, 10_000, 'DispatchAck');
    expect(world.cp.events(world.pki.machineId, ROLLOUT)[0]).toMatchObject({ seq: 1, kind: 'DispatchAck' });
  });
});

describe('the event log failing on its own file (faults a disk will not make on cue), through the real module graph', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;
  let fs: FaultyFs;

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterEach(async () => {
    await agent?.close();
    agent = null;
  });
  afterAll(async () => {
    await world.close();
  });

  async function start(): Promise<AgentUnderTest> {
    fs = new FaultyFs();
    world.setCurrentSystem(fakeClosure('web-01-26.05'));
    agent = await buildAgent(world, { customize: (b) => b.overrideProvider(EVENT_LOG_FS).useValue(fs) });
    await agent.app.get(RecoveryService).whenComplete();
    return agent;
  }

  const activateInput = (rolloutId: string) => ({
    type: 'Activate' as const,
    rolloutId,
    targetClosure: TARGET,
    soakDueAt: '2026-11-28T13:00:00.000Z',
    currentClosure: null,
    dispatchedAt: '2026-11-28T12:00:00.000Z',
  });

  it('EIO on the log: a probe beside it does not clear the streak, an append that works does', async () => {
    const a = await start();
    const reducer = a.app.get(ReducerService);
    const eventLog = a.app.get(EventLogService);
    fs.appendError = { code: 'EIO', when: () => true };

    await expect(reducer.submit(activateInput(ROLLOUT))).rejects.toThrow(EventsNotDurableError);
    const failedAt = a.clock.now().toISOString();
    expect(eventLog.writeHealth()).toMatchObject({ failingSince: failedAt, clearedBy: 'append', lastError: { code: 'EIO' } });
    expect(a.logs.messages('error', EventLogService.name)).toEqual([
      expect.stringMatching(
        /writes fail \(EIO: injected failure, write\).*\(an append to the log itself must work, a probe beside it proves nothing\)$/,
      ),
    ]);
    expect(a.app.get(ComponentHealthService).components().eventLog.detail).toMatch(/this clears once an append to the log works/);

    // The state dir takes a probe file fine; that proves nothing about the log's own file.
    expect(await eventLog.probeWrites()).toBe(false);
    expect(eventLog.writeHealth().failingSince).toBe(failedAt);

    fs.appendError = null;
    expect((await reducer.submit(activateInput(ROLLOUT))).rejected).toBeUndefined();
    expect(eventLog.writeHealth()).toMatchObject({ failingSince: null, failuresInStreak: 0, clearedBy: null });
    expect(a.logs.messages('log', EventLogService.name)).toContainEqual(
      expect.stringMatching(/an append worked again after 1 failed write\(s\)/),
    );
  });

  it('a probe that succeeds while an append fails does not clear the streak', async () => {
    const a = await start();
    const reducer = a.app.get(ReducerService);
    const eventLog = a.app.get(EventLogService);
    fs.appendError = { code: 'ENOSPC', when: () => true };
    await expect(reducer.submit(activateInput(ROLLOUT))).rejects.toThrow(/ENOSPC/);
    expect(eventLog.writeHealth().clearedBy).toBe('probe');

    // The probe's file needs several round trips to the disk; the faulted append fails before any of them.
    const probe = eventLog.probeWrites();
    await expect(reducer.submit(activateInput(ROLLOUT))).rejects.toThrow(/ENOSPC/);
    expect(await probe).toBe(false);
    expect(eventLog.writeHealth()).toMatchObject({ failuresInStreak: 2 });

    // Nothing fails during this one: it clears.
    fs.appendError = null;
    expect(await eventLog.probeWrites()).toBe(true);
    expect(eventLog.writeHealth().failingSince).toBeNull();
  });

  it("an activation's outcome the log cannot take is held and submitted again, so the rollout never sticks in Activating", async () => {
    const a = await start();
    const reducer = a.app.get(ReducerService);
    fs.appendError = { code: 'ENOSPC', when: (data) => Buffer.from(data).includes('"ActivationCompleted"') };

    expect((await reducer.submit(activateInput(ROLLOUT))).rejected).toBeUndefined();
    await world.cp.waitFor(
      () => a.logs.messages('error', ActivationService.name).find((m) => m.startsWith(`ActivationCompleted for ${ROLLOUT} held:`)),
      10_000,
      'the held outcome',
    );
    expect(readlinkSync(world.currentSystemPath)).toContain(TARGET);
    expect(reducer.current().rollouts[ROLLOUT].state).toBe('Activating');

    fs.appendError = null;
    await world.cp.waitFor(() => reducer.current().rollouts[ROLLOUT].state !== 'Activating' || undefined, 10_000, 'the outcome applied');
    expect(a.logs.messages('log', ActivationService.name)).toContainEqual(
      expect.stringMatching(/^ActivationCompleted for stable@a1b2c3d4 applied after \d+ failed attempt\(s\)$/),
    );
    await world.cp.waitFor(
      () => world.cp.events(world.pki.machineId, ROLLOUT).some((e) => e.kind === 'ActivationCompleted') || undefined,
      10_000,
      'ActivationCompleted at the CP',
    );
  });
});
