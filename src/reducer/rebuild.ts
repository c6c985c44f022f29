import type { AgentEvent } from '../protocol/events.wire';
import type { LogMeta, LogRecord, ProbeEntry, ReducerState, RolloutEntry } from './reducer.types';
import { channelOf, mergeTopology, probeAfterResult, staleProbes } from './transition';

/**
 * Restores reducer state from the durable event log after a restart. Each
 * rollout's state follows from its own events; fields the events do not carry
 * (target closure, soak due time, channel…) come from the `meta` stored beside
 * each record, the latest one winning. Records of different rollouts may
 * interleave in any order; a repeated seq is ignored (first one wins).
 */
export function rebuildFromLog(records: readonly LogRecord[]): ReducerState {
  const byRollout = new Map<string, LogRecord[]>();
  for (const r of records) {
    const list = byRollout.get(r.rolloutId);
    if (list) list.push(r);
    else byRollout.set(r.rolloutId, [r]);
  }
  const rollouts: Record<string, RolloutEntry> = {};
  for (const [rolloutId, list] of byRollout) {
    rollouts[rolloutId] = foldRollout(rolloutId, list);
  }
  return { rollouts };
}

function foldRollout(rolloutId: string, records: readonly LogRecord[]): RolloutEntry {
  // The log writes each rollout in seq order; sorting anyway costs little and
  // makes a misordered log fold the same way. The sort is stable: the first
  // record of a repeated seq stays first, and the others are skipped.
  const ordered = [...records].sort((a, b) => a.event.seq - b.event.seq);
  let entry: RolloutEntry = {
    rolloutId,
    channel: channelOf(rolloutId),
    state: 'Pending',
    targetClosure: '',
    // Only a fallback for a log without meta: the dispatch was no later than
    // the first event (a group is never empty).
    dispatchedAt: eventTime(ordered[0].event),
    lastEventSeq: 0,
    probes: {},
  };
  const seen = new Set<number>();
  for (const r of ordered) {
    if (seen.has(r.event.seq)) continue;
    seen.add(r.event.seq);
    entry = withMeta(applyEvent(entry, r.event), r.meta);
    entry = { ...entry, lastEventSeq: Math.max(entry.lastEventSeq, r.event.seq) };
  }
  // After a restart every probe result is from before it: each judges again once a new run confirms it.
  return { ...entry, probes: staleProbes(entry.probes) };
}

function withMeta(e: RolloutEntry, meta: LogMeta | undefined): RolloutEntry {
  if (meta === undefined) return e;
  return {
    ...e,
    channel: meta.channel ?? e.channel,
    targetClosure: meta.targetClosure ?? e.targetClosure,
    dispatchedAt: meta.dispatchedAt ?? e.dispatchedAt,
    soakDueAt: meta.soakDueAt ?? e.soakDueAt,
    currentClosureAtDispatch: meta.currentClosureAtDispatch ?? e.currentClosureAtDispatch,
    policyApplied: meta.policyApplied ?? e.policyApplied,
  };
}

/** What one logged event says about its rollout: the same facts `transition` recorded when it emitted it. */
export function applyEvent(e: RolloutEntry, ev: AgentEvent): RolloutEntry {
  switch (ev.kind) {
    case 'DispatchAck':
      return {
        ...e,
        state: 'Activating',
        dispatchAckedAt: ev.receivedAt,
        currentClosureAtDispatch: ev.currentClosureAtDispatch ?? e.currentClosureAtDispatch,
      };
    case 'ActivationStarted':
      return { ...e, state: 'Activating', activationStartedAt: ev.startedAt };
    case 'ActivationCompleted':
      return {
        ...e,
        state: 'Soaking',
        activationCompletedAt: ev.completedAt,
        currentClosure: ev.observedCurrentClosure ?? e.currentClosure,
      };
    case 'ActivationDeferred':
      return { ...e, state: 'Deferred' };
    case 'ActivationFailed':
      return { ...e, state: 'Failed', failedAt: ev.failedAt };
    case 'ProbeTopologyDeclared':
      return { ...e, state: 'Soaking', probes: mergeTopology(e.probes, ev.probes), probesDeclaredAt: ev.declaredAt };
    case 'ProbeObservedFirst':
      return withProbe(e, ev.probeName, ev.mode, (p) => ({ ...p, firstObservedAt: ev.observedAt }));
    case 'ProbeResult':
      return withProbe(e, ev.probeName, ev.mode, (p) => probeAfterResult(p, ev.status, ev.observedAt, ev.failureReason));
    case 'ProbeFailureFirst':
      return withProbe(e, ev.probeName, ev.mode, (p) => ({ ...p, firstFailedAt: ev.firstFailedAt }));
    case 'Failed':
      return { ...e, state: 'Failed', failedAt: ev.failedAt, policyApplied: ev.policyApplied };
    case 'RollbackComplete': {
      const rollback = { toClosure: ev.revertedToClosure, exitCode: ev.exitCode, completedAt: ev.completedAt };
      // A failed rollback leaves the rollout Failed, as in `transition`.
      if (ev.exitCode !== 0) return { ...e, state: 'Failed', rollback };
      return { ...e, state: 'Reverted', revertedAt: ev.completedAt, revertedToClosure: ev.revertedToClosure, rollback };
    }
    case 'Converged':
      return { ...e, state: 'Converged', convergedAt: ev.convergedAt, currentClosure: ev.currentClosure };
    default: {
      const unreachable: never = ev;
      return unreachable;
    }
  }
}

/**
 * Probe events only happen while soaking. A probe missing from the topology
 * (a lost record) is kept with what its events say.
 */
function withProbe(e: RolloutEntry, probeName: string, mode: ProbeEntry['mode'], update: (p: ProbeEntry) => ProbeEntry): RolloutEntry {
  const current = (Object.hasOwn(e.probes, probeName) ? e.probes[probeName] : undefined) ?? { kind: 'unknown', mode };
  return { ...e, state: 'Soaking', probes: { ...e.probes, [probeName]: update(current) } };
}

/** The time an event reports, whatever its kind calls it. */
export function eventTime(ev: AgentEvent): string {
  switch (ev.kind) {
    case 'DispatchAck':
      return ev.receivedAt;
    case 'ActivationStarted':
      return ev.startedAt;
    case 'ActivationCompleted':
      return ev.completedAt;
    case 'ActivationFailed':
      return ev.failedAt;
    case 'ActivationDeferred':
      return ev.deferredAt;
    case 'ProbeTopologyDeclared':
      return ev.declaredAt;
    case 'ProbeObservedFirst':
      return ev.observedAt;
    case 'ProbeResult':
      return ev.observedAt;
    case 'ProbeFailureFirst':
      return ev.firstFailedAt;
    case 'Failed':
      return ev.failedAt;
    case 'RollbackComplete':
      return ev.completedAt;
    case 'Converged':
      return ev.convergedAt;
    default: {
      const unreachable: never = ev;
      return unreachable;
    }
  }
}
