import { createHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import { FakeClock } from '../../test/support/fake-clock';
import { LoopDelaySampler } from './loop-delay.sampler';

const MS = 1e6;

/** A sampler over a histogram the test records into (what Node's monitor would have), on a fake clock. */
function rig() {
  const delays = createHistogram();
  const clock = new FakeClock();
  const sampler = new LoopDelaySampler(delays, () => clock.monotonicMs());
  const record = (...ms: number[]): void => {
    for (const v of ms) delays.record(v * MS);
  };
  return { delays, clock, sampler, record };
}

describe('LoopDelaySampler: one event-loop delay monitor, read by liveness and by the scrape', () => {
  it('gives liveness the worst interval of the window, and forgets it once the window has passed', () => {
    const { clock, sampler, record } = rig();
    record(1_000, 6_200, 1_000);
    expect(sampler.worstIntervalMs(10_000)).toBeCloseTo(6_200, -1);

    clock.advance(9_000);
    record(1_000);
    expect(sampler.worstIntervalMs(10_000)).toBeCloseTo(6_200, -1);

    clock.advance(2_000);
    record(1_000);
    expect(sampler.worstIntervalMs(10_000)).toBeCloseTo(1_000, -1);
  });

  it('counts a stall recorded long before a look as part of that look: nobody had looked since', () => {
    const { clock, sampler, record } = rig();
    expect(sampler.worstIntervalMs(10_000)).toBe(0);
    record(7_000);
    clock.advance(300_000);
    expect(sampler.worstIntervalMs(10_000)).toBeCloseTo(7_000, -1);
    clock.advance(10_001);
    expect(sampler.worstIntervalMs(10_000)).toBe(0);
  });

  it('gives the scrape everything since the previous scrape as lag, liveness having looked in between', () => {
    const { sampler, record } = rig();
    record(1_000, 1_200);
    expect(sampler.worstIntervalMs(10_000)).toBeCloseTo(1_200, -1);
    record(1_000, 3_000);

    const lag = sampler.takeLag();

    expect(lag?.count).toBe(4);
    expect(lag?.min).toBeCloseTo(0, 2);
    expect(lag?.max).toBeCloseTo(2, 2);
    // Lags 0, 0.2, 0, 2: mean and spread of all four, exactly as one histogram would give them.
    expect(lag?.mean).toBeCloseTo(0.55, 2);
    expect(lag?.stddev).toBeCloseTo(Math.sqrt((0.55 ** 2 + 0.35 ** 2 + 0.55 ** 2 + 1.45 ** 2) / 4), 2);
    // Percentiles of the parts: the larger, which bounds the whole's from above.
    expect(lag?.p99).toBeCloseTo(2, 2);
    expect(lag?.p50).toBeCloseTo(0, 2);
    // Liveness still sees the stall after the scrape took it.
    expect(sampler.worstIntervalMs(10_000)).toBeCloseTo(3_000, -1);
    expect(sampler.takeLag()).toBeNull();
  });

  it("reads Node's own monitor: a blocked loop shows as a long interval", async () => {
    const monitor = monitorEventLoopDelay({ resolution: 20 });
    monitor.enable();
    const sampler = new LoopDelaySampler(monitor, () => performance.now(), 20);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const blockedUntil = performance.now() + 300;
    while (performance.now() < blockedUntil) {
      // Busy: the monitor's timer cannot fire until this ends.
    }
    await new Promise((resolve) => setTimeout(resolve, 50));

    expect(sampler.worstIntervalMs(10_000)).toBeGreaterThanOrEqual(300);
    expect(sampler.takeLag()?.max).toBeGreaterThanOrEqual(0.28);
    sampler.onModuleDestroy();
    expect(monitor.disable()).toBe(false);
  });
});
