import { Controller, Get, ServiceUnavailableException } from '@nestjs/common';
import { type HealthCheck, HealthService } from '../health/health.service';

/**
 * `GET /healthz` (is the process making progress) and `GET /readyz` (can it
 * reach its CP). Kept apart: an agent that cannot reach its CP is alive, and
 * restarting it would not bring the CP back.
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
  readyz(): Record<string, unknown> {
    const r = this.health.readiness();
    const body = {
      lastError: r.lastError,
      failingForSecs: r.failingForSecs,
      lastSuccessAt: r.lastSuccessAt,
      consecutiveFailures: r.consecutiveFailures,
      thresholdSecs: r.thresholdSecs,
    };
    if (!r.ok) throw new ServiceUnavailableException({ status: 'unreachable', ...body });
    return { status: 'ok', ...body };
  }
}
