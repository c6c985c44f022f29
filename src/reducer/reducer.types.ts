import type { AgentEvent } from '../protocol/events.wire';
import type { FailurePolicy, ProbeMode, RolloutState } from '../protocol/rollout';
import type { HostRolloutSnapshot } from '../protocol/snapshot.wire';

// All times are RFC 3339 UTC strings (`Date#toISOString()`): they go to the
// wire and to /status as they are. Compare them as instants, never as text.

export type ProbeStatus = 'pass' | 'fail';

/** Local-only: what the agent knows of one probe of a rollout. The wire never carries it. */
export interface ProbeEntry {
  readonly kind: string;
  readonly mode: ProbeMode;
  readonly lastStatus?: ProbeStatus;
  readonly firstObservedAt?: string;
  /** Start of the current failure streak; a pass clears it. Drives the sustained-failure timer. */
  readonly firstFailedAt?: string;
  /** When `lastStatus` took its value: the result that changed it. */
  readonly statusSince?: string;
  /** The reason of the result that turned it to `fail`; later failures change only the runner's view. */
  readonly failureReason?: string;
  /**
   * `lastStatus` is from before a reset or a restart: it judges nothing until
   * a new result confirms or replaces it. Never on the wire or in the log.
   */
  readonly stale?: true;
}

/** A rollback attempt's outcome; `exitCode` 0 is the one that made the rollout Reverted. */
export interface RollbackAttempt {
  readonly toClosure: string;
  readonly exitCode: number;
  readonly completedAt: string;
}

export interface RolloutEntry {
  // What a HostRolloutSnapshot carries (PROTOCOL §4).
  readonly rolloutId: string;
  readonly channel: string;
  readonly state: RolloutState;
  /** `''` only when rebuilt from a log that stored no meta: unknown, never converges until a snapshot says. */
  readonly targetClosure: string;
  readonly currentClosureAtDispatch?: string;
  readonly currentClosure?: string;
  readonly dispatchedAt: string;
  readonly dispatchAckedAt?: string;
  readonly activationStartedAt?: string;
  readonly activationCompletedAt?: string;
  readonly soakDueAt?: string;
  readonly lastEventSeq: number;
  // Local-only: a snapshot merge keeps these (PROTOCOL §5).
  readonly probes: Readonly<Record<string, ProbeEntry>>;
  /**
   * When the probe runners declared this rollout's topology (PROTOCOL §10).
   * Until they have, the reducer does not know which probes gate it, and a
   * soaking rollout does not converge.
   */
  readonly probesDeclaredAt?: string;
  readonly failedAt?: string;
  readonly convergedAt?: string;
  readonly revertedAt?: string;
  readonly revertedToClosure?: string;
  readonly policyApplied?: FailurePolicy;
  /** The last rollback's outcome, also when it failed (the rollout then stays Failed). */
  readonly rollback?: RollbackAttempt;
}

export interface ReducerState {
  readonly rollouts: Readonly<Record<string, RolloutEntry>>;
}

export const EMPTY_STATE: ReducerState = { rollouts: {} };

export interface DeclaredProbe {
  readonly probeName: string;
  readonly kind: string;
  readonly mode: ProbeMode;
}

export type ReducerInput =
  | {
      readonly type: 'Activate';
      readonly rolloutId: string;
      /** Defaults to the `<channel>` part of `<channel>@<ref>`. */
      readonly channel?: string;
      readonly targetClosure: string;
      readonly soakDueAt: string;
      /** The closure running when the dispatch arrived; null when `/run/current-system` was unreadable. */
      readonly currentClosure: string | null;
      readonly dispatchedAt: string;
    }
  | { readonly type: 'ActivationStarted'; readonly rolloutId: string; readonly switchMethod: string }
  | {
      readonly type: 'ActivationCompleted';
      readonly rolloutId: string;
      readonly observedCurrentClosure: string | null;
      readonly exitCode: number;
    }
  | { readonly type: 'ActivationDeferred'; readonly rolloutId: string; readonly component: string }
  | {
      readonly type: 'ActivationFailed';
      readonly rolloutId: string;
      readonly exitCode: number | null;
      readonly stderrTail: string;
    }
  | { readonly type: 'ProbeTopologyDeclared'; readonly rolloutId: string; readonly probes: readonly DeclaredProbe[] }
  | {
      readonly type: 'ProbeResult';
      readonly rolloutId: string;
      readonly probeName: string;
      readonly status: ProbeStatus;
      readonly failureReason?: string;
    }
  | {
      readonly type: 'RollbackCompleted';
      readonly rolloutId: string;
      readonly revertedToClosure: string;
      readonly exitCode: number;
    }
  /** Applies to every rollout; `currentClosure` is read afresh from `/run/current-system`. */
  | { readonly type: 'Tick'; readonly currentClosure: string | null }
  /** Already validated and hostname-checked by the caller. */
  | { readonly type: 'Snapshot'; readonly snapshot: HostRolloutSnapshot };

export type ReducerInputType = ReducerInput['type'];

/**
 * Rollout fields the wire events do not carry, written to the event log beside
 * each event so that `rebuildFromLog` can restore a rollout the CP cannot
 * (yet) describe: it is the entry as it stood after the input that emitted the event.
 */
export interface LogMeta {
  readonly channel?: string;
  readonly targetClosure?: string;
  readonly dispatchedAt?: string;
  readonly soakDueAt?: string;
  readonly currentClosureAtDispatch?: string;
  readonly policyApplied?: FailurePolicy;
}

export type Effect =
  /** Append to the durable log (with `meta`) before delivering to the CP. */
  | { readonly type: 'EmitEvent'; readonly rolloutId: string; readonly event: AgentEvent; readonly meta: LogMeta }
  | { readonly type: 'FireSwitch'; readonly rolloutId: string; readonly targetClosure: string }
  | { readonly type: 'FireRollback'; readonly rolloutId: string; readonly toClosure: string }
  | { readonly type: 'ResetProbeCache'; readonly rolloutId: string };

export type EffectType = Effect['type'];

export interface Policy {
  readonly onHealthFailure: FailurePolicy;
  readonly sustainedFailureThresholdSecs: number;
}

/**
 * The soak a Soaking rollout gets when the CP's snapshot names no `soakDueAt`
 * and the agent has none of its own (ours: the protocol leaves it open).
 * Upstream derives the due time from the wave's soak minutes; five minutes is
 * the wave soak its own fleets and tests use.
 */
export const DEFAULT_SOAK_SECS = 300;

export interface TransitionResult {
  readonly state: ReducerState;
  readonly effects: readonly Effect[];
  /** Illegal transition or unknown rollout: state unchanged, no effects; the caller warns with this line. */
  readonly rejected?: string;
  /** Not a rejection, worth a debug line: e.g. a stale snapshot that was ignored. */
  readonly note?: string;
  /** A rule the reducer applied on its own, worth one info line: e.g. a soak due time it derived. */
  readonly notice?: string;
}

/** One durable log record, as `rebuildFromLog` reads it back. */
export interface LogRecord {
  readonly rolloutId: string;
  readonly event: AgentEvent;
  /** Absent in records written without it; the rollout then rebuilds with what the events carry. */
  readonly meta?: LogMeta;
}
