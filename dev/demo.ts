// `npm run demo`: the dev control plane and the real agent, on loopback, until Ctrl-C.
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { getFromAdmin } from '../src/cli/admin-request';
import { DevControlPlane } from './control-plane';
import { makePki } from './pki';

const MACHINE_ID = 'web-01';
const CLOSURE = `${'a'.repeat(32)}-nixos-system-${MACHINE_ID}-26.05`;

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => res(port));
    });
  });
}

function say(text: string): void {
  process.stdout.write(`[demo] ${text}\n`);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string', default: '.demo' },
      for: { type: 'string' },
      'heartbeat-interval': { type: 'string', default: '5' },
    },
  });
  const root = resolve(values.dir ?? '.demo');
  const stopAfterSecs = values.for === undefined ? null : Number(values.for);
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });

  const pki = await makePki(join(root, 'pki'), { machineId: MACHINE_ID });
  const currentSystem = join(root, 'current-system');
  symlinkSync(`/nix/store/${CLOSURE}`, currentSystem);
  const cp = await DevControlPlane.start({ pki });
  const adminPort = await freePort();
  const logPath = join(root, 'agent.log');

  const agentMain = join(__dirname, '..', '..', 'dist', 'main.js');
  const args = [
    agentMain,
    '--control-plane-url', cp.url,
    '--machine-id', MACHINE_ID,
    '--ca-cert', pki.caCertPath,
    '--client-cert', pki.clientOpensshEd25519.certPath,
    '--client-key', pki.clientOpensshEd25519.keyPath,
    '--state-dir', join(root, 'state'),
    '--current-system-path', currentSystem,
    '--heartbeat-interval', values['heartbeat-interval'] ?? '5',
    '--admin-listen', `127.0.0.1:${adminPort}`,
    '--log-format', 'json',
  ];
  const log = createWriteStream(logPath);
  const agent: ChildProcess = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  agent.stdout?.pipe(log);
  agent.stderr?.pipe(log);

  say(`dev control plane: ${cp.url} (mutual TLS; PKI in ${pki.dir})`);
  say(`agent pid ${agent.pid}, client key: the OpenSSH ed25519 host key ${pki.clientOpensshEd25519.keyPath}`);
  say(`status:  curl -s http://127.0.0.1:${adminPort}/status`);
  say(`         node dist/main.js status --admin-listen 127.0.0.1:${adminPort}`);
  say(`logs:    ${logPath} (JSON lines)`);
  say(stopAfterSecs === null ? 'Ctrl-C stops both.' : `stopping by itself after ${stopAfterSecs} s.`);

  let seen = 0;
  let statusShown = 0;
  const watcher = setInterval(() => {
    if (seen > statusShown) {
      statusShown = seen;
      getFromAdmin({ kind: 'tcp', host: '127.0.0.1', port: adminPort }, '/status').then(
        ({ body }) => {
          const s = body as { uptimeSecs: number; heartbeat: { lastSuccessAt: string | null; nextDueAt: string | null; consecutiveFailures: number }; rollouts: unknown[] };
          say(
            `agent /status: up ${s.uptimeSecs} s, last heartbeat ok at ${s.heartbeat.lastSuccessAt}, next due ${s.heartbeat.nextDueAt}, ${s.heartbeat.consecutiveFailures} failures, ${s.rollouts.length} rollout(s)`,
          );
        },
        (err: unknown) => say(`agent /status not reachable yet (${(err as Error).message})`),
      );
    }
    for (; seen < cp.heartbeats.length; seen++) {
      const hb = cp.heartbeats[seen];
      const body = hb.body as { current_closure?: string; last_event_seq_by_rollout?: Record<string, number> } | undefined;
      say(
        `CP <- heartbeat #${seen + 1} from ${hb.machineId} (CN ${hb.cn}): closure ${body?.current_closure ?? '-'}, seqs ${JSON.stringify(body?.last_event_seq_by_rollout ?? {})} -> ${hb.status ?? 'no answer'}`,
      );
    }
  }, 200);

  const agentExit = new Promise<number | string>((res) => agent.once('exit', (code, signal) => res(code ?? signal ?? 'unknown')));
  const stopped = new Promise<string>((res) => {
    process.once('SIGINT', () => res('Ctrl-C'));
    process.once('SIGTERM', () => res('SIGTERM'));
    if (stopAfterSecs !== null) setTimeout(() => res(`${stopAfterSecs} s elapsed`), stopAfterSecs * 1000).unref();
    void agentExit.then((code) => res(`the agent exited on its own (${code})`));
  });
  const why = await stopped;
  say(`stopping (${why})`);
  if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGTERM');
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
