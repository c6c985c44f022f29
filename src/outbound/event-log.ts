import { dirname, join } from 'node:path';
import type { LogRecord } from '../reducer/reducer.types';
import { checkItem, encodeLine, eventOf, eventRecord, markRecord, scanLog } from './event-log.codec';
import { autoCompactDue, liveBytes, planCompaction, rangesOf, tmpPathOf, writeCompacted } from './event-log.compaction';
import { EventLogInputError, EventLogWriteError, errCode, errText } from './event-log.errors';
import { EventLogIndex } from './event-log.index';
import { EVENT_LOG_FILE_NAME } from './event-log.reader';
import { MarkSync, type ScheduleOnce, scheduleUnrefTimeout } from './event-log.mark-sync';
import type { AppendItem, CompactResult, Delivery, EventLogStats, LoggedEvent, OpenReport } from './event-log.types';
import { appendFully, type LogFile, type LogFs, nodeLogFs } from './log-fs';

// The log is this facade over four parts: the record codec (the file format),
// the in-memory index, compaction and the grouped mark sync. It owns the file
// and the write queue; the parts own no I/O but what they are handed.

export type { AppendItem, CompactResult, Delivery, EventLogStats, LoggedEvent, OpenReport } from './event-log.types';
export { EventLogInputError, EventLogWriteError } from './event-log.errors';
export type { ScheduleOnce } from './event-log.mark-sync';

export interface EventLogOptions {
  readonly dir: string;
  /** Default `events.log`. */
  readonly fileName?: string;
  /** Size cap; compaction drops the oldest delivered/refused events above it, never a pending one. */
  readonly maxBytes: number;
  /** How long a terminal rollout's events stay for replay (PROTOCOL §7). */
  readonly retentionMs: number;
  readonly now: () => Date;
  /** Fault injection in tests; the real file system by default. */
  readonly fs?: LogFs;
  /** Delivery marks are fdatasynced at most this long after being written (default 200 ms), or by the next append. */
  readonly markSyncMs?: number;
  /** What runs the grouped mark sync `markSyncMs` later; an unref'd `setTimeout` by default. */
  readonly scheduleMarkSync?: ScheduleOnce;
  /** Compact by itself when the file passes the cap or twice its live size (default true). */
  readonly autoCompact?: boolean;
  /** Failures of background work (grouped mark sync, automatic compaction), one line each; the log goes on. */
  readonly warn?: (line: string) => void;
}

const DEFAULT_MARK_SYNC_MS = 200;

/** The durable event log: every event is on disk before its first POST (PROTOCOL §6). */
export class EventLog {
  private readonly index = new EventLogIndex();
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** Set when a failed write could not be cut back: appends are refused until a reopen repairs the tail. */
  private broken: string | null = null;
  private readonly marks: MarkSync;
  private compactionQueued = false;
  /** File size after the last compaction: automatic compaction waits for growth past it. */
  private compactBase = 0;
  private readonly fs: LogFs;
  private report: OpenReport;

  private constructor(
    private readonly opts: EventLogOptions,
    /** Path of the log file. */
    readonly path: string,
    private file: LogFile,
    private size: number,
  ) {
    this.fs = opts.fs ?? nodeLogFs;
    this.marks = new MarkSync(opts.markSyncMs ?? DEFAULT_MARK_SYNC_MS, opts.scheduleMarkSync ?? scheduleUnrefTimeout, () => {
      void this.serial(() => this.syncMarks()).catch((err: unknown) => {
        this.warn(
          `event log ${this.path}: fdatasync of delivery marks failed (${errText(err)}); a crash before the next append only causes resends`,
        );
      });
    });
    this.report = { path, records: 0, events: 0, tornTailBytes: 0, corruptRecords: [] };
  }

  /** What opening found and repaired; the caller logs it. */
  get openReport(): OpenReport {
    return this.report;
  }

  /** Why the log refuses every write until it is reopened; null while it takes writes. */
  get refusingWrites(): string | null {
    return this.broken;
  }

