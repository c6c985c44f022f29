import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventLog } from '../outbound/event-log';
import type { EventLogSnapshot } from '../outbound/event-log.reader';
import type { Delivery, LoggedEvent } from '../outbound/event-log.types';
import type { AgentEventKind } from '../protocol/events.wire';
import {
  damageWarnings,
  deliveryText,
  EVENTS_EXIT,
  eventLine,
  formatEvents,
  runEventsCommand,
  selectEvents,
  unreadableLine,
} from './events.command';

const A = 'stable@a1b2c3d4';
const B = 'canary@e5f6a7b8';
const META = { channel: 'stable', targetClosure: `${'a'.repeat(32)}-nixos-system-web-01-26.05`, soakDueAt: '2026-05-01T12:10:00.000Z' };

function logged(rolloutId: string, seq: number, kind: AgentEventKind, delivery: Delivery): LoggedEvent {
  const event = { kind, seq, startedAt: '2026-05-01T12:00:00.000Z', switchMethod: 'switch' };
  return {
    rolloutId,
    seq,
    kind,
    envelope: JSON.stringify({ hostname: 'web-01', rolloutId, event }),
    meta: META,
    appendedAt: `2026-05-01T12:00:${String(seq).padStart(2, '0')}.000Z`,
    delivery,
  };
}

const DELIVERED: Delivery = { state: 'delivered', status: 204, at: '2026-05-01T12:00:09.000Z' };
const REFUSED: Delivery = {
  state: 'refused',
  status: 422,
  reason: 'HTTP 422: {"error":"bad"}\nsecond line',
  at: '2026-05-01T12:00:09.000Z',
};
const EVENTS = [
  logged(A, 1, 'DispatchAck', DELIVERED),
  logged(B, 1, 'DispatchAck', REFUSED),
  logged(A, 2, 'ActivationStarted', { state: 'pending' }),
  logged(A, 10, 'ActivationCompleted', { state: 'pending' }),
];

function snapshot(events: LoggedEvent[] = EVENTS, extra: Partial<EventLogSnapshot> = {}): EventLogSnapshot {
  return {
    path: '/var/lib/nixfleet-agent/events.log',
    bytes: 4096,
    events,
    rollouts: [
      { rolloutId: A, lastSeq: 10, lastDeliveredSeq: 1, notRetained: [3, 4, 5, 6, 7, 8, 9] },
      { rolloutId: B, lastSeq: 1, lastDeliveredSeq: null, notRetained: [] },
    ],
    incompleteTailBytes: 0,
    damaged: [],
    ...extra,
  };
}

