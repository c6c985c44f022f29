import { join } from 'node:path';
import { errnoText } from '../common/errno';
import { formatSeqs } from './status.command';
import { EVENT_LOG_FILE_NAME, type EventLogSnapshot, readEventLog } from '../outbound/event-log.reader';
import type { Delivery, LoggedEvent } from '../outbound/event-log.types';

/** Exit statuses of `nixfleet-agent events` (2, bad flags, is main's). */
export const EVENTS_EXIT = { ok: 0, unreadable: 1 } as const;
export type EventsExit = (typeof EVENTS_EXIT)[keyof typeof EVENTS_EXIT];

export interface EventsOptions {
  readonly stateDir: string;
  readonly rolloutId: string | null;
  readonly pendingOnly: boolean;
  readonly json: boolean;
}

export interface EventsCommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

/** One event as `--json` prints it: one JSON object per line (JSON Lines). */
export interface EventLine {
  rolloutId: string;
  seq: number;
  kind: string;
  /** When the agent logged it (ISO 8601 UTC). */
  loggedAt: string;
  delivery: Delivery;
  /** The wire event as posted to the control plane. */
  event: unknown;
}

/**
 * Reads `<state-dir>/events.log` directly (read-only; the agent may be
 * running, or down, which is when an operator needs this most) and prints
 * each event's rollout, seq, kind, time and delivery state.
 */
export async function runEventsCommand(options: EventsOptions, io: EventsCommandIo): Promise<EventsExit> {
  let snapshot: EventLogSnapshot;
  try {
    snapshot = await readEventLog(options.stateDir);
  } catch (err) {
    io.err(unreadableLine(options.stateDir, err));
    return EVENTS_EXIT.unreadable;
  }
  for (const line of damageWarnings(snapshot)) io.err(line);
  const events = selectEvents(snapshot.events, options);
  if (options.json) {
    for (const ev of events) io.out(JSON.stringify(eventLine(ev)));
  } else {
    io.out(formatEvents(snapshot, events, options));
  }
  return EVENTS_EXIT.ok;
}

/** The path and the errno, and what usually helps. */
export function unreadableLine(stateDir: string, err: unknown): string {
  const path = join(stateDir, EVENT_LOG_FILE_NAME);
  const code = (err as NodeJS.ErrnoException).code;
  const errno = code === undefined ? errnoText(err) : `${code}, ${errnoText(err)}`;
  const hint =
    code === 'ENOENT'
      ? `; has an agent run with --state-dir ${stateDir}? Give the agent's --state-dir (or its --config)`
      : code === 'EACCES' || code === 'EPERM'
        ? "; run this as the agent's user (the state dir is private to it, e.g. sudo)"
        : '';
  return `nixfleet-agent events: cannot read ${path} (${errno})${hint}`;
}

/** `--rollout` and `--pending`, in log order. */
export function selectEvents(events: readonly LoggedEvent[], o: Pick<EventsOptions, 'rolloutId' | 'pendingOnly'>): LoggedEvent[] {
  return events.filter(
    (ev) => (o.rolloutId === null || ev.rolloutId === o.rolloutId) && (!o.pendingOnly || ev.delivery.state === 'pending'),
  );
}

export function eventLine(ev: LoggedEvent): EventLine {
  let event: unknown = null;
  try {
    event = (JSON.parse(ev.envelope) as { event?: unknown }).event ?? null;
  } catch {
    // Checked at append and guarded by the record's CRC since: not reached but for a bug.
  }
  return { rolloutId: ev.rolloutId, seq: ev.seq, kind: ev.kind, loggedAt: ev.appendedAt, delivery: ev.delivery, event };
}

export function deliveryText(d: Delivery): string {
  switch (d.state) {
    case 'pending':
      return 'pending';
    case 'delivered':
      return `delivered (HTTP ${d.status}) ${d.at}`;
    case 'refused':
      return `REFUSED (HTTP ${d.status}) ${d.at}: ${oneLine(d.reason)}`;
    default: {
      const never: never = d;
      return never;
    }
  }
}

const HEADERS = ['ROLLOUT', 'SEQ', 'KIND', 'LOGGED AT', 'DELIVERY'] as const;

/** The table (columns as wide as their widest cell, seq right-aligned), then what the log holds besides. */
export function formatEvents(
  snapshot: EventLogSnapshot,
  events: readonly LoggedEvent[],
  o: Omit<EventsOptions, 'stateDir' | 'json'>,
): string {
  const lines: string[] = [];
  if (events.length === 0) {
    lines.push(noneText(snapshot, o));
  } else {
    const rows = events.map((ev) => [ev.rolloutId, String(ev.seq), ev.kind, ev.appendedAt, deliveryText(ev.delivery)]);
    const widths = HEADERS.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const render = (cells: readonly string[]): string =>
      cells
        .map((c, i) => (i === cells.length - 1 ? c : i === 1 ? c.padStart(widths[i]) : c.padEnd(widths[i])))
        .join('  ')
        .trimEnd();
    lines.push(render(HEADERS), ...rows.map(render));
  }
  lines.push('', totalsText(snapshot));
  for (const r of snapshot.rollouts) {
    if (o.rolloutId !== null && r.rolloutId !== o.rolloutId) continue;
    if (r.notRetained.length === 0) continue;
    lines.push(
      `${r.rolloutId}: seqs ${formatSeqs(r.notRetained)} no longer in the log (compacted away after delivery, or damaged); last seq ${r.lastSeq}, delivered through ${r.lastDeliveredSeq ?? 'none'}`,
    );
  }
  return lines.join('\n');
}

function noneText(snapshot: EventLogSnapshot, o: Omit<EventsOptions, 'stateDir' | 'json'>): string {
  const what = o.pendingOnly ? 'no pending events' : 'no events';
  if (o.rolloutId === null) return `${what} in ${snapshot.path}`;
  const known = snapshot.rollouts.some((r) => r.rolloutId === o.rolloutId);
  if (known) return `${what} of rollout ${o.rolloutId} in ${snapshot.path}`;
  const ids = snapshot.rollouts.map((r) => r.rolloutId);
  return `${what} of rollout ${o.rolloutId} in ${snapshot.path}; the log knows ${ids.length === 0 ? 'no rollout' : ids.join(', ')}`;
}

function totalsText(snapshot: EventLogSnapshot): string {
  const counts = { pending: 0, delivered: 0, refused: 0 };
  for (const ev of snapshot.events) counts[ev.delivery.state] += 1;
  return `${snapshot.events.length} event(s) in ${snapshot.path} (${snapshot.bytes} bytes): ${counts.pending} pending, ${counts.delivered} delivered, ${counts.refused} refused`;
}

/** On stderr, in both modes: the listing is whole only up to these. */
export function damageWarnings(snapshot: EventLogSnapshot): string[] {
  const lines: string[] = [];
  if (snapshot.incompleteTailBytes > 0) {
    lines.push(
      `warning: the last ${snapshot.incompleteTailBytes} bytes of ${snapshot.path} are no whole record (an append in progress, or a record torn by a crash, which the agent cuts off at its next start); not shown`,
    );
  }
  for (const d of snapshot.damaged) {
    lines.push(`warning: record on line ${d.line} of ${snapshot.path} is damaged (${d.reason}); skipped, as the agent skips it`);
  }
  return lines;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ');
}
