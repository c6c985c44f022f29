import { Module } from '@nestjs/common';
import { JobsModule } from '../jobs/jobs.module';
import { LifecycleModule } from '../lifecycle/lifecycle.module';
import { RecoveryModule } from '../recovery/recovery.module';
import { ReducerModule } from '../reducer/reducer.module';
import { AdvanceTicker } from './advance.ticker';

/** Time for the reducer: the advance tick that converges soaking rollouts. */
@Module({
  imports: [ReducerModule, RecoveryModule, LifecycleModule, JobsModule],
  providers: [AdvanceTicker],
})
export class AdvanceModule {}
