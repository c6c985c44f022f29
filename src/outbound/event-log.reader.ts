import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { scanLog } from './event-log.codec';
import { EventLogIndex } from './event-log.index';
import type { LoggedEvent } from './event-log.types';

/** The log's file inside the state dir; `EventLog` opens the same one. */
export const EVENT_LOG_FILE_NAME = 'events.log';

/** What the log says about one rollout, also after compaction dropped all its events. */
export interface RolloutOnRecord {
  readonly rolloutId: string;
  readonly lastSeq: number;
  readonly lastDeliveredSeq: number | null;
  /** Seqs up to `lastSeq` the log no longer holds (compacted away, or skipped as damaged), ascending. */
  readonly notRetained: readonly number[];
}

/** The log as one read of its file found it. */
export interface EventLogSnapshot {
  readonly path: string;
  /** The file's size at the read. */
  readonly bytes: number;
  /** Every retained event, in log (append) order, with its delivery state. */
  readonly events: readonly LoggedEvent[];
  /** Every rollout the log knows, newest event last. */
  readonly rollouts: readonly RolloutOnRecord[];
  /**
   * Bytes after the last whole record: an append in progress while the agent
   * runs, or a record torn by a crash, which the agent cuts at its next start.
   * Never cut here.
   */
  readonly incompleteTailBytes: number;
  /** Damaged records before the tail; `line` is 1-based. */
  readonly damaged: readonly { readonly line: number; readonly reason: string }[];
}

/**
 * Reads the durable event log without the agent: one read(2) pass over the
 * file, never a write, never the state dir's lock, never a cut of a torn
 * tail. Safe while the agent runs: it appends whole records and replaces the
 * file by rename when it compacts, so a read sees whole records of one file,
 * at worst followed by part of an append in flight, which is left out here.
 * Rejects with the read's errno error (ENOENT, EACCES, ...).
 */
export async function readEventLog(stateDir: string): Promise<EventLogSnapshot> {
  const path = join(stateDir, EVENT_LOG_FILE_NAME);
  const buf = await readFile(path, { flag: 'r' });
  const scan = scanLog(buf);
  const index = new EventLogIndex();
  const damaged = scan.corrupt.map((c) => ({ line: c.line, reason: c.reason }));
  for (const line of scan.lines) {
    const problem = index.load(line.record, line.bytes);
    if (problem !== null) damaged.push({ line: line.line, reason: problem });
  }
  damaged.sort((a, b) => a.line - b.line);
  const rollouts = index.rollouts().map((rolloutId) => ({
    rolloutId,
    lastSeq: index.lastSeq(rolloutId),
    lastDeliveredSeq: index.lastDeliveredSeq(rolloutId),
    notRetained: index.missing(rolloutId, 0),
  }));
  return { path, bytes: buf.length, events: index.inOrder(), rollouts, incompleteTailBytes: buf.length - scan.cut, damaged };
}
