import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { describeFailure, failureFields } from '../comms/cp-failure';
import { BootGate } from '../lifecycle/boot-gate';
import { TIMEOUTS } from '../protocol/protocol.constants';
import { rebuildFromLog } from '../reducer/rebuild';
import { ReducerService } from '../reducer/reducer.service';
import { type ExchangeOutcome, HeartbeatExchange } from './heartbeat-exchange';
import { EVENT_HISTORY_PORT, type EventHistoryPort } from './recovery.ports';

export interface RecoveryStatus {
  completedAt: string | null;
  reachedControlPlane: boolean | null;
  snapshotsApplied: number;
}

/**
 * The boot-recovery handshake (PROTOCOL §3): one heartbeat at start, whose
 * snapshots are in the reducer before any worker starts. Workers wait on
 * `whenComplete()`; a CP that is down delays nothing beyond the deadline.
 */
@Injectable()
export class RecoveryService implements OnModuleInit, OnApplicationBootstrap, OnModuleDestroy {
  private readonly logger = new Logger(RecoveryService.name);
  private outcome: ExchangeOutcome | null = null;
  private completedAt: Date | null = null;
  private started = false;
  private readonly shutdown = new AbortController();
  private resolveDone!: (outcome: ExchangeOutcome) => void;
  private readonly done = new Promise<ExchangeOutcome>((resolve) => {
    this.resolveDone = resolve;
  });

  constructor(
    private readonly exchange: HeartbeatExchange,
    private readonly bootGate: BootGate,
    private readonly reducer: ReducerService,
    @Inject(EVENT_HISTORY_PORT) private readonly history: EventHistoryPort,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  /**
   * Before the handshake: the reducer's state is rebuilt from the event log,
   * so a restart while the CP is unreachable neither forgets a rollout in
   * flight nor reuses a seq (the CP's dedup would drop it for good).
   */
  async onModuleInit(): Promise<void> {
    await this.history.ready();
    const records = this.history.records();
    if (records.length === 0) return;
    const rebuilt = rebuildFromLog(records);
    // Compaction may have dropped a rollout's newest events; its seq counter must not go back.
    const rollouts = Object.fromEntries(
      Object.entries(rebuilt.rollouts).map(([id, r]) => [id, { ...r, lastEventSeq: Math.max(r.lastEventSeq, this.history.lastSeq(id)) }]),
    );
    const state = { rollouts };
    this.reducer.restore(state);
    const restored = Object.values(rollouts);
    this.logger.log(
      `restored ${restored.length} rollout(s) from ${records.length} logged event(s): ${restored.map((r) => `${r.rolloutId} ${r.state} (seq ${r.lastEventSeq})`).join(', ')}`,
      { rollouts: restored.length, events: records.length },
    );
  }

  onApplicationBootstrap(): void {
    // Not awaited: the admin endpoint should answer while the handshake waits on a slow CP.
    this.run().catch((err: unknown) => {
      this.logger.error(`boot-recovery handshake crashed: ${(err as Error).stack ?? String(err)}; starting the workers anyway`);
    });
  }

  /** A handshake still waiting on the CP (up to its 30 s deadline) must not outlive the app. */
  async onModuleDestroy(): Promise<void> {
    this.shutdown.abort();
    if (this.started) await this.done;
  }

  /** The handshake's outcome; null until it is over. */
  result(): ExchangeOutcome | null {
    return this.outcome;
  }

  /** Resolves once the handshake is over, whatever its outcome. */
  whenComplete(): Promise<ExchangeOutcome> {
    return this.done;
  }

  status(): RecoveryStatus {
    return {
      completedAt: this.completedAt?.toISOString() ?? null,
      reachedControlPlane: this.outcome ? this.outcome.ok : null,
      snapshotsApplied: this.outcome?.snapshotsApplied ?? 0,
    };
  }

  /** Runs the handshake; exactly once per process. */
  async run(): Promise<ExchangeOutcome> {
    if (this.started) return this.done;
    this.started = true;
    let outcome: ExchangeOutcome;
    try {
      outcome = await this.exchange.send('boot-recovery', TIMEOUTS.bootRecoveryMs, this.shutdown.signal);
    } catch (err) {
      outcome = {
        ok: false,
        failure: { kind: 'network', detail: err instanceof Error ? err.message : String(err) },
        retryAfterSecs: null,
        snapshotsApplied: 0,
        snapshotsRejected: 0,
        replayFrom: null,
      };
    }
    this.outcome = outcome;
    this.completedAt = this.clock.now();
    try {
      if (this.shutdown.signal.aborted && !outcome.ok) {
        this.logger.log('boot recovery: abandoned, the agent is shutting down');
      } else if (outcome.ok) {
        this.logger.log(
          `boot recovery: control plane reached; ${outcome.snapshotsApplied} snapshot(s) applied${outcome.snapshotsRejected ? `, ${outcome.snapshotsRejected} rejected` : ''}; starting the workers`,
          { snapshotsApplied: outcome.snapshotsApplied, snapshotsRejected: outcome.snapshotsRejected },
        );
      } else if (outcome.failure) {
        this.logger.warn(
          `boot recovery: control plane not reached (${describeFailure(outcome.failure)}); starting anyway, the heartbeat keeps trying`,
          failureFields(outcome.failure),
        );
      }
    } finally {
      // Whatever happened above, the gated workers start and shutdown does not wait on a handshake that never ends.
      // The gate first: whoever awaits whenComplete() finds the workers it gates already started.
      this.bootGate.open({ reachedControlPlane: outcome.ok });
      this.resolveDone(outcome);
    }
    return outcome;
  }
}
