import { Module } from '@nestjs/common';
import { ActivationModule } from '../activation/activation.module';
import { DispatchModule } from '../dispatch/dispatch.module';
import { HealthModule } from '../health/health.module';
import { HeartbeatModule } from '../heartbeat/heartbeat.module';
import { OutboundModule } from '../outbound/outbound.module';
import { HealthController } from './health.controller';
import { MetricsController } from './metrics.controller';
import { StatusController } from './status.controller';

/** The operator's window on the agent: read-only HTTP on the admin listener. Nothing imports it. */
@Module({
  imports: [HeartbeatModule, OutboundModule, ActivationModule, DispatchModule, HealthModule],
  controllers: [StatusController, HealthController, MetricsController],
})
export class AdminModule {}
