import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort } from '../../dev/free-port';
import { CANONICAL_SUFFIX, type ClientIdentity } from '../../dev/pki';
import type { ReceivedRequest } from '../../dev/control-plane';
import type { JsonLogEntry } from '../../src/logging/agent-logger';
import { getStatus, type Json } from '../support/admin-http';
import { makeWorld, type World } from '../support/agent-harness';
import { liveIdentity, replaceFile } from '../support/cert-files';
import {
  ADMIN_LISTENING,
  killIfRunning,
  logLines,
  type RunningAgent,
  startAdminAgent,
  startAgentStopped,
  worldAgentArgs,
} from '../support/agent-process';
import { EARLY_SIGHUP_LINE } from '../../src/lifecycle/reload-signal';

const DAY_MS = 86_400_000;

describe('signals to the built agent: SIGHUP re-reads the certificates, a repeated stop signal is no failure', () => {
  let world: World;
  let agent: RunningAgent | null = null;
  let seq = 0;

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterEach(async () => {
    world.cp.setDefault('heartbeat', null);
    await killIfRunning(agent);
    agent = null;
  });
  afterAll(async () => {
    await world.close();
  });

  /** The configured cert and key: copies of the test PKI's, in a directory of their own, replaced later. */
  function liveFiles(): ClientIdentity {
    return liveIdentity(world, join(world.dir, `live-${++seq}`));
  }

  // A backend this machine can run (symlink), so the only warnings are the ones a test provokes.
  async function start(identity?: ClientIdentity): Promise<{ agent: RunningAgent; port: number; from: number }> {
    const from = world.cp.heartbeats.length;
    const started = await startAdminAgent(world, { stateDir: join(world.dir, `state-${++seq}`), identity, symlinkActivation: true });
    agent = started.agent;
    return { agent: started.agent, port: started.port, from };
  }

  const since = (from: number): ReceivedRequest[] => world.cp.heartbeats.slice(from);
  const reloadLines = (a: RunningAgent): JsonLogEntry[] => logLines(a).filter((l) => l.context === 'Reload');

  it('on SIGHUP with nothing changed: keeps running (same pid, heartbeats go on) and says the files were re-read, unchanged', async () => {
    const { agent, port, from } = await start();
    await world.cp.waitFor(() => since(from).filter((h) => h.status === 200).length >= 2, 15_000, '2 answered heartbeats');

    agent.child.kill('SIGHUP');
    await agent.waitForOutput(/SIGHUP received; client identity files re-read: unchanged/);
    const after = world.cp.heartbeats.length;
    await world.cp.waitFor(
      () => world.cp.heartbeats.slice(after).filter((h) => h.status === 200).length >= 2,
      15_000,
      '2 heartbeats after SIGHUP',
    );

    expect(agent.child.exitCode).toBeNull();
    expect(agent.child.signalCode).toBeNull();
    expect((await getStatus(port)).pid).toBe(agent.child.pid);
    expect(reloadLines(agent)).toEqual([
      expect.objectContaining({
        level: 'info',
        message: expect.stringMatching(/^SIGHUP received; client identity files re-read: unchanged, still CN "web-01", valid until \d{4}-/),
      }),
    ]);
    expect(logLines(agent).filter((l) => l.level === 'warn' || l.level === 'error')).toEqual([]);
    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
  });

  it('a SIGHUP while it is still starting does not kill it: one line says so, then it starts, and a later SIGHUP reloads as usual', async () => {
    const port = await freePort();
    const stateDir = join(world.dir, `state-${++seq}`);
    mkdirSync(stateDir, { mode: 0o700 });
    const starting = await startAgentStopped(
      worldAgentArgs(world, { stateDir, adminListen: `127.0.0.1:${port}`, symlinkActivation: true }),
    );
    agent = starting;
    const pid = starting.child.pid as number;
    // Start-up proves the state dir writable with `.write-probe-<pid>`; made a FIFO, the agent's
    // open of it waits for a reader (this test). Past that point the handler must be there, and
    // the Nest app is not built yet.
    const probe = join(stateDir, `.write-probe-${pid}`);
    execFileSync('mkfifo', [probe]);
    starting.child.kill('SIGCONT');
    const reader = await open(probe, 'r');
    starting.child.kill('SIGHUP');
    // The agent writes nothing into the probe and closes it: EOF.
    expect((await reader.readFile()).length).toBe(0);
    await reader.close();

    await starting.waitForOutput(ADMIN_LISTENING);
    expect(starting.child.signalCode).toBeNull();
    expect((await getStatus(port)).pid).toBe(pid);
    expect(reloadLines(starting)).toEqual([expect.objectContaining({ level: 'info', message: EARLY_SIGHUP_LINE })]);

    starting.child.kill('SIGHUP');
    await starting.waitForOutput(/SIGHUP received; client identity files re-read: unchanged/);
    expect(reloadLines(starting).map((l) => l.message)).toEqual([
      EARLY_SIGHUP_LINE,
      expect.stringMatching(/^SIGHUP received; client identity files re-read: unchanged/),
    ]);
    expect(logLines(starting).filter((l) => l.level === 'warn' || l.level === 'error')).toEqual([]);
    starting.child.kill('SIGTERM');
    expect(await starting.exited).toBe(0);
  });

  it('on SIGHUP after a rotation on disk: takes the new certificate at once, says so, and later heartbeats present it', async () => {
    const live = liveFiles();
    const { agent, port, from } = await start(live);
    await world.cp.waitFor(() => since(from).filter((h) => h.status === 200).length >= 1, 15_000, 'an answered heartbeat');
    const pid = agent.child.pid;

    // The 2 s poll may, rarely, see the files in the instant between the rename and the
    // signal; then SIGHUP finds them unchanged and proves nothing: rotate again.
    const cn = `agent-${world.pki.machineId}.${CANONICAL_SUFFIX}`;
    let taken: { notAfter: Date; line: JsonLogEntry } | null = null;
    for (let attempt = 1; attempt <= 3 && taken === null; attempt++) {
      // Each attempt's certificate is told apart by its notAfter (whole seconds, as X.509 keeps them).
      const notAfter = new Date(Math.floor((Date.now() + (90 + attempt) * DAY_MS) / 1000) * 1000);
      const renewed = await world.pki.issueClient({ cn, notAfter });
      const before = reloadLines(agent).length;
      replaceFile(live.keyPath, renewed.keyPath);
      replaceFile(live.certPath, renewed.certPath);
      agent.child.kill('SIGHUP');
      await agent.waitForOutput(new RegExp(`(?:[^]*?SIGHUP received;){${before + 1}}`));
      const line = reloadLines(agent)[before];
      if (String(line.message).includes('client identity reloaded')) taken = { notAfter, line };
    }
    if (taken === null) throw new Error(`SIGHUP never found the rotated files unread; output:\n${agent.output()}`);

    expect(taken.line).toMatchObject({ level: 'info' });
    expect(String(taken.line.message)).toMatch(
      new RegExp(
        `^SIGHUP received; client identity reloaded: now CN "${cn.replace(/\./g, '\\.')}", valid until ${taken.notAfter.toISOString().replace(/\./g, '\\.')}, was CN .*; new connections use it`,
      ),
    );
    const status = await getStatus(port);
    expect(status.pid).toBe(pid);
    expect(status.certificate).toMatchObject({ cn, notAfter: taken.notAfter.toISOString(), lastReloadError: null });
    expect((status.certificate as Json).lastReloadAt).toMatch(/^\d{4}-\d{2}-\d{2}T/);
    const at = world.cp.heartbeats.length;
    await world.cp.waitFor(
      () => world.cp.heartbeats.slice(at).some((h) => h.cn === cn && h.status === 200),
      15_000,
      'a heartbeat with the new certificate',
    );
    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
  });

  it('on SIGHUP during a half-done rotation (new cert, old key): refuses in one warning, keeps the old identity, keeps running', async () => {
    const live = liveFiles();
    const { agent, port, from } = await start(live);
    await world.cp.waitFor(() => since(from).filter((h) => h.status === 200).length >= 1, 15_000, 'an answered heartbeat');
    const renewed = await world.pki.issueClient({ cn: `agent-${world.pki.machineId}.${CANONICAL_SUFFIX}` });
    replaceFile(live.certPath, renewed.certPath);
    agent.child.kill('SIGHUP');
    await agent.waitForOutput(
      /SIGHUP received; client identity files cannot be used: [^"]*client\.key \(ec key\) does not belong to the certificate [^"]*; keeping the current identity \(CN \\"web-01\\"/,
    );
    expect(reloadLines(agent).map((l) => l.level)).toEqual(['warn']);

    const status = await getStatus(port);
    expect(status.certificate).toMatchObject({ cn: world.pki.machineId });
    expect(String((status.certificate as Json).lastReloadError)).toMatch(/does not belong to the certificate/);
    const at = world.cp.heartbeats.length;
    await world.cp.waitFor(
      () => world.cp.heartbeats.slice(at).filter((h) => h.status === 200).length >= 1,
      15_000,
      'a heartbeat after the refusal',
    );
    expect(world.cp.heartbeats.slice(at).every((h) => h.cn === world.pki.machineId)).toBe(true);
    expect(agent.child.exitCode).toBeNull();
    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
  });

  it('SIGINT and SIGTERM together (Ctrl-C to a group, plus a supervisor) stop it once, cleanly: exit 0', async () => {
    const { agent, from } = await start();
    await world.cp.waitFor(() => since(from).filter((h) => h.status === 200).length >= 1, 15_000, 'an answered heartbeat');
    agent.child.kill('SIGINT');
    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
    const shutdown = logLines(agent).filter((l) => l.context === 'Shutdown');
    expect(shutdown.map((l) => l.level)).toEqual(['info', 'info', 'info']);
    // Two signals pending at once reach the process in either order; each is named once.
    const first = /^(SIGINT|SIGTERM) received: stopping/.exec(String(shutdown[0].message));
    expect(first).not.toBeNull();
    const second = first![1] === 'SIGINT' ? 'SIGTERM' : 'SIGINT';
    expect(String(shutdown[1].message)).toMatch(new RegExp(`^${second} received while already stopping; still finishing in-flight work`));
    expect(shutdown[2].message).toBe('stopped cleanly');
  });

  it('a third stop signal while a heartbeat holds the stop exits at once with 1, saying it did not finish', async () => {
    const { agent, from } = await start();
    await world.cp.waitFor(() => since(from).filter((h) => h.status === 200).length >= 1, 15_000, 'an answered heartbeat');
    // The next heartbeat is held far past the test: the stop waits on it.
    world.cp.setDefault('heartbeat', { delayMs: 30_000 });
    const at = world.cp.heartbeats.length;
    await world.cp.waitFor(() => world.cp.heartbeats.slice(at).some((h) => h.status === null), 15_000, 'a heartbeat in flight');
    agent.child.kill('SIGTERM');
    await agent.waitForOutput(/SIGTERM received: stopping/);
    agent.child.kill('SIGINT');
    await agent.waitForOutput(/SIGINT received while already stopping/);
    agent.child.kill('SIGINT');
    expect(await agent.exited).toBe(1);
    expect(
      logLines(agent)
        .filter((l) => l.level === 'warn')
        .map((l) => l.message),
    ).toEqual(['SIGINT received a third time while stopping; exiting now without finishing in-flight work']);
  });
});
