import type { AgentEventKind } from '../protocol/events.wire';
import type { DiskRecord, RolloutMarks } from './event-log.codec';
import type { Delivery, EventLogStats, LoggedEvent } from './event-log.types';

/** One retained event and what it takes on disk. */
export interface IndexEntry {
  readonly ev: LoggedEvent;
  /** Position in the log, across rollouts: append order. */
  readonly ordinal: number;
  readonly eventBytes: number;
  readonly markBytes: number;
}

/** What the index knows of one rollout, also after all its events were compacted away. */
export interface RolloutView extends RolloutMarks {
  readonly events: ReadonlyMap<number, IndexEntry>;
  /** appendedAt of the highest-seq event: a terminal rollout's retention counts from it. */
  readonly lastAt: string | null;
  readonly lastOrdinal: number;
  /** On-disk bytes of its events and their marks, all and pending only: the live size without a full scan. */
  readonly bytes: number;
  readonly pendingBytes: number;
}

/** Counts of `/status` that come from the index alone. */
export type DeliveryCounts = Pick<EventLogStats, 'pending' | 'delivered' | 'refused' | 'oldestPendingAt' | 'lastDeliveredAt'>;

interface Entry {
  ev: LoggedEvent;
  readonly ordinal: number;
  eventBytes: number;
  markBytes: number;
}

interface RolloutInfo {
  readonly events: Map<number, Entry>;
  lastSeq: number;
  lastKind: AgentEventKind | null;
  lastAt: string | null;
  lastOrdinal: number;
  lastDeliveredSeq: number | null;
  lastDeliveredAt: string | null;
  bytes: number;
  pendingBytes: number;
}

/**
 * The event log's contents in memory: per rollout its retained events, its
 * high-water marks and their size on disk. It never touches the file; the
 * log feeds it every record it reads or writes, with the record's size.
 */
export class EventLogIndex {
  private readonly byRollout = new Map<string, RolloutInfo>();
  private ordinal = 0;

