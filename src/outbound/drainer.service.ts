import { Injectable, Logger, type OnApplicationBootstrap } from '@nestjs/common';
import { type CpFailure, describeFailure, failureFields } from '../comms/cp-failure';
import { ControlPlaneClient } from '../comms/control-plane.client';
import type { BackoffPolicy } from '../jobs/backoff';
import { JobRuntime } from '../jobs/job-runtime.service';
import { failed, type JobContext, type JobHandle, type JobResult, ok, retryAfter, type SettledRun } from '../jobs/job.types';
import { pause } from '../jobs/wait';
import { MetricsService } from '../metrics/metrics.service';
import { DeliveryPacer } from './delivery-pacer';
import { EventLogService } from './event-log.service';
import {
  DELIVERY_BACKOFF_CAP_MS,
  DELIVERY_BACKOFF_FIRST_MS,
  DELIVERY_PACING,
  DELIVERY_PAUSED_CAP_MS,
  DRAIN_SWEEP_MS,
  DRAIN_SWEEP_NAME,
} from './outbound.constants';
import { SeqQueue } from './seq-queue';

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

export interface DeliveryPacing {
  window: number;
  lanes: number;
  inFlight: number;
}

type Verdict = 'delivered' | 'refused' | 'retry' | 'pause' | 'stop';

/** Which logged event a line is about. */
interface EventRef {
  rolloutId: string;
  seq: number;
  kind: string;
}

/** A failed POST that ends the run: its seq is retried after the backoff. */
interface Halt {
  failure: CpFailure;
  paused: boolean;
  event: EventRef;
}

/**
 * Delivers logged events to the CP, one rollout's in seq order, with the
 * status handling of PROTOCOL §6. Replays ride the same queue, so a resent
 * event can never overtake or double a pending one. It runs beside the
 * heartbeat, never in its way: its own job, its own connection pool.
 *
 * Each rollout has at most one event in flight (a CP may take a seq at or
 * below the highest it holds for a duplicate, so seq n+1 waits for n's
 * answer); different rollouts go at once, as many as the pacer allows
 * (AIMD: more while the CP's latency stays flat, half on a 429, a 503, a
 * timeout or a latency rise). Rollouts take turns, so a long replay does
 * not hold back a live rollout's events.
 *
 * A job of the runtime: started after the boot handshake, it runs when
 * events are appended or a replay is asked for (a trigger, held back while
 * a backoff is pending), and on a slow sweep in case a trigger was missed.
 * A run sends whatever is sendable; a failed POST ends it (nothing new is
 * sent, the POSTs in flight finish), and the runtime schedules the retry of
 * the same seq after the backoff or the CP's Retry-After.
 */
@Injectable()
export class DrainerService implements OnApplicationBootstrap {
  private readonly logger = new Logger(DrainerService.name);
  /** Per rollout, the seqs still to send (pending ∪ replay). Map order is the turn order: a rollout just served goes last. */
  private readonly queues = new Map<string, SeqQueue>();
  private readonly pacer = new DeliveryPacer(DELIVERY_PACING);
  /** The current run's POSTs, by rollout: one at most each. */
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly replays = new Map<string, ReplayRun>();
  private lastReplay: ReplayRun | null = null;
  private readonly job: JobHandle;
  private pausedReason: string | null = null;
  private lastError: string | null = null;
  /** The failed POST of the last run, for the warning that says when it is retried. */
  private lastFailedPost: { event: EventRef; failure: CpFailure } | null = null;
  /** The last run ended on a failed POST: the next delivery says that delivery works again. */
  private failing = false;
  /** Wakes the run in flight, waiting for a POST to come back, when new work is queued. */
  private wakeRun: (() => void) | null = null;

