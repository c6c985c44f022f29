import { Injectable } from '@nestjs/common';
import type { RolloutState } from '../protocol/rollout';
import { TRANSITIONS_KEPT } from './reducer.constants';
import { type AppliedInput, ReducerService } from './reducer.service';
import type { ReducerInputType, ReducerState, RolloutEntry } from './reducer.types';

/** One change of a rollout's state, as the reducer committed it. */
export interface RolloutTransition {
  /** null: the rollout was new to the agent. */
  readonly from: RolloutState | null;
  readonly to: RolloutState;
  /** The instant the transition ran at: the same as the times of the events it emitted. */
  readonly at: string;
  /** The input behind it: `Snapshot` is the control plane's word, `Tick` a soak verdict, the others the agent's own work. */
  readonly input: ReducerInputType;
}

/** The rollouts whose state differs between two committed states, and how; in rollout id order. */
export function transitionsBetween(
  before: ReducerState,
  after: ReducerState,
  applied: AppliedInput,
): { rolloutId: string; transition: RolloutTransition }[] {
  const out: { rolloutId: string; transition: RolloutTransition }[] = [];
  for (const id of Object.keys(after.rollouts).sort()) {
    const next = after.rollouts[id];
    const prev = Object.hasOwn(before.rollouts, id) ? before.rollouts[id] : undefined;
    if (next === undefined || prev?.state === next.state) continue;
    out.push({
      rolloutId: id,
      transition: { from: prev?.state ?? null, to: next.state, at: applied.at.toISOString(), input: applied.input.type },
    });
  }
  return out;
}

/**
 * When the rollout's own record says it entered its current state (ours or
 * the control plane's snapshot); null when the record holds no such time
 * (Deferred, or a snapshot that omits it). A rollout rebuilt from the event
 * log at start has these from its events.
 */
export function recordedSince(e: RolloutEntry): string | null {
  switch (e.state) {
    case 'Pending':
      return e.dispatchedAt;
    case 'Activating':
      return e.dispatchAckedAt ?? e.activationStartedAt ?? null;
    case 'Deferred':
      return null;
    case 'Soaking':
      return e.activationCompletedAt ?? null;
    case 'Converged':
      return e.convergedAt ?? null;
    case 'Failed':
      return e.failedAt ?? null;
    case 'Reverted':
      return e.revertedAt ?? null;
    default: {
      const never: never = e.state;
      return never;
    }
  }
}

/**
 * The last few state changes of each rollout the reducer holds, recorded
 * from what it commits (`ReducerService.watch`), so the transition function
 * stays pure and its state stays what the protocol describes. Kept in
 * memory: after a restart the lists start empty, and `since` comes from the
 * rollout's record. A rollout the reducer no longer holds is forgotten.
 */
@Injectable()
export class RolloutHistory {
  private seen: ReducerState | null = null;
  private readonly kept = new Map<string, readonly RolloutTransition[]>();

  constructor(reducer: ReducerService) {
    reducer.watch((state, applied) => this.observe(state, applied));
  }

  /** Oldest first, at most TRANSITIONS_KEPT. */
  transitions(rolloutId: string): readonly RolloutTransition[] {
    return this.kept.get(rolloutId) ?? [];
  }

  /** Since when the rollout is in its state: its record's time, else the transition this process saw; null when neither knows. */
  since(entry: RolloutEntry): string | null {
    const last = this.transitions(entry.rolloutId).at(-1);
    return recordedSince(entry) ?? (last?.to === entry.state ? last.at : null);
  }

  private observe(state: ReducerState, applied: AppliedInput | null): void {
    // The state at subscription, or one restored from the log, is where history starts, not a change.
    if (applied !== null && this.seen !== null) {
      for (const { rolloutId, transition } of transitionsBetween(this.seen, state, applied)) {
        this.kept.set(rolloutId, [...this.transitions(rolloutId), transition].slice(-TRANSITIONS_KEPT));
      }
    }
    for (const id of this.kept.keys()) if (!Object.hasOwn(state.rollouts, id)) this.kept.delete(id);
    this.seen = state;
  }
}
