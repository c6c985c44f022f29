import { MarkSync, type ScheduleOnce } from './event-log.mark-sync';

/** A scheduler the test fires by hand: what is scheduled, for how long, and whether it was cancelled. */
class HandScheduler {
  readonly calls: { fn: () => void; ms: number; cancelled: boolean }[] = [];
  readonly schedule: ScheduleOnce = (fn, ms) => {
    const call = { fn, ms, cancelled: false };
    this.calls.push(call);
    return () => {
      call.cancelled = true;
    };
  };
  live(): number {
    return this.calls.filter((c) => !c.cancelled).length;
  }
  fireLast(): void {
    const call = this.calls.at(-1);
    if (call === undefined || call.cancelled) throw new Error('nothing scheduled');
    call.cancelled = true;
    call.fn();
  }
}

describe('MarkSync', () => {
  let clock: HandScheduler;
  let dues: number;
  let datasyncs: number;
  let marks: MarkSync;
  const datasync = (): Promise<void> => {
    datasyncs++;
    return Promise.resolve();
  };

  beforeEach(() => {
    clock = new HandScheduler();
    dues = 0;
    datasyncs = 0;
    marks = new MarkSync(200, clock.schedule, () => dues++);
  });

  it('schedules one due call per group of marks, markSyncMs after the first', async () => {
    marks.written();
    marks.written();
    marks.written();
    expect(clock.calls.map((c) => c.ms)).toEqual([200]);
    clock.fireLast();
    expect(dues).toBe(1);
    await marks.sync(datasync);
    expect(datasyncs).toBe(1);
    marks.written();
    expect(clock.calls).toHaveLength(2);
  });

  it('skips the fdatasync when an append or a compaction already covered the marks', async () => {
    marks.written();
    marks.covered();
    await marks.sync(datasync);
    expect(datasyncs).toBe(0);
  });

  it('cancels the due call when the marks are synced before it', async () => {
    marks.written();
    await marks.sync(datasync);
    expect(datasyncs).toBe(1);
    expect(clock.live()).toBe(0);
  });

  it('stays dirty when the fdatasync fails, so the next sync tries again', async () => {
    marks.written();
    await expect(marks.sync(() => Promise.reject(new Error('EIO')))).rejects.toThrow('EIO');
    await marks.sync(datasync);
    expect(datasyncs).toBe(1);
  });

  it('once stopped, cancels the waiting call and schedules no more, yet still syncs when asked', async () => {
    marks.written();
    marks.stop();
    expect(clock.live()).toBe(0);
    marks.written();
    expect(clock.calls).toHaveLength(1);
    await marks.sync(datasync);
    expect(datasyncs).toBe(1);
    expect(dues).toBe(0);
  });
});
