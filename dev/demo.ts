// `npm run demo`: the dev control plane and the real agent on loopback, a healthy rollout through
// them, a control-plane wipe healed by replay, a rollout whose health probe fails and is rolled
// back, and heartbeats until Ctrl-C.
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, get, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { getFromAdmin } from '../src/cli/admin-request';
import type { AgentEvent } from '../src/protocol/events.wire';
import type { RolloutHealth } from '../src/reducer/rollout-health';
import { DevControlPlane, type StoredEvent } from './control-plane';
import { makePki } from './pki';
import { devAgentArgs } from './agent-args';
import { ManifestSigner } from './manifest-signer';
import { freePort } from './free-port';

const MACHINE_ID = 'web-01';
const ROLLOUT = 'stable@a1b2c3d4';
const ROLLOUT_2 = 'stable@e5f6a7b8';
const CLOSURE = `${'a'.repeat(32)}-nixos-system-${MACHINE_ID}-26.05`;
const NEXT_CLOSURE = `${'b'.repeat(32)}-nixos-system-${MACHINE_ID}-26.11`;
/** Rollout 2's closure: the demo's app answers 503 while the host runs it. */
const BROKEN_CLOSURE = `${'c'.repeat(32)}-nixos-system-${MACHINE_ID}-27.05`;
const PROBE = 'app-http';
/** The agent's --probe-failure-threshold: its minimum, so the failing rollout's verdict comes soon. */
const FAILURE_THRESHOLD_SECS = 10;
/** Rollout 1 soaks long enough for its passing probe to be shown while the soak still holds it. */
const SOAK_1_SECS = 8;
const SOAK_2_SECS = 3;
/** Rollout 2's probe is shown once it has failed this long (well inside the threshold). */
const SHOW_FAILING_AFTER_SECS = 3;

function say(text: string): void {
  process.stdout.write(`[demo] ${text}\n`);
}

type Phase = 'warm-up' | 'rollout' | 'converged' | 'replaying' | 'rollout-2' | 'steady';

interface StatusView {
  uptimeSecs: number;
  heartbeat: { lastSuccessAt: string | null; consecutiveFailures: number; lastReplayFrom: { value: string } | null };
  rollouts: { rolloutId: string; state: string; lastEventSeq: number; lastDeliveredSeq: number | null }[];
  outbound: { pending: number; replay: { running: boolean; fromSeq: number | null; resent: number; missing: number[] } };
  probes: { rollouts: RolloutHealth[] };
}

/** The demo's "app": /health answers 200, or 503 while the host runs the broken closure (read from the link each time). */
function startApp(currentSystem: string): Promise<Server> {
  let lastAnswer: number | null = null;
  const app = createServer((req, res) => {
    let running: string;
    try {
      running = basename(readlinkSync(currentSystem));
    } catch {
      running = '(unreadable)';
    }
    const code = req.url === '/health' ? (running === BROKEN_CLOSURE ? 503 : 200) : 404;
    // The demo's own look after the rollback says its answer itself.
    if (req.url === '/health' && req.headers['x-demo'] === undefined && code !== lastAnswer) {
      lastAnswer = code;
      say(`app: GET /health -> ${code} (the host runs ${running.slice(0, 12)}…)`);
    }
    res.writeHead(code, { 'content-type': 'text/plain' }).end(code === 200 ? 'ok\n' : code === 503 ? 'database migration failed\n' : '');
  });
  return new Promise((res, rej) => {
    app.once('error', rej);
    app.listen(0, '127.0.0.1', () => res(app));
  });
}

/** One GET to the app by the demo itself; the status code. */
function getStatus(url: string): Promise<number> {
  return new Promise((res, rej) => {
    get(url, { agent: false, headers: { 'x-demo': '1' } }, (r) => {
      r.resume();
      res(r.statusCode ?? 0);
    }).once('error', rej);
  });
}

