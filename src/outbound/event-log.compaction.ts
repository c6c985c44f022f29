import { basename, dirname, join } from 'node:path';
import type { AgentEventKind } from '../protocol/events.wire';
import { compactedRecord, encodeLine, hwmRecord } from './event-log.codec';
import { EventLogWriteError, errCode, errText } from './event-log.errors';
import type { IndexEntry, RolloutView } from './event-log.index';
import type { CompactResult } from './event-log.types';
import { appendFully, type LogFile, type LogFs } from './log-fs';

const WRITE_CHUNK_BYTES = 1 << 20;

/** A rollout is over once its last event is one of these; retention counts from it. */
const TERMINAL_KINDS: ReadonlySet<AgentEventKind> = new Set<AgentEventKind>([
  'Converged',
  'RollbackComplete',
  'ActivationFailed',
  'Failed',
]);

/** What retention lets go and how big the log may be. */
export interface RetentionPolicy {
  readonly retentionMs: number;
  readonly maxBytes: number;
}

/** Where a compaction writes the new file before renaming it over the log; a leftover one is removed at open. */
export function tmpPathOf(path: string): string {
  return join(dirname(path), `.${basename(path)}.compact.tmp`);
}

/** Terminal for longer than the retention time: its delivered and refused events may go. */
export function isExpired(r: RolloutView, nowMs: number, retentionMs: number): boolean {
  return r.lastKind !== null && TERMINAL_KINDS.has(r.lastKind) && r.lastAt !== null && nowMs >= Date.parse(r.lastAt) + retentionMs;
}

/** What a compaction would keep under retention alone (before the size cap). */
export function liveBytes(rollouts: ReadonlyMap<string, RolloutView>, nowMs: number, retentionMs: number): number {
  let total = 0;
  for (const [id, r] of rollouts) {
    total += (isExpired(r, nowMs, retentionMs) ? r.pendingBytes : r.bytes) + encodeLine(hwmRecord(id, r)).length;
  }
  return total;
}

/**
 * Whether the log should compact by itself now: past the cap or twice its
 * live size, and grown enough since the last compaction (`compactBase`) that
 * a log held above the cap by pending events alone is not rewritten on every
 * append. `live` is only asked when the cap alone does not decide.
 */
export function autoCompactDue(size: number, compactBase: number, maxBytes: number, live: () => number): boolean {
  const minGrowth = Math.max(Math.min(64 * 1024, Math.floor(maxBytes / 8)), Math.floor(compactBase / 4));
  if (size - compactBase < minGrowth) return false;
  return size > maxBytes || size > 2 * live();
}

/** One line of the compacted file: an event (with its delivery folded in) or a rollout's `hwm` summary. */
export interface PlannedLine {
  readonly ordinal: number;
  readonly line: Buffer;
  readonly entry: IndexEntry | null;
}

export interface CompactionPlan {
  /** In log order. */
  readonly kept: readonly PlannedLine[];
  readonly dropped: readonly IndexEntry[];
  /** Size of the compacted file. */
  readonly bytes: number;
}

/**
 * What the compacted file holds: every rollout's events in log order minus
 * those of rollouts terminal for longer than `retentionMs`, then, above
 * `maxBytes`, minus the oldest delivered/refused ones. Pending events always stay.
 */
export function planCompaction(rollouts: ReadonlyMap<string, RolloutView>, nowMs: number, policy: RetentionPolicy): CompactionPlan {
  const items: PlannedLine[] = [];
  const dropped: IndexEntry[] = [];
  for (const [id, r] of rollouts) {
    const expired = isExpired(r, nowMs, policy.retentionMs);
    for (const entry of r.events.values()) {
      if (expired && entry.ev.delivery.state !== 'pending') dropped.push(entry);
      else items.push({ ordinal: entry.ordinal, line: encodeLine(compactedRecord(entry.ev)), entry });
    }
    // Right after the rollout's newest event, so `newestRollout()` survives compaction.
    items.push({ ordinal: r.lastOrdinal + 0.5, line: encodeLine(hwmRecord(id, r)), entry: null });
  }
  items.sort((a, b) => a.ordinal - b.ordinal);
  let total = items.reduce((n, it) => n + it.line.length, 0);
  const keep = new Set(items);
  if (total > policy.maxBytes) {
    for (const it of items) {
      if (total <= policy.maxBytes) break;
      if (it.entry === null || it.entry.ev.delivery.state === 'pending') continue;
      keep.delete(it);
      dropped.push(it.entry);
      total -= it.line.length;
    }
  }
  return { kept: items.filter((it) => keep.has(it)), dropped, bytes: total };
}

/**
 * Writes `lines` to a tmp file beside `path`, fsyncs it and renames it over
 * `path`; returns the new file, open for appends. On failure the log is
 * untouched and the tmp file removed. The caller fsyncs the directory.
 */
export async function writeCompacted(fs: LogFs, path: string, lines: readonly Buffer[]): Promise<LogFile> {
  const tmpPath = tmpPathOf(path);
  let tmp: LogFile | null = null;
  try {
    tmp = await fs.create(tmpPath);
    for (let i = 0; i < lines.length;) {
      const chunk: Buffer[] = [];
      let len = 0;
      while (i < lines.length && (len === 0 || len + lines[i].length <= WRITE_CHUNK_BYTES)) {
        chunk.push(lines[i]);
        len += lines[i].length;
        i++;
      }
      await appendFully(tmp, Buffer.concat(chunk, len));
    }
    await tmp.sync();
    await fs.rename(tmpPath, path);
    return tmp;
  } catch (err) {
    if (tmp !== null) await tmp.close().catch(() => undefined);
    await fs.unlink(tmpPath).catch(() => undefined);
    throw new EventLogWriteError(`event log ${path}: compaction failed (${errText(err)}); the log is unchanged`, errCode(err), {
      cause: err,
    });
  }
}

/** Dropped events as inclusive seq ranges per rollout. */
export function rangesOf(entries: readonly IndexEntry[]): CompactResult['droppedRanges'] {
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
