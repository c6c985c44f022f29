import { readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { SchedulerRegistry } from '@nestjs/schedule';
import { type AgentUnderTest, buildAgent, fakeClosure, makeWorld, type World } from '../../test/support/agent-harness';
import { JobRuntime } from '../jobs/job-runtime.service';
import { BootGate } from '../lifecycle/boot-gate';
import { RecoveryService } from '../recovery/recovery.service';
import { ReducerService } from '../reducer/reducer.service';
import { ADVANCE_TICK_NAME, AdvanceTicker } from './advance.ticker';

const MACHINE = 'web-01';
const BOOT_CLOSURE = fakeClosure('web-01-26.05');
const TARGET = fakeClosure('web-01-26.11', 'b');
const ELSEWHERE = fakeClosure('web-01-hotfix', 'c');
const SOAK_MS = 30_000;

describe('AdvanceTicker: time for the reducer, with a real dispatch and the symlink activation', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterAll(async () => {
    await world.close();
  });
  beforeEach(() => {
    world.setCurrentSystem(BOOT_CLOSURE);
  });
  afterEach(async () => {
    jest.restoreAllMocks();
    await agent?.close();
    agent = null;
    world.cp.setDefault('heartbeat', null);
  });

  async function start(): Promise<AgentUnderTest> {
    agent = await buildAgent(world, { extra: ['--heartbeat-interval', '60'] });
    await agent.app.get(RecoveryService).whenComplete();
    return agent;
  }

  /** Dispatches `rolloutId` with its soak due 30 s after the fake now; resolves once the rollout is Soaking. */
  async function dispatchAndSoak(a: AgentUnderTest, rolloutId: string): Promise<void> {
    const reducer = a.app.get(ReducerService);
    world.cp.queueDispatch(MACHINE, {
      rollout_id: rolloutId,
      target_closure: TARGET,
      soak_due_at: new Date(a.clock.now().getTime() + SOAK_MS).toISOString(),
    });
    // Soaking, with the probe topology declared (none here): from then on only the soak and the closure hold it.
    await world.cp.waitFor(
      () =>
        reducer.current().rollouts[rolloutId]?.state === 'Soaking' && reducer.current().rollouts[rolloutId]?.probesDeclaredAt !== undefined,
      5_000,
      `${rolloutId} Soaking with its probes declared`,
    );
    expect(readlinkSync(world.currentSystemPath)).toBe(join(world.storeDir, TARGET));
  }

  const stateOf = (a: AgentUnderTest, rolloutId: string): string | undefined =>
    a.app.get(ReducerService).current().rollouts[rolloutId]?.state;
  const convergedOnCp = (rolloutId: string) => world.cp.events(MACHINE, rolloutId).filter((e) => e.kind === 'Converged');

  it('converges a Soaking rollout once soak_due_at has passed and the current closure is the target; the CP gets Converged', async () => {
    const rolloutId = 'stable@ad000001';
    const a = await start();
    const ticker = a.app.get(AdvanceTicker);
    await dispatchAndSoak(a, rolloutId);

    // Soak not due yet: a tick changes nothing.
    await ticker.tick();
    expect(stateOf(a, rolloutId)).toBe('Soaking');

    a.clock.advance(SOAK_MS + 1_000);
    await ticker.tick();
    expect(stateOf(a, rolloutId)).toBe('Converged');
    expect(a.app.get(ReducerService).current().rollouts[rolloutId]).toMatchObject({
      currentClosure: TARGET,
      convergedAt: a.clock.now().toISOString(),
    });

    const [converged] = await world.cp.waitFor(
      () => (convergedOnCp(rolloutId).length > 0 ? convergedOnCp(rolloutId) : undefined),
      5_000,
      'Converged on the CP',
    );
    // After the empty probe topology the runners declared (seq 4).
    expect(converged.seq).toBe(5);
    expect(converged.event).toMatchObject({ kind: 'Converged', currentClosure: TARGET, convergedAt: a.clock.now().toISOString() });
    expect(world.cp.events(MACHINE, rolloutId).map((e) => e.kind)).toEqual([
      'DispatchAck',
      'ActivationStarted',
      'ActivationCompleted',
      'ProbeTopologyDeclared',
      'Converged',
    ]);
  });

  it('does not converge while the current closure differs from the target, even with the soak due', async () => {
    const rolloutId = 'stable@ad000002';
    const a = await start();
    const ticker = a.app.get(AdvanceTicker);
    await dispatchAndSoak(a, rolloutId);

    world.setCurrentSystem(ELSEWHERE);
    a.clock.advance(SOAK_MS + 1_000);
    await ticker.tick();
    expect(stateOf(a, rolloutId)).toBe('Soaking');
    a.clock.advance(60_000);
    await ticker.tick();
    expect(stateOf(a, rolloutId)).toBe('Soaking');

    // Only the closure held it back: back on the target, the next tick converges.
    world.setCurrentSystem(TARGET);
    await ticker.tick();
    expect(stateOf(a, rolloutId)).toBe('Converged');
    await world.cp.waitFor(() => convergedOnCp(rolloutId).length === 1, 5_000, 'Converged on the CP');
    expect(convergedOnCp(rolloutId)[0].event).toMatchObject({ currentClosure: TARGET });
  });

  it('ticks only once boot recovery is over and while a rollout is Soaking, and stops ticking at shutdown', async () => {
    const rolloutId = 'stable@ad000003';
    // The handshake outlasts one tick interval: an ungated ticker would have ticked by then.
    world.cp.respondNext('heartbeat', { delayMs: 1_300 });
    // Both spies pass every call through; Jest numbers the calls to all mocks in one sequence.
    const submits = jest.spyOn(ReducerService.prototype, 'submit');
    const opens = jest.spyOn(BootGate.prototype, 'open');
    const ticks = (): number[] =>
      submits.mock.calls.flatMap(([input], i) => (input.type === 'Tick' ? [submits.mock.invocationCallOrder[i]] : []));

    agent = await buildAgent(world, { extra: ['--heartbeat-interval', '60'] });
    const a = agent;
    const bootGate = a.app.get(BootGate);
    const scheduler = a.app.get(SchedulerRegistry);
    // A job of the runtime: its state says whether it runs, its armed timeout sits in the registry under its name.
    const state = (): string | undefined =>
      a.app
        .get(JobRuntime)
        .status()
        .find((j) => j.name === ADVANCE_TICK_NAME)?.state;
    const armed = (): boolean => scheduler.doesExist('timeout', ADVANCE_TICK_NAME);
    expect(bootGate.isOpen()).toBe(false);
    expect(state()).toBe('waiting');
    expect(armed()).toBe(false);
    // Ticks fall due by the clock while the handshake is held: an ungated job's timer would find one due within it.
    a.clock.advance(5_000);

    await bootGate.whenOpen();
    // Nothing soaks: the job is off, with no timer to wake the agent.
    expect(state()).toBe('disabled');
    expect(armed()).toBe(false);

    await dispatchAndSoak(a, rolloutId);
    expect(state()).toBe('scheduled');
    expect(armed()).toBe(true);
    expect(ticks()).toEqual([]);
    // The job's timer delivers a tick once the clock says one is due.
    a.clock.advance(1_000);
    await world.cp.waitFor(() => ticks().length >= 1, 5_000, 'a scheduled tick');
    expect(opens).toHaveBeenCalled();
    expect(ticks().every((order) => order > opens.mock.invocationCallOrder[0])).toBe(true);

    // A tick past the soak converges it; with nothing left to soak the job is off again.
    a.clock.advance(SOAK_MS + 1_000);
    await world.cp.waitFor(() => stateOf(a, rolloutId) === 'Converged', 5_000, 'converged by a scheduled tick');
    expect(state()).toBe('disabled');
    expect(armed()).toBe(false);

    await a.close();
    agent = null;
    expect(state()).toBe('stopped');
    expect(armed()).toBe(false);
    expect(scheduler.getIntervals()).not.toContain(ADVANCE_TICK_NAME);
    const after = ticks().length;
    await a.app.get(AdvanceTicker).tick();
    expect(ticks().length).toBe(after);
  });
});
