import { Global, Module } from '@nestjs/common';
import { LoopDelaySampler } from './loop-delay.sampler';
import { MetricsService } from './metrics.service';

/**
 * The agent's Prometheus registry, and the one event-loop delay monitor that
 * the process metrics and liveness share. Global and a leaf (it injects
 * nothing), so any service can record into it without an import or a
 * provider cycle.
 */
@Global()
@Module({
  providers: [MetricsService, { provide: LoopDelaySampler, useFactory: () => new LoopDelaySampler() }],
  exports: [MetricsService, LoopDelaySampler],
})
export class MetricsModule {}
