// Throughput of the durable event log on this machine's disk; figures only, no assertions.
// Build and run: npx tsc -p bench/tsconfig.json && node dist-bench/bench/event-log.bench.js [dir]
import { mkdtempSync, rmSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { type AppendItem, EventLog } from '../src/outbound/event-log';
import type { EventEnvelope } from '../src/protocol/events.wire';
import { rebuildFromLog } from '../src/reducer/rebuild';

const EVENTS = 10_000;
const ROLLOUTS = 10;
const DAY_MS = 24 * 3600_000;
const T0 = Date.parse('2026-05-01T12:00:00.000Z');

/** ~300 bytes of envelope, like a ProbeResult with a failure reason. */
function item(r: number, seq: number): AppendItem {
  const rolloutId = `stable@bench${String(r).padStart(4, '0')}`;
  const envelope: EventEnvelope = {
    hostname: 'web-01.example.org',
    rolloutId,
    event: {
      kind: 'ProbeResult',
      seq,
      probeName: `http-${seq % 5}`,
      mode: 'enforce',
      status: seq % 3 === 0 ? 'fail' : 'pass',
      observedAt: new Date(T0 + seq * 1000).toISOString(),
      failureReason: seq % 3 === 0 ? 'GET https://127.0.0.1:8443/healthz answered 503 Service Unavailable after 212 ms' : undefined,
    },
  };
  return {
    rolloutId,
    seq,
    kind: 'ProbeResult',
    envelope: JSON.stringify(envelope),
    meta: { channel: 'stable', targetClosure: `${'a'.repeat(32)}-nixos-system-web-01-26.05` },
  };
}

/** EVENTS items spread over ROLLOUTS rollouts, each in seq order. */
function items(): AppendItem[] {
  const out: AppendItem[] = [];
  for (let i = 0; i < EVENTS; i++) out.push(item(i % ROLLOUTS, Math.floor(i / ROLLOUTS) + 1));
  return out;
}

async function timed<T>(fn: () => T | Promise<T>): Promise<{ ms: number; value: T }> {
  const t = performance.now();
  const value = await fn();
  return { ms: performance.now() - t, value };
}

const perSec = (n: number, ms: number): string => Math.round((n / ms) * 1000).toLocaleString('en-US');
const fixed = (ms: number): string => `${ms.toFixed(1)} ms`;

async function appendRun(dir: string, batchSize: number): Promise<{ ms: number; bytes: number }> {
  const log = await EventLog.open({ dir, maxBytes: 1 << 30, retentionMs: DAY_MS, now: () => new Date(T0), autoCompact: false });
  const all = items();
  const { ms } = await timed(async () => {
    for (let i = 0; i < all.length; i += batchSize) await log.append(all.slice(i, i + batchSize));
  });
  const bytes = log.stats().bytes;
  await log.close();
  return { ms, bytes };
}

/** The floor: the same bytes, one FileHandle write + fdatasync each, no framing, no index. */
async function rawRun(path: string, recordBytes: number): Promise<number> {
  const fh = await openFile(path, 'w');
  const buf = Buffer.alloc(recordBytes, 0x61);
  const { ms } = await timed(async () => {
    for (let i = 0; i < EVENTS; i++) {
      await fh.write(buf, 0, buf.length, i * buf.length);
      await fh.datasync();
    }
  });
  await fh.close();
  return ms;
}

async function main(): Promise<void> {
  const root = mkdtempSync(join(process.argv[2] ?? tmpdir(), 'nfa-event-log-bench-'));
  try {
    console.log(`event log bench: ${EVENTS.toLocaleString('en-US')} events (~300 B envelopes) over ${ROLLOUTS} rollouts, in ${root}`);
    const runs: { label: string; batch: number; ms: number; bytes: number }[] = [];
    for (const batch of [1, 10, 100]) {
      const r = await appendRun(join(root, `append-${batch}`), batch);
      runs.push({ label: `durable appends, ${batch} event(s) per append`, batch, ...r });
    }
    const single = runs[0].ms;
    const raw = await rawRun(join(root, 'raw.log'), Math.round(runs[0].bytes / EVENTS));
    console.log(
      `${'raw write + fdatasync, same bytes'.padEnd(40)} ${perSec(EVENTS, raw).padStart(9)} writes/s  ${fixed(raw).padStart(10)}  ` +
        `(the log one-per-append reaches ${((raw / single) * 100).toFixed(0)} % of it)`,
    );
    for (const r of runs) {
      console.log(
        `${r.label.padEnd(40)} ${perSec(EVENTS, r.ms).padStart(9)} events/s  ${fixed(r.ms).padStart(10)}  ` +
          `${(single / r.ms).toFixed(1)}× one-per-append`,
      );
    }
    console.log(
      `file size after ${EVENTS} events: ${runs[0].bytes.toLocaleString('en-US')} B (${Math.round(runs[0].bytes / EVENTS)} B a record)`,
    );

    // Marks, open, rebuild and compaction on the one-per-append log.
    const dir = join(root, 'append-1');
    const open = (nowMs: number): Promise<EventLog> =>
      EventLog.open({ dir, maxBytes: 1 << 30, retentionMs: DAY_MS, now: () => new Date(nowMs), autoCompact: false, markSyncMs: 200 });

    const reopened = await timed(() => open(T0));
    const log = reopened.value;
    const rec = await timed(() => log.records());
    const rebuilt = await timed(() => rebuildFromLog(rec.value));
    console.log(
      `open (read, check ${log.openReport.records.toLocaleString('en-US')} records): ${fixed(reopened.ms)}; records(): ${fixed(rec.ms)}; ` +
        `rebuildFromLog: ${fixed(rebuilt.ms)} (${Object.keys(rebuilt.value.rollouts).length} rollouts); total ${fixed(reopened.ms + rec.ms + rebuilt.ms)}`,
    );

    const marks = await timed(async () => {
      for (let i = 0; i < EVENTS; i++) {
        const it = item(i % ROLLOUTS, Math.floor(i / ROLLOUTS) + 1);
        await log.markDelivered(it.rolloutId, it.seq, 204);
      }
      await log.flush();
    });
    console.log(
      `delivery marks (grouped fdatasync):       ${perSec(EVENTS, marks.ms).padStart(9)} marks/s   ${fixed(marks.ms).padStart(10)}  ` +
        `${(single / marks.ms).toFixed(1)}× one-per-append events`,
    );
    await log.close();

    // Half the rollouts end (their last event terminal) so compaction has something to drop.
    const ending = await open(T0);
    for (let r = 0; r < ROLLOUTS / 2; r++) {
      const rolloutId = `stable@bench${String(r).padStart(4, '0')}`;
      const seq = ending.lastSeq(rolloutId) + 1;
      const envelope: EventEnvelope = {
        hostname: 'web-01.example.org',
        rolloutId,
        event: {
          kind: 'Converged',
          seq,
          convergedAt: new Date(T0).toISOString(),
          currentClosure: `${'a'.repeat(32)}-nixos-system-web-01-26.05`,
        },
      };
      await ending.append([{ rolloutId, seq, kind: 'Converged', envelope: JSON.stringify(envelope), meta: {} }]);
      await ending.markDelivered(rolloutId, seq, 204);
    }
    await ending.close();

    const keepAll = await open(T0);
    const c1 = await timed(() => keepAll.compact());
    console.log(
      `compaction keeping all ${keepAll.stats().delivered.toLocaleString('en-US')} events (marks folded in): ${fixed(c1.ms)}, ` +
        `${c1.value.bytesBefore.toLocaleString('en-US')} → ${c1.value.bytesAfter.toLocaleString('en-US')} B`,
    );
    await keepAll.close();
    const expire = await open(T0 + 2 * DAY_MS);
    const c2 = await timed(() => expire.compact());
    console.log(
      `compaction dropping ${c2.value.dropped.toLocaleString('en-US')} events past retention: ${fixed(c2.ms)}, ` +
        `${c2.value.bytesBefore.toLocaleString('en-US')} → ${c2.value.bytesAfter.toLocaleString('en-US')} B`,
    );
    await expire.close();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
