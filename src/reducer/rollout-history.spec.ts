import { Test, type TestingModule } from '@nestjs/testing';
import { CapturingLogger } from '../../test/support/agent-harness';
import { FakeClock } from '../../test/support/fake-clock';
import { at, HALT, iso, PREVIOUS, ROLLOUT, TARGET } from '../../test/support/reducer-fixtures';
import { CLOCK } from '../clock/clock';
import { MetricsModule } from '../metrics/metrics.module';
import type { RolloutState } from '../protocol/rollout';
import type { HostRolloutSnapshot } from '../protocol/snapshot.wire';
import { EffectPortRegistry } from './effect-ports';
import { REDUCER_POLICY } from './reducer.ports';
import { ReducerService } from './reducer.service';
import type { ReducerInput, ReducerState, RolloutEntry } from './reducer.types';
import { TRANSITIONS_KEPT } from './reducer.constants';
import { recordedSince, RolloutHistory, transitionsBetween } from './rollout-history';

const base: RolloutEntry = {
  rolloutId: ROLLOUT,
  channel: 'stable',
  state: 'Pending',
  targetClosure: TARGET,
  dispatchedAt: iso(0),
  lastEventSeq: 0,
  probes: {},
};
const stateOf = (...entries: RolloutEntry[]): ReducerState => ({ rollouts: Object.fromEntries(entries.map((e) => [e.rolloutId, e])) });

describe('transitionsBetween', () => {
  it('names each rollout whose state changed, or that is new, with the input and its instant; never an unchanged one', () => {
    const before = stateOf(base, { ...base, rolloutId: 'canary@1', state: 'Soaking' });
    const after = stateOf(
      { ...base, state: 'Activating' },
      { ...base, rolloutId: 'canary@1', state: 'Soaking', lastEventSeq: 4 },
      { ...base, rolloutId: 'beta@2', state: 'Converged' },
    );

    expect(transitionsBetween(before, after, { input: { type: 'Tick', currentClosure: null }, at: at(5) })).toEqual([
      { rolloutId: 'beta@2', transition: { from: null, to: 'Converged', at: iso(5), input: 'Tick' } },
      { rolloutId: ROLLOUT, transition: { from: 'Pending', to: 'Activating', at: iso(5), input: 'Tick' } },
    ]);
  });
});

describe('recordedSince', () => {
  it.each<[RolloutState, Partial<RolloutEntry>, string | null]>([
    ['Pending', {}, iso(0)],
    ['Activating', { dispatchAckedAt: iso(1), activationStartedAt: iso(2) }, iso(1)],
    ['Activating', { activationStartedAt: iso(2) }, iso(2)],
    ['Deferred', { activationStartedAt: iso(2) }, null],
    ['Soaking', { activationCompletedAt: iso(3) }, iso(3)],
    ['Soaking', {}, null],
    ['Converged', { activationCompletedAt: iso(3), convergedAt: iso(4) }, iso(4)],
    ['Failed', { failedAt: iso(5) }, iso(5)],
    ['Reverted', { failedAt: iso(5), revertedAt: iso(6) }, iso(6)],
  ])('%s with %j: %s', (state, fields, expected) => {
    expect(recordedSince({ ...base, ...fields, state })).toBe(expected);
  });
});

