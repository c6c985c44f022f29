import { at, HALT, iso, OTHER, PREVIOUS, ROLLBACK, ROLLOUT, TARGET } from '../../test/support/reducer-fixtures';
import { EMPTY_STATE, type Policy, type ReducerInput, type ReducerState } from './reducer.types';
import { type RolloutChange, rolloutChanges } from './state-changes';
import { transition } from './transition';

/** Applies the inputs and collects what each committed transition reports. */
function changes(
  steps: readonly (readonly [ReducerInput, number])[],
  policy: Policy = HALT,
): { state: ReducerState; said: RolloutChange[]; seqOf: (kind: string) => number } {
  let state = EMPTY_STATE;
  const said: RolloutChange[] = [];
  const emitted: { kind: string; seq: number }[] = [];
  for (const [input, secs] of steps) {
    const r = transition(state, input, at(secs), policy);
    if (r.rejected !== undefined) throw new Error(r.rejected);
    said.push(...rolloutChanges(state, r.state, r.effects));
    for (const e of r.effects) if (e.type === 'EmitEvent') emitted.push({ kind: e.event.kind, seq: e.event.seq });
    state = r.state;
  }
  /** The seq of the one event of that kind the transitions emitted. */
  const seqOf = (kind: string): number => {
    const found = emitted.filter((e) => e.kind === kind);
    if (found.length !== 1) throw new Error(`${found.length} ${kind} events emitted`);
    return found[0].seq;
  };
  return { state, said, seqOf };
}

const ACTIVATE: ReducerInput = {
  type: 'Activate',
  rolloutId: ROLLOUT,
  targetClosure: TARGET,
  soakDueAt: iso(600),
  currentClosure: PREVIOUS,
  dispatchedAt: iso(-5),
};
const STARTED: ReducerInput = { type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'switch' };
const COMPLETED: ReducerInput = { type: 'ActivationCompleted', rolloutId: ROLLOUT, observedCurrentClosure: TARGET, exitCode: 0 };
const DECLARE: ReducerInput = {
  type: 'ProbeTopologyDeclared',
  rolloutId: ROLLOUT,
  probes: [{ probeName: 'db', kind: 'tcp', mode: 'enforce' }],
};
const FAIL: ReducerInput = { type: 'ProbeResult', rolloutId: ROLLOUT, probeName: 'db', status: 'fail', failureReason: 'refused' };
const PASS: ReducerInput = { type: 'ProbeResult', rolloutId: ROLLOUT, probeName: 'db', status: 'pass' };
const TICK: ReducerInput = { type: 'Tick', currentClosure: TARGET };

