// Replay of 10,000 logged events to the dev control plane by the built agent; figures only.
// Build and run: npm run bench   (or: npm run build && npx tsc -p bench/tsconfig.json && node dist-bench/bench/replay.bench.js [path/to/main.js])
//
// Four runs, each a fresh agent and a CP that lost its database (it holds nothing and asks for a replay from 0):
//   1. 10,000 events of one rollout: bound by one request's round trip (seq n+1 waits for n's answer);
//   2. 10,000 events over 10 rollouts: several rollouts go at once;
//   3. 10 × 1,000 events while the CP answers 503 to every second event POST for SHED_SECS, then recovers;
//   4. the same with `Retry-After: 2` on each 503.
// Each run prints its time and rate, the heartbeats' largest gap while it ran (the cadence is 1 s ± 10 %),
// the agent's CPU per event, and whether the CP got every seq, each rollout's in order.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { devAgentArgs } from '../dev/agent-args';
import { DevControlPlane, type ReceivedRequest } from '../dev/control-plane';
import { freePort } from '../dev/free-port';
import { ManifestSigner } from '../dev/manifest-signer';
import { makePki, type Pki } from '../dev/pki';
import { type AppendItem, EventLog } from '../src/outbound/event-log';
import type { AgentEvent, EventEnvelope } from '../src/protocol/events.wire';
import { readFileSync } from 'node:fs';
import { CLOCK_TICKS_PER_SEC } from './proc-stats';

const EVENTS = 10_000;
const MACHINE_ID = 'web-01';
const CLOSURE = `${'b'.repeat(32)}-nixos-system-web-01-26.11`;
const T0 = Date.parse('2026-11-01T12:00:00.000Z');
/** How long the shedding CP answers 503 to every second event POST before it recovers. */
const SHED_SECS = Number(process.env.REPLAY_SHED_SECS ?? 10);

interface Scenario {
  title: string;
  rollouts: number;
  /** The CP sheds load at first: 503 to this share of event POSTs, with this Retry-After (none when null). */
  shed: { share: number; retryAfterSecs: number | null } | null;
}

const SCENARIOS: Scenario[] = [
  { title: '1 rollout × 10,000 events', rollouts: 1, shed: null },
  { title: '10 rollouts × 1,000 events', rollouts: 10, shed: null },
  {
    title: `10 × 1,000, CP answers 503 to half the event POSTs for ${SHED_SECS} s, no Retry-After`,
    rollouts: 10,
    shed: { share: 0.5, retryAfterSecs: null },
  },
  {
    title: `10 × 1,000, CP answers 503 + Retry-After: 2 to half the event POSTs for ${SHED_SECS} s`,
    rollouts: 10,
    shed: { share: 0.5, retryAfterSecs: 2 },
  },
];

const rolloutIds = (n: number): string[] => Array.from({ length: n }, (_, i) => `stable@bench${String(i + 1).padStart(4, '0')}`);

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

/** A state dir whose log holds `perRollout` delivered events of each rollout. */
async function prepareLog(stateDir: string, rollouts: string[], perRollout: number): Promise<void> {
  const log = await EventLog.open({
    dir: stateDir,
    maxBytes: 1 << 30,
    retentionMs: 7 * 86_400_000,
    now: () => new Date(),
    autoCompact: false,
  });
  for (const rolloutId of rollouts) {
    const batch: AppendItem[] = [];
    for (let seq = 1; seq <= perRollout; seq++) {
      const event = eventFor(seq);
      const envelope: EventEnvelope = { hostname: MACHINE_ID, rolloutId, event };
      batch.push({
        rolloutId,
        seq,
        kind: event.kind,
        envelope: JSON.stringify(envelope),
        meta: { channel: 'stable', targetClosure: CLOSURE },
      });
      if (batch.length === 500) await log.append(batch.splice(0));
    }
    if (batch.length > 0) await log.append(batch);
    for (let seq = 1; seq <= perRollout; seq++) await log.markDelivered(rolloutId, seq, 204);
  }
  await log.flush();
  await log.close();
}

/**
 * Follows the CP's event POSTs as they come, cheaply (the probe runs every 10 ms): what is stored per
 * rollout, and any POST that came ahead of its rollout's order (a seq above the next one the CP needs).
 */
