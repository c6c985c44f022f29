import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { getFromAdmin } from '../../src/cli/admin-request';
import { NOT_STARTED } from '../../src/config/config.messages';
import { freePort } from '../../dev/free-port';
import { adminAt } from '../support/admin-http';
import { fakeClosure, makeWorld, type World } from '../support/agent-harness';
import { HEARTBEAT_STARTED, killIfRunning, type RunningAgent, startAgent, worldAgentArgs } from '../support/agent-process';
import { seqsWithTwoBodies } from '../support/cp-record';
import { eventually } from '../support/polling';

// Faults of the state dir, with the built agent as real child processes
// against the dev control plane: one agent per dir, a kill -9 and a restart,
// a dir the agent cannot write.

const ROLLOUT = 'stable@a1b2c3d4';
const TARGET = fakeClosure('web-01-26.11', 'b');
const WHERE = '--state-dir (env NIXFLEET_AGENT_STATE_DIR, file key "stateDir")';

type Status = {
  pid: number;
  rollouts: { rolloutId: string; state: string; lastEventSeq: number; lastDeliveredSeq: number | null }[];
  outbound: { pending: number };
};

interface LoggedRecord {
  t: string;
  rolloutId: string;
  seq: number;
  kind?: string;
  envelope?: string;
}

/** Every record of `<stateDir>/events.log`; each line must be whole (`<crc32> <json>\n`). */
function logRecords(stateDir: string): LoggedRecord[] {
  const text = readFileSync(join(stateDir, 'events.log'), 'utf8');
  expect(text === '' || text.endsWith('\n')).toBe(true);
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      expect(l).toMatch(/^[0-9a-f]{8} \{.*\}$/);
      return JSON.parse(l.slice(9)) as LoggedRecord;
    });
}

/** `seq:kind` of every event in the log, in file order. */
function loggedEvents(stateDir: string): string[] {
  return logRecords(stateDir)
    .filter((r) => r.t === 'event' && r.rolloutId === ROLLOUT)
    .map((r) => `${r.seq}:${r.kind}`);
}

/** The agent's stderr alone (startAgent interleaves both streams). */
function stderrOf(agent: RunningAgent): () => string {
  let text = '';
  agent.child.stderr?.on('data', (c: Buffer) => (text += c.toString('utf8')));
  return () => text;
}

function stdoutOf(agent: RunningAgent): () => string {
  let text = '';
  agent.child.stdout?.on('data', (c: Buffer) => (text += c.toString('utf8')));
  return () => text;
}

