import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { ManifestVariant } from '../dev/control-plane';
import { ManifestSigner } from '../dev/manifest-signer';
import type { JsonLogEntry } from '../src/logging/agent-logger';
import { ROLLOUTS_DIR } from '../src/trust/manifest-cache';
import type { RefusalReason } from '../src/trust/refusal';
import { runCli } from './support/agent-cli';
import { dispatch, FULL_ROLLOUT, gapsSecs, heldKinds } from './support/cp-record';
import {
  fakeClosure,
  type FaultAgent,
  type Json,
  killAllFaultAgents,
  makeFaultWorld,
  startFaultAgent,
  type World,
} from './support/fault-world';
import { eventually } from './support/polling';
import { Scrape } from './support/prometheus';

// Issue 12, "Verify before acting": the built agent as a child process, the
// dev CP over mTLS serving manifests its signer signed, the symlink backend.
// One world for the file: the trust file names the signer's current (ed25519)
// and previous (P-256) keys and a rejectBefore two hours back, so a stale
// manifest (3661 s old) is after it and one signed before it is stale too,
// but refused for rejectBefore, the check that comes first. Each test runs
// its own agent on its own state dir and rollout ids.

const OLD = fakeClosure('web-01-26.05');
const TARGET = fakeClosure('web-01-26.11', 'b');
const P = 'nixfleet_agent_';
const REJECT_BEFORE = new Date(Date.now() - 2 * 3600_000);

