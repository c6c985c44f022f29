// Issue 13's comparison: the built agent against a bare Node mTLS heartbeat loop (bare-heartbeat.ts) that this
// benchmark starts itself, on the same PKI, the same dev control plane, at the same cadence. Figures only.
// Build and run: npm run bench   (or: npm run bench -- compare; or, once built: node dist-bench/bench/compare.bench.js [agent main.js])
// COMPARE_ROUNDS (default 3) rounds, agent and bare interleaved, each a fresh process with a fresh state dir;
// COMPARE_BEATS (default 45) heartbeats per 1 s run, the CPU window running from beat COMPARE_FROM_BEAT (default 10);
// COMPARE_IDLE_WINDOW_SECS (default 60) the idle window at the 60 s cadence (at least: see idleRun; below 60 it holds
// no heartbeat), opening COMPARE_IDLE_FROM_SECS (default 45) after exec. A quick look (~3 min): COMPARE_ROUNDS=1
// COMPARE_BEATS=20 COMPARE_IDLE_FROM_SECS=15 COMPARE_IDLE_WINDOW_SECS=20. Both subjects run with the Node.js flags of
// the systemd unit's ExecStart= (as a host runs the agent); COMPARE_NODE_FLAGS replaces them (e.g. "--cpu-prof").
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { devAgentArgs } from '../dev/agent-args';
import { DevControlPlane } from '../dev/control-plane';
import { freePort } from '../dev/free-port';
import { ManifestSigner } from '../dev/manifest-signer';
import { makePki, type Pki } from '../dev/pki';
import { HEADER_PROTOCOL, PATH_DISPATCH, PATH_HEARTBEAT, PROTOCOL_MAJOR } from '../src/protocol/protocol.constants';
import type { BareConfig } from './bare-heartbeat';
import { unitNodeFlags } from './unit-flags';
import { CLOCK_TICKS_PER_SEC, contextSwitches, cpuTicks, memoryKb, onCpuNs } from './proc-stats';

const MACHINE_ID = 'web-01';
const CLOSURE = `${'b'.repeat(32)}-nixos-system-web-01-26.11`;
/** The agent's default cadence (PROTOCOL §2) and the CP's long-poll hold the agent asks for (§8). */
const DEFAULT_CADENCE_SECS = 60;
const DISPATCH_WAIT_SECS = 60;
const REPO = join(__dirname, '..', '..');

type Subject = 'agent' | 'bare';
const SUBJECTS: readonly Subject[] = ['agent', 'bare'];

interface Settings {
  agentMain: string;
  rounds: number;
  beats: number;
  fromBeat: number;
  idleWindowSecs: number;
  idleFromSecs: number;
  /** Node.js flags both subjects run with: the systemd unit's, unless COMPARE_NODE_FLAGS says otherwise. */
  nodeFlags: string[];
}

/** A setting that cannot be used: said in one line, without a stack. */
class BadSetting extends Error {}

/** A number from the environment, or the default. */
function envNumber(name: string, fallback: number, min: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value < min) throw new BadSetting(`${name}: "${text}" is not a number ≥ ${min}`);
  return value;
}

function settingsFrom(argv: string[]): Settings {
  const rounds = Math.floor(envNumber('COMPARE_ROUNDS', 3, 1));
  const beats = Math.floor(envNumber('COMPARE_BEATS', 45, 3));
  const fromBeat = Math.floor(envNumber('COMPARE_FROM_BEAT', 10, 1));
  if (fromBeat >= beats) throw new BadSetting(`COMPARE_FROM_BEAT (${fromBeat}) must be below COMPARE_BEATS (${beats})`);
  return {
    agentMain: argv[2] ?? join(REPO, 'dist', 'main.js'),
    rounds,
    beats,
    fromBeat,
    idleWindowSecs: envNumber('COMPARE_IDLE_WINDOW_SECS', 60, 1),
    idleFromSecs: envNumber('COMPARE_IDLE_FROM_SECS', 45, 0),
    nodeFlags: process.env.COMPARE_NODE_FLAGS === undefined ? unitNodeFlags() : process.env.COMPARE_NODE_FLAGS.split(/\s+/).filter(Boolean),
  };
}

/** What one /proc read of a process gives. */
interface Snapshot {
  atMs: number;
  /** utime + stime of the whole process, in clock ticks (10 ms). */
  ticks: number;
  /** On-CPU time summed over its threads (schedstat), in ns: the same time without the 10 ms truncation. */
  cpuNs: number;
  /** Main-thread voluntary context switches: the event loop blocking in epoll and being woken. */
  wakeups: number;
  rssKb: number;
  hwmKb: number;
}

