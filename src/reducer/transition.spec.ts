import type { AgentEvent } from '../protocol/events.wire';
import { ROLLOUT_STATES, type RolloutState } from '../protocol/rollout';
import type { HostRolloutSnapshot } from '../protocol/snapshot.wire';
import {
  DEFAULT_SOAK_SECS,
  EMPTY_STATE,
  type Effect,
  type Policy,
  type ReducerInput,
  type ReducerState,
  type TransitionResult,
} from './reducer.types';
import { at, declare, entry, HALT, iso, OTHER, PREVIOUS, result, ROLLBACK, ROLLOUT, TARGET } from '../../test/support/reducer-fixtures';
import { transition } from './transition';

const SOAK_SECS = 600;

function activateInput(rolloutId = ROLLOUT, currentClosure: string | null = PREVIOUS): Extract<ReducerInput, { type: 'Activate' }> {
  return {
    type: 'Activate',
    rolloutId,
    targetClosure: TARGET,
    soakDueAt: iso(SOAK_SECS),
    currentClosure,
    dispatchedAt: iso(-5),
  };
}

function snapshot(over: Partial<HostRolloutSnapshot> = {}): HostRolloutSnapshot {
  return {
    rolloutId: ROLLOUT,
    hostname: 'web-01',
    channel: 'stable',
    state: 'Soaking',
    targetClosure: TARGET,
    currentClosureAtDispatch: PREVIOUS,
    currentClosure: TARGET,
    dispatchedAt: iso(-5),
    dispatchAckedAt: iso(0),
    activationStartedAt: iso(1),
    activationCompletedAt: iso(30),
    soakDueAt: iso(SOAK_SECS),
    lastEventSeq: 4,
    ...over,
  };
}

/** Applies inputs in order, each at its own time; fails the test on a rejection. */
function run(
  steps: readonly (readonly [ReducerInput, Date])[],
  policy: Policy = HALT,
  from: ReducerState = EMPTY_STATE,
): { state: ReducerState; effects: Effect[] } {
  let state = from;
  const effects: Effect[] = [];
  for (const [input, now] of steps) {
    const r = transition(state, input, now, policy);
    if (r.rejected !== undefined) throw new Error(`unexpected rejection: ${r.rejected}`);
    state = r.state;
    effects.push(...r.effects);
  }
  return { state, effects };
}

function events(effects: readonly Effect[]): AgentEvent[] {
  return effects.flatMap((e) => (e.type === 'EmitEvent' ? [e.event] : []));
}

const activating = (policy: Policy = HALT, currentClosure: string | null = PREVIOUS): ReducerState =>
  run([[activateInput(ROLLOUT, currentClosure), at(0)]], policy).state;

/** Activated at 0, started at 1, completed at 30: Soaking with lastEventSeq 3. */
const soaking = (policy: Policy = HALT, currentClosure: string | null = PREVIOUS): ReducerState =>
  run(
    [
      [{ type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'switch' }, at(1)],
      [{ type: 'ActivationCompleted', rolloutId: ROLLOUT, observedCurrentClosure: TARGET, exitCode: 0 }, at(30)],
    ],
    policy,
    activating(policy, currentClosure),
  ).state;

/** Soaking (as `soaking`) with one enforce probe, db, failing since 40. */
const dbFailing = (policy: Policy = HALT, currentClosure: string | null = PREVIOUS): ReducerState =>
  run(
    [
      [declare(['db', 'enforce']), at(31)],
      [result('db', 'fail'), at(40)],
    ],
    policy,
    soaking(policy, currentClosure),
  ).state;

const completedOk: ReducerInput = {
  type: 'ActivationCompleted',
  rolloutId: ROLLOUT,
  observedCurrentClosure: TARGET,
  exitCode: 0,
};

const rollbackDone: ReducerInput = {
  type: 'RollbackCompleted',
  rolloutId: ROLLOUT,
  revertedToClosure: PREVIOUS,
  exitCode: 0,
};

const tick = (currentClosure: string | null = TARGET): ReducerInput => ({ type: 'Tick', currentClosure });

function expectRejected(r: TransitionResult, before: ReducerState, ...fragments: string[]): void {
  expect(r.rejected).toBeDefined();
  for (const f of fragments) expect(r.rejected).toContain(f);
  expect(r.state).toBe(before);
  expect(r.effects).toEqual([]);
}

