import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentEventKind, EventEnvelope } from '../protocol/events.wire';
import type { LogMeta } from '../reducer/reducer.types';
import { type AppendItem, EventLog } from './event-log';
import { EVENT_LOG_FILE_NAME, readEventLog } from './event-log.reader';

const T0 = Date.parse('2026-05-01T12:00:00.000Z');
const DAY = 24 * 3600_000;
const A = 'stable@a1b2c3d4';
const B = 'canary@e5f6a7b8';
const TARGET = `${'a'.repeat(32)}-nixos-system-web-01-26.05`;
const META: LogMeta = { channel: 'stable', targetClosure: TARGET, soakDueAt: '2026-05-01T12:10:00.000Z' };

function item(rolloutId: string, seq: number, kind: AgentEventKind): AppendItem {
  const at = new Date(T0 + seq * 1000).toISOString();
  const event =
    kind === 'Converged'
      ? { kind, seq, convergedAt: at, currentClosure: TARGET }
      : kind === 'DispatchAck'
        ? { kind, seq, currentClosureAtDispatch: null, receivedAt: at }
        : { kind: 'ActivationStarted' as const, seq, startedAt: at, switchMethod: 'switch' };
  const envelope: EventEnvelope = { hostname: 'web-01', rolloutId, event };
  return { rolloutId, seq, kind: event.kind, envelope: JSON.stringify(envelope), meta: META };
}

describe('readEventLog: the event log read without the agent', () => {
  let dir: string;
  let nowMs: number;
  const open = (): Promise<EventLog> =>
    EventLog.open({ dir, maxBytes: 1 << 20, retentionMs: DAY, now: () => new Date(nowMs), markSyncMs: 10, autoCompact: false });
  const file = (): string => join(dir, EVENT_LOG_FILE_NAME);

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-log-reader-'));
    nowMs = T0;
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('gives every event in log order with its delivery: pending, delivered with its status, refused with status and reason', async () => {
    const log = await open();
    await log.append([item(A, 1, 'DispatchAck')]);
    await log.append([item(B, 1, 'DispatchAck'), item(A, 2, 'ActivationStarted')]);
    nowMs = T0 + 5_000;
    await log.markDelivered(A, 1, 204);
    await log.markRefused(B, 1, 422, 'HTTP 422: {"error":"bad event"}');
    await log.close();

    const read = await readEventLog(dir);

    expect(read.path).toBe(file());
    expect(read.bytes).toBe(statSync(file()).size);
    expect(read.events.map((e) => [e.rolloutId, e.seq, e.kind, e.appendedAt, e.delivery])).toEqual([
      [A, 1, 'DispatchAck', '2026-05-01T12:00:00.000Z', { state: 'delivered', status: 204, at: '2026-05-01T12:00:05.000Z' }],
      [
        B,
        1,
        'DispatchAck',
        '2026-05-01T12:00:00.000Z',
        { state: 'refused', status: 422, reason: 'HTTP 422: {"error":"bad event"}', at: '2026-05-01T12:00:05.000Z' },
      ],
      [A, 2, 'ActivationStarted', '2026-05-01T12:00:00.000Z', { state: 'pending' }],
    ]);
    // Newest event last: A logged seq 2 after B's seq 1.
    expect(read.rollouts).toEqual([
      { rolloutId: B, lastSeq: 1, lastDeliveredSeq: null, notRetained: [] },
      { rolloutId: A, lastSeq: 2, lastDeliveredSeq: 1, notRetained: [] },
    ]);
    expect(read).toMatchObject({ incompleteTailBytes: 0, damaged: [] });
  });

  it('reads while the agent holds the log open and appends, and sees the marks it wrote', async () => {
    const log = await open();
    await log.append([item(A, 1, 'DispatchAck')]);
    expect((await readEventLog(dir)).events.map((e) => e.delivery.state)).toEqual(['pending']);
    await log.markDelivered(A, 1, 204);
    await log.append([item(A, 2, 'ActivationStarted')]);

    const read = await readEventLog(dir);

    expect(read.events.map((e) => `${e.seq}:${e.delivery.state}`)).toEqual(['1:delivered', '2:pending']);
    // The log still takes writes: the read took no lock and changed nothing.
    await log.append([item(A, 3, 'Converged')]);
    expect(log.lastSeq(A)).toBe(3);
    await log.close();
  });

  it('leaves a torn tail on disk as it is and reports its size; what is whole before it is read', async () => {
    const log = await open();
    await log.append([item(A, 1, 'DispatchAck')]);
    await log.close();
    const torn = Buffer.from('0badf00d {"t":"event","rolloutId":"stable@a1b2');
    appendFileSync(file(), torn);
    const before = readFileSync(file());

    const read = await readEventLog(dir);

    expect(read.events.map((e) => e.seq)).toEqual([1]);
    expect(read.incompleteTailBytes).toBe(torn.length);
    expect(readFileSync(file())).toEqual(before);
  });

  it('reports a damaged record before the tail by its line and skips it, as the agent does', async () => {
    const log = await open();
    await log.append([item(A, 1, 'DispatchAck')]);
    await log.append([item(A, 2, 'ActivationStarted')]);
    await log.close();
    const lines = readFileSync(file(), 'utf8').split('\n');
    lines[0] = lines[0].replace('DispatchAck', 'DispatchAcK');
    writeFileSync(file(), lines.join('\n'));

    const read = await readEventLog(dir);

    expect(read.events.map((e) => e.seq)).toEqual([2]);
    expect(read.damaged).toEqual([{ line: 1, reason: 'checksum mismatch' }]);
    expect(read.rollouts).toEqual([{ rolloutId: A, lastSeq: 2, lastDeliveredSeq: null, notRetained: [1] }]);
  });

  it('knows a rollout whose events compaction dropped, by its last seq and last delivered seq', async () => {
    const log = await open();
    await log.append([item(A, 1, 'DispatchAck')]);
    await log.append([item(A, 2, 'Converged')]);
    await log.markDelivered(A, 1, 204);
    await log.markDelivered(A, 2, 204);
    await log.append([item(B, 1, 'DispatchAck')]);
    nowMs = T0 + 2 * DAY;
    expect((await log.compact()).dropped).toBe(2);
    await log.close();

    const read = await readEventLog(dir);

    expect(read.events.map((e) => `${e.rolloutId}#${e.seq}`)).toEqual([`${B}#1`]);
    expect(read.rollouts).toEqual(
      expect.arrayContaining([
        { rolloutId: A, lastSeq: 2, lastDeliveredSeq: 2, notRetained: [1, 2] },
        { rolloutId: B, lastSeq: 1, lastDeliveredSeq: null, notRetained: [] },
      ]),
    );
  });

  it('rejects with the errno of the read (ENOENT without a log, EISDIR for a directory in its place) and creates nothing', async () => {
    await expect(readEventLog(dir)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(readdirSync(dir)).toEqual([]);
    mkdirSync(file());
    await expect(readEventLog(dir)).rejects.toMatchObject({ code: 'EISDIR' });
  });
});
