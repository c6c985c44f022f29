import { at, declare, entry, HALT, iso, PREVIOUS, result, ROLLOUT, TARGET } from '../../test/support/reducer-fixtures';
import { EMPTY_STATE, type ReducerInput, type ReducerState } from './reducer.types';
import { rolloutHealth } from './rollout-health';
import { transition } from './transition';

const SOAK_DUE = 600;

function run(steps: readonly (readonly [ReducerInput, number])[]): ReducerState {
  let state = EMPTY_STATE;
  for (const [input, secs] of steps) {
    const r = transition(state, input, at(secs), HALT);
    if (r.rejected !== undefined) throw new Error(r.rejected);
    state = r.state;
  }
  return state;
}

const SOAKING: readonly (readonly [ReducerInput, number])[] = [
  [
    {
      type: 'Activate',
      rolloutId: ROLLOUT,
      targetClosure: TARGET,
      soakDueAt: iso(SOAK_DUE),
      currentClosure: PREVIOUS,
      dispatchedAt: iso(-5),
    },
    0,
  ],
  [{ type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'switch' }, 1],
  [{ type: 'ActivationCompleted', rolloutId: ROLLOUT, observedCurrentClosure: TARGET, exitCode: 0 }, 30],
];

/** True when the advance tick at `secs` converges the rollout: the judgement must say nothing holds it. */
function tickConverges(state: ReducerState, secs: number, current: string | null): boolean {
  return transition(state, { type: 'Tick', currentClosure: current }, at(secs), HALT).state.rollouts[ROLLOUT]?.state === 'Converged';
}

