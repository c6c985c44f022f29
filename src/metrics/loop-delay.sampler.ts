import { type Histogram, monitorEventLoopDelay } from 'node:perf_hooks';
import { LOOP_DELAY_RESOLUTION_MS } from './metrics.constants';

/** What the process metrics show of the loop's delay, in seconds: how late the monitor's timer fired. */
export interface LoopLag {
  min: number;
  max: number;
  mean: number;
  stddev: number;
  p50: number;
  p90: number;
  p99: number;
}

/**
 * The agent's one event-loop delay monitor, which liveness and the process
 * metrics both read. Node's monitor is a libuv timer: no JavaScript runs when
 * it fires, but every firing wakes an idle process, so it fires once a
 * second rather than at Node's and prom-client's 10 ms (100 wake-ups a second
 * for a threshold of seconds). What it records is the time between two
 * firings: one resolution, plus however long the loop kept it waiting, so a
 * stall of D reads between D and D + one resolution.
 *
 * Nothing reads it on a schedule, and nothing resets it: a reset forgets the
 * time of the last firing, so the interval after it is never recorded, and
 * at a 1 s resolution a stall that began in that second would go unseen.
 * Readers ask about the whole record instead (how many intervals exceeded a
 * threshold; the distribution, for the metrics) and keep their own marks.
 */
export class LoopDelaySampler {
  /**
   * `source`: Node's monitor, enabled here and disabled with the module.
   * Tests hand in a histogram they record into.
   */
  constructor(
    private readonly source: Histogram & { disable?(): boolean } = startMonitor(),
    private readonly resolutionMs = LOOP_DELAY_RESOLUTION_MS,
  ) {}

  /** Intervals recorded so far. */
  get count(): number {
    return this.source.count;
  }

  /** The longest interval recorded so far, in ms (0 before the first). */
  maxIntervalMs(): number {
    return this.source.count === 0 ? 0 : this.source.max / 1e6;
  }

  /**
   * How many of the intervals recorded so far were longer than `ms`. `seen`,
   * a count this returned before, spares the search when nothing was added
   * above the threshold since (one lookup: the normal case, at every look).
   */
  countOver(ms: number, seen = 0): number {
    const h = this.source;
    const total = h.count;
    const limitNs = ms * 1e6;
    if (total === 0 || h.max <= limitNs) return 0;
    if (seen > 0 && seen < total && this.valueAtRank(total - seen) <= limitNs) return seen;
    // The smallest rank whose value is over the limit; ranks count from the smallest value.
    let lo = 1;
    let hi = total;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      if (this.valueAtRank(mid) > limitNs) hi = mid;
      else lo = mid + 1;
    }
    return total - lo + 1;
  }

  /** The record as lag (interval less one resolution), since the agent started; null before the first interval. */
  lag(): LoopLag | null {
    const h = this.source;
    if (h.count === 0) return null;
    const lag = (ns: number): number => Math.max(0, ns / 1e6 - this.resolutionMs) / 1000;
    return {
      min: lag(h.min),
      max: lag(h.max),
      mean: lag(h.mean),
      stddev: h.stddev / 1e9,
      p50: lag(h.percentile(50)),
      p90: lag(h.percentile(90)),
      p99: lag(h.percentile(99)),
    };
  }

  onModuleDestroy(): void {
    this.source.disable?.();
  }

  /** The value of the k-th smallest interval (1-based), in ns. */
  private valueAtRank(k: number): number {
    // The histogram rounds (p / 100) * count + 0.5 down to the rank it returns: aim a quarter below k.
    return this.source.percentile(((k - 0.25) / this.source.count) * 100);
  }
}

function startMonitor(): Histogram & { disable(): boolean } {
  const monitor = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
  monitor.enable();
  return monitor;
}
