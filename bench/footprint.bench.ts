// What the agent's resident set is made of: the bare mTLS heartbeat loop (bare-heartbeat.ts) run again and again,
// each time with one more of the packages the agent is built on loaded beside it (node -r, never used), then the
// built agent itself. Every process heartbeats the dev CP over mutual TLS at 1 s; after FOOTPRINT_BEATS (default 15)
// heartbeats the memory preload runs two full collections and reads VmRSS and the heap. The differences between
// consecutive rows are each package's share of the agent's excess over the bare loop; what the agent has above the
// last package row is its own code and data. Figures only.
// Build and run: npm run bench -- footprint   (or, once built: node dist-bench/bench/footprint.bench.js [agent main.js])
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { devAgentArgs } from '../dev/agent-args';
import { DevControlPlane } from '../dev/control-plane';
import { freePort } from '../dev/free-port';
import { ManifestSigner } from '../dev/manifest-signer';
import { makePki, type Pki } from '../dev/pki';
import { HEADER_PROTOCOL, PATH_DISPATCH, PATH_HEARTBEAT, PROTOCOL_MAJOR } from '../src/protocol/protocol.constants';
import type { BareConfig } from './bare-heartbeat';
import type { MemorySample } from './memory.preload';
import { unitNodeFlags } from './unit-flags';

const MACHINE_ID = 'web-01';
const CLOSURE = `${'b'.repeat(32)}-nixos-system-web-01-26.11`;
const REPO = join(__dirname, '..', '..');
const MIB = 1024 * 1024;

/** One row: a label and what it adds beside the bare loop to the rows above it, or the agent itself. */
type Step = { label: string; modules: string[] } | { label: string; agent: true };

// In the order the agent's own imports pull them in; each row keeps the rows above it. The paths are the ones the
// agent loads (e.g. the Express adapter from its own file, class-validator's decorators one file each).
const STEPS: Step[] = [
  { label: 'bare Node mTLS loop', modules: [] },
  {
    label: '+ Nest core (@nestjs/core, @nestjs/common, rxjs, reflect-metadata)',
    modules: ['reflect-metadata', '@nestjs/common', '@nestjs/core'],
  },
  { label: '+ Express adapter (@nestjs/platform-express, express)', modules: ['@nestjs/platform-express/adapters/express-adapter'] },
  { label: '+ @nestjs/axios, axios (form-data, mime-db)', modules: ['@nestjs/axios'] },
  { label: '+ @nestjs/schedule (cron, luxon)', modules: ['@nestjs/schedule'] },
  { label: '+ class-validator (the checks used), class-transformer', modules: ['./dist/common/class-validator.js', 'class-transformer'] },
  { label: '+ prom-client (@opentelemetry/api)', modules: ['prom-client'] },
  { label: 'the built agent (all of the above, used, and its own code)', agent: true },
];

interface Row {
  label: string;
  sample: MemorySample;
}

async function sampleOf(pid: number, file: string): Promise<MemorySample> {
  rmSync(file, { force: true });
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 500 && !existsSync(file); i++) await sleep(10);
  for (let i = 0; i < 100; i++) {
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as MemorySample;
    } catch {
      await sleep(10); // the file appears before the write ends
    }
  }
  throw new Error('no memory sample was written (is the preload loaded?)');
}

/** Every module a bare-loop row loads: its own and those of the rows above it. */
function loadedAt(index: number): string[] {
  return STEPS.slice(0, index + 1).flatMap((s) => ('modules' in s ? s.modules : []));
}

