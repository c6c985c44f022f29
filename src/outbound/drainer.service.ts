import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { Inject, Injectable, Logger, type OnApplicationBootstrap } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { type CpFailure, describeFailure } from '../comms/cp-failure';
import { ControlPlaneClient } from '../comms/control-plane.client';
import type { BackoffPolicy } from '../jobs/backoff';
import { JobRuntime } from '../jobs/job-runtime.service';
import { failed, type JobContext, type JobHandle, type JobResult, ok, retryAfter, type SettledRun } from '../jobs/job.types';
import { pause } from '../jobs/wait';
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

/** PROTOCOL §6: retry later with exponential backoff. */
const DELIVERY_BACKOFF: BackoffPolicy = { firstMs: DELIVERY_BACKOFF_FIRST_MS, capMs: DELIVERY_BACKOFF_CAP_MS };
/** While the CP refuses our identity (401/403/426) nothing changes quickly: the same steps, a longer cap. */
const PAUSED_BACKOFF: BackoffPolicy = { firstMs: DELIVERY_BACKOFF_FIRST_MS, capMs: DELIVERY_PAUSED_CAP_MS };

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
 * heartbeat, never in its way: its own job, its own sockets.
 *
 * A job of the runtime: started after the boot handshake, it runs when
 * events are appended or a replay is asked for (a trigger, held back while
 * a backoff is pending), and on a slow sweep in case a trigger was missed.
 * A run sends whatever is sendable; a failed POST ends it, and the runtime
 * schedules the retry of the same seq.
 */
@Injectable()
export class DrainerService implements OnApplicationBootstrap {
  private readonly logger = new Logger(DrainerService.name);
  /** Per rollout, the seqs still to send (pending ∪ replay), ascending. Map order: oldest rollout first. */
  private readonly queues = new Map<string, number[]>();
  private readonly replays = new Map<string, ReplayRun>();
  private lastReplay: ReplayRun | null = null;
  private readonly job: JobHandle;
  private pausedReason: string | null = null;
  private lastError: string | null = null;
  /** What the failed POST of the last run was, for the warning that says when it is retried. */
  private failedWhat: string | null = null;
  private lastReplaySendMono = 0;

  constructor(
    private readonly log: EventLogService,
    private readonly client: ControlPlaneClient,
    runtime: JobRuntime,
    @Inject(CLOCK) private readonly clock: Clock,
    private readonly metrics: MetricsService,
  ) {
    this.job = runtime.register({
      name: DRAIN_SWEEP_NAME,
      afterBoot: true,
      schedule: { kind: 'every', intervalMs: DRAIN_SWEEP_MS, firstAfterMs: 0 },
      backoff: DELIVERY_BACKOFF,
      // Events are durable already: an interrupted POST is simply sent again after the restart.
      onShutdown: { kind: 'abort' },
      run: (ctx) => this.run(ctx),
      onSettled: (run) => this.settledRun(run),
    });
  }

  onApplicationBootstrap(): void {
    for (const event of this.log.pending()) this.enqueue(event.rolloutId, [event.seq]);
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
    const job = this.job.status();
    return {
      started: job.state !== 'waiting' && job.state !== 'stopped',
      consecutiveFailures: job.consecutiveFailures,
      lastError: this.lastError,
      failingSince: job.failingSince,
      pausedReason: this.pausedReason,
    };
  }

  /** Resolves when the drainer is idle (nothing sendable now, or a backoff pending). */
  idle(): Promise<void> {
    return this.job.settled();
  }

  /** Something may be sendable: send it, unless a backoff is pending (its retry comes on time). */
  kick(): void {
    this.job.trigger();
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

  private async run(ctx: JobContext): Promise<JobResult> {
    const { signal } = ctx;
    while (!signal.aborted) {
      const next = this.next();
      if (!next) return ok();
      const { rolloutId, seq } = next;
      const logged = this.log.get(rolloutId, seq);
      if (!logged) {
        // Compacted away while queued (a replay asked for it); nothing to send.
        this.done(rolloutId, seq, false);
        continue;
      }
      const isReplay = this.replays.get(rolloutId)?.remaining.has(seq) === true;
      if (isReplay && !(await this.pace(signal))) return ok();
      const result = await this.client.postEvent(logged.envelope, { signal });
      if (signal.aborted) return ok();
      const verdict = result.ok ? 'delivered' : this.judge(result.failure);
      switch (verdict) {
        case 'delivered': {
          const status = result.ok ? result.response.status : 204;
          await this.log.markDelivered(rolloutId, seq, status);
          if (this.job.status().consecutiveFailures > 0 || this.pausedReason) {
            this.logger.log(`event delivery works again (${rolloutId} seq ${seq} accepted)`);
          }
          ctx.progressed();
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
          ctx.progressed();
          this.pausedReason = null;
          this.done(rolloutId, seq, isReplay);
          break;
        }
        case 'retry':
        case 'pause':
          if (result.ok) return ok();
          return this.failedPost(result.failure, verdict === 'pause', `${logged.kind} seq ${seq} of ${rolloutId}`);
        case 'stop':
          return ok();
        default: {
          const never: never = verdict;
          return never;
        }
      }
    }
    return ok();
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

  /** The same seq is retried after the shared backoff (or the CP's Retry-After); the runtime schedules it. */
  private failedPost(failure: CpFailure, paused: boolean, what: string): JobResult {
    const cause = describeFailure(failure);
    this.lastError = cause;
    this.failedWhat = what;
    if (paused) {
      const reason = `${cause}: the control plane does not accept this agent's identity or version; events are kept and retried`;
      if (this.pausedReason !== reason) this.logger.error(`event delivery paused: ${reason}`);
      this.pausedReason = reason;
    }
    const backoff = paused ? PAUSED_BACKOFF : undefined;
    const retryAfterSecs = failure.kind === 'http-status' ? failure.retryAfterSecs : null;
    return retryAfterSecs === null ? failed(cause, backoff) : retryAfter(retryAfterSecs, cause, backoff);
  }

  private settledRun(run: SettledRun): void {
    if (run.result.kind === 'ok') return;
    this.logger.warn(
      `delivering ${this.failedWhat ?? 'an event'} failed: ${run.result.cause}; retrying the same seq in ${(run.delayMs / 1000).toFixed(1)} s (${run.consecutiveFailures} failure(s) in a row)`,
    );
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

  /** Keeps a replay of thousands of events from crowding the event loop and the CP. False: cut by shutdown. */
  private async pace(signal: AbortSignal): Promise<boolean> {
    await yieldToLoop();
    const gap = 1000 / REPLAY_MAX_PER_SEC - (this.clock.monotonicMs() - this.lastReplaySendMono);
    if (gap > 0 && !(await pause(gap, signal))) return false;
    this.lastReplaySendMono = this.clock.monotonicMs();
    return true;
  }
}