function snapshot(pid: number): Snapshot {
  const atMs = performance.now();
  const { rss, hwm } = memoryKb(pid);
  return { atMs, ticks: cpuTicks(pid).self, cpuNs: onCpuNs(pid), wakeups: contextSwitches(pid).main, rssKb: rss, hwmKb: hwm };
}

/** One CP, PKI and trust file for every run, as one host would have; each run gets its own state dir. */
interface World {
  dir: string;
  pki: Pki;
  cp: DevControlPlane;
  trustFile: string;
  agentVersion: string;
}

/** A started subject: its process, when it was exec'd (ms since the epoch, as the CP's receivedAt) and its state. */
interface Started {
  child: ChildProcess;
  pid: number;
  execAtMs: number;
  runDir: string;
}

async function start(world: World, settings: Settings, subject: Subject, cadenceSecs: number): Promise<Started> {
  const runDir = mkdtempSync(join(world.dir, `${subject}-`));
  const stateDir = join(runDir, 'state');
  mkdirSync(stateDir, { mode: 0o700 });
  const currentSystemPath = join(runDir, 'current-system');
  symlinkSync(`/nix/store/${CLOSURE}`, currentSystemPath);
  let args: string[];
  switch (subject) {
    case 'agent':
      args = [
        settings.agentMain,
        ...devAgentArgs({
          controlPlaneUrl: world.cp.url,
          machineId: MACHINE_ID,
          pki: world.pki,
          stateDir,
          currentSystemPath,
          heartbeatIntervalSecs: cadenceSecs,
          adminPort: await freePort(),
          trustFile: world.trustFile,
        }),
        '--log-level',
        'warn',
      ];
      break;
    case 'bare': {
      const config: BareConfig = {
        controlPlaneUrl: world.cp.url,
        caCertPath: world.pki.caCertPath,
        certPath: world.pki.client.certPath,
        keyPath: world.pki.client.keyPath,
        machineId: MACHINE_ID,
        currentSystemPath,
        intervalSecs: cadenceSecs,
        dispatchWaitSecs: DISPATCH_WAIT_SECS,
        protocolHeader: HEADER_PROTOCOL,
        protocolMajor: PROTOCOL_MAJOR,
        heartbeatPath: PATH_HEARTBEAT,
        dispatchPath: PATH_DISPATCH,
        agentVersion: world.agentVersion,
      };
      args = [join(__dirname, 'bare-heartbeat.js'), JSON.stringify(config)];
      break;
    }
    default: {
      const never: never = subject;
      throw new Error(`unknown subject ${String(never)}`);
    }
  }
  const execAtMs = Date.now();
  const child = spawn(process.execPath, [...settings.nodeFlags, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (child.pid === undefined) throw new Error(`${subject}: the process did not start`);
  return { child, pid: child.pid, execAtMs, runDir };
}

async function stop(s: Started): Promise<void> {
  if (s.child.exitCode === null && s.child.signalCode === null) {
    const exited = new Promise((r) => s.child.once('exit', r));
    s.child.kill('SIGTERM');
    await exited;
  }
  rmSync(s.runDir, { recursive: true, force: true });
}

/** Resolves when the CP has received the n-th heartbeat (1-based) since `base`, with its receivedAt in ms. */
async function beatArrived(world: World, base: number, n: number, timeoutMs: number): Promise<number> {
  const rec = await world.cp.waitFor(() => world.cp.heartbeats[base + n - 1], timeoutMs, `heartbeat ${n}`);
  return rec.receivedAt.getTime();
}

/** Every heartbeat of the run was answered 200 (or is still in flight): a bare loop sending a wrong body would not count. */
function checkAnswered(world: World, subject: Subject, base: number): void {
  const refused = world.cp.heartbeats.slice(base).find((h) => h.status !== null && h.status !== 200);
  if (refused) throw new Error(`${subject}: a heartbeat was answered ${refused.status}: ${refused.raw}`);
}

interface BusyRun {
  firstBeatSecs: number;
  cpuMsPerBeatTicks: number;
  cpuMsPerBeat: number;
  wakeupsPerSec: number;
  rssKb: number;
  hwmKb: number;
}

/** 1 s cadence: exec → first heartbeat, CPU per heartbeat from beat `fromBeat` to `beats`, RSS at beat `beats`. */
async function busyRun(world: World, settings: Settings, subject: Subject): Promise<BusyRun> {
  const base = world.cp.heartbeats.length;
  const s = await start(world, settings, subject, 1);
  try {
    const firstAt = await beatArrived(world, base, 1, 30_000);
    await beatArrived(world, base, settings.fromBeat, 60_000 + settings.fromBeat * 3000);
    const a = snapshot(s.pid);
    await beatArrived(world, base, settings.beats, 60_000 + settings.beats * 3000);
    const b = snapshot(s.pid);
    checkAnswered(world, subject, base);
    const beats = settings.beats - settings.fromBeat;
    return {
      firstBeatSecs: (firstAt - s.execAtMs) / 1000,
      cpuMsPerBeatTicks: ((b.ticks - a.ticks) * (1000 / CLOCK_TICKS_PER_SEC)) / beats,
      cpuMsPerBeat: (b.cpuNs - a.cpuNs) / 1e6 / beats,
      wakeupsPerSec: (b.wakeups - a.wakeups) / ((b.atMs - a.atMs) / 1000),
      rssKb: b.rssKb,
      hwmKb: b.hwmKb,
    };
  } finally {
    await stop(s);
  }
}

interface IdleRun {
  firstBeatSecs: number;
  secs: number;
  cpuMsPerMinTicks: number;
  cpuMsPerMin: number;
  wakeupsPerSec: number;
  beats: number;
  polls: number;
}

/**
 * The default 60 s cadence, nothing to do: CPU per minute and wake-ups over the idle window. The agent jitters
 * its interval by ±10 %, so a fixed 60 s window would hold its heartbeat one time and miss it the next (a
 * heartbeat is a good part of an idle minute's CPU): the window is stretched until it holds as many
 * heartbeats and dispatch polls as a steady 60 s cadence puts in it, plus a second for the last answer.
 */
async function idleRun(world: World, settings: Settings, subject: Subject): Promise<IdleRun> {
  const base = world.cp.heartbeats.length;
  const pollBase = world.cp.dispatchPolls.length;
  const s = await start(world, settings, subject, DEFAULT_CADENCE_SECS);
  try {
    const firstAt = await beatArrived(world, base, 1, 30_000);
    await world.cp.waitFor(() => world.cp.dispatchPolls.length > pollBase || undefined, 30_000, 'the first dispatch poll');
    // Past start-up's one-off work: V8's memory reducer runs a few full GCs some 15–40 s into an idle process.
    await sleep(Math.max(0, s.execAtMs + settings.idleFromSecs * 1000 - Date.now()));
    const beatsBefore = world.cp.heartbeats.length;
    const pollsBefore = world.cp.dispatchPolls.length;
    const a = snapshot(s.pid);
    await sleep(settings.idleWindowSecs * 1000);
    const due = Math.floor(settings.idleWindowSecs / DEFAULT_CADENCE_SECS);
    if (due > 0) {
      const [beat, poll] = await world.cp.waitFor(
        () => {
          const b = world.cp.heartbeats[beatsBefore + due - 1];
          const p = world.cp.dispatchPolls[pollsBefore + due - 1];
          return b !== undefined && p !== undefined && ([b, p] as const);
        },
        DEFAULT_CADENCE_SECS * 1000,
        `${due} heartbeat(s) and dispatch poll(s) in the idle window`,
      );
      const settledAt = Math.max(beat.receivedAt.getTime(), poll.receivedAt.getTime()) + 1000;
      await sleep(Math.max(0, settledAt - Date.now()));
    }
    const b = snapshot(s.pid);
    checkAnswered(world, subject, base);
    const secs = (b.atMs - a.atMs) / 1000;
    return {
      firstBeatSecs: (firstAt - s.execAtMs) / 1000,
      secs,
      cpuMsPerMinTicks: (((b.ticks - a.ticks) * (1000 / CLOCK_TICKS_PER_SEC)) / secs) * 60,
      cpuMsPerMin: ((b.cpuNs - a.cpuNs) / 1e6 / secs) * 60,
      wakeupsPerSec: (b.wakeups - a.wakeups) / secs,
      beats: world.cp.heartbeats.length - beatsBefore,
      polls: world.cp.dispatchPolls.length - pollsBefore,
    };
  } finally {
    await stop(s);
  }
}

// ---- figures ----

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** `median (min–max)`, or the value alone for one sample. */
function spread(xs: number[], fmt: (x: number) => string, unit: string): string {
  const lo = Math.min(...xs);
  const hi = Math.max(...xs);
  return xs.length === 1 ? `${fmt(xs[0])} ${unit}` : `${fmt(median(xs))} ${unit} (${fmt(lo)}–${fmt(hi)})`;
}

/** The ratio of the medians, and the spread of the per-round ratios (round r's agent over round r's bare). */
function ratio(agent: number[], bare: number[]): string {
  const fmt = (x: number): string => (Number.isFinite(x) ? `${x.toFixed(x < 10 ? 2 : 1)}×` : '∞');
  const perRound = agent.map((a, i) => a / bare[i]);
  const head = fmt(median(agent) / median(bare));
  return perRound.length === 1 ? head : `${head} (${fmt(Math.min(...perRound))}–${fmt(Math.max(...perRound))})`;
}

/** What the idle window holds, for the summary. */
function idleWindowText(s: Settings): string {
  const due = Math.floor(s.idleWindowSecs / DEFAULT_CADENCE_SECS);
  return due === 0
    ? `${s.idleWindowSecs} s window, no heartbeat in it`
    : `≥ ${s.idleWindowSecs} s window, ${due} heartbeat(s) and long-poll(s) in it`;
}

const ms = (x: number): string => x.toFixed(x < 10 ? 2 : 1);
const perMin = (x: number): string => x.toFixed(x < 10 ? 1 : 0);
const mib = (kb: number): string => (kb / 1024).toFixed(1);
const secs = (x: number): string => x.toFixed(2);
const rate = (x: number): string => x.toFixed(1);

/** What was measured: the checkout's commit, and the last commit that changed the agent's source (its build). */
function gitCommit(): string {
  try {
    const git = (...args: string[]): string => execFileSync('git', args, { cwd: REPO, encoding: 'utf8' }).trim();
    const head = git('rev-parse', '--short', 'HEAD');
    const src = git('log', '-1', '--format=%h', '--', 'src', 'package-lock.json');
    const dirty = git('status', '--porcelain', '--', 'src') === '' ? '' : ' + uncommitted changes in src/';
    return `commit ${head}, src/ as of ${src}${dirty}`;
  } catch {
    return 'no git checkout';
  }
}

function busyLine(subject: Subject, r: BusyRun, s: Settings): string {
  return (
    `  ${subject.padEnd(5)} 1 s cadence:  first heartbeat ${secs(r.firstBeatSecs)} s, ` +
    `${ms(r.cpuMsPerBeat)} ms/beat (utime+stime ${ms(r.cpuMsPerBeatTicks)}), ${rate(r.wakeupsPerSec)} wake-ups/s, ` +
    `RSS at beat ${s.beats} ${mib(r.rssKb)} MiB (peak ${mib(r.hwmKb)})`
  );
}

function idleLine(subject: Subject, r: IdleRun): string {
  return (
    `  ${subject.padEnd(5)} 60 s cadence: first heartbeat ${secs(r.firstBeatSecs)} s, ` +
    `${perMin(r.cpuMsPerMin)} ms/min (utime+stime ${perMin(r.cpuMsPerMinTicks)}), ${rate(r.wakeupsPerSec)} wake-ups/s, ` +
    `${r.beats} heartbeat(s) and ${r.polls} dispatch poll(s) in ${r.secs.toFixed(1)} s`
  );
}

async function main(): Promise<void> {
  const settings = settingsFrom(process.argv);
  const dir = mkdtempSync(join(tmpdir(), 'nfa-bench-compare-'));
  const loadBefore = loadavg();
  const startedMs = performance.now();
  const header =
    `built agent (${settings.agentMain}; ${settings.agentMain === join(REPO, 'dist', 'main.js') ? gitCommit() : 'another checkout'}) ` +
    `vs bare Node mTLS loop (bench/bare-heartbeat.ts), ${settings.rounds} round(s) interleaved, ${new Date().toISOString().slice(0, 10)}, ` +
    `Node ${process.version} (${settings.nodeFlags.length > 0 ? `both run with ${settings.nodeFlags.join(' ')}` : 'no flags'}), ` +
    `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'unknown CPU'}`;
  process.stdout.write(`${header}\n`);

  try {
    const pki = await makePki(join(dir, 'pki'), { machineId: MACHINE_ID });
    // The agent verifies dispatches (PROTOCOL §12) and needs the trust file to start; none is dispatched here.
    const signer = new ManifestSigner();
    const trustFile = join(dir, 'trust.json');
    await signer.writeTrustFile(trustFile);
    // No cap on the hold: the CP keeps each dispatch long-poll for the whole wait=60, as a real one with nothing to send.
    const cp = await DevControlPlane.start({ pki, signer });
    const agentVersion = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
    const world: World = { dir, pki, cp, trustFile, agentVersion };
    const busy: Record<Subject, BusyRun[]> = { agent: [], bare: [] };
    const idle: Record<Subject, IdleRun[]> = { agent: [], bare: [] };
    try {
      for (let round = 0; round < settings.rounds; round++) {
        // Who goes first alternates, so that a machine getting busier or quieter does not favour one side.
        const order = round % 2 === 0 ? SUBJECTS : [...SUBJECTS].reverse();
        process.stdout.write(`round ${round + 1}/${settings.rounds}\n`);
        for (const subject of order) {
          const r = await busyRun(world, settings, subject);
          busy[subject].push(r);
          process.stdout.write(`${busyLine(subject, r, settings)}\n`);
        }
        for (const subject of order) {
          const r = await idleRun(world, settings, subject);
          idle[subject].push(r);
          process.stdout.write(`${idleLine(subject, r)}\n`);
        }
      }
    } finally {
      await cp.close();
    }

    const col = (f: (s: Subject) => number[], fmt: (x: number) => string, unit: string): [string, string, string] => [
      spread(f('agent'), fmt, unit),
      spread(f('bare'), fmt, unit),
      ratio(f('agent'), f('bare')),
    ];
    const rows: [string, [string, string, string]][] = [
      ['CPU per heartbeat, 1 s cadence, dispatch long-poll held 60 s', col((s) => busy[s].map((r) => r.cpuMsPerBeat), ms, 'ms')],
      ['… the same from utime+stime (10 ms ticks)', col((s) => busy[s].map((r) => r.cpuMsPerBeatTicks), ms, 'ms')],
      [`idle CPU per minute, 60 s cadence (${idleWindowText(settings)})`, col((s) => idle[s].map((r) => r.cpuMsPerMin), perMin, 'ms')],
      ['… the same from utime+stime (10 ms ticks)', col((s) => idle[s].map((r) => r.cpuMsPerMinTicks), perMin, 'ms')],
      [`RSS after ${settings.beats} heartbeats (VmRSS)`, col((s) => busy[s].map((r) => r.rssKb), mib, 'MiB')],
      [`peak RSS by then (VmHWM)`, col((s) => busy[s].map((r) => r.hwmKb), mib, 'MiB')],
      [
        `exec → first heartbeat (${settings.rounds * 2} starts each)`,
        col((s) => [...busy[s], ...idle[s]].map((r) => r.firstBeatSecs), secs, 's'),
      ],
      ['event-loop wake-ups, 1 s cadence', col((s) => busy[s].map((r) => r.wakeupsPerSec), rate, '/s')],
      ['event-loop wake-ups, idle at 60 s', col((s) => idle[s].map((r) => r.wakeupsPerSec), rate, '/s')],
    ];
    const loadAfter = loadavg();
    const table = [
      '| figure | agent | bare Node loop | ratio agent/bare |',
      '|---|---|---|---|',
      ...rows.map(([name, [a, b, x]]) => `| ${name} | ${a} | ${b} | ${x} |`),
    ];
    process.stdout.write(
      // Markdown, blank lines around the table: the summary is pasted as it is into bench/README.md.
      [
        '',
        header,
        '',
        `medians (min–max) of ${settings.rounds} round(s); ratio: of the medians (min–max of the rounds' own ratios)`,
        '',
        ...table,
        '',
        `1 s runs: CPU and wake-ups from heartbeat ${settings.fromBeat} to ${settings.beats}; 60 s runs: the idle window opens ` +
          `${settings.idleFromSecs} s after exec. CPU: on-CPU time of all the process's threads (\`/proc/<pid>/task/*/schedstat\`); ` +
          `wake-ups: main-thread voluntary ctxt switches.`,
        `load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')} before, ${loadAfter.map((x) => x.toFixed(2)).join(' ')} after; ` +
          `${((performance.now() - startedMs) / 60_000).toFixed(1)} min`,
      ].join('\n') + '\n',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  if (err instanceof BadSetting) {
    process.stderr.write(`compare.bench: ${err.message}\n`);
    process.exitCode = 2;
    return;
  }
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
