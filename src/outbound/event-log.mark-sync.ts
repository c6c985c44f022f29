/**
 * Runs `fn` once, `ms` from now, and returns what cancels it. It must not
 * keep the process alive: the log's close syncs whatever is still waiting.
 */
export type ScheduleOnce = (fn: () => void, ms: number) => () => void;

/** An unref'd `setTimeout`. */
export const scheduleUnrefTimeout: ScheduleOnce = (fn, ms) => {
  const timer = setTimeout(fn, ms);
  timer.unref();
  return () => clearTimeout(timer);
};

/**
 * Groups the fdatasync of delivery marks: a lost mark only causes a resend,
 * which the CP dedups, so marks are written without one and synced together
 * at most `delayMs` after the first, or earlier by any sync of the file.
 */
export class MarkSync {
  private dirty = false;
  private cancelDue: (() => void) | null = null;
  private stopped = false;

  constructor(
    private readonly delayMs: number,
    private readonly schedule: ScheduleOnce,
    /** Called when the grouped sync is due; it runs `sync` in the log's write queue. */
    private readonly due: () => void,
  ) {}

  /** A mark reached the file without a sync. */
  written(): void {
    this.dirty = true;
    if (this.cancelDue !== null || this.stopped) return;
    this.cancelDue = this.schedule(() => {
      this.cancelDue = null;
      if (!this.stopped) this.due();
    }, this.delayMs);
  }

  /** A sync of the whole file (an append's fdatasync, a compaction's fsync) just covered every mark. */
  covered(): void {
    this.dirty = false;
  }

  /** Makes the marks durable through `datasync` when any wait; cancels the pending due call. */
  async sync(datasync: () => Promise<void>): Promise<void> {
    this.cancel();
    if (!this.dirty) return;
    await datasync();
    this.dirty = false;
  }

  /** No due call from here on: the log is closing and syncs by itself. */
  stop(): void {
    this.stopped = true;
    this.cancel();
  }

  private cancel(): void {
    this.cancelDue?.();
    this.cancelDue = null;
  }
}
