import { Inject, Injectable } from '@nestjs/common';
import { ActivationPreflight } from '../activation/activation.preflight';
import { type Clock, CLOCK } from '../clock/clock';
import { Uptime } from '../clock/uptime';
import { CERT_EXPIRY_WARNING_DAYS } from '../clock/thresholds';
import { IdentityWatcher } from '../comms/identity-watcher';
import { DispatchWorker } from '../dispatch/dispatch.worker';
import { HeartbeatService } from '../heartbeat/heartbeat.service';
import { DrainerService } from '../outbound/drainer.service';
import { EventLogService, WRITE_PROBE_MS } from '../outbound/event-log.service';
import {
  type ComponentsHealth,
  judgeActivationBackend,
  judgeDelivery,
  judgeDispatchPoll,
  judgeEventLog,
  judgeHeartbeat,
  judgeIdentity,
} from './component-health';
import { HealthService } from './health.service';

/** Reads each component's state from the service that owns it and judges it (component-health.ts); no side effects. */
@Injectable()
export class ComponentHealthService {
  constructor(
    private readonly health: HealthService,
    private readonly heartbeat: HeartbeatService,
    private readonly eventLog: EventLogService,
    private readonly drainer: DrainerService,
    private readonly dispatch: DispatchWorker,
    private readonly preflight: ActivationPreflight,
    private readonly identity: IdentityWatcher,
    private readonly uptime: Uptime,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  components(): ComponentsHealth {
    const readiness = this.health.readiness();
    const nowMs = this.clock.now().getTime();
    const ageSecs = (iso: string | null): number | null => (iso === null ? null : Math.max(0, (nowMs - Date.parse(iso)) / 1000));

    const write = this.eventLog.writeHealth();
    const stats = this.eventLog.stats();
    const delivery = this.drainer.deliveryStatus();
    const dispatch = this.dispatch.status();
    const dispatchProgress = this.dispatch.progress();
    const monoNow = this.clock.monotonicMs();
    const monoAgeSecs = (mono: number | null): number | null => (mono === null ? null : Math.max(0, (monoNow - mono) / 1000));
    const preflight = this.preflight.status();
    const cert = this.identity.certificateStatus();
    const hb = this.heartbeat.status();
    const lastSuccessMono = this.heartbeat.progress().lastSuccessMono;

    return {
      eventLog: judgeEventLog({
        path: write.path,
        failingSince: write.failingSince,
        failuresInStreak: write.failuresInStreak,
        lastCause: write.lastError?.cause ?? null,
        refusingWrites: write.refusingWrites,
        probeEverySecs: WRITE_PROBE_MS / 1000,
        clearedBy: write.clearedBy,
        events: stats.pending + stats.delivered + stats.refused,
        bytes: stats.bytes,
      }),
      delivery: judgeDelivery({
        pending: stats.pending,
        // Wall clock on purpose: the event may have been logged by an earlier process, and no monotonic reading spans a restart.
        oldestPendingAgeSecs: ageSecs(stats.oldestPendingAt),
        pausedReason: delivery.pausedReason,
        consecutiveFailures: delivery.consecutiveFailures,
        lastError: delivery.lastError,
        failingSince: delivery.failingSince,
        started: delivery.started,
      }),
      dispatchPoll: judgeDispatchPoll({
        polling: dispatch.polling,
        consecutiveFailures: dispatch.consecutiveFailures,
        lastError: dispatch.lastError,
        failingSince: dispatch.failingSince,
        failingForSecs: monoAgeSecs(dispatchProgress.failingSinceMono),
        lastPollAgeSecs: monoAgeSecs(dispatchProgress.lastPollMono),
        thresholdSecs: readiness.thresholdSecs,
        held: dispatch.heldOrder,
      }),
      activationBackend: judgeActivationBackend({
        backend: this.preflight.backendName,
        problems: preflight.problems,
        checkedAt: preflight.checkedAt,
      }),
      identity: judgeIdentity({
        configured: cert !== null,
        cn: cert?.cn ?? null,
        validity: cert?.validity ?? null,
        notBefore: cert?.notBefore ?? null,
        notAfter: cert?.notAfter ?? null,
        secondsToExpiry: cert?.secondsToExpiry ?? null,
        lastReloadError: cert?.lastReloadError ?? null,
        expiringDays: CERT_EXPIRY_WARNING_DAYS,
      }),
      heartbeat: judgeHeartbeat({
        reachable: readiness.reachable,
        thresholdSecs: readiness.thresholdSecs,
        lastSuccessAgeSecs: lastSuccessMono === null ? null : (this.clock.monotonicMs() - lastSuccessMono) / 1000,
        failingForSecs: readiness.failingForSecs,
        consecutiveFailures: hb.consecutiveFailures,
        lastError: hb.lastError?.message ?? null,
        // Unreachable with no failure on record: no attempt since the last success, or none answered since start.
        failingSince: hb.failingSince ?? (readiness.reachable ? null : (hb.lastSuccessAt ?? this.uptime.startedAt.toISOString())),
      }),
    };
  }
}