class Progress {
  private seen = 0;
  stored = 0;
  readonly held = new Map<string, number>();
  outOfOrder = 0;
  duplicates = 0;

  constructor(private readonly cp: DevControlPlane) {}

  update(): number {
    const posts = this.cp.eventPosts;
    for (; this.seen < posts.length; this.seen++) {
      const p = posts[this.seen];
      if (p.status === null) break; // not answered yet: look again next time
      const { rolloutId, event } = p.body as { rolloutId: string; event: { seq: number } };
      const held = this.held.get(rolloutId) ?? 0;
      if (event.seq > held + 1) this.outOfOrder += 1;
      if (p.outcome === 'duplicate') this.duplicates += 1;
      if (p.outcome === 'stored') {
        this.held.set(rolloutId, Math.max(held, event.seq));
        this.stored += 1;
      }
    }
    return this.stored;
  }
}

/** User and system CPU ticks of a process (/proc/<pid>/stat utime, stime): system time is the kernel's share, TCP and syscalls. */
function userSystemTicks(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(rest[11]), system: Number(rest[12]) };
}

interface Result {
  secs: number;
  startToFirstSecs: number;
  heartbeatGaps: number[];
  posts: number;
  status503: number;
  /** The agent's CPU per event from its first replayed POST to the last: user, system. */
  agentCpuMsPerEvent: { user: number; system: number };
  progress: Progress;
  missing: number;
  shedPhase: { secs: number; posts: number; accepted: number } | null;
}

