import { basename, dirname, join } from 'node:path';
import { crc32 } from 'node:zlib';
import { type AgentEvent, type AgentEventKind, EVENT_KINDS } from '../protocol/events.wire';
import type { LogMeta, LogRecord } from '../reducer/reducer.types';
import { type LogFile, type LogFs, nodeLogFs } from './log-fs';

// File format: one text line per record, `<crc32 hex8> <json>\n`, the CRC over
// the JSON's UTF-8 bytes. An append is one write + one fdatasync of a few
// hundred bytes (~6,000 events/s, >100k/s in batches, TOOLCHAIN.md), where a
// tmp file + fsync + rename + directory fsync per event manages 1,600–2,500/s.
// The price is that a crash can leave a torn last line: the CRC and the final
// newline find it on open, and it is cut off. Records of one batch carry
// `batch: [index, count]`, so a batch cut short by a crash is dropped whole.

/** Where an event stands with the control plane (PROTOCOL §6). */
export type Delivery =
  | { readonly state: 'pending' }
  | { readonly state: 'delivered'; readonly status: number; readonly at: string }
  | { readonly state: 'refused'; readonly status: number; readonly reason: string; readonly at: string };

/** One logged event as the drainer, replay and `/status` see it. */
export interface LoggedEvent {
  readonly rolloutId: string;
  readonly seq: number;
  readonly kind: AgentEventKind;
  /** The envelope JSON exactly as first POSTed; replay sends these bytes again. */
  readonly envelope: string;
  readonly meta: LogMeta;
  readonly appendedAt: string;
  readonly delivery: Delivery;
}

/** One event to log, as the reducer's transition emitted it. */
export interface AppendItem {
  readonly rolloutId: string;
  readonly seq: number;
  readonly kind: AgentEventKind;
  readonly envelope: string;
  readonly meta: LogMeta;
}

/** What opening found; the caller logs it (a torn tail is expected after a crash, corrupt records are not). */
export interface OpenReport {
  readonly path: string;
  /** Valid records read (events, delivery marks, high-water marks). */
  readonly records: number;
  /** Events now in the log. */
  readonly events: number;
  /** Bytes cut off the end: a record (or batch) a crash left half-written. 0 when the file ended cleanly. */
  readonly tornTailBytes: number;
  /** Bad records before the tail (bit rot): skipped, never surfaced. `line` is 1-based. */
  readonly corruptRecords: readonly { readonly line: number; readonly offset: number; readonly reason: string }[];
}

export interface CompactResult {
  /** Events removed. */
  readonly dropped: number;
  readonly bytesBefore: number;
  readonly bytesAfter: number;
  /** What was removed, per rollout, as inclusive seq ranges; `missing()` reports them later too. */
  readonly droppedRanges: readonly { readonly rolloutId: string; readonly from: number; readonly to: number }[];
}

export interface EventLogStats {
  readonly pending: number;
  readonly delivered: number;
  readonly refused: number;
  readonly oldestPendingAt: string | null;
  readonly lastDeliveredAt: string | null;
  /** Size of the file. */
  readonly bytes: number;
  /** About what the file would take if compacted now without dropping anything. */
  readonly liveBytes: number;
}

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
  /** Compact by itself when the file passes the cap or twice its live size (default true). */
  readonly autoCompact?: boolean;
  /** Failures of background work (grouped mark sync, automatic compaction), one line each; the log goes on. */
  readonly warn?: (line: string) => void;
}

