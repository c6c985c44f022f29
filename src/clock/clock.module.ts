import { Global, Module } from '@nestjs/common';
import { CLOCK, SystemClock } from './clock';
import { mathRandom, RANDOM } from './random';
import { Uptime } from './uptime';

@Global()
@Module({
  providers: [{ provide: CLOCK, useClass: SystemClock }, { provide: RANDOM, useValue: mathRandom }, Uptime],
  exports: [CLOCK, RANDOM, Uptime],
})
export class ClockModule {}
