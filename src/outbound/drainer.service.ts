import { setImmediate as yieldToLoop } from 'node:timers/promises';
import {
  type BeforeApplicationShutdown,
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { type Clock, CLOCK } from '../clock/clock';
import { jitter, RANDOM, type RandomSource } from '../clock/random';
import { type CpFailure, describeFailure } from '../comms/cp-failure';
import { ControlPlaneClient } from '../comms/control-plane.client';
import { BootGate } from '../lifecycle/boot-gate';
import { MetricsService } from '../metrics/metrics.service';
import { EventLogService } from './event-log.service';
import {
  DELIVERY_BACKOFF_CAP_MS,
  DELIVERY_BACKOFF_FIRST_MS,
  DELIVERY_PAUSED_CAP_MS,
  DRAIN_SWEEP_MS,
  DRAIN_SWEEP_NAME,
  REPLAY_MAX_PER_SEC,
} from './outbound.constants';

export interface ReplayStatus {
  running: boolean;
  rolloutId: string | null;
  fromSeq: number | null;
  resent: number;
  /** Seqs the CP asked for that retention had already dropped. */
  missing: number[];
}

interface ReplayRun {
  rolloutId: string;
  fromSeq: number;
  /** Seqs still to resend. */
  remaining: Set<number>;
  resent: number;
  missing: number[];
}

/** The drainer's own trouble, for the delivery component of /status. */
export interface DeliveryStatus {
  started: boolean;
  consecutiveFailures: number;
  lastError: string | null;
  /** First failed POST of the current streak; null while delivery works. */
  failingSince: string | null;
  pausedReason: string | null;
}

type Verdict = 'delivered' | 'refused' | 'retry' | 'pause' | 'stop';

/**
 * Delivers logged events to the CP, one rollout's in seq order, with the
 * status handling of PROTOCOL §6. Replays ride the same queue, so a resent
 * event can never overtake or double a pending one. It runs beside the
 * heartbeat, never in its way: its own loop, its own sockets.
 */
@Injectable()
export class DrainerService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(DrainerService.name);
  /** Per rollout, the seqs still to send (pending ∪ replay), ascending. Map order: oldest rollout first. */
  private readonly queues = new Map<string, number[]>();
  private readonly replays = new Map<string, ReplayRun>();
  private lastReplay: ReplayRun | null = null;
  private loop: Promise<void> | null = null;
  private again = false;
  private started = false;
  private stopped = false;
  private readonly abort = new AbortController();
  private failures = 0;
  private retryAtMono: number | null = null;
  private wakeTimer: NodeJS.Timeout | null = null;
  private pausedReason: string | null = null;
  private lastError: string | null = null;
  private failingSince: Date | null = null;
  private lastReplaySendMono = 0;

  constructor(
    private readonly log: EventLogService,
    private readonly client: ControlPlaneClient,
    private readonly bootGate: BootGate,
    private readonly scheduler: SchedulerRegistry,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(RANDOM) private readonly random: RandomSource,
    private readonly metrics: MetricsService,
  ) {}

  onApplicationBootstrap(): void {
    for (const event of this.log.pending()) this.enqueue(event.rolloutId, [event.seq]);
    this.bootGate.whenOpen().then(
      () => this.start(),
      (err: unknown) => this.logger.error(`event delivery not started: ${String(err)}`),
    );
  }

  /** Starts delivery (after the boot handshake, like every worker). */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.scheduler.addInterval(DRAIN_SWEEP_NAME, setInterval(() => this.kick(), DRAIN_SWEEP_MS));
    this.kick();
  }

  /** New events are durable: send them. */
  eventsAppended(items: readonly { rolloutId: string; seq: number }[]): void {
    for (const item of items) this.enqueue(item.rolloutId, [item.seq]);
    this.kick();
  }

  /**
   * Queues a replay of `seqs` (all > fromSeq) for a rollout. A second signal
   * for a rollout whose replay is still running only adds what the first did
   * not cover.
   */
  replay(rolloutId: string, fromSeq: number, seqs: number[], missing: number[]): void {
    const running = this.replays.get(rolloutId);
    if (running && fromSeq >= running.fromSeq) {
      this.logger.log(`replay of ${rolloutId} from seq ${fromSeq} is already covered by the running one (from ${running.fromSeq})`);
      return;
    }
    const covered = running ? running.fromSeq : Number.POSITIVE_INFINITY;
    const fresh = seqs.filter((s) => s <= covered);
    const run: ReplayRun = running ?? { rolloutId, fromSeq, remaining: new Set(), resent: 0, missing: [] };
    run.fromSeq = fromSeq;
    for (const s of fresh) run.remaining.add(s);
    run.missing = [...new Set([...run.missing, ...missing])].sort((a, b) => a - b);
    this.lastReplay = run;
    if (run.remaining.size === 0) {
      // Nothing left to resend (the CP holds it all, or retention dropped it): a
      // run kept open here would never end and would swallow the next signal.
      this.logger.log(`replay of ${rolloutId} from seq ${fromSeq} done: nothing to resend`);
      return;
    }
    this.replays.set(rolloutId, run);
    this.enqueue(rolloutId, fresh);
    this.kick();
  }

  replayStatus(): ReplayStatus {
    const r = this.lastReplay;
    return {
      running: r !== null && this.replays.has(r.rolloutId),
      rolloutId: r?.rolloutId ?? null,
      fromSeq: r?.fromSeq ?? null,
      resent: r?.resent ?? 0,
      missing: r?.missing ?? [],
    };
  }

  deliveryPausedReason(): string | null {
    return this.pausedReason;
  }

  deliveryStatus(): DeliveryStatus {
    return {
      started: this.started && !this.stopped,
      consecutiveFailures: this.failures,
      lastError: this.lastError,
      failingSince: this.failingSince?.toISOString() ?? null,
      pausedReason: this.pausedReason,
    };
  }

  /** Resolves when the loop is idle (nothing sendable now). */
  async idle(): Promise<void> {
    while (this.loop) await this.loop;
  }

  kick(): void {
    if (!this.started || this.stopped) return;
    if (this.loop) {
      this.again = true;
      return;
    }
    this.loop = this.run()
      .catch((err: unknown) => this.logger.error(`event delivery loop failed: ${(err as Error).stack ?? String(err)}; it runs again on the next kick`))
      .finally(() => {
        this.loop = null;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.stopped = true;
    if (this.scheduler.doesExist('interval', DRAIN_SWEEP_NAME)) this.scheduler.deleteInterval(DRAIN_SWEEP_NAME);
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    // Events are durable already: an interrupted POST is simply sent again after the restart.
    this.abort.abort();
    await this.idle();
  }

  private enqueue(rolloutId: string, seqs: readonly number[]): void {
    if (seqs.length === 0) return;
    const queue = this.queues.get(rolloutId) ?? [];
    const last = queue[queue.length - 1];
    const ascending = seqs.every((s, i) => (i === 0 ? last === undefined || s > last : s > seqs[i - 1]));
    if (ascending) queue.push(...seqs);
    else {
      const merged = [...new Set([...queue, ...seqs])].sort((a, b) => a - b);
      queue.splice(0, queue.length, ...merged);
    }
    this.queues.set(rolloutId, queue);
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const now = this.clock.monotonicMs();
      if (this.retryAtMono !== null && now < this.retryAtMono) {
        this.wakeAt(this.retryAtMono - now);
        return;
      }
      const next = this.next();
      if (!next) return;
      const { rolloutId, seq } = next;
      const logged = this.log.get(rolloutId, seq);
      if (!logged) {
        // Compacted away while queued (a replay asked for it); nothing to send.
        this.done(rolloutId, seq, false);
        continue;
      }
      const isReplay = this.replays.get(rolloutId)?.remaining.has(seq) === true;
      if (isReplay) await this.pace();
      const result = await this.client.postEvent(logged.envelope, { signal: this.abort.signal });
      if (this.stopped) return;
      const verdict = result.ok ? 'delivered' : this.judge(result.failure);
      switch (verdict) {
        case 'delivered': {
          const status = result.ok ? result.response.status : 204;
          await this.log.markDelivered(rolloutId, seq, status);
          if (this.failures > 0 || this.pausedReason) this.logger.log(`event delivery works again (${rolloutId} seq ${seq} accepted)`);
          this.failures = 0;
          this.failingSince = null;
          this.retryAtMono = null;
          this.pausedReason = null;
          this.done(rolloutId, seq, isReplay);
          break;
        }
        case 'refused': {
          const failure = result.ok ? null : result.failure;
          const status = failure?.kind === 'http-status' ? failure.status : 400;
          const reason = failure ? describeFailure(failure) : 'refused';
          await this.log.markRefused(rolloutId, seq, status, reason);
          this.logger.warn(
            `the control plane refused event ${logged.kind} seq ${seq} of ${rolloutId} (${reason}); kept on record as refused, not retried; delivery goes on with the next event`,
          );
          // The CP judged the event itself, so it accepts our identity: delivery is not paused.
          this.failures = 0;
          this.failingSince = null;
          this.retryAtMono = null;
          this.pausedReason = null;
          this.done(rolloutId, seq, isReplay);
          break;
        }
        case 'retry':
        case 'pause':
          if (!result.ok) this.backOff(result.failure, verdict === 'pause', `${logged.kind} seq ${seq} of ${rolloutId}`);
          break;
        case 'stop':
          return;
        default: {
          const never: never = verdict;
          return never;
        }
      }
    }
  }

  /** PROTOCOL §6. */
  private judge(failure: CpFailure): Verdict {
    switch (failure.kind) {
      case 'aborted':
        return 'stop';
      case 'tls':
        return 'pause';
      case 'connect':
      case 'timeout':
      case 'network':
      case 'bad-body':
        return 'retry';
      case 'http-status': {
        const s = failure.status;
        if (s === 401 || s === 403 || s === 426) return 'pause';
        if (s === 409 || s === 429 || s >= 500) return 'retry';
        if (s >= 400) return 'refused';
        return 'retry';
      }
      default: {
        const never: never = failure;
        return never;
      }
    }
  }

  private backOff(failure: CpFailure, pause: boolean, what: string): void {
    this.failures += 1;
    this.failingSince ??= this.clock.now();
    this.lastError = describeFailure(failure);
    const cap = pause ? DELIVERY_PAUSED_CAP_MS : DELIVERY_BACKOFF_CAP_MS;
    const base = Math.min(DELIVERY_BACKOFF_FIRST_MS * 2 ** (this.failures - 1), cap);
    const retryAfter = failure.kind === 'http-status' ? failure.retryAfterSecs : null;
    const delay = Math.max(jitter(base, 0.2, this.random), (retryAfter ?? 0) * 1000);
    this.retryAtMono = this.clock.monotonicMs() + delay;
    const cause = describeFailure(failure);
    if (pause) {
      const reason = `${cause}: the control plane does not accept this agent's identity or version; events are kept and retried`;
      if (this.pausedReason !== reason) this.logger.error(`event delivery paused: ${reason}`);
      this.pausedReason = reason;
    }
    this.logger.warn(`delivering ${what} failed: ${cause}; retrying the same seq in ${(delay / 1000).toFixed(1)} s (${this.failures} failure(s) in a row)`);
  }

  private next(): { rolloutId: string; seq: number } | null {
    for (const [rolloutId, queue] of this.queues) {
      if (queue.length > 0) return { rolloutId, seq: queue[0] };
      this.queues.delete(rolloutId);
    }
    return null;
  }

  private done(rolloutId: string, seq: number, wasReplay: boolean): void {
    const queue = this.queues.get(rolloutId);
    // Not always the head: a replay merged in while this seq was in flight may have queued lower seqs before it.
    const at = queue ? queue.indexOf(seq) : -1;
    if (queue && at >= 0) queue.splice(at, 1);
    const run = this.replays.get(rolloutId);
    if (run?.remaining.delete(seq) && wasReplay) {
      run.resent += 1;
      this.metrics.recordReplayed();
    }
    if (run && run.remaining.size === 0) {
      this.replays.delete(rolloutId);
      this.logger.log(`replay of ${rolloutId} from seq ${run.fromSeq} done: ${run.resent} event(s) resent`);
    }
  }

  /** Keeps a replay of thousands of events from crowding the event loop and the CP. */
  private async pace(): Promise<void> {
    await yieldToLoop();
    const gap = 1000 / REPLAY_MAX_PER_SEC - (this.clock.monotonicMs() - this.lastReplaySendMono);
    if (gap > 0) await new Promise((resolve) => setTimeout(resolve, gap));
    this.lastReplaySendMono = this.clock.monotonicMs();
  }

  private wakeAt(ms: number): void {
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = null;
      this.kick();
    }, Math.max(10, ms));
  }
}