/** An append, a mark or a compaction did not reach the disk; the message names the file and the errno. */
export class EventLogWriteError extends Error {
  override readonly name = 'EventLogWriteError';
  constructor(
    message: string,
    /** errno code of the failure, e.g. `ENOSPC`, when there was one. */
    readonly code?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The caller handed the log something it must not store (a reused seq, an envelope that disagrees). */
export class EventLogInputError extends Error {
  override readonly name = 'EventLogInputError';
}

const DEFAULT_FILE_NAME = 'events.log';
const DEFAULT_MARK_SYNC_MS = 200;
const WRITE_CHUNK_BYTES = 1 << 20;
const NEWLINE = 0x0a;

/** A rollout is over once its last event is one of these; retention counts from it. */
const TERMINAL_KINDS: ReadonlySet<AgentEventKind> = new Set<AgentEventKind>([
  'Converged',
  'RollbackComplete',
  'ActivationFailed',
  'Failed',
]);
const KINDS: ReadonlySet<string> = new Set<string>(EVENT_KINDS);

type EventRecord = {
  t: 'event';
  rolloutId: string;
  seq: number;
  kind: AgentEventKind;
  appendedAt: string;
  meta: LogMeta;
  envelope: string;
  /** `[index, count]` within a batch of more than one record. */
  batch?: [number, number];
  /** Only in a compacted file; appended events are pending. */
  delivery?: Delivery;
};
type MarkRecord =
  | { t: 'delivered'; rolloutId: string; seq: number; status: number; at: string }
  | { t: 'refused'; rolloutId: string; seq: number; status: number; reason: string; at: string };
/** A rollout's summary, written by compaction, so that its last seq survives its events (a reused seq would be deduped by the CP and lost). */
type HwmRecord = {
  t: 'hwm';
  rolloutId: string;
  seq: number;
  lastKind: AgentEventKind | null;
  lastAt: string | null;
  lastDeliveredSeq: number | null;
  lastDeliveredAt: string | null;
};
type DiskRecord = EventRecord | MarkRecord | HwmRecord;

interface Entry {
  ev: LoggedEvent;
  /** Position in the log, across rollouts: append order. */
  readonly ordinal: number;
  eventBytes: number;
  markBytes: number;
}

interface RolloutInfo {
  readonly events: Map<number, Entry>;
  lastSeq: number;
  lastKind: AgentEventKind | null;
  /** appendedAt of the highest-seq event: a terminal rollout's retention counts from it. */
  lastAt: string | null;
  lastOrdinal: number;
  lastDeliveredSeq: number | null;
  lastDeliveredAt: string | null;
  /** On-disk bytes of its events and their marks, all and pending only: the live size without a full scan. */
  bytes: number;
  pendingBytes: number;
}

/** The durable event log: every event is on disk before its first POST (PROTOCOL §6). */
export class EventLog {
  private readonly rollouts_ = new Map<string, RolloutInfo>();
  private ordinal = 0;
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** Set when a failed write could not be cut back: appends are refused until a reopen repairs the tail. */
  private broken: string | null = null;
  private marksDirty = false;
  private markTimer: NodeJS.Timeout | null = null;
  private compactionQueued = false;
  /** File size after the last compaction: automatic compaction waits for growth past it. */
  private compactBase = 0;
  private readonly fs: LogFs;
  private readonly markSyncMs: number;
  private report: OpenReport;

  private constructor(
    private readonly opts: EventLogOptions,
    /** Path of the log file. */
    readonly path: string,
    private file: LogFile,
    private size: number,
  ) {
    this.fs = opts.fs ?? nodeLogFs;
    this.markSyncMs = opts.markSyncMs ?? DEFAULT_MARK_SYNC_MS;
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
    const path = join(opts.dir, opts.fileName ?? DEFAULT_FILE_NAME);
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
        const problem = log.load(line.record, line.bytes);
        if (problem !== null) corrupt.push({ line: line.line, offset: line.offset, reason: problem });
      }
      corrupt.sort((a, b) => a.offset - b.offset);
      let events = 0;
      for (const info of log.rollouts_.values()) events += info.events.size;
      log.report = { path, records, events, tornTailBytes: buf.length - scan.cut, corruptRecords: corrupt };
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
      this.marksDirty = false;
      batch.forEach(({ rolloutId, seq, kind, envelope, meta }, i) => {
        const ev: LoggedEvent = { rolloutId, seq, kind, envelope, meta: { ...meta }, appendedAt, delivery: { state: 'pending' } };
        this.addEvent(ev, ++this.ordinal, lines[i].length);
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
    const groups: { first: number; list: Entry[] }[] = [];
    for (const info of this.rollouts_.values()) {
      const list = [...info.events.values()].filter((e) => e.ev.delivery.state === 'pending');
      if (list.length === 0) continue;
      const first = list.reduce((min, e) => Math.min(min, e.ordinal), Infinity);
      groups.push({ first, list: list.sort((a, b) => a.ev.seq - b.ev.seq) });
    }
    return groups.sort((a, b) => a.first - b.first).flatMap((g) => g.list.map((e) => e.ev));
  }

  /** The retained events of a rollout, in seq order. */
  events(rolloutId: string): LoggedEvent[] {
    const info = this.rollouts_.get(rolloutId);
    if (info === undefined) return [];
    return [...info.events.values()].map((e) => e.ev).sort((a, b) => a.seq - b.seq);
  }

  /** One retained event. */
  get(rolloutId: string, seq: number): LoggedEvent | undefined {
    return this.rollouts_.get(rolloutId)?.events.get(seq)?.ev;
  }

  /** Every rollout the log knows, also one whose events were all compacted away, by newest event last. */
  rollouts(): string[] {
    return [...this.rollouts_.entries()].sort((a, b) => a[1].lastOrdinal - b[1].lastOrdinal).map(([id]) => id);
  }

  /** The rollout with the newest logged event: where a plain `Replay-From: N` applies (PROTOCOL §7). */
  newestRollout(): string | undefined {
    return this.rollouts().at(-1);
  }

  /** The highest seq ever logged for a rollout, compacted or not; 0 when none. The next event must be above it. */
  lastSeq(rolloutId: string): number {
    return this.rollouts_.get(rolloutId)?.lastSeq ?? 0;
  }

  /** The highest seq the CP acknowledged, compacted or not; null when none. */
  lastDeliveredSeq(rolloutId: string): number | null {
    return this.rollouts_.get(rolloutId)?.lastDeliveredSeq ?? null;
  }

  /** Seqs in (afterSeq, lastSeq] the log cannot replay (compacted away or lost to bit rot), ascending. */
  missing(rolloutId: string, afterSeq: number): number[] {
    const info = this.rollouts_.get(rolloutId);
    if (info === undefined) return [];
    const out: number[] = [];
    for (let s = Math.max(afterSeq, 0) + 1; s <= info.lastSeq; s++) if (!info.events.has(s)) out.push(s);
    return out;
  }

  /** Every retained event in log order, for `rebuildFromLog`. */
  records(): LogRecord[] {
    return this.entriesInOrder().map((e) => ({ rolloutId: e.ev.rolloutId, event: eventOf(e.ev), meta: e.ev.meta }));
  }

  /** Counts and sizes for `/status` and the compaction trigger. */
  stats(): EventLogStats {
    let pending = 0;
    let delivered = 0;
    let refused = 0;
    let oldestPending: Entry | null = null;
    for (const info of this.rollouts_.values()) {
      for (const e of info.events.values()) {
        const d = e.ev.delivery;
        switch (d.state) {
          case 'pending':
            pending++;
            if (oldestPending === null || e.ordinal < oldestPending.ordinal) oldestPending = e;
            break;
          case 'delivered':
            delivered++;
            break;
          case 'refused':
            refused++;
            break;
          default: {
            const unreachable: never = d;
            return unreachable;
          }
        }
      }
    }
    let lastDeliveredAt: string | null = null;
    for (const info of this.rollouts_.values()) lastDeliveredAt = laterOf(lastDeliveredAt, info.lastDeliveredAt);
    return {
      pending,
      delivered,
      refused,
      oldestPendingAt: oldestPending?.ev.appendedAt ?? null,
      lastDeliveredAt,
      bytes: this.size,
      liveBytes: this.liveBytes(),
    };
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
    this.clearMarkTimer();
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
      const last = seen.get(item.rolloutId) ?? this.lastSeq(item.rolloutId);
      const problem = checkItem(item, last);
      if (problem !== null) throw new EventLogInputError(`event log ${this.path}: refused batch: ${problem}`);
      seen.set(item.rolloutId, item.seq);
      const rec: EventRecord = {
        t: 'event',
        rolloutId: item.rolloutId,
        seq: item.seq,
        kind: item.kind,
        appendedAt,
        meta: item.meta,
        envelope: item.envelope,
        ...(batch.length > 1 ? { batch: [i, batch.length] as [number, number] } : {}),
      };
      return encodeLine(rec);
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
      const entry = this.rollouts_.get(rolloutId)?.events.get(seq);
      if (entry === undefined) return false;
      const d = delivery(this.opts.now().toISOString());
      // A second 204 for a delivered event (a resend) changes nothing worth a record.
      if (d.state === 'delivered' && entry.ev.delivery.state === 'delivered') return true;
      const line = encodeLine(markRecord(rolloutId, seq, d));
      // Not fsynced one by one: a lost mark only causes a resend, which the CP dedups.
      await this.writeAtEnd(line, `delivery mark of ${rolloutId} seq ${seq}`, false);
      this.applyDelivery(entry, d, line.length);
      this.marksDirty = true;
      this.scheduleMarkSync();
      return true;
    });
  }

  private scheduleMarkSync(): void {
    if (this.markTimer !== null || this.closed) return;
    this.markTimer = setTimeout(() => {
      this.markTimer = null;
      if (this.closed) return;
      void this.serial(() => this.syncMarks()).catch((err: unknown) => {
        this.warn(`event log ${this.path}: fdatasync of delivery marks failed (${errText(err)}); a crash before the next append only causes resends`);
      });
    }, this.markSyncMs);
    this.markTimer.unref();
  }

  private clearMarkTimer(): void {
    if (this.markTimer !== null) clearTimeout(this.markTimer);
    this.markTimer = null;
  }

  private async syncMarks(): Promise<void> {
    this.clearMarkTimer();
    if (!this.marksDirty) return;
    await this.file.datasync();
    this.marksDirty = false;
  }

  // ---- compaction ----

  /** What a compaction would keep under retention alone (before the size cap). */
  private liveBytes(): number {
    const nowMs = this.opts.now().getTime();
    let total = 0;
    for (const [id, info] of this.rollouts_) {
      total += (this.expired(info, nowMs) ? info.pendingBytes : info.bytes) + encodeLine(hwmRecord(id, info)).length;
    }
    return total;
  }

  /** Terminal for longer than the retention time: its delivered and refused events may go. */
  private expired(info: RolloutInfo, nowMs: number): boolean {
    return (
      info.lastKind !== null &&
      TERMINAL_KINDS.has(info.lastKind) &&
      info.lastAt !== null &&
      nowMs >= Date.parse(info.lastAt) + this.opts.retentionMs
    );
  }

  private maybeAutoCompact(): void {
    if (this.opts.autoCompact === false || this.closed || this.broken !== null || this.compactionQueued) return;
    const { maxBytes } = this.opts;
    // Wait for real growth since the last compaction, so a log held above the
    // cap by pending events alone is not rewritten on every append.
    const minGrowth = Math.max(Math.min(64 * 1024, Math.floor(maxBytes / 8)), Math.floor(this.compactBase / 4));
    if (this.size - this.compactBase < minGrowth) return;
    if (this.size <= maxBytes && this.size <= 2 * this.liveBytes()) return;
    this.compactionQueued = true;
    void this.serial(() => this.compactNow())
      .catch((err: unknown) => {
        this.warn(`event log ${this.path}: automatic compaction failed (${errText(err)}); the log is unchanged and keeps growing until the next one`);
      })
      .finally(() => {
        this.compactionQueued = false;
      });
  }

  private async compactNow(): Promise<CompactResult> {
    this.assertWritable();
    const nowMs = this.opts.now().getTime();
    const bytesBefore = this.size;
    type Item = { ordinal: number; line: Buffer; entry: Entry | null };
    const items: Item[] = [];
    const dropped: Entry[] = [];
    for (const [id, info] of this.rollouts_) {
      const expired = this.expired(info, nowMs);
      for (const entry of info.events.values()) {
        if (expired && entry.ev.delivery.state !== 'pending') dropped.push(entry);
        else items.push({ ordinal: entry.ordinal, line: encodeLine(compactedRecord(entry.ev)), entry });
      }
      // Right after the rollout's newest event, so `newestRollout()` survives compaction.
      items.push({ ordinal: info.lastOrdinal + 0.5, line: encodeLine(hwmRecord(id, info)), entry: null });
    }
    items.sort((a, b) => a.ordinal - b.ordinal);
    let total = items.reduce((n, it) => n + it.line.length, 0);
    const keep = new Set(items);
    if (total > this.opts.maxBytes) {
      for (const it of items) {
        if (total <= this.opts.maxBytes) break;
        if (it.entry === null || it.entry.ev.delivery.state === 'pending') continue;
        keep.delete(it);
        dropped.push(it.entry);
        total -= it.line.length;
      }
    }
    const kept = items.filter((it) => keep.has(it));

    const tmpPath = tmpPathOf(this.path);
    let tmp: LogFile | null = null;
    try {
      tmp = await this.fs.create(tmpPath);
      for (let i = 0; i < kept.length; ) {
        const chunk: Buffer[] = [];
        let len = 0;
        while (i < kept.length && (len === 0 || len + kept[i].line.length <= WRITE_CHUNK_BYTES)) {
          chunk.push(kept[i].line);
          len += kept[i].line.length;
          i++;
        }
        await appendFully(tmp, Buffer.concat(chunk, len));
      }
      await tmp.sync();
      await this.fs.rename(tmpPath, this.path);
    } catch (err) {
      if (tmp !== null) await tmp.close().catch(() => undefined);
      await this.fs.unlink(tmpPath).catch(() => undefined);
      throw new EventLogWriteError(
        `event log ${this.path}: compaction failed (${errText(err)}); the log is unchanged`,
        errCode(err),
        { cause: err },
      );
    }
    // The rename happened: the compacted file is the log from here on, and its
    // fsync above covered every delivery mark.
    const old = this.file;
    this.file = tmp;
    this.size = total;
    this.compactBase = total;
    this.marksDirty = false;
    await old.close().catch(() => undefined);
    try {
      await this.fs.syncDir(dirname(this.path));
    } catch (err) {
      this.warn(
        `event log ${this.path}: directory fsync after compaction failed (${errText(err)}); after a power loss either file may come back, both hold every pending event`,
      );
    }
    for (const e of dropped) {
      this.rollouts_.get(e.ev.rolloutId)?.events.delete(e.ev.seq);
    }
    for (const info of this.rollouts_.values()) {
      info.bytes = 0;
      info.pendingBytes = 0;
    }
    for (const it of kept) {
      if (it.entry === null) continue;
      const info = this.info(it.entry.ev.rolloutId);
      it.entry.eventBytes = it.line.length;
      it.entry.markBytes = 0;
      info.bytes += it.line.length;
      if (it.entry.ev.delivery.state === 'pending') info.pendingBytes += it.line.length;
    }
    return { dropped: dropped.length, bytesBefore, bytesAfter: total, droppedRanges: rangesOf(dropped) };
  }

  // ---- the in-memory index ----

  private info(rolloutId: string): RolloutInfo {
    let info = this.rollouts_.get(rolloutId);
    if (info === undefined) {
      info = {
        events: new Map(),
        lastSeq: 0,
        lastKind: null,
        lastAt: null,
        lastOrdinal: 0,
        lastDeliveredSeq: null,
        lastDeliveredAt: null,
        bytes: 0,
        pendingBytes: 0,
      };
      this.rollouts_.set(rolloutId, info);
    }
    return info;
  }

  private addEvent(ev: LoggedEvent, ordinal: number, bytes: number): void {
    const info = this.info(ev.rolloutId);
    info.events.set(ev.seq, { ev: { ...ev, delivery: { state: 'pending' } }, ordinal, eventBytes: bytes, markBytes: 0 });
    info.bytes += bytes;
    info.pendingBytes += bytes;
    if (ev.seq >= info.lastSeq) {
      info.lastSeq = ev.seq;
      info.lastKind = ev.kind;
      info.lastAt = ev.appendedAt;
    }
    info.lastOrdinal = Math.max(info.lastOrdinal, ordinal);
    const entry = info.events.get(ev.seq);
    if (entry !== undefined && ev.delivery.state !== 'pending') this.applyDelivery(entry, ev.delivery, 0);
  }

  private applyDelivery(entry: Entry, d: Delivery, markBytes: number): void {
    const info = this.info(entry.ev.rolloutId);
    if (entry.ev.delivery.state === 'pending') info.pendingBytes -= entry.eventBytes + entry.markBytes;
    info.bytes += markBytes - entry.markBytes;
    entry.ev = { ...entry.ev, delivery: d };
    entry.markBytes = markBytes;
    if (d.state !== 'delivered') return;
    info.lastDeliveredSeq = Math.max(info.lastDeliveredSeq ?? 0, entry.ev.seq);
    info.lastDeliveredAt = laterOf(info.lastDeliveredAt, d.at);
  }

  /** Applies one record read at open; a reason when it must be skipped. */
  private load(rec: DiskRecord, bytes: number): string | null {
    const ordinal = ++this.ordinal;
    switch (rec.t) {
      case 'event': {
        if (this.rollouts_.get(rec.rolloutId)?.events.has(rec.seq) === true) {
          return `repeats ${rec.rolloutId} seq ${rec.seq}; the first record is kept`;
        }
        const { rolloutId, seq, kind, envelope, meta, appendedAt } = rec;
        this.addEvent(
          { rolloutId, seq, kind, envelope, meta, appendedAt, delivery: rec.delivery ?? { state: 'pending' } },
          ordinal,
          bytes,
        );
        return null;
      }
      case 'delivered':
      case 'refused': {
        const entry = this.rollouts_.get(rec.rolloutId)?.events.get(rec.seq);
        // Its event was compacted away or skipped as corrupt: the mark has nothing left to say.
        if (entry === undefined) return null;
        const d: Delivery =
          rec.t === 'delivered'
            ? { state: 'delivered', status: rec.status, at: rec.at }
            : { state: 'refused', status: rec.status, reason: rec.reason, at: rec.at };
        this.applyDelivery(entry, d, bytes);
        return null;
      }
      case 'hwm': {
        const info = this.info(rec.rolloutId);
        if (rec.seq >= info.lastSeq) {
          info.lastSeq = rec.seq;
          info.lastKind = rec.lastKind ?? info.lastKind;
          info.lastAt = rec.lastAt ?? info.lastAt;
        }
        info.lastOrdinal = Math.max(info.lastOrdinal, ordinal);
        if (rec.lastDeliveredSeq !== null) {
          info.lastDeliveredSeq = Math.max(info.lastDeliveredSeq ?? 0, rec.lastDeliveredSeq);
        }
        info.lastDeliveredAt = laterOf(info.lastDeliveredAt, rec.lastDeliveredAt);
        return null;
      }
      default: {
        const unreachable: never = rec;
        return unreachable;
      }
    }
  }

  private entriesInOrder(): Entry[] {
    const all: Entry[] = [];
    for (const info of this.rollouts_.values()) all.push(...info.events.values());
    return all.sort((a, b) => a.ordinal - b.ordinal);
  }

  private warn(line: string): void {
    this.opts.warn?.(line);
  }
}

// ---- encoding ----

function encodeLine(rec: DiskRecord): Buffer {
  const json = JSON.stringify(rec);
  return Buffer.from(`${crc32(json).toString(16).padStart(8, '0')} ${json}\n`, 'utf8');
}

function markRecord(rolloutId: string, seq: number, d: Delivery): MarkRecord {
  switch (d.state) {
    case 'delivered':
      return { t: 'delivered', rolloutId, seq, status: d.status, at: d.at };
    case 'refused':
      return { t: 'refused', rolloutId, seq, status: d.status, reason: d.reason, at: d.at };
    case 'pending':
      throw new Error('a pending mark is never written');
    default: {
      const unreachable: never = d;
      return unreachable;
    }
  }
}

function compactedRecord(ev: LoggedEvent): EventRecord {
  const { rolloutId, seq, kind, appendedAt, meta, envelope, delivery } = ev;
  return {
    t: 'event',
    rolloutId,
    seq,
    kind,
    appendedAt,
    meta,
    envelope,
    ...(delivery.state === 'pending' ? {} : { delivery }),
  };
}

function hwmRecord(rolloutId: string, info: RolloutInfo): HwmRecord {
  return {
    t: 'hwm',
    rolloutId,
    seq: info.lastSeq,
    lastKind: info.lastKind,
    lastAt: info.lastAt,
    lastDeliveredSeq: info.lastDeliveredSeq,
    lastDeliveredAt: info.lastDeliveredAt,
  };
}

function tmpPathOf(path: string): string {
  return join(dirname(path), `.${basename(path)}.compact.tmp`);
}

async function appendFully(file: LogFile, data: Buffer): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const n = await file.append(data.subarray(done));
    // A zero-byte write would loop for ever; a real full disk throws ENOSPC instead.
    if (n <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    done += n;
  }
}

