import { jitter, type RandomSource } from '../clock/random';
import { BACKOFF_JITTER, RETRY_AFTER_CAP_MS } from './jobs.constants';

/**
 * The one backoff of the agent: capped exponential, ±20 %. Every job that
 * retries (heartbeat, delivery, dispatch poll, held inputs) uses it, with
 * its own steps.
 */
export interface BackoffPolicy {
  /** The delay after the first failure; never gone under, whatever the jitter draws. */
  readonly firstMs: number;
  /** Doubling stops here. */
  readonly capMs: number;
  /**
   * Once at the cap, never sooner than this: a job with a cadence, failing
   * for good, goes no faster than its steady beat would.
   */
  readonly atCapNoSoonerThanMs?: number;
  /** A Retry-After beyond this is honoured only up to it (default 10 min). */
  readonly retryAfterCapMs?: number;
}

/** Delay before the next try after `consecutiveFailures` (≥ 1) failures in a row. */
export function backoffDelayMs(policy: BackoffPolicy, consecutiveFailures: number, random: RandomSource): number {
  const capMs = Math.max(policy.capMs, policy.firstMs);
  // Bounded exponent: 2 ** 10_000 is Infinity, and Infinity × 0 jitter would be NaN.
  const steps = Math.min(Math.max(0, consecutiveFailures - 1), 52);
  const baseMs = Math.min(policy.firstMs * 2 ** steps, capMs);
  const floorMs = baseMs >= capMs ? Math.max(policy.firstMs, policy.atCapNoSoonerThanMs ?? 0) : policy.firstMs;
  return Math.max(jitter(baseMs, BACKOFF_JITTER, random), floorMs);
}

/**
 * The backoff, or the peer's Retry-After when that is longer (PROTOCOL §1:
 * wait at least that long), capped: a CP may ask for a pause, not for
 * silence, and a typo of a few zeros must not mute a host for a day.
 */
export function retryDelayMs(
  policy: BackoffPolicy,
  consecutiveFailures: number,
  retryAfterSecs: number | null,
  random: RandomSource,
): number {
  const backoff = backoffDelayMs(policy, consecutiveFailures, random);
  if (retryAfterSecs === null) return backoff;
  return Math.max(backoff, Math.min(retryAfterSecs * 1000, policy.retryAfterCapMs ?? RETRY_AFTER_CAP_MS));
}
