import { Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { ActivationModule } from '../activation/activation.module';
import { CommsModule } from '../comms/comms.module';
import { DispatchModule } from '../dispatch/dispatch.module';
import { HealthModule } from '../health/health.module';
import { HeartbeatModule } from '../heartbeat/heartbeat.module';
import { OutboundModule } from '../outbound/outbound.module';
import { RecoveryModule } from '../recovery/recovery.module';
import { ReducerModule } from '../reducer/reducer.module';
import { AdminExceptionFilter } from './admin-exception.filter';
import { HealthController } from './health.controller';
import { MetricsController } from './metrics.controller';
import { StatusController } from './status.controller';

/**
 * The operator's window on the agent: read-only HTTP on the admin listener
 * (GET and HEAD only: see admin-http.ts). It reads the modules it imports
 * and changes nothing; nothing imports it.
 */
@Module({
  imports: [CommsModule, ReducerModule, RecoveryModule, OutboundModule, HeartbeatModule, DispatchModule, ActivationModule, HealthModule],
  controllers: [StatusController, HealthController, MetricsController],
  // The app's only HTTP listener is this one, so the app-wide filter is the admin edge's.
  providers: [{ provide: APP_FILTER, useClass: AdminExceptionFilter }],
})
export class AdminModule {}
