import { Injectable } from '@nestjs/common';
import type { StatusContributor } from '../common/status-contributor';
import { type DispatchStatus, DispatchWorker } from './dispatch.worker';

/** `/status` `dispatch`: the long-poll, its failures, and the last order and what became of it. */
export interface DispatchStatusPart {
  dispatch: DispatchStatus;
}

@Injectable()
export class DispatchStatusContributor implements StatusContributor<DispatchStatusPart> {
  constructor(private readonly worker: DispatchWorker) {}

  statusPart(): DispatchStatusPart {
    return { dispatch: this.worker.status() };
  }
}
