/**
 * Every "now" in the agent comes from here, so tests can drive time. Wall time
 * is for what goes on the wire and in status; the monotonic source is for
 * measuring intervals, which a wall-clock step (NTP, a bad RTC) must not bend.
 */
export interface Clock {
  now(): Date;
  monotonicMs(): number;
}

export const CLOCK = Symbol('CLOCK');

export class SystemClock implements Clock {
  now(): Date {
    return new Date();
  }

  monotonicMs(): number {
    return performance.now();
  }
}
