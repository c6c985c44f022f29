import { createHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import { LoopDelaySampler } from './loop-delay.sampler';

const MS = 1e6;

/** A sampler over a histogram the test records into (what Node's monitor would have, in ns). */
function rig() {
  const delays = createHistogram();
  const sampler = new LoopDelaySampler(delays);
  const record = (...ms: number[]): void => {
    for (const v of ms) delays.record(v * MS);
  };
  return { sampler, record };
}

describe('LoopDelaySampler: one event-loop delay monitor, never reset, read by liveness and by the scrape', () => {
  it('counts the intervals over a threshold in the whole record, and gives the longest', () => {
    const { sampler, record } = rig();
    expect(sampler.countOver(5_000)).toBe(0);
    expect(sampler.maxIntervalMs()).toBe(0);

    record(1_000, 1_000, 6_200, 1_000, 1_001);
    expect(sampler.countOver(5_000)).toBe(1);
    expect(sampler.countOver(999)).toBe(5);
    expect(sampler.countOver(1_000.5)).toBe(2);
    expect(sampler.maxIntervalMs()).toBeCloseTo(6_200, -1);

    // A shorter stall after a longer one still counts.
    record(5_500, 1_000);
    expect(sampler.countOver(5_000)).toBe(2);
    expect(sampler.maxIntervalMs()).toBeCloseTo(6_200, -1);
  });

  it('answers from what a reader saw before when nothing new is over the threshold, and searches again when something is', () => {
    const { sampler, record } = rig();
    record(...Array.from({ length: 500 }, () => 1_000), 7_000);
    const seen = sampler.countOver(5_000);
    expect(seen).toBe(1);
    record(...Array.from({ length: 500 }, () => 1_000));
    expect(sampler.countOver(5_000, seen)).toBe(1);
    record(5_100, 9_000);
    expect(sampler.countOver(5_000, seen)).toBe(3);
  });

  it('shows the record as lag, how late the monitor fired, for the metrics', () => {
    const { sampler, record } = rig();
    expect(sampler.lag()).toBeNull();
    record(1_000, 1_000, 1_000, 1_400);

    const lag = sampler.lag();

    expect(lag?.min).toBeCloseTo(0, 2);
    expect(lag?.max).toBeCloseTo(0.4, 2);
    expect(lag?.mean).toBeCloseTo(0.1, 2);
    expect(lag?.stddev).toBeCloseTo(Math.sqrt(0.03), 2);
    expect(lag?.p50).toBeCloseTo(0, 2);
    expect(lag?.p99).toBeCloseTo(0.4, 2);
  });

  it("reads Node's own monitor: a blocked loop shows as a long interval", async () => {
    const monitor = monitorEventLoopDelay({ resolution: 20 });
    monitor.enable();
    const sampler = new LoopDelaySampler(monitor, 20);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const blockedUntil = performance.now() + 300;
    while (performance.now() < blockedUntil) {
      // Busy: the monitor's timer cannot fire until this ends.
    }
    await new Promise((resolve) => setTimeout(resolve, 50));

    expect(sampler.countOver(290)).toBe(1);
    expect(sampler.maxIntervalMs()).toBeGreaterThanOrEqual(300);
    expect(sampler.lag()?.max).toBeGreaterThanOrEqual(0.28);
    sampler.onModuleDestroy();
    expect(monitor.disable()).toBe(false);
  });
});
