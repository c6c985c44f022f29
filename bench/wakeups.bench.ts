// Wake-ups of an idle agent: the built agent at --heartbeat-interval 60 against the dev control plane, doing
// nothing but its steady jobs. Figures only.
// Build and run: npm run bench   (or: npm run build && npx tsc -p bench/tsconfig.json && node dist-bench/bench/wakeups.bench.js [agent main.js])
// WAKEUPS_WINDOW_SECS sets the measured window (default 60: one heartbeat and one dispatch long-poll fall in it).
// WAKEUPS_COUNT_TIMERS=0 runs the agent without the timer-counting preload, whose async hook costs CPU of its own.
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
import { CLOCK_TICKS_PER_SEC, contextSwitches, cpuTicks as cpuTicksOf } from './proc-stats';

const MACHINE_ID = 'web-01';
const CLOSURE = `${'b'.repeat(32)}-nixos-system-web-01-26.11`;
const SETTLE_MS = 5_000;

interface Sample {
  atMs: number;
  /** Voluntary context switches of the main thread: each is the event loop blocking in epoll and being woken. */
  mainSwitches: number;
  /** The same, summed over all threads (libuv's pool, V8's platform threads). */
  allSwitches: number;
  /** User + system CPU time, in clock ticks. */
  cpuTicks: number;
  /** Null when the agent runs without the counting preload. */
  timers: { Timeout: number; Immediate: number } | null;
}

async function sample(pid: number, countsFile: string | null): Promise<Sample> {
  const atMs = performance.now();
  const { main: mainSwitches, all: allSwitches } = contextSwitches(pid);
  const cpuTicks = cpuTicksOf(pid).self;
  if (countsFile === null) return { atMs, mainSwitches, allSwitches, cpuTicks, timers: null };
  // The preload writes its counts on SIGUSR2 (one wake-up, outside the switch counts just read).
  rmSync(countsFile, { force: true });
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 200 && !existsSync(countsFile); i++) await sleep(10);
  const timers = JSON.parse(readFileSync(countsFile, 'utf8')) as Sample['timers'];
  return { atMs, mainSwitches, allSwitches, cpuTicks, timers };
}

async function main(): Promise<void> {
  const agentMain = process.argv[2] ?? join(__dirname, '..', '..', 'dist', 'main.js');
  const windowSecs = Number(process.env.WAKEUPS_WINDOW_SECS ?? 60);
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
    const agent = spawn(
      process.execPath,
      [
        ...(countsFile === null ? [] : ['-r', join(__dirname, 'wakeups.preload.js')]),
        agentMain,
        ...devAgentArgs({
          controlPlaneUrl: cp.url,
          machineId: MACHINE_ID,
          pki,
          stateDir,
          currentSystemPath: join(dir, 'current-system'),
          heartbeatIntervalSecs: 60,
          adminPort: await freePort(),
        }),
        '--log-level',
        'warn',
      ],
      { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, NFA_WAKEUPS_OUT: countsFile ?? '' } },
    );
    const pid = agent.pid;
    if (pid === undefined) throw new Error('the agent did not start');
    try {
      await cp.waitFor(() => cp.dispatchPolls.length > 0 || undefined, 30_000, 'the first dispatch poll (boot recovery over)');
      await sleep(SETTLE_MS);
      const a = await sample(pid, countsFile);
      await sleep(windowSecs * 1000);
      const b = await sample(pid, countsFile);
      const secs = (b.atMs - a.atMs) / 1000;
      const rate = (n: number | null): string => (n === null ? '      -' : (n / secs).toFixed(2).padStart(7));
      const timers = (kind: 'Timeout' | 'Immediate'): number | null => (a.timers && b.timers ? b.timers[kind] - a.timers[kind] : null);
      process.stdout.write(
        [
          `idle agent, --heartbeat-interval 60, ${secs.toFixed(1)} s window (${agentMain})`,
          `event-loop wake-ups (main thread voluntary ctxt switches) ${rate(b.mainSwitches - a.mainSwitches)} /s`,
          `voluntary ctxt switches, all threads                     ${rate(b.allSwitches - a.allSwitches)} /s`,
          `JS timer callbacks (Timeout)                             ${rate(timers('Timeout'))} /s`,
          `setImmediate callbacks                                   ${rate(timers('Immediate'))} /s`,
          `CPU time${countsFile === null ? '' : ' (with the counting hook)'}${' '.repeat(countsFile === null ? 49 : 25)}${(((b.cpuTicks - a.cpuTicks) / CLOCK_TICKS_PER_SEC / secs) * 60_000).toFixed(0).padStart(7)} ms/min`,
          `heartbeats seen by the CP in the window: ${cp.heartbeats.filter((h) => h.receivedAt.getTime() >= Date.now() - secs * 1000).length}`,
        ].join('\n') + '\n',
      );
    } finally {
      agent.kill('SIGTERM');
      await new Promise((r) => agent.once('exit', r));
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
