import { Module } from '@nestjs/common';
import { DispatchWorker } from './dispatch.worker';

/** The dispatch long-poll: the CP's "activate this closure" orders, into the reducer. */
@Module({ providers: [DispatchWorker], exports: [DispatchWorker] })
export class DispatchModule {}