describe('rolloutHealth: why a soaking rollout has not converged, in the tick’s own terms', () => {
  it('waits for the runners to declare the topology first', () => {
    const state = run(SOAKING);
    const h = rolloutHealth(entry(state), TARGET, at(60), HALT);
    expect(h).toMatchObject({ state: 'Soaking', probesDeclared: false, soakDueAt: iso(SOAK_DUE), soakRemainingSecs: 540, probes: [] });
    expect(h.waitingFor).toEqual(['waiting for the probe runners to declare the health checks', 'soak ends in 9 min']);
  });

  it('names each enforce probe with no result, each failing one with the time left before the rollout fails, and the soak', () => {
    const state = run([
      ...SOAKING,
      [declare(['db-ping', 'enforce'], ['web', 'enforce'], ['cache', 'observe'], ['old', 'disabled']), 31],
      [result('web', 'fail', 'connect to 127.0.0.1:8080 refused (ECONNREFUSED)'), 40],
      [result('cache', 'fail', 'answered 503'), 40],
    ]);
    const h = rolloutHealth(entry(state), TARGET, at(100), HALT);
    expect(h.waitingFor).toEqual([
      'waiting for probe db-ping (no result yet)',
      'probe web failing for 60 s (the rollout fails if it still fails in 60 s)',
      'soak ends in 8 min',
    ]);
    expect(h.probes).toEqual([
      {
        name: 'cache',
        kind: 'http',
        mode: 'observe',
        lastResult: 'fail',
        since: iso(40),
        failingForSecs: 60,
        failureReason: 'answered 503',
        stale: false,
      },
      {
        name: 'db-ping',
        kind: 'http',
        mode: 'enforce',
        lastResult: null,
        since: null,
        failingForSecs: null,
        failureReason: null,
        stale: false,
      },
      {
        name: 'old',
        kind: 'http',
        mode: 'disabled',
        lastResult: null,
        since: null,
        failingForSecs: null,
        failureReason: null,
        stale: false,
      },
      {
        name: 'web',
        kind: 'http',
        mode: 'enforce',
        lastResult: 'fail',
        since: iso(40),
        failingForSecs: 60,
        failureReason: 'connect to 127.0.0.1:8080 refused (ECONNREFUSED)',
        stale: false,
      },
    ]);
  });

  it('says when the host does not run the target', () => {
    const state = run([...SOAKING, [declare(), 31]]);
    expect(rolloutHealth(entry(state), PREVIOUS, at(SOAK_DUE), HALT).waitingFor).toEqual([`host runs ${PREVIOUS}, not the target`]);
    expect(rolloutHealth(entry(state), null, at(SOAK_DUE), HALT).waitingFor).toEqual([
      'host runs an unreadable current system, not the target',
    ]);
  });

  it('waits for a new result of a probe whose last one is from before a reset, and judges no failure off the target', () => {
    const state = run([
      ...SOAKING,
      [declare(['db', 'enforce'], ['web', 'enforce']), 31],
      [result('db', 'pass'), 32],
      [result('web', 'fail'), 40],
      [declare(['db', 'enforce'], ['web', 'enforce']), 50],
    ]);
    expect(rolloutHealth(entry(state), TARGET, at(60), HALT).waitingFor).toEqual([
      'waiting for a new result of probe db (its last, pass, is from before a restart or reset)',
      'waiting for a new result of probe web (its last, fail, is from before a restart or reset)',
      'soak ends in 9 min',
    ]);
    const fresh = transition(state, result('web', 'fail'), at(55), HALT).state;
    expect(rolloutHealth(entry(fresh), PREVIOUS, at(60), HALT).waitingFor).toContain(
      'probe web failing for 20 s (the rollout is judged only while the host runs its target)',
    );
  });

  it.each<[string, readonly (readonly [ReducerInput, number])[], number, string | null]>([
    ['no topology yet', [], SOAK_DUE + 10, TARGET],
    ['soak not over', [[declare(), 31]], SOAK_DUE - 1, TARGET],
    ['all clear', [[declare(), 31]], SOAK_DUE, TARGET],
    ['another closure', [[declare(), 31]], SOAK_DUE, PREVIOUS],
    ['an enforce probe without a result', [[declare(['db', 'enforce']), 31]], SOAK_DUE, TARGET],
    [
      'an enforce probe passing, an observe one failing',
      [
        [declare(['db', 'enforce'], ['c', 'observe']), 31],
        [result('db', 'pass'), 32],
        [result('c', 'fail'), 33],
      ],
      SOAK_DUE,
      TARGET,
    ],
    [
      'an enforce probe failing',
      [
        [declare(['db', 'enforce']), 31],
        [result('db', 'fail'), SOAK_DUE - 10],
      ],
      SOAK_DUE,
      TARGET,
    ],
    [
      'a pass from before a reset',
      [
        [declare(['db', 'enforce']), 31],
        [result('db', 'pass'), 32],
        [declare(['db', 'enforce']), 40],
      ],
      SOAK_DUE,
      TARGET,
    ],
    [
      'a pass confirmed after a reset',
      [
        [declare(['db', 'enforce']), 31],
        [result('db', 'pass'), 32],
        [declare(['db', 'enforce']), 40],
        [result('db', 'pass'), 41],
      ],
      SOAK_DUE,
      TARGET,
    ],
  ])('holds nothing back exactly when the tick converges: %s', (_name, steps, secs, current) => {
    const state = run([...SOAKING, ...steps]);
    expect(rolloutHealth(entry(state), current, at(secs), HALT).waitingFor.length === 0).toBe(tickConverges(state, secs, current));
  });

  it('lists nothing to wait for once the rollout has its verdict, and shows the policy and the rollback', () => {
    const state = run([...SOAKING, [declare(['db', 'enforce']), 31], [result('db', 'fail', 'exit 1'), 40]]);
    const failed = transition(state, { type: 'Tick', currentClosure: TARGET }, at(160), HALT).state;
    const h = rolloutHealth(entry(failed), TARGET, at(170), HALT);
    expect(h).toMatchObject({ state: 'Failed', waitingFor: [], failedAt: iso(160), policyApplied: 'halt', rollback: null });
  });
});
