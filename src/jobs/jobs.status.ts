import { Injectable } from '@nestjs/common';
import type { StatusContributor } from '../common/status-contributor';
import { JobRuntime } from './job-runtime.service';
import type { JobStatus } from './job.types';

/** `/status` `jobs`: every periodic worker as the runtime sees it, so a stuck or failing one is visible by name. */
export interface JobsStatusPart {
  jobs: JobStatus[];
}

@Injectable()
export class JobsStatusContributor implements StatusContributor<JobsStatusPart> {
  constructor(private readonly runtime: JobRuntime) {}

  statusPart(): JobsStatusPart {
    return { jobs: this.runtime.status() };
  }
}
