import { type DynamicModule, Module } from '@nestjs/common';
import { ActivationModule } from './activation/activation.module';
import { AdminModule } from './admin/admin.module';
import { AdvanceModule } from './advance/advance.module';
import { ClockModule } from './clock/clock.module';
import { CommsModule } from './comms/comms.module';
import type { TlsIdentity } from './comms/identity';
import type { AgentConfig } from './config/config.loader';
import { ConfigModule } from './config/config.module';
import { DispatchModule } from './dispatch/dispatch.module';
import { HeartbeatModule } from './heartbeat/heartbeat.module';
import { JobsModule } from './jobs/jobs.module';
import { LifecycleModule } from './lifecycle/lifecycle.module';
import { MetricsModule } from './metrics/metrics.module';
import { OutboundModule } from './outbound/outbound.module';
import { RecoveryModule } from './recovery/recovery.module';
import { ReducerModule } from './reducer/reducer.module';
import { DEFAULT_SUSTAINED_FAILURE_THRESHOLD_SECS } from './reducer/reducer.types';
import { SystemdModule } from './systemd/systemd.module';

/** The root module: the feature modules, wired by DI; nothing else. */
@Module({})
export class AgentModule {
  static forRoot(config: AgentConfig, identity: TlsIdentity): DynamicModule {
    return {
      module: AgentModule,
      imports: [
        ConfigModule.forRoot(config),
        ClockModule,
        LifecycleModule,
        MetricsModule,
        JobsModule,
        CommsModule.forRoot(identity),
        // The reducer's effects leave through ports these modules provide.
        ReducerModule.forRoot(
          {
            onHealthFailure: config.onHealthFailure,
            sustainedFailureThresholdSecs: DEFAULT_SUSTAINED_FAILURE_THRESHOLD_SECS,
          },
          [OutboundModule, ActivationModule],
        ),
        RecoveryModule.forRoot([OutboundModule]),
        HeartbeatModule,
        DispatchModule,
        AdvanceModule,
        AdminModule,
        SystemdModule,
      ],
    };
  }
}
