import { Module } from '@nestjs/common';
import { JobsModule } from '../jobs/jobs.module';
import { DispatchWorker } from './dispatch.worker';

/** The dispatch long-poll: the CP's "activate this closure" orders, into the reducer. */
@Module({ imports: [JobsModule], providers: [DispatchWorker], exports: [DispatchWorker] })
export class DispatchModule {}
