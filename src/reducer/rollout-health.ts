import { formatDuration } from '../clock/duration';
import type { FailurePolicy, ProbeMode, RolloutState } from '../protocol/rollout';
import type { Policy, ProbeStatus, RollbackAttempt, RolloutEntry } from './reducer.types';

/** One probe of a rollout as the reducer judges it: what `/status` and `status` show. */
export interface ProbeJudgement {
  name: string;
  kind: string;
  mode: ProbeMode;
  /** null until the probe reported. */
  lastResult: ProbeStatus | null;
  /** When `lastResult` took its value. */
  since: string | null;
  /** The current failure streak's length; null while it passes. */
  failingForSecs: number | null;
  failureReason: string | null;
  /** The last result is from before a reset or a restart: it judges nothing until a new run confirms it. */
  stale: boolean;
}

/** A rollout's health: its probes, its soak, and why it has not converged yet. */
export interface RolloutHealth {
  rolloutId: string;
  state: RolloutState;
  soakDueAt: string | null;
  /** 0 once the soak is over; null when no due time is known. */
  soakRemainingSecs: number | null;
  /** The probe runners declared the topology: until then the probes are not known. */
  probesDeclared: boolean;
  probes: ProbeJudgement[];
  /** What holds a Soaking rollout back, one phrase each ("waiting for probe db-ping", "soak ends in 4 min"); empty otherwise. */
  waitingFor: string[];
  failedAt: string | null;
  policyApplied: FailurePolicy | null;
  rollback: RollbackAttempt | null;
}

/**
 * The reducer's judgement of one rollout, spelled out. It reads the same
 * entry and applies the same rules as the advance tick in `transition`
 * (soak due, every enforce probe passing, host on the target; failure past
 * the threshold), so what it says is what the next tick will do.
 */
export function rolloutHealth(e: RolloutEntry, currentClosure: string | null, now: Date, policy: Policy): RolloutHealth {
  const probes = Object.entries(e.probes)
    .map(([name, p]) => ({
      name,
      kind: p.kind,
      mode: p.mode,
      lastResult: p.lastStatus ?? null,
      since: p.statusSince ?? null,
      failingForSecs: p.lastStatus === 'fail' && p.firstFailedAt !== undefined ? secsBetween(p.firstFailedAt, now) : null,
      failureReason: p.lastStatus === 'fail' ? (p.failureReason ?? null) : null,
      stale: p.stale === true,
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
  const soakRemainingSecs = e.soakDueAt === undefined ? null : Math.max(0, Math.ceil((Date.parse(e.soakDueAt) - now.getTime()) / 1000));
  return {
    rolloutId: e.rolloutId,
    state: e.state,
    soakDueAt: e.soakDueAt ?? null,
    soakRemainingSecs,
    probesDeclared: e.probesDeclaredAt !== undefined,
    probes,
    waitingFor: e.state === 'Soaking' ? blockers(e, probes, soakRemainingSecs, currentClosure, policy) : [],
    failedAt: e.failedAt ?? null,
    policyApplied: e.policyApplied ?? null,
    rollback: e.rollback ?? null,
  };
}

function blockers(
  e: RolloutEntry,
  probes: readonly ProbeJudgement[],
  soakRemainingSecs: number | null,
  currentClosure: string | null,
  policy: Policy,
): string[] {
  const out: string[] = [];
  if (e.probesDeclaredAt === undefined) {
    out.push('waiting for the probe runners to declare the health checks');
  }
  const onTarget = e.targetClosure !== '' && currentClosure === e.targetClosure;
  for (const p of probes) {
    if (p.mode !== 'enforce') continue;
    if (p.lastResult === null) out.push(`waiting for probe ${p.name} (no result yet)`);
    else if (p.stale)
      out.push(`waiting for a new result of probe ${p.name} (its last, ${p.lastResult}, is from before a restart or reset)`);
    else if (p.lastResult === 'fail') {
      const left = policy.sustainedFailureThresholdSecs - (p.failingForSecs ?? 0);
      const verdict = !onTarget
        ? 'the rollout is judged only while the host runs its target'
        : left > 0
          ? `the rollout fails if it still fails in ${formatDuration(left)}`
          : 'the rollout fails at the next tick';
      out.push(`probe ${p.name} failing for ${formatDuration(p.failingForSecs ?? 0)} (${verdict})`);
    }
  }
  if (soakRemainingSecs === null) out.push('no soak due time known');
  else if (soakRemainingSecs > 0) out.push(`soak ends in ${formatDuration(soakRemainingSecs)}`);
  if (e.targetClosure === '') out.push('target closure not known yet');
  else if (currentClosure !== e.targetClosure) out.push(`host runs ${currentClosure ?? 'an unreadable current system'}, not the target`);
  return out;
}

function secsBetween(iso: string, now: Date): number {
  return Math.max(0, Math.floor((now.getTime() - Date.parse(iso)) / 1000));
}