describe('trust: the built agent acts on a dispatch only once its signed manifest verifies (PROTOCOL §12)', () => {
  let world: World;

  beforeAll(async () => {
    world = await makeFaultWorld({ signer: new ManifestSigner({ rejectBefore: REJECT_BEFORE }) });
  }, 60_000);
  afterAll(async () => {
    await killAllFaultAgents();
    await world.close();
  });
  beforeEach(() => world.setCurrentSystem(OLD));
  afterEach(async () => {
    await killAllFaultAgents();
    // An order no agent took would be handed to the next test's agent.
    expect(world.cp.queuedDispatches(world.pki.machineId)).toBe(0);
  });

  const stateDirOf = (name: string): string => join(world.dir, `state-${name}`);
  const start = (name: string, extra: string[] = []): Promise<FaultAgent> => startFaultAgent(world, { stateDir: stateDirOf(name), extra });
  const linkTarget = (): string => basename(readlinkSync(world.currentSystemPath));
  const scrape = async (agent: FaultAgent): Promise<Scrape> => new Scrape(await agent.metricsText());
  const fetchesOf = (rolloutId: string) => ({
    manifest: world.cp.manifestFetches.filter((r) => r.rolloutId === rolloutId).length,
    signature: world.cp.signatureFetches.filter((r) => r.rolloutId === rolloutId).length,
  });
  /** Every events POST that named the rollout, whatever the CP did with it. */
  const postsFor = (rolloutId: string) =>
    world.cp.eventPosts.filter((p) => (p.body as { rolloutId?: string } | undefined)?.rolloutId === rolloutId);
  const warningsAbout = (agent: FaultAgent, rolloutId: string): JsonLogEntry[] =>
    agent.logs().filter((l) => (l.level === 'warn' || l.level === 'error') && l.message.includes(rolloutId));
  const waitHeld = (rolloutId: string, kind: string, what: string, timeoutMs = 20_000): Promise<true> =>
    world.cp.waitFor(() => heldKinds(world, rolloutId).some((k) => k.endsWith(`:${kind}`)) || undefined, timeoutMs, what);

  it('a manifest signed by the current key: DispatchAck, the link moves, /status trust names it verified from the control plane', async () => {
    const rollout = 'signed@current';
    const agent = await start('current');

    dispatch(world, rollout, TARGET);
    await waitHeld(rollout, 'Converged', 'the rollout converged');

    expect(heldKinds(world, rollout)).toEqual(FULL_ROLLOUT);
    expect(linkTarget()).toBe(TARGET);
    expect(fetchesOf(rollout)).toEqual({ manifest: 1, signature: 1 });
    const status = await agent.status();
    expect(status.trust).toEqual({
      mode: 'verify',
      trustFile: world.trustFile,
      warning: null,
      keys: { current: 'ed25519', previous: 'ecdsa-p256', rejectBefore: REJECT_BEFORE.toISOString() },
      lastVerified: {
        rolloutId: rollout,
        targetClosure: TARGET,
        keySlot: 'current',
        signedAt: expect.any(String) as string,
        verifiedAt: expect.any(String) as string,
        from: 'control-plane',
      },
      lastFailure: null,
      refusedTotal: 0,
      unverifiedTotal: 0,
    });
    expect((status.dispatch as Json).lastOrder).toMatchObject({ rolloutId: rollout, outcome: 'accepted', detail: null });
    const metrics = await scrape(agent);
    expect(metrics.value(`${P}dispatch_trust_checks_total`, { verdict: 'verified' })).toBe(1);
    expect(metrics.value(`${P}dispatch_trust_checks_total`, { verdict: 'refused' })).toBe(0);
    // The pair is kept as served, for a restart to verify again without the CP.
    const cached = join(stateDirOf('current'), ROLLOUTS_DIR, rollout);
    const served = world.cp.manifest(rollout);
    expect(readFileSync(`${cached}.json`)).toEqual(served?.bytes);
    expect(readFileSync(`${cached}.sig`)).toEqual(served?.signature);
    expect(warningsAbout(agent, rollout)).toEqual([]);
  });

  it('a manifest signed by the previous key is accepted, and /status and the status command say which key', async () => {
    const rollout = 'signed@previous';
    world.cp.setManifest(rollout, 'previous-key');
    const agent = await start('previous');

    dispatch(world, rollout, TARGET);
    await waitHeld(rollout, 'ActivationCompleted', 'the activation completed');

    expect(heldKinds(world, rollout).slice(0, 3)).toEqual(FULL_ROLLOUT.slice(0, 3));
    expect(linkTarget()).toBe(TARGET);
    const trust = (await agent.status()).trust as Json;
    expect(trust.lastVerified).toMatchObject({ rolloutId: rollout, keySlot: 'previous', from: 'control-plane' });
    expect(trust.lastFailure).toBeNull();
    expect(agent.logs().filter((l) => l.message.includes(`${rollout} → ${TARGET} verified with the PREVIOUS key`))).toHaveLength(1);
    const cli = await runCli(['status', '--admin-listen', `127.0.0.1:${agent.port}`]);
    expect(cli.stdout).toMatch(
      new RegExp(
        `^ {2}trust {9}verifying with ${world.trustFile} \\(current ed25519, previous ecdsa-p256\\); last verified ${rollout} \\(with the previous key\\) at `,
        'm',
      ),
    );
  });

  /**
   * The tampered cache is planted before the dispatch arrives: a genuine
   * signature beside a manifest changed after signing, in the file the
   * verifier reads first. The CP serves a good manifest all along, so only the
   * cache can be why it is refused; that offer is not rescued by a fetch. (A
   * cache tampered after a verified dispatch is the restart case below.)
   */
  const REFUSALS: { check: string; variant: ManifestVariant | 'tampered-cache'; reason: RefusalReason }[] = [
    { check: 'a signature that does not match the bytes served', variant: 'tampered', reason: 'bad-signature' },
    { check: 'a manifest for another host', variant: 'other-host', reason: 'not-for-this-host' },
    { check: 'a manifest moving this host to a different closure', variant: 'wrong-target', reason: 'wrong-target' },
    { check: 'a stale manifest', variant: 'stale', reason: 'stale' },
    { check: 'a manifest signed before rejectBefore', variant: 'before-reject-before', reason: 'signed-before-reject-before' },
    { check: 'a manifest signed by a key the trust file does not name', variant: 'unknown-key', reason: 'bad-signature' },
    { check: 'a tampered cache file', variant: 'tampered-cache', reason: 'cache-tampered' },
  ];

  it.each(REFUSALS)(
    '$check: refused ($reason) in /status and metrics with one warning; no DispatchAck, no event, nothing switched',
    async ({ variant, reason }) => {
      const rollout = `refused@${variant}`;
      const stateDir = stateDirOf(variant);
      if (variant === 'tampered-cache') {
        plantTamperedCache(stateDir, rollout);
      } else {
        world.cp.setManifest(rollout, variant);
      }
      const agent = await start(variant);

      dispatch(world, rollout, TARGET);
      const status = await agent.statusWhen(
        (s) => ((s.dispatch as Json).lastOrder as Json | null)?.outcome === 'refused',
        'the dispatch refused',
      );

      expect((status.dispatch as Json).lastOrder).toMatchObject({
        rolloutId: rollout,
        targetClosure: TARGET,
        outcome: 'refused',
        detail: expect.stringMatching(new RegExp(`^${reason}: `)) as string,
      });
      expect(status.trust).toMatchObject({
        lastVerified: null,
        lastFailure: { rolloutId: rollout, targetClosure: TARGET, reason, during: 'dispatch' },
        refusedTotal: 1,
      });
      // The reducer never had it: no rollout, no event logged to send.
      expect(status.rollouts).toEqual([]);
      expect((status.outbound as Json).pending).toBe(0);
      const metrics = await scrape(agent);
      expect(metrics.value(`${P}dispatch_refusals_total`, { reason })).toBe(1);
      expect(metrics.value(`${P}dispatch_trust_checks_total`, { verdict: 'refused' })).toBe(1);
      expect(metrics.value(`${P}dispatch_trust_checks_total`, { verdict: 'verified' })).toBe(0);
      // Logged before /status changed, but read from another pipe: it may arrive a moment later.
      await eventually(() => warningsAbout(agent, rollout).length > 0, 5_000, 'the refusal warning');
      expect(warningsAbout(agent, rollout).map((l) => l.message)).toEqual([
        expect.stringMatching(
          new RegExp(`^dispatch ${rollout} → ${TARGET} REFUSED \\(${reason}\\): .*; not acknowledged, nothing switched`),
        ),
      ]);
      if (variant === 'tampered-cache') {
        // Judged from the file alone, then moved aside for inspection: the next offer is fetched afresh.
        expect(fetchesOf(rollout).manifest).toBe(0);
        expect(readdirSync(join(stateDir, ROLLOUTS_DIR)).sort()).toEqual([
          expect.stringMatching(new RegExp(`^${rollout}\\.json\\.refused-`)),
          expect.stringMatching(new RegExp(`^${rollout}\\.sig\\.refused-`)),
        ]);
      } else {
        expect(fetchesOf(rollout).manifest).toBe(1);
      }

      // Nothing went to the CP for it, up to a clean stop, and the host was not moved.
      expect(await agent.stop()).toBe(0);
      expect(postsFor(rollout)).toEqual([]);
      expect(linkTarget()).toBe(OLD);
    },
  );

  /** Before the agent starts: `<state-dir>/rollouts/<id>.json` changed after signing, its genuine signature beside it. */
  function plantTamperedCache(stateDir: string, rolloutId: string): void {
    const signed = world.signer.sign({
      rolloutId,
      hosts: [{ hostname: world.pki.machineId, targetClosure: TARGET }],
      signedAt: new Date(),
    });
    const tampered = world.signer.tampered(signed);
    const dir = join(stateDir, ROLLOUTS_DIR);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, `${rolloutId}.json`), tampered.bytes);
    writeFileSync(join(dir, `${rolloutId}.sig`), tampered.signature);
  }

  it('does not hammer the CP: a refused dispatch offered again on every poll is taken again after 5 s, then 10 s', async () => {
    const rollout = 'refused@again';
    world.cp.setManifest(rollout, 'tampered');
    const agent = await start('again');

    // A CP offering the order it never got an ack for on every poll.
    for (let i = 0; i < 3; i++) dispatch(world, rollout, TARGET);
    await world.cp.waitFor(() => fetchesOf(rollout).manifest === 3 || undefined, 30_000, 'the third offer fetched');
    // The fetch is seen at the CP a moment before the agent has judged and logged it.
    await agent.statusWhen((s) => (s.trust as Json).refusedTotal === 3, 'the third offer refused');

    const fetches = world.cp.manifestFetches.filter((r) => r.rolloutId === rollout);
    const [first, second] = gapsSecs(fetches);
    // The pause, not a slower machine: well short of the next doubling.
    expect(first).toBeGreaterThanOrEqual(5);
    expect(first).toBeLessThan(9);
    expect(second).toBeGreaterThanOrEqual(10);
    expect(second).toBeLessThan(18);
    // One poll per pause: the one that took the next offer.
    const pollsBetween = world.cp.dispatchPolls.filter((p) => p.receivedAt > fetches[0].receivedAt && p.receivedAt < fetches[2].receivedAt);
    expect(pollsBetween).toHaveLength(2);
    // The third refusal is said once its signature is fetched too, a few ms after the manifest fetch seen above.
    await world.cp.waitFor(() => warningsAbout(agent, rollout).length >= 3 || undefined, 5_000, 'the third refusal logged');
    expect(warningsAbout(agent, rollout)).toHaveLength(3);
    expect(((await agent.status()).trust as Json).refusedTotal).toBe(3);
    expect((await scrape(agent)).value(`${P}dispatch_refusals_total`, { reason: 'bad-signature' })).toBe(3);
    expect(postsFor(rollout)).toEqual([]);
    expect(linkTarget()).toBe(OLD);
  });

  it('a cached pair refused and moved aside does not wedge the rollout: the next offer is fetched afresh, verified and acted on', async () => {
    const rollout = 'refused@then-fetched';
    const stateDir = stateDirOf('then-fetched');
    plantTamperedCache(stateDir, rollout);
    const agent = await start('then-fetched');

    // The CP offering the order again, as it does one it never got an ack for.
    dispatch(world, rollout, TARGET);
    dispatch(world, rollout, TARGET);
    await waitHeld(rollout, 'ActivationCompleted', 'the second offer activated', 30_000);

    expect(linkTarget()).toBe(TARGET);
    expect(heldKinds(world, rollout).slice(0, 3)).toEqual(FULL_ROLLOUT.slice(0, 3));
    expect(fetchesOf(rollout)).toEqual({ manifest: 1, signature: 1 });
    const trust = (await agent.status()).trust as Json;
    expect(trust.lastFailure).toMatchObject({ rolloutId: rollout, reason: 'cache-tampered' });
    expect(trust.lastVerified).toMatchObject({ rolloutId: rollout, from: 'control-plane' });
    // The verified pair in place, the refused one kept beside it for inspection.
    const files = readdirSync(join(stateDir, ROLLOUTS_DIR)).sort();
    expect(files).toEqual([
      `${rollout}.json`,
      expect.stringMatching(new RegExp(`^${rollout}\\.json\\.refused-`)),
      `${rollout}.sig`,
      expect.stringMatching(new RegExp(`^${rollout}\\.sig\\.refused-`)),
    ]);
  });

  it('tries a manifest route that fails for a moment again (503, then served: verified); a 404 is final (refused, fetched once)', async () => {
    const agent = await start('flaky');
    world.cp.respondNext('manifest', { status: 503 });
    dispatch(world, 'flaky@once', TARGET);
    await waitHeld('flaky@once', 'ActivationCompleted', 'the activation completed');
    expect(fetchesOf('flaky@once')).toEqual({ manifest: 2, signature: 1 });
    expect(warningsAbout(agent, 'flaky@once')).toEqual([]);

    world.cp.setManifest('flaky@gone', 'missing');
    dispatch(world, 'flaky@gone', TARGET);
    const status = await agent.statusWhen((s) => ((s.trust as Json).lastFailure as Json | null)?.rolloutId === 'flaky@gone', 'the refusal');
    expect((status.trust as Json).lastFailure).toMatchObject({
      reason: 'manifest-unavailable',
      detail: expect.stringContaining('the control plane did not serve the manifest (HTTP 404') as string,
    });
    expect(fetchesOf('flaky@gone')).toEqual({ manifest: 1, signature: 0 });
  });

  it('--allow-unsigned without a trust file: said at start, in /status and the status command, and on every dispatch acted on', async () => {
    const absent = join(world.dir, 'no-trust.json');
    const agent = await start('unsigned', ['--trust-file', absent, '--allow-unsigned']);
    const warning = `UNVERIFIED: no trust file at ${absent} and --allow-unsigned is set, so dispatches are acted on without checking the fleet CI's signature`;

    expect(agent.problems().filter((m) => m.includes('UNVERIFIED'))).toEqual([
      `${warning}; install the fleet's trust file and restart to verify them`,
    ]);
    expect((await agent.status()).trust).toMatchObject({ mode: 'unsigned', trustFile: absent, warning, keys: null });
    const cli = await runCli(['status', '--admin-listen', `127.0.0.1:${agent.port}`]);
    expect(cli.stdout).toContain(`  trust         UNVERIFIED: no trust file at ${absent} (--allow-unsigned)\n`);
    expect(cli.stdout.split('\n')).toContain(`warning: ${warning}`);

    const second = fakeClosure('web-01-26.11', 'c');
    dispatch(world, 'unsigned@one', TARGET);
    await waitHeld('unsigned@one', 'Converged', 'the first rollout converged');
    expect(linkTarget()).toBe(TARGET);
    dispatch(world, 'unsigned@two', second);
    await waitHeld('unsigned@two', 'ActivationCompleted', 'the second activation completed');
    expect(linkTarget()).toBe(second);

    expect(heldKinds(world, 'unsigned@one')).toEqual(FULL_ROLLOUT);
    for (const [rollout, target] of [
      ['unsigned@one', TARGET],
      ['unsigned@two', second],
    ]) {
      expect(warningsAbout(agent, rollout).map((l) => l.message)).toEqual([`dispatch ${rollout} → ${target} acted on ${warning}`]);
      expect(fetchesOf(rollout)).toEqual({ manifest: 0, signature: 0 });
    }
    expect((await agent.status()).trust).toMatchObject({ unverifiedTotal: 2, lastVerified: null, lastFailure: null });
    expect((await scrape(agent)).value(`${P}dispatch_trust_checks_total`, { verdict: 'unverified' })).toBe(2);
  });

  describe('a restart mid-activation verifies the cached pair again before activating', () => {
    let script: string;

    beforeAll(() => {
      // The command backend activates only what is in the store.
      mkdirSync(join(world.storeDir, TARGET), { recursive: true });
      // Records its process group, waits for the gate file, then re-points the link as the symlink backend does.
      script = join(world.dir, 'gated-activation');
      writeFileSync(
        script,
        [
          '#!/bin/sh',
          'echo $$ > "$2"',
          'while [ ! -e "$1" ]; do sleep 0.05; done',
          `ln -sfn "$3" "${world.currentSystemPath}.tmp" && mv -T "${world.currentSystemPath}.tmp" "${world.currentSystemPath}"`,
          '',
        ].join('\n'),
        { mode: 0o755 },
      );
    });

    /**
     * A dispatch verified and cached, its activation started and held at the
     * gate, then SIGKILL; the orphaned activation is ended too, and the gate
     * opened: from here any activation switches at once.
     */
    async function interrupted(name: string, rollout: string): Promise<string[]> {
      const gate = join(world.dir, `${name}.gate`);
      const pidFile = join(world.dir, `${name}.pid`);
      const backend = ['--activation-backend', 'command', '--activation-command', JSON.stringify([script, gate, pidFile, '{closure}'])];
      const agent = await start(name, backend);
      dispatch(world, rollout, TARGET);
      await waitHeld(rollout, 'ActivationStarted', 'ActivationStarted');
      await eventually(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').endsWith('\n'), 10_000, 'the activation command running');
      expect(await agent.kill()).toBe('SIGKILL');
      // The command runs in its own process group, which outlives the agent.
      process.kill(-Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
      expect(heldKinds(world, rollout)).toEqual(['1:DispatchAck', '2:ActivationStarted']);
      expect(fetchesOf(rollout)).toEqual({ manifest: 1, signature: 1 });
      writeFileSync(gate, '');
      expect(linkTarget()).toBe(OLD);
      return backend;
    }

    it('resumes when the cached pair verifies, without asking the CP for it', async () => {
      const rollout = 'resumed@verified';
      const backend = await interrupted('resume-ok', rollout);

      const agent = await start('resume-ok', backend);
      await waitHeld(rollout, 'Converged', 'Converged after the restart');

      expect(linkTarget()).toBe(TARGET);
      // The activation runs again from the start, once.
      expect(heldKinds(world, rollout)).toEqual([
        '1:DispatchAck',
        '2:ActivationStarted',
        '3:ActivationStarted',
        '4:ActivationCompleted',
        '5:ProbeTopologyDeclared',
        '6:Converged',
      ]);
      expect(fetchesOf(rollout)).toEqual({ manifest: 1, signature: 1 });
      expect(((await agent.status()).trust as Json).lastVerified).toMatchObject({
        rolloutId: rollout,
        targetClosure: TARGET,
        from: 'cache',
      });
      expect((await scrape(agent)).value(`${P}dispatch_trust_checks_total`, { verdict: 'verified' })).toBe(1);
      expect(warningsAbout(agent, rollout).map((l) => l.message)).toEqual([
        expect.stringMatching(new RegExp(`^${rollout} was Activating when the agent stopped, .*: activating again$`)),
      ]);
    });

    it('with the cached manifest tampered: not switched, and reported ActivationFailed with exit code -2', async () => {
      const rollout = 'resumed@tampered';
      const backend = await interrupted('resume-tampered', rollout);
      // Pointed at another closure: what an attacker with the state dir would do.
      const cached = join(stateDirOf('resume-tampered'), ROLLOUTS_DIR, `${rollout}.json`);
      const evil = fakeClosure('web-01-evil', 'e');
      writeFileSync(cached, readFileSync(cached, 'utf8').replace(TARGET, evil));

      const agent = await start('resume-tampered', backend);
      await waitHeld(rollout, 'ActivationFailed', 'ActivationFailed after the restart');

      const failed = world.cp.events(world.pki.machineId, rollout).find((e) => e.kind === 'ActivationFailed')?.event;
      expect(failed).toMatchObject({
        exitCode: -2,
        stderrTail: expect.stringContaining(
          "not activated again after a restart: the rollout's signed manifest was refused (cache-tampered:",
        ) as string,
      });
      const status = await agent.statusWhen((s) => (s.trust as Json).lastFailure !== null, 'the refusal in /status');
      expect(status.trust).toMatchObject({
        lastVerified: null,
        lastFailure: { rolloutId: rollout, targetClosure: TARGET, reason: 'cache-tampered', during: 'resume' },
        refusedTotal: 1,
      });
      expect((await scrape(agent)).value(`${P}dispatch_refusals_total`, { reason: 'cache-tampered' })).toBe(1);
      expect(
        warningsAbout(agent, rollout)
          .filter((l) => l.message.includes('REFUSED'))
          .map((l) => l.message),
      ).toEqual([
        expect.stringMatching(new RegExp(`^dispatch ${rollout} → ${TARGET} REFUSED \\(cache-tampered\\): .*; not activated again`)),
      ]);
      const cli = await runCli(['status', '--admin-listen', `127.0.0.1:${agent.port}`]);
      expect(cli.stdout).toContain(`warning: the resumed activation of ${rollout} was REFUSED (cache-tampered): `);
      // The gate is open: any activation would have switched by now.
      expect(linkTarget()).toBe(OLD);
      expect(heldKinds(world, rollout)).toEqual(['1:DispatchAck', '2:ActivationStarted', '3:ActivationFailed']);
      expect(fetchesOf(rollout)).toEqual({ manifest: 1, signature: 1 });
    });
  });
});
