import { Injectable } from '@nestjs/common';
import type { StatusContributor } from '../common/status-contributor';
import { type ReducerStats, ReducerService } from './reducer.service';

/** `/status` `reducer`: the input queue and what went through it. */
export interface ReducerStatusPart {
  reducer: ReducerStats;
}

@Injectable()
export class ReducerStatusContributor implements StatusContributor<ReducerStatusPart> {
  constructor(private readonly reducer: ReducerService) {}

  statusPart(): ReducerStatusPart {
    return { reducer: this.reducer.statistics() };
  }
}
