import { Inject, Injectable } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { Uptime } from '../clock/uptime';
import { HeartbeatService } from '../heartbeat/heartbeat.service';
import { BootGate } from '../lifecycle/boot-gate';
import { LoopDelaySampler } from '../metrics/loop-delay.sampler';
import { EventLogService } from '../outbound/event-log.service';
import { TIMEOUTS } from '../protocol/protocol.constants';
import { ReducerService } from '../reducer/reducer.service';

/** A loop blocked this long is not responsive: systemd's watchdog should see it. */
export const EVENT_LOOP_STALL_MS = 5_000;
/** How long a stall found by a look stays reported (it happened since the look before). */
const LOOP_WINDOW_MS = 10_000;
/** With input queued, the reducer must take one within this long. */
export const REDUCER_STALL_MS = 30_000;
/** Grace beyond the boot handshake's own 30 s deadline. */
const BOOT_GRACE_MS = 15_000;
/** Beyond a heartbeat's deadline, before an in-flight one counts as wedged. */
const IN_FLIGHT_GRACE_MS = 5_000;

export interface HealthCheck {
  name: 'event-loop' | 'boot' | 'heartbeat-job' | 'reducer';
  ok: boolean;
  detail: string;
}

export interface Liveness {
  ok: boolean;
  checks: HealthCheck[];
}

export interface Readiness {
  /** Reachable, and the event log takes writes: the agent can do its job. */
  ok: boolean;
  /** A heartbeat succeeded within 3 × interval (the CP's own "unreachable" threshold). */
  reachable: boolean;
  lastSuccessAt: string | null;
  /** Seconds since the last success (or since start, when there was none). */
  failingForSecs: number | null;
  consecutiveFailures: number;
  lastError: string | null;
  thresholdSecs: number;
  eventLog: EventLogReadiness;
}

export interface EventLogReadiness {
  /** False from the first failed write of a streak until a write works again. */
  writable: boolean;
  failingSince: string | null;
  /** The errno text of the last failure while failing; null while writable. */
  lastError: string | null;
}

/**
 * Three separate truths: liveness (is this process making progress — what
 * systemd's watchdog acts on), readiness (can it reach its CP, and make its
 * events durable), and the components in /status. An agent that cannot reach
 * its CP or write its log is alive, not healthy: a restart fixes neither.
 */
@Injectable()
export class HealthService {
  /** Intervals over the stall threshold that the looks have counted so far, and the longest interval seen then. */
  private stallsSeen = 0;
  private longestSeenMs = 0;
  /** Looks that found new stalls, oldest first: when, and the longest of them when it was the longest yet (else null). */
  private readonly stalls: { atMono: number; worstMs: number | null }[] = [];

  constructor(
    private readonly heartbeat: HeartbeatService,
    private readonly reducer: ReducerService,
    private readonly bootGate: BootGate,
    private readonly uptime: Uptime,
    private readonly eventLog: EventLogService,
    @Inject(CLOCK) private readonly clock: Clock,
    private readonly loopDelay: LoopDelaySampler,
  ) {}

  liveness(): Liveness {
    const now = this.clock.monotonicMs();
    const checks = [this.eventLoop(), this.boot(), this.heartbeatJob(now), this.reducerQueue(now)];
    return { ok: checks.every((c) => c.ok), checks };
  }

  readiness(): Readiness {
    const p = this.heartbeat.progress();
    const status = this.heartbeat.status();
    // The CP's own "unreachable" threshold: three missed heartbeats.
    const thresholdMs = 3 * p.intervalMs;
    const now = this.clock.monotonicMs();
    const since = p.lastSuccessMono ?? this.uptime.startedMonoMs;
    const reachable = p.lastSuccessMono !== null && now - p.lastSuccessMono <= thresholdMs;
    const log = this.eventLog.writeHealth();
    const writable = log.failingSince === null && log.refusingWrites === null;
    return {
      ok: reachable && writable,
      reachable,
      lastSuccessAt: status.lastSuccessAt,
      failingForSecs: reachable ? null : Math.floor((now - since) / 1000),
      consecutiveFailures: status.consecutiveFailures,
      lastError: status.lastError?.message ?? null,
      thresholdSecs: thresholdMs / 1000,
      eventLog: {
        writable,
        failingSince: log.failingSince,
        lastError: writable ? null : (log.refusingWrites ?? log.lastError?.cause ?? null),
      },
    };
  }

