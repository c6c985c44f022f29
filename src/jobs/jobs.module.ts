import { Module } from '@nestjs/common';
import { ScheduleModule } from '@nestjs/schedule';
import { LifecycleModule } from '../lifecycle/lifecycle.module';
import { JobRuntime } from './job-runtime.service';
import { JobsStatusContributor } from './jobs.status';

/**
 * The job runtime, on top of @nestjs/schedule (whose orchestrator also
 * mounts the heartbeat's decorated tick). Boot-gated jobs wait on the
 * lifecycle's BootGate.
 */
@Module({
  // One forRoot() for the whole app: Nest 11 tells dynamic modules apart by reference, and a second would mount every decorated job twice.
  imports: [ScheduleModule.forRoot(), LifecycleModule],
  providers: [JobRuntime, JobsStatusContributor],
  exports: [JobRuntime, JobsStatusContributor],
})
export class JobsModule {}