async function runScenario(agentMain: string, pki: Pki, dir: string, scenario: Scenario): Promise<Result> {
  const runDir = mkdtempSync(join(dir, 'run-'));
  const stateDir = join(runDir, 'state');
  mkdirSync(stateDir, { mode: 0o700 });
  symlinkSync(`/nix/store/${CLOSURE}`, join(runDir, 'current-system'));
  const rollouts = rolloutIds(scenario.rollouts);
  const perRollout = EVENTS / scenario.rollouts;
  await prepareLog(stateDir, rollouts, perRollout);

  // The agent verifies each dispatch (PROTOCOL §12): trust.json beside the state dir names the signer's keys.
  const signer = new ManifestSigner();
  await signer.writeTrustFile(join(runDir, 'trust.json'));
  // per-rollout: a CP that lost its database names every rollout it lacks, each from 0.
  const cp = await DevControlPlane.start({ pki, signer, autoReplayFrom: 'always', replayForm: 'per-rollout' });
  if (scenario.shed) {
    const { share, retryAfterSecs } = scenario.shed;
    cp.setDefault('events', { status: 503, ...(retryAfterSecs === null ? {} : { retryAfterSecs }) }, { share });
  }
  const progress = new Progress(cp);
  let agent: ChildProcess | null = null;
  try {
    const started = performance.now();
    agent = spawn(
      process.execPath,
      [
        agentMain,
        ...devAgentArgs({
          controlPlaneUrl: cp.url,
          machineId: MACHINE_ID,
          pki,
          stateDir,
          currentSystemPath: join(runDir, 'current-system'),
          heartbeatIntervalSecs: 1,
          adminPort: await freePort(),
        }),
        '--log-level',
        'error',
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    const pid = agent.pid ?? 0;
    await cp.waitFor(() => cp.eventPosts.length > 0 || undefined, 60_000, 'the first replayed event POST');
    const firstAt = performance.now();
    const cpu0 = userSystemTicks(pid);

    let shedPhase: Result['shedPhase'] = null;
    if (scenario.shed) {
      await cp.waitFor(() => performance.now() - firstAt >= SHED_SECS * 1000 || undefined, SHED_SECS * 1000 + 5_000, 'the shedding phase');
      cp.setDefault('events', null);
      const posts = cp.eventPosts.length;
      shedPhase = { secs: (performance.now() - firstAt) / 1000, posts, accepted: progress.update() };
    }
    const allHeld = (): boolean => {
      progress.update();
      return rollouts.every((r) => (progress.held.get(r) ?? 0) >= perRollout);
    };
    await cp.waitFor(() => allHeld() || undefined, 600_000, 'all events stored');
    const doneAt = performance.now();
    const cpu1 = userSystemTicks(pid);

    // The heartbeats around the replay: from the last one before its first POST to the first one after its end.
    const beats = cp.heartbeats.map((h) => h.receivedAt.getTime() - Date.now() + performance.now());
    await cp.waitFor(() => cp.heartbeats.length > beats.length || undefined, 5_000, 'a heartbeat after the replay');
    beats.push(cp.heartbeats[beats.length].receivedAt.getTime() - Date.now() + performance.now());
    const from = Math.max(0, beats.findIndex((t) => t >= firstAt) - 1);
    const to = beats.findIndex((t) => t >= doneAt);
    const around = beats.slice(from, to + 1);
    const heartbeatGaps = around.slice(1).map((t, i) => (t - around[i]) / 1000);

    // The agent may log an event of its own meanwhile (a rollout's next seq): the CP gets it too, not counted here.
    const missing = rollouts.reduce((n, r) => n + Math.max(0, perRollout - cp.heldSeq(MACHINE_ID, r)), 0);
    return {
      secs: (doneAt - firstAt) / 1000,
      startToFirstSecs: (firstAt - started) / 1000,
      heartbeatGaps,
      posts: cp.eventPosts.length,
      status503: cp.eventPosts.filter((p: ReceivedRequest) => p.status === 503).length,
      agentCpuMsPerEvent: {
        user: (((cpu1.user - cpu0.user) / CLOCK_TICKS_PER_SEC) * 1000) / EVENTS,
        system: (((cpu1.system - cpu0.system) / CLOCK_TICKS_PER_SEC) * 1000) / EVENTS,
      },
      progress,
      missing,
      shedPhase,
    };
  } finally {
    if (agent && agent.exitCode === null) {
      const exited = new Promise((resolve) => agent?.once('exit', resolve));
      agent.kill('SIGTERM');
      await exited;
    }
    await cp.close();
  }
}

function report(scenario: Scenario, r: Result): string {
  const n = (v: number): string => Math.round(v).toLocaleString('en-US');
  const gaps = r.heartbeatGaps;
  const lines = [
    `${scenario.title}`,
    `  replay                 ${r.secs.toFixed(2)} s  (${n(EVENTS / r.secs)} events/s; agent start to first POST ${r.startToFirstSecs.toFixed(2)} s)`,
    `  heartbeats             ${gaps.length} gap(s) around the replay, largest ${gaps.length ? Math.max(...gaps).toFixed(2) : '-'} s, mean ${gaps.length ? (gaps.reduce((a, b) => a + b, 0) / gaps.length).toFixed(2) : '-'} s (cadence 1 s ± 10 %)`,
    `  agent CPU              ${(r.agentCpuMsPerEvent.user + r.agentCpuMsPerEvent.system).toFixed(3)} ms per event (user ${r.agentCpuMsPerEvent.user.toFixed(3)}, system ${r.agentCpuMsPerEvent.system.toFixed(3)})`,
    `  POSTs                  ${n(r.posts)} (${(r.posts / EVENTS).toFixed(2)} per event; ${n(r.status503)} answered 503)`,
  ];
  if (r.shedPhase) {
    const s = r.shedPhase;
    lines.push(
      `  while shedding         ${n(s.posts)} POSTs and ${n(s.accepted)} events accepted in ${s.secs.toFixed(1)} s (${(s.accepted / s.secs).toFixed(1)} events/s); the rest after it recovered`,
    );
  }
  const p = r.progress;
  lines.push(
    `  every seq arrived      ${r.missing === 0 ? 'yes' : `NO: ${r.missing} missing`}; each rollout in seq order: ${p.outOfOrder === 0 ? 'yes' : `NO: ${p.outOfOrder} POST(s) ahead of order`}; duplicates ${p.duplicates}`,
  );
  return lines.join('\n');
}

async function main(): Promise<void> {
  const agentMain = process.argv[2] ?? join(__dirname, '..', '..', 'dist', 'main.js');
  const dir = mkdtempSync(join(tmpdir(), 'nfa-bench-replay-'));
  try {
    const pki = await makePki(join(dir, 'pki'), { machineId: MACHINE_ID });
    process.stdout.write(`replay of ${EVENTS.toLocaleString('en-US')} logged events by ${agentMain}\n`);
    for (const scenario of SCENARIOS) {
      const result = await runScenario(agentMain, pki, dir, scenario);
      process.stdout.write(`${report(scenario, result)}\n`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
