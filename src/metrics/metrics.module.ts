import { Global, Module } from '@nestjs/common';
import { MetricsService } from './metrics.service';

/**
 * The agent's Prometheus registry. Global and a leaf (it injects nothing), so
 * any service can record into it without an import or a provider cycle.
 */
@Global()
@Module({ providers: [MetricsService], exports: [MetricsService] })
export class MetricsModule {}