describe('rolloutChanges: one line per state change of a rollout', () => {
  it('says Activating, Soaking and Converged once each, and nothing for inputs that change no state', () => {
    const { said, seqOf } = changes([
      [ACTIVATE, 0],
      [STARTED, 1],
      [COMPLETED, 30],
      [DECLARE, 31],
      [PASS, 35],
      [TICK, 100],
      [TICK, 600],
    ]);
    expect(said.map((c) => c.line)).toEqual([
      `rollout ${ROLLOUT}: Activating ${TARGET}`,
      `rollout ${ROLLOUT}: Soaking since ${iso(30)}, soak due at ${iso(600)}`,
      `rollout ${ROLLOUT}: Converged on ${TARGET}`,
    ]);
    // The fields of each line: the same facts for a log shipper, with the seq of the event that recorded the change.
    expect(said.map((c) => (c.kind === 'failed' ? null : c.fields))).toEqual([
      { rolloutId: ROLLOUT, from: null, to: 'Activating', closure: TARGET, seq: seqOf('DispatchAck'), source: 'agent' },
      {
        rolloutId: ROLLOUT,
        from: 'Activating',
        to: 'Soaking',
        closure: TARGET,
        soakingSince: iso(30),
        soakDueAt: iso(600),
        seq: seqOf('ActivationCompleted'),
        source: 'agent',
      },
      { rolloutId: ROLLOUT, from: 'Soaking', to: 'Converged', closure: TARGET, seq: seqOf('Converged'), source: 'agent' },
    ]);
  });

  it('says Deferred, and Pending and Reverted when the control plane moved the rollout', () => {
    const { said, seqOf } = changes([
      [ACTIVATE, 0],
      [STARTED, 1],
      [{ type: 'ActivationDeferred', rolloutId: ROLLOUT, component: 'kernel' }, 20],
      [
        {
          type: 'Snapshot',
          snapshot: {
            rolloutId: OTHER,
            hostname: 'web-01',
            channel: 'canary',
            state: 'Pending',
            targetClosure: TARGET,
            dispatchedAt: iso(25),
            lastEventSeq: 0,
          },
        },
        30,
      ],
      [
        {
          type: 'Snapshot',
          snapshot: {
            rolloutId: OTHER,
            hostname: 'web-01',
            channel: 'canary',
            state: 'Reverted',
            targetClosure: TARGET,
            dispatchedAt: iso(25),
            lastEventSeq: 4,
          },
        },
        40,
      ],
    ]);
    expect(said.map((c) => c.line)).toEqual([
      `rollout ${ROLLOUT}: Activating ${TARGET}`,
      `rollout ${ROLLOUT}: Deferred: installed, takes effect at the next boot`,
      `rollout ${OTHER}: Pending (from the control plane's snapshot)`,
      `rollout ${OTHER}: Reverted to the closure from before the dispatch (from the control plane's snapshot; was Pending)`,
    ]);
    expect(said.map((c) => (c.kind === 'failed' ? null : c.fields)).slice(1)).toEqual([
      { rolloutId: ROLLOUT, from: 'Activating', to: 'Deferred', closure: TARGET, seq: seqOf('ActivationDeferred'), source: 'agent' },
      { rolloutId: OTHER, from: null, to: 'Pending', closure: TARGET, seq: null, source: 'control-plane' },
      { rolloutId: OTHER, from: 'Pending', to: 'Reverted', closure: null, seq: null, source: 'control-plane' },
    ]);
  });

  it('says Failed with the failing probes and the policy, counts it by policy, then Reverted', () => {
    const { said, seqOf } = changes(
      [
        [ACTIVATE, 0],
        [STARTED, 1],
        [COMPLETED, 30],
        [DECLARE, 31],
        [FAIL, 40],
        [TICK, 160],
        [{ type: 'RollbackCompleted', rolloutId: ROLLOUT, revertedToClosure: PREVIOUS, exitCode: 0 }, 170],
      ],
      ROLLBACK,
    );
    const failedLine = `rollout ${ROLLOUT}: Failed: enforce probe(s) db failing for 120 s; rolling back to the closure from before the dispatch`;
    expect(said.slice(2)).toEqual([
      {
        kind: 'state',
        rolloutId: ROLLOUT,
        from: 'Soaking',
        to: 'Failed',
        line: failedLine,
        fields: {
          rolloutId: ROLLOUT,
          from: 'Soaking',
          to: 'Failed',
          closure: TARGET,
          policy: 'rollback-and-halt',
          failingProbes: ['db'],
          sustainedSecs: 120,
          seq: seqOf('Failed'),
        },
      },
      { kind: 'failed', rolloutId: ROLLOUT, policy: 'rollback-and-halt', line: failedLine },
      {
        kind: 'rollback',
        rolloutId: ROLLOUT,
        reverted: true,
        fields: { rolloutId: ROLLOUT, from: 'Failed', to: 'Reverted', closure: PREVIOUS, exitCode: 0, seq: seqOf('RollbackComplete') },
        line: `rollout ${ROLLOUT}: Reverted: the host runs ${PREVIOUS} again, the closure from before the dispatch`,
      },
    ]);
  });

  it('says a failed rollback plainly: the rollout stays Failed and needs an operator', () => {
    const { said, seqOf } = changes(
      [
        [ACTIVATE, 0],
        [{ type: 'ActivationFailed', rolloutId: ROLLOUT, exitCode: 3, stderrTail: 'boom' }, 5],
        [{ type: 'RollbackCompleted', rolloutId: ROLLOUT, revertedToClosure: PREVIOUS, exitCode: 1 }, 9],
      ],
      ROLLBACK,
    );
    expect(said.map((c) => [c.kind, c.line])).toEqual([
      ['state', `rollout ${ROLLOUT}: Activating ${TARGET}`],
      ['state', `rollout ${ROLLOUT}: Failed: the activation failed (exit code 3); rolling back to the closure from before the dispatch`],
      ['failed', `rollout ${ROLLOUT}: Failed: the activation failed (exit code 3); rolling back to the closure from before the dispatch`],
      [
        'rollback',
        `rollout ${ROLLOUT}: the rollback to ${PREVIOUS} failed (exit code 1); the rollout stays Failed and the host needs an operator`,
      ],
    ]);
    expect(said.map((c) => (c.kind === 'failed' ? null : c.fields))).toEqual([
      { rolloutId: ROLLOUT, from: null, to: 'Activating', closure: TARGET, seq: seqOf('DispatchAck'), source: 'agent' },
      {
        rolloutId: ROLLOUT,
        from: 'Activating',
        to: 'Failed',
        closure: TARGET,
        policy: 'rollback-and-halt',
        exitCode: 3,
        seq: seqOf('ActivationFailed'),
      },
      null,
      { rolloutId: ROLLOUT, from: 'Failed', to: 'Failed', closure: PREVIOUS, exitCode: 1, seq: seqOf('RollbackComplete') },
    ]);
  });

  it('names the control plane as the source of a change its snapshot made', () => {
    const { said } = changes([
      [ACTIVATE, 0],
      [
        {
          type: 'Snapshot',
          snapshot: {
            rolloutId: ROLLOUT,
            hostname: 'web-01',
            channel: 'stable',
            state: 'Converged',
            targetClosure: TARGET,
            dispatchedAt: iso(-5),
            lastEventSeq: 6,
          },
        },
        50,
      ],
    ]);
    expect(said.at(-1)?.line).toBe(`rollout ${ROLLOUT}: Converged on ${TARGET} (from the control plane's snapshot; was Activating)`);
    expect(said.at(-1)).toMatchObject({ fields: { from: 'Activating', to: 'Converged', seq: null, source: 'control-plane' } });
  });
});
