// Wake-ups of an idle agent: the built agent at --heartbeat-interval 60 against the dev control plane, doing
// nothing but its steady jobs. Figures only.
// Build and run: npm run bench   (or: npm run build && npx tsc -p bench/tsconfig.json && node dist-bench/bench/wakeups.bench.js [agent main.js])
// WAKEUPS_WINDOW_SECS sets the measured window (default 60: one heartbeat and one dispatch long-poll fall in it).
// WAKEUPS_COUNT_TIMERS=0 runs the agent without the timer-counting preload, whose async hook costs CPU of its own.
// WAKEUPS_SETTLE_SECS: how long after the first dispatch poll the window opens (default 5; V8 shrinks the start-up
// heap with a few GCs over the first ~30 s, which a steady-state figure leaves out).
// WAKEUPS_HEARTBEAT_SECS sets the heartbeat interval (default 60; 1 gives the CPU per heartbeat).
// WAKEUPS_SUBJECT: `agent` (default), `bare` (a bare Node.js mTLS loop doing the same steady work, for scale:
// wakeups.bare-loop.ts), or `both` (the agent, then the bare loop, one after the other, never side by side).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { devAgentArgs } from '../dev/agent-args';
import { ManifestSigner } from '../dev/manifest-signer';
import { DevControlPlane } from '../dev/control-plane';
import { freePort } from '../dev/free-port';
import { makePki } from '../dev/pki';
import { CLOCK_TICKS_PER_SEC, contextSwitches, cpuTicks as cpuTicksOf, onCpuNs } from './proc-stats';

type Subject = 'agent' | 'bare';

const MACHINE_ID = 'web-01';
const CLOSURE = `${'b'.repeat(32)}-nixos-system-web-01-26.11`;

interface Sample {
  atMs: number;
  /** Voluntary context switches of the main thread: each is the event loop blocking in epoll and being woken. */
  mainSwitches: number;
  /** The same, summed over all threads (libuv's pool, V8's platform threads). */
  allSwitches: number;
  /** User + system CPU time, in clock ticks. */
  cpuTicks: number;
  /** Time on a CPU summed over the threads alive now, in ns (schedstat: finer than the 10 ms ticks). */
  onCpuNs: number;
  /** Null when the agent runs without the counting preload. */
  timers: { Timeout: number; Immediate: number; byName: Record<string, number> } | null;
}

async function sample(pid: number, countsFile: string | null): Promise<Sample> {
  const atMs = performance.now();
  const { main: mainSwitches, all: allSwitches } = contextSwitches(pid);
  const cpuTicks = cpuTicksOf(pid).self;
  const onCpu = onCpuNs(pid);
  if (countsFile === null) return { atMs, mainSwitches, allSwitches, cpuTicks, onCpuNs: onCpu, timers: null };
  // The preload writes its counts on SIGUSR2 (one wake-up, outside the switch counts just read).
  rmSync(countsFile, { force: true });
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 200 && !existsSync(countsFile); i++) await sleep(10);
  const timers = JSON.parse(readFileSync(countsFile, 'utf8')) as Sample['timers'];
  return { atMs, mainSwitches, allSwitches, cpuTicks, onCpuNs: onCpu, timers };
}

/** The JS timer and immediate callbacks of the window by callback name, most frequent first. */
function timersByName(a: Sample['timers'], b: Sample['timers']): [string, number][] {
  if (a === null || b === null) return [];
  return Object.entries(b.byName)
    .map(([name, n]): [string, number] => [name, n - (a.byName[name] ?? 0)])
    .filter(([, n]) => n > 0)
    .sort((x, y) => y[1] - x[1]);
}

async function main(): Promise<void> {
  const agentMain = process.argv[2] ?? join(__dirname, '..', '..', 'dist', 'main.js');
  const windowSecs = Number(process.env.WAKEUPS_WINDOW_SECS ?? 60);
  const heartbeatSecs = Number(process.env.WAKEUPS_HEARTBEAT_SECS ?? 60);
  const which = process.env.WAKEUPS_SUBJECT ?? 'agent';
  if (which !== 'agent' && which !== 'bare' && which !== 'both')
    throw new Error(`WAKEUPS_SUBJECT must be agent, bare or both, got ${which}`);
  const subjects: Subject[] = which === 'both' ? ['agent', 'bare'] : [which];
  for (const subject of subjects) await measure(subject, agentMain, windowSecs, heartbeatSecs);
}

