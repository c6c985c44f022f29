import { spawnSync } from 'node:child_process';
import { mkdirSync, readlinkSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { getFromAdmin } from '../../src/cli/admin-request';
import { STATUS_EXIT } from '../../src/cli/status.command';
import { adminAt, getStatus, getText, type Json, statusWhen } from '../support/admin-http';
import { runCli } from '../support/agent-cli';
import { fakeClosure, makeWorld, type World } from '../support/agent-harness';
import { killIfRunning, type RunningAgent, startAdminAgent } from '../support/agent-process';
import { until } from '../support/polling';
import { parsePrometheusText } from '../support/prometheus';

async function metric(port: number, name: string): Promise<number> {
  const { text } = await getText(port, '/metrics');
  const family = parsePrometheusText(text).find((f) => f.name === name);
  const value = family?.metrics[0]?.value;
  if (value === undefined) throw new Error(`${name} is not in /metrics`);
  return Number(value);
}

describe('status tells the truth: the built agent, its CLI and the dev CP', () => {
  let world: World;
  let agent: RunningAgent | null = null;

  beforeEach(async () => {
    world = await makeWorld();
  });
  // Runs after the file-system case's own afterEach, so the tmpfs is gone before its dir is removed.
  afterEach(async () => {
    await killIfRunning(agent);
    agent = null;
    await world.close();
  });

  async function start(stateDir: string, heartbeatSecs: number): Promise<{ port: number; admin: string; status: () => Promise<Json> }> {
    const started = await startAdminAgent(world, { stateDir, heartbeatSecs, symlinkActivation: true, readyWhen: null });
    agent = started.agent;
    const { port, admin } = started;
    await statusWhen(started.agent, port, (s) => (s.heartbeat as Json).lastSuccessAt !== null, 'a first answered heartbeat', 20_000);
    return { port, admin, status: () => getStatus(port) };
  }

  describe('on a full file system', () => {
    let mnt: string;

    beforeEach(() => {
      mnt = join(world.dir, 'tiny');
      mkdirSync(mnt);
      const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=128k', 'tmpfs', mnt]);
      if (mounted.status !== 0) throw new Error(`cannot mount a 128 KiB tmpfs at ${mnt} (needs root): ${mounted.stderr.toString()}`);
    });
    afterEach(async () => {
      await killIfRunning(agent);
      spawnSync('umount', [mnt]);
    });

    it('is DEGRADED with the cause and since when while appends fail, everywhere, holds the dispatch it took, and is healthy again with the rollout applied once there is space', async () => {
      const { port, admin, status } = await start(join(mnt, 'state'), 1);
      const running = agent as RunningAgent;
      expect((await runCli(['status', '--admin-listen', admin])).code).toBe(STATUS_EXIT.healthy);

      const filler = join(mnt, 'filler');
      const { bavail, bsize } = statfsSync(mnt);
      writeFileSync(filler, Buffer.alloc(bavail * bsize));
      // The dispatch's DispatchAck is the append that fails.
      world.cp.queueDispatch(world.pki.machineId, {
        rollout_id: 'stable@a1b2c3d4',
        target_closure: fakeClosure('web-01-26.11', 'b'),
        soak_due_at: '2026-11-28T13:00:00.000Z',
      });

      const failing = await until(
        async () => {
          const s = await status();
          return ((s.components as Json).eventLog as Json).state === 'failing' ? s : null;
        },
        20_000,
        'the event log component failing',
        () => running.output(),
      );
      const eventLog = failing.eventLog as Json;
      const since = eventLog.failingSince as string;
      expect(since).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
      expect(eventLog).toMatchObject({
        path: join(mnt, 'state', 'events.log'),
        failuresInStreak: expect.any(Number),
        lastError: { code: 'ENOSPC', cause: expect.stringMatching(/^ENOSPC: no space left on device/) },
        refusingWrites: null,
      });
      expect((failing.components as Json).eventLog).toEqual({
        state: 'failing',
        detail: expect.stringMatching(/^writes to \S+events\.log fail \(\d+ in a row\): ENOSPC: no space left on device/),
        since,
      });
      // The control plane is fine meanwhile: this is about the disk alone.
      expect(((failing.components as Json).heartbeat as Json).state).toBe('ok');
      // The CP hands an order out once: it is held in memory, not dropped.
      const held = await until(
        async () => {
          const s = await status();
          return ((s.dispatch as Json).heldOrder as Json | null) === null ? null : s;
        },
        20_000,
        'the dispatch held',
        () => running.output(),
      );
      expect((held.dispatch as Json).heldOrder).toMatchObject({
        rolloutId: 'stable@a1b2c3d4',
        attempts: expect.any(Number),
        lastError: expect.stringMatching(/ENOSPC/),
      });
      expect((held.components as Json).dispatchPoll).toMatchObject({
        state: 'failing',
        detail: expect.stringMatching(/^the dispatch for stable@a1b2c3d4 is held, not applied/),
      });

      const cli = await runCli(['status', '--admin-listen', admin]);
      expect(cli).toMatchObject({ code: STATUS_EXIT.degraded, stderr: '' });
      expect(cli.stdout).toMatch(/^\S+ \(nixfleet-agent .*\): DEGRADED: event log failing; dispatch poll failing$/m);
      expect(cli.stdout).toContain(`  event log     FAILING since ${since} (`);
      expect(cli.stdout).toMatch(/event log {5}FAILING since .*: writes to \S+ fail \(\d+ in a row\): ENOSPC: no space left on device/);

      expect(await metric(port, 'nixfleet_agent_event_log_append_failures_total')).toBeGreaterThan(0);
      expect(await metric(port, 'nixfleet_agent_event_log_append_failing')).toBe(1);
      expect(await metric(port, 'nixfleet_agent_event_log_last_append_failure_timestamp_seconds')).toBeGreaterThanOrEqual(
        Date.parse(since) / 1000,
      );

      const readyz = await getFromAdmin(adminAt(port), '/readyz');
      expect(readyz.status).toBe(503);
      expect(readyz.body).toMatchObject({
        status: 'event-log-failing',
        reachable: true,
        eventLog: { writable: false, failingSince: since, lastError: expect.stringMatching(/^ENOSPC/) },
      });
      // Liveness stays: a watchdog restart would free no space.
      expect((await getFromAdmin(adminAt(port), '/healthz')).status).toBe(200);

      rmSync(filler);
      const healed = await until(
        async () => {
          const s = await status();
          return ((s.components as Json).eventLog as Json).state === 'ok' ? s : null;
        },
        20_000,
        'the event log component ok again',
        () => running.output(),
      );
      expect(healed.eventLog).toMatchObject({ failingSince: null, failuresInStreak: 0, lastError: { code: 'ENOSPC' } });
      expect((await getFromAdmin(adminAt(port), '/readyz')).status).toBe(200);
      expect(await metric(port, 'nixfleet_agent_event_log_append_failing')).toBe(0);
      // Whichever writes first once there is space, the probe or the held dispatch, clears it.
      expect(running.output()).toMatch(/(a write probe|an append) worked again after \d+ failed write\(s\) since /);

      // The held dispatch is applied with no new order from the CP: acked, switched, and HEALTHY with nothing held.
      await world.cp.waitFor(
        () => world.cp.events(world.pki.machineId, 'stable@a1b2c3d4').some((e) => e.kind === 'ActivationCompleted') || undefined,
        30_000,
        'the held rollout acked and activated',
      );
      expect(world.cp.events(world.pki.machineId, 'stable@a1b2c3d4')[0]).toMatchObject({ seq: 1, kind: 'DispatchAck' });
      expect(readlinkSync(world.currentSystemPath)).toContain(fakeClosure('web-01-26.11', 'b'));
      expect(running.output()).toMatch(/dispatch for stable@a1b2c3d4 applied after \d+ failed attempt\(s\)/);
      const settled = await until(
        async () => {
          const s = await status();
          return (s.dispatch as Json).heldOrder === null && ((s.components as Json).dispatchPoll as Json).state === 'ok' ? s : null;
        },
        10_000,
        'nothing held',
        () => running.output(),
      );
      expect((settled.components as Json).eventLog).toMatchObject({ state: 'ok' });
      const after = await runCli(['status', '--admin-listen', admin]);
      expect(after).toMatchObject({ code: STATUS_EXIT.healthy, stderr: '' });
      expect(after.stdout).toMatch(/: HEALTHY$/m);
      expect(after.stdout).toMatch(/^ {2}event log {5}ok: appends work/m);
    });
  });

  it('says at once that the last heartbeat failed, why and since when, and stays healthy within 3 intervals', async () => {
    // 10 s interval: unreachable only 30 s after the last success, far more than the checks below take.
    const { admin, status } = await start(join(world.dir, 'state-hb'), 10);
    const running = agent as RunningAgent;
    // Every heartbeat fails for the whole check, and Retry-After (the most it honours, an hour)
    // keeps a second try away: the state asked about is one failed attempt, whenever it is asked.
    world.cp.setDefault('heartbeat', { status: 503, retryAfterSecs: 3600, body: { error: 'maintenance' } });
    try {
      const failed = await until(
        async () => {
          const s = await status();
          return (s.heartbeat as Json).consecutiveFailures === 1 ? s : null;
        },
        20_000,
        'a failed heartbeat',
        () => running.output(),
      );
      const heartbeat = failed.heartbeat as Json;
      const since = heartbeat.failingSince as string;
      expect(since).toBe((heartbeat.lastError as Json).at);
      expect((failed.components as Json).heartbeat).toEqual({
        state: 'warning',
        detail: expect.stringMatching(
          /^the last attempt failed: HTTP 503.*maintenance.* \(1 failure\(s\) in a row\); last success \d+ s ago, unreachable after 30 s$/,
        ),
        since,
      });

      const cli = await runCli(['status', '--admin-listen', admin]);
      expect(cli).toMatchObject({ code: STATUS_EXIT.healthy, stderr: '' });
      expect(cli.stdout).toMatch(/: HEALTHY$/m);
      expect(cli.stdout).toMatch(
        new RegExp(
          `control plane \\S+ is reachable, last heartbeat \\d+ s ago; the last attempt FAILED: HTTP 503.*maintenance.* \\(1 failure\\(s\\) in a row, failing since ${since.replace(/\./g, '\\.')} \\(\\d+ s ago\\)\\)`,
        ),
      );
      expect(cli.stdout).toContain(`  heartbeat     WARNING since ${since} (`);
      // Still the one failure: nothing moved while the check ran.
      expect(((await status()).heartbeat as Json).consecutiveFailures).toBe(1);
      expect(world.cp.heartbeats.filter((h) => h.status === 503)).toHaveLength(1);
    } finally {
      world.cp.setDefault('heartbeat', null);
    }
  });
});
