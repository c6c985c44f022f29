import { Module } from '@nestjs/common';
import { CommsModule } from '../comms/comms.module';
import { JobsModule } from '../jobs/jobs.module';
import { RecoveryModule } from '../recovery/recovery.module';
import { ReducerModule } from '../reducer/reducer.module';
import { DispatchStatusContributor } from './dispatch.status';
import { DispatchWorker } from './dispatch.worker';

/** The dispatch long-poll: the CP's "activate this closure" orders, into the reducer. */
@Module({
  imports: [CommsModule, ReducerModule, RecoveryModule, JobsModule],
  providers: [DispatchWorker, DispatchStatusContributor],
  exports: [DispatchWorker, DispatchStatusContributor],
})
export class DispatchModule {}
