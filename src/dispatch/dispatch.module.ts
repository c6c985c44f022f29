import { Module } from '@nestjs/common';
import { CommsModule } from '../comms/comms.module';
import { JobsModule } from '../jobs/jobs.module';
import { RecoveryModule } from '../recovery/recovery.module';
import { ReducerModule } from '../reducer/reducer.module';
import { TrustModule } from '../trust/trust.module';
import { DispatchVerifier } from './dispatch-verifier';
import { DispatchStatusContributor } from './dispatch.status';
import { DispatchWorker } from './dispatch.worker';

/** The dispatch long-poll: the CP's "activate this closure" orders, verified (PROTOCOL §12), into the reducer. */
@Module({
  imports: [CommsModule, ReducerModule, RecoveryModule, JobsModule, TrustModule],
  providers: [DispatchVerifier, DispatchWorker, DispatchStatusContributor],
  exports: [DispatchWorker, DispatchStatusContributor],
})
export class DispatchModule {}
