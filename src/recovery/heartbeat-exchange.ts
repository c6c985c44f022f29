import { Inject, Injectable, Logger } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { CLOCK_SKEW_WARN_SECS } from '../clock/thresholds';
import { Uptime } from '../clock/uptime';
import { ClockSkew } from '../comms/clock-skew';
import { type CpFailure, describeFailure } from '../comms/cp-failure';
import { ControlPlaneClient } from '../comms/control-plane.client';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import type { HeartbeatRequest } from '../protocol/heartbeat.wire';
import { HEADER_REPLAY_FROM } from '../protocol/protocol.constants';
import { parseReplayFrom, type ReplayFrom } from '../protocol/replay-from';
import { HostRolloutSnapshot } from '../protocol/snapshot.wire';
import { validateWire } from '../protocol/validate';
import { ReducerService } from '../reducer/reducer.service';
import { AGENT_VERSION } from '../version';
import { CurrentSystemReader } from './current-system.reader';
import { REPLAY_PORT, type ReplayPort } from './recovery.ports';

export type ExchangeKind = 'boot-recovery' | 'heartbeat';

/** Statuses that say the CP refuses who we are or the protocol we speak (PROTOCOL §6 treats them alike). */
const IDENTITY_REFUSED: ReadonlySet<number> = new Set([401, 403, 426]);
/** Wall and monotonic time may disagree this much over one call before we call it a clock step. */
const WALL_STEP_TOLERANCE_MS = 1_000;

export interface ExchangeOutcome {
  ok: boolean;
  failure: CpFailure | null;
  /** From `Retry-After` (on the statuses of RETRY_AFTER_STATUSES): the next try waits at least this long. */
  retryAfterSecs: number | null;
  snapshotsApplied: number;
  snapshotsRejected: number;
  /** A well-formed Replay-From, taken from a failed answer too (see replayFromFailedAnswer). */
  replayFrom: ReplayFrom | null;
}

export interface ReplayFromRecord {
  value: string;
  receivedAt: string;
  source: ExchangeKind;
}

/**
 * One heartbeat and everything its answer asks of the agent: bootstrap
 * snapshots into the reducer, Replay-From to the replay port, the clock-skew
 * estimate. The boot-recovery handshake and the steady heartbeat are both this.
 */
@Injectable()
export class HeartbeatExchange {
  private readonly logger = new Logger(HeartbeatExchange.name);
  /** The clock's own context: an operator filters for it, and it is no fault of the exchange. */
  private readonly clockLogger = new Logger('ClockSkew');
  private lastReplay: ReplayFromRecord | null = null;
  /** The skew last warned about; null while the clocks agree. */
  private warnedSkewSecs: number | null = null;
  private lastClosure: string | null = null;

  constructor(
    private readonly client: ControlPlaneClient,
    private readonly reducer: ReducerService,
    private readonly currentSystem: CurrentSystemReader,
    private readonly uptime: Uptime,
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    @Inject(CLOCK) private readonly clock: Clock,
    private readonly skew: ClockSkew,
    @Inject(REPLAY_PORT) private readonly replayPort: ReplayPort,
  ) {}

  get lastReplayFrom(): ReplayFromRecord | null {
    return this.lastReplay;
  }

  /** Seconds the CP's clock is ahead of ours (negative: behind), from its `Date` header; ±1 s. */
  get clockSkewSecs(): number | null {
    return this.skew.secs;
  }

  /** The closure the last heartbeat reported; null when the link was unreadable. */
  get currentClosure(): string | null {
    return this.lastClosure;
  }

  async send(kind: ExchangeKind, deadlineMs: number, signal?: AbortSignal): Promise<ExchangeOutcome> {
    const closure = await this.currentSystem.read();
    this.lastClosure = closure;
    const body: HeartbeatRequest = {
      hostname: this.config.machineId,
      // rollout_id stays absent: the boot-recovery shape makes the CP return bootstrap_rollouts.
      ...(closure === null ? {} : { current_closure: closure }),
      at: this.clock.now().toISOString(),
      agent_version: AGENT_VERSION,
      uptime_secs: this.uptime.seconds(),
      last_event_seq_by_rollout: this.reducer.lastEventSeqByRollout(),
    };
    const sentAt = this.clock.now().getTime();
    const sentMono = this.clock.monotonicMs();
    const result = await this.client.heartbeat(body, { deadlineMs, signal });
    const receivedAt = this.clock.now().getTime();
    // A wall clock that stepped during the call would put our midpoint anywhere between its old and new time.
    const stepped = Math.abs(receivedAt - sentAt - (this.clock.monotonicMs() - sentMono)) > WALL_STEP_TOLERANCE_MS;
    const headers = result.ok ? result.response.headers : result.headers;
    if (headers && !stepped) this.estimateSkew(headers['date'], sentAt, receivedAt);

    if (!result.ok) {
      const retryAfterSecs = result.failure.kind === 'http-status' ? result.failure.retryAfterSecs : null;
      const replayFrom = result.headers ? this.replayFromFailedAnswer(result.headers, result.failure, kind) : null;
      // Snapshots are never taken from a failed answer: its body is not the heartbeat response.
      return { ok: false, failure: result.failure, retryAfterSecs, snapshotsApplied: 0, snapshotsRejected: 0, replayFrom };
    }

    const replayFrom = this.takeReplayFrom(result.response.headers[HEADER_REPLAY_FROM.toLowerCase()], kind, null);
    const { applied, rejected } = await this.applySnapshots(result.response.body.bootstrap_rollouts ?? [], kind);
    return { ok: true, failure: null, retryAfterSecs: null, snapshotsApplied: applied, snapshotsRejected: rejected, replayFrom };
  }

