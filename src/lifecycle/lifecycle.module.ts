import { Module } from '@nestjs/common';
import { BootGate } from './boot-gate';

/** The boot gate every worker waits on; imported by each module that has one. */
@Module({ providers: [BootGate], exports: [BootGate] })
export class LifecycleModule {}