/** The agent's one info line per rollout state change (its JSON log on stdout), as they come. */
function onRolloutLogLines(stream: Readable, each: (message: string) => void): void {
  let rest = '';
  stream.on('data', (chunk: Buffer) => {
    const lines = (rest + chunk.toString('utf8')).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) {
      try {
        const entry = JSON.parse(line) as { context?: string; message?: string };
        if (entry.context === 'ReducerService' && entry.message?.startsWith('rollout ')) each(entry.message);
      } catch {
        // Not a log line of ours (a crash's stack, say): the log file keeps it.
      }
    }
  });
}

/** `nixfleet-agent status` as an operator runs it; its rollout, health and warning lines (exit 1, degraded, still prints them). */
function agentStatusLines(agentMain: string, adminPort: number): Promise<string[]> {
  return new Promise((res) => {
    const cli = spawn(process.execPath, [agentMain, 'status', '--admin-listen', `127.0.0.1:${adminPort}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    cli.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    cli.stderr.on('data', (c: Buffer) => (out += c.toString('utf8')));
    cli.once('error', (err) => res([`(status did not run: ${err.message})`]));
    cli.once('close', (_code, signal) => {
      // Ctrl-C reaches the whole foreground group, this command too: it printed nothing worth showing.
      if (signal !== null) return res([]);
      const lines = out.trimEnd().split('\n');
      const from = lines.findIndex((l) => l.startsWith('  rollouts'));
      const to = lines.findIndex((l) => l.startsWith('  outbound'));
      res(from < 0 || to < from ? lines : [lines[0], ...lines.slice(from, to), ...lines.filter((l) => l.startsWith('warning:'))]);
    });
  });
}

/** What an event says, in a few words. */
function eventDetail(e: StoredEvent): string {
  // The CP checked kind and seq only; the agent that sent it is the one this demo runs.
  const ev = e.event as unknown as AgentEvent;
  const short = (closure: string): string => `${closure.slice(0, 12)}…`;
  switch (ev.kind) {
    case 'ProbeTopologyDeclared':
      return `: ${ev.probes.map((p) => `${p.probeName} (${p.mode})`).join(', ') || 'no probes'}`;
    case 'ProbeObservedFirst':
    case 'ProbeFailureFirst':
      return `: ${ev.probeName}`;
    case 'ProbeResult':
      return `: ${ev.probeName} ${ev.status}${ev.failureReason === undefined ? '' : ` (${ev.failureReason})`}`;
    case 'Failed':
      return `: ${ev.failingProbes.join(', ')} failing for ${ev.sustainedDurationSecs} s, policy ${ev.policyApplied}`;
    case 'RollbackComplete':
      return `: back to ${short(ev.revertedToClosure)}, exit code ${ev.exitCode}`;
    case 'Converged':
      return `: running ${short(ev.currentClosure)}`;
    case 'DispatchAck':
    case 'ActivationStarted':
    case 'ActivationCompleted':
    case 'ActivationDeferred':
    case 'ActivationFailed':
      return '';
    default: {
      const never: never = ev;
      return never;
    }
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string', default: '.demo' },
      for: { type: 'string' },
      'until-done': { type: 'boolean', default: false },
      'heartbeat-interval': { type: 'string', default: '2' },
    },
  });
  const root = resolve(values.dir ?? '.demo');
  const interval = Number(values['heartbeat-interval'] ?? '2');
  const stopAfterSecs = values.for === undefined ? null : Number(values.for);
  const untilDone = values['until-done'] === true;
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });

  const pki = await makePki(join(root, 'pki'), { machineId: MACHINE_ID });
  // A fake /nix/store: the symlink backend re-points current-system into it.
  const store = join(root, 'store');
  for (const closure of [CLOSURE, NEXT_CLOSURE, BROKEN_CLOSURE]) mkdirSync(join(store, closure), { recursive: true });
  const currentSystem = join(root, 'current-system');
  symlinkSync(join(store, CLOSURE), currentSystem);
  const app = await startApp(currentSystem);
  const appUrl = `http://127.0.0.1:${(app.address() as AddressInfo).port}/health`;
  // PROTOCOL §10's file, as the fleet would render it for this host.
  const healthChecksFile = join(root, 'health-checks.json');
  writeFileSync(
    healthChecksFile,
    `${JSON.stringify({ [PROBE]: { kind: 'http', url: appUrl, intervalSeconds: 5, timeoutSecs: 2 } }, null, 2)}\n`,
  );
  // The fleet CI in a box: it signs each rollout's manifest; the agent verifies with the trust file (PROTOCOL §12).
  const signer = new ManifestSigner();
  const trustFile = join(root, 'trust.json');
  await signer.writeTrustFile(trustFile);
  const cp = await DevControlPlane.start({ pki, dispatchWaitCapMs: 60_000, signer });
  const adminPort = await freePort();
  const admin = { kind: 'tcp' as const, host: '127.0.0.1', port: adminPort };
  const logPath = join(root, 'agent.log');

  const agentMain = join(__dirname, '..', '..', 'dist', 'main.js');
  const args = [
    agentMain,
    ...devAgentArgs({
      controlPlaneUrl: cp.url,
      machineId: MACHINE_ID,
      pki,
      identity: pki.clientOpensshEd25519,
      stateDir: join(root, 'state'),
      currentSystemPath: currentSystem,
      storeDir: store,
      heartbeatIntervalSecs: interval,
      adminPort,
      healthChecksFile,
      trustFile,
    }),
    '--on-health-failure',
    'rollback-and-halt',
    '--probe-failure-threshold',
    String(FAILURE_THRESHOLD_SECS),
    '--log-format',
    'json',
  ];
  const log = createWriteStream(logPath);
  // Its own process group: Ctrl-C (SIGINT to the terminal's group) and a closed terminal
  // (SIGHUP, which the agent takes as "re-read certificates") reach only the demo, which
  // then stops the agent with one SIGTERM, as systemd would.
  const agent: ChildProcess = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  // Whatever ends the demo, the agent does not outlive it.
  process.once('exit', () => {
    if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGTERM');
  });
  agent.stdout?.pipe(log);
  agent.stderr?.pipe(log);
  if (agent.stdout) onRolloutLogLines(agent.stdout, (message) => say(`agent log: ${message}`));

  say(`dev control plane: ${cp.url} (mutual TLS; PKI in ${pki.dir})`);
  say(`agent pid ${agent.pid}, client key: the OpenSSH ed25519 host key ${pki.clientOpensshEd25519.keyPath}`);
  say(`trust file: ${trustFile}: each dispatch runs only once its manifest verifies with these keys (ed25519 current, P-256 previous)`);
  say(`health checks: ${healthChecksFile}: probe ${PROBE} GETs ${appUrl} (the demo's app) every 5 s`);
  say(
    `  a rollout fails once its probe fails for ${FAILURE_THRESHOLD_SECS} s in a row, and is then rolled back (--on-health-failure rollback-and-halt)`,
  );
  say(`status:  curl -s http://127.0.0.1:${adminPort}/status`);
  say(`         node dist/main.js status --admin-listen 127.0.0.1:${adminPort}`);
  say(`logs:    ${logPath} (JSON lines)`);
  say(
    stopAfterSecs !== null
      ? `stopping by itself after ${stopAfterSecs} s.`
      : untilDone
        ? 'stopping by itself once the story is told.'
        : 'Ctrl-C stops both.',
  );

  const status = async (): Promise<StatusView | null> => {
    try {
      return (await getFromAdmin(admin, '/status')).body as StatusView;
    } catch {
      return null;
    }
  };
  const health = (s: StatusView | null, rolloutId: string): RolloutHealth | undefined =>
    s?.probes?.rollouts.find((r) => r.rolloutId === rolloutId);
  const showStatus = async (): Promise<void> => {
    say(`$ nixfleet-agent status`);
    for (const line of await agentStatusLines(agentMain, adminPort)) say(`| ${line}`);
  };
  const dispatch = (rolloutId: string, closure: string, soakSecs: number): void => {
    cp.queueDispatch(MACHINE_ID, {
      rollout_id: rolloutId,
      target_closure: closure,
      soak_due_at: new Date(Date.now() + soakSecs * 1000).toISOString(),
    });
    say(`CP queues a dispatch: ${rolloutId} -> ${closure.slice(0, 12)}… (soak ${soakSecs} s)`);
  };

  let finish: (why: string) => void = () => undefined;
  const stopped = new Promise<string>((res) => {
    finish = res;
  });

  let phase: Phase = 'warm-up';
  let heartbeatsSeen = 0;
  // Per rollout: a wipe empties the CP, and a replay refills one rollout at a time.
  const eventsSeen = new Map<string, number>();
  let convergedAtBeat = 0;
  let shownSoaking = false;
  let shownFailing = false;
  let busy = false;
  const step = async (): Promise<void> => {
    for (; heartbeatsSeen < cp.heartbeats.length; heartbeatsSeen++) {
      const hb = cp.heartbeats[heartbeatsSeen];
      const body = hb.body as { current_closure?: string; last_event_seq_by_rollout?: Record<string, number> } | undefined;
      say(
        `CP <- heartbeat #${heartbeatsSeen + 1} (CN ${hb.cn}): closure ${body?.current_closure?.slice(0, 12) ?? '-'}…, seqs ${JSON.stringify(body?.last_event_seq_by_rollout ?? {})} -> ${hb.status ?? 'no answer'}`,
      );
    }
    const stored = (rolloutId: string): StoredEvent[] => cp.events(MACHINE_ID, rolloutId);
    for (const rolloutId of [ROLLOUT, ROLLOUT_2]) {
      const events = stored(rolloutId);
      for (let i = eventsSeen.get(rolloutId) ?? 0; i < events.length; i++) {
        const e = events[i];
        say(
          `CP <- event ${e.kind} seq ${e.seq} of ${rolloutId}${eventDetail(e)}${phase === 'replaying' ? " (replayed from the agent's log)" : ''}`,
        );
      }
      eventsSeen.set(rolloutId, events.length);
    }
    switch (phase) {
      case 'warm-up':
        if (heartbeatsSeen >= 2) {
          dispatch(ROLLOUT, NEXT_CLOSURE, SOAK_1_SECS);
          phase = 'rollout';
        }
        return;
      case 'rollout': {
        if (stored(ROLLOUT).some((e) => e.kind === 'Converged')) {
          const s = await status();
          const r = s?.rollouts.find((x) => x.rolloutId === ROLLOUT);
          say(
            `agent /status: ${ROLLOUT} ${r?.state ?? '?'}, last seq ${r?.lastEventSeq ?? '?'}, delivered through ${r?.lastDeliveredSeq ?? '-'}`,
          );
          convergedAtBeat = heartbeatsSeen;
          phase = 'converged';
          return;
        }
        if (shownSoaking) return;
        const h = health(await status(), ROLLOUT);
        if (h?.state !== 'Soaking' || !h.probes.some((p) => p.name === PROBE && p.lastResult === 'pass')) return;
        shownSoaking = true;
        say(`${ROLLOUT} soaks on the new closure and its probe passes; it converges once the soak is over:`);
        await showStatus();
        return;
      }
      case 'converged':
        if (heartbeatsSeen > convergedAtBeat) {
          cp.loseAllState();
          eventsSeen.clear();
          say('CP loses all state (restarted without its database); the next heartbeat tells it the agent is ahead');
          phase = 'replaying';
        }
        return;
      case 'replaying': {
        const held = stored(ROLLOUT);
        if (!held.some((e) => e.kind === 'Converged')) return;
        const s = await status();
        if (!s || s.outbound.replay.running) return;
        say(
          `replay done: the CP holds seqs ${held.map((e) => e.seq).join(', ')} again; agent /status replay: from seq ${s.outbound.replay.fromSeq}, ${s.outbound.replay.resent} resent, missing ${JSON.stringify(s.outbound.replay.missing)} (Replay-From: ${s.heartbeat.lastReplayFrom?.value ?? '-'})`,
        );
        say(`next: ${BROKEN_CLOSURE.slice(0, 12)}…, a closure that breaks the app (its /health answers 503 while the host runs it)`);
        dispatch(ROLLOUT_2, BROKEN_CLOSURE, SOAK_2_SECS);
        phase = 'rollout-2';
        return;
      }
      case 'rollout-2': {
        const s = await status();
        const h = health(s, ROLLOUT_2);
        const probe = h?.probes.find((p) => p.name === PROBE);
        if (!shownFailing && h?.state === 'Soaking' && (probe?.failingForSecs ?? 0) >= SHOW_FAILING_AFTER_SECS) {
          shownFailing = true;
          say(`${ROLLOUT_2}: ${h.soakRemainingSecs === 0 ? 'its soak is over, but ' : ''}the probe fails, so it does not converge:`);
          await showStatus();
          return;
        }
        if (h?.state !== 'Reverted' || !stored(ROLLOUT_2).some((e) => e.kind === 'RollbackComplete')) return;
        const link = basename(readlinkSync(currentSystem));
        say(
          `${ROLLOUT_2} failed after ${FAILURE_THRESHOLD_SECS} s of failing probe and was rolled back: current-system -> ${link.slice(0, 12)}…${link === NEXT_CLOSURE ? `, ${ROLLOUT}'s closure` : ' (NOT the closure from before the dispatch)'}`,
        );
        await showStatus();
        say(`the app on the closure rolled back to: GET /health -> ${await getStatus(appUrl)}`);
        say('steady state: heartbeats go on until you stop the demo');
        phase = 'steady';
        if (untilDone) finish('the story is told');
        return;
      }
      case 'steady':
        return;
      default: {
        const never: never = phase;
        return never;
      }
    }
  };
  const watcher = setInterval(() => {
    if (busy) return;
    busy = true;
    step()
      .catch((err: unknown) => say(`demo step failed: ${(err as Error).message}`))
      .finally(() => {
        busy = false;
      });
  }, 200);

  const agentExit = new Promise<number | string>((res) => agent.once('exit', (code, signal) => res(code ?? signal ?? 'unknown')));
  let stopRequested = false;
  const bySignal = (why: string) => (): void => {
    // Handlers stay installed: a second Ctrl-C must not kill the demo and orphan the agent.
    if (stopRequested) {
      say(`${why} again: still waiting for the agent (pid ${agent.pid}) to finish its stop`);
      return;
    }
    stopRequested = true;
    finish(why);
  };
  process.on('SIGINT', bySignal('Ctrl-C'));
  process.on('SIGTERM', bySignal('SIGTERM'));
  process.on('SIGHUP', bySignal('terminal closed'));
  if (stopAfterSecs !== null) setTimeout(() => finish(`${stopAfterSecs} s elapsed`), stopAfterSecs * 1000).unref();
  void agentExit.then((code) => finish(`the agent exited on its own (${code})`));

  const why = await stopped;
  stopRequested = true;
  const ranOn = agent.exitCode === null && agent.signalCode === null;
  say(ranOn ? `stopping (${why}): SIGTERM to the agent` : `stopping (${why})`);
  if (ranOn) agent.kill('SIGTERM');
  const code = await agentExit;
  clearInterval(watcher);
  await cp.close();
  // The agent is gone, so are its keep-alive connections; whatever is left is cut.
  app.closeAllConnections();
  await new Promise<void>((res) => app.close(() => res()));
  log.end();
  say(`agent exited with ${code}; dev control plane closed`);
  return code === 0 ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`[demo] failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
