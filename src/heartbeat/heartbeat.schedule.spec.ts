import type { RandomSource } from '../clock/random';
import { FIRST_BACKOFF_MS, failureDelayMs, steadyDelayMs } from './heartbeat.schedule';

const fixed = (value: number): RandomSource => ({ next: () => value });
const NO_JITTER = fixed(0.5);
const LOWEST = fixed(0);
// RandomSource returns [0, 1): the top of the range is approached, never reached.
const HIGHEST = fixed(1 - Number.EPSILON);

describe('steadyDelayMs', () => {
  it('is the interval itself without jitter', () => {
    expect(steadyDelayMs(60_000, NO_JITTER)).toBe(60_000);
  });

  it('spreads the interval by ±10 % at the extremes of the random source', () => {
    expect(steadyDelayMs(60_000, LOWEST)).toBe(54_000);
    expect(steadyDelayMs(60_000, HIGHEST)).toBeCloseTo(66_000, 3);
    expect(steadyDelayMs(60_000, HIGHEST)).toBeLessThanOrEqual(66_000);
  });
});

describe('failureDelayMs', () => {
  it('starts at 5 s, doubles, and caps at the interval: 5, 10, 20, 40, 60, 60 s at interval 60', () => {
    const delays = [1, 2, 3, 4, 5, 6].map((n) => failureDelayMs(n, 60_000, NO_JITTER));
    expect(delays).toEqual([5_000, 10_000, 20_000, 40_000, 60_000, 60_000]);
  });

  it('caps at 5 s when the interval is shorter than the first backoff', () => {
    const delays = [1, 2, 3, 10].map((n) => failureDelayMs(n, 1_000, NO_JITTER));
    expect(delays).toEqual([5_000, 5_000, 5_000, 5_000]);
  });

  it('keeps doubling past the interval up to a long interval (cap = interval)', () => {
    expect(failureDelayMs(7, 600_000, NO_JITTER)).toBe(320_000);
    expect(failureDelayMs(8, 600_000, NO_JITTER)).toBe(600_000);
  });

  it('does not overflow after very many failures', () => {
    expect(failureDelayMs(10_000, 60_000, NO_JITTER)).toBe(60_000);
  });

  it('jitters by at most ±20 % and never goes under 5 s', () => {
    for (const interval of [1_000, 5_000, 60_000, 600_000]) {
      for (let n = 1; n <= 12; n++) {
        const base = failureDelayMs(n, interval, NO_JITTER);
        for (const random of [LOWEST, HIGHEST]) {
          const d = failureDelayMs(n, interval, random);
          expect(d).toBeGreaterThanOrEqual(FIRST_BACKOFF_MS);
          expect(d).toBeGreaterThanOrEqual(base * 0.8);
          expect(d).toBeLessThanOrEqual(base * 1.2 + 1e-6);
        }
      }
    }
  });

  it('takes the low side of the jitter below the cap, floored at 5 s for the first try', () => {
    expect(failureDelayMs(1, 60_000, LOWEST)).toBe(5_000);
    expect(failureDelayMs(2, 60_000, LOWEST)).toBe(8_000);
    expect(failureDelayMs(4, 60_000, LOWEST)).toBe(32_000);
  });

  it('at the cap goes no faster than the steady cadence would (interval − 10 %)', () => {
    expect(failureDelayMs(6, 60_000, LOWEST)).toBe(54_000);
  });

  it('takes the high side of the jitter: +20 %', () => {
    expect(failureDelayMs(1, 60_000, HIGHEST)).toBeCloseTo(6_000, 3);
    expect(failureDelayMs(6, 60_000, HIGHEST)).toBeCloseTo(72_000, 3);
  });
});
