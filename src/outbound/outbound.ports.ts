import { Inject, Injectable, Logger } from '@nestjs/common';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import type { EventEnvelope } from '../protocol/events.wire';
import { formatReplayFrom, type ReplayFrom } from '../protocol/replay-from';
import type { EventHistoryPort, ReplayPort } from '../recovery/recovery.ports';
import type { EffectOf, EmitEventPort } from '../reducer/reducer.ports';
import type { LogRecord } from '../reducer/reducer.types';
import { DrainerService } from './drainer.service';
import { EventLogService } from './event-log.service';

/**
 * What the Outbound module offers the rest of the agent: the reducer's
 * emit-event port (durable first, then delivered), and recovery's replay
 * port (Replay-From feeds it) and event history (the reducer is rebuilt
 * from it at start).
 */
@Injectable()
export class OutboundPorts implements EmitEventPort, ReplayPort, EventHistoryPort {
  private readonly logger = new Logger(OutboundPorts.name);

  constructor(
    private readonly log: EventLogService,
    private readonly drainer: DrainerService,
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
  ) {}

  async emit(effects: readonly EffectOf<'EmitEvent'>[]): Promise<void> {
    const batch = effects.map((e) => {
      const envelope: EventEnvelope = { hostname: this.config.machineId, rolloutId: e.rolloutId, event: e.event };
      // These bytes are what every send and every replay of the event carries.
      return { rolloutId: e.rolloutId, seq: e.event.seq, kind: e.event.kind, envelope: JSON.stringify(envelope), meta: e.meta };
    });
    await this.log.append(batch);
    this.drainer.eventsAppended(batch);
  }

  ready(): Promise<void> {
    return this.log.ready();
  }

  records(): readonly LogRecord[] {
    return this.log.records();
  }

  lastSeq(rolloutId: string): number {
    return this.log.lastSeq(rolloutId);
  }

  requestReplay(value: ReplayFrom, source: 'boot-recovery' | 'heartbeat'): void {
    const targets =
      value.form === 'plain' ? this.plainTarget(value.fromSeq) : value.entries.map((e) => ({ rolloutId: e.rolloutId, fromSeq: e.fromSeq }));
    for (const { rolloutId, fromSeq } of targets) {
      // A refused event was judged invalid by the CP: PROTOCOL §6 says never to send it again.
      const seqs = this.log
        .events(rolloutId)
        .filter((e) => e.seq > fromSeq && e.delivery.state !== 'refused')
        .map((e) => e.seq);
      const missing = this.log.missing(rolloutId, fromSeq);
      if (missing.length > 0) {
        this.logger.warn(
          `replay of ${rolloutId} from seq ${fromSeq}: ${missing.length} event(s) (seqs ${summarize(missing)}) were already dropped by retention; the control plane cannot get them from this agent`,
          { rolloutId, fromSeq, missing: missing.length },
        );
      }
      this.logger.log(
        `${source} asked for a replay (${formatReplayFrom(value)}): resending ${seqs.length} event(s) of ${rolloutId} after seq ${fromSeq}`,
        { rolloutId, fromSeq, resending: seqs.length, source },
      );
      this.drainer.replay(rolloutId, fromSeq, seqs, missing);
    }
  }

  private plainTarget(fromSeq: number): { rolloutId: string; fromSeq: number }[] {
    // PROTOCOL §7, ours: the plain form means the rollout with the newest logged event.
    const rolloutId = this.log.newestRollout();
    if (rolloutId === undefined) {
      this.logger.log(`replay requested from seq ${fromSeq}, but the event log holds no rollout; nothing to resend`, { fromSeq });
      return [];
    }
    return [{ rolloutId, fromSeq }];
  }
}

function summarize(seqs: number[]): string {
  return seqs.length <= 6 ? seqs.join(', ') : `${seqs.slice(0, 3).join(', ')} … ${seqs.slice(-2).join(', ')}`;
}
