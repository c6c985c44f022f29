import type { Policy, ReducerInput, ReducerState, RolloutEntry } from '../../src/reducer/reducer.types';

/** Fixed instants for the pure reducer's specs: `at(secs)` is `secs` after T0. */
export const T0 = Date.parse('2026-05-01T12:00:00.000Z');
export const at = (secs: number): Date => new Date(T0 + secs * 1000);
export const iso = (secs: number): string => at(secs).toISOString();

export const ROLLOUT = 'stable@a1b2c3d4';
export const OTHER = 'canary@e5f6a7b8';
export const TARGET = `${'a'.repeat(32)}-nixos-system-web-01-26.05`;
export const PREVIOUS = `${'b'.repeat(32)}-nixos-system-web-01-26.04`;
export const HALT: Policy = { onHealthFailure: 'halt', sustainedFailureThresholdSecs: 120 };
export const ROLLBACK: Policy = { onHealthFailure: 'rollback-and-halt', sustainedFailureThresholdSecs: 120 };

/** The rollout's entry, or a clear failure when it is missing. */
export function entry(state: ReducerState, rolloutId = ROLLOUT): RolloutEntry {
  const e = state.rollouts[rolloutId];
  if (e === undefined) throw new Error(`no entry for ${rolloutId}`);
  return e;
}

/** The runners declaring `ROLLOUT`'s probes, each an `http` probe in the mode given. */
export const declare = (...probes: [string, 'enforce' | 'observe' | 'disabled'][]): ReducerInput => ({
  type: 'ProbeTopologyDeclared',
  rolloutId: ROLLOUT,
  probes: probes.map(([probeName, mode]) => ({ probeName, kind: 'http', mode })),
});

/** One result of a probe of `ROLLOUT`. */
export const result = (probeName: string, status: 'pass' | 'fail', failureReason?: string): ReducerInput => ({
  type: 'ProbeResult',
  rolloutId: ROLLOUT,
  probeName,
  status,
  ...(failureReason !== undefined ? { failureReason } : {}),
});
