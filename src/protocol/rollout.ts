export const ROLLOUT_STATES = ['Pending', 'Activating', 'Deferred', 'Soaking', 'Converged', 'Failed', 'Reverted'] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];

/** States after which the CP expects no further events for the rollout. */
export const TERMINAL_STATES: ReadonlySet<RolloutState> = new Set<RolloutState>(['Converged', 'Failed', 'Reverted']);

/** `<channel>@<channelRef>`, e.g. `stable@a1b2c3d4` (PROTOCOL §4). */
export const ROLLOUT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9._-]+$/;

/** A store path basename: `<hash>-<name>`, never a path (PROTOCOL §2, §8). */
export const CLOSURE_PATTERN = /^[0-9a-z]{32}-[A-Za-z0-9+._?=-]+$/;

export const PROBE_MODES = ['enforce', 'observe', 'disabled'] as const;
export type ProbeMode = (typeof PROBE_MODES)[number];

export const FAILURE_POLICIES = ['halt', 'rollback-and-halt'] as const;
export type FailurePolicy = (typeof FAILURE_POLICIES)[number];

/** Seqs stay far below Number.MAX_SAFE_INTEGER, so every seq a rollout will ever need is exact. */
export const MAX_EVENT_SEQ = 2 ** 50;
