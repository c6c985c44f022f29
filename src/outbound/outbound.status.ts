import { Inject, Injectable } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import type { StatusContributor } from '../common/status-contributor';
import type { RolloutState } from '../protocol/rollout';
import { ReducerService } from '../reducer/reducer.service';
import type { RolloutEntry } from '../reducer/reducer.types';
import { RolloutHistory, type RolloutTransition } from '../reducer/rollout-history';
import { DrainerService, type ReplayStatus } from './drainer.service';
import { EventLogService, type EventLogWriteHealth } from './event-log.service';

/** `/status` `rollouts[]`: a rollout the reducer holds, with how far its events got. */
export interface RolloutStatus {
  rolloutId: string;
  channel: string;
  state: RolloutState;
  /** null when not known (rebuilt from a log that stored none). */
  targetClosure: string | null;
  lastEventSeq: number;
  /** The highest seq the CP acknowledged; null when none. */
  lastDeliveredSeq: number | null;
  /** When it entered `state` (RolloutHistory.since); null when not known. */
  since: string | null;
  /** When the soak ends; null unless Soaking. */
  soakDueAt: string | null;
  /** The closure the host ran when the dispatch arrived; null when not known. */
  closureBefore: string | null;
  /** The closure the host ran once the rollout acted: observed after the activation, or the one rolled back to; null before. */
  closureAfter: string | null;
  /** Its last state changes in this process, oldest first (at most TRANSITIONS_KEPT). */
  transitions: RolloutTransition[];
}

/** `/status` `outbound`: the backlog, delivery and replay. */
export interface OutboundStatus {
  pending: number;
  delivered: number;
  refused: number;
  oldestPendingAgeSecs: number | null;
  lastDeliveredAt: string | null;
  /** Why delivery is paused (the CP refuses this agent's identity or version); null while it is not. */
  deliveryPausedReason: string | null;
  replay: ReplayStatus;
  logBytes: number;
}

/**
 * `/status` `rollouts`, `outbound` and `eventLog`. The rollouts are listed
 * here, not by the reducer, because each carries its last delivered seq,
 * which only the event log knows (and the reducer imports no outbound).
 */
export interface OutboundStatusPart {
  rollouts: RolloutStatus[];
  outbound: OutboundStatus;
  eventLog: EventLogWriteHealth;
}

@Injectable()
export class OutboundStatusContributor implements StatusContributor<OutboundStatusPart> {
  constructor(
    private readonly reducer: ReducerService,
    private readonly eventLog: EventLogService,
    private readonly drainer: DrainerService,
    private readonly history: RolloutHistory,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  statusPart(): OutboundStatusPart {
    const rollouts = Object.values(this.reducer.current().rollouts)
      .sort((a, b) => a.dispatchedAt.localeCompare(b.dispatchedAt) || a.rolloutId.localeCompare(b.rolloutId))
      .map((r) => ({
        rolloutId: r.rolloutId,
        channel: r.channel,
        state: r.state,
        targetClosure: r.targetClosure === '' ? null : r.targetClosure,
        lastEventSeq: r.lastEventSeq,
        lastDeliveredSeq: this.eventLog.lastDeliveredSeq(r.rolloutId),
        since: this.history.since(r),
        soakDueAt: r.state === 'Soaking' ? (r.soakDueAt ?? null) : null,
        closureBefore: r.currentClosureAtDispatch ?? null,
        closureAfter: closureAfter(r),
        transitions: [...this.history.transitions(r.rolloutId)],
      }));
    const log = this.eventLog.stats();
    return {
      rollouts,
      outbound: {
        pending: log.pending,
        delivered: log.delivered,
        refused: log.refused,
        // Wall clock on purpose: the event may have been logged by an earlier process, and no monotonic reading spans a restart.
        oldestPendingAgeSecs:
          log.oldestPendingAt === null
            ? null
            : Math.max(0, Math.floor((this.clock.now().getTime() - Date.parse(log.oldestPendingAt)) / 1000)),
        lastDeliveredAt: log.lastDeliveredAt,
        deliveryPausedReason: this.drainer.deliveryPausedReason(),
        replay: this.drainer.replayStatus(),
        logBytes: log.bytes,
      },
      eventLog: this.eventLog.writeHealth(),
    };
  }
}

function closureAfter(r: RolloutEntry): string | null {
  if (r.state === 'Reverted') return r.revertedToClosure ?? null;
  // Before the activation completed, `currentClosure` is only what a snapshot said the host ran then.
  const acted = r.activationCompletedAt !== undefined || r.convergedAt !== undefined;
  return acted ? (r.currentClosure ?? null) : null;
}
