import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentEventKind } from '../protocol/events.wire';
import { encodeLine, eventRecord, markRecord, scanLog } from './event-log.codec';
import { autoCompactDue, liveBytes, planCompaction, rangesOf, tmpPathOf, writeCompacted } from './event-log.compaction';
import { EventLogWriteError } from './event-log.errors';
import { EventLogIndex } from './event-log.index';
import { nodeLogFs } from './log-fs';
import { FaultyFs } from '../../test/support/faulty-log-fs';

const A = 'stable@a1b2c3d4';
const B = 'canary@e5f6a7b8';
const T0 = Date.parse('2026-05-01T12:00:00.000Z');
const HOUR = 3600_000;
const at = (ms: number): string => new Date(T0 + ms).toISOString();

function append(index: EventLogIndex, rolloutId: string, seq: number, kind: AgentEventKind = 'ProbeResult', atMs = seq * 1000): void {
  const it = { rolloutId, seq, kind, envelope: JSON.stringify({ rolloutId, event: { kind, seq } }), meta: {} };
  index.appended({ ...it, appendedAt: at(atMs) }, encodeLine(eventRecord(it, at(atMs))).length);
}

function deliver(index: EventLogIndex, rolloutId: string, seq: number): void {
  const d = { state: 'delivered', status: 204, at: at(seq * 1000 + 500) } as const;
  index.marked(rolloutId, seq, d, encodeLine(markRecord(rolloutId, seq, d)).length);
}

/** A converged rollout A (seqs 1–3, 2 delivered) and a running B (1–2, 1 delivered). */
function twoRollouts(): EventLogIndex {
  const index = new EventLogIndex();
  append(index, A, 1);
  append(index, B, 1);
  append(index, A, 2);
  append(index, B, 2);
  append(index, A, 3, 'Converged');
  deliver(index, A, 1);
  deliver(index, A, 2);
  deliver(index, B, 1);
  return index;
}

describe('event log compaction', () => {
  const policy = { retentionMs: HOUR, maxBytes: 1 << 20 };

  describe('the plan', () => {
    it("keeps everything within retention, each rollout's hwm right after its newest event", () => {
      const plan = planCompaction(twoRollouts().rolloutViews(), T0 + 10_000, policy);
      expect(plan.dropped).toEqual([]);
      const kinds = plan.kept.map((it) => (it.entry === null ? 'hwm' : `${it.entry.ev.rolloutId}/${it.entry.ev.seq}`));
      expect(kinds).toEqual([`${A}/1`, `${B}/1`, `${A}/2`, `${B}/2`, 'hwm', `${A}/3`, 'hwm']);
      expect(plan.bytes).toBe(plan.kept.reduce((n, it) => n + it.line.length, 0));
      // The marks are folded into the events: the plan's file reads back delivered.
      const scan = scanLog(Buffer.concat(plan.kept.map((it) => it.line)));
      expect(scan.lines.filter((l) => l.record.t === 'event' && l.record.delivery?.state === 'delivered')).toHaveLength(3);
    });

    it('drops the delivered events of a rollout terminal past retention, never its pending one', () => {
      const plan = planCompaction(twoRollouts().rolloutViews(), T0 + 3000 + HOUR, policy);
      expect(rangesOf(plan.dropped)).toEqual([{ rolloutId: A, from: 1, to: 2 }]);
      expect(plan.kept.some((it) => it.entry?.ev.rolloutId === A && it.entry.ev.seq === 3)).toBe(true);
    });

    it('above the size cap drops the oldest delivered events first, and only as many as it takes', () => {
      const index = twoRollouts();
      const all = planCompaction(index.rolloutViews(), T0, policy).bytes;
      const firstEventLine = planCompaction(index.rolloutViews(), T0, policy).kept[0].line.length;
      const plan = planCompaction(index.rolloutViews(), T0, { ...policy, maxBytes: all - 1 });
      expect(rangesOf(plan.dropped)).toEqual([{ rolloutId: A, from: 1, to: 1 }]);
      expect(plan.bytes).toBe(all - firstEventLine);
      const tiny = planCompaction(index.rolloutViews(), T0, { ...policy, maxBytes: 1 });
      expect(rangesOf(tiny.dropped)).toEqual([
        { rolloutId: B, from: 1, to: 1 },
        { rolloutId: A, from: 1, to: 2 },
      ]);
      expect(tiny.kept.filter((it) => it.entry !== null).map((it) => it.entry?.ev.delivery.state)).toEqual(['pending', 'pending']);
    });

    it('counts in the live size what retention keeps as it sits on disk now, marks included, plus an hwm line per rollout', () => {
      const index = twoRollouts();
      const views = index.rolloutViews();
      const a = views.get(A);
      const b = views.get(B);
      if (a === undefined || b === undefined) throw new Error('rollouts missing');
      const within = liveBytes(views, T0, HOUR);
      const past = liveBytes(views, T0 + 3000 + HOUR, HOUR);
      expect(within - past).toBe(a.bytes - a.pendingBytes);
      // Folding the marks into their events makes the real compacted file a little smaller.
      expect(planCompaction(views, T0, policy).bytes).toBeLessThan(within);
      expect(within).toBeGreaterThan(a.bytes + b.bytes);
    });
  });

  describe('when to compact by itself', () => {
    const never = (): number => {
      throw new Error('the live size was not needed');
    };

    it('waits for growth since the last compaction, then goes past the cap without asking the live size', () => {
      expect(autoCompactDue(99, 0, 800, never)).toBe(false);
      expect(autoCompactDue(900, 0, 800, never)).toBe(true);
      expect(autoCompactDue(1_100_000, 1_000_000, 1_000_000, never)).toBe(false);
      expect(autoCompactDue(1_300_000, 1_000_000, 1_000_000, never)).toBe(true);
    });

    it('below the cap, compacts once the file is more than twice its live size', () => {
      expect(autoCompactDue(200_000, 0, 1 << 20, () => 100_000)).toBe(false);
      expect(autoCompactDue(200_001, 0, 1 << 20, () => 100_000)).toBe(true);
    });
  });

  describe('writing the new file', () => {
    let dir: string;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'nfa-compaction-'));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it('replaces the log with the lines, through a tmp file that does not stay, and returns the new file for appends', async () => {
      const path = join(dir, 'events.log');
      writeFileSync(path, 'old contents\n');
      const lines = [Buffer.from('a\n'), Buffer.alloc(3 << 20, 0x62), Buffer.from('\nc\n')];
      const file = await writeCompacted(nodeLogFs, path, lines);
      await file.append(Buffer.from('d\n'));
      await file.close();
      expect(readFileSync(path).equals(Buffer.concat([...lines, Buffer.from('d\n')]))).toBe(true);
      expect(readdirSync(dir)).toEqual(['events.log']);
    });

    it('leaves the log as it was and removes the tmp file when the rename fails', async () => {
      const path = join(dir, 'events.log');
      writeFileSync(path, 'old contents\n');
      const fs = new FaultyFs();
      fs.renameError = 'EXDEV';
      const err = await writeCompacted(fs, path, [Buffer.from('new\n')]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EventLogWriteError);
      expect((err as EventLogWriteError).code).toBe('EXDEV');
      expect((err as Error).message).toBe(`event log ${path}: compaction failed (EXDEV: injected failure, rename); the log is unchanged`);
      expect(readFileSync(path, 'utf8')).toBe('old contents\n');
      expect(existsSync(tmpPathOf(path))).toBe(false);
    });
  });
});