// ---- reading ----

interface ScannedLine {
  line: number;
  offset: number;
  bytes: number;
  record: DiskRecord;
}

interface Scan {
  lines: ScannedLine[];
  corrupt: { line: number; offset: number; reason: string }[];
  /** Where the good part of the file ends. */
  cut: number;
}

/**
 * Splits the file into records. Bad records after the last good one are the
 * torn tail of a crash, and so is a batch whose last records are missing;
 * bad records before it are bit rot, reported and skipped.
 */
function scanLog(buf: Buffer): Scan {
  type Parsed = { line: number; offset: number; end: number; record: DiskRecord | null; reason: string };
  const parsed: Parsed[] = [];
  let pos = 0;
  let lineNo = 0;
  while (pos < buf.length) {
    lineNo++;
    const nl = buf.indexOf(NEWLINE, pos);
    if (nl === -1) {
      parsed.push({ line: lineNo, offset: pos, end: buf.length, record: null, reason: 'no final newline' });
      break;
    }
    const r = parseLine(buf, pos, nl);
    parsed.push({ line: lineNo, offset: pos, end: nl + 1, record: typeof r === 'string' ? null : r, reason: typeof r === 'string' ? r : '' });
    pos = nl + 1;
  }
  let last = parsed.length - 1;
  while (last >= 0 && parsed[last].record === null) last--;
  // A batch the crash cut short goes whole: its events were never acknowledged.
  if (last >= 0) {
    const rec = parsed[last].record;
    if (rec !== null && rec.t === 'event' && rec.batch !== undefined && rec.batch[0] < rec.batch[1] - 1) {
      let first = last;
      while (first > 0) {
        const prev = parsed[first - 1].record;
        const cur = parsed[first].record;
        if (cur === null || cur.t !== 'event' || cur.batch === undefined || cur.batch[0] === 0) break;
        if (prev === null || prev.t !== 'event' || prev.batch === undefined || prev.batch[0] !== cur.batch[0] - 1) break;
        first--;
      }
      last = first - 1;
    }
  }
  const cut = last >= 0 ? parsed[last].end : 0;
  const lines: ScannedLine[] = [];
  const corrupt: Scan['corrupt'] = [];
  for (let i = 0; i <= last; i++) {
    const p = parsed[i];
    if (p.record === null) corrupt.push({ line: p.line, offset: p.offset, reason: p.reason });
    else lines.push({ line: p.line, offset: p.offset, bytes: p.end - p.offset, record: p.record });
  }
  return { lines, corrupt, cut };
}

