import { readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { EVENTS_EXIT, type EventLine } from '../src/cli/events.command';
import { type Json, statusWhen } from './support/admin-http';
import { runCli } from './support/agent-cli';
import { fakeClosure, makeWorld, type World } from './support/agent-harness';
import { HEARTBEAT_STARTED, killIfRunning, type RunningAgent, startAdminAgent } from './support/agent-process';

const ROLLOUT = 'stable@a1b2c3d4';
const TARGET = fakeClosure('web-01-26.11', 'b');
const KINDS = ['DispatchAck', 'ActivationStarted', 'ActivationCompleted', 'ProbeTopologyDeclared', 'Converged'];

/** `events --json` parsed: one object per line. */
function jsonLines(stdout: string): EventLine[] {
  return stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as EventLine);
}

describe('nixfleet-agent events: the built CLI reads the built agent’s log, while it runs and after it stopped', () => {
  let world: World;
  let agent: RunningAgent | null = null;
  let port: number;
  let stateDir: string;
  let logFile: string;

  const rollout = (s: Json): Json | undefined => (s.rollouts as Json[]).find((r) => r.rolloutId === ROLLOUT);

  beforeAll(async () => {
    world = await makeWorld({ dispatchWaitCapMs: 60_000 });
    stateDir = join(world.dir, 'state');
    logFile = join(stateDir, 'events.log');
    // The CP is down for events: everything the rollout logs stays pending.
    world.cp.setDefault('events', { status: 503, retryAfterSecs: 1 });
    ({ agent, port } = await startAdminAgent(world, { stateDir, symlinkActivation: true, readyWhen: HEARTBEAT_STARTED }));
  });
  afterAll(async () => {
    await killIfRunning(agent);
    await world.close();
  });

  it('during a rollout while the CP answers events with 503: every logged event listed as pending, in seq order', async () => {
    world.cp.queueDispatch(world.pki.machineId, {
      rollout_id: ROLLOUT,
      target_closure: TARGET,
      soak_due_at: new Date(Date.now() + 2_000).toISOString(),
    });
    await statusWhen(agent!, port, (s) => rollout(s)?.state === 'Converged', 'the rollout Converged', 20_000);
    expect(readlinkSync(world.currentSystemPath)).toBe(join(world.storeDir, TARGET));
    expect(world.cp.events(world.pki.machineId, ROLLOUT)).toEqual([]);

    const text = await runCli(['events', '--state-dir', stateDir]);
    const pending = await runCli(['events', '--state-dir', stateDir, '--pending', '--json']);

    expect(text).toMatchObject({ code: EVENTS_EXIT.ok, stderr: '' });
    const lines = text.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ROLLOUT {10}SEQ {2}KIND {19}LOGGED AT {17}DELIVERY$/);
    KINDS.forEach((kind, i) => {
      expect(lines[i + 1]).toMatch(new RegExp(`^${ROLLOUT} {4}${i + 1} {2}${kind} +\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z {2}pending$`));
    });
    expect(lines.slice(6)).toEqual([
      '',
      expect.stringMatching(new RegExp(`^5 event\\(s\\) in ${logFile} \\(\\d+ bytes\\): 5 pending, 0 delivered, 0 refused$`)),
    ]);
    expect(pending.code).toBe(EVENTS_EXIT.ok);
    expect(jsonLines(pending.stdout).map((e) => [e.rolloutId, e.seq, e.kind, e.delivery])).toEqual(
      KINDS.map((kind, i) => [ROLLOUT, i + 1, kind, { state: 'pending' }]),
    );
  });

  it('after the CP is back and refused one event with 422: that one REFUSED with the status, the rest delivered, none pending', async () => {
    // The next POST (seq 1: one in flight per rollout, in seq order) is refused as invalid; the rest are taken.
    world.cp.respondNext('events', { status: 422, body: { error: 'invalid event' } });
    world.cp.setDefault('events', null);
    await statusWhen(
      agent!,
      port,
      (s) => (s.outbound as Json).pending === 0 && rollout(s)?.lastDeliveredSeq === 5,
      'every event answered',
      20_000,
    );

    const all = await runCli(['events', '--state-dir', stateDir, '--json']);
    const text = await runCli(['events', '--state-dir', stateDir, '--rollout', ROLLOUT]);
    const pending = await runCli(['events', '--state-dir', stateDir, '--pending']);

    expect(all.code).toBe(EVENTS_EXIT.ok);
    const events = jsonLines(all.stdout);
    expect(events.map((e) => [e.seq, e.delivery.state, 'status' in e.delivery ? e.delivery.status : null])).toEqual([
      [1, 'refused', 422],
      [2, 'delivered', 204],
      [3, 'delivered', 204],
      [4, 'delivered', 204],
      [5, 'delivered', 204],
    ]);
    expect(events[0].delivery).toMatchObject({ reason: expect.stringContaining('422') });
    expect(events[0].event).toMatchObject({ kind: 'DispatchAck', seq: 1 });
    expect(world.cp.events(world.pki.machineId, ROLLOUT).map((e) => e.seq)).toEqual([2, 3, 4, 5]);
    expect(text.stdout).toMatch(new RegExp(`^${ROLLOUT} {4}1 {2}DispatchAck +\\S+ {2}REFUSED \\(HTTP 422\\) \\S+: .*422`, 'm'));
    expect(text.stdout).toMatch(new RegExp(`^${ROLLOUT} {4}5 {2}Converged +\\S+ {2}delivered \\(HTTP 204\\) \\S+$`, 'm'));
    expect(text.stdout).toContain('5 event(s) in');
    expect(text.stdout).toContain('0 pending, 4 delivered, 1 refused');
    expect(pending).toMatchObject({ code: EVENTS_EXIT.ok, stderr: '' });
    expect(pending.stdout.split('\n')[0]).toBe(`no pending events in ${logFile}`);
  });

  it('after the agent stopped: the same listing from the file, which the reads never changed', async () => {
    const running = jsonLines((await runCli(['events', '--state-dir', stateDir, '--json'])).stdout);
    agent!.child.kill('SIGTERM');
    expect(await agent!.exited).toBe(0);
    agent = null;
    const bytes = readFileSync(logFile);

    const stopped = await runCli(['events', '--state-dir', stateDir, '--json']);
    const unknown = await runCli(['events', '--state-dir', stateDir, '--rollout', 'canary@ffffffff']);

    expect(stopped).toMatchObject({ code: EVENTS_EXIT.ok, stderr: '' });
    expect(jsonLines(stopped.stdout)).toEqual(running);
    expect(unknown.code).toBe(EVENTS_EXIT.ok);
    expect(unknown.stdout.split('\n')[0]).toBe(`no events of rollout canary@ffffffff in ${logFile}; the log knows ${ROLLOUT}`);
    expect(readFileSync(logFile)).toEqual(bytes);
  });

  it('exits 1 with one line naming the path and the errno where there is no log, and 2 with one line for a bad flag', async () => {
    const missing = join(world.dir, 'no-state');

    const unreadable = await runCli(['events', '--state-dir', missing]);
    const badFlag = await runCli(['events', '--state-dir', stateDir, '--rollout']);

    expect(unreadable).toMatchObject({ code: 1, stdout: '' });
    expect(unreadable.stderr.trimEnd().split('\n')).toEqual([
      expect.stringMatching(new RegExp(`^nixfleet-agent events: cannot read ${missing}/events.log \\(ENOENT, no such file\\); `)),
    ]);
    expect(badFlag).toMatchObject({ code: 2, stdout: '' });
    expect(badFlag.stderr.trimEnd().split('\n')).toEqual(['config error: --rollout needs a value (see --help)']);
  });
});
