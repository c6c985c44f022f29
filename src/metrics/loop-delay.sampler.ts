import { type Histogram, monitorEventLoopDelay } from 'node:perf_hooks';
import { LOOP_DELAY_RESOLUTION_MS } from './metrics.constants';

/** What the process metrics show of the loop's delay: how late the sampler's timer fired, in seconds. */
export interface LoopLag {
  count: number;
  min: number;
  max: number;
  mean: number;
  stddev: number;
  p50: number;
  p90: number;
  p99: number;
}

/** Per reading, in ms: the sampler's timer fires every LOOP_DELAY_RESOLUTION_MS, so a value is that plus any delay. */
interface Sums {
  count: number;
  minMs: number;
  maxMs: number;
  sumMs: number;
  sumSqMs: number;
  /** The largest of each reading's percentile: the union's own lies between their smallest and their largest. */
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
}

/** How long looks are kept: the longest window a reader may ask about. */
const KEEP_LOOKS_MS = 60_000;

const NO_SUMS: Sums = { count: 0, minMs: Infinity, maxMs: 0, sumMs: 0, sumSqMs: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0 };

/**
 * The agent's one event-loop delay monitor, which liveness and the process
 * metrics both read. Node's monitor is a libuv timer: no JavaScript runs when
 * it fires, but every firing wakes an idle process, so it samples once a
 * second rather than at Node's and prom-client's 10 ms (100 wake-ups a second
 * for a threshold of seconds). What it records is the time between two
 * firings: one resolution, plus however long the loop kept it waiting.
 *
 * Nothing runs on a schedule to read it: each reader's look moves what the
 * monitor recorded since the previous look (by either reader) into a short
 * history of maxima for liveness and into running sums for the next scrape.
 */
export class LoopDelaySampler {
  /** Each look's worst interval and when it was taken (monotonic ms), oldest first. */
  private readonly looks: { atMono: number; maxMs: number }[] = [];
  private sinceScrape: Sums = { ...NO_SUMS };

  /**
   * `source`: Node's monitor, enabled here and disabled with the module.
   * `monotonicMs`: real time, as the monitor measures it (not the injected
   * clock, which tests move by hand). Tests hand in a histogram they record
   * into and a clock of their own.
   */
  constructor(
    private readonly source: Histogram & { disable?(): boolean } = startMonitor(),
    private readonly monotonicMs: () => number = () => performance.now(),
    private readonly resolutionMs = LOOP_DELAY_RESOLUTION_MS,
  ) {}

  /**
   * The longest the loop went without running the monitor's timer, in ms,
   * over the last `windowMs` or since the previous look if that is longer
   * ago. A stall of D ms reads between D and D + one resolution.
   */
  worstIntervalMs(windowMs: number): number {
    this.look();
    const since = this.monotonicMs() - Math.min(windowMs, KEEP_LOOKS_MS);
    // A look holds everything since the one before it, however long ago that was.
    return Math.max(0, ...this.looks.filter((l) => l.atMono >= since).map((l) => l.maxMs));
  }

  /** Lag since the previous call (the previous scrape), or null when the monitor has not fired since. */
  takeLag(): LoopLag | null {
    this.look();
    const s = this.sinceScrape;
    this.sinceScrape = { ...NO_SUMS };
    if (s.count === 0) return null;
    const meanMs = s.sumMs / s.count;
    const lag = (ms: number): number => Math.max(0, ms - this.resolutionMs) / 1000;
    return {
      count: s.count,
      min: lag(s.minMs),
      max: lag(s.maxMs),
      mean: lag(meanMs),
      stddev: Math.sqrt(Math.max(0, s.sumSqMs / s.count - meanMs * meanMs)) / 1000,
      p50: lag(s.p50Ms),
      p90: lag(s.p90Ms),
      p99: lag(s.p99Ms),
    };
  }

  onModuleDestroy(): void {
    this.source.disable?.();
  }

  private look(): void {
    const h = this.source;
    const count = h.count;
    if (count === 0) return;
    const ms = (ns: number): number => ns / 1e6;
    const maxMs = ms(h.max);
    const meanMs = ms(h.mean);
    const stddevMs = ms(h.stddev);
    const s = this.sinceScrape;
    this.sinceScrape = {
      count: s.count + count,
      minMs: Math.min(s.minMs, ms(h.min)),
      maxMs: Math.max(s.maxMs, maxMs),
      sumMs: s.sumMs + meanMs * count,
      sumSqMs: s.sumSqMs + (stddevMs * stddevMs + meanMs * meanMs) * count,
      p50Ms: Math.max(s.p50Ms, ms(h.percentile(50))),
      p90Ms: Math.max(s.p90Ms, ms(h.percentile(90))),
      p99Ms: Math.max(s.p99Ms, ms(h.percentile(99))),
    };
    const now = this.monotonicMs();
    this.looks.push({ atMono: now, maxMs });
    while (this.looks[0].atMono < now - KEEP_LOOKS_MS) this.looks.shift();
    h.reset();
  }
}

function startMonitor(): Histogram & { disable(): boolean } {
  const monitor = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
  monitor.enable();
  return monitor;
}
