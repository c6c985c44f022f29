import type { AgentEventKind } from '../protocol/events.wire';
import { type DiskRecord, encodeLine, eventRecord, hwmRecord, markRecord } from './event-log.codec';
import { EventLogIndex } from './event-log.index';
import type { AppendItem, Delivery, LoggedEvent } from './event-log.types';

const A = 'stable@a1b2c3d4';
const B = 'canary@e5f6a7b8';
const at = (min: number): string => new Date(Date.parse('2026-05-01T12:00:00.000Z') + min * 60_000).toISOString();

function item(rolloutId: string, seq: number, kind: AgentEventKind = 'ProbeResult'): AppendItem {
  return {
    rolloutId,
    seq,
    kind,
    envelope: JSON.stringify({ hostname: 'web-01', rolloutId, event: { kind, seq } }),
    meta: { channel: 'stable' },
  };
}

/** Appends as the log does: the index learns the event and the size of its line. */
function append(index: EventLogIndex, rolloutId: string, seq: number, min: number, kind?: AgentEventKind): number {
  const it = item(rolloutId, seq, kind);
  const bytes = encodeLine(eventRecord(it, at(min))).length;
  index.appended({ ...it, appendedAt: at(min) }, bytes);
  return bytes;
}

function mark(index: EventLogIndex, rolloutId: string, seq: number, d: Exclude<Delivery, { state: 'pending' }>): number {
  const bytes = encodeLine(markRecord(rolloutId, seq, d)).length;
  expect(index.marked(rolloutId, seq, d, bytes)).toBe(true);
  return bytes;
}

const ids = (evs: readonly LoggedEvent[]): string[] => evs.map((e) => `${e.rolloutId}/${e.seq}`);

