import {
  type BeforeApplicationShutdown,
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { type Clock, CLOCK } from '../clock/clock';
import { RANDOM, type RandomSource } from '../clock/random';
import { type CpFailureKind, describeFailure } from '../comms/cp-failure';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { MetricsService } from '../metrics/metrics.service';
import { TIMEOUTS } from '../protocol/protocol.constants';
import { type ExchangeOutcome, HeartbeatExchange, type ReplayFromRecord } from '../recovery/heartbeat-exchange';
import { RecoveryService } from '../recovery/recovery.service';
import { HEARTBEAT_INTERVAL_NAME } from './heartbeat.constants';
import { failureDelayMs, steadyDelayMs } from './heartbeat.schedule';

export interface HeartbeatStatus {
  intervalSecs: number;
  lastAttemptAt: string | null;
  lastSuccessAt: string | null;
  lastError: { kind: CpFailureKind; message: string; at: string } | null;
  consecutiveFailures: number;
  /** When the current streak of failures began (its first failure); null while the last attempt succeeded. */
  failingSince: string | null;
  nextDueAt: string | null;
  lastReplayFrom: ReplayFromRecord | null;
  clockSkewSecs: number | null;
  inFlight: boolean;
  skippedTicks: number;
}

/** Monotonic times (ms) of the job, for liveness and readiness. */
export interface HeartbeatProgress {
  /** When the job started (after the boot handshake); null before. */
  startedMono: number | null;
  lastAttemptMono: number | null;
  lastSuccessMono: number | null;
  nextDueMono: number | null;
  inFlightSinceMono: number | null;
  intervalMs: number;
  deadlineMs: number;
}

/**
 * The steady heartbeat (PROTOCOL §2). A scheduler interval checks, at a fine
 * resolution, whether the next heartbeat is due: a fixed setInterval could
 * not carry per-period jitter, backoff or Retry-After. At most one heartbeat
 * is in flight; a tick that falls due meanwhile is skipped, never queued.
 */
@Injectable()
export class HeartbeatService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(HeartbeatService.name);
  private readonly intervalMs: number;
  private nextDueMono: number | null = null;
  private startedMono: number | null = null;
  private inFlight: Promise<void> | null = null;
  private skipCounted = false;
  private stopped = false;
  private consecutiveFailures = 0;
  private skipped = 0;
  private lastAttemptAt: Date | null = null;
  private lastAttemptMono: number | null = null;
  private lastSuccessAt: Date | null = null;
  private lastSuccessMono: number | null = null;
  private lastError: HeartbeatStatus['lastError'] = null;
  private failingSince: Date | null = null;

  constructor(
    private readonly exchange: HeartbeatExchange,
    private readonly recovery: RecoveryService,
    private readonly scheduler: SchedulerRegistry,
    @Inject(AGENT_CONFIG) config: AgentConfig,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(RANDOM) private readonly random: RandomSource,
    private readonly metrics: MetricsService,
  ) {
    this.intervalMs = config.heartbeatInterval * 1000;
  }

  onApplicationBootstrap(): void {
    this.recovery.whenComplete().then(
      (outcome) => this.start(outcome),
      (err: unknown) => this.logger.error(`heartbeat not started: ${String(err)}`),
    );
  }

  /** Starts the job once the boot handshake is over; its outcome sets the first due time. */
  start(handshake: ExchangeOutcome): void {
    if (this.stopped || this.scheduler.doesExist('interval', HEARTBEAT_INTERVAL_NAME)) return;
    const now = this.clock.monotonicMs();
    this.startedMono = now;
    if (handshake.ok) {
      this.lastSuccessAt = this.clock.now();
      this.lastSuccessMono = now;
      this.nextDueMono = now + steadyDelayMs(this.intervalMs, this.random);
    } else {
      // The handshake is the first heartbeat: its failure is the one status reports.
      this.consecutiveFailures = 1;
      this.failingSince = this.clock.now();
      if (handshake.failure) {
        const { failure } = handshake;
        this.lastError = { kind: failure.kind, message: describeFailure(failure), at: this.clock.now().toISOString() };
      }
      this.nextDueMono = now + this.failureDelay(handshake);
    }
    // Fine enough for ±10 % jitter on a 1 s interval, coarse enough to cost nothing at 60 s.
    const resolutionMs = Math.min(1000, Math.max(50, Math.floor(this.intervalMs / 20)));
    this.scheduler.addInterval(HEARTBEAT_INTERVAL_NAME, setInterval(() => this.tick(), resolutionMs));
    this.logger.log(`heartbeat every ${this.intervalMs / 1000} s (±10 %); first at ${this.wallOf(this.nextDueMono)}`);
  }

  /** What the interval runs. Public so tests can drive it with a fake clock. */
  tick(): void {
    if (this.stopped || this.nextDueMono === null) return;
    const now = this.clock.monotonicMs();
    if (now < this.nextDueMono) return;
    if (this.inFlight) {
      if (!this.skipCounted) {
        this.skipCounted = true;
        this.skipped += 1;
        this.logger.debug('heartbeat due while the previous one is still in flight; this tick is skipped');
      }
      return;
    }
    this.skipCounted = false;
    this.inFlight = this.beat(now).finally(() => {
      this.inFlight = null;
    });
  }

  /** Resolves when no heartbeat is in flight. */
  async settled(): Promise<void> {
    while (this.inFlight) await this.inFlight;
  }

  status(): HeartbeatStatus {
    return {
      intervalSecs: this.intervalMs / 1000,
      lastAttemptAt: this.lastAttemptAt?.toISOString() ?? null,
      lastSuccessAt: this.lastSuccessAt?.toISOString() ?? null,
      lastError: this.lastError,
      consecutiveFailures: this.consecutiveFailures,
      failingSince: this.failingSince?.toISOString() ?? null,
      nextDueAt: this.nextDueMono === null || this.stopped ? null : this.wallOf(this.nextDueMono),
      lastReplayFrom: this.exchange.lastReplayFrom,
      clockSkewSecs: this.exchange.clockSkewSecs,
      inFlight: this.inFlight !== null,
      skippedTicks: this.skipped,
    };
  }

  /** Monotonic ms of the last attempt and success; liveness and readiness read them. */
  progress(): HeartbeatProgress {
    return {
      startedMono: this.startedMono,
      lastAttemptMono: this.lastAttemptMono,
      lastSuccessMono: this.lastSuccessMono,
      nextDueMono: this.stopped ? null : this.nextDueMono,
      inFlightSinceMono: this.inFlight ? this.lastAttemptMono : null,
      intervalMs: this.intervalMs,
      deadlineMs: TIMEOUTS.heartbeatMs,
    };
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.stopped = true;
    if (this.scheduler.doesExist('interval', HEARTBEAT_INTERVAL_NAME)) {
      this.scheduler.deleteInterval(HEARTBEAT_INTERVAL_NAME);
    }
    // An in-flight heartbeat finishes or hits its 10 s deadline; nothing new starts.
    await this.settled();
  }

  private async beat(startedMono: number): Promise<void> {
    this.lastAttemptAt = this.clock.now();
    this.lastAttemptMono = startedMono;
    let outcome: ExchangeOutcome;
    try {
      outcome = await this.exchange.send('heartbeat', TIMEOUTS.heartbeatMs);
    } catch (err) {
      // Nothing stops the loop but shutdown: an unexpected error is a failed heartbeat.
      outcome = {
        ok: false,
        failure: { kind: 'network', detail: `unexpected error: ${(err as Error).message}` },
        retryAfterSecs: null,
        snapshotsApplied: 0,
        snapshotsRejected: 0,
        replayFrom: null,
      };
    }
    const done = this.clock.monotonicMs();
    this.metrics.recordHeartbeat(outcome.ok ? 'ok' : (outcome.failure?.kind ?? 'network'), (done - startedMono) / 1000);
    if (outcome.ok) {
      if (this.consecutiveFailures > 0) {
        this.logger.log(`heartbeat succeeded again after ${this.consecutiveFailures} failure(s)`);
      }
      this.consecutiveFailures = 0;
      this.failingSince = null;
      this.lastSuccessAt = this.clock.now();
      this.lastSuccessMono = done;
      let next = startedMono + steadyDelayMs(this.intervalMs, this.random);
      while (next <= done) next += steadyDelayMs(this.intervalMs, this.random);
      this.nextDueMono = next;
      return;
    }
    this.consecutiveFailures += 1;
    this.failingSince ??= this.clock.now();
    const failure = outcome.failure ?? { kind: 'network' as const, detail: 'unknown failure' };
    this.lastError = { kind: failure.kind, message: describeFailure(failure), at: this.clock.now().toISOString() };
    const delay = this.failureDelay(outcome);
    this.nextDueMono = done + delay;
    this.logger.warn(
      `heartbeat to the control plane failed: ${describeFailure(failure)}; next try in ${(delay / 1000).toFixed(1)} s at ${this.wallOf(this.nextDueMono)} (${this.consecutiveFailures} failure(s) in a row)`,
    );
  }

  private failureDelay(outcome: ExchangeOutcome): number {
    const backoff = failureDelayMs(this.consecutiveFailures, this.intervalMs, this.random);
    return outcome.retryAfterSecs === null ? backoff : Math.max(backoff, outcome.retryAfterSecs * 1000);
  }

  private wallOf(mono: number): string {
    return new Date(this.clock.now().getTime() + (mono - this.clock.monotonicMs())).toISOString();
  }
}
