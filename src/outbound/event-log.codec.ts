import { crc32 } from 'node:zlib';
import { type AgentEvent, type AgentEventKind, EVENT_KINDS } from '../protocol/events.wire';
import type { LogMeta } from '../reducer/reducer.types';
import type { AppendItem, Delivery, LoggedEvent } from './event-log.types';

// File format: one text line per record, `<crc32 hex8> <json>\n`, the CRC over
// the JSON's UTF-8 bytes. An append is one write + one fdatasync of a few
// hundred bytes (~6,000 events/s, >100k/s in batches, TOOLCHAIN.md), where a
// tmp file + fsync + rename + directory fsync per event manages 1,600–2,500/s.
// The price is that a crash can leave a torn last line: the CRC and the final
// newline find it on open, and it is cut off. Records of one batch carry
// `batch: [index, count]`, so a batch cut short by a crash is dropped whole.

const NEWLINE = 0x0a;
const KINDS: ReadonlySet<string> = new Set<string>(EVENT_KINDS);

export type EventRecord = {
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
export type MarkRecord =
  | { t: 'delivered'; rolloutId: string; seq: number; status: number; at: string }
  | { t: 'refused'; rolloutId: string; seq: number; status: number; reason: string; at: string };
/** A rollout's summary, written by compaction, so that its last seq survives its events (a reused seq would be deduped by the CP and lost). */
export type HwmRecord = {
  t: 'hwm';
  rolloutId: string;
  seq: number;
  lastKind: AgentEventKind | null;
  lastAt: string | null;
  lastDeliveredSeq: number | null;
  lastDeliveredAt: string | null;
};
export type DiskRecord = EventRecord | MarkRecord | HwmRecord;

/** What an `hwm` record keeps of a rollout. */
export interface RolloutMarks {
  readonly lastSeq: number;
  readonly lastKind: AgentEventKind | null;
  readonly lastAt: string | null;
  readonly lastDeliveredSeq: number | null;
  readonly lastDeliveredAt: string | null;
}

// ---- encoding ----

/** One record as its line on disk, newline included. */
export function encodeLine(rec: DiskRecord): Buffer {
  const json = JSON.stringify(rec);
  return Buffer.from(`${crc32(json).toString(16).padStart(8, '0')} ${json}\n`, 'utf8');
}

/** An appended event; `batch` only when its batch holds more than one. */
export function eventRecord(item: AppendItem, appendedAt: string, batch?: [number, number]): EventRecord {
  return {
    t: 'event',
    rolloutId: item.rolloutId,
    seq: item.seq,
    kind: item.kind,
    appendedAt,
    meta: item.meta,
    envelope: item.envelope,
    ...(batch !== undefined ? { batch } : {}),
  };
}

export function markRecord(rolloutId: string, seq: number, d: Delivery): MarkRecord {
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

/** An event as a compacted file holds it: its delivery folded in, no batch. */
export function compactedRecord(ev: LoggedEvent): EventRecord {
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

export function hwmRecord(rolloutId: string, r: RolloutMarks): HwmRecord {
  return {
    t: 'hwm',
    rolloutId,
    seq: r.lastSeq,
    lastKind: r.lastKind,
    lastAt: r.lastAt,
    lastDeliveredSeq: r.lastDeliveredSeq,
    lastDeliveredAt: r.lastDeliveredAt,
  };
}

// ---- reading ----

export interface ScannedLine {
  /** 1-based. */
  line: number;
  offset: number;
  bytes: number;
  record: DiskRecord;
}

export interface Scan {
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
export function scanLog(buf: Buffer): Scan {
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
    parsed.push({
      line: lineNo,
      offset: pos,
      end: nl + 1,
      record: typeof r === 'string' ? null : r,
      reason: typeof r === 'string' ? r : '',
    });
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
export function parseLine(buf: Buffer, start: number, end: number): DiskRecord | string {
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
      const rec: EventRecord = { t: 'event', rolloutId, seq, kind: v.kind, appendedAt: v.appendedAt, meta: v.meta, envelope: v.envelope };
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

// ---- what goes in ----

/** Why an item must not be logged, or null. `lastSeq` is the rollout's highest seq so far. */
export function checkItem(item: AppendItem, lastSeq: number): string | null {
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
export function eventOf(ev: LoggedEvent): AgentEvent {
  const env = JSON.parse(ev.envelope) as { event: AgentEvent };
  return env.event;
}
