import { Inject, Injectable, Logger } from '@nestjs/common';
import { Interval } from '@nestjs/schedule';
import { type Clock, CLOCK } from '../clock/clock';
import { type CpFailure, type CpFailureKind, describeFailure, failureFields } from '../comms/cp-failure';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { JobRuntime } from '../jobs/job-runtime.service';
import { failed, type JobHandle, type JobResult, ok, retryAfter, type SettledRun } from '../jobs/job.types';
import { MetricsService } from '../metrics/metrics.service';
import { TIMEOUTS } from '../protocol/protocol.constants';
import { type ExchangeOutcome, HeartbeatExchange, type ReplayFromRecord } from '../recovery/heartbeat-exchange';
import { RecoveryService } from '../recovery/recovery.service';
import { HEARTBEAT_INTERVAL_NAME, HEARTBEAT_TICK_MS } from './heartbeat.constants';
import { heartbeatBackoff, INTERVAL_JITTER } from './heartbeat.schedule';

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
 * The steady heartbeat (PROTOCOL §2), an `@Interval` job. The decorator's
 * period is fixed when the class is defined and its ticks may overlap, so
 * its tick only asks the job runtime whether a beat is due: the configured
 * interval, its jitter, the backoff and Retry-After live in the due time,
 * for which the runtime also arms a timeout (so the tick itself is coarse).
 * At most one heartbeat is in flight; a due time that passes meanwhile is
 * skipped, never queued. The job starts once the boot handshake is over,
 * which counts as its first beat.
 */
@Injectable()
export class HeartbeatService {
  private readonly logger = new Logger(HeartbeatService.name);
  private readonly intervalMs: number;
  private readonly job: JobHandle;
  private lastAttemptAt: Date | null = null;
  private lastSuccessAt: Date | null = null;
  /** First failure of the current streak, the same instant as that failure's lastError.at. */
  private failingSince: Date | null = null;
  private lastError: HeartbeatStatus['lastError'] = null;
  /** The failure behind lastError, for the fields of the warning (its HTTP status above all). */
  private lastFailure: CpFailure | null = null;

  constructor(
    private readonly exchange: HeartbeatExchange,
    private readonly recovery: RecoveryService,
    runtime: JobRuntime,
    @Inject(AGENT_CONFIG) config: AgentConfig,
    @Inject(CLOCK) private readonly clock: Clock,
    private readonly metrics: MetricsService,
  ) {
    this.intervalMs = config.heartbeatInterval * 1000;
    this.job = runtime.register({
      name: HEARTBEAT_INTERVAL_NAME,
      afterBoot: true,
      schedule: { kind: 'every', intervalMs: this.intervalMs, jitter: INTERVAL_JITTER },
      backoff: heartbeatBackoff(this.intervalMs),
      // An in-flight heartbeat finishes or hits its own 10 s deadline; nothing new starts.
      onShutdown: { kind: 'finish', graceMs: TIMEOUTS.heartbeatMs },
      firstResult: () => this.handshakeResult(this.recovery.result()),
      run: ({ signal }) => this.beat(signal),
      onStarted: (firstAt) => this.logger.log(`heartbeat every ${this.intervalMs / 1000} s (±10 %); first at ${firstAt}`),
      onSettled: (run) => this.settledRun(run),
    });
  }

  /** The decorated tick; its handler never throws. Public so tests can drive it with a fake clock. */
  @Interval(HEARTBEAT_INTERVAL_NAME, HEARTBEAT_TICK_MS)
  tick(): void {
    this.job.tick();
  }

  /** Resolves when no heartbeat is in flight. */
  settled(): Promise<void> {
    return this.job.settled();
  }

  status(): HeartbeatStatus {
    const job = this.job.status();
    return {
      intervalSecs: this.intervalMs / 1000,
      lastAttemptAt: this.lastAttemptAt?.toISOString() ?? null,
      lastSuccessAt: this.lastSuccessAt?.toISOString() ?? null,
      lastError: this.lastError,
      consecutiveFailures: job.consecutiveFailures,
      // The streak's first failure as this service recorded it, so it equals that failure's lastError.at to the ms.
      failingSince: job.consecutiveFailures === 0 ? null : (this.failingSince?.toISOString() ?? job.failingSince),
      nextDueAt: job.nextDueAt,
      lastReplayFrom: this.exchange.lastReplayFrom,
      clockSkewSecs: this.exchange.clockSkewSecs,
      inFlight: this.job.progress().inFlightSinceMono !== null,
      skippedTicks: job.skippedTicks,
    };
  }

