import { join } from 'node:path';
import type { ReceivedRequest } from '../dev/control-plane';
import { CANONICAL_SUFFIX } from '../dev/pki';
import { type Json, statusWhen } from './support/admin-http';
import { makeWorld, type World } from './support/agent-harness';
import { liveIdentity, replaceFile } from './support/cert-files';
import { killIfRunning, logLines, type RunningAgent, startAdminAgent } from './support/agent-process';

const DAY_MS = 86_400_000;
const HOLD_MS = 3_000;

describe('certificate rotation under load, with the built agent as a child process', () => {
  let world: World;
  let agent: RunningAgent | null = null;

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

  it('takes renewed files while heartbeats flow: new CN on later heartbeats, none failed, same pid, new notAfter on /status', async () => {
    const machineId = world.pki.machineId;
    const canonical = `agent-${machineId}.${CANONICAL_SUFFIX}`;
    const live = liveIdentity(world, join(world.dir, 'live'));
    // A notAfter unlike the first cert's (365 days), whole seconds as X.509 keeps them.
    const renewedNotAfter = new Date(Math.floor((Date.now() + 90 * DAY_MS) / 1000) * 1000);
    const renewed = await world.pki.issueClient({ cn: canonical, notAfter: renewedNotAfter });

    const from = world.cp.heartbeats.length;
    // Each heartbeat is held longer than a poll period (2 s): one received
    // just before the key is replaced is still in flight when the swap happens.
    world.cp.setDefault('heartbeat', { delayMs: HOLD_MS });
    const started = await startAdminAgent(world, { stateDir: join(world.dir, 'state'), identity: live, readyWhen: null });
    agent = started.agent;
    const { port } = started;
    const pid = agent.child.pid;
    const since = (): ReceivedRequest[] => world.cp.heartbeats.slice(from);

    await world.cp.waitFor(() => since().filter((h) => h.status === 200).length >= 2, 15_000, '2 answered heartbeats');
    const before = await statusWhen(agent, port, (b) => b.certificate !== undefined, 'a certificate block');
    expect(before.pid).toBe(pid);
    expect(before.certificate).toMatchObject({ cn: machineId, machineId, validity: 'valid', lastReloadAt: null, lastReloadError: null });
    const firstNotAfter = (before.certificate as Json).notAfter;

    // The half-rotated moment, long enough for a poll to see it: refused, heartbeats go on with the old cert.
    replaceFile(live.certPath, renewed.certPath);
    await agent.waitForOutput(
      /client identity files changed but cannot be used: [^"]*client\.key \(ec key\) does not belong to the certificate/,
      10_000,
    );
    const halfAt = world.cp.heartbeats.length;
    await world.cp.waitFor(
      () => world.cp.heartbeats.slice(halfAt).some((h) => h.status === 200),
      10_000,
      'a heartbeat during the half-rotated moment',
    );
    expect(world.cp.heartbeats.slice(halfAt).every((h) => h.cn === machineId)).toBe(true);

    const nextAt = world.cp.heartbeats.length;
    const held = await world.cp.waitFor(
      () => world.cp.heartbeats.slice(nextAt).find((h) => h.status === null),
      10_000,
      'a heartbeat in flight',
    );
    replaceFile(live.keyPath, renewed.keyPath);
    await agent.waitForOutput(/client identity reloaded: now CN \\"agent-web-01\.fleet\.test\\"/, 10_000);
    // Still unanswered when the new identity took over: the old agent's call finishes.
    expect(held.status).toBeNull();
    await world.cp.waitFor(() => held.status !== null, 10_000, 'the held heartbeat answered');
    expect(held).toMatchObject({ cn: machineId, status: 200 });
    await world.cp.waitFor(
      () => since().filter((h) => h.cn === canonical && h.status === 200).length >= 2,
      15_000,
      '2 heartbeats with the new cert',
    );

    const beats = since();
    const firstNew = beats.findIndex((h) => h.cn === canonical);
    // Once the new cert is presented, the old one never is again.
    expect(beats.slice(firstNew).every((h) => h.cn === canonical)).toBe(true);
    expect(beats.slice(0, firstNew).every((h) => h.cn === machineId)).toBe(true);
    // No heartbeat failed: every one the CP got was answered 200 (the last may still be held).
    expect(
      beats
        .slice(0, -1)
        .map((h) => h.status)
        .filter((s) => s !== 200),
    ).toEqual([]);
    expect(world.cp.tlsRejections).toEqual([]);

    const after = await statusWhen(agent, port, (b) => (b.certificate as Json).cn === canonical, 'the renewed certificate');
    expect(after.pid).toBe(pid);
    expect(after.heartbeat).toMatchObject({ consecutiveFailures: 0, lastError: null });
    expect(after.certificate).toMatchObject({
      cn: canonical,
      machineId,
      notAfter: renewedNotAfter.toISOString(),
      validity: 'valid',
      daysToExpiry: 89,
      lastReloadError: null,
    });
    expect((after.certificate as Json).notAfter).not.toBe(firstNotAfter);
    expect((after.certificate as Json).lastReloadAt).toMatch(/^\d{4}-\d{2}-\d{2}T/);
    expect(JSON.stringify(after)).not.toMatch(/PRIVATE KEY|BEGIN CERTIFICATE/);

    // The only warning is the refused half-rotated moment; no heartbeat warned of a failure.
    // Besides the start-up preflight's (this host has no nix-env for the default nixos backend).
    const warnings = logLines(agent).filter((l) => (l.level === 'warn' || l.level === 'error') && l.context !== 'ActivationPreflight');
    expect(warnings.map((l) => l.context)).toEqual(['IdentityWatcher']);
    expect(agent.child.exitCode).toBeNull();

    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
  }, 60_000);
});