describe('transition', () => {
  describe('Activate', () => {
    it('starts a re-dispatched rollout afresh: nothing of the earlier attempt judges the new one, only its seqs go on', () => {
      const passing = run(
        [
          [declare(['db', 'enforce']), at(31)],
          [result('db', 'pass'), at(32)],
        ],
        HALT,
        soaking(),
      ).state;
      // The CP puts the rollout back to Pending (re-queued) and dispatches it again.
      const pending = run([[{ type: 'Snapshot', snapshot: snapshot({ state: 'Pending', lastEventSeq: 6 }) }, at(40)]], HALT, passing).state;
      const again = transition(pending, activateInput(), at(50), HALT);
      expect(entry(again.state)).toMatchObject({ state: 'Activating', probes: {}, lastEventSeq: 7 });
      expect(entry(again.state).probesDeclaredAt).toBeUndefined();
      expect(entry(again.state).activationCompletedAt).toBeUndefined();
    });

    it('opens an unknown rollout in Activating, acks it as seq 1 and fires the switch after the ack', () => {
      const r = transition(EMPTY_STATE, activateInput(), at(0), HALT);

      expect(r.rejected).toBeUndefined();
      expect(entry(r.state)).toMatchObject({
        rolloutId: ROLLOUT,
        channel: 'stable',
        state: 'Activating',
        targetClosure: TARGET,
        currentClosureAtDispatch: PREVIOUS,
        dispatchedAt: iso(-5),
        dispatchAckedAt: iso(0),
        soakDueAt: iso(SOAK_SECS),
        lastEventSeq: 1,
        probes: {},
      });
      expect(r.effects).toEqual([
        {
          type: 'EmitEvent',
          rolloutId: ROLLOUT,
          event: { kind: 'DispatchAck', seq: 1, currentClosureAtDispatch: PREVIOUS, receivedAt: iso(0) },
          meta: {
            channel: 'stable',
            targetClosure: TARGET,
            dispatchedAt: iso(-5),
            soakDueAt: iso(SOAK_SECS),
            currentClosureAtDispatch: PREVIOUS,
          },
        },
        { type: 'FireSwitch', rolloutId: ROLLOUT, targetClosure: TARGET },
      ]);
    });

    it('acks a null closure at dispatch when the running closure was unreadable', () => {
      const r = transition(EMPTY_STATE, activateInput(ROLLOUT, null), at(0), HALT);

      expect(events(r.effects)[0]).toMatchObject({ kind: 'DispatchAck', currentClosureAtDispatch: null });
      expect(entry(r.state).currentClosureAtDispatch).toBeUndefined();
    });

    it('takes an explicit channel over the one in the rollout id', () => {
      const r = transition(EMPTY_STATE, { ...activateInput(), channel: 'beta' }, at(0), HALT);

      expect(entry(r.state).channel).toBe('beta');
    });

    it('activates a Pending rollout known from a snapshot, numbering on from its lastEventSeq', () => {
      const pending = run([[{ type: 'Snapshot', snapshot: snapshot({ state: 'Pending', lastEventSeq: 7 }) }, at(-1)]]).state;

      const r = transition(pending, activateInput(), at(0), HALT);

      expect(entry(r.state)).toMatchObject({ state: 'Activating', lastEventSeq: 8 });
      expect(events(r.effects)).toEqual([expect.objectContaining({ kind: 'DispatchAck', seq: 8 })]);
    });

    it('leaves other rollouts untouched', () => {
      const first = activating();
      const r = transition(first, activateInput(OTHER), at(5), HALT);

      expect(r.state.rollouts[ROLLOUT]).toBe(first.rollouts[ROLLOUT]);
      expect(entry(r.state, OTHER)).toMatchObject({ channel: 'canary', lastEventSeq: 1 });
    });

    it('rejects a second Activate of a rollout that is already Activating', () => {
      const before = activating();
      expectRejected(transition(before, activateInput(), at(2), HALT), before, 'Activate', ROLLOUT, 'Activating');
    });

    it.each<RolloutState>(['Soaking', 'Converged', 'Failed', 'Reverted', 'Deferred'])(
      'rejects Activate of a rollout that is %s',
      (state) => {
        const before = run([[{ type: 'Snapshot', snapshot: snapshot({ state }) }, at(0)]]).state;
        expectRejected(transition(before, activateInput(), at(1), HALT), before, 'Activate', state);
      },
    );
  });

  describe('from Activating', () => {
    it('stays Activating on ActivationStarted and reports the switch method as seq 2', () => {
      const r = transition(
        activating(),
        { type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'switch-to-configuration' },
        at(1),
        HALT,
      );

      expect(entry(r.state)).toMatchObject({ state: 'Activating', activationStartedAt: iso(1), lastEventSeq: 2 });
      expect(events(r.effects)).toEqual([
        { kind: 'ActivationStarted', seq: 2, startedAt: iso(1), switchMethod: 'switch-to-configuration' },
      ]);
    });

    it('moves to Soaking on ActivationCompleted and resets the probe cache after the event', () => {
      const r = transition(
        activating(),
        { type: 'ActivationCompleted', rolloutId: ROLLOUT, observedCurrentClosure: TARGET, exitCode: 0 },
        at(30),
        HALT,
      );

      expect(entry(r.state)).toMatchObject({
        state: 'Soaking',
        activationCompletedAt: iso(30),
        currentClosure: TARGET,
      });
      expect(r.effects.map((e) => e.type)).toEqual(['EmitEvent', 'ResetProbeCache']);
      expect(events(r.effects)).toEqual([
        { kind: 'ActivationCompleted', seq: 2, observedCurrentClosure: TARGET, exitCode: 0, completedAt: iso(30) },
      ]);
      expect(r.effects[1]).toEqual({ type: 'ResetProbeCache', rolloutId: ROLLOUT });
    });

    it('moves to Deferred when the activation needs a reboot', () => {
      const r = transition(activating(), { type: 'ActivationDeferred', rolloutId: ROLLOUT, component: 'kernel' }, at(20), HALT);

      expect(entry(r.state).state).toBe('Deferred');
      expect(r.effects).toHaveLength(1);
      expect(events(r.effects)).toEqual([{ kind: 'ActivationDeferred', seq: 2, component: 'kernel', deferredAt: iso(20) }]);
    });

    it('moves to Failed on ActivationFailed and only halts under the halt policy', () => {
      const r = transition(
        activating(HALT),
        { type: 'ActivationFailed', rolloutId: ROLLOUT, exitCode: 4, stderrTail: 'unit failed' },
        at(20),
        HALT,
      );

      expect(entry(r.state)).toMatchObject({ state: 'Failed', failedAt: iso(20), policyApplied: 'halt' });
      expect(r.effects.map((e) => e.type)).toEqual(['EmitEvent']);
      expect(events(r.effects)).toEqual([{ kind: 'ActivationFailed', seq: 2, exitCode: 4, stderrTail: 'unit failed', failedAt: iso(20) }]);
    });

    it('fires a rollback to the closure at dispatch after ActivationFailed under rollback-and-halt', () => {
      const r = transition(
        activating(ROLLBACK),
        { type: 'ActivationFailed', rolloutId: ROLLOUT, exitCode: null, stderrTail: 'killed' },
        at(20),
        ROLLBACK,
      );

      expect(entry(r.state).policyApplied).toBe('rollback-and-halt');
      expect(r.effects.map((e) => e.type)).toEqual(['EmitEvent', 'FireRollback']);
      expect(r.effects[1]).toEqual({ type: 'FireRollback', rolloutId: ROLLOUT, toClosure: PREVIOUS });
      expect(r.effects[0]).toMatchObject({ meta: { policyApplied: 'rollback-and-halt' } });
    });

    it('halts instead of rolling back when the closure at dispatch is unknown', () => {
      const r = transition(
        activating(ROLLBACK, null),
        { type: 'ActivationFailed', rolloutId: ROLLOUT, exitCode: 1, stderrTail: '' },
        at(20),
        ROLLBACK,
      );

      expect(entry(r.state).policyApplied).toBe('halt');
      expect(r.effects.map((e) => e.type)).toEqual(['EmitEvent']);
    });

    it.each<[string, ReducerInput]>([
      ['ProbeTopologyDeclared', declare(['http', 'enforce'])],
      ['ProbeResult', result('http', 'pass')],
      ['RollbackCompleted', rollbackDone],
    ])('rejects %s while Activating', (name, input) => {
      const before = activating();
      expectRejected(transition(before, input, at(5), HALT), before, name, ROLLOUT, 'Activating');
    });
  });

  describe('probes while Soaking', () => {
    it('records a declared topology and reports it', () => {
      const r = transition(soaking(), declare(['http', 'enforce'], ['disk', 'observe']), at(31), HALT);

      expect(entry(r.state).probes).toEqual({
        http: { kind: 'http', mode: 'enforce' },
        disk: { kind: 'http', mode: 'observe' },
      });
      expect(events(r.effects)).toEqual([
        {
          kind: 'ProbeTopologyDeclared',
          seq: 4,
          probes: [
            { probeName: 'http', kind: 'http', mode: 'enforce' },
            { probeName: 'disk', kind: 'http', mode: 'observe' },
          ],
          declaredAt: iso(31),
        },
      ]);
    });

    it("reports a probe's first passing result as ProbeObservedFirst then ProbeResult", () => {
      const declared = run([[declare(['http', 'enforce']), at(31)]], HALT, soaking()).state;
      const r = transition(declared, result('http', 'pass'), at(35), HALT);

      expect(events(r.effects)).toEqual([
        { kind: 'ProbeObservedFirst', seq: 5, probeName: 'http', mode: 'enforce', observedAt: iso(35) },
        { kind: 'ProbeResult', seq: 6, probeName: 'http', mode: 'enforce', status: 'pass', observedAt: iso(35) },
      ]);
      expect(entry(r.state)).toMatchObject({
        lastEventSeq: 6,
        probes: { http: { lastStatus: 'pass', firstObservedAt: iso(35) } },
      });
    });

    it("reports a probe's first failure as ProbeObservedFirst, ProbeResult, ProbeFailureFirst, seqs in a row", () => {
      const declared = run([[declare(['http', 'enforce']), at(31)]], HALT, soaking()).state;
      const r = transition(declared, result('http', 'fail', 'HTTP 503'), at(35), HALT);

      expect(events(r.effects)).toEqual([
        { kind: 'ProbeObservedFirst', seq: 5, probeName: 'http', mode: 'enforce', observedAt: iso(35) },
        {
          kind: 'ProbeResult',
          seq: 6,
          probeName: 'http',
          mode: 'enforce',
          status: 'fail',
          observedAt: iso(35),
          failureReason: 'HTTP 503',
        },
        { kind: 'ProbeFailureFirst', seq: 7, probeName: 'http', mode: 'enforce', firstFailedAt: iso(35) },
      ]);
      expect(entry(r.state).probes.http).toMatchObject({ lastStatus: 'fail', firstFailedAt: iso(35) });
    });

    it('emits nothing for a result that repeats the last status, and keeps the same state object', () => {
      const failing = run(
        [
          [declare(['http', 'enforce']), at(31)],
          [result('http', 'fail'), at(35)],
        ],
        HALT,
        soaking(),
      ).state;

      const r = transition(failing, result('http', 'fail', 'still 503'), at(40), HALT);

      expect(r.rejected).toBeUndefined();
      expect(r.effects).toEqual([]);
      expect(r.state).toBe(failing);
    });

    it('clears the first-failure time on a pass and starts a new streak on the next failure', () => {
      const { state, effects } = run(
        [
          [declare(['http', 'enforce']), at(31)],
          [result('http', 'fail'), at(35)],
          [result('http', 'pass'), at(40)],
        ],
        HALT,
        soaking(),
      );
      expect(entry(state).probes.http?.firstFailedAt).toBeUndefined();
      expect(events(effects).at(-1)).toMatchObject({ kind: 'ProbeResult', status: 'pass', seq: 8 });

      const r = transition(state, result('http', 'fail'), at(50), HALT);

      expect(events(r.effects).map((e) => e.kind)).toEqual(['ProbeResult', 'ProbeFailureFirst']);
      expect(events(r.effects)[1]).toMatchObject({ seq: 10, firstFailedAt: iso(50) });
      expect(entry(r.state).probes.http).toMatchObject({ firstObservedAt: iso(35), firstFailedAt: iso(50) });
    });

    it('declares an unchanged topology once: a re-declaration after a reset emits nothing and changes nothing', () => {
      const declared = run([[declare(['http', 'enforce'], ['disk', 'observe']), at(31)]], HALT, soaking()).state;
      const r = transition(declared, declare(['disk', 'observe'], ['http', 'enforce']), at(60), HALT);
      expect(r).toEqual({ state: declared, effects: [] });
    });

    it('declares a changed topology again: a new probe, a changed mode', () => {
      const declared = run([[declare(['http', 'enforce']), at(31)]], HALT, soaking()).state;
      expect(events(transition(declared, declare(['http', 'enforce'], ['db', 'enforce']), at(60), HALT).effects)).toEqual([
        expect.objectContaining({ kind: 'ProbeTopologyDeclared', declaredAt: iso(60) }),
      ]);
      expect(events(transition(declared, declare(['http', 'observe']), at(60), HALT).effects)).toHaveLength(1);
    });

    it('keeps the reason of the failure that turned a probe to fail, and drops it on a pass', () => {
      const failing = run(
        [
          [declare(['http', 'enforce']), at(31)],
          [result('http', 'fail', 'answered 503'), at(35)],
        ],
        HALT,
        soaking(),
      ).state;
      expect(entry(failing).probes.http).toMatchObject({ lastStatus: 'fail', statusSince: iso(35), failureReason: 'answered 503' });
      const passing = transition(failing, result('http', 'pass'), at(40), HALT).state;
      expect(entry(passing).probes.http).toEqual({
        kind: 'http',
        mode: 'enforce',
        lastStatus: 'pass',
        statusSince: iso(40),
        firstObservedAt: iso(35),
      });
    });

    it('rejects a result for a probe that was never declared', () => {
      const before = run([[declare(['http', 'enforce']), at(31)]], HALT, soaking()).state;
      expectRejected(transition(before, result('dns', 'pass'), at(35), HALT), before, 'ProbeResult', 'dns');
    });

    it('keeps the first-failure time of a re-declared probe and drops probes no longer declared', () => {
      const failing = run(
        [
          [declare(['http', 'enforce'], ['disk', 'observe']), at(31)],
          [result('http', 'fail'), at(35)],
        ],
        HALT,
        soaking(),
      ).state;

      const r = transition(failing, declare(['http', 'enforce']), at(60), HALT);

      expect(entry(r.state).probes).toEqual({
        // Kept, and stale until the re-declared runner's next result.
        http: {
          kind: 'http',
          mode: 'enforce',
          lastStatus: 'fail',
          statusSince: iso(35),
          firstObservedAt: iso(35),
          firstFailedAt: iso(35),
          stale: true,
        },
      });
      expect(events(r.effects).map((e) => e.kind)).toEqual(['ProbeTopologyDeclared']);
    });

    it.each<[string, ReducerInput]>([
      ['ActivationCompleted', completedOk],
      ['ActivationStarted', { type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'switch' }],
      ['ActivationFailed', { type: 'ActivationFailed', rolloutId: ROLLOUT, exitCode: 1, stderrTail: '' }],
      ['RollbackCompleted', rollbackDone],
    ])('rejects %s on a Soaking rollout', (name, input) => {
      const before = soaking();
      expectRejected(transition(before, input, at(40), HALT), before, name, ROLLOUT, 'Soaking');
    });
  });

  describe('Tick', () => {
    const passing = (): ReducerState =>
      run(
        [
          [declare(['http', 'enforce'], ['disk', 'observe'], ['dns', 'disabled']), at(31)],
          [result('http', 'pass'), at(35)],
          [result('disk', 'fail'), at(35)],
        ],
        HALT,
        soaking(),
      ).state;

    it('emits Converged once soak is due and the current closure is the target', () => {
      const before = passing();
      const r = transition(before, tick(TARGET), at(SOAK_SECS), HALT);

      expect(r.rejected).toBeUndefined();
      expect(entry(r.state)).toMatchObject({ state: 'Converged', convergedAt: iso(SOAK_SECS), currentClosure: TARGET });
      expect(events(r.effects)).toEqual([
        { kind: 'Converged', seq: entry(before).lastEventSeq + 1, convergedAt: iso(SOAK_SECS), currentClosure: TARGET },
      ]);
    });

    it('converges when the runners declared no probes at all', () => {
      const declaredNone = run([[declare(), at(31)]], HALT, soaking()).state;
      const r = transition(declaredNone, tick(TARGET), at(SOAK_SECS + 1), HALT);
      expect(entry(r.state).state).toBe('Converged');
    });

    it('holds convergence until the runners declared the topology: no probes known is not no probes', () => {
      const before = soaking();
      const r = transition(before, tick(TARGET), at(SOAK_SECS * 2), HALT);
      expect(r).toEqual({ state: before, effects: [] });
    });

    it('holds convergence while an enforce probe has not reported yet, and converges on its first pass', () => {
      const waiting = run(
        [
          [declare(['db', 'enforce'], ['web', 'enforce']), at(31)],
          [result('web', 'pass'), at(32)],
        ],
        HALT,
        soaking(),
      ).state;
      expect(transition(waiting, tick(TARGET), at(SOAK_SECS * 2), HALT).effects).toEqual([]);

      const reported = run([[result('db', 'pass'), at(SOAK_SECS * 2)]], HALT, waiting).state;
      expect(entry(transition(reported, tick(TARGET), at(SOAK_SECS * 2 + 1), HALT).state).state).toBe('Converged');
    });

    it('holds convergence while an enforce probe fails short of the threshold, and never fails on an observe probe', () => {
      const mixed = run(
        [
          [declare(['db', 'enforce'], ['cache', 'observe']), at(31)],
          [result('cache', 'fail', 'refused'), at(32)],
          [result('db', 'fail', 'refused'), at(SOAK_SECS - 60)],
        ],
        HALT,
        soaking(),
      ).state;
      // cache has failed for far longer than 120 s, db for 119 s: neither fails the rollout, db holds it.
      expect(transition(mixed, tick(TARGET), at(SOAK_SECS + 59), HALT).effects).toEqual([]);
      const failed = transition(mixed, tick(TARGET), at(SOAK_SECS + 60), HALT);
      expect(events(failed.effects)).toEqual([
        expect.objectContaining({ kind: 'Failed', failingProbes: ['db'], sustainedDurationSecs: 120, policyApplied: 'halt' }),
      ]);

      const observeOnly = run([[result('db', 'pass'), at(SOAK_SECS)]], HALT, mixed).state;
      expect(entry(transition(observeOnly, tick(TARGET), at(SOAK_SECS + 600), HALT).state).state).toBe('Converged');
    });

    it('does not fail a rollout off its target: a newer rollout (or an operator) moved the host on, and no rollback may undo that', () => {
      const failing = dbFailing(ROLLBACK);
      // A newer dispatch switched the host; this rollout's frozen failure streak passes the threshold.
      const r = transition(failing, tick(PREVIOUS), at(400), ROLLBACK);
      expect(r).toEqual({ state: failing, effects: [] });
      expect(transition(failing, tick(null), at(400), ROLLBACK).effects).toEqual([]);
      // Back on its target, with the probe still failing: judged at once.
      expect(events(transition(failing, tick(TARGET), at(400), ROLLBACK).effects)[0]?.kind).toBe('Failed');
    });

    it('judges neither way on a result from before a reset: the re-declared runner must confirm it', () => {
      const passing = run(
        [
          [declare(['db', 'enforce']), at(31)],
          [result('db', 'pass'), at(32)],
        ],
        HALT,
        soaking(),
      ).state;
      const reset = run([[declare(['db', 'enforce']), at(40)]], HALT, passing).state;
      expect(entry(reset).probes.db).toMatchObject({ lastStatus: 'pass', stale: true });
      expect(transition(reset, tick(TARGET), at(SOAK_SECS + 10), HALT).effects).toEqual([]);
      const confirmed = transition(reset, result('db', 'pass'), at(SOAK_SECS + 11), HALT);
      expect(confirmed.effects).toEqual([]);
      expect(entry(transition(confirmed.state, tick(TARGET), at(SOAK_SECS + 12), HALT).state).state).toBe('Converged');

      const failing = run(
        [
          [declare(['db', 'enforce']), at(31)],
          [result('db', 'fail'), at(32)],
        ],
        HALT,
        soaking(),
      ).state;
      const failingReset = run([[declare(['db', 'enforce']), at(40)]], HALT, failing).state;
      expect(transition(failingReset, tick(TARGET), at(400), HALT).effects).toEqual([]);
      const stillFailing = transition(failingReset, result('db', 'fail'), at(401), HALT).state;
      expect(events(transition(stillFailing, tick(TARGET), at(402), HALT).effects)[0]).toMatchObject({
        kind: 'Failed',
        sustainedDurationSecs: 370,
      });
    });

    it('counts the threshold it is given (--probe-failure-threshold)', () => {
      const short: Policy = { ...HALT, sustainedFailureThresholdSecs: 10 };
      const failing = run(
        [
          [declare(['db', 'enforce']), at(31)],
          [result('db', 'fail'), at(40)],
        ],
        short,
        soaking(short),
      ).state;
      expect(transition(failing, tick(TARGET), at(49), short).effects).toEqual([]);
      expect(events(transition(failing, tick(TARGET), at(50), short).effects)[0]).toMatchObject({
        kind: 'Failed',
        sustainedDurationSecs: 10,
      });
    });

    it('rolls back to the closure that ran at dispatch when an enforce probe fails past the threshold', () => {
      const failing = dbFailing(ROLLBACK);
      const r = transition(failing, tick(TARGET), at(160), ROLLBACK);
      expect(entry(r.state)).toMatchObject({ state: 'Failed', failedAt: iso(160), policyApplied: 'rollback-and-halt' });
      expect(r.effects.map((e) => e.type)).toEqual(['EmitEvent', 'ResetProbeCache', 'FireRollback']);
      expect(r.effects[1]).toEqual({ type: 'ResetProbeCache', rolloutId: ROLLOUT });
      expect(r.effects[2]).toEqual({ type: 'FireRollback', rolloutId: ROLLOUT, toClosure: PREVIOUS });
    });

    it.each<[string, string | null]>([
      ['unknown', null],
      ['the target itself', TARGET],
    ])('halts instead of rolling back when the closure at dispatch is %s, and says so', (_name, atDispatch) => {
      const failing = dbFailing(ROLLBACK, atDispatch);
      const r = transition(failing, tick(TARGET), at(160), ROLLBACK);
      expect(entry(r.state)).toMatchObject({ state: 'Failed', policyApplied: 'halt' });
      expect(events(r.effects)).toEqual([expect.objectContaining({ kind: 'Failed', policyApplied: 'halt' })]);
      expect(r.effects.some((e) => e.type === 'FireRollback')).toBe(false);
      expect(r.notice).toContain(`${ROLLOUT} failed with policy rollback-and-halt, but`);
      expect(r.notice).toContain('halted instead');
    });

    it('keeps soaking, quietly and with the same state object, before the soak is due', () => {
      const before = passing();
      const r = transition(before, tick(TARGET), at(SOAK_SECS - 1), HALT);

      expect(r).toEqual({ state: before, effects: [] });
      expect(r.state).toBe(before);
    });

    it.each<[string, string | null]>([
      ['another closure', PREVIOUS],
      ['an unreadable closure', null],
    ])('keeps soaking while the host runs %s', (_name, current) => {
      const r = transition(passing(), tick(current), at(SOAK_SECS), HALT);
      expect(r.effects).toEqual([]);
      expect(entry(r.state).state).toBe('Soaking');
    });

    it('keeps soaking while an enforce probe has not reported yet', () => {
      const before = run([[declare(['http', 'enforce']), at(31)]], HALT, soaking()).state;
      const r = transition(before, tick(TARGET), at(SOAK_SECS), HALT);
      expect(r.effects).toEqual([]);
    });

    it('keeps soaking while an enforce probe fails for less than the threshold', () => {
      const before = run(
        [
          [declare(['http', 'enforce']), at(31)],
          [result('http', 'fail'), at(SOAK_SECS - 60)],
        ],
        HALT,
        soaking(),
      ).state;

      const r = transition(before, tick(TARGET), at(SOAK_SECS - 60 + 119), HALT);

      expect(r.effects).toEqual([]);
      expect(entry(r.state).state).toBe('Soaking');
    });

    it('fails the rollout once an enforce probe has been failing for the threshold, halting under halt', () => {
      const before = run(
        [
          [declare(['http', 'enforce'], ['api', 'enforce'], ['disk', 'observe']), at(31)],
          [result('http', 'fail'), at(40)],
          [result('api', 'fail'), at(100)],
          [result('disk', 'fail'), at(40)],
        ],
        HALT,
        soaking(),
      ).state;

      const r = transition(before, tick(TARGET), at(160), HALT);

      expect(entry(r.state)).toMatchObject({ state: 'Failed', failedAt: iso(160), policyApplied: 'halt' });
      expect(r.effects.map((e) => e.type)).toEqual(['EmitEvent', 'ResetProbeCache']);
      expect(events(r.effects)).toEqual([
        {
          kind: 'Failed',
          seq: entry(before).lastEventSeq + 1,
          failedAt: iso(160),
          sustainedDurationSecs: 120,
          // api has failed for 60 s only; disk is observe-only.
          failingProbes: ['http'],
          policyApplied: 'halt',
        },
      ]);
    });

    it('fires a rollback to the closure at dispatch after Failed under rollback-and-halt', () => {
      const before = run(
        [
          [declare(['http', 'enforce']), at(31)],
          [result('http', 'fail'), at(40)],
        ],
        ROLLBACK,
        soaking(ROLLBACK),
      ).state;

      const r = transition(before, tick(TARGET), at(200), ROLLBACK);

      expect(r.effects.map((e) => e.type)).toEqual(['EmitEvent', 'ResetProbeCache', 'FireRollback']);
      expect(events(r.effects)[0]).toMatchObject({
        kind: 'Failed',
        sustainedDurationSecs: 160,
        policyApplied: 'rollback-and-halt',
      });
      expect(r.effects[1]).toEqual({ type: 'ResetProbeCache', rolloutId: ROLLOUT });
      expect(r.effects[2]).toEqual({ type: 'FireRollback', rolloutId: ROLLOUT, toClosure: PREVIOUS });
    });

    it('ignores failing observe and disabled probes', () => {
      const before = run(
        [
          [declare(['disk', 'observe'], ['dns', 'disabled']), at(31)],
          [result('disk', 'fail'), at(40)],
          [result('dns', 'fail'), at(40)],
        ],
        HALT,
        soaking(),
      ).state;

      const r = transition(before, tick(TARGET), at(SOAK_SECS), HALT);

      expect(events(r.effects).map((e) => e.kind)).toEqual(['Converged']);
    });

    it('converges a cold Soaking snapshot without soakDueAt once the default soak from activationCompletedAt has passed', () => {
      // Completed at 30 (the fixture), first seen at 100: due at 30 + 300.
      const before = run([
        [{ type: 'Snapshot', snapshot: snapshot({ soakDueAt: undefined }) }, at(100)],
        [declare(), at(101)],
      ]).state;

      expect(transition(before, tick(TARGET), at(30 + DEFAULT_SOAK_SECS - 1), HALT).effects).toEqual([]);
      const r = transition(before, tick(TARGET), at(30 + DEFAULT_SOAK_SECS), HALT);
      expect(events(r.effects)).toEqual([{ kind: 'Converged', seq: 6, convergedAt: iso(30 + DEFAULT_SOAK_SECS), currentClosure: TARGET }]);
    });

    it('advances every rollout and returns the effects of all of them', () => {
      const both = run(
        [
          [activateInput(OTHER), at(0)],
          [{ type: 'ActivationCompleted', rolloutId: OTHER, observedCurrentClosure: TARGET, exitCode: 0 }, at(10)],
          [{ type: 'ProbeTopologyDeclared', rolloutId: OTHER, probes: [] }, at(11)],
          [declare(), at(31)],
        ],
        HALT,
        soaking(),
      ).state;

      const r = transition(both, tick(TARGET), at(SOAK_SECS), HALT);

      expect(r.effects).toEqual([
        expect.objectContaining({ rolloutId: OTHER, event: expect.objectContaining({ kind: 'Converged', seq: 4 }) }),
        { type: 'ResetProbeCache', rolloutId: OTHER },
        expect.objectContaining({ rolloutId: ROLLOUT, event: expect.objectContaining({ kind: 'Converged', seq: 5 }) }),
        { type: 'ResetProbeCache', rolloutId: ROLLOUT },
      ]);
      expect(entry(r.state, OTHER).state).toBe('Converged');
      expect(entry(r.state, ROLLOUT).state).toBe('Converged');
    });

    it('leaves rollouts that are not Soaking alone', () => {
      const before = activating();
      const r = transition(before, tick(TARGET), at(SOAK_SECS * 2), HALT);
      expect(r).toEqual({ state: before, effects: [] });
    });

    it('is a quiet no-op on an empty state', () => {
      expect(transition(EMPTY_STATE, tick(null), at(0), HALT)).toEqual({ state: EMPTY_STATE, effects: [] });
    });
  });

  describe('from Failed', () => {
    const failed = (): ReducerState =>
      run([[{ type: 'ActivationFailed', rolloutId: ROLLOUT, exitCode: 1, stderrTail: 'boom' }, at(10)]], ROLLBACK, activating(ROLLBACK))
        .state;

    it('moves to Reverted once the rollback completed', () => {
      const r = transition(
        failed(),
        { type: 'RollbackCompleted', rolloutId: ROLLOUT, revertedToClosure: PREVIOUS, exitCode: 0 },
        at(40),
        ROLLBACK,
      );

      expect(entry(r.state)).toMatchObject({
        state: 'Reverted',
        revertedAt: iso(40),
        revertedToClosure: PREVIOUS,
        failedAt: iso(10),
        policyApplied: 'rollback-and-halt',
      });
      expect(events(r.effects)).toEqual([
        { kind: 'RollbackComplete', seq: 3, revertedToClosure: PREVIOUS, exitCode: 0, completedAt: iso(40) },
      ]);
      expect(entry(r.state).rollback).toEqual({ toClosure: PREVIOUS, exitCode: 0, completedAt: iso(40) });
    });

    it('reports a rollback that failed and stays Failed (§11)', () => {
      const r = transition(
        failed(),
        { type: 'RollbackCompleted', rolloutId: ROLLOUT, revertedToClosure: PREVIOUS, exitCode: 4 },
        at(40),
        ROLLBACK,
      );

      expect(entry(r.state)).toMatchObject({ state: 'Failed', rollback: { toClosure: PREVIOUS, exitCode: 4, completedAt: iso(40) } });
      expect(entry(r.state).revertedAt).toBeUndefined();
      expect(entry(r.state).revertedToClosure).toBeUndefined();
      expect(events(r.effects)).toEqual([
        { kind: 'RollbackComplete', seq: 3, revertedToClosure: PREVIOUS, exitCode: 4, completedAt: iso(40) },
      ]);
    });

    it.each<[string, ReducerInput]>([
      ['ActivationStarted', { type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'switch' }],
      ['ProbeResult', result('http', 'pass')],
      ['ActivationFailed', { type: 'ActivationFailed', rolloutId: ROLLOUT, exitCode: 1, stderrTail: '' }],
    ])('rejects %s on a Failed rollout', (name, input) => {
      const before = failed();
      expectRejected(transition(before, input, at(20), ROLLBACK), before, name, 'Failed');
    });
  });

  describe('other states', () => {
    it.each<{ state: RolloutState; input: ReducerInput }>([
      {
        state: 'Deferred',
        input: { type: 'ActivationCompleted', rolloutId: ROLLOUT, observedCurrentClosure: TARGET, exitCode: 0 },
      },
      {
        state: 'Converged',
        input: { type: 'RollbackCompleted', rolloutId: ROLLOUT, revertedToClosure: PREVIOUS, exitCode: 0 },
      },
      { state: 'Converged', input: declare(['http', 'enforce']) },
      {
        state: 'Reverted',
        input: { type: 'RollbackCompleted', rolloutId: ROLLOUT, revertedToClosure: PREVIOUS, exitCode: 0 },
      },
      { state: 'Pending', input: { type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'switch' } },
    ])('rejects $input.type on a $state rollout', ({ state, input }) => {
      const before = run([[{ type: 'Snapshot', snapshot: snapshot({ state }) }, at(0)]]).state;
      expectRejected(transition(before, input, at(20), HALT), before, input.type, state);
    });
  });

  describe('unknown rollout', () => {
    it.each<ReducerInput>([
      { type: 'ActivationStarted', rolloutId: OTHER, switchMethod: 'switch' },
      { type: 'ActivationCompleted', rolloutId: OTHER, observedCurrentClosure: TARGET, exitCode: 0 },
      { type: 'ActivationDeferred', rolloutId: OTHER, component: 'kernel' },
      { type: 'ActivationFailed', rolloutId: OTHER, exitCode: 1, stderrTail: '' },
      { type: 'ProbeTopologyDeclared', rolloutId: OTHER, probes: [] },
      { type: 'ProbeResult', rolloutId: OTHER, probeName: 'http', status: 'pass' },
      { type: 'RollbackCompleted', rolloutId: OTHER, revertedToClosure: PREVIOUS, exitCode: 0 },
    ])('rejects $type for a rollout it does not know', (input) => {
      const before = activating();
      expectRejected(transition(before, input, at(1), HALT), before, input.type, 'unknown rollout', OTHER);
    });
  });

  describe('seq', () => {
    it('numbers every event of a rollout 1, 2, 3… without gaps across inputs', () => {
      const { effects } = run([
        [activateInput(), at(0)],
        [{ type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'switch' }, at(1)],
        [{ type: 'ActivationCompleted', rolloutId: ROLLOUT, observedCurrentClosure: TARGET, exitCode: 0 }, at(30)],
        [declare(['http', 'enforce']), at(31)],
        [result('http', 'fail'), at(35)],
        [result('http', 'fail'), at(40)],
        [result('http', 'pass'), at(45)],
        [tick(TARGET), at(SOAK_SECS)],
      ]);

      expect(events(effects).map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    });

    it('numbers each rollout on its own', () => {
      const { effects } = run([
        [activateInput(ROLLOUT), at(0)],
        [activateInput(OTHER), at(0)],
        [{ type: 'ActivationStarted', rolloutId: OTHER, switchMethod: 'switch' }, at(1)],
      ]);
      expect(effects.flatMap((e) => (e.type === 'EmitEvent' ? [`${e.rolloutId}#${e.event.seq}`] : []))).toEqual([
        `${ROLLOUT}#1`,
        `${OTHER}#1`,
        `${OTHER}#2`,
      ]);
    });
  });

  describe('Snapshot', () => {
    it('opens a cold rollout with the wire fields and default local ones', () => {
      const r = transition(EMPTY_STATE, { type: 'Snapshot', snapshot: snapshot() }, at(100), HALT);

      expect(r.rejected).toBeUndefined();
      expect(entry(r.state)).toEqual({
        rolloutId: ROLLOUT,
        channel: 'stable',
        state: 'Soaking',
        targetClosure: TARGET,
        currentClosureAtDispatch: PREVIOUS,
        currentClosure: TARGET,
        dispatchedAt: iso(-5),
        dispatchAckedAt: iso(0),
        activationStartedAt: iso(1),
        activationCompletedAt: iso(30),
        soakDueAt: iso(SOAK_SECS),
        lastEventSeq: 4,
        probes: {},
      });
    });

    it('numbers the next event after the snapshot lastEventSeq', () => {
      const cold = run([[{ type: 'Snapshot', snapshot: snapshot({ lastEventSeq: 41 }) }, at(100)]]).state;
      const r = transition(cold, declare(['http', 'enforce']), at(101), HALT);
      expect(events(r.effects)[0]?.seq).toBe(42);
    });

    it.each(ROLLOUT_STATES.filter((s) => s !== 'Pending'))('resets the probe cache after a %s snapshot', (state) => {
      const r = transition(EMPTY_STATE, { type: 'Snapshot', snapshot: snapshot({ state }) }, at(100), HALT);
      expect(r.effects).toEqual([{ type: 'ResetProbeCache', rolloutId: ROLLOUT }]);
    });

    it('does not reset the probe cache for a snapshot that repeats what the agent knows (a steady heartbeat)', () => {
      const known = run([[{ type: 'Snapshot', snapshot: snapshot() }, at(100)]]).state;
      const r = transition(known, { type: 'Snapshot', snapshot: snapshot() }, at(160), HALT);
      expect(r.effects).toEqual([]);
    });

    it.each<[string, Partial<HostRolloutSnapshot>]>([
      ['state', { state: 'Converged' }],
      ['target closure', { targetClosure: PREVIOUS }],
      ['current closure', { currentClosure: PREVIOUS }],
    ])('resets the probe cache when a snapshot changes the rollout %s', (_what, over) => {
      const known = run([[{ type: 'Snapshot', snapshot: snapshot() }, at(100)]]).state;
      const r = transition(known, { type: 'Snapshot', snapshot: snapshot({ lastEventSeq: 5, ...over }) }, at(160), HALT);
      expect(r.effects).toEqual([{ type: 'ResetProbeCache', rolloutId: ROLLOUT }]);
    });

    it('keeps the closure the agent read at dispatch over the one a snapshot names (§11: a CP may record the target there)', () => {
      const r = transition(
        activating(),
        { type: 'Snapshot', snapshot: snapshot({ currentClosureAtDispatch: TARGET, lastEventSeq: 1 }) },
        at(5),
        HALT,
      );
      expect(entry(r.state).currentClosureAtDispatch).toBe(PREVIOUS);
    });

    it('takes the closure at dispatch from the snapshot when the agent has none', () => {
      const r = transition(activating(ROLLBACK, null), { type: 'Snapshot', snapshot: snapshot({ lastEventSeq: 1 }) }, at(5), HALT);
      expect(entry(r.state).currentClosureAtDispatch).toBe(PREVIOUS);
    });

    it('keeps the declared topology and the rollback attempt across a warm snapshot', () => {
      const declared = run([[declare(['db', 'enforce']), at(31)]], HALT, soaking()).state;
      const r = transition(declared, { type: 'Snapshot', snapshot: snapshot({ lastEventSeq: 4 }) }, at(60), HALT);
      expect(entry(r.state).probesDeclaredAt).toBe(iso(31));
      expect(transition(r.state, declare(['db', 'enforce']), at(61), HALT).effects).toEqual([]);
    });

    it('does not reset the probe cache after a Pending snapshot', () => {
      const r = transition(EMPTY_STATE, { type: 'Snapshot', snapshot: snapshot({ state: 'Pending' }) }, at(100), HALT);
      expect(r.effects).toEqual([]);
      expect(entry(r.state).state).toBe('Pending');
    });

    it('keeps probes with their first-failure times across a warm snapshot, taking the wire fields from it', () => {
      const failing = run(
        [
          [declare(['http', 'enforce']), at(31)],
          [result('http', 'fail'), at(40)],
        ],
        HALT,
        soaking(),
      ).state;
      const local = entry(failing);

      const r = transition(
        failing,
        {
          type: 'Snapshot',
          snapshot: snapshot({ lastEventSeq: 9, soakDueAt: iso(900), currentClosure: PREVIOUS, channel: 'stable' }),
        },
        at(60),
        HALT,
      );

      expect(entry(r.state)).toMatchObject({
        state: 'Soaking',
        soakDueAt: iso(900),
        currentClosure: PREVIOUS,
        lastEventSeq: 9,
        probes: local.probes,
      });
      expect(entry(r.state).probes.http?.firstFailedAt).toBe(iso(40));
      expect(r.effects).toEqual([{ type: 'ResetProbeCache', rolloutId: ROLLOUT }]);
    });

    it('keeps failed, converged and reverted times, reverted-to closure and policy across a warm snapshot', () => {
      const reverted = run(
        [
          [{ type: 'ActivationFailed', rolloutId: ROLLOUT, exitCode: 1, stderrTail: '' }, at(10)],
          [{ type: 'RollbackCompleted', rolloutId: ROLLOUT, revertedToClosure: PREVIOUS, exitCode: 0 }, at(20)],
        ],
        ROLLBACK,
        activating(ROLLBACK),
      ).state;
      const withConverged: ReducerState = {
        rollouts: { [ROLLOUT]: { ...entry(reverted), convergedAt: iso(15) } },
      };

      const r = transition(
        withConverged,
        { type: 'Snapshot', snapshot: snapshot({ state: 'Reverted', lastEventSeq: 3 }) },
        at(30),
        ROLLBACK,
      );

      expect(entry(r.state)).toMatchObject({
        state: 'Reverted',
        failedAt: iso(10),
        convergedAt: iso(15),
        revertedAt: iso(20),
        revertedToClosure: PREVIOUS,
        policyApplied: 'rollback-and-halt',
      });
    });

    it('keeps the local value of an optional field the snapshot omits', () => {
      const started = run([[{ type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'switch' }, at(1)]], HALT, activating()).state;

      const r = transition(
        started,
        {
          type: 'Snapshot',
          snapshot: snapshot({
            state: 'Activating',
            lastEventSeq: 2,
            activationStartedAt: undefined,
            activationCompletedAt: undefined,
          }),
        },
        at(5),
        HALT,
      );

      expect(entry(r.state)).toMatchObject({ state: 'Activating', activationStartedAt: iso(1) });
      expect(entry(r.state).activationCompletedAt).toBeUndefined();
    });

    it('fires the sustained-failure timer after a warm snapshot in the middle of a failure streak', () => {
      const failing = run(
        [
          [declare(['http', 'enforce']), at(31)],
          [result('http', 'fail'), at(40)],
        ],
        ROLLBACK,
        soaking(ROLLBACK),
      ).state;
      // The CP resends the rollout; runners re-prime and re-declare, the probe keeps failing.
      const { state: resumed } = run(
        [
          [{ type: 'Snapshot', snapshot: snapshot({ lastEventSeq: entry(failing).lastEventSeq }) }, at(100)],
          [declare(['http', 'enforce']), at(101)],
          [result('http', 'fail'), at(110)],
          [tick(TARGET), at(150)],
        ],
        ROLLBACK,
        failing,
      );
      expect(entry(resumed).state).toBe('Soaking');

      const r = transition(resumed, tick(TARGET), at(160), ROLLBACK);

      expect(entry(r.state).state).toBe('Failed');
      expect(events(r.effects)[0]).toMatchObject({
        kind: 'Failed',
        sustainedDurationSecs: 120,
        failingProbes: ['http'],
      });
      expect(r.effects.at(-1)).toEqual({ type: 'FireRollback', rolloutId: ROLLOUT, toClosure: PREVIOUS });
    });

    it('starts a cold Soaking rollout with no first-failure time, so its streak counts from the next failure', () => {
      const { state } = run([
        [{ type: 'Snapshot', snapshot: snapshot() }, at(100)],
        [declare(['http', 'enforce']), at(101)],
        [result('http', 'fail'), at(110)],
      ]);
      expect(entry(state).probes.http?.firstFailedAt).toBe(iso(110));

      expect(transition(state, tick(TARGET), at(229), HALT).effects).toEqual([]);
      expect(events(transition(state, tick(TARGET), at(230), HALT).effects)[0]?.kind).toBe('Failed');
    });

    describe('a Soaking snapshot without soakDueAt', () => {
      const noSoakDue = (over: Partial<HostRolloutSnapshot> = {}): ReducerInput => ({
        type: 'Snapshot',
        snapshot: snapshot({ soakDueAt: undefined, ...over }),
      });

      it('gets the default soak counted from activationCompletedAt, with one notice saying so', () => {
        const r = transition(EMPTY_STATE, noSoakDue(), at(100), HALT);

        expect(DEFAULT_SOAK_SECS).toBe(300);
        expect(entry(r.state).soakDueAt).toBe(iso(330));
        expect(r.notice).toBe(
          `Soaking rollout ${ROLLOUT} has no soakDueAt from the control plane; soak due at ${iso(330)}: ` +
            `the default soak of 300 s from activationCompletedAt ${iso(30)}`,
        );
        expect(r.effects).toEqual([{ type: 'ResetProbeCache', rolloutId: ROLLOUT }]);
      });

      it('derives the same due time whenever the agent sees it: the rule depends on the snapshot, not on the clock', () => {
        const early = transition(EMPTY_STATE, noSoakDue(), at(40), HALT);
        const late = transition(EMPTY_STATE, noSoakDue(), at(5_000), HALT);
        expect(entry(early.state).soakDueAt).toBe(iso(330));
        expect(entry(late.state).soakDueAt).toBe(iso(330));
      });

      it('counts from when the agent first saw it soaking when the snapshot has no activationCompletedAt either', () => {
        const r = transition(EMPTY_STATE, noSoakDue({ activationCompletedAt: undefined }), at(100), HALT);

        expect(entry(r.state).soakDueAt).toBe(iso(400));
        expect(r.notice).toBe(
          `Soaking rollout ${ROLLOUT} has no soakDueAt from the control plane; soak due at ${iso(400)}: the default soak of 300 s ` +
            `from ${iso(100)}, when the agent first saw it soaking (the snapshot has no activationCompletedAt)`,
        );
        const declared = run([[declare(), at(101)]], HALT, r.state).state;
        expect(transition(declared, tick(TARGET), at(399), HALT).effects).toEqual([]);
        expect(events(transition(declared, tick(TARGET), at(400), HALT).effects)[0]?.kind).toBe('Converged');
      });

      it('keeps the derived due time across later snapshots without one, and gives no second notice', () => {
        const first = run([[noSoakDue({ activationCompletedAt: undefined }), at(100)]]).state;
        const again = transition(first, noSoakDue({ activationCompletedAt: undefined }), at(160), HALT);

        expect(entry(again.state).soakDueAt).toBe(iso(400));
        expect(again.notice).toBeUndefined();
      });

      it("takes the control plane's soakDueAt as soon as a snapshot carries one", () => {
        const derived = run([[noSoakDue(), at(100)]]).state;
        const r = transition(derived, { type: 'Snapshot', snapshot: snapshot({ soakDueAt: iso(900) }) }, at(160), HALT);

        expect(entry(r.state).soakDueAt).toBe(iso(900));
        expect(r.notice).toBeUndefined();
      });

      it('keeps the soakDueAt the dispatch gave, with no notice', () => {
        const r = transition(soaking(), noSoakDue({ lastEventSeq: 3 }), at(40), HALT);

        expect(entry(r.state).soakDueAt).toBe(iso(SOAK_SECS));
        expect(r.notice).toBeUndefined();
      });

      it.each(ROLLOUT_STATES.filter((s) => s !== 'Soaking'))('leaves a %s snapshot without a soak due time alone', (state) => {
        const r = transition(EMPTY_STATE, noSoakDue({ state }), at(100), HALT);

        expect(entry(r.state).soakDueAt).toBeUndefined();
        expect(r.notice).toBeUndefined();
      });
    });

    it('raises lastEventSeq to a newer snapshot value', () => {
      const r = transition(activating(), { type: 'Snapshot', snapshot: snapshot({ lastEventSeq: 12 }) }, at(5), HALT);
      expect(entry(r.state).lastEventSeq).toBe(12);
    });

    it('ignores a snapshot older than the local log, without rejecting it and without lowering the seq', () => {
      const before = soaking(); // lastEventSeq 3
      const r = transition(before, { type: 'Snapshot', snapshot: snapshot({ state: 'Activating', lastEventSeq: 1 }) }, at(40), HALT);

      expect(r.rejected).toBeUndefined();
      expect(r.state).toBe(before);
      expect(r.effects).toEqual([]);
      expect(r.note).toContain('seq 1');
      expect(r.note).toContain('seq 3');
    });

    it('applies a snapshot at the same seq as the local log', () => {
      const before = soaking(); // lastEventSeq 3
      const input: ReducerInput = { type: 'Snapshot', snapshot: snapshot({ lastEventSeq: 3, soakDueAt: iso(42) }) };
      const r = transition(before, input, at(40), HALT);
      expect(entry(r.state)).toMatchObject({ lastEventSeq: 3, soakDueAt: iso(42) });
    });
  });
});
