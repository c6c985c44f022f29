/** The protocol major this agent speaks (PROTOCOL §1). */
export const PROTOCOL_MAJOR = 1;

export const HEADER_PROTOCOL = 'X-Nixfleet-Protocol';
export const HEADER_REPLAY_FROM = 'X-Nixfleet-Replay-From';

export const PATH_HEARTBEAT = '/v1/agent/heartbeat';
export const PATH_EVENTS = '/v1/agent/events';
export const PATH_DISPATCH = '/v1/agent/dispatch';
/** PROTOCOL §12: `GET /v1/rollouts/{rolloutId}` (the manifest) and `…/sig` (its signature); `{rolloutId}` is one percent-encoded segment. */
export const PATH_ROLLOUTS = '/v1/rollouts/';

/** PROTOCOL §1 timeouts, in milliseconds. */
export const TIMEOUTS = {
  connectMs: 10_000,
  defaultRequestMs: 30_000,
  heartbeatMs: 10_000,
  eventMs: 10_000,
  bootRecoveryMs: 30_000,
} as const;

/** Response bodies larger than this are refused, whatever the peer declares. */
export const MAX_RESPONSE_BYTES = 1024 * 1024;

/** A rollout manifest or its signature (PROTOCOL §12): the manifest names every host of the rollout. As much is cached. */
export const MAX_ROLLOUT_ARTIFACT_BYTES = 4 * 1024 * 1024;
