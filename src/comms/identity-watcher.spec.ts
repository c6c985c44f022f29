import { copyFileSync, mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { CANONICAL_SUFFIX, type ClientIdentity } from '../../dev/pki';
import { testConfig } from '../../test/support/agent-config';
import { buildAgent, CapturingLogger, makeWorld, type World } from '../../test/support/agent-harness';
import { FakeClock } from '../../test/support/fake-clock';
import { CLOCK } from '../clock/clock';
import { ClockModule } from '../clock/clock.module';
import { loadConfig } from '../config/config.loader';
import { ConfigModule } from '../config/config.module';
import type { HeartbeatRequest } from '../protocol/heartbeat.wire';
import { JobRuntime } from '../jobs/job-runtime.service';
import { HeartbeatExchange } from '../recovery/heartbeat-exchange';
import { AGENT_VERSION } from '../version';
import { CommsModule } from './comms.module';
import { ControlPlaneClient } from './control-plane.client';
import { IdentityWatcher } from './identity-watcher';
import { TLS_RETIRE_NAME, TlsAgentHolder } from './tls-agent.holder';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

describe('IdentityWatcher: certificate reload and expiry, against the dev CP over real mTLS', () => {
  let world: World;
  let seq = 0;
  const open: INestApplication[] = [];

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterEach(async () => {
    world.cp.setDefault('heartbeat', null);
    for (const app of open.splice(0)) await app.close();
  });
  afterAll(async () => {
    await world.close();
  });

  const machineId = (): string => world.pki.machineId;
  const canonicalCn = (): string => `agent-${machineId()}.${CANONICAL_SUFFIX}`;

  /** The agent's configured paths: a copy of `from`, in a directory of their own, replaced later like a renewal job does. */
  function liveFiles(from: ClientIdentity): ClientIdentity {
    const dir = join(world.dir, `live-${++seq}`);
    mkdirSync(dir);
    const live = { certPath: join(dir, 'client.crt'), keyPath: join(dir, 'client.key'), cn: from.cn };
    copyFileSync(from.certPath, live.certPath);
    copyFileSync(from.keyPath, live.keyPath);
    return live;
  }

  /** write tmp + rename: the file at `path` is always whole, and its inode changes. */
  function replaceFile(path: string, text: string): void {
    const tmp = `${path}.tmp-${++seq}`;
    writeFileSync(tmp, text, { mode: 0o600 });
    renameSync(tmp, path);
  }

  function install(live: ClientIdentity, from: ClientIdentity): void {
    replaceFile(live.keyPath, readFileSync(from.keyPath, 'utf8'));
    replaceFile(live.certPath, readFileSync(from.certPath, 'utf8'));
  }

  /** CommsModule alone (no recovery: no skew estimate), with captured logs. */
  async function startComms(identity: ClientIdentity, clock = new FakeClock(new Date())) {
    const config = testConfig({ pki: world.pki, controlPlaneUrl: world.cp.url, stateDir: join(world.dir, 'state'), identity });
    const moduleRef = await Test.createTestingModule({
      imports: [ConfigModule.forRoot(config), ClockModule, CommsModule],
    })
      .overrideProvider(CLOCK)
      .useValue(clock)
      .compile();
    const logs = new CapturingLogger();
    const app = moduleRef.createNestApplication({ logger: logs });
    open.push(app);
    await app.init();
    return {
      app,
      logs,
      clock,
      client: app.get(ControlPlaneClient),
      holder: app.get(TlsAgentHolder),
      watcher: app.get(IdentityWatcher),
      warnings: () => logs.messages('warn', IdentityWatcher.name),
      errors: () => logs.messages('error', IdentityWatcher.name),
    };
  }

  const body = (): HeartbeatRequest => ({
    hostname: machineId(),
    at: new Date().toISOString(),
    agent_version: AGENT_VERSION,
    uptime_secs: 1,
    last_event_seq_by_rollout: {},
  });

  /** One heartbeat; the CN the CP saw on it. */
  async function cnOfNextHeartbeat(client: ControlPlaneClient): Promise<string> {
    const from = world.cp.heartbeats.length;
    const result = await client.heartbeat(body());
    expect(result).toMatchObject({ ok: true });
    return world.cp.heartbeats[from].cn;
  }

  it('takes an atomically replaced cert+key pair: the next request presents the new cert, an in-flight one finishes on the old', async () => {
    const live = liveFiles(world.pki.client);
    const a = await startComms(live);
    expect(await cnOfNextHeartbeat(a.client)).toBe(machineId());

    const from = world.cp.heartbeats.length;
    world.cp.respondNext('heartbeat', { delayMs: 800 });
    const inFlight = a.client.heartbeat(body());
    const slow = await world.cp.waitFor(() => world.cp.heartbeats[from], 5000, 'the slow heartbeat');

    install(live, await world.pki.issueClient({ cn: canonicalCn() }));
    a.watcher.check();
    expect(a.holder.currentIdentity().client?.cn).toBe(canonicalCn());
    expect(a.holder.retiringCount()).toBe(1);

    expect(await cnOfNextHeartbeat(a.client)).toBe(canonicalCn());
    expect(await inFlight).toMatchObject({ ok: true });
    expect(slow).toMatchObject({ cn: machineId(), status: 200 });

    expect(a.watcher.certificateStatus()).toMatchObject({
      cn: canonicalCn(),
      machineId: machineId(),
      validity: 'valid',
      lastReloadAt: a.clock.now().toISOString(),
      lastReloadError: null,
    });
    expect(a.logs.messages('log', IdentityWatcher.name).filter((m) => m.startsWith('client identity reloaded'))).toHaveLength(1);
    expect([...a.warnings(), ...a.errors()]).toEqual([]);
    // The old agent goes once its last call is done (two idle checks in a row). The checks are a job due every
    // 1 s by the agent's clock, switched on while an agent is retiring; the test runs them itself on its fake clock.
    const retireJob = () =>
      a.app
        .get(JobRuntime)
        .status()
        .find((j) => j.name === TLS_RETIRE_NAME);
    expect(retireJob()).toMatchObject({ state: 'scheduled', nextDueAt: new Date(a.clock.now().getTime() + 1_000).toISOString() });
    await world.cp.waitFor(
      () => {
        a.holder.checkRetired();
        return a.holder.retiringCount() === 0;
      },
      5000,
      'the old agent destroyed',
    );
    expect(retireJob()).toMatchObject({ state: 'disabled', nextDueAt: null });
  });

  it('event POSTs, on their own pool, take the renewed identity too; an old POST still in flight keeps its identity retiring', async () => {
    const live = liveFiles(world.pki.client);
    const a = await startComms(live);
    const envelope = (seq: number): string =>
      JSON.stringify({
        hostname: machineId(),
        rolloutId: 'stable@renewaaa',
        event: { kind: 'ActivationStarted', seq, startedAt: '2026-11-28T12:00:01Z', switchMethod: 'switch' },
      });
    const from = world.cp.eventPosts.length;
    world.cp.respondNext('events', { delayMs: 800 });
    const inFlight = a.client.postEvent(envelope(1));
    await world.cp.waitFor(() => world.cp.eventPosts[from], 5000, 'the slow event POST');

    install(live, await world.pki.issueClient({ cn: canonicalCn() }));
    a.watcher.check();
    expect(await a.client.postEvent(envelope(2))).toMatchObject({ ok: true });
    expect(world.cp.eventPosts[from + 1].cn).toBe(canonicalCn());
    // Idle twice in a row is needed, and the old delivery pool is not idle yet.
    a.holder.checkRetired();
    a.holder.checkRetired();
    expect(a.holder.retiringCount()).toBe(1);

    expect(await inFlight).toMatchObject({ ok: true });
    expect(world.cp.eventPosts[from]).toMatchObject({ cn: machineId(), status: 204 });
    await world.cp.waitFor(
      () => {
        a.holder.checkRetired();
        return a.holder.retiringCount() === 0;
      },
      5000,
      'the old pools destroyed',
    );
  });

  it("takes a renewal by itself: the watch on the files' directory sees it, with no poll due and no warning for the pair written one file at a time", async () => {
    const live = liveFiles(world.pki.client);
    const a = await startComms(live);
    const next = await world.pki.issueClient({ cn: canonicalCn() });

    // Key first, then cert: the half-rotated moment lasts less than the quiet time the watcher waits for.
    install(live, next);

    // The fake clock never moves, so the poll is never due: only the watch can run the check.
    await world.cp.waitFor(() => a.holder.currentIdentity().client?.cn === canonicalCn(), 5_000, 'the renewal taken');
    expect(await cnOfNextHeartbeat(a.client)).toBe(canonicalCn());
    expect(a.logs.messages('log', IdentityWatcher.name).filter((m) => m.startsWith('client identity reloaded'))).toHaveLength(1);
    expect([...a.warnings(), ...a.errors()]).toEqual([]);
  });

  it('takes a renewal put in place by swapping a symlinked secrets directory (sops-nix, agenix), and watches the new one after', async () => {
    const dir = join(world.dir, `secrets-${++seq}`);
    const generation = (n: number, from: ClientIdentity): void => {
      mkdirSync(join(dir, `generation-${n}`), { recursive: true });
      copyFileSync(from.certPath, join(dir, `generation-${n}`, 'client.crt'));
      copyFileSync(from.keyPath, join(dir, `generation-${n}`, 'client.key'));
    };
    const swapTo = (n: number): void => {
      symlinkSync(`generation-${n}`, join(dir, 'secrets.tmp'));
      renameSync(join(dir, 'secrets.tmp'), join(dir, 'secrets'));
    };
    generation(1, world.pki.client);
    symlinkSync('generation-1', join(dir, 'secrets'));
    const live = { certPath: join(dir, 'secrets', 'client.crt'), keyPath: join(dir, 'secrets', 'client.key'), cn: machineId() };
    const a = await startComms(live);
    const reloads = (): string[] => a.logs.messages('log', IdentityWatcher.name).filter((m) => m.startsWith('client identity reloaded'));

    generation(2, await world.pki.issueClient({ cn: canonicalCn() }));
    swapTo(2);
    await world.cp.waitFor(() => a.holder.currentIdentity().client?.cn === canonicalCn(), 5_000, 'the swapped-in pair taken');
    expect(await cnOfNextHeartbeat(a.client)).toBe(canonicalCn());

    // The directory the link now points to is the one watched: a renewal written inside it is seen too.
    const third = await world.pki.issueClient({ cn: canonicalCn() });
    install(
      { certPath: join(dir, 'generation-2', 'client.crt'), keyPath: join(dir, 'generation-2', 'client.key'), cn: canonicalCn() },
      third,
    );
    await world.cp.waitFor(() => reloads().length === 2, 5_000, 'the pair renewed inside the new generation taken');
    expect(a.holder.currentIdentity().client?.certPem).toBe(readFileSync(third.certPath, 'utf8'));
    expect([...a.warnings(), ...a.errors()]).toEqual([]);
  });

  it.each([
    [
      'a key that does not belong to the certificate',
      (w: World, live: ClientIdentity) => replaceFile(live.keyPath, readFileSync(w.pki.mismatchedKeyPath, 'utf8')),
      /does not belong to the certificate/,
    ],
    [
      "another machine's certificate and key",
      (w: World, live: ClientIdentity) => install(live, w.pki.otherMachine),
      /CN "db-02" names machine "db-02"/,
    ],
    [
      'a garbage certificate file',
      (_w: World, live: ClientIdentity) => replaceFile(live.certPath, 'garbage\n'),
      /is not a PEM certificate/,
    ],
  ])('refuses %s with one line, keeps the current identity working, and later takes a good pair', async (_name, breakFiles, problem) => {
    const live = liveFiles(world.pki.client);
    const a = await startComms(live);

    breakFiles(world, live);
    a.watcher.check();
    a.watcher.check();
    a.watcher.check();
    const refusals = a.warnings();
    expect(refusals).toHaveLength(1);
    expect(refusals[0]).toMatch(problem);
    expect(refusals[0]).toMatch(
      /^client identity files changed but cannot be used: .*; keeping the current identity \(CN "web-01", valid until /,
    );
    expect(refusals[0]).toContain(live.certPath.replace(/client\.crt$/, ''));
    expect(refusals[0]).not.toContain('\n');
    expect(a.watcher.certificateStatus()).toMatchObject({ cn: machineId(), lastReloadAt: null, lastReloadError: refusals[0] });
    expect(await cnOfNextHeartbeat(a.client)).toBe(machineId());

    install(live, await world.pki.issueClient({ cn: canonicalCn() }));
    a.watcher.check();
    expect(await cnOfNextHeartbeat(a.client)).toBe(canonicalCn());
    expect(a.watcher.certificateStatus()).toMatchObject({ cn: canonicalCn(), lastReloadError: null });
    expect(a.warnings()).toHaveLength(1);
  });

  it('refuses the half-rotated moment (new cert, old key) and takes the pair once the key follows, without a restart', async () => {
    const live = liveFiles(world.pki.client);
    const a = await startComms(live);
    const next = await world.pki.issueClient({ cn: canonicalCn() });

    replaceFile(live.certPath, readFileSync(next.certPath, 'utf8'));
    a.watcher.check();
    a.watcher.check();
    expect(a.warnings()).toHaveLength(1);
    expect(a.warnings()[0]).toMatch(
      new RegExp(`${live.keyPath} \\(ec key\\) does not belong to the certificate ${live.certPath}.*; keeping the current identity`),
    );
    expect(await cnOfNextHeartbeat(a.client)).toBe(machineId());

    replaceFile(live.keyPath, readFileSync(next.keyPath, 'utf8'));
    a.watcher.check();
    expect(await cnOfNextHeartbeat(a.client)).toBe(canonicalCn());
    expect(a.warnings()).toHaveLength(1);
    expect(a.watcher.certificateStatus()?.lastReloadError).toBeNull();
  });

  it('checkNow (SIGHUP) re-reads at once and returns what it found, logging nothing; the poll does not repeat its refusal', async () => {
    const live = liveFiles(world.pki.client);
    const a = await startComms(live);
    const agent = a.holder.current();
    expect(a.watcher.checkNow()).toEqual({ kind: 'unchanged', identity: expect.stringMatching(/^CN "web-01", valid until \d{4}-/) });
    expect(a.holder.current()).toBe(agent);

    const next = await world.pki.issueClient({ cn: canonicalCn() });
    replaceFile(live.certPath, readFileSync(next.certPath, 'utf8'));
    const refused = a.watcher.checkNow();
    expect(refused).toMatchObject({
      kind: 'refused',
      why: expect.stringMatching(/does not belong to the certificate/),
      keeping: expect.stringMatching(/^CN "web-01"/),
    });
    a.watcher.check();
    a.watcher.check();
    expect(a.warnings()).toEqual([]);
    expect(a.watcher.certificateStatus()?.lastReloadError).toMatch(/does not belong to the certificate/);

    replaceFile(live.keyPath, readFileSync(next.keyPath, 'utf8'));
    expect(a.watcher.checkNow()).toEqual({
      kind: 'reloaded',
      now: expect.stringMatching(new RegExp(`^CN "${canonicalCn()}"`)),
      was: expect.stringMatching(/^CN "web-01"/),
    });
    expect(await cnOfNextHeartbeat(a.client)).toBe(canonicalCn());
    expect(a.watcher.certificateStatus()).toMatchObject({
      cn: canonicalCn(),
      lastReloadError: null,
      lastReloadAt: a.clock.now().toISOString(),
    });
    // The poll that follows sees nothing new.
    a.watcher.check();
    expect(a.logs.messages('log', IdentityWatcher.name).filter((m) => m.startsWith('client identity reloaded'))).toEqual([]);
    expect([...a.warnings(), ...a.errors()]).toEqual([]);
  });

  it('leaves an unchanged set alone: a touched file with the same content is no reload', async () => {
    const live = liveFiles(world.pki.client);
    const a = await startComms(live);
    const agent = a.holder.current();
    replaceFile(live.certPath, readFileSync(live.certPath, 'utf8'));
    a.watcher.check();
    expect(a.holder.current()).toBe(agent);
    expect(a.watcher.certificateStatus()?.lastReloadAt).toBeNull();
    expect(a.logs.messages('log', IdentityWatcher.name).filter((m) => m.startsWith('client identity reloaded'))).toEqual([]);
  });

  it('warns of a certificate expiring within 7 days at start, then once a day, and reports days and seconds to expiry', async () => {
    const now = Date.now();
    const soon = await world.pki.issueClient({ cn: machineId(), notAfter: new Date(now + 3 * DAY_MS + HOUR_MS) });
    const a = await startComms(liveFiles(soon), new FakeClock(new Date(now)));

    expect(a.warnings()).toHaveLength(1);
    expect(a.warnings()[0]).toMatch(/^client certificate .*client\.crt \(CN "web-01"\) expires in 3 days, at .*Z; renew it before then/);
    expect(a.watcher.certificateStatus()).toMatchObject({ validity: 'expiring', daysToExpiry: 3 });
    // Certificates carry whole seconds.
    expect(a.watcher.secondsToExpiry()).toBeGreaterThanOrEqual((3 * DAY_MS + HOUR_MS) / 1000 - 1);
    expect(a.watcher.secondsToExpiry()).toBeLessThanOrEqual((3 * DAY_MS + HOUR_MS) / 1000);

    a.clock.advance(23 * HOUR_MS);
    a.watcher.check();
    expect(a.warnings()).toHaveLength(1);
    a.clock.advance(HOUR_MS);
    a.watcher.check();
    expect(a.warnings()).toHaveLength(2);
    expect(a.warnings()[1]).toMatch(/expires in 2 days/);
    a.watcher.check();
    expect(a.warnings()).toHaveLength(2);
  });

  it('starts with an expired certificate and says so plainly; a renewed pair is then taken', async () => {
    const now = Date.now();
    const expired = await world.pki.issueClient({
      cn: machineId(),
      notBefore: new Date(now - 30 * DAY_MS),
      notAfter: new Date(now - DAY_MS - HOUR_MS),
    });
    const live = liveFiles(expired);
    const a = await startComms(live, new FakeClock(new Date(now)));

    expect(a.errors()).toEqual([
      expect.stringMatching(
        /^client certificate .*client\.crt \(CN "web-01"\) expired at .*Z, 1 day ago; the control plane refuses it until renewed files are in place, which the agent takes without a restart$/,
      ),
    ]);
    expect(a.watcher.certificateStatus()).toMatchObject({ validity: 'expired', daysToExpiry: -2 });
    // The CP judges by its clock too: the handshake is refused.
    const refused = await a.client.heartbeat(body());
    expect(refused.ok).toBe(false);

    install(live, await world.pki.issueClient({ cn: canonicalCn() }));
    a.watcher.check();
    expect(a.watcher.certificateStatus()).toMatchObject({ validity: 'valid', cn: canonicalCn() });
    expect(await cnOfNextHeartbeat(a.client)).toBe(canonicalCn());
    expect(a.errors()).toHaveLength(1);
  });

  it('says so plainly when a reload brings an expired certificate', async () => {
    const live = liveFiles(world.pki.client);
    const a = await startComms(live);
    const now = a.clock.now().getTime();
    install(
      live,
      await world.pki.issueClient({ cn: machineId(), notBefore: new Date(now - 30 * DAY_MS), notAfter: new Date(now - 3 * HOUR_MS) }),
    );
    a.watcher.check();
    expect(a.errors()).toEqual([expect.stringMatching(/\(CN "web-01"\) expired at .*Z, 3 hours ago; the control plane refuses it/)]);
  });

  it('names the clock when a not-yet-valid certificate meets a large skew to the control plane', async () => {
    // The host's clock runs 2 h behind; the cert became valid about 1 h ago by the CP's (real) clock.
    const realNow = Date.now();
    const identity = await world.pki.issueClient({ cn: machineId(), notBefore: new Date(realNow - HOUR_MS + 30_000) });
    const agent = await buildAgent(world, { identity, clock: new FakeClock(new Date(realNow - 2 * HOUR_MS)) });
    open.push(agent.app);
    const watcher = agent.app.get(IdentityWatcher);
    const errors = (): string[] => agent.logs.messages('error', IdentityWatcher.name);

    // At start there is no skew estimate yet: the plain statement.
    expect(errors()[0]).toMatch(/\(CN "web-01"\) is not valid until .*Z, in 1 hour; the control plane refuses it until then$/);
    const exchange = agent.app.get(HeartbeatExchange);
    await world.cp.waitFor(() => exchange.clockSkewSecs !== null, 10_000, 'a skew estimate from the boot heartbeat');

    watcher.check();
    expect(errors()).toHaveLength(2);
    expect(errors()[1]).toMatch(
      /is not valid until .*Z, in 1 hour; the control plane refuses it until then; this host's clock may be wrong: the control plane's clock is 72\d\d s ahead$/,
    );
    watcher.check();
    expect(errors()).toHaveLength(2);
    expect(watcher.certificateStatus()).toMatchObject({ validity: 'not-yet-valid' });
  });

  it('warns once at start when no client certificate is configured, rather than saying nothing', async () => {
    const loaded = loadConfig({
      argv: [
        '--control-plane-url',
        world.cp.url,
        '--machine-id',
        machineId(),
        '--ca-cert',
        world.pki.caCertPath,
        '--state-dir',
        join(world.dir, 'state-no-cert'),
      ],
      env: {},
      stdoutIsTty: false,
    });
    if (loaded.kind !== 'run') throw new Error(`config is invalid: ${JSON.stringify(loaded)}`);
    const moduleRef = await Test.createTestingModule({
      imports: [ConfigModule.forRoot(loaded.config), ClockModule, CommsModule],
    }).compile();
    const logs = new CapturingLogger();
    const app = moduleRef.createNestApplication({ logger: logs });
    open.push(app);
    await app.init();
    app.get(IdentityWatcher).check();

    expect(logs.messages('warn', IdentityWatcher.name)).toEqual([
      'no client certificate configured (--client-cert and --client-key): the agent connects to the control plane without one, and a control plane that requires mutual TLS refuses it; /status shows this under components.identity',
    ]);
    expect(app.get(IdentityWatcher).certificateStatus()).toBeNull();
  });
});
