import type { AgentEvent } from '../protocol/events.wire';
import type { FailurePolicy, RolloutState } from '../protocol/rollout';
import type { Effect, ReducerState } from './reducer.types';

/**
 * The structured side of a line, the log entry's `fields`: what a log
 * shipper filters on without parsing the message.
 */
export type ChangeFields = Readonly<Record<string, string | number | null | readonly string[]>>;

/** What a committed transition did to one rollout, for the log and the metrics. */
export type RolloutChange =
  | {
      readonly kind: 'state';
      readonly rolloutId: string;
      readonly from: RolloutState | null;
      readonly to: RolloutState;
      readonly line: string;
      readonly fields: ChangeFields;
    }
  | { readonly kind: 'failed'; readonly rolloutId: string; readonly policy: FailurePolicy; readonly line: string }
  | {
      readonly kind: 'rollback';
      readonly rolloutId: string;
      readonly reverted: boolean;
      readonly line: string;
      readonly fields: ChangeFields;
    };

/**
 * One line per rollout whose state a transition changed (Soaking since,
 * Converged, Failed with the failing probes, Reverted…), and what the
 * metrics count (rollouts failed by policy, rollbacks by outcome). Read off
 * the state before and after and the events emitted, so that it says what
 * was committed, never what was merely attempted.
 */
export function rolloutChanges(before: ReducerState, after: ReducerState, effects: readonly Effect[]): RolloutChange[] {
  if (before === after) return [];
  const events = new Map<string, AgentEvent[]>();
  for (const e of effects) {
    if (e.type !== 'EmitEvent') continue;
    const list = events.get(e.rolloutId);
    if (list) list.push(e.event);
    else events.set(e.rolloutId, [e.event]);
  }
  const out: RolloutChange[] = [];
  for (const id of Object.keys(after.rollouts).sort()) {
    const next = after.rollouts[id];
    const prev = Object.hasOwn(before.rollouts, id) ? before.rollouts[id] : undefined;
    if (next === undefined || prev === next) continue;
    const mine = events.get(id) ?? [];
    const failed = mine.find((e) => e.kind === 'Failed');
    const activationFailed = mine.find((e) => e.kind === 'ActivationFailed');
    const rollback = mine.find((e) => e.kind === 'RollbackComplete');
    // The seq of the event that recorded the change: the line and the event it went to the CP as.
    const seq = mine.length === 0 ? null : Math.max(...mine.map((e) => e.seq));
    const from = prev?.state ?? null;
    const base = { rolloutId: id, from, to: next.state };
    if (rollback !== undefined) {
      const reverted = rollback.exitCode === 0;
      out.push({
        kind: 'rollback',
        rolloutId: id,
        reverted,
        fields: { ...base, closure: rollback.revertedToClosure, exitCode: rollback.exitCode, seq },
        line: reverted
          ? `rollout ${id}: Reverted: the host runs ${rollback.revertedToClosure} again, the closure from before the dispatch`
          : `rollout ${id}: the rollback to ${rollback.revertedToClosure} failed (exit code ${rollback.exitCode}); the rollout stays Failed and the host needs an operator`,
      });
      continue;
    }
    if (prev?.state === next.state) continue;
    const closure = next.targetClosure === '' ? null : next.targetClosure;
    if (failed !== undefined) {
      const line =
        `rollout ${id}: Failed: enforce probe(s) ${failed.failingProbes.join(', ')} failing for ${failed.sustainedDurationSecs} s; ` +
        policyLine(failed.policyApplied);
      const fields = {
        ...base,
        closure,
        policy: failed.policyApplied,
        failingProbes: failed.failingProbes,
        sustainedSecs: failed.sustainedDurationSecs,
        seq,
      };
      out.push(
        { kind: 'state', rolloutId: id, from, to: next.state, line, fields },
        { kind: 'failed', rolloutId: id, policy: failed.policyApplied, line },
      );
      continue;
    }
    if (activationFailed !== undefined) {
      const policy = next.policyApplied ?? 'halt';
      const line = `rollout ${id}: Failed: the activation failed (exit code ${String(activationFailed.exitCode)}); ${policyLine(policy)}`;
      const fields = { ...base, closure, policy, exitCode: activationFailed.exitCode, seq };
      out.push({ kind: 'state', rolloutId: id, from, to: next.state, line, fields }, { kind: 'failed', rolloutId: id, policy, line });
      continue;
    }
    const fromSnapshot = mine.length === 0;
    out.push({
      kind: 'state',
      rolloutId: id,
      from,
      to: next.state,
      line: stateLine(id, from, next.state, next, fromSnapshot),
      fields: { ...base, ...stateFields(next, closure), seq, source: fromSnapshot ? 'control-plane' : 'agent' },
    });
  }
  return out;
}

/** The closure a state is about, and the times that belong to it. */
function stateFields(e: ReducerState['rollouts'][string], target: string | null): ChangeFields {
  switch (e.state) {
    case 'Pending':
    case 'Activating':
    case 'Deferred':
    case 'Failed':
      return { closure: target };
    case 'Soaking':
      return { closure: target, soakingSince: e.activationCompletedAt ?? null, soakDueAt: e.soakDueAt ?? null };
    case 'Converged':
      return { closure: e.currentClosure ?? target };
    case 'Reverted':
      return { closure: e.revertedToClosure ?? null };
    default: {
      const never: never = e.state;
      return never;
    }
  }
}

function policyLine(policy: FailurePolicy): string {
  switch (policy) {
    case 'halt':
      return 'halted: the host stays as it is';
    case 'rollback-and-halt':
      return 'rolling back to the closure from before the dispatch';
    default: {
      const never: never = policy;
      return never;
    }
  }
}

function stateLine(
  id: string,
  from: RolloutState | null,
  to: RolloutState,
  e: ReducerState['rollouts'][string],
  fromSnapshot: boolean,
): string {
  // Without events of ours, the control plane's snapshot moved it.
  const source = fromSnapshot ? ` (from the control plane's snapshot${from === null ? '' : `; was ${from}`})` : '';
  switch (to) {
    case 'Pending':
      return `rollout ${id}: Pending${source}`;
    case 'Activating':
      return `rollout ${id}: Activating ${e.targetClosure}${source}`;
    case 'Deferred':
      return `rollout ${id}: Deferred: installed, takes effect at the next boot${source}`;
    case 'Soaking':
      return `rollout ${id}: Soaking since ${e.activationCompletedAt ?? 'an unknown time'}, soak due at ${e.soakDueAt ?? 'an unknown time'}${source}`;
    case 'Converged':
      return `rollout ${id}: Converged on ${e.currentClosure ?? e.targetClosure}${source}`;
    case 'Failed':
      return `rollout ${id}: Failed${source}`;
    case 'Reverted':
      return `rollout ${id}: Reverted to ${e.revertedToClosure ?? 'the closure from before the dispatch'}${source}`;
    default: {
      const never: never = to;
      return never;
    }
  }
}