describe('EventLogIndex', () => {
  it('lists pending events per rollout in seq order, rollouts by their oldest pending event first', () => {
    const index = new EventLogIndex();
    append(index, A, 2, 0);
    append(index, B, 1, 1);
    append(index, A, 1, 2);
    append(index, B, 2, 3);
    expect(ids(index.pending())).toEqual([`${A}/1`, `${A}/2`, `${B}/1`, `${B}/2`]);

    mark(index, A, 1, { state: 'delivered', status: 204, at: at(4) });
    mark(index, A, 2, { state: 'delivered', status: 204, at: at(4) });
    expect(ids(index.pending())).toEqual([`${B}/1`, `${B}/2`]);
    expect(ids(index.inOrder())).toEqual([`${A}/2`, `${B}/1`, `${A}/1`, `${B}/2`]);
    expect(index.rollouts()).toEqual([A, B]);
  });

  it('counts deliveries, keeps the highest delivered seq and the latest delivery time, and ignores a mark for an unknown event', () => {
    const index = new EventLogIndex();
    for (let s = 1; s <= 4; s++) append(index, A, s, s);
    mark(index, A, 3, { state: 'delivered', status: 204, at: at(10) });
    mark(index, A, 1, { state: 'delivered', status: 204, at: at(9) });
    mark(index, A, 2, { state: 'refused', status: 422, reason: 'bad', at: at(11) });
    expect(index.marked(A, 99, { state: 'delivered', status: 204, at: at(12) }, 50)).toBe(false);
    expect(index.marked(B, 1, { state: 'delivered', status: 204, at: at(12) }, 50)).toBe(false);

    expect(index.counts()).toEqual({ pending: 1, delivered: 2, refused: 1, oldestPendingAt: at(4), lastDeliveredAt: at(10) });
    expect(index.lastDeliveredSeq(A)).toBe(3);
    expect(index.lastDeliveredSeq(B)).toBeNull();
    expect(index.get(A, 2)?.delivery).toEqual({ state: 'refused', status: 422, reason: 'bad', at: at(11) });
    expect(index.size()).toBe(4);
  });

  it('keeps the on-disk size of each rollout, all and pending only, as events and marks arrive', () => {
    const index = new EventLogIndex();
    const e1 = append(index, A, 1, 0);
    const e2 = append(index, A, 2, 1);
    const m1 = mark(index, A, 1, { state: 'delivered', status: 204, at: at(2) });
    const view = index.rolloutViews().get(A);
    expect(view?.bytes).toBe(e1 + e2 + m1);
    expect(view?.pendingBytes).toBe(e2);
    // A second mark of the same event replaces the first one's bytes in the live size.
    const m1again = mark(index, A, 1, { state: 'refused', status: 400, reason: 'late', at: at(3) });
    expect(view?.bytes).toBe(e1 + e2 + m1again);
  });

  describe('loading records read at open', () => {
    const load = (index: EventLogIndex, rec: DiskRecord): string | null => index.load(rec, encodeLine(rec).length);

    it('keeps the first of two records of the same event and says why the second is skipped', () => {
      const index = new EventLogIndex();
      expect(load(index, eventRecord(item(A, 1), at(0)))).toBeNull();
      expect(load(index, eventRecord(item(A, 1, 'DispatchAck'), at(1)))).toBe(`repeats ${A} seq 1; the first record is kept`);
      expect(index.get(A, 1)?.kind).toBe('ProbeResult');
    });

    it('applies a mark to its event, and passes over a mark whose event is gone', () => {
      const index = new EventLogIndex();
      load(index, eventRecord(item(A, 2), at(0)));
      expect(load(index, markRecord(A, 2, { state: 'delivered', status: 204, at: at(1) }))).toBeNull();
      expect(load(index, markRecord(A, 1, { state: 'delivered', status: 204, at: at(1) }))).toBeNull();
      expect(index.get(A, 2)?.delivery.state).toBe('delivered');
      expect(index.get(A, 1)).toBeUndefined();
      expect(index.lastDeliveredSeq(A)).toBe(2);
    });

    it('counts an event whose delivery a compaction folded in as delivered, with no pending bytes', () => {
      const index = new EventLogIndex();
      load(index, { ...eventRecord(item(A, 1), at(0)), delivery: { state: 'delivered', status: 204, at: at(1) } });
      expect(index.counts()).toMatchObject({ pending: 0, delivered: 1, lastDeliveredAt: at(1) });
      expect(index.rolloutViews().get(A)?.pendingBytes).toBe(0);
    });

    it("takes a rollout's high-water mark from its hwm record when its events are gone, and reports the gap", () => {
      const index = new EventLogIndex();
      load(index, eventRecord(item(B, 1), at(0)));
      load(index, hwmRecord(A, { lastSeq: 5, lastKind: 'Converged', lastAt: at(3), lastDeliveredSeq: 5, lastDeliveredAt: at(4) }));
      load(index, eventRecord(item(A, 6), at(5)));
      expect(index.lastSeq(A)).toBe(6);
      expect(index.lastDeliveredSeq(A)).toBe(5);
      expect(index.missing(A, 0)).toEqual([1, 2, 3, 4, 5]);
      expect(index.missing(A, 3)).toEqual([4, 5]);
      expect(index.missing('unknown', 0)).toEqual([]);
      expect(index.rollouts()).toEqual([B, A]);
      expect(index.counts().lastDeliveredAt).toBe(at(4));
    });

    it('never lowers the last seq for an older hwm record', () => {
      const index = new EventLogIndex();
      load(index, eventRecord(item(A, 7, 'ActivationStarted'), at(2)));
      load(index, hwmRecord(A, { lastSeq: 3, lastKind: 'Converged', lastAt: at(1), lastDeliveredSeq: null, lastDeliveredAt: null }));
      expect(index.lastSeq(A)).toBe(7);
      expect(index.rolloutViews().get(A)?.lastKind).toBe('ActivationStarted');
    });
  });

  it('after a compaction forgets the dropped events but not their seqs, and sizes the kept ones by their new lines', () => {
    const index = new EventLogIndex();
    for (let s = 1; s <= 3; s++) append(index, A, s, s);
    append(index, B, 1, 4);
    mark(index, A, 1, { state: 'delivered', status: 204, at: at(5) });
    mark(index, A, 2, { state: 'delivered', status: 204, at: at(5) });
    const view = index.rolloutViews().get(A);
    const entries = [...(view?.events.values() ?? [])];
    const [e1, e2, e3] = entries;

    index.compacted(
      [e1],
      [
        { entry: e2, bytes: 300 },
        { entry: e3, bytes: 200 },
      ],
    );

    expect(ids(index.events(A))).toEqual([`${A}/2`, `${A}/3`]);
    expect(index.lastSeq(A)).toBe(3);
    expect(index.missing(A, 0)).toEqual([1]);
    expect(view?.bytes).toBe(500);
    expect(view?.pendingBytes).toBe(200);
    // Not in the kept list: nothing of B is on disk any more as far as sizes go.
    expect(index.rolloutViews().get(B)?.bytes).toBe(0);
    expect(index.lastDeliveredSeq(A)).toBe(2);
  });
});