describe('faults: the state dir (one agent per dir, kill -9, unwritable)', () => {
  let world: World;
  const agents: RunningAgent[] = [];

  beforeEach(async () => {
    world = await makeWorld({ dispatchWaitCapMs: 60_000 });
  });
  afterEach(async () => {
    for (const a of agents.splice(0)) await killIfRunning(a);
    await world.close();
  });

  function spawnAgent(stateDir: string, adminPort: number): RunningAgent {
    const agent = startAgent(worldAgentArgs(world, { stateDir, adminListen: `127.0.0.1:${adminPort}`, symlinkActivation: true }));
    agents.push(agent);
    return agent;
  }

  async function launch(stateDir: string, adminPort: number): Promise<RunningAgent> {
    const agent = spawnAgent(stateDir, adminPort);
    await agent.waitForOutput(HEARTBEAT_STARTED);
    return agent;
  }

  async function status(port: number): Promise<Status> {
    return (await getFromAdmin(adminAt(port), '/status')).body as Status;
  }

  const kinds = (): string[] => world.cp.events(world.pki.machineId, ROLLOUT).map((e) => `${e.seq}:${e.kind}`);

  function dispatch(soakMs: number): void {
    world.cp.queueDispatch(world.pki.machineId, {
      rollout_id: ROLLOUT,
      target_closure: TARGET,
      soak_due_at: new Date(Date.now() + soakMs).toISOString(),
    });
  }

  /** Waits for `n` more heartbeats answered 200 from now on. */
  async function heartbeats(n: number, what: string): Promise<void> {
    const from = world.cp.heartbeats.length;
    await world.cp.waitFor(() => world.cp.heartbeats.slice(from).filter((h) => h.status === 200).length >= n || undefined, 10_000, what);
  }

  it('a second agent on the same dir exits 2 with one line naming the dir and the pid that holds it; the first goes on, its log intact', async () => {
    const stateDir = join(world.dir, 'state');
    const port = await freePort();
    const first = await launch(stateDir, port);
    dispatch(1_000);
    await world.cp.waitFor(() => kinds().includes('5:Converged') || undefined, 20_000, 'Converged at seq 5');
    await eventually(async () => (await status(port)).rollouts[0]?.lastDeliveredSeq === 5, 5_000, 'seq 5 delivered');
    const logBefore = readFileSync(join(stateDir, 'events.log'));

    const second = spawnAgent(stateDir, await freePort());
    const stderr = stderrOf(second);
    const stdout = stdoutOf(second);
    expect(await second.exited).toBe(2);
    expect(stderr()).toBe(
      `config error: ${WHERE}: ${stateDir} is in use by another agent, pid ${first.child.pid}, which holds ${join(stateDir, 'lock')}; this agent did not start: stop that one first, or give this one a state dir of its own\n`,
    );
    // Nothing started: no log line, not one byte of the event log touched.
    expect(stdout()).toBe('');
    expect(readFileSync(join(stateDir, 'events.log'))).toEqual(logBefore);
    expect(readFileSync(join(stateDir, 'lock'), 'utf8')).toBe(`${first.child.pid}\n`);

    await heartbeats(2, 'two more heartbeats of the first agent');
    const after = await status(port);
    expect(after.pid).toBe(first.child.pid);
    expect(after.rollouts).toEqual([
      expect.objectContaining({ rolloutId: ROLLOUT, state: 'Converged', lastEventSeq: 5, lastDeliveredSeq: 5 }),
    ]);

    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    expect(loggedEvents(stateDir)).toEqual([
      '1:DispatchAck',
      '2:ActivationStarted',
      '3:ActivationCompleted',
      '4:ProbeTopologyDeclared',
      '5:Converged',
    ]);
  });

  it('of two agents started at the same moment on one dir, exactly one runs; the other names its pid and exits 2', async () => {
    const stateDir = join(world.dir, 'state');
    const ports = [await freePort(), await freePort()];
    const pair = ports.map((p) => spawnAgent(stateDir, p));
    const stderrs = pair.map(stderrOf);
    const loserIndex = await Promise.race(pair.map((a, i) => a.exited.then(() => i)));
    const loser = pair[loserIndex];
    const winner = pair[1 - loserIndex];

    expect(await loser.exited).toBe(2);
    expect(stderrs[loserIndex]()).toBe(
      `config error: ${WHERE}: ${stateDir} is in use by another agent, pid ${winner.child.pid}, which holds ${join(stateDir, 'lock')}; this agent did not start: stop that one first, or give this one a state dir of its own\n`,
    );
    await winner.waitForOutput(/"heartbeat every 1 s/);
    await heartbeats(2, 'two heartbeats of the agent that runs');
    expect((await status(ports[1 - loserIndex])).pid).toBe(winner.child.pid);
    expect(winner.child.exitCode).toBeNull();

    winner.child.kill('SIGTERM');
    expect(await winner.exited).toBe(0);
  });

  it('kill -9, then a restart at once on the same dir: it starts and heartbeats, every logged event is still there, no seq is reused', async () => {
    const stateDir = join(world.dir, 'state');
    const port = await freePort();
    // Events stay pending: they exist only in the agent's log when it dies.
    world.cp.setDefault('events', { status: 503, retryAfterSecs: 1 });
    const killed = await launch(stateDir, port);
    dispatch(3_000);
    await eventually(async () => (await status(port)).outbound.pending >= 4, 15_000, 'four events pending');
    const logged = logRecords(stateDir).filter((r) => r.t === 'event');
    expect(logged.map((r) => `${r.seq}:${r.kind}`)).toEqual([
      '1:DispatchAck',
      '2:ActivationStarted',
      '3:ActivationCompleted',
      '4:ProbeTopologyDeclared',
    ]);

    killed.child.kill('SIGKILL');
    expect(await killed.exited).toBe('SIGKILL');
    // The dead agent's lock file stays behind, naming it; the kernel dropped its lock.
    expect(readFileSync(join(stateDir, 'lock'), 'utf8')).toBe(`${killed.child.pid}\n`);
    expect(world.cp.events(world.pki.machineId, ROLLOUT)).toEqual([]);

    world.cp.setDefault('events', null);
    const restarted = await launch(stateDir, port);
    expect(restarted.output()).not.toContain('in use by');
    expect(readFileSync(join(stateDir, 'lock'), 'utf8')).toBe(`${restarted.child.pid}\n`);
    await heartbeats(1, 'a heartbeat after the restart');

    await world.cp.waitFor(() => kinds().includes('5:Converged') || undefined, 20_000, 'Converged after the restart');
    expect(kinds()).toEqual(['1:DispatchAck', '2:ActivationStarted', '3:ActivationCompleted', '4:ProbeTopologyDeclared', '5:Converged']);
    // The events logged before the kill went out byte for byte as logged.
    const stored = world.cp.events(world.pki.machineId, ROLLOUT);
    expect(stored.slice(0, 4).map((e) => e.raw)).toEqual(logged.map((r) => r.envelope));
    // No seq was ever posted with two different bodies.
    expect(seqsWithTwoBodies(world.cp)).toEqual([]);

    restarted.child.kill('SIGTERM');
    expect(await restarted.exited).toBe(0);
    // One record per seq in the log, too.
    expect(loggedEvents(stateDir)).toEqual([
      '1:DispatchAck',
      '2:ActivationStarted',
      '3:ActivationCompleted',
      '4:ProbeTopologyDeclared',
      '5:Converged',
    ]);
  });

  /** Starts an agent expected to refuse: exit 2, nothing on stdout, no contact with the CP. */
  async function refused(stateDir: string): Promise<string[]> {
    const requestsBefore = world.cp.requests.length;
    const agent = spawnAgent(stateDir, await freePort());
    const stderr = stderrOf(agent);
    const stdout = stdoutOf(agent);
    expect(await agent.exited).toBe(2);
    expect(stdout()).toBe('');
    expect(world.cp.requests.length).toBe(requestsBefore);
    const lines = stderr().split('\n');
    expect(lines.pop()).toBe('');
    return lines;
  }

  it('a state dir below a regular file: exit 2, one line naming the dir and the setting, nothing started', async () => {
    writeFileSync(join(world.dir, 'afile'), 'not a directory');
    const stateDir = join(world.dir, 'afile', 'state');
    expect(await refused(stateDir)).toEqual([
      `config error: ${WHERE}: cannot create ${stateDir}: a part of the path is not a directory`,
      NOT_STARTED,
    ]);
  });

  // Root (the project's machines and CI) ignores file modes; a read-only mount stops it for real.
  describe('on a read-only file system (a tmpfs remounted ro, root only)', () => {
    let mnt: string;
    beforeEach(() => {
      mnt = join(world.dir, 'ro');
      mkdirSync(mnt);
      const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt]);
      if (mounted.status !== 0) throw new Error(`cannot mount a tmpfs at ${mnt} (needs root): ${mounted.stderr.toString()}`);
      mkdirSync(join(mnt, 'state'), { mode: 0o700 });
      const ro = spawnSync('mount', ['-o', 'remount,ro', mnt]);
      if (ro.status !== 0) throw new Error(`cannot remount ${mnt} read-only: ${ro.stderr.toString()}`);
    });
    afterEach(() => {
      spawnSync('umount', [mnt]);
    });

    it('an existing state dir there: exit 2, one line saying it is not writable and why, nothing started', async () => {
      const stateDir = join(mnt, 'state');
      expect(await refused(stateDir)).toEqual([`config error: ${WHERE}: ${stateDir} is not writable: read-only file system`, NOT_STARTED]);
      expect(existsSync(join(stateDir, 'events.log'))).toBe(false);
    });

    it('a state dir to create there: exit 2, one line with the real cause, nothing started', async () => {
      const stateDir = join(mnt, 'var', 'state');
      expect(await refused(stateDir)).toEqual([
        `config error: ${WHERE}: cannot create ${stateDir} (at ${join(mnt, 'var')}): read-only file system`,
        NOT_STARTED,
      ]);
    });
  });
});
