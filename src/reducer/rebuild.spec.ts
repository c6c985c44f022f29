import type { AgentEvent } from '../protocol/events.wire';
import {
  DEFAULT_SOAK_SECS,
  EMPTY_STATE,
  type Effect,
  type LogRecord,
  type Policy,
  type ReducerInput,
  type ReducerState,
} from './reducer.types';
import { rebuildFromLog } from './rebuild';
import { at, entry, HALT, iso, OTHER, PREVIOUS, ROLLBACK, ROLLOUT, TARGET } from '../../test/support/reducer-fixtures';
import { staleProbes, transition } from './transition';

type Script = readonly (readonly [ReducerInput, number])[];

/** The live state as a restart sees it: every probe result from before it (the log never records staleness). */
function afterRestart(state: ReducerState): ReducerState {
  return { rollouts: Object.fromEntries(Object.entries(state.rollouts).map(([id, e]) => [id, { ...e, probes: staleProbes(e.probes) }])) };
}

/** What the agent appends to its log: each EmitEvent with its meta. */
function logged(effects: readonly Effect[]): LogRecord[] {
  return effects.flatMap((e) => (e.type === 'EmitEvent' ? [{ rolloutId: e.rolloutId, event: e.event, meta: e.meta }] : []));
}

/** Drives `transition` and writes the log the way the agent does: each EmitEvent with its meta. */
function play(script: Script, policy: Policy = HALT): { state: ReducerState; log: LogRecord[] } {
  let state = EMPTY_STATE;
  const log: LogRecord[] = [];
  for (const [input, secs] of script) {
    const r = transition(state, input, at(secs), policy);
    if (r.rejected !== undefined) throw new Error(`unexpected rejection: ${r.rejected}`);
    state = r.state;
    log.push(...logged(r.effects));
  }
  return { state, log };
}

const activate = (rolloutId = ROLLOUT): ReducerInput => ({
  type: 'Activate',
  rolloutId,
  targetClosure: TARGET,
  soakDueAt: iso(600),
  currentClosure: PREVIOUS,
  dispatchedAt: iso(-5),
});
const started = (rolloutId = ROLLOUT): ReducerInput => ({
  type: 'ActivationStarted',
  rolloutId,
  switchMethod: 'switch',
});
const completed = (rolloutId = ROLLOUT): ReducerInput => ({
  type: 'ActivationCompleted',
  rolloutId,
  observedCurrentClosure: TARGET,
  exitCode: 0,
});
const declare: ReducerInput = {
  type: 'ProbeTopologyDeclared',
  rolloutId: ROLLOUT,
  probes: [
    { probeName: 'http', kind: 'http', mode: 'enforce' },
    { probeName: 'disk', kind: 'exec', mode: 'observe' },
  ],
};
const probe = (probeName: string, status: 'pass' | 'fail'): ReducerInput => ({
  type: 'ProbeResult',
  rolloutId: ROLLOUT,
  probeName,
  status,
});
const tick: ReducerInput = { type: 'Tick', currentClosure: TARGET };

const SOAKING: Script = [
  [activate(), 0],
  [started(), 1],
  [completed(), 30],
];