  /** Monotonic ms of the last attempt and success; liveness and readiness read them. */
  progress(): HeartbeatProgress {
    const p = this.job.progress();
    return {
      startedMono: p.startedMono,
      lastAttemptMono: p.lastStartMono,
      lastSuccessMono: p.lastOkMono,
      nextDueMono: p.nextDueMono,
      inFlightSinceMono: p.inFlightSinceMono,
      intervalMs: this.intervalMs,
      deadlineMs: TIMEOUTS.heartbeatMs,
    };
  }

  /** The handshake is the first heartbeat: its outcome sets the first due time, and its failure is the one status reports. */
  private handshakeResult(outcome: ExchangeOutcome | null): JobResult {
    if (outcome === null) return failed('the boot-recovery handshake did not finish');
    if (outcome.ok) {
      this.lastSuccessAt = this.clock.now();
      this.failingSince = null;
      return ok();
    }
    if (outcome.failure) this.recordFailure(outcome.failure);
    return this.failureResult(outcome, outcome.failure ?? { kind: 'network', detail: 'no answer' });
  }

  private async beat(signal: AbortSignal): Promise<JobResult> {
    const startedMono = this.clock.monotonicMs();
    this.lastAttemptAt = this.clock.now();
    this.lastFailure = null;
    let outcome: ExchangeOutcome;
    try {
      outcome = await this.exchange.send('heartbeat', TIMEOUTS.heartbeatMs, signal);
    } catch (err) {
      // Nothing stops the job but shutdown: an unexpected error is a failed heartbeat.
      outcome = {
        ok: false,
        failure: { kind: 'network', detail: `unexpected error: ${err instanceof Error ? err.message : String(err)}` },
        retryAfterSecs: null,
        snapshotsApplied: 0,
        snapshotsRejected: 0,
        replayFrom: null,
      };
    }
    if (signal.aborted) return failed('cut short by shutdown');
    const done = this.clock.monotonicMs();
    this.metrics.recordHeartbeat(outcome.ok ? 'ok' : (outcome.failure?.kind ?? 'network'), (done - startedMono) / 1000);
    if (outcome.ok) {
      this.lastSuccessAt = this.clock.now();
      this.failingSince = null;
      return ok();
    }
    const failure = outcome.failure ?? { kind: 'network' as const, detail: 'unknown failure' };
    this.recordFailure(failure);
    return this.failureResult(outcome, failure);
  }

  private recordFailure(failure: CpFailure): void {
    const at = this.clock.now();
    this.failingSince ??= at;
    this.lastError = { kind: failure.kind, message: describeFailure(failure), at: at.toISOString() };
    this.lastFailure = failure;
  }

  /** PROTOCOL §1: Retry-After (the exchange reads it on 503 and 429 only) over the backoff when longer. */
  private failureResult(outcome: ExchangeOutcome, failure: CpFailure): JobResult {
    const cause = describeFailure(failure);
    return outcome.retryAfterSecs === null ? failed(cause) : retryAfter(outcome.retryAfterSecs, cause);
  }

  private settledRun(run: SettledRun): void {
    switch (run.result.kind) {
      case 'ok':
        if (run.failuresBefore > 0)
          this.logger.log(`heartbeat succeeded again after ${run.failuresBefore} failure(s)`, { failuresBefore: run.failuresBefore });
        return;
      case 'failed':
      case 'retry-after':
        this.logger.warn(
          `heartbeat to the control plane failed: ${run.result.cause}; next try in ${(run.delayMs / 1000).toFixed(1)} s at ${run.nextDueAt} (${run.consecutiveFailures} failure(s) in a row)`,
          {
            ...(this.lastFailure === null ? {} : failureFields(this.lastFailure)),
            retryInSecs: Math.round(run.delayMs / 100) / 10,
            nextDueAt: run.nextDueAt,
            consecutiveFailures: run.consecutiveFailures,
          },
        );
        return;
      default: {
        const never: never = run.result;
        return never;
      }
    }
  }
}
