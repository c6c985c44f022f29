import { Global, Module } from '@nestjs/common';
import { BootGate } from './boot-gate';

@Global()
@Module({ providers: [BootGate], exports: [BootGate] })
export class LifecycleModule {}
