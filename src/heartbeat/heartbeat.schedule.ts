import { jitter, type RandomSource } from '../clock/random';
import { type BackoffPolicy, backoffDelayMs } from '../jobs/backoff';

/** PROTOCOL §2 (the seed): back off 5 s after a failed heartbeat. */
export const FIRST_BACKOFF_MS = 5_000;
/** Spread of the steady cadence, so a fleet restarted together does not beat in the same second. */
export const INTERVAL_JITTER = 0.1;

export function steadyDelayMs(intervalMs: number, random: RandomSource): number {
  return jitter(intervalMs, INTERVAL_JITTER, random);
}

/**
 * The heartbeat's steps of the shared backoff: 5 s, doubling, capped at
 * max(interval, 5 s), ±20 %. The floors keep a failing agent from calling
 * faster than every 5 s, nor — once at the cap — faster than its normal
 * cadence would.
 */
export function heartbeatBackoff(intervalMs: number): BackoffPolicy {
  return {
    firstMs: FIRST_BACKOFF_MS,
    capMs: Math.max(intervalMs, FIRST_BACKOFF_MS),
    atCapNoSoonerThanMs: intervalMs * (1 - INTERVAL_JITTER),
  };
}

/** Delay before the next try after `consecutiveFailures` (≥ 1) failures. */
export function failureDelayMs(consecutiveFailures: number, intervalMs: number, random: RandomSource): number {
  return backoffDelayMs(heartbeatBackoff(intervalMs), consecutiveFailures, random);
}
