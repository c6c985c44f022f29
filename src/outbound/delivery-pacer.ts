/** The pacer's knobs; DELIVERY_PACING in outbound.constants.ts holds the agent's. */
export interface PacerSettings {
  /** The most rollouts with an event in flight at once (the delivery pool's connections). */
  readonly maxWindow: number;
  readonly initialWindow: number;
  /** Below one, the sends of the one rollout in flight are spread out: one per 1/window round trips. */
  readonly minWindow: number;
  /** Latency has risen when the smoothed round trip exceeds the base by this factor plus `riseSlackMs`. */
  readonly riseFactor: number;
  /** Keeps scheduler and GC noise on a sub-millisecond loopback round trip from reading as a rise. */
  readonly riseSlackMs: number;
  /**
   * The base round trip is the least seen, taken afresh over each period this
   * long: a CP that became slower for good is its new normal, not congestion forever.
   */
  readonly baseWindowMs: number;
}

/** What an answer did to the window. */
export type PaceChange = 'grew' | 'held' | 'shrank';

/**
 * How hard event delivery may press the CP, as TCP paces a connection with its
 * congestion window: AIMD on the number of rollouts with an event in flight
 * (each rollout's events go one at a time, in seq order, PROTOCOL §6). The
 * window grows by one per round trip while the CP's latency stays flat, and
 * halves, at most once per round trip, on an overload answer (429, 503, a
 * timeout) or a latency rise. Below one the one rollout in flight waits
 * between sends, so a struggling CP sees fewer requests still. It has no
 * clock or timer of its own: it judges the answers and times it is given.
 */
export class DeliveryPacer {
  private win: number;
  private srttMs: number | null = null;
  private baseMs: number | null = null;
  /** The least round trip of the current base period, and when that period began. */
  private periodMinMs = Number.POSITIVE_INFINITY;
  private periodStartMono: number | null = null;
  private lastSampleMono: number | null = null;
  /** One halving per round trip: answers already under way when it halved say nothing new. */
  private noShrinkBeforeMono = Number.NEGATIVE_INFINITY;

  constructor(private readonly settings: PacerSettings) {
    this.win = Math.min(Math.max(settings.initialWindow, settings.minWindow), settings.maxWindow);
  }

  get window(): number {
    return this.win;
  }

  /** The smoothed round trip; null before the first answer. */
  get smoothedRttMs(): number | null {
    return this.srttMs;
  }

  /** Rollouts that may have an event in flight at once. */
  lanes(): number {
    return Math.max(1, Math.floor(this.win));
  }

  /** How long to wait before the next send: none at a window of one or more. */
  gapMs(): number {
    if (this.win >= 1 || this.srttMs === null) return 0;
    return this.srttMs * (1 / this.win - 1);
  }

  /**
   * The CP answered (accepted or judged the event) after `rttMs`; null when
   * that time is no latency sample (the request opened its connection, so
   * it holds the handshakes too).
   * `windowLimited`: every lane was busy when it was sent. Only then did the
   * window hold delivery back, and only then does a flat latency earn a larger one.
   */
  answered(rttMs: number | null, nowMono: number, windowLimited: boolean): PaceChange {
    if (rttMs !== null) {
      const rtt = Math.max(0, rttMs);
      // After a quiet spell longer than a base period, what was measured before says nothing about the CP now.
      if (this.lastSampleMono !== null && nowMono - this.lastSampleMono >= this.settings.baseWindowMs) this.forgetLatency();
      this.lastSampleMono = nowMono;
      this.srttMs = this.srttMs === null ? rtt : this.srttMs + (rtt - this.srttMs) / 8;
      this.sampleBase(rtt, nowMono);
    }
    if (this.risen()) return this.shrink(nowMono) ? 'shrank' : 'held';
    if (!windowLimited || this.win >= this.settings.maxWindow) return 'held';
    // One more lane per round trip: each of `win` answers adds 1/win. Below one, a quarter per answer.
    this.win = this.win >= 1 ? Math.min(this.settings.maxWindow, this.win + 1 / this.win) : Math.min(1, this.win * 1.25);
    return 'grew';
  }

  /** 429, 503 or a timeout: the CP is struggling. */
  overloaded(nowMono: number): PaceChange {
    return this.shrink(nowMono) ? 'shrank' : 'held';
  }

  private risen(): boolean {
    if (this.srttMs === null || this.baseMs === null) return false;
    return this.srttMs > this.baseMs * this.settings.riseFactor + this.settings.riseSlackMs;
  }

  private shrink(nowMono: number): boolean {
    if (nowMono < this.noShrinkBeforeMono || this.win <= this.settings.minWindow) return false;
    this.win = Math.max(this.settings.minWindow, this.win / 2);
    this.noShrinkBeforeMono = nowMono + (this.srttMs ?? 0);
    return true;
  }

  private forgetLatency(): void {
    this.srttMs = null;
    this.baseMs = null;
    this.periodStartMono = null;
    this.periodMinMs = Number.POSITIVE_INFINITY;
  }

  private sampleBase(rtt: number, nowMono: number): void {
    if (this.periodStartMono === null || nowMono - this.periodStartMono >= this.settings.baseWindowMs) {
      // A new period: the last one's least round trip is the base from now on.
      if (this.periodStartMono !== null && Number.isFinite(this.periodMinMs)) this.baseMs = this.periodMinMs;
      this.periodStartMono = nowMono;
      this.periodMinMs = Number.POSITIVE_INFINITY;
    }
    this.periodMinMs = Math.min(this.periodMinMs, rtt);
    this.baseMs = this.baseMs === null ? rtt : Math.min(this.baseMs, rtt);
  }
}