describe('nixfleet-agent events: filters and formatting', () => {
  it('--rollout keeps that rollout, --pending the undelivered, both together both, in log order', () => {
    const ids = (list: LoggedEvent[]): string[] => list.map((e) => `${e.rolloutId}#${e.seq}`);
    expect(ids(selectEvents(EVENTS, { rolloutId: null, pendingOnly: false }))).toEqual([`${A}#1`, `${B}#1`, `${A}#2`, `${A}#10`]);
    expect(ids(selectEvents(EVENTS, { rolloutId: B, pendingOnly: false }))).toEqual([`${B}#1`]);
    expect(ids(selectEvents(EVENTS, { rolloutId: null, pendingOnly: true }))).toEqual([`${A}#2`, `${A}#10`]);
    expect(ids(selectEvents(EVENTS, { rolloutId: B, pendingOnly: true }))).toEqual([]);
  });

  it('says each delivery state with the CP status; a refusal on one line with its reason', () => {
    expect(deliveryText({ state: 'pending' })).toBe('pending');
    expect(deliveryText(DELIVERED)).toBe('delivered (HTTP 204) 2026-05-01T12:00:09.000Z');
    expect(deliveryText(REFUSED)).toBe('REFUSED (HTTP 422) 2026-05-01T12:00:09.000Z: HTTP 422: {"error":"bad"} second line');
  });

  it('prints an aligned table (seq right-aligned), the totals, and the seqs no longer in the log', () => {
    const text = formatEvents(snapshot(), EVENTS, { rolloutId: null, pendingOnly: false });

    expect(text.split('\n')).toEqual([
      'ROLLOUT          SEQ  KIND                 LOGGED AT                 DELIVERY',
      'stable@a1b2c3d4    1  DispatchAck          2026-05-01T12:00:01.000Z  delivered (HTTP 204) 2026-05-01T12:00:09.000Z',
      'canary@e5f6a7b8    1  DispatchAck          2026-05-01T12:00:01.000Z  REFUSED (HTTP 422) 2026-05-01T12:00:09.000Z: HTTP 422: {"error":"bad"} second line',
      'stable@a1b2c3d4    2  ActivationStarted    2026-05-01T12:00:02.000Z  pending',
      'stable@a1b2c3d4   10  ActivationCompleted  2026-05-01T12:00:10.000Z  pending',
      '',
      '4 event(s) in /var/lib/nixfleet-agent/events.log (4096 bytes): 2 pending, 1 delivered, 1 refused',
      'stable@a1b2c3d4: seqs 3-9 no longer in the log (compacted away after delivery, or damaged); last seq 10, delivered through 1',
    ]);
  });

  it('says plainly when nothing matches, naming the rollouts the log knows for an unknown --rollout', () => {
    const s = snapshot();
    expect(formatEvents(s, [], { rolloutId: null, pendingOnly: true }).split('\n')[0]).toBe(
      'no pending events in /var/lib/nixfleet-agent/events.log',
    );
    expect(formatEvents(s, [], { rolloutId: B, pendingOnly: true }).split('\n')[0]).toBe(
      `no pending events of rollout ${B} in /var/lib/nixfleet-agent/events.log`,
    );
    expect(formatEvents(s, [], { rolloutId: 'nope@1', pendingOnly: false }).split('\n')[0]).toBe(
      `no events of rollout nope@1 in /var/lib/nixfleet-agent/events.log; the log knows ${A}, ${B}`,
    );
  });

  it('warns of a tail that is no whole record and of damaged records, one line each, and of nothing in a clean log', () => {
    expect(damageWarnings(snapshot())).toEqual([]);
    expect(damageWarnings(snapshot(EVENTS, { incompleteTailBytes: 37, damaged: [{ line: 4, reason: 'checksum mismatch' }] }))).toEqual([
      'warning: the last 37 bytes of /var/lib/nixfleet-agent/events.log are no whole record (an append in progress, or a record torn by a crash, which the agent cuts off at its next start); not shown',
      'warning: record on line 4 of /var/lib/nixfleet-agent/events.log is damaged (checksum mismatch); skipped, as the agent skips it',
    ]);
  });

  it('--json: one object per event with the wire event parsed from the envelope', () => {
    expect(eventLine(EVENTS[1])).toEqual({
      rolloutId: B,
      seq: 1,
      kind: 'DispatchAck',
      loggedAt: '2026-05-01T12:00:01.000Z',
      delivery: REFUSED,
      event: { kind: 'DispatchAck', seq: 1, startedAt: '2026-05-01T12:00:00.000Z', switchMethod: 'switch' },
    });
  });

  it('names the path and the errno when the log cannot be read, with what usually helps', () => {
    const err = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: boom`), { code });
    expect(unreadableLine('/srv/state', err('ENOENT'))).toBe(
      "nixfleet-agent events: cannot read /srv/state/events.log (ENOENT, no such file); has an agent run with --state-dir /srv/state? Give the agent's --state-dir (or its --config)",
    );
    expect(unreadableLine('/srv/state', err('EACCES'))).toBe(
      "nixfleet-agent events: cannot read /srv/state/events.log (EACCES, permission denied); run this as the agent's user (the state dir is private to it, e.g. sudo)",
    );
  });
});

describe('runEventsCommand on a real log file', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-events-cmd-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function io(): { out: string[]; err: string[]; io: { out: (t: string) => void; err: (t: string) => void } } {
    const out: string[] = [];
    const err: string[] = [];
    return { out, err, io: { out: (t) => out.push(t), err: (t) => err.push(t) } };
  }

  it('prints JSON Lines with --json, exit 0; a line per event and nothing else on stdout', async () => {
    const log = await EventLog.open({ dir, maxBytes: 1 << 20, retentionMs: 86_400_000, now: () => new Date('2026-05-01T12:00:00.000Z') });
    for (const ev of EVENTS.slice(0, 3))
      await log.append([{ rolloutId: ev.rolloutId, seq: ev.seq, kind: ev.kind, envelope: ev.envelope, meta: ev.meta }]);
    await log.markDelivered(A, 1, 204);
    await log.close();
    const c = io();

    const code = await runEventsCommand({ stateDir: dir, rolloutId: A, pendingOnly: false, json: true }, c.io);

    expect(code).toBe(EVENTS_EXIT.ok);
    expect(c.err).toEqual([]);
    expect(c.out.map((l) => JSON.parse(l) as { seq: number; delivery: Delivery })).toEqual([
      expect.objectContaining({
        rolloutId: A,
        seq: 1,
        kind: 'DispatchAck',
        delivery: { state: 'delivered', status: 204, at: '2026-05-01T12:00:00.000Z' },
      }),
      expect.objectContaining({ rolloutId: A, seq: 2, kind: 'ActivationStarted', delivery: { state: 'pending' } }),
    ]);
  });

  it('exits 1 with one line on stderr when there is no log', async () => {
    const c = io();
    const code = await runEventsCommand({ stateDir: dir, rolloutId: null, pendingOnly: false, json: false }, c.io);
    expect(code).toBe(EVENTS_EXIT.unreadable);
    expect(c.out).toEqual([]);
    expect(c.err).toEqual([
      expect.stringMatching(new RegExp(`^nixfleet-agent events: cannot read ${dir}/events.log \\(ENOENT, no such file\\)`)),
    ]);
  });
});
