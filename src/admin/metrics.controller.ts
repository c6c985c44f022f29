import { Controller, Get, Inject, StreamableFile } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { TlsAgentHolder } from '../comms/tls-agent.holder';
import { HeartbeatService } from '../heartbeat/heartbeat.service';
import { MetricsService } from '../metrics/metrics.service';
import { EventLogService } from '../outbound/event-log.service';
import { ReducerService } from '../reducer/reducer.service';

/** `GET /metrics`: Prometheus text; the gauges are read from live state at each scrape. */
@Controller()
export class MetricsController {
  constructor(
    private readonly metrics: MetricsService,
    private readonly heartbeat: HeartbeatService,
    private readonly eventLog: EventLogService,
    private readonly reducer: ReducerService,
    private readonly tls: TlsAgentHolder,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  @Get('metrics')
  async scrape(): Promise<StreamableFile> {
    const hb = this.heartbeat.status();
    const log = this.eventLog.stats();
    const nowMs = this.clock.now().getTime();
    const notAfter = this.tls.currentIdentity().client?.notAfter;
    const text = await this.metrics.scrape({
      consecutiveFailures: hb.consecutiveFailures,
      lastSuccessUnixSecs: hb.lastSuccessAt === null ? null : Date.parse(hb.lastSuccessAt) / 1000,
      clockSkewSecs: hb.clockSkewSecs,
      outbound: { pending: log.pending, delivered: log.delivered, refused: log.refused },
      reducerQueueDepth: this.reducer.statistics().queueDepth,
      rolloutStates: Object.values(this.reducer.current().rollouts).map((r) => r.state),
      clientCertSecondsToExpiry: notAfter === undefined ? null : Math.floor((notAfter.getTime() - nowMs) / 1000),
      eventLogFailing: this.eventLog.writeHealth().failingSince !== null,
    });
    // Sent as bytes: a string would go through Express, which rewrites the content type's parameters.
    return new StreamableFile(Buffer.from(text, 'utf8'), { type: this.metrics.contentType });
  }
}
