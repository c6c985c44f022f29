import { Interval, SchedulerRegistry } from '@nestjs/schedule';
import { type AgentUnderTest, buildAgent, makeWorld, type World } from '../../test/support/agent-harness';
import { JobRuntime } from '../jobs/job-runtime.service';
import { RecoveryService } from '../recovery/recovery.service';
import { HEARTBEAT_INTERVAL_NAME, HEARTBEAT_TICK_MS } from './heartbeat.constants';
import { HeartbeatService } from './heartbeat.service';

// The metadata @nestjs/schedule's explorer reads (its schedule.constants, not re-exported by the package).
const SCHEDULER_TYPE = 'SCHEDULER_TYPE';
const SCHEDULER_NAME = 'SCHEDULER_NAME';
const SCHEDULE_INTERVAL_OPTIONS = 'SCHEDULE_INTERVAL_OPTIONS';

class AnyInterval {
  @Interval(1)
  tick(): void {}
}

/** The function a method decorator put its metadata on. */
const methodOf = (prototype: object, name: string): object => Object.getOwnPropertyDescriptor(prototype, name)?.value as object;

describe('the heartbeat job: an @Interval that @nestjs/schedule mounts at bootstrap and clears at shutdown', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterAll(async () => {
    await world.close();
  });
  afterEach(async () => {
    await agent?.close();
    agent = null;
  });

  const jobState = (a: AgentUnderTest): string | undefined =>
    a.app
      .get(JobRuntime)
      .status()
      .find((j) => j.name === HEARTBEAT_INTERVAL_NAME)?.state;

  it('declares HeartbeatService.tick as the interval "heartbeat", a coarse 10 s backstop', () => {
    const tick = methodOf(HeartbeatService.prototype, 'tick');
    expect(Reflect.getMetadata(SCHEDULER_TYPE, tick)).toBe(Reflect.getMetadata(SCHEDULER_TYPE, methodOf(AnyInterval.prototype, 'tick')));
    expect(Reflect.getMetadata(SCHEDULER_NAME, tick)).toBe(HEARTBEAT_INTERVAL_NAME);
    expect(Reflect.getMetadata(SCHEDULE_INTERVAL_OPTIONS, tick)).toEqual({ timeout: HEARTBEAT_TICK_MS });
    expect(HEARTBEAT_TICK_MS).toBe(10_000);
  });

  it('is mounted by app.init(), while the job it ticks waits for the boot handshake', async () => {
    world.cp.respondNext('heartbeat', { delayMs: 400 });
    const before = world.cp.heartbeats.length;
    agent = await buildAgent(world, { init: false, extra: ['--heartbeat-interval', '1'] });
    const registry = agent.app.get(SchedulerRegistry);
    expect(registry.getIntervals()).toEqual([]);

    await agent.app.init();
    // The agent's only interval: every other job has a timeout armed for its own due time.
    expect(registry.getIntervals()).toEqual([HEARTBEAT_INTERVAL_NAME]);
    expect(jobState(agent)).toBe('waiting');
    agent.clock.advance(5_000);
    agent.app.get(HeartbeatService).tick();
    expect(agent.app.get(HeartbeatService).status()).toMatchObject({ inFlight: false, nextDueAt: null });

    await agent.app.get(RecoveryService).whenComplete();
    expect(jobState(agent)).toBe('scheduled');
    // Besides the tick, the runtime arms a timeout for the beat's due time, under the job's name.
    expect(registry.getTimeouts()).toContain(HEARTBEAT_INTERVAL_NAME);
    // That timeout, not the test nor the 10 s tick, sends the first steady beat once the fake clock makes it due.
    agent.clock.advance(1_000);
    await world.cp.waitFor(() => world.cp.heartbeats.length === before + 2, 2_000, 'the first steady heartbeat');
  });

  it('is cleared by app.close(), with every job stopped and no timer of the agent left', async () => {
    agent = await buildAgent(world, { extra: ['--heartbeat-interval', '60'] });
    await agent.app.get(RecoveryService).whenComplete();
    const registry = agent.app.get(SchedulerRegistry);
    const runtime = agent.app.get(JobRuntime);
    expect(registry.getIntervals()).toEqual([HEARTBEAT_INTERVAL_NAME]);
    // Every periodic worker of the agent is a job of the runtime (the systemd ones only under systemd).
    expect(
      runtime
        .status()
        .map((j) => j.name)
        .sort(),
    ).toEqual([
      'advance-tick',
      'dispatch-poll',
      'heartbeat',
      'identity-poll',
      'outbound-compact',
      'outbound-drain',
      'outbound-write-probe',
      'systemd-status',
      'tls-agent-retire',
    ]);

    const a = agent;
    await a.close();
    agent = null;
    expect(registry.getIntervals()).toEqual([]);
    expect(registry.getTimeouts()).toEqual([]);
    expect([...registry.getCronJobs().keys()]).toEqual([]);
    expect(runtime.status().filter((j) => j.state !== 'stopped')).toEqual([]);
  });
});