describe('RolloutHistory on a real ReducerService', () => {
  const opened: TestingModule[] = [];
  afterEach(async () => {
    for (const m of opened.splice(0)) await m.close();
  });

  async function build(): Promise<{ reducer: ReducerService; history: RolloutHistory; clock: FakeClock }> {
    const clock = new FakeClock();
    const module = await Test.createTestingModule({
      imports: [MetricsModule],
      providers: [
        ReducerService,
        EffectPortRegistry,
        RolloutHistory,
        { provide: CLOCK, useValue: clock },
        { provide: REDUCER_POLICY, useValue: HALT },
      ],
    }).compile();
    // Rejected inputs warn: kept out of the test's output.
    module.useLogger(new CapturingLogger());
    opened.push(module);
    return { reducer: module.get(ReducerService), history: module.get(RolloutHistory), clock };
  }

  const activate: ReducerInput = {
    type: 'Activate',
    rolloutId: ROLLOUT,
    targetClosure: TARGET,
    soakDueAt: '2026-11-28T12:10:00.000Z',
    currentClosure: PREVIOUS,
    dispatchedAt: '2026-11-28T11:59:55.000Z',
  };

  it('records each state change at the instant of its transition, with its input, and not a change that is none', async () => {
    const { reducer, history, clock } = await build();
    const t0 = clock.now().toISOString();

    await reducer.submit(activate);
    clock.advance(1_000);
    await reducer.submit({ type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'switch' });
    clock.advance(9_000);
    await reducer.submit({ type: 'ActivationCompleted', rolloutId: ROLLOUT, observedCurrentClosure: TARGET, exitCode: 0 });
    const soaking = clock.now().toISOString();
    // Rejected, and a tick before the soak is due: neither changes the state.
    await reducer.submit(activate);
    await reducer.submit({ type: 'Tick', currentClosure: TARGET });
    await reducer.submit({ type: 'ProbeTopologyDeclared', rolloutId: ROLLOUT, probes: [] });
    clock.advance(600_000);
    await reducer.submit({ type: 'Tick', currentClosure: TARGET });
    const converged = clock.now().toISOString();

    expect(history.transitions(ROLLOUT)).toEqual([
      { from: null, to: 'Activating', at: t0, input: 'Activate' },
      { from: 'Activating', to: 'Soaking', at: soaking, input: 'ActivationCompleted' },
      { from: 'Soaking', to: 'Converged', at: converged, input: 'Tick' },
    ]);
    const entry = reducer.current().rollouts[ROLLOUT];
    // The record and the history agree: the transition's instant is the one its event carries.
    expect(entry.convergedAt).toBe(converged);
    expect(history.since(entry)).toBe(converged);
    expect(history.transitions('nobody@0')).toEqual([]);
  });

  it('starts from a state restored from the log without calling it a change; since then comes from the record', async () => {
    const { reducer, history, clock } = await build();
    reducer.restore(
      stateOf(
        { ...base, state: 'Soaking', activationCompletedAt: iso(3), soakDueAt: '2026-11-28T12:10:00.000Z' },
        { ...base, rolloutId: 'beta@0badc0de', state: 'Deferred' },
      ),
    );

    expect(history.transitions(ROLLOUT)).toEqual([]);
    expect(history.since(reducer.current().rollouts[ROLLOUT])).toBe(iso(3));
    expect(history.since(reducer.current().rollouts['beta@0badc0de'])).toBeNull();

    await reducer.submit({ type: 'Snapshot', snapshot: snapshot('Failed', 2) });
    const entry = reducer.current().rollouts[ROLLOUT];
    expect(history.transitions(ROLLOUT)).toEqual([{ from: 'Soaking', to: 'Failed', at: clock.now().toISOString(), input: 'Snapshot' }]);
    // The snapshot said Failed but not when: since is when the agent learned it.
    expect(entry.failedAt).toBeUndefined();
    expect(history.since(entry)).toBe(clock.now().toISOString());
  });

  it(`keeps the last ${TRANSITIONS_KEPT} transitions of a rollout, oldest first`, async () => {
    const { reducer, history, clock } = await build();
    const states: RolloutState[] = [];
    for (let seq = 1; seq <= TRANSITIONS_KEPT + 3; seq++) {
      const state: RolloutState = seq % 2 === 0 ? 'Soaking' : 'Activating';
      states.push(state);
      await reducer.submit({ type: 'Snapshot', snapshot: snapshot(state, seq) });
      clock.advance(1_000);
    }

    const kept = history.transitions(ROLLOUT);
    expect(kept).toHaveLength(TRANSITIONS_KEPT);
    expect(kept.map((t) => t.to)).toEqual(states.slice(-TRANSITIONS_KEPT));
    expect(kept.at(-1)?.at).toBe(new Date(clock.now().getTime() - 1_000).toISOString());
    expect(kept[0]?.from).toBe(states.at(-TRANSITIONS_KEPT - 1));
  });
});

function snapshot(state: RolloutState, lastEventSeq: number): HostRolloutSnapshot {
  return {
    rolloutId: ROLLOUT,
    hostname: 'web-01',
    channel: 'stable',
    state,
    targetClosure: TARGET,
    dispatchedAt: '2026-11-28T11:59:55.000Z',
    lastEventSeq,
  };
}
