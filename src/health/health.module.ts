import { Module } from '@nestjs/common';
import { ActivationModule } from '../activation/activation.module';
import { CommsModule } from '../comms/comms.module';
import { DispatchModule } from '../dispatch/dispatch.module';
import { HeartbeatModule } from '../heartbeat/heartbeat.module';
import { JobsModule } from '../jobs/jobs.module';
import { LifecycleModule } from '../lifecycle/lifecycle.module';
import { OutboundModule } from '../outbound/outbound.module';
import { ReducerModule } from '../reducer/reducer.module';
import { ComponentHealthService } from './components.service';
import { HealthService } from './health.service';
import { HealthStatusContributor } from './health.status';

/** Liveness, readiness and per-component health, judged from the jobs' own progress. */
@Module({
  imports: [HeartbeatModule, OutboundModule, DispatchModule, ActivationModule, CommsModule, ReducerModule, LifecycleModule, JobsModule],
  providers: [HealthService, ComponentHealthService, HealthStatusContributor],
  exports: [HealthService, HealthStatusContributor],
})
export class HealthModule {}