describe('rebuildFromLog', () => {
  it('rebuilds an empty state from an empty log', () => {
    expect(rebuildFromLog([])).toEqual(EMPTY_STATE);
  });

  it.each<[string, Script, Policy]>([
    ['Activating after the ack', [[activate(), 0]], HALT],
    [
      'Activating after the switch started',
      [
        [activate(), 0],
        [started(), 1],
      ],
      HALT,
    ],
    [
      'Deferred',
      [
        [activate(), 0],
        [{ type: 'ActivationDeferred', rolloutId: ROLLOUT, component: 'kernel' }, 5],
      ],
      HALT,
    ],
    [
      'Failed after a failed activation, with the policy applied',
      [
        [activate(), 0],
        [{ type: 'ActivationFailed', rolloutId: ROLLOUT, exitCode: 1, stderrTail: 'x' }, 5],
      ],
      ROLLBACK,
    ],
    ['Soaking', SOAKING, HALT],
    [
      'Soaking with probes and an open failure streak',
      [...SOAKING, [declare, 31], [probe('http', 'pass'), 35], [probe('http', 'fail'), 50], [probe('disk', 'fail'), 50]],
      HALT,
    ],
    [
      'Soaking with a failure streak a pass has closed',
      [...SOAKING, [declare, 31], [probe('http', 'fail'), 35], [probe('http', 'pass'), 50]],
      HALT,
    ],
    ['Converged', [...SOAKING, [declare, 31], [probe('http', 'pass'), 35], [tick, 600]], HALT],
    ['Failed after sustained probe failure', [...SOAKING, [declare, 31], [probe('http', 'fail'), 35], [tick, 155]], ROLLBACK],
    [
      'Reverted',
      [
        ...SOAKING,
        [declare, 31],
        [probe('http', 'fail'), 35],
        [tick, 155],
        [{ type: 'RollbackCompleted', rolloutId: ROLLOUT, revertedToClosure: PREVIOUS, exitCode: 0 }, 170],
      ],
      ROLLBACK,
    ],
    [
      'Failed after a rollback that failed',
      [
        ...SOAKING,
        [declare, 31],
        [probe('http', 'fail'), 35],
        [tick, 155],
        [{ type: 'RollbackCompleted', rolloutId: ROLLOUT, revertedToClosure: PREVIOUS, exitCode: 1 }, 170],
      ],
      ROLLBACK,
    ],
    [
      'Soaking with a failure reason and a re-declared unchanged topology',
      [
        ...SOAKING,
        [declare, 31],
        [{ type: 'ProbeResult', rolloutId: ROLLOUT, probeName: 'http', status: 'fail', failureReason: 'answered 503' }, 35],
        [declare, 90],
      ],
      HALT,
    ],
  ])('rebuilds the state the reducer reached: %s', (_name, script, policy) => {
    const { state, log } = play(script, policy);
    expect(rebuildFromLog(log)).toEqual(afterRestart(state));
  });

  it('rebuilds interleaved rollouts whatever the order across rollouts', () => {
    const { state, log } = play([
      [activate(ROLLOUT), 0],
      [activate(OTHER), 0],
      [started(OTHER), 1],
      [started(ROLLOUT), 2],
      [completed(OTHER), 20],
      [completed(ROLLOUT), 30],
    ]);
    const mine = log.filter((r) => r.rolloutId === ROLLOUT);
    const theirs = log.filter((r) => r.rolloutId === OTHER);

    const rebuilt = rebuildFromLog([...theirs, ...mine]);

    expect(rebuilt).toEqual(afterRestart(state));
    expect(entry(rebuilt, OTHER)).toMatchObject({ state: 'Soaking', channel: 'canary', lastEventSeq: 3 });
  });

  it('ignores a repeated seq, keeping the first record of it', () => {
    const { state, log } = play([...SOAKING, [declare, 31], [probe('http', 'fail'), 35]]);
    const [first] = log;
    if (first === undefined) throw new Error('empty log');
    const bogus: LogRecord = {
      rolloutId: ROLLOUT,
      event: { kind: 'Converged', seq: 5, convergedAt: iso(99), currentClosure: TARGET },
    };

    const rebuilt = rebuildFromLog([first, ...log, bogus]);

    expect(rebuilt).toEqual(afterRestart(state));
    expect(entry(rebuilt).state).toBe('Soaking');
  });

  it('takes lastEventSeq from the highest seq, even across a gap', () => {
    const records: LogRecord[] = [
      {
        rolloutId: ROLLOUT,
        event: { kind: 'DispatchAck', seq: 1, currentClosureAtDispatch: PREVIOUS, receivedAt: iso(0) },
      },
      { rolloutId: ROLLOUT, event: { kind: 'ActivationStarted', seq: 7, startedAt: iso(1), switchMethod: 'switch' } },
    ];
    expect(entry(rebuildFromLog(records)).lastEventSeq).toBe(7);
  });

  it('sorts a rollout whose records were written out of seq order', () => {
    const { state, log } = play(SOAKING);
    expect(rebuildFromLog([...log].reverse())).toEqual(afterRestart(state));
  });

  it('rebuilds a log written without meta from what the events carry', () => {
    const { log } = play([...SOAKING, [declare, 31], [probe('http', 'fail'), 35]]);
    const bare: LogRecord[] = log.map(({ rolloutId, event }) => ({ rolloutId, event }));

    const e = entry(rebuildFromLog(bare));

    expect(e).toMatchObject({
      channel: 'stable',
      state: 'Soaking',
      targetClosure: '',
      currentClosureAtDispatch: PREVIOUS,
      currentClosure: TARGET,
      dispatchedAt: iso(0),
      dispatchAckedAt: iso(0),
      activationStartedAt: iso(1),
      activationCompletedAt: iso(30),
      lastEventSeq: 7,
    });
    expect(e.soakDueAt).toBeUndefined();
    expect(e.probes.http).toEqual({
      kind: 'http',
      mode: 'enforce',
      lastStatus: 'fail',
      statusSince: iso(35),
      firstObservedAt: iso(35),
      firstFailedAt: iso(35),
      stale: true,
    });
  });

  it('keeps a probe whose topology record is missing, with the mode its events name', () => {
    const records: LogRecord[] = [
      {
        rolloutId: ROLLOUT,
        event: { kind: 'ProbeFailureFirst', seq: 9, probeName: 'http', mode: 'enforce', firstFailedAt: iso(40) },
      },
    ];
    expect(entry(rebuildFromLog(records))).toMatchObject({
      state: 'Soaking',
      probes: { http: { kind: 'unknown', mode: 'enforce', firstFailedAt: iso(40) } },
    });
  });

  it('lets a restarted agent number on and fire the sustained-failure timer from the logged streak, once a new run confirms it', () => {
    const { log } = play([...SOAKING, [declare, 31], [probe('http', 'fail'), 40]], ROLLBACK);
    const restarted = rebuildFromLog(log);
    expect(restarted.rollouts[ROLLOUT]?.probes.http).toMatchObject({ lastStatus: 'fail', firstFailedAt: iso(40), stale: true });

    // Past the threshold, but the failure is from before the restart: no verdict on it alone.
    expect(transition(restarted, tick, at(160), ROLLBACK).effects).toEqual([]);
    // The runners probe again and the probe still fails: the streak counts from its first failure.
    const confirmed = transition(restarted, probe('http', 'fail'), at(161), ROLLBACK);
    expect(confirmed.effects).toEqual([]);
    const r = transition(confirmed.state, tick, at(162), ROLLBACK);

    const emitted: AgentEvent[] = r.effects.flatMap((e) => (e.type === 'EmitEvent' ? [e.event] : []));
    expect(emitted).toEqual([
      expect.objectContaining({
        kind: 'Failed',
        seq: 8,
        sustainedDurationSecs: 122,
        policyApplied: 'rollback-and-halt',
      }),
    ]);
    expect(r.effects.at(-1)).toEqual({ type: 'FireRollback', rolloutId: ROLLOUT, toClosure: PREVIOUS });
  });

  it('restores closure, soak due time and channel of a snapshot-opened rollout from the meta of its events', () => {
    let state = transition(
      EMPTY_STATE,
      {
        type: 'Snapshot',
        snapshot: {
          rolloutId: ROLLOUT,
          hostname: 'web-01',
          channel: 'stable',
          state: 'Soaking',
          targetClosure: TARGET,
          currentClosureAtDispatch: PREVIOUS,
          dispatchedAt: iso(-5),
          soakDueAt: iso(600),
          lastEventSeq: 4,
        },
      },
      at(100),
      HALT,
    ).state;
    const r = transition(state, declare, at(101), HALT);
    state = r.state;
    const log = logged(r.effects);

    expect(entry(rebuildFromLog(log))).toMatchObject({
      state: 'Soaking',
      targetClosure: TARGET,
      soakDueAt: iso(600),
      dispatchedAt: iso(-5),
      currentClosureAtDispatch: PREVIOUS,
      lastEventSeq: 5,
      probes: entry(state).probes,
    });
  });

  it('keeps a soak due time the reducer derived for a snapshot without one, so a restart neither re-derives it later nor loses it', () => {
    const cold: ReducerInput = {
      type: 'Snapshot',
      snapshot: {
        rolloutId: ROLLOUT,
        hostname: 'web-01',
        channel: 'stable',
        state: 'Soaking',
        targetClosure: TARGET,
        dispatchedAt: iso(-5),
        // Neither soakDueAt nor activationCompletedAt: the due time counts from when the agent first saw it.
        lastEventSeq: 4,
      },
    };
    const { log } = play([
      [cold, 100],
      [declare, 101],
    ]);
    const derived = iso(100 + DEFAULT_SOAK_SECS);
    expect(log.map((r) => r.meta?.soakDueAt)).toEqual([derived]);

    // After a restart: the rebuilt entry has it, and the CP's next snapshot (still without one) keeps it.
    const rebuilt = rebuildFromLog(log);
    expect(entry(rebuilt).soakDueAt).toBe(derived);
    const resent = transition(rebuilt, cold, at(1_000), HALT);
    expect(entry(resent.state).soakDueAt).toBe(derived);
    expect(resent.notice).toBeUndefined();
  });
});
