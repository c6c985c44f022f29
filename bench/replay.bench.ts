// Replay of 10,000 logged events to the dev control plane by the built agent; figures only.
// Build and run: npm run bench   (or: npm run build && npx tsc -p bench/tsconfig.json && node dist-bench/bench/replay.bench.js)
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { devAgentArgs } from '../dev/agent-args';
import { ManifestSigner } from '../dev/manifest-signer';
import { DevControlPlane } from '../dev/control-plane';
import { makePki } from '../dev/pki';
import { type AppendItem, EventLog } from '../src/outbound/event-log';
import type { AgentEvent, EventEnvelope } from '../src/protocol/events.wire';
import { freePort } from '../dev/free-port';

const EVENTS = 10_000;
const MACHINE_ID = 'web-01';
const ROLLOUT = 'stable@bench0001';
const CLOSURE = `${'b'.repeat(32)}-nixos-system-web-01-26.11`;
const T0 = Date.parse('2026-11-01T12:00:00.000Z');

function eventFor(seq: number): AgentEvent {
  const at = new Date(T0 + seq * 1000).toISOString();
  switch (seq) {
    case 1:
      return { kind: 'DispatchAck', seq, currentClosureAtDispatch: null, receivedAt: at };
    case 2:
      return { kind: 'ActivationStarted', seq, startedAt: at, switchMethod: 'symlink' };
    case 3:
      return { kind: 'ActivationCompleted', seq, observedCurrentClosure: CLOSURE, exitCode: 0, completedAt: at };
    default:
      return { kind: 'ProbeResult', seq, probeName: `http-${seq % 5}`, mode: 'enforce', status: seq % 2 ? 'pass' : 'fail', observedAt: at };
  }
}

async function prepareLog(stateDir: string): Promise<void> {
  const log = await EventLog.open({
    dir: stateDir,
    maxBytes: 1 << 30,
    retentionMs: 7 * 86_400_000,
    now: () => new Date(),
    autoCompact: false,
  });
  const batch: AppendItem[] = [];
  for (let seq = 1; seq <= EVENTS; seq++) {
    const event = eventFor(seq);
    const envelope: EventEnvelope = { hostname: MACHINE_ID, rolloutId: ROLLOUT, event };
    batch.push({
      rolloutId: ROLLOUT,
      seq,
      kind: event.kind,
      envelope: JSON.stringify(envelope),
      meta: { channel: 'stable', targetClosure: CLOSURE },
    });
    if (batch.length === 500) await log.append(batch.splice(0));
  }
  for (let seq = 1; seq <= EVENTS; seq++) await log.markDelivered(ROLLOUT, seq, 204);
  await log.flush();
  await log.close();
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'nfa-bench-replay-'));
  try {
    const pki = await makePki(join(dir, 'pki'), { machineId: MACHINE_ID });
    const stateDir = join(dir, 'state');
    mkdirSync(stateDir, { mode: 0o700 });
    symlinkSync(`/nix/store/${CLOSURE}`, join(dir, 'current-system'));
    const prep = performance.now();
    await prepareLog(stateDir);
    process.stdout.write(
      `prepared ${EVENTS.toLocaleString('en-US')} delivered events in ${((performance.now() - prep) / 1000).toFixed(1)} s\n`,
    );

    // A CP that lost its database: it holds nothing and asks the agent to replay from 0.
    // The agent verifies each dispatch (PROTOCOL §12): trust.json beside the state dir names the signer's keys.
    const signer = new ManifestSigner();
    await signer.writeTrustFile(join(dir, 'trust.json'));
    const cp = await DevControlPlane.start({ pki, signer, autoReplayFrom: 'always' });
    const agentMain = join(__dirname, '..', '..', 'dist', 'main.js');
    const started = performance.now();
    const agent = spawn(
      process.execPath,
      [
        agentMain,
        ...devAgentArgs({
          controlPlaneUrl: cp.url,
          machineId: MACHINE_ID,
          pki,
          stateDir,
          currentSystemPath: join(dir, 'current-system'),
          heartbeatIntervalSecs: 1,
          adminPort: await freePort(),
        }),
        '--log-level',
        'warn',
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    await cp.waitFor(() => cp.events(MACHINE_ID, ROLLOUT).length >= 1 || undefined, 60_000, 'the first replayed event');
    const firstAt = performance.now();
    const heartbeatsBefore = cp.heartbeats.length;
    await cp.waitFor(() => cp.events(MACHINE_ID, ROLLOUT).length >= EVENTS || undefined, 300_000, 'all events replayed');
    const doneAt = performance.now();
    const during = cp.heartbeats.slice(heartbeatsBefore).map((h) => h.receivedAt.getTime());
    const gaps = during.slice(1).map((t, i) => t - during[i]);
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
    await cp.close();

    const secs = (doneAt - firstAt) / 1000;
    process.stdout.write(
      [
        `agent start to first replayed event      ${((firstAt - started) / 1000).toFixed(2)} s`,
        `replay of ${EVENTS.toLocaleString('en-US')} events                 ${secs.toFixed(2)} s  (${Math.round(EVENTS / secs).toLocaleString('en-US')} events/s; the pacing cap is 500/s)`,
        `heartbeats during the replay (1 s cadence) ${during.length}, largest gap ${gaps.length ? (Math.max(...gaps) / 1000).toFixed(2) : '-'} s, mean ${gaps.length ? (gaps.reduce((a, b) => a + b, 0) / gaps.length / 1000).toFixed(2) : '-'} s`,
        `POSTs the CP received                    ${cp.eventPosts.length.toLocaleString('en-US')} (${(cp.eventPosts.length / EVENTS).toFixed(2)} per event)`,
      ].join('\n') + '\n',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