  /**
   * PROTOCOL §2 makes any non-2xx a failed heartbeat, and §7 ties Replay-From
   * to no status. A CP restoring its database answers 503 and may already
   * know what it lost; a replay is safe to repeat (the CP dedups on seq), so
   * it is honoured at once rather than after the first 2xx, and the
   * heartbeat still counts as failed. Not on 401, 403 or 426: there the CP
   * refuses our identity or protocol, so it has not matched this host to its
   * records and its replay request is not about our events.
   */
  private replayFromFailedAnswer(headers: Record<string, string>, failure: CpFailure, kind: ExchangeKind): ReplayFrom | null {
    const raw = headers[HEADER_REPLAY_FROM.toLowerCase()];
    if (raw === undefined) return null;
    const status = failure.kind === 'http-status' || failure.kind === 'bad-body' ? failure.status : null;
    if (status !== null && IDENTITY_REFUSED.has(status)) {
      this.logger.warn(
        `${HEADER_REPLAY_FROM}: ${truncate(raw.trim())} came on an HTTP ${status} answer, which refuses this agent's identity or protocol; ignored, nothing is replayed`,
        { status },
      );
      return null;
    }
    return this.takeReplayFrom(raw, kind, status);
  }

  private takeReplayFrom(raw: string | undefined, kind: ExchangeKind, failedStatus: number | null): ReplayFrom | null {
    if (raw === undefined) return null;
    const parsed = parseReplayFrom(raw);
    if (!parsed.ok) {
      this.logger.warn(
        `${HEADER_REPLAY_FROM} from ${this.client.baseUrl} is malformed (${parsed.reason}, value "${truncate(raw)}"); ignored, nothing is replayed`,
      );
      return null;
    }
    this.lastReplay = { value: raw.trim(), receivedAt: this.clock.now().toISOString(), source: kind };
    const on = failedStatus === null ? '' : ` on a failed HTTP ${failedStatus} answer`;
    this.logger.warn(
      `the control plane asks for a replay${on} (${HEADER_REPLAY_FROM}: ${raw.trim()}); replaying from the event log`,
      failedStatus === null ? { source: kind } : { source: kind, status: failedStatus },
    );
    this.replayPort.requestReplay(parsed.value, kind);
    return parsed.value;
  }

  private async applySnapshots(raw: unknown[], kind: ExchangeKind): Promise<{ applied: number; rejected: number }> {
    let applied = 0;
    let rejected = 0;
    for (const [i, item] of raw.entries()) {
      const where = `bootstrap_rollouts[${i}]`;
      const checked = validateWire(HostRolloutSnapshot, item, where);
      if (!checked.ok) {
        rejected += 1;
        this.logger.warn(
          `${kind} answer: snapshot ${where} is invalid (${checked.problems.join('; ')}); dropped, the reducer never sees it`,
        );
        continue;
      }
      const snapshot = checked.value;
      if (snapshot.hostname !== this.config.machineId) {
        rejected += 1;
        this.logger.warn(
          `${kind} answer: snapshot ${where} (${snapshot.rolloutId}) is for host "${snapshot.hostname}", not "${this.config.machineId}"; dropped`,
          { rolloutId: snapshot.rolloutId, hostname: snapshot.hostname, source: kind },
        );
        continue;
      }
      await this.reducer.submit({ type: 'Snapshot', snapshot });
      applied += 1;
    }
    if (applied > 0) this.logger.log(`${kind} answer: ${applied} rollout snapshot(s) from the control plane applied`);
    return { applied, rejected };
  }

  private estimateSkew(dateHeader: string | undefined, sentAtMs: number, receivedAtMs: number): void {
    if (dateHeader === undefined) return;
    const cpMs = Date.parse(dateHeader);
    if (Number.isNaN(cpMs)) return;
    // The CP stamped Date somewhere between our send and receive, truncated
    // to the second: compare the middle of that second with our midpoint.
    const ours = (sentAtMs + receivedAtMs) / 2;
    const skew = Math.round((cpMs + 500 - ours) / 100) / 10;
    this.skew.record(skew);
    this.sayClockSkew(skew);
  }

  /** Once when the clocks part (and again if the host's clock crosses to the CP's other side), once when they agree again. */
  private sayClockSkew(skew: number): void {
    const skewed = Math.abs(skew) >= CLOCK_SKEW_WARN_SECS;
    if (skewed && (this.warnedSkewSecs === null || Math.sign(skew) !== Math.sign(this.warnedSkewSecs))) {
      this.warnedSkewSecs = skew;
      this.clockLogger.warn(
        `this host's clock is ${Math.round(Math.abs(skew))} s ${skew < 0 ? 'ahead of' : 'behind'} the control plane's (by its Date header); heartbeats keep their cadence, but the times this agent reports are off by as much: check the host's time sync`,
      );
    } else if (!skewed && this.warnedSkewSecs !== null) {
      this.warnedSkewSecs = null;
      this.clockLogger.log(`this host's clock agrees with the control plane's again (within ${Math.round(Math.abs(skew))} s)`);
    }
  }
}

export function describeOutcome(outcome: ExchangeOutcome): string {
  return outcome.failure ? describeFailure(outcome.failure) : 'ok';
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