async function measure(subject: Subject, agentMain: string, windowSecs: number, heartbeatSecs: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'nfa-bench-wakeups-'));
  try {
    const pki = await makePki(join(dir, 'pki'), { machineId: MACHINE_ID });
    const stateDir = join(dir, 'state');
    mkdirSync(stateDir, { mode: 0o700 });
    symlinkSync(`/nix/store/${CLOSURE}`, join(dir, 'current-system'));
    // The CP holds each dispatch long-poll for the whole wait=60, as a real one with nothing to dispatch does.
    // The agent verifies each dispatch (PROTOCOL §12): trust.json beside the state dir names the signer's keys.
    const signer = new ManifestSigner();
    await signer.writeTrustFile(join(dir, 'trust.json'));
    const cp = await DevControlPlane.start({ pki, signer });
    const countsFile = process.env.WAKEUPS_COUNT_TIMERS === '0' ? null : join(dir, 'timer-counts.json');
    const args =
      subject === 'bare'
        ? [
            join(__dirname, 'wakeups.bare-loop.js'),
            cp.url,
            pki.caCertPath,
            pki.client.certPath,
            pki.client.keyPath,
            MACHINE_ID,
            String(heartbeatSecs),
          ]
        : [
            agentMain,
            ...devAgentArgs({
              controlPlaneUrl: cp.url,
              machineId: MACHINE_ID,
              pki,
              stateDir,
              currentSystemPath: join(dir, 'current-system'),
              heartbeatIntervalSecs: heartbeatSecs,
              adminPort: await freePort(),
            }),
            '--log-level',
            'warn',
          ];
    const child = spawn(process.execPath, [...(countsFile === null ? [] : ['-r', join(__dirname, 'wakeups.preload.js')]), ...args], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, NFA_WAKEUPS_OUT: countsFile ?? '' },
    });
    const pid = child.pid;
    if (pid === undefined) throw new Error(`the ${subject} did not start`);
    try {
      await cp.waitFor(() => cp.dispatchPolls.length > 0 || undefined, 30_000, 'the first dispatch poll (boot recovery over)');
      await sleep(Number(process.env.WAKEUPS_SETTLE_SECS ?? 5) * 1000);
      const beatsBefore = cp.heartbeats.length;
      const a = await sample(pid, countsFile);
      await sleep(windowSecs * 1000);
      const b = await sample(pid, countsFile);
      const beats = cp.heartbeats.length - beatsBefore;
      const secs = (b.atMs - a.atMs) / 1000;
      const cpuMs = ((b.cpuTicks - a.cpuTicks) / CLOCK_TICKS_PER_SEC) * 1000;
      const onCpuMs = (b.onCpuNs - a.onCpuNs) / 1e6;
      const rate = (n: number | null): string => (n === null ? '      -' : (n / secs).toFixed(2).padStart(7));
      const timers = (kind: 'Timeout' | 'Immediate'): number | null => (a.timers && b.timers ? b.timers[kind] - a.timers[kind] : null);
      const hook = countsFile === null ? '' : ' (with the counting hook)';
      process.stdout.write(
        [
          `${subject === 'bare' ? 'bare Node.js mTLS loop' : 'idle agent'}, heartbeat every ${heartbeatSecs} s, ${secs.toFixed(1)} s window${subject === 'bare' ? '' : ` (${agentMain})`}`,
          `event-loop wake-ups (main thread voluntary ctxt switches) ${rate(b.mainSwitches - a.mainSwitches)} /s`,
          `voluntary ctxt switches, all threads                     ${rate(b.allSwitches - a.allSwitches)} /s`,
          `JS timer callbacks (Timeout)                             ${rate(timers('Timeout'))} /s`,
          `setImmediate callbacks                                   ${rate(timers('Immediate'))} /s`,
          `CPU time${hook.padEnd(49)}${((cpuMs / secs) * 60).toFixed(0).padStart(7)} ms/min`,
          `time on a CPU, all threads (schedstat)${hook.padEnd(19)}${((onCpuMs / secs) * 60).toFixed(1).padStart(7)} ms/min`,
          `heartbeats seen by the CP in the window: ${beats}${beats > 0 ? `, time on a CPU per heartbeat ${(onCpuMs / beats).toFixed(2)} ms` : ''}`,
          ...timersByName(a.timers, b.timers).map(([name, n]) => `  ${rate(n)} /s  ${name}`),
        ].join('\n') + '\n',
      );
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      await cp.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