  /**
   * Whether the shared monitor recorded an interval over the threshold since
   * the previous look (or found one within the window): it fires every
   * second, so a stall of D reads between D and D + 1 s, and none goes
   * unrecorded however it falls between two looks.
   */
  private eventLoop(): HealthCheck {
    const now = this.clock.monotonicMs();
    const over = this.loopDelay.countOver(EVENT_LOOP_STALL_MS, this.stallsSeen);
    const longest = this.loopDelay.maxIntervalMs();
    if (over > this.stallsSeen) {
      this.stalls.push({ atMono: now, worstMs: longest > this.longestSeenMs ? longest : null });
      this.stallsSeen = over;
    }
    this.longestSeenMs = Math.max(this.longestSeenMs, longest);
    while (this.stalls.length > 0 && this.stalls[0].atMono < now - LOOP_WINDOW_MS) this.stalls.shift();
    if (this.stalls.length === 0) return { name: 'event-loop', ok: true, detail: 'responsive' };
    const known = this.stalls.flatMap((s) => (s.worstMs === null ? [] : [s.worstMs]));
    const detail =
      known.length > 0
        ? `the event loop was blocked for ${(Math.max(...known) / 1000).toFixed(1)} s`
        : `the event loop was blocked for more than ${(EVENT_LOOP_STALL_MS / 1000).toFixed(1)} s`;
    return { name: 'event-loop', ok: false, detail };
  }

  private boot(): HealthCheck {
    if (this.bootGate.isOpen()) return { name: 'boot', ok: true, detail: 'boot recovery done' };
    const waited = this.clock.monotonicMs() - this.uptime.startedMonoMs;
    return waited > TIMEOUTS.bootRecoveryMs + BOOT_GRACE_MS
      ? {
          name: 'boot',
          ok: false,
          detail: `the boot-recovery handshake has not finished after ${Math.floor(waited / 1000)} s (deadline 30 s)`,
        }
      : { name: 'boot', ok: true, detail: 'boot recovery in progress' };
  }

  private heartbeatJob(now: number): HealthCheck {
    const p = this.heartbeat.progress();
    if (p.startedMono === null || p.nextDueMono === null) return { name: 'heartbeat-job', ok: true, detail: 'not started yet' };
    if (p.inFlightSinceMono !== null && now - p.inFlightSinceMono > p.deadlineMs + IN_FLIGHT_GRACE_MS) {
      return {
        name: 'heartbeat-job',
        ok: false,
        detail: `a heartbeat has been in flight for ${Math.floor((now - p.inFlightSinceMono) / 1000)} s, past its ${p.deadlineMs / 1000} s deadline`,
      };
    }
    // Waiting out a long Retry-After is not being stuck: only an overdue job that did not run is.
    const reference = p.lastAttemptMono ?? p.startedMono;
    const limit = 2 * p.intervalMs + p.deadlineMs;
    if (p.inFlightSinceMono === null && now >= p.nextDueMono && now - reference > limit) {
      return {
        name: 'heartbeat-job',
        ok: false,
        detail: `no heartbeat attempted for ${Math.floor((now - reference) / 1000)} s though one was due ${Math.floor((now - p.nextDueMono) / 1000)} s ago (limit ${limit / 1000} s)`,
      };
    }
    return { name: 'heartbeat-job', ok: true, detail: 'attempting on schedule' };
  }

  private reducerQueue(now: number): HealthCheck {
    const s = this.reducer.statistics();
    if (s.queueDepth === 0) return { name: 'reducer', ok: true, detail: 'queue empty' };
    const idle = s.lastProgressMono === null ? null : now - s.lastProgressMono;
    if (idle !== null && idle > REDUCER_STALL_MS) {
      return {
        name: 'reducer',
        ok: false,
        detail: `${s.queueDepth} input(s) queued but none taken for ${Math.floor(idle / 1000)} s`,
      };
    }
    return { name: 'reducer', ok: true, detail: `${s.queueDepth} input(s) queued, moving` };
  }
}
