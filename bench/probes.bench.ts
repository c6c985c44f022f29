// The cost of health probes: the built agent with 20 probes at 5 s intervals (10 http, 6 tcp, 4 exec, all
// against loopback targets this process serves) next to the same agent with none, both holding one rollout
// in a long soak so every probe keeps running. Figures only.
// Build and run: npm run bench   (or: npm run build && npx tsc -p bench/tsconfig.json && node dist-bench/bench/probes.bench.js [agent main.js])
// PROBES_WINDOW_SECS sets the measured window (default 60), PROBES_WARMUP_SECS the settling before it (default 10),
// PROBES_MIX the probes (default http:10,tcp:6,exec:4).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, createServer as createTcpServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { devAgentArgs } from '../dev/agent-args';
import { ManifestSigner } from '../dev/manifest-signer';
import { DevControlPlane } from '../dev/control-plane';
import { freePort } from '../dev/free-port';
import { makePki } from '../dev/pki';
import { getFromAdmin } from '../src/cli/admin-request';
import type { ProbesStatus } from '../src/probes/probes.status.types';
import { CLOCK_TICKS_PER_SEC, contextSwitches, cpuTicks, memoryKb } from './proc-stats';

const MACHINE_ID = 'web-01';
const ROLLOUT = 'stable@bench0002';
const CLOSURE = `${'a'.repeat(32)}-nixos-system-web-01-26.05`;
const TARGET = `${'b'.repeat(32)}-nixos-system-web-01-26.11`;
const INTERVAL_SECS = 5;
type Kind = 'http' | 'tcp' | 'exec';
type Mix = Record<Kind, number>;
const DEFAULT_MIX: Mix = { http: 10, tcp: 6, exec: 4 };
/** Long past any window: the rollout keeps soaking and its probes keep running. */
const SOAK_SECS = 3_600;

interface Targets {
  httpUrl: string;
  tcpPort: number;
  close(): Promise<void>;
}

/** An HTTP server answering 200 and a TCP listener that accepts and hangs up, on loopback. */
async function startTargets(): Promise<Targets> {
  const http = createHttpServer((_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n'));
  const tcp = createTcpServer((socket) => socket.destroy());
  const listen = (server: Server): Promise<number> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
    });
  const httpPort = await listen(http);
  const tcpPort = await listen(tcp);
  return {
    httpUrl: `http://127.0.0.1:${httpPort}`,
    tcpPort,
    close: async () => {
      http.closeAllConnections();
      await Promise.all([new Promise((r) => http.close(r)), new Promise((r) => tcp.close(r))]);
    },
  };
}

/** PROBES_MIX, e.g. `http:20` or `http:10,tcp:6,exec:4` (the default): how many probes of each kind. */
function mixFrom(text: string | undefined): Mix {
  if (text === undefined || text === '') return DEFAULT_MIX;
  const mix: Mix = { http: 0, tcp: 0, exec: 0 };
  for (const part of text.split(',')) {
    const m = /^(http|tcp|exec):(\d+)$/.exec(part.trim());
    if (!m) throw new Error(`PROBES_MIX: "${part}" is not KIND:COUNT with KIND http, tcp or exec (e.g. http:10,tcp:6,exec:4)`);
    mix[m[1] as Kind] = Number(m[2]);
  }
  return mix;
}

/** PROTOCOL §10's file: the mix, or none (`{}`, read and valid, no probe). */
function healthChecks(targets: Targets | null, mix: Mix): Record<string, unknown> {
  if (targets === null) return {};
  const probes: Record<string, unknown> = {};
  for (let i = 1; i <= mix.http; i++) {
    probes[`http-${i}`] = { kind: 'http', url: `${targets.httpUrl}/health/${i}`, intervalSeconds: INTERVAL_SECS, timeoutSecs: 2 };
  }
  for (let i = 1; i <= mix.tcp; i++) {
    probes[`tcp-${i}`] = { kind: 'tcp', port: targets.tcpPort, intervalSeconds: INTERVAL_SECS, connectTimeoutSecs: 2 };
  }
  for (let i = 1; i <= mix.exec; i++) {
    probes[`exec-${i}`] = { kind: 'exec', command: ['/bin/true'], intervalSeconds: INTERVAL_SECS, timeoutSecs: 2 };
  }
  return probes;
}

