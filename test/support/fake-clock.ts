import type { Clock } from '../../src/clock/clock';

/** A clock that moves only when a test says so; wall and monotonic time move together. */
export class FakeClock implements Clock {
  private wallMs: number;
  private monoMs = 1_000_000;

  constructor(start: Date | string = '2026-11-28T12:00:00.000Z') {
    this.wallMs = new Date(start).getTime();
  }

  now(): Date {
    return new Date(this.wallMs);
  }

  monotonicMs(): number {
    return this.monoMs;
  }

  advance(ms: number): void {
    this.wallMs += ms;
    this.monoMs += ms;
  }

  /** A wall-clock step (e.g. NTP) that monotonic time does not see. */
  stepWall(ms: number): void {
    this.wallMs += ms;
  }
}