/** One line (without its newline): a record, or why it is not one. */
function parseLine(buf: Buffer, start: number, end: number): DiskRecord | string {
  if (end - start < 11 || buf[start + 8] !== 0x20) return 'not a `<crc32> <json>` line';
  const hex = buf.toString('latin1', start, start + 8);
  if (!/^[0-9a-f]{8}$/.test(hex)) return 'not a `<crc32> <json>` line';
  const body = buf.subarray(start + 9, end);
  if (crc32(body) !== parseInt(hex, 16)) return 'checksum mismatch';
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return 'checksum matches but the JSON does not parse';
  }
  return toRecord(value) ?? 'checksum matches but the record has an unknown shape';
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isSeq = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;
const isStr = (v: unknown): v is string => typeof v === 'string';
const isKind = (v: unknown): v is AgentEventKind => typeof v === 'string' && KINDS.has(v);
const isStrOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string';

function toRecord(v: unknown): DiskRecord | null {
  if (!isObj(v) || !isStr(v.rolloutId) || !isSeq(v.seq)) return null;
  const { rolloutId, seq } = v;
  switch (v.t) {
    case 'event': {
      if (!isKind(v.kind) || !isStr(v.appendedAt) || !isObj(v.meta) || !isStr(v.envelope)) return null;
      const rec: EventRecord = { t: 'event', rolloutId, seq, kind: v.kind, appendedAt: v.appendedAt, meta: v.meta as LogMeta, envelope: v.envelope };
      if (v.batch !== undefined) {
        const b = v.batch;
        if (!Array.isArray(b) || b.length !== 2 || !Number.isSafeInteger(b[0]) || !Number.isSafeInteger(b[1])) return null;
        rec.batch = [b[0] as number, b[1] as number];
      }
      if (v.delivery !== undefined) {
        const d = toDelivery(v.delivery);
        if (d === null) return null;
        rec.delivery = d;
      }
      return rec;
    }
    case 'delivered':
    case 'refused': {
      const d = toDelivery({ ...v, state: v.t });
      if (d === null || d.state === 'pending') return null;
      return d.state === 'delivered'
        ? { t: 'delivered', rolloutId, seq, status: d.status, at: d.at }
        : { t: 'refused', rolloutId, seq, status: d.status, reason: d.reason, at: d.at };
    }
    case 'hwm': {
      const { lastKind, lastAt, lastDeliveredSeq, lastDeliveredAt } = v;
      if (lastKind !== null && !isKind(lastKind)) return null;
      if (!isStrOrNull(lastAt) || !isStrOrNull(lastDeliveredAt)) return null;
      if (lastDeliveredSeq !== null && !isSeq(lastDeliveredSeq)) return null;
      return { t: 'hwm', rolloutId, seq, lastKind, lastAt, lastDeliveredSeq, lastDeliveredAt };
    }
    default:
      return null;
  }
}

