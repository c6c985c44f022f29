import { Inject, Injectable } from '@nestjs/common';
import { type Clock, CLOCK } from './clock';

/** When this agent process started, by wall clock (for status) and monotonic clock (for uptime). */
@Injectable()
export class Uptime {
  readonly startedAt: Date;
  /** The monotonic clock's reading at start. */
  readonly startedMonoMs: number;

  constructor(@Inject(CLOCK) private readonly clock: Clock) {
    this.startedAt = clock.now();
    this.startedMonoMs = clock.monotonicMs();
  }

  seconds(): number {
    return Math.max(0, Math.floor((this.clock.monotonicMs() - this.startedMonoMs) / 1000));
  }
}