  /** Opens (or creates) the log, cuts off a torn tail and skips corrupt records; see `openReport`. */
  static async open(opts: EventLogOptions): Promise<EventLog> {
    const fs = opts.fs ?? nodeLogFs;
    const path = join(opts.dir, opts.fileName ?? EVENT_LOG_FILE_NAME);
    await fs.mkdirp(opts.dir);
    // A compaction that crashed before its rename: the log itself is whole.
    await fs.unlink(tmpPathOf(path));
    const file = await fs.open(path);
    try {
      const buf = await file.readAll();
      const scan = scanLog(buf);
      if (scan.cut < buf.length) {
        await file.truncate(scan.cut);
        await file.sync();
      }
      // A new file's directory entry must be durable before its first event counts as logged.
      await fs.syncDir(dirname(path));
      const log = new EventLog(opts, path, file, scan.cut);
      const corrupt = scan.corrupt.slice();
      let records = 0;
      for (const line of scan.lines) {
        records++;
        const problem = log.index.load(line.record, line.bytes);
        if (problem !== null) corrupt.push({ line: line.line, offset: line.offset, reason: problem });
      }
      corrupt.sort((a, b) => a.offset - b.offset);
      log.report = { path, records, events: log.index.size(), tornTailBytes: buf.length - scan.cut, corruptRecords: corrupt };
      log.maybeAutoCompact();
      return log;
    } catch (err) {
      await file.close().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Logs one reducer transition's events: one write, one fdatasync. Durable
   * when it resolves; all or none when it rejects (EventLogWriteError).
   */
  async append(batch: readonly AppendItem[]): Promise<void> {
    this.assertOpen();
    if (batch.length === 0) return;
    await this.serial(async () => {
      this.assertWritable();
      const appendedAt = this.opts.now().toISOString();
      const lines = this.encodeBatch(batch, appendedAt);
      await this.writeAtEnd(Buffer.concat(lines), `append of ${batch.length} event(s)`, true);
      // The fdatasync above also covered any delivery marks written since the last one.
      this.marks.covered();
      batch.forEach(({ rolloutId, seq, kind, envelope, meta }, i) => {
        this.index.appended({ rolloutId, seq, kind, envelope, meta: { ...meta }, appendedAt }, lines[i].length);
      });
    });
    this.maybeAutoCompact();
  }

  /** Records a 204 from the CP; durable within `markSyncMs`. A no-op for an event no longer in the log. */
  async markDelivered(rolloutId: string, seq: number, status: number): Promise<void> {
    await this.mark(rolloutId, seq, (at) => ({ state: 'delivered', status, at }));
  }

  /** Records a 4xx that judged the event itself invalid: it is never retried. A no-op for an event no longer in the log. */
  async markRefused(rolloutId: string, seq: number, status: number, reason: string): Promise<void> {
    await this.mark(rolloutId, seq, (at) => ({ state: 'refused', status, reason, at }));
  }

  /** Every pending event: each rollout's in seq order, rollouts by their oldest pending event first. */
  pending(): LoggedEvent[] {
    return this.index.pending();
  }

  /** The retained events of a rollout, in seq order. */
  events(rolloutId: string): LoggedEvent[] {
    return this.index.events(rolloutId);
  }

  /** One retained event. */
  get(rolloutId: string, seq: number): LoggedEvent | undefined {
    return this.index.get(rolloutId, seq);
  }

  /** Every rollout the log knows, also one whose events were all compacted away, by newest event last. */
  rollouts(): string[] {
    return this.index.rollouts();
  }

  /** The rollout with the newest logged event: where a plain `Replay-From: N` applies (PROTOCOL §7). */
  newestRollout(): string | undefined {
    return this.rollouts().at(-1);
  }

  /** The highest seq ever logged for a rollout, compacted or not; 0 when none. The next event must be above it. */
  lastSeq(rolloutId: string): number {
    return this.index.lastSeq(rolloutId);
  }

  /** The highest seq the CP acknowledged, compacted or not; null when none. */
  lastDeliveredSeq(rolloutId: string): number | null {
    return this.index.lastDeliveredSeq(rolloutId);
  }

  /** Seqs in (afterSeq, lastSeq] the log cannot replay (compacted away or lost to bit rot), ascending. */
  missing(rolloutId: string, afterSeq: number): number[] {
    return this.index.missing(rolloutId, afterSeq);
  }

  /** Every retained event in log order, for `rebuildFromLog`. */
  records(): LogRecord[] {
    return this.index.inOrder().map((ev) => ({ rolloutId: ev.rolloutId, event: eventOf(ev), meta: ev.meta }));
  }

  /** Counts and sizes for `/status` and the compaction trigger. */
  stats(): EventLogStats {
    return { ...this.index.counts(), bytes: this.size, liveBytes: this.liveBytes() };
  }

  /**
   * Rewrites the log (tmp file, fsync, rename, directory fsync) without what
   * retention lets go: events of rollouts terminal for longer than
   * `retentionMs`, then, above `maxBytes`, the oldest delivered/refused ones.
   * Pending events always stay.
   */
  async compact(): Promise<CompactResult> {
    this.assertOpen();
    return this.serial(() => this.compactNow());
  }

  /** Makes the delivery marks written so far durable. */
  async flush(): Promise<void> {
    this.assertOpen();
    return this.serial(() => this.syncMarks());
  }

  /** Waits for queued work, syncs the marks and closes the file. Further calls throw. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.marks.stop();
    await this.serial(async () => {
      try {
        if (this.broken === null) await this.syncMarks();
      } catch (err) {
        this.warn(`event log ${this.path}: fdatasync of delivery marks at close failed (${errText(err)}); a crash now only causes resends`);
      }
      await this.file.close();
    });
  }

  // ---- writing ----

  /** One at a time, in call order; a failed job does not stop the queue. */
  private serial<T>(job: () => Promise<T>): Promise<T> {
    const run = this.tail.then(job);
    this.tail = run.catch(() => undefined);
    return run;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`event log ${this.path} is closed`);
  }

  private assertWritable(): void {
    if (this.broken !== null) {
      throw new EventLogWriteError(
        `event log ${this.path} refuses writes: an earlier failed write could not be cut back (${this.broken}); reopen it to repair the tail`,
      );
    }
  }

  private encodeBatch(batch: readonly AppendItem[], appendedAt: string): Buffer[] {
    const seen = new Map<string, number>();
    return batch.map((item, i) => {
      const last = seen.get(item.rolloutId) ?? this.index.lastSeq(item.rolloutId);
      const problem = checkItem(item, last);
      if (problem !== null) throw new EventLogInputError(`event log ${this.path}: refused batch: ${problem}`);
      seen.set(item.rolloutId, item.seq);
      return encodeLine(eventRecord(item, appendedAt, batch.length > 1 ? [i, batch.length] : undefined));
    });
  }

  /**
   * Writes `data` at the end of the file (and fdatasyncs it when asked). On
   * any failure the file is cut back to its size before, so nothing half
   * written stays; if even that fails, the log stops taking writes.
   */
  private async writeAtEnd(data: Buffer, what: string, sync: boolean): Promise<void> {
    const before = this.size;
    try {
      await appendFully(this.file, data);
      if (sync) await this.file.datasync();
    } catch (err) {
      const cause = errText(err);
      try {
        await this.file.truncate(before);
        await this.file.sync();
      } catch (repairErr) {
        this.broken = `${what} failed (${cause}), cutting back failed (${errText(repairErr)})`;
        throw new EventLogWriteError(
          `event log ${this.path}: ${what} failed (${cause}) and cutting the file back to ${before} bytes failed too (${errText(repairErr)}); it refuses writes until reopened, which repairs the tail`,
          errCode(err),
          { cause: err },
        );
      }
      throw new EventLogWriteError(
        `event log ${this.path}: ${what} failed (${cause}); the file is back to its ${before} bytes from before, nothing earlier is lost`,
        errCode(err),
        { cause: err },
      );
    }
    this.size = before + data.length;
  }

  /** False when the event is not in the log. */
  private async mark(rolloutId: string, seq: number, delivery: (at: string) => Delivery): Promise<boolean> {
    this.assertOpen();
    return this.serial(async () => {
      this.assertWritable();
      const ev = this.index.get(rolloutId, seq);
      if (ev === undefined) return false;
      const d = delivery(this.opts.now().toISOString());
      // A second 204 for a delivered event (a resend) changes nothing worth a record.
      if (d.state === 'delivered' && ev.delivery.state === 'delivered') return true;
      const line = encodeLine(markRecord(rolloutId, seq, d));
      // Not fsynced one by one: a lost mark only causes a resend, which the CP dedups.
      await this.writeAtEnd(line, `delivery mark of ${rolloutId} seq ${seq}`, false);
      this.index.marked(rolloutId, seq, d, line.length);
      this.marks.written();
      return true;
    });
  }

  private syncMarks(): Promise<void> {
    return this.marks.sync(() => this.file.datasync());
  }

  // ---- compaction ----

  private liveBytes(): number {
    return liveBytes(this.index.rolloutViews(), this.opts.now().getTime(), this.opts.retentionMs);
  }

  private maybeAutoCompact(): void {
    if (this.opts.autoCompact === false || this.closed || this.broken !== null || this.compactionQueued) return;
    if (!autoCompactDue(this.size, this.compactBase, this.opts.maxBytes, () => this.liveBytes())) return;
    this.compactionQueued = true;
    void this.serial(() => this.compactNow())
      .catch((err: unknown) => {
        this.warn(
          `event log ${this.path}: automatic compaction failed (${errText(err)}); the log is unchanged and keeps growing until the next one`,
        );
      })
      .finally(() => {
        this.compactionQueued = false;
      });
  }

  private async compactNow(): Promise<CompactResult> {
    this.assertWritable();
    const bytesBefore = this.size;
    const plan = planCompaction(this.index.rolloutViews(), this.opts.now().getTime(), this.opts);
    const compacted = await writeCompacted(
      this.fs,
      this.path,
      plan.kept.map((it) => it.line),
    );
    // The rename happened: the compacted file is the log from here on, and its
    // fsync covered every delivery mark.
    const old = this.file;
    this.file = compacted;
    this.size = plan.bytes;
    this.compactBase = plan.bytes;
    this.marks.covered();
    await old.close().catch(() => undefined);
    try {
      await this.fs.syncDir(dirname(this.path));
    } catch (err) {
      this.warn(
        `event log ${this.path}: directory fsync after compaction failed (${errText(err)}); after a power loss either file may come back, both hold every pending event`,
      );
    }
    const kept = plan.kept.flatMap((it) => (it.entry === null ? [] : [{ entry: it.entry, bytes: it.line.length }]));
    this.index.compacted(plan.dropped, kept);
    return { dropped: plan.dropped.length, bytesBefore, bytesAfter: plan.bytes, droppedRanges: rangesOf(plan.dropped) };
  }

  private warn(line: string): void {
    this.opts.warn?.(line);
  }
}