async function run(
  step: Step,
  modules: string[],
  cp: DevControlPlane,
  pki: Pki,
  dir: string,
  agentMain: string,
  beats: number,
): Promise<Row> {
  const runDir = mkdtempSync(join(dir, 'run-'));
  const stateDir = join(runDir, 'state');
  mkdirSync(stateDir, { mode: 0o700 });
  const currentSystemPath = join(runDir, 'current-system');
  symlinkSync(`/nix/store/${CLOSURE}`, currentSystemPath);
  const sampleFile = join(runDir, 'memory.json');
  const preload = ['--expose-gc', '-r', join(__dirname, 'memory.preload.js')];
  let args: string[];
  if ('agent' in step) {
    args = [
      ...preload,
      agentMain,
      ...devAgentArgs({
        controlPlaneUrl: cp.url,
        machineId: MACHINE_ID,
        pki,
        stateDir,
        currentSystemPath,
        heartbeatIntervalSecs: 1,
        adminPort: await freePort(),
        trustFile: join(dir, 'trust.json'),
      }),
      '--log-level',
      'warn',
    ];
  } else {
    const config: BareConfig = {
      controlPlaneUrl: cp.url,
      caCertPath: pki.caCertPath,
      certPath: pki.client.certPath,
      keyPath: pki.client.keyPath,
      machineId: MACHINE_ID,
      currentSystemPath,
      intervalSecs: 1,
      dispatchWaitSecs: 60,
      protocolHeader: HEADER_PROTOCOL,
      protocolMajor: PROTOCOL_MAJOR,
      heartbeatPath: PATH_HEARTBEAT,
      dispatchPath: PATH_DISPATCH,
      agentVersion: 'footprint',
    };
    args = [...preload, ...modules.flatMap((m) => ['-r', m]), join(__dirname, 'bare-heartbeat.js'), JSON.stringify(config)];
  }
  const base = cp.heartbeats.length;
  // cwd: the repository, so that -r finds the packages in its node_modules.
  const child = spawn(process.execPath, [...unitNodeFlags(), ...args], {
    cwd: REPO,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, NFA_MEMORY_OUT: sampleFile },
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${step.label}: the process did not start`);
  try {
    await cp.waitFor(() => cp.heartbeats.length >= base + beats || undefined, 60_000 + beats * 3000, `heartbeat ${beats} of ${step.label}`);
    return { label: step.label, sample: await sampleOf(pid, sampleFile) };
  } finally {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
    rmSync(runDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const agentMain = process.argv[2] ?? join(REPO, 'dist', 'main.js');
  const beats = Number(process.env.FOOTPRINT_BEATS ?? 15);
  const dir = mkdtempSync(join(tmpdir(), 'nfa-bench-footprint-'));
  try {
    const pki = await makePki(join(dir, 'pki'), { machineId: MACHINE_ID });
    const signer = new ManifestSigner();
    await signer.writeTrustFile(join(dir, 'trust.json'));
    const cp = await DevControlPlane.start({ pki, signer });
    const rows: Row[] = [];
    try {
      for (const [i, step] of STEPS.entries()) rows.push(await run(step, loadedAt(i), cp, pki, dir, agentMain, beats));
    } finally {
      await cp.close();
    }
    const bare = rows[0].sample;
    const agent = rows[rows.length - 1].sample;
    const excessKb = agent.rssKb - bare.rssKb;
    const mib = (kb: number): string => `${(kb / 1024).toFixed(1)} MiB`;
    const delta = (kb: number): string => `${kb >= 0 ? '+' : '−'}${(Math.abs(kb) / 1024).toFixed(1)} MiB`;
    const width = Math.max(...rows.map((r) => r.label.length));
    const lines = [
      `resident set after ${beats} heartbeats at 1 s and two full collections; node ${unitNodeFlags().join(' ')}`,
      `${'loaded beside the bare loop'.padEnd(width)}  ${'RSS'.padStart(9)}  ${'step'.padStart(9)}  ${'share'.padStart(6)}  ${'heap used'.padStart(9)}  ${'modules'.padStart(7)}`,
      ...rows.map((r, i) => {
        const step = i === 0 ? 0 : r.sample.rssKb - rows[i - 1].sample.rssKb;
        const share = i === 0 || excessKb <= 0 ? '' : `${((100 * step) / excessKb).toFixed(0)} %`;
        return (
          `${r.label.padEnd(width)}  ${mib(r.sample.rssKb).padStart(9)}  ${(i === 0 ? '' : delta(step)).padStart(9)}  ${share.padStart(6)}  ` +
          `${(r.sample.heapUsed / MIB).toFixed(1).padStart(5)} MiB  ${String(r.sample.modules).padStart(7)}`
        );
      }),
      `the agent over the bare loop: ${delta(excessKb)} (${(agent.rssKb / bare.rssKb).toFixed(2)}×); ` +
        `of it, the packages loaded and unused: ${delta(rows[rows.length - 2].sample.rssKb - bare.rssKb)}, ` +
        `the agent running on them: ${delta(agent.rssKb - rows[rows.length - 2].sample.rssKb)}`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