  /** Applies one record read at open; a reason when it must be skipped. */
  load(rec: DiskRecord, bytes: number): string | null {
    const ordinal = ++this.ordinal;
    switch (rec.t) {
      case 'event': {
        if (this.byRollout.get(rec.rolloutId)?.events.has(rec.seq) === true) {
          return `repeats ${rec.rolloutId} seq ${rec.seq}; the first record is kept`;
        }
        const { rolloutId, seq, kind, envelope, meta, appendedAt } = rec;
        this.addEvent({ rolloutId, seq, kind, envelope, meta, appendedAt, delivery: rec.delivery ?? { state: 'pending' } }, ordinal, bytes);
        return null;
      }
      case 'delivered':
      case 'refused': {
        const entry = this.byRollout.get(rec.rolloutId)?.events.get(rec.seq);
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

  /** An event just written to the end of the log as `bytes` bytes; it is pending. */
  appended(ev: Omit<LoggedEvent, 'delivery'>, bytes: number): void {
    this.addEvent({ ...ev, delivery: { state: 'pending' } }, ++this.ordinal, bytes);
  }

  /** A delivery mark just written as `markBytes` bytes; false when the event is not in the index. */
  marked(rolloutId: string, seq: number, d: Delivery, markBytes: number): boolean {
    const entry = this.byRollout.get(rolloutId)?.events.get(seq);
    if (entry === undefined) return false;
    this.applyDelivery(entry, d, markBytes);
    return true;
  }

  /**
   * A compaction rewrote the file: `dropped` are gone, and every kept event
   * is now one line of `bytes` with its delivery folded in.
   */
  compacted(dropped: readonly IndexEntry[], kept: readonly { readonly entry: IndexEntry; readonly bytes: number }[]): void {
    for (const e of dropped) {
      this.byRollout.get(e.ev.rolloutId)?.events.delete(e.ev.seq);
    }
    for (const info of this.byRollout.values()) {
      info.bytes = 0;
      info.pendingBytes = 0;
    }
    for (const { entry: view, bytes } of kept) {
      const info = this.info(view.ev.rolloutId);
      const entry = info.events.get(view.ev.seq);
      if (entry === undefined) continue;
      entry.eventBytes = bytes;
      entry.markBytes = 0;
      info.bytes += bytes;
      if (entry.ev.delivery.state === 'pending') info.pendingBytes += bytes;
    }
  }

  /** Every rollout by id, for compaction and the live size. */
  rolloutViews(): ReadonlyMap<string, RolloutView> {
    return this.byRollout;
  }

  /** Events in the index. */
  size(): number {
    let n = 0;
    for (const info of this.byRollout.values()) n += info.events.size;
    return n;
  }

  get(rolloutId: string, seq: number): LoggedEvent | undefined {
    return this.byRollout.get(rolloutId)?.events.get(seq)?.ev;
  }

  /** Every pending event: each rollout's in seq order, rollouts by their oldest pending event first. */
  pending(): LoggedEvent[] {
    const groups: { first: number; list: Entry[] }[] = [];
    for (const info of this.byRollout.values()) {
      const list = [...info.events.values()].filter((e) => e.ev.delivery.state === 'pending');
      if (list.length === 0) continue;
      const first = list.reduce((min, e) => Math.min(min, e.ordinal), Infinity);
      groups.push({ first, list: list.sort((a, b) => a.ev.seq - b.ev.seq) });
    }
    return groups.sort((a, b) => a.first - b.first).flatMap((g) => g.list.map((e) => e.ev));
  }

  /** The retained events of a rollout, in seq order. */
  events(rolloutId: string): LoggedEvent[] {
    const info = this.byRollout.get(rolloutId);
    if (info === undefined) return [];
    return [...info.events.values()].map((e) => e.ev).sort((a, b) => a.seq - b.seq);
  }

  /** Every retained event in log order. */
  inOrder(): LoggedEvent[] {
    const all: Entry[] = [];
    for (const info of this.byRollout.values()) all.push(...info.events.values());
    return all.sort((a, b) => a.ordinal - b.ordinal).map((e) => e.ev);
  }

  /** Every rollout known, also one whose events were all compacted away, by newest event last. */
  rollouts(): string[] {
    return [...this.byRollout.entries()].sort((a, b) => a[1].lastOrdinal - b[1].lastOrdinal).map(([id]) => id);
  }

  /** The highest seq ever logged for a rollout; 0 when none. */
  lastSeq(rolloutId: string): number {
    return this.byRollout.get(rolloutId)?.lastSeq ?? 0;
  }

  /** The highest seq the CP acknowledged; null when none. */
  lastDeliveredSeq(rolloutId: string): number | null {
    return this.byRollout.get(rolloutId)?.lastDeliveredSeq ?? null;
  }

  /** Seqs in (afterSeq, lastSeq] not in the index, ascending. */
  missing(rolloutId: string, afterSeq: number): number[] {
    const info = this.byRollout.get(rolloutId);
    if (info === undefined) return [];
    const out: number[] = [];
    for (let s = Math.max(afterSeq, 0) + 1; s <= info.lastSeq; s++) if (!info.events.has(s)) out.push(s);
    return out;
  }

  counts(): DeliveryCounts {
    let pending = 0;
    let delivered = 0;
    let refused = 0;
    let oldestPending: Entry | null = null;
    for (const info of this.byRollout.values()) {
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
    for (const info of this.byRollout.values()) lastDeliveredAt = laterOf(lastDeliveredAt, info.lastDeliveredAt);
    return { pending, delivered, refused, oldestPendingAt: oldestPending?.ev.appendedAt ?? null, lastDeliveredAt };
  }

  private info(rolloutId: string): RolloutInfo {
    let info = this.byRollout.get(rolloutId);
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
      this.byRollout.set(rolloutId, info);
    }
    return info;
  }

  private addEvent(ev: LoggedEvent, ordinal: number, bytes: number): void {
    const info = this.info(ev.rolloutId);
    const entry: Entry = { ev: { ...ev, delivery: { state: 'pending' } }, ordinal, eventBytes: bytes, markBytes: 0 };
    info.events.set(ev.seq, entry);
    info.bytes += bytes;
    info.pendingBytes += bytes;
    if (ev.seq >= info.lastSeq) {
      info.lastSeq = ev.seq;
      info.lastKind = ev.kind;
      info.lastAt = ev.appendedAt;
    }
    info.lastOrdinal = Math.max(info.lastOrdinal, ordinal);
    // A compacted record carries its delivery: it counts as pending only until here.
    if (ev.delivery.state !== 'pending') this.applyDelivery(entry, ev.delivery, 0);
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
}

function laterOf(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return Date.parse(b) > Date.parse(a) ? b : a;
}
