import { crc32 } from 'node:zlib';
import type { AgentEventKind } from '../protocol/events.wire';
import {
  checkItem,
  compactedRecord,
  type DiskRecord,
  encodeLine,
  eventOf,
  eventRecord,
  hwmRecord,
  markRecord,
  parseLine,
  scanLog,
} from './event-log.codec';
import type { AppendItem, LoggedEvent } from './event-log.types';

const R = 'stable@a1b2c3d4';
const AT = '2026-05-01T12:00:00.000Z';

function item(seq: number, kind: AgentEventKind = 'ProbeResult', rolloutId = R): AppendItem {
  const event = { kind, seq, probeName: 'http', mode: 'enforce', status: 'pass', observedAt: AT, failureReason: 'ünïcode ✓' };
  return { rolloutId, seq, kind, envelope: JSON.stringify({ hostname: 'web-01', rolloutId, event }), meta: { channel: 'stable' } };
}

/** The record a line parses to; fails the test when it does not parse. */
function parse(line: Buffer): DiskRecord {
  const r = parseLine(line, 0, line.length - 1);
  if (typeof r === 'string') throw new Error(`line did not parse: ${r}`);
  return r;
}

describe('event log codec', () => {
  describe('a line', () => {
    it('is the crc32 of the JSON as 8 hex digits, a space, the JSON and a newline', () => {
      const rec = eventRecord(item(1), AT);
      const line = encodeLine(rec).toString('utf8');
      const json = JSON.stringify(rec);
      expect(line).toBe(`${crc32(Buffer.from(json, 'utf8')).toString(16).padStart(8, '0')} ${json}\n`);
    });

    it('reads back every record kind as written, non-ASCII envelopes included', () => {
      const recs: DiskRecord[] = [
        eventRecord(item(1), AT),
        eventRecord(item(2), AT, [0, 2]),
        markRecord(R, 1, { state: 'delivered', status: 204, at: AT }),
        markRecord(R, 2, { state: 'refused', status: 422, reason: 'bad "seq"', at: AT }),
        hwmRecord(R, { lastSeq: 9, lastKind: 'Converged', lastAt: AT, lastDeliveredSeq: 7, lastDeliveredAt: AT }),
        hwmRecord(R, { lastSeq: 3, lastKind: null, lastAt: null, lastDeliveredSeq: null, lastDeliveredAt: null }),
      ];
      for (const rec of recs) expect(parse(encodeLine(rec))).toEqual(rec);
    });

    it('says why a line is not a record: no checksum, a wrong one, JSON that does not parse, an unknown shape', () => {
      const good = encodeLine(eventRecord(item(1), AT));
      const reason = (buf: Buffer): DiskRecord | string => parseLine(buf, 0, buf.length - 1);

      expect(reason(Buffer.from('just some text\n'))).toBe('not a `<crc32> <json>` line');
      expect(reason(Buffer.from(`ZZZZZZZZ ${'{}'.padEnd(10)}\n`))).toBe('not a `<crc32> <json>` line');

      const flipped = Buffer.from(good);
      flipped[20] ^= 1;
      expect(reason(flipped)).toBe('checksum mismatch');

      const notJson = '{"t":"event",';
      expect(reason(Buffer.from(`${crc32(notJson).toString(16).padStart(8, '0')} ${notJson}\n`))).toBe(
        'checksum matches but the JSON does not parse',
      );

      for (const body of [
        { ...eventRecord(item(1), AT), seq: 0 },
        { ...eventRecord(item(1), AT), kind: 'Rebooted' },
        { ...eventRecord(item(1), AT), batch: [0] },
        { ...eventRecord(item(1), AT), delivery: { state: 'delivered' } },
        { t: 'refused', rolloutId: R, seq: 1, status: 422, at: AT },
        { t: 'hwm', rolloutId: R, seq: 1, lastKind: 'Nope', lastAt: null, lastDeliveredSeq: null, lastDeliveredAt: null },
        { t: 'snapshot', rolloutId: R, seq: 1 },
      ]) {
        const json = JSON.stringify(body);
        expect(reason(Buffer.from(`${crc32(json).toString(16).padStart(8, '0')} ${json}\n`))).toBe(
          'checksum matches but the record has an unknown shape',
        );
      }
    });
  });

  describe('records built from the log', () => {
    it('marks only a batch of more than one, so a lone event carries no batch field', () => {
      expect(eventRecord(item(1), AT)).not.toHaveProperty('batch');
      expect(eventRecord(item(1), AT, [1, 3]).batch).toEqual([1, 3]);
    });

    it('folds a delivery into a compacted event, and leaves a pending one without it', () => {
      const ev: LoggedEvent = { ...item(4), appendedAt: AT, delivery: { state: 'pending' } };
      expect(compactedRecord(ev)).not.toHaveProperty('delivery');
      const delivered = { ...ev, delivery: { state: 'delivered', status: 204, at: AT } } as const;
      expect(parse(encodeLine(compactedRecord(delivered)))).toEqual({ ...eventRecord(item(4), AT), delivery: delivered.delivery });
    });

    it('never writes a mark for a pending event', () => {
      expect(() => markRecord(R, 1, { state: 'pending' })).toThrow('a pending mark is never written');
    });

    it('returns the wire event inside a stored envelope', () => {
      const it1 = item(5, 'ProbeResult');
      expect(eventOf({ ...it1, appendedAt: AT, delivery: { state: 'pending' } })).toEqual(
        (JSON.parse(it1.envelope) as { event: unknown }).event,
      );
    });
  });

  describe('scanning a file', () => {
    const lines = (...recs: DiskRecord[]): Buffer[] => recs.map(encodeLine);

    it('reads every record of a whole file, with its line number, offset and size', () => {
      const ls = lines(eventRecord(item(1), AT), markRecord(R, 1, { state: 'delivered', status: 204, at: AT }));
      const scan = scanLog(Buffer.concat(ls));
      expect(scan.cut).toBe(ls[0].length + ls[1].length);
      expect(scan.corrupt).toEqual([]);
      expect(scan.lines.map(({ line, offset, bytes }) => ({ line, offset, bytes }))).toEqual([
        { line: 1, offset: 0, bytes: ls[0].length },
        { line: 2, offset: ls[0].length, bytes: ls[1].length },
      ]);
    });

    it('cuts a last line without its newline off as a torn tail', () => {
      const ls = lines(eventRecord(item(1), AT), eventRecord(item(2), AT));
      const buf = Buffer.concat([ls[0], ls[1].subarray(0, ls[1].length - 1)]);
      const scan = scanLog(buf);
      expect(scan.cut).toBe(ls[0].length);
      expect(scan.lines).toHaveLength(1);
      expect(scan.corrupt).toEqual([]);
    });

    it('cuts a batch whose last records are missing off whole, though its first records are complete', () => {
      const ls = lines(eventRecord(item(1), AT), eventRecord(item(2), AT, [0, 3]), eventRecord(item(3), AT, [1, 3]));
      const scan = scanLog(Buffer.concat(ls));
      expect(scan.cut).toBe(ls[0].length);
      expect(scan.lines.map((l) => l.record)).toEqual([eventRecord(item(1), AT)]);
    });

    it('keeps a complete batch, and reports a damaged record before the tail as bit rot without cutting there', () => {
      const ls = lines(
        eventRecord(item(1), AT),
        eventRecord(item(2), AT),
        eventRecord(item(3), AT, [0, 2]),
        eventRecord(item(4), AT, [1, 2]),
      );
      ls[1] = Buffer.from(ls[1]);
      ls[1][30] ^= 1;
      const buf = Buffer.concat(ls);
      const scan = scanLog(buf);
      expect(scan.cut).toBe(buf.length);
      expect(scan.corrupt).toEqual([{ line: 2, offset: ls[0].length, reason: 'checksum mismatch' }]);
      expect(scan.lines.map((l) => l.record.seq)).toEqual([1, 3, 4]);
    });

    it('cuts an empty or wholly damaged file to nothing', () => {
      expect(scanLog(Buffer.alloc(0))).toEqual({ lines: [], corrupt: [], cut: 0 });
      expect(scanLog(Buffer.from('garbage\nmore garbage\n'))).toEqual({ lines: [], corrupt: [], cut: 0 });
    });
  });

  describe('what goes in', () => {
    it('takes an event whose seq is above the last and whose envelope agrees', () => {
      expect(checkItem(item(3), 2)).toBeNull();
    });

    it('refuses a reused seq, a bad kind, an envelope that is not JSON or names another event, each naming the event', () => {
      expect(checkItem(item(2), 2)).toBe(`${R} seq 2: seq is not above the last logged seq 2`);
      expect(checkItem({ ...item(3), seq: 1.5 }, 0)).toBe(`${R} seq 1.5: seq must be a positive integer`);
      expect(checkItem({ ...item(3), rolloutId: '' }, 0)).toBe('an event without a rolloutId');
      expect(checkItem({ ...item(3), kind: 'Rebooted' as AgentEventKind }, 0)).toBe(`${R} seq 3: unknown kind Rebooted`);
      expect(checkItem({ ...item(3), envelope: '{' }, 0)).toBe(`${R} seq 3: the envelope is not JSON`);
      expect(checkItem({ ...item(3), envelope: item(3, 'ProbeResult', 'other@1').envelope }, 0)).toBe(
        `${R} seq 3: the envelope names another rollout`,
      );
      expect(checkItem({ ...item(3), envelope: item(4).envelope }, 0)).toBe(`${R} seq 3: the envelope's event is not ProbeResult seq 3`);
    });
  });
});
