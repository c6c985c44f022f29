'use strict';
// Child of test/event-log-crash.e2e-spec.ts: appends to the built event log in
// a loop until it is killed. It prints `ack <rollout> <seq>` only after the
// append of that event resolved, and `marked <rollout> <seq>` after a delivery
// mark resolved, so the parent knows what must survive the kill. stdout to a
// pipe is synchronous on Linux: a printed line is in the pipe before the next step.
//
// usage: node append-child.js <dir> <plain|split>
// `split` writes every buffer in two halves with a pause between, so a kill
// often lands inside a record: the torn-tail repair is exercised for real.

const ROLLOUTS = ['stable@r1', 'canary@r2'];

/** The envelope of (rollout, seq), byte for byte; the parent rebuilds it to compare. */
function envelopeOf(rolloutId, seq) {
  return JSON.stringify({
    hostname: 'crash-test-host',
    rolloutId,
    event: {
      kind: 'ProbeResult',
      seq,
      probeName: `probe-${seq % 7}`,
      mode: 'enforce',
      status: seq % 5 === 0 ? 'fail' : 'pass',
      observedAt: new Date(Date.UTC(2026, 4, 1, 12, 0, seq % 60)).toISOString(),
      failureReason: seq % 5 === 0 ? `HTTP 503 on attempt ${seq}, "quoted" ✓` : undefined,
    },
  });
}

function splitFs(real) {
  const wrap = (f) => ({
    append: async (data) => {
      if (data.length < 2) return f.append(data);
      const n = await f.append(data.subarray(0, Math.ceil(data.length / 2)));
      await new Promise((r) => setTimeout(r, 1));
      return n;
    },
    datasync: () => f.datasync(),
    sync: () => f.sync(),
    truncate: (len) => f.truncate(len),
    readAll: () => f.readAll(),
    close: () => f.close(),
  });
  return {
    ...real,
    open: async (path) => wrap(await real.open(path)),
    create: async (path) => wrap(await real.create(path)),
  };
}

async function main(dir, mode) {
  const { EventLog } = require('../../dist/outbound/event-log.js');
  const { nodeLogFs } = require('../../dist/outbound/log-fs.js');
  const log = await EventLog.open({
    dir,
    // Large enough that the cap never drops a delivered event the parent checks for.
    maxBytes: 64 * 1024 * 1024,
    retentionMs: 24 * 3600 * 1000,
    now: () => new Date(),
    fs: mode === 'split' ? splitFs(nodeLogFs) : nodeLogFs,
    markSyncMs: 5,
  });
  process.stdout.write(`ready\n`);
  const next = new Map(ROLLOUTS.map((r) => [r, log.lastSeq(r) + 1]));
  const acked = [];
  for (let i = 0; ; i++) {
    const batch = [];
    const n = 1 + Math.floor(Math.random() * 3);
    for (let k = 0; k < n; k++) {
      const rolloutId = ROLLOUTS[Math.floor(Math.random() * ROLLOUTS.length)];
      const seq = next.get(rolloutId);
      next.set(rolloutId, seq + 1);
      batch.push({ rolloutId, seq, kind: 'ProbeResult', envelope: envelopeOf(rolloutId, seq), meta: { channel: rolloutId.split('@')[0] } });
    }
    await log.append(batch);
    process.stdout.write(batch.map((b) => `ack ${b.rolloutId} ${b.seq}\n`).join(''));
    acked.push(...batch);
    if (i % 3 === 2) {
      const b = acked[Math.floor(Math.random() * acked.length)];
      await log.markDelivered(b.rolloutId, b.seq, 204);
      process.stdout.write(`marked ${b.rolloutId} ${b.seq}\n`);
    }
    if (i % 40 === 39) {
      await log.compact();
      process.stdout.write('compacted\n');
    }
  }
}

if (require.main === module) {
  main(process.argv[2], process.argv[3]).catch((err) => {
    process.stderr.write(`append-child: ${err.stack}\n`);
    process.exit(1);
  });
}

module.exports = { envelopeOf, ROLLOUTS };
