import { Controller, Get, Inject } from '@nestjs/common';
import { ActivationPreflight } from '../activation/activation.preflight';
import { ActivationService } from '../activation/activation.service';
import { type Clock, CLOCK } from '../clock/clock';
import { Uptime } from '../clock/uptime';
import { IdentityWatcher } from '../comms/identity-watcher';
import { DrainerService } from '../outbound/drainer.service';
import { EventLogService } from '../outbound/event-log.service';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { DispatchWorker } from '../dispatch/dispatch.worker';
import { ComponentHealthService } from '../health/components.service';
import { HeartbeatService } from '../heartbeat/heartbeat.service';
import { CurrentSystemReader } from '../recovery/current-system.reader';
import { RecoveryService } from '../recovery/recovery.service';
import { ReducerService } from '../reducer/reducer.service';
import { AGENT_VERSION } from '../version';

/** `GET /status`: what an operator asks first. Key names are a contract; absent values are null; no key material. */
@Controller()
export class StatusController {
  constructor(
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    private readonly uptime: Uptime,
    private readonly heartbeat: HeartbeatService,
    private readonly recovery: RecoveryService,
    private readonly reducer: ReducerService,
    private readonly currentSystem: CurrentSystemReader,
    private readonly eventLog: EventLogService,
    private readonly drainer: DrainerService,
    private readonly activation: ActivationService,
    @Inject(CLOCK) private readonly clock: Clock,
    private readonly identity: IdentityWatcher,
    private readonly dispatch: DispatchWorker,
    private readonly preflight: ActivationPreflight,
    private readonly components: ComponentHealthService,
  ) {}

  @Get('status')
  async status(): Promise<Record<string, unknown>> {
    const rollouts = Object.values(this.reducer.current().rollouts)
      .sort((a, b) => a.dispatchedAt.localeCompare(b.dispatchedAt) || a.rolloutId.localeCompare(b.rolloutId))
      .map((r) => ({
        rolloutId: r.rolloutId,
        channel: r.channel,
        state: r.state,
        targetClosure: r.targetClosure === '' ? null : r.targetClosure,
        lastEventSeq: r.lastEventSeq,
        lastDeliveredSeq: this.eventLog.lastDeliveredSeq(r.rolloutId),
      }));
    const log = this.eventLog.stats();
    return {
      machineId: this.config.machineId,
      agentVersion: AGENT_VERSION,
      controlPlaneUrl: this.config.controlPlaneUrl,
      pid: process.pid,
      startedAt: this.uptime.startedAt.toISOString(),
      uptimeSecs: this.uptime.seconds(),
      currentClosure: await this.currentSystem.read(),
      // Each component's state at a glance: what `status` judges first.
      components: this.components.components(),
      heartbeat: this.heartbeat.status(),
      recovery: this.recovery.status(),
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
      dispatch: this.dispatch.status(),
      activation: { ...this.activation.status(), preflight: this.preflight.status() },
      // The client certificate in use: no key material, no PEM.
      certificate: this.identity.certificateStatus(),
      reducer: this.reducer.statistics(),
    };
  }
}
