import { Module } from '@nestjs/common';
import { AdvanceTicker } from './advance.ticker';

/** Time for the reducer: the advance tick that converges soaking rollouts. */
@Module({ providers: [AdvanceTicker], exports: [AdvanceTicker] })
export class AdvanceModule {}
