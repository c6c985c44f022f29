import { Controller, Get, ServiceUnavailableException } from '@nestjs/common';
import { type EventLogReadiness, type HealthCheck, HealthService } from '../health/health.service';

/** `GET /readyz`'s body, 200 or 503. */
export interface ReadyzBody {
  /** `unreachable` wins when both fail: it is what older readers of /readyz expect a 503 to mean. */
  status: 'ok' | 'unreachable' | 'event-log-failing';
  /** The control plane answered a heartbeat within `thresholdSecs`. */
  reachable: boolean;
  lastError: string | null;
  failingForSecs: number | null;
  lastSuccessAt: string | null;
  consecutiveFailures: number;
  thresholdSecs: number;
  eventLog: EventLogReadiness;
}

/**
 * `GET /healthz` (is the process making progress) and `GET /readyz` (can it
 * do its job: reach its CP and make its events durable). Kept apart: a
 * failing /healthz stops the systemd watchdog pings and gets the agent
 * restarted, and a restart brings back neither the CP nor disk space.
 */
@Controller()
export class HealthController {
  constructor(private readonly health: HealthService) {}

  @Get('healthz')
  healthz(): { status: 'ok'; checks: HealthCheck[] } {
    const { ok, checks } = this.health.liveness();
    if (!ok) {
      const failing = checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);
      throw new ServiceUnavailableException({ status: 'stuck', failing, checks });
    }
    return { status: 'ok', checks };
  }

  @Get('readyz')
  readyz(): ReadyzBody {
    const r = this.health.readiness();
    const body: ReadyzBody = {
      status: r.ok ? 'ok' : !r.reachable ? 'unreachable' : 'event-log-failing',
      reachable: r.reachable,
      lastError: r.lastError,
      failingForSecs: r.failingForSecs,
      lastSuccessAt: r.lastSuccessAt,
      consecutiveFailures: r.consecutiveFailures,
      thresholdSecs: r.thresholdSecs,
      eventLog: r.eventLog,
    };
    if (!r.ok) throw new ServiceUnavailableException(body);
    return body;
  }
}
