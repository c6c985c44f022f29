import { CACHE_FAILURES } from './manifest-cache';
import { DISPATCH_FAILURES, VERIFY_FAILURES } from './manifest';

/**
 * Why a dispatch (or the activation a restart resumes) was not acted on: the
 * verification's reasons, the dispatch checks', the cache's, and three of
 * the agent's own. A closed set: it is the metric's `reason` label.
 */
export const REFUSAL_REASONS = [
  ...VERIFY_FAILURES,
  ...DISPATCH_FAILURES,
  ...CACHE_FAILURES,
  /** At a resume: no verified pair is cached for the rollout (it was dispatched unverified, or the file was removed). */
  'cache-missing',
  /** The CP did not serve the manifest or its signature. */
  'manifest-unavailable',
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export interface Refusal {
  reason: RefusalReason;
  detail: string;
}
