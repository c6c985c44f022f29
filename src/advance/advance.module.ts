import { Module } from '@nestjs/common';
import { JobsModule } from '../jobs/jobs.module';
import { AdvanceTicker } from './advance.ticker';

/** Time for the reducer: the advance tick that converges soaking rollouts. */
@Module({ imports: [JobsModule], providers: [AdvanceTicker], exports: [AdvanceTicker] })
export class AdvanceModule {}
