import { type DynamicModule, Module } from '@nestjs/common';
import { ActivationModule } from './activation/activation.module';
import { AdminModule } from './admin/admin.module';
import { AdvanceModule } from './advance/advance.module';
import { ClockModule } from './clock/clock.module';
import { CommsModule } from './comms/comms.module';
import type { AgentConfig } from './config/config.loader';
import { ConfigModule } from './config/config.module';
import { DispatchModule } from './dispatch/dispatch.module';
import { HeartbeatModule } from './heartbeat/heartbeat.module';
import { JobsModule } from './jobs/jobs.module';
import { MetricsModule } from './metrics/metrics.module';
import { OutboundModule } from './outbound/outbound.module';
import { ProbesModule } from './probes/probes.module';
import { RecoveryModule } from './recovery/recovery.module';
import { ReducerModule } from './reducer/reducer.module';
import { SystemdModule } from './systemd/systemd.module';
import { TrustModule } from './trust/trust.module';

/**
 * The root module: the feature modules, nothing else. Config, clock and
 * metrics are global (every module uses them); each other dependency is in
 * the `imports` of the module that has it (ARCHITECTURE.md draws them).
 */
@Module({})
export class AgentModule {
  static forRoot(config: AgentConfig): DynamicModule {
    return {
      module: AgentModule,
      imports: [
        ConfigModule.forRoot(config),
        ClockModule,
        MetricsModule,
        JobsModule,
        CommsModule,
        ReducerModule,
        OutboundModule,
        RecoveryModule,
        TrustModule,
        ActivationModule,
        ProbesModule,
        HeartbeatModule,
        DispatchModule,
        AdvanceModule,
        AdminModule,
        SystemdModule,
      ],
    };
  }
}
