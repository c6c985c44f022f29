import { jitter, type RandomSource } from '../clock/random';

/** PROTOCOL §2 (the seed): back off 5 s after a failed heartbeat. */
export const FIRST_BACKOFF_MS = 5_000;
/** Spread of the steady cadence, so a fleet restarted together does not beat in the same second. */
export const INTERVAL_JITTER = 0.1;
export const BACKOFF_JITTER = 0.2;

export function steadyDelayMs(intervalMs: number, random: RandomSource): number {
  return jitter(intervalMs, INTERVAL_JITTER, random);
}

/**
 * Delay before the next try after `consecutiveFailures` (≥ 1) failures:
 * 5 s, doubling, capped at max(interval, 5 s), ±20 %. The floors keep a
 * failing agent from calling faster than every 5 s, nor — once at the cap —
 * faster than its normal cadence would.
 */
export function failureDelayMs(consecutiveFailures: number, intervalMs: number, random: RandomSource): number {
  const capMs = Math.max(intervalMs, FIRST_BACKOFF_MS);
  const baseMs = Math.min(FIRST_BACKOFF_MS * 2 ** Math.max(0, consecutiveFailures - 1), capMs);
  const floorMs = baseMs >= capMs ? Math.max(FIRST_BACKOFF_MS, intervalMs * (1 - INTERVAL_JITTER)) : FIRST_BACKOFF_MS;
  return Math.max(jitter(baseMs, BACKOFF_JITTER, random), floorMs);
}