function toDelivery(v: unknown): Delivery | null {
  if (!isObj(v)) return null;
  switch (v.state) {
    case 'pending':
      return { state: 'pending' };
    case 'delivered':
      return typeof v.status === 'number' && isStr(v.at) ? { state: 'delivered', status: v.status, at: v.at } : null;
    case 'refused':
      return typeof v.status === 'number' && isStr(v.at) && isStr(v.reason)
        ? { state: 'refused', status: v.status, reason: v.reason, at: v.at }
        : null;
    default:
      return null;
  }
}

/** Why an item must not be logged, or null. `lastSeq` is the rollout's highest seq so far. */
function checkItem(item: AppendItem, lastSeq: number): string | null {
  const where = `${item.rolloutId} seq ${item.seq}`;
  if (!isStr(item.rolloutId) || item.rolloutId === '') return 'an event without a rolloutId';
  if (!isSeq(item.seq)) return `${where}: seq must be a positive integer`;
  // The CP dedups on (rollout, seq): a reused seq would be dropped there, lost for good.
  if (item.seq <= lastSeq) return `${where}: seq is not above the last logged seq ${lastSeq}`;
  if (!isKind(item.kind)) return `${where}: unknown kind ${String(item.kind)}`;
  let env: unknown;
  try {
    env = JSON.parse(item.envelope);
  } catch {
    return `${where}: the envelope is not JSON`;
  }
  if (!isObj(env) || env.rolloutId !== item.rolloutId) return `${where}: the envelope names another rollout`;
  const ev = env.event;
  if (!isObj(ev) || ev.seq !== item.seq || ev.kind !== item.kind) {
    return `${where}: the envelope's event is not ${item.kind} seq ${item.seq}`;
  }
  return null;
}

/** The wire event inside a stored envelope; checked at append, guarded by the CRC since. */
function eventOf(ev: LoggedEvent): AgentEvent {
  const env = JSON.parse(ev.envelope) as { event: AgentEvent };
  return env.event;
}

function rangesOf(entries: readonly Entry[]): CompactResult['droppedRanges'] {
  const sorted = entries
    .map((e) => e.ev)
    .sort((a, b) => (a.rolloutId === b.rolloutId ? a.seq - b.seq : a.rolloutId < b.rolloutId ? -1 : 1));
  const out: { rolloutId: string; from: number; to: number }[] = [];
  for (const ev of sorted) {
    const last = out.at(-1);
    if (last !== undefined && last.rolloutId === ev.rolloutId && last.to === ev.seq - 1) last.to = ev.seq;
    else out.push({ rolloutId: ev.rolloutId, from: ev.seq, to: ev.seq });
  }
  return out;
}

function laterOf(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return Date.parse(b) > Date.parse(a) ? b : a;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function errCode(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}
