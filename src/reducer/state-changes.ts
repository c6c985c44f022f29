import type { AgentEvent } from '../protocol/events.wire';
import type { FailurePolicy, RolloutState } from '../protocol/rollout';
import type { Effect, ReducerState } from './reducer.types';

/** What a committed transition did to one rollout, for the log and the metrics. */
export type RolloutChange =
  | {
      readonly kind: 'state';
      readonly rolloutId: string;
      readonly from: RolloutState | null;
      readonly to: RolloutState;
      readonly line: string;
    }
  | { readonly kind: 'failed'; readonly rolloutId: string; readonly policy: FailurePolicy; readonly line: string }
  | { readonly kind: 'rollback'; readonly rolloutId: string; readonly reverted: boolean; readonly line: string };

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
    if (rollback !== undefined) {
      const reverted = rollback.exitCode === 0;
      out.push({
        kind: 'rollback',
        rolloutId: id,
        reverted,
        line: reverted
          ? `rollout ${id}: Reverted: the host runs ${rollback.revertedToClosure} again, the closure from before the dispatch`
          : `rollout ${id}: the rollback to ${rollback.revertedToClosure} failed (exit code ${rollback.exitCode}); the rollout stays Failed and the host needs an operator`,
      });
      continue;
    }
    if (prev?.state === next.state) continue;
    const from = prev?.state ?? null;
    if (failed !== undefined) {
      const line =
        `rollout ${id}: Failed: enforce probe(s) ${failed.failingProbes.join(', ')} failing for ${failed.sustainedDurationSecs} s; ` +
        policyLine(failed.policyApplied);
      out.push(
        { kind: 'state', rolloutId: id, from, to: next.state, line },
        { kind: 'failed', rolloutId: id, policy: failed.policyApplied, line },
      );
      continue;
    }
    if (activationFailed !== undefined) {
      const policy = next.policyApplied ?? 'halt';
      const line = `rollout ${id}: Failed: the activation failed (exit code ${String(activationFailed.exitCode)}); ${policyLine(policy)}`;
      out.push({ kind: 'state', rolloutId: id, from, to: next.state, line }, { kind: 'failed', rolloutId: id, policy, line });
      continue;
    }
    out.push({ kind: 'state', rolloutId: id, from, to: next.state, line: stateLine(id, from, next.state, next, mine.length === 0) });
  }
  return out;
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