interface Run {
  label: string;
  secs: number;
  probeRuns: number;
  failingAtEnd: number;
  cpuSelfMsPerMin: number;
  cpuChildrenMsPerMin: number;
  wakeupsPerSec: number;
  rssEndKb: number;
  rssMeanKb: number;
  hwmKb: number;
}

interface Snapshot {
  atMs: number;
  ticks: ReturnType<typeof cpuTicks>;
  switches: number;
  runs: number;
  /** Probes whose last run failed. */
  failing: number;
}

async function probesStatus(adminPort: number): Promise<ProbesStatus> {
  const answer = await getFromAdmin({ kind: 'tcp', host: '127.0.0.1', port: adminPort }, '/status');
  return (answer.body as { probes: ProbesStatus }).probes;
}

/** Runs the agent with (or without) the probes, soaking one rollout, and measures it over the window. */
async function measure(agentMain: string, targets: Targets | null, mix: Mix, warmupSecs: number, windowSecs: number): Promise<Run> {
  const declared = healthChecks(targets, mix);
  const label = targets === null ? 'no probes' : `${Object.keys(declared).length} probes`;
  const dir = mkdtempSync(join(tmpdir(), 'nfa-bench-probes-'));
  try {
    const pki = await makePki(join(dir, 'pki'), { machineId: MACHINE_ID });
    const stateDir = join(dir, 'state');
    mkdirSync(stateDir, { mode: 0o700 });
    // A fake store for the symlink backend to switch within.
    const store = join(dir, 'store');
    for (const closure of [CLOSURE, TARGET]) mkdirSync(join(store, closure), { recursive: true });
    symlinkSync(join(store, CLOSURE), join(dir, 'current-system'));
    const healthChecksFile = join(dir, 'health-checks.json');
    writeFileSync(healthChecksFile, JSON.stringify(declared, null, 2));
    // The agent verifies each dispatch (PROTOCOL §12): trust.json beside the state dir names the signer's keys.
    const signer = new ManifestSigner();
    await signer.writeTrustFile(join(dir, 'trust.json'));
    const cp = await DevControlPlane.start({ pki, signer });
    const adminPort = await freePort();
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
          storeDir: store,
          heartbeatIntervalSecs: 60,
          adminPort,
          healthChecksFile,
        }),
        '--log-level',
        'warn',
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    const pid = agent.pid;
    if (pid === undefined) throw new Error('the agent did not start');
    try {
      await cp.waitFor(() => cp.dispatchPolls.length > 0 || undefined, 30_000, 'the first dispatch poll (boot recovery over)');
      cp.queueDispatch(MACHINE_ID, {
        rollout_id: ROLLOUT,
        target_closure: TARGET,
        soak_due_at: new Date(Date.now() + SOAK_SECS * 1000).toISOString(),
      });
      // Soaking, topology declared, and every probe run once and passing.
      const expected = Object.keys(declared).length;
      for (let tries = 0; ; tries++) {
        const probes = await probesStatus(adminPort);
        const r = probes.rollouts.find((x) => x.rolloutId === ROLLOUT);
        const passing = probes.runners.filter((x) => x.lastRunResult === 'pass').length;
        if (r?.state === 'Soaking' && r.probesDeclared && probes.runners.length === expected && passing === expected) break;
        if (tries > 300) throw new Error(`${label}: the rollout did not soak with every probe passing: ${JSON.stringify(probes)}`);
        await sleep(100);
      }
      await sleep(warmupSecs * 1000);

      // The window's own /status requests fall outside it: asked before the /proc reads at its start, after them at its end.
      const snapshot = async (statusFirst: boolean): Promise<Snapshot> => {
        const before = statusFirst ? await probesStatus(adminPort) : null;
        const atMs = performance.now();
        const ticks = cpuTicks(pid);
        const switches = contextSwitches(pid).main;
        const runners = (before ?? (await probesStatus(adminPort))).runners;
        return {
          atMs,
          ticks,
          switches,
          runs: runners.reduce((n, x) => n + x.runs, 0),
          failing: runners.filter((x) => x.lastRunResult === 'fail').length,
        };
      };
      const a = await snapshot(true);
      const rss: number[] = [];
      const until = a.atMs + windowSecs * 1000;
      while (performance.now() < until) {
        rss.push(memoryKb(pid).rss);
        await sleep(Math.min(1000, Math.max(0, until - performance.now())));
      }
      const b = await snapshot(false);
      const mem = memoryKb(pid);
      const secs = (b.atMs - a.atMs) / 1000;
      const perMin = (ticks: number): number => (ticks / CLOCK_TICKS_PER_SEC / secs) * 60_000;
      return {
        label,
        secs,
        probeRuns: b.runs - a.runs,
        failingAtEnd: b.failing,
        cpuSelfMsPerMin: perMin(b.ticks.self - a.ticks.self),
        cpuChildrenMsPerMin: perMin(b.ticks.children - a.ticks.children),
        wakeupsPerSec: (b.switches - a.switches) / secs,
        rssEndKb: mem.rss,
        rssMeanKb: rss.reduce((s, x) => s + x, 0) / Math.max(1, rss.length),
        hwmKb: mem.hwm,
      };
    } finally {
      if (agent.exitCode === null && agent.signalCode === null) {
        agent.kill('SIGTERM');
        await new Promise((r) => agent.once('exit', r));
      }
      await cp.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const agentMain = process.argv[2] ?? join(__dirname, '..', '..', 'dist', 'main.js');
  const windowSecs = Number(process.env.PROBES_WINDOW_SECS ?? 60);
  const warmupSecs = Number(process.env.PROBES_WARMUP_SECS ?? 10);
  const mix = mixFrom(process.env.PROBES_MIX);
  const targets = await startTargets();
  try {
    // One after the other, never side by side: each has the machine to itself.
    const none = await measure(agentMain, null, mix, warmupSecs, windowSecs);
    const some = await measure(agentMain, targets, mix, warmupSecs, windowSecs);
    const mib = (kb: number): string => `${(kb / 1024).toFixed(1)} MiB`;
    const ratio = (x: number, y: number): string => (y === 0 ? '' : `${(x / y).toFixed(2)}×`);
    const row = (name: string, x: string, y: string, r = ''): string =>
      `${name.padEnd(44)}${x.padStart(13)}${y.padStart(13)}${r.padStart(9)}`.trimEnd();
    const extraMsPerRun = some.probeRuns === 0 ? 0 : ((some.cpuSelfMsPerMin - none.cpuSelfMsPerMin) * (some.secs / 60)) / some.probeRuns;
    process.stdout.write(
      [
        `${mix.http} http + ${mix.tcp} tcp + ${mix.exec} exec probes every ${INTERVAL_SECS} s vs none; one rollout soaking, --heartbeat-interval 60;`,
        `${warmupSecs} s warm-up, ${none.secs.toFixed(1)} / ${some.secs.toFixed(1)} s windows (${agentMain})`,
        row('', none.label, some.label, 'ratio'),
        row(
          'probe runs',
          `${((none.probeRuns / none.secs) * 60).toFixed(0)} /min`,
          `${((some.probeRuns / some.secs) * 60).toFixed(0)} /min`,
        ),
        row(
          'CPU time, agent process (utime+stime)',
          `${none.cpuSelfMsPerMin.toFixed(0)} ms/min`,
          `${some.cpuSelfMsPerMin.toFixed(0)} ms/min`,
          ratio(some.cpuSelfMsPerMin, none.cpuSelfMsPerMin),
        ),
        row(
          'CPU time, exited children (exec probes)',
          `${none.cpuChildrenMsPerMin.toFixed(0)} ms/min`,
          `${some.cpuChildrenMsPerMin.toFixed(0)} ms/min`,
        ),
        row('added agent CPU per probe run', '', `${extraMsPerRun.toFixed(2)} ms`),
        row(
          'event-loop wake-ups (main thread)',
          `${none.wakeupsPerSec.toFixed(1)} /s`,
          `${some.wakeupsPerSec.toFixed(1)} /s`,
          ratio(some.wakeupsPerSec, none.wakeupsPerSec),
        ),
        row('RSS, mean over the window (VmRSS)', mib(none.rssMeanKb), mib(some.rssMeanKb), ratio(some.rssMeanKb, none.rssMeanKb)),
        row('RSS at the end of the window', mib(none.rssEndKb), mib(some.rssEndKb), ratio(some.rssEndKb, none.rssEndKb)),
        row('peak RSS since start (VmHWM)', mib(none.hwmKb), mib(some.hwmKb), ratio(some.hwmKb, none.hwmKb)),
        ...(some.failingAtEnd > 0 ? [`warning: ${some.failingAtEnd} probe(s) failing at the end of the window`] : []),
      ].join('\n') + '\n',
    );
  } finally {
    await targets.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
