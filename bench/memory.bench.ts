// Memory of a steady agent: does it grow? The built agent heartbeats the dev control plane over mutual TLS at
// --heartbeat-interval 1 with its clock running fast under libfaketime, so 10,000 heartbeats take minutes, not hours.
// It samples the agent's resident set after two full collections. Figures only.
// Build and run: npm run build && npx tsc -p bench/tsconfig.json && node dist-bench/bench/memory.bench.js [agent main.js]
// MEMORY_BEATS (default 10000) heartbeats measured after MEMORY_WARMUP (default 1000); MEMORY_SPEED (default 50)
// is how many times faster than real time the agent's clock runs. The agent gets the Node.js flags of the systemd
// unit's ExecStart=; MEMORY_NODE_FLAGS replaces them (MEMORY_NODE_FLAGS= for none).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { devAgentArgs } from '../dev/agent-args';
import { DevControlPlane } from '../dev/control-plane';
import { freePort } from '../dev/free-port';
import { ManifestSigner } from '../dev/manifest-signer';
import { makePki } from '../dev/pki';
import type { MemorySample } from './memory.preload';
import { memoryKb } from './proc-stats';
import { unitNodeFlags } from './unit-flags';

const MACHINE_ID = 'web-01';
const CLOSURE = `${'b'.repeat(32)}-nixos-system-web-01-26.11`;
/** The agent's dispatch long-poll asks the CP to hold it this long, in the agent's (fast) seconds. */
const DISPATCH_WAIT_SECS = 60;
const SAMPLES = 10;
const MIB = 1024 * 1024;

/** Debian's libfaketime (package `faketime`), as test/faults/clock.e2e-spec.ts finds it. */
function libfaketime(): string {
  const candidates = readdirSync('/usr/lib', { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => join('/usr/lib', d.name, 'faketime', 'libfaketime.so.1'));
  const found = ['/usr/lib/faketime/libfaketime.so.1', ...candidates].find((p) => existsSync(p));
  if (!found) throw new Error('libfaketime is not installed: apt-get install faketime');
  return found;
}

interface Row {
  beats: number;
  realSecs: number;
  /** VmRSS as the agent left it, read before the collections. */
  rssBeforeGcKb: number;
  after: MemorySample;
}

async function sample(pid: number, file: string): Promise<MemorySample> {
  rmSync(file, { force: true });
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 500 && !existsSync(file); i++) await sleep(10);
  // The file appears before the write ends: wait until it parses.
  for (let i = 0; i < 100; i++) {
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as MemorySample;
    } catch {
      await sleep(10);
    }
  }
  throw new Error('the agent wrote no memory sample (was it started with --expose-gc and the preload?)');
}

