import type { AgentEventKind } from '../protocol/events.wire';
import type { LogMeta } from '../reducer/reducer.types';

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
