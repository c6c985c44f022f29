import { Module } from '@nestjs/common';
import { ActivationModule } from '../activation/activation.module';
import { DispatchModule } from '../dispatch/dispatch.module';
import { HeartbeatModule } from '../heartbeat/heartbeat.module';
import { JobsModule } from '../jobs/jobs.module';
import { OutboundModule } from '../outbound/outbound.module';
import { ComponentHealthService } from './components.service';
import { HealthService } from './health.service';

/** Liveness, readiness and per-component health, judged from the jobs' own progress. */
@Module({
  imports: [HeartbeatModule, OutboundModule, DispatchModule, ActivationModule, JobsModule],
  providers: [HealthService, ComponentHealthService],
  exports: [HealthService, ComponentHealthService],
})
export class HealthModule {}
