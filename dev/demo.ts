// `npm run demo`: the dev control plane and the real agent on loopback, a rollout through
// them, a control-plane wipe healed by replay, and heartbeats until Ctrl-C.
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { getFromAdmin } from '../src/cli/admin-request';
import { DevControlPlane } from './control-plane';
import { makePki } from './pki';
import { devAgentArgs } from './agent-args';
import { freePort } from './free-port';

const MACHINE_ID = 'web-01';
const ROLLOUT = 'stable@a1b2c3d4';
const CLOSURE = `${'a'.repeat(32)}-nixos-system-${MACHINE_ID}-26.05`;
const NEXT_CLOSURE = `${'b'.repeat(32)}-nixos-system-${MACHINE_ID}-26.11`;

function say(text: string): void {
  process.stdout.write(`[demo] ${text}\n`);
}

type Phase = 'warm-up' | 'rollout' | 'converged' | 'replaying' | 'steady';

interface StatusView {
  uptimeSecs: number;
  heartbeat: { lastSuccessAt: string | null; consecutiveFailures: number; lastReplayFrom: { value: string } | null };
  rollouts: { rolloutId: string; state: string; lastEventSeq: number; lastDeliveredSeq: number | null }[];
  outbound: { pending: number; replay: { running: boolean; fromSeq: number | null; resent: number; missing: number[] } };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string', default: '.demo' },
      for: { type: 'string' },
      'heartbeat-interval': { type: 'string', default: '2' },
    },
  });
  const root = resolve(values.dir ?? '.demo');
  const interval = Number(values['heartbeat-interval'] ?? '2');
  const stopAfterSecs = values.for === undefined ? null : Number(values.for);
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });

  const pki = await makePki(join(root, 'pki'), { machineId: MACHINE_ID });
  // A fake /nix/store: the symlink backend re-points current-system into it.
  const store = join(root, 'store');
  mkdirSync(join(store, CLOSURE), { recursive: true });
  mkdirSync(join(store, NEXT_CLOSURE), { recursive: true });
  const currentSystem = join(root, 'current-system');
  symlinkSync(join(store, CLOSURE), currentSystem);
  const cp = await DevControlPlane.start({ pki, dispatchWaitCapMs: 60_000 });
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
    }),
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

  say(`dev control plane: ${cp.url} (mutual TLS; PKI in ${pki.dir})`);
  say(`agent pid ${agent.pid}, client key: the OpenSSH ed25519 host key ${pki.clientOpensshEd25519.keyPath}`);
  say(`status:  curl -s http://127.0.0.1:${adminPort}/status`);
  say(`         node dist/main.js status --admin-listen 127.0.0.1:${adminPort}`);
  say(`logs:    ${logPath} (JSON lines)`);
  say(stopAfterSecs === null ? 'Ctrl-C stops both.' : `stopping by itself after ${stopAfterSecs} s.`);

  const status = async (): Promise<StatusView | null> => {
    try {
      return (await getFromAdmin(admin, '/status')).body as StatusView;
    } catch {
      return null;
    }
  };

  let phase: Phase = 'warm-up';
  let heartbeatsSeen = 0;
  let eventsSeen = 0;
  let convergedAtBeat = 0;
  let busy = false;
  const step = async (): Promise<void> => {
    for (; heartbeatsSeen < cp.heartbeats.length; heartbeatsSeen++) {
      const hb = cp.heartbeats[heartbeatsSeen];
      const body = hb.body as { current_closure?: string; last_event_seq_by_rollout?: Record<string, number> } | undefined;
      say(
        `CP <- heartbeat #${heartbeatsSeen + 1} (CN ${hb.cn}): closure ${body?.current_closure?.slice(0, 12) ?? '-'}…, seqs ${JSON.stringify(body?.last_event_seq_by_rollout ?? {})} -> ${hb.status ?? 'no answer'}`,
      );
    }
    const stored = cp.events(MACHINE_ID, ROLLOUT);
    for (; eventsSeen < stored.length; eventsSeen++) {
      const e = stored[eventsSeen];
      say(`CP <- event ${e.kind} seq ${e.seq}${phase === 'replaying' ? " (replayed from the agent's log)" : ''}`);
    }
    switch (phase) {
      case 'warm-up':
        if (heartbeatsSeen >= 2) {
          const soak = Math.max(3, interval * 2);
          cp.queueDispatch(MACHINE_ID, {
            rollout_id: ROLLOUT,
            target_closure: NEXT_CLOSURE,
            soak_due_at: new Date(Date.now() + soak * 1000).toISOString(),
          });
          say(`CP queues a dispatch: ${ROLLOUT} -> ${NEXT_CLOSURE.slice(0, 12)}… (soak ${soak} s)`);
          phase = 'rollout';
        }
        return;
      case 'rollout':
        if (stored.some((e) => e.kind === 'Converged')) {
          const s = await status();
          const r = s?.rollouts.find((x) => x.rolloutId === ROLLOUT);
          say(
            `agent /status: ${ROLLOUT} ${r?.state ?? '?'}, last seq ${r?.lastEventSeq ?? '?'}, delivered through ${r?.lastDeliveredSeq ?? '-'}`,
          );
          convergedAtBeat = heartbeatsSeen;
          phase = 'converged';
        }
        return;
      case 'converged':
        if (heartbeatsSeen > convergedAtBeat) {
          cp.loseAllState();
          eventsSeen = 0;
          say('CP loses all state (restarted without its database); the next heartbeat tells it the agent is ahead');
          phase = 'replaying';
        }
        return;
      case 'replaying': {
        if (!stored.some((e) => e.kind === 'Converged')) return;
        const s = await status();
        if (!s || s.outbound.replay.running) return;
        say(
          `replay done: the CP holds seqs ${stored.map((e) => e.seq).join(', ')} again; agent /status replay: from seq ${s.outbound.replay.fromSeq}, ${s.outbound.replay.resent} resent, missing ${JSON.stringify(s.outbound.replay.missing)} (Replay-From: ${s.heartbeat.lastReplayFrom?.value ?? '-'})`,
        );
        say('steady state: heartbeats go on until you stop the demo');
        phase = 'steady';
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
  const stopped = new Promise<string>((res) => {
    const bySignal = (why: string) => (): void => {
      // Handlers stay installed: a second Ctrl-C must not kill the demo and orphan the agent.
      if (stopRequested) {
        say(`${why} again: still waiting for the agent (pid ${agent.pid}) to finish its stop`);
        return;
      }
      stopRequested = true;
      res(why);
    };
    process.on('SIGINT', bySignal('Ctrl-C'));
    process.on('SIGTERM', bySignal('SIGTERM'));
    process.on('SIGHUP', bySignal('terminal closed'));
    if (stopAfterSecs !== null) setTimeout(() => res(`${stopAfterSecs} s elapsed`), stopAfterSecs * 1000).unref();
    void agentExit.then((code) => res(`the agent exited on its own (${code})`));
  });
  const why = await stopped;
  stopRequested = true;
  const ranOn = agent.exitCode === null && agent.signalCode === null;
  say(ranOn ? `stopping (${why}): SIGTERM to the agent` : `stopping (${why})`);
  if (ranOn) agent.kill('SIGTERM');
  const code = await agentExit;
  clearInterval(watcher);
  await cp.close();
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