async function main(): Promise<void> {
  const agentMain = process.argv[2] ?? join(__dirname, '..', '..', 'dist', 'main.js');
  const beats = Number(process.env.MEMORY_BEATS ?? 10_000);
  // The warm-up covers the settling of a fresh process: the JIT compiling what runs hot, and V8 sizing the old space
  // for the allocation rate it sees (which a fast clock makes 50 times higher than a real one). Growth after it is
  // what a steady agent must not have.
  const warmup = Number(process.env.MEMORY_WARMUP ?? 1000);
  const speed = Number(process.env.MEMORY_SPEED ?? 50);
  const nodeFlags =
    process.env.MEMORY_NODE_FLAGS === undefined ? unitNodeFlags() : process.env.MEMORY_NODE_FLAGS.split(/\s+/).filter(Boolean);
  // Before anything starts: a missing library must not leave a control plane listening.
  const faketime = libfaketime();
  const dir = mkdtempSync(join(tmpdir(), 'nfa-bench-memory-'));
  try {
    const pki = await makePki(join(dir, 'pki'), { machineId: MACHINE_ID });
    const stateDir = join(dir, 'state');
    mkdirSync(stateDir, { mode: 0o700 });
    symlinkSync(`/nix/store/${CLOSURE}`, join(dir, 'current-system'));
    const signer = new ManifestSigner();
    await signer.writeTrustFile(join(dir, 'trust.json'));
    // The CP keeps the agent's time (no clock-skew warnings), and holds each dispatch poll for the 60 fast seconds it
    // asks: to the agent, a CP with nothing to dispatch.
    let startedAt = Date.now();
    const cp = await DevControlPlane.start({
      pki,
      signer,
      now: () => new Date(startedAt + (Date.now() - startedAt) * speed),
      dispatchWaitCapMs: (DISPATCH_WAIT_SECS * 1000) / speed,
    });
    const sampleFile = join(dir, 'memory.json');
    startedAt = Date.now();
    const agent = spawn(
      process.execPath,
      [
        ...nodeFlags,
        '--expose-gc',
        '-r',
        join(__dirname, 'memory.preload.js'),
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
      {
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, LD_PRELOAD: faketime, FAKETIME: `+0 x${speed}`, NFA_MEMORY_OUT: sampleFile },
      },
    );
    const pid = agent.pid;
    if (pid === undefined) throw new Error('the agent did not start');
    try {
      const rows: Row[] = [];
      const first = warmup;
      // At least a minute of real time per step, however slow the machine.
      const stepTimeoutMs = Math.max(60_000, ((beats / SAMPLES) * 1000 * 5) / speed);
      for (let k = 0; k <= SAMPLES; k++) {
        const target = first + Math.round((beats * k) / SAMPLES);
        await cp.waitFor(() => cp.heartbeats.length >= target || undefined, k === 0 ? 60_000 : stepTimeoutMs, `heartbeat ${target}`);
        const rssBeforeGcKb = memoryKb(pid).rss;
        const after = await sample(pid, sampleFile);
        rows.push({ beats: cp.heartbeats.length, realSecs: (Date.now() - startedAt) / 1000, rssBeforeGcKb, after });
      }
      const a = rows[0];
      const b = rows[rows.length - 1];
      const half = rows[Math.floor(rows.length / 2)];
      const mib = (bytes: number): string => `${(bytes / MIB).toFixed(1)} MiB`;
      const signed = (bytes: number): string => `${bytes >= 0 ? '+' : '−'}${(Math.abs(bytes) / MIB).toFixed(2)} MiB`;
      const failed = cp.heartbeats.filter((h) => h.status !== 200).length;
      const lines = [
        `steady agent, --heartbeat-interval 1, its clock ${speed}× real time (libfaketime); node ${[...nodeFlags, agentMain].join(' ')}`,
        `${'heartbeats'.padStart(10)} ${'real s'.padStart(7)} ${'RSS after GC'.padStart(13)} ${'heap used'.padStart(10)} ${'heap total'.padStart(11)} ${'new space'.padStart(10)} ${'external'.padStart(9)}   RSS before GC`,
        ...rows.map(
          (r) =>
            `${String(r.beats).padStart(10)} ${r.realSecs.toFixed(0).padStart(7)} ${mib(r.after.rssKb * 1024).padStart(13)} ${mib(r.after.heapUsed).padStart(10)} ${mib(r.after.heapTotal).padStart(11)} ${mib(r.after.newSpace).padStart(10)} ${mib(r.after.external).padStart(9)}   ${mib(r.rssBeforeGcKb * 1024)}`,
        ),
        `RSS growth over ${(b.beats - a.beats).toLocaleString('en-US')} heartbeats (after GC, from heartbeat ${a.beats}): ${signed((b.after.rssKb - a.after.rssKb) * 1024)}; heap used ${signed(b.after.heapUsed - a.after.heapUsed)}; external ${signed(b.after.external - a.after.external)}`,
        `of it, over the last ${(b.beats - half.beats).toLocaleString('en-US')}: ${signed((b.after.rssKb - half.after.rssKb) * 1024)} (a leak grows in both halves; settling, in the first)`,
        `heartbeats the CP answered with other than 200: ${failed}; ${((b.beats - a.beats) / (b.realSecs - a.realSecs)).toFixed(1)} heartbeats a real second`,
        `modules loaded: ${b.after.modules.toLocaleString('en-US')} files, ${(b.after.moduleBytes / 1e6).toFixed(2)} MB of source (${a.after.modules.toLocaleString('en-US')} after the warm-up)`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
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
