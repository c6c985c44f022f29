import { Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { ActivationModule } from '../activation/activation.module';
import { ActivationStatusContributor } from '../activation/activation.status';
import type { StatusContributor } from '../common/status-contributor';
import { CommsModule } from '../comms/comms.module';
import { CommsStatusContributor } from '../comms/comms.status';
import { DispatchModule } from '../dispatch/dispatch.module';
import { DispatchStatusContributor } from '../dispatch/dispatch.status';
import { HealthModule } from '../health/health.module';
import { HealthStatusContributor } from '../health/health.status';
import { HeartbeatModule } from '../heartbeat/heartbeat.module';
import { HeartbeatStatusContributor } from '../heartbeat/heartbeat.status';
import { JobsModule } from '../jobs/jobs.module';
import { JobsStatusContributor } from '../jobs/jobs.status';
import { OutboundModule } from '../outbound/outbound.module';
import { OutboundStatusContributor } from '../outbound/outbound.status';
import { ProbesModule } from '../probes/probes.module';
import { ProbesStatusContributor } from '../probes/probes.status';
import { RecoveryModule } from '../recovery/recovery.module';
import { RecoveryStatusContributor } from '../recovery/recovery.status';
import { ReducerModule } from '../reducer/reducer.module';
import { ReducerStatusContributor } from '../reducer/reducer.status';
import { TrustModule } from '../trust/trust.module';
import { TrustStatusContributor } from '../trust/trust.status';
import { AdminExceptionFilter } from './admin-exception.filter';
import { STATUS_CONTRIBUTORS } from './admin.constants';
import { AgentStatusContributor } from './agent.status';
import { HealthController } from './health.controller';
import { MetricsController } from './metrics.controller';
import { StatusController } from './status.controller';

/** Each module's part of /status: the document is these, merged (status.contract.ts types it). */
const CONTRIBUTORS = [
  AgentStatusContributor,
  RecoveryStatusContributor,
  HealthStatusContributor,
  HeartbeatStatusContributor,
  OutboundStatusContributor,
  DispatchStatusContributor,
  ActivationStatusContributor,
  ProbesStatusContributor,
  TrustStatusContributor,
  CommsStatusContributor,
  ReducerStatusContributor,
  JobsStatusContributor,
];

/**
 * The operator's window on the agent: read-only HTTP on the admin listener
 * (GET and HEAD only: see admin-http.ts). It reads the modules it imports
 * and changes nothing; nothing imports it.
 */
@Module({
  imports: [
    CommsModule,
    ReducerModule,
    RecoveryModule,
    OutboundModule,
    HeartbeatModule,
    DispatchModule,
    ActivationModule,
    ProbesModule,
    TrustModule,
    HealthModule,
    JobsModule,
  ],
  controllers: [StatusController, HealthController, MetricsController],
  providers: [
    AgentStatusContributor,
    { provide: STATUS_CONTRIBUTORS, inject: CONTRIBUTORS, useFactory: (...contributors: StatusContributor[]) => contributors },
    // The app's only HTTP listener is this one, so the app-wide filter is the admin edge's.
    { provide: APP_FILTER, useClass: AdminExceptionFilter },
  ],
})
export class AdminModule {}
