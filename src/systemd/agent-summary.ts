import { Inject, Injectable } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { Uptime } from '../clock/uptime';
import { HealthService } from '../health/health.service';
import { HeartbeatService } from '../heartbeat/heartbeat.service';
import { EventLogService } from '../outbound/event-log.service';
import { TERMINAL_STATES } from '../protocol/rollout';
import { ReducerService } from '../reducer/reducer.service';
import { type AgentSnapshot, type ControlPlaneView, type EventLogFailingView, failureCause } from './notify.format';

/** Reads what the STATUS= line says from the services that know it; no side effects. */
@Injectable()
export class AgentSummary {
  constructor(
    private readonly health: HealthService,
    private readonly heartbeat: HeartbeatService,
    private readonly eventLog: EventLogService,
    private readonly reducer: ReducerService,
    private readonly uptime: Uptime,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  read(phase: 'booting' | 'running'): AgentSnapshot {
    const pendingEvents = this.eventLog.stats().pending;
    if (phase === 'booting') {
      return { phase, waitedSecs: (this.clock.monotonicMs() - this.uptime.startedMonoMs) / 1000, pendingEvents };
    }
    return {
      phase,
      controlPlane: this.controlPlane(),
      eventLogFailing: this.eventLogFailing(),
      pendingEvents,
      activeRollouts: Object.values(this.reducer.current().rollouts)
        .map((r) => r.state)
        .filter((s) => !TERMINAL_STATES.has(s)),
      notLive: this.health.liveness().checks.filter((c) => !c.ok),
    };
  }

  private eventLogFailing(): EventLogFailingView | null {
    const h = this.eventLog.writeHealth();
    const forSecs = this.eventLog.failingForSecs();
    if (h.failingSince === null || forSecs === null) return null;
    // The errno code is what fits a one-line STATUS=; /status has the whole message.
    return { forSecs, cause: h.lastError?.code ?? h.lastError?.cause ?? null };
  }

  private controlPlane(): ControlPlaneView {
    const readiness = this.health.readiness();
    const status = this.heartbeat.status();
    const cause = status.lastError === null ? null : failureCause(status.lastError.kind, status.lastError.message);
    const lastSuccessMono = this.heartbeat.progress().lastSuccessMono;
    if (readiness.reachable && lastSuccessMono !== null) {
      return {
        kind: 'ok',
        lastSuccessSecsAgo: (this.clock.monotonicMs() - lastSuccessMono) / 1000,
        failuresSince: status.consecutiveFailures,
        cause: status.consecutiveFailures > 0 ? cause : null,
      };
    }
    return { kind: 'unreachable', forSecs: readiness.failingForSecs ?? 0, cause };
  }
}