  constructor(
    private readonly log: EventLogService,
    private readonly client: ControlPlaneClient,
    runtime: JobRuntime,
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
      this.logger.log(`replay of ${rolloutId} from seq ${fromSeq} is already covered by the running one (from ${running.fromSeq})`, {
        rolloutId,
        fromSeq,
        runningFromSeq: running.fromSeq,
      });
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
      this.logger.log(`replay of ${rolloutId} from seq ${fromSeq} done: nothing to resend`, {
        rolloutId,
        fromSeq,
        resent: 0,
        missing: run.missing.length,
      });
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

  /** How hard delivery presses the CP now: the pacer's window, the rollouts it lets send at once, and those in flight. */
  pacing(): DeliveryPacing {
    return { window: this.pacer.window, lanes: this.pacer.lanes(), inFlight: this.inFlight.size };
  }

  /** Resolves when the drainer is idle (nothing sendable now, or a backoff pending). */
  idle(): Promise<void> {
    return this.job.settled();
  }

  /** Something may be sendable: send it, unless a backoff is pending (its retry comes on time). */
  kick(): void {
    this.job.trigger();
    // A run in flight takes it into a free lane now, not once a POST of another rollout has come back.
    const wake = this.wakeRun;
    this.wakeRun = null;
    wake?.();
  }

  private enqueue(rolloutId: string, seqs: readonly number[]): void {
    if (seqs.length === 0) return;
    let queue = this.queues.get(rolloutId);
    if (!queue) {
      queue = new SeqQueue();
      this.queues.set(rolloutId, queue);
    }
    queue.add(seqs);
  }

  /**
   * Keeps up to `pacer.lanes()` rollouts with one POST each in flight until
   * nothing is sendable or a POST fails; then waits for those in flight.
   */
  private async run(ctx: JobContext): Promise<JobResult> {
    const { signal } = ctx;
    const inFlight = this.inFlight;
    let halt: Halt | null = null;
    // A lane that throws (the log cannot record a delivery) ends the run like a failed POST, once the others are done:
    // a run never returns while one of its POSTs is still out, or the next run could send that rollout's seq twice.
    const thrown: unknown[] = [];
    const stop = (h: Halt): void => {
      halt = worse(halt, h);
    };
    for (;;) {
      while (halt === null && thrown.length === 0 && !signal.aborted && inFlight.size < this.pacer.lanes()) {
        const next = this.next(inFlight);
        if (!next) break;
        const { rolloutId, seq } = next;
        // Every lane busy as it goes out: only then did the window, not the work, hold delivery back.
        const windowLimited = inFlight.size + 1 >= this.pacer.lanes();
        const sending = this.send(ctx, rolloutId, seq, windowLimited, stop)
          .catch((err: unknown) => {
            thrown.push(err);
          })
          .finally(() => inFlight.delete(rolloutId));
        inFlight.set(rolloutId, sending);
      }
      if (inFlight.size === 0) break;
      await Promise.race([...inFlight.values(), new Promise<void>((resolve) => (this.wakeRun = resolve))]);
      this.wakeRun = null;
    }
    if (thrown.length > 0) throw thrown[0];
    if (signal.aborted || halt === null) return ok();
    return this.failedPost(halt);
  }

  /** One POST of one rollout's next seq, and what its answer means (PROTOCOL §6). */
  private async send(ctx: JobContext, rolloutId: string, seq: number, windowLimited: boolean, stop: (h: Halt) => void): Promise<void> {
    const { signal } = ctx;
    const logged = this.log.get(rolloutId, seq);
    if (!logged) {
      // Compacted away while queued (a replay asked for it); nothing to send.
      this.done(rolloutId, seq, false);
      return;
    }
    const isReplay = this.replays.get(rolloutId)?.remaining.has(seq) === true;
    const gap = this.pacer.gapMs();
    if (gap > 0 && !(await pause(gap, signal))) return;
    const sentMono = roundTripClock();
    const result = await this.client.postEvent(logged.envelope, { signal });
    if (signal.aborted) return;
    const answeredMono = roundTripClock();
    const verdict = result.ok ? 'delivered' : this.judge(result.failure);
    // A request that opened its connection waited for the handshakes too: no sample of the CP's latency.
    const rtt = result.ok && !result.response.newConnection ? answeredMono - sentMono : null;
    const event: EventRef = { rolloutId, seq, kind: logged.kind };
    switch (verdict) {
      case 'delivered': {
        this.pacer.answered(rtt, answeredMono, windowLimited);
        const status = result.ok ? result.response.status : 204;
        // A replayed event is on record as delivered already: no write, not even a queued no-op.
        if (logged.delivery.state !== 'delivered') await this.log.markDelivered(rolloutId, seq, status);
        this.logger.debug(`event ${logged.kind} seq ${seq} of ${rolloutId} delivered (HTTP ${status}${isReplay ? ', replayed' : ''})`, {
          ...event,
          status,
          replay: isReplay,
        });
        if (this.failing || this.pausedReason) {
          this.failing = false;
          this.logger.log(`event delivery works again (${rolloutId} seq ${seq} accepted)`, { ...event, status });
        }
        ctx.progressed();
        this.pausedReason = null;
        this.done(rolloutId, seq, isReplay);
        return;
      }
      case 'refused': {
        this.pacer.answered(null, answeredMono, windowLimited);
        const failure = result.ok ? null : result.failure;
        const status = failure?.kind === 'http-status' ? failure.status : 400;
        const reason = failure ? describeFailure(failure) : 'refused';
        await this.log.markRefused(rolloutId, seq, status, reason);
        this.logger.warn(
          `the control plane refused event ${logged.kind} seq ${seq} of ${rolloutId} (${reason}); kept on record as refused, not retried; delivery goes on with the next event`,
          { ...event, status },
        );
        // The CP judged the event itself, so it accepts our identity: delivery is not paused.
        ctx.progressed();
        this.pausedReason = null;
        this.done(rolloutId, seq, isReplay);
        return;
      }
      case 'retry':
      case 'pause':
        if (result.ok) return;
        if (isOverload(result.failure)) this.pacer.overloaded(answeredMono);
        stop({ failure: result.failure, paused: verdict === 'pause', event });
        return;
      case 'stop':
        return;
      default: {
        const never: never = verdict;
        return never;
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

  /** The same seq is retried after the shared backoff (or the CP's Retry-After); the runtime schedules it. */
  private failedPost({ failure, paused, event }: Halt): JobResult {
    const cause = describeFailure(failure);
    this.lastError = cause;
    this.lastFailedPost = { event, failure };
    if (paused) {
      const reason = `${cause}: the control plane does not accept this agent's identity or version; events are kept and retried`;
      if (this.pausedReason !== reason) this.logger.error(`event delivery paused: ${reason}`, { ...event, ...failureFields(failure) });
      this.pausedReason = reason;
    }
    const backoff = paused ? PAUSED_BACKOFF : undefined;
    const retryAfterSecs = failure.kind === 'http-status' ? failure.retryAfterSecs : null;
    return retryAfterSecs === null ? failed(cause, backoff) : retryAfter(retryAfterSecs, cause, backoff);
  }

  private settledRun(run: SettledRun): void {
    if (run.result.kind === 'ok') return;
    this.failing = true;
    const post = this.lastFailedPost;
    const what = post === null ? 'an event' : `${post.event.kind} seq ${post.event.seq} of ${post.event.rolloutId}`;
    this.logger.warn(
      `delivering ${what} failed: ${run.result.cause}; retrying the same seq in ${(run.delayMs / 1000).toFixed(1)} s (${run.consecutiveFailures} failure(s) in a row)`,
      {
        ...(post === null ? {} : { ...post.event, ...failureFields(post.failure) }),
        retryInSecs: Math.round(run.delayMs / 100) / 10,
        consecutiveFailures: run.consecutiveFailures,
      },
    );
  }

  /** The next rollout in turn with something to send and nothing in flight; it goes to the back of the turn order. */
  private next(inFlight: ReadonlyMap<string, unknown>): { rolloutId: string; seq: number } | null {
    for (const [rolloutId, queue] of this.queues) {
      const seq = queue.peek();
      if (seq === undefined) {
        this.queues.delete(rolloutId);
        continue;
      }
      if (inFlight.has(rolloutId)) continue;
      this.queues.delete(rolloutId);
      this.queues.set(rolloutId, queue);
      return { rolloutId, seq };
    }
    return null;
  }

  private done(rolloutId: string, seq: number, wasReplay: boolean): void {
    this.queues.get(rolloutId)?.remove(seq);
    const run = this.replays.get(rolloutId);
    if (run?.remaining.delete(seq) && wasReplay) {
      run.resent += 1;
      this.metrics.recordReplayed();
    }
    if (run && run.remaining.size === 0) {
      this.replays.delete(rolloutId);
      this.logger.log(`replay of ${rolloutId} from seq ${run.fromSeq} done: ${run.resent} event(s) resent`, {
        rolloutId,
        fromSeq: run.fromSeq,
        resent: run.resent,
        missing: run.missing.length,
      });
    }
  }
}

/**
 * The pacer measures the network, and its only wait (the gap below a window
 * of one) is real time, like pause(); so are its round trips. The injected
 * clock drives due times: a test's fake clock moved while a POST is out must
 * not read as a round trip of minutes, to be paid back as a real pause.
 */
function roundTripClock(): number {
  return performance.now();
}

/** The CP says it is struggling: the pacer halves. Other failures only back off. */
function isOverload(failure: CpFailure): boolean {
  return failure.kind === 'timeout' || (failure.kind === 'http-status' && (failure.status === 429 || failure.status === 503));
}

/**
 * Of two failed POSTs of one run, the one that says more about when to try
 * again: a refused identity (the long backoff), then the longer Retry-After.
 */
function worse(a: Halt | null, b: Halt): Halt {
  if (a === null) return b;
  if (a.paused !== b.paused) return a.paused ? a : b;
  return (retryAfterOf(b) ?? -1) > (retryAfterOf(a) ?? -1) ? b : a;
}

function retryAfterOf(h: Halt): number | null {
  return h.failure.kind === 'http-status' ? h.failure.retryAfterSecs : null;
}
