import { copyFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { DevControlPlane } from '../../dev/control-plane';
import type { Pki } from '../../dev/pki';
import { dispatch, FULL_ROLLOUT, heldKinds, ROLLOUT_A, seqsWithTwoBodies } from '../support/cp-record';
import {
  fakeClosure,
  killAllFaultAgents,
  makeFaultWorld,
  makeSharedPki,
  startFaultAgent,
  type FaultAgent,
  type Json,
  type World,
} from '../support/fault-world';

/**
 * The transport under the HTTP: whom the agent trusts, and connections that
 * die at the wrong moment. Three agents run at once: one trusting another CA,
 * one dialling a name the CP's certificate does not carry, one whose CP resets
 * and cuts connections.
 */
describe('faults: TLS and connections', () => {
  let shared: { pki: Pki; remove(): void };
  const worlds: World[] = [];
  let foreign: { world: World; agent: FaultAgent; caPath: string };
  let misnamed: { world: World; agent: FaultAgent; cp: DevControlPlane };
  let flaky: { world: World; agent: FaultAgent };

  beforeAll(async () => {
    shared = await makeSharedPki();
    const world = async (): Promise<World> => {
      const w = await makeFaultWorld({}, shared.pki);
      worlds.push(w);
      return w;
    };
    await Promise.all([
      (async () => {
        const w = await world();
        // A CA file of its own, so the test can put the right one in place later.
        const caPath = join(w.dir, 'ca.pem');
        copyFileSync(shared.pki.foreignCaCertPath, caPath);
        foreign = { world: w, caPath, agent: await startFaultAgent(w, { caCertPath: caPath }) };
      })(),
      (async () => {
        const w = await world();
        // The certificate names localhost, 127.0.0.1 and ::1; this CP is reached as 127.0.0.2.
        const cp = await DevControlPlane.start({ pki: shared.pki, host: '127.0.0.2' });
        misnamed = { world: w, cp, agent: await startFaultAgent(w, { controlPlaneUrl: cp.url }) };
      })(),
      (async () => {
        const w = await world();
        w.cp.setResetConnections(true);
        flaky = { world: w, agent: await startFaultAgent(w) };
      })(),
    ]);
  }, 90_000);

  afterAll(async () => {
    await killAllFaultAgents();
    await misnamed?.cp.close();
    await Promise.all(worlds.map((w) => w.close()));
    shared.remove();
  });

  const lastError = (s: Json): Json | null => (s.heartbeat as Json).lastError as Json | null;

  it('a CP certificate from another CA: refused, said as a TLS failure naming the verification error; the agent keeps trying and heals once the right CA is in place', async () => {
    const { world, agent, caPath } = foreign;
    const said = await agent.waitForLog(/^boot recovery: control plane not reached/, 'the boot-recovery warning');
    expect(said.message).toMatch(
      /TLS handshake failed: (SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)/,
    );
    // Refused on our side: no heartbeat ever reached the CP.
    expect(world.cp.heartbeats).toEqual([]);
    await agent.waitForLog(/^heartbeat to the control plane failed: TLS handshake failed/, 'a steady heartbeat failing the same way');
    const s = await agent.status();
    expect(lastError(s)).toMatchObject({ kind: 'tls' });
    expect((await agent.admin('/readyz')).status).toBe(503);
    expect((await agent.admin('/healthz')).status).toBe(200);

    // The operator fixes the CA file (atomically, as a config tool does): no restart needed.
    copyFileSync(shared.pki.caCertPath, `${caPath}.tmp`);
    renameSync(`${caPath}.tmp`, caPath);
    await world.cp.waitFor(() => world.cp.heartbeats.some((h) => h.status === 200), 30_000, 'a heartbeat with the right CA');
    await agent.statusWhen((st) => (st.heartbeat as Json).consecutiveFailures === 0, 'heartbeats ok');
  });

  it('a CP certificate for another host name: refused, said as a TLS failure naming the name mismatch; the agent keeps running', async () => {
    const { agent, cp } = misnamed;
    const said = await agent.waitForLog(/^boot recovery: control plane not reached/, 'the boot-recovery warning');
    expect(said.message).toMatch(/TLS handshake failed: ERR_TLS_CERT_ALTNAME_INVALID: .*127\.0\.0\.2/);
    expect(cp.heartbeats).toEqual([]);
    await agent.waitForLog(
      /^heartbeat to the control plane failed: TLS handshake failed: ERR_TLS_CERT_ALTNAME_INVALID/,
      'a steady heartbeat failing the same way',
    );
    expect(lastError(await agent.status())).toMatchObject({ kind: 'tls', message: expect.stringMatching(/127\.0\.0\.2/) });
    expect(agent.run.child.exitCode).toBeNull();
  });

  it('a TLS reset (the CP drops connections before the handshake): the agent says the handshake was cut, without blaming its certificate, and heals', async () => {
    const { world, agent } = flaky;
    try {
      const said = await agent.waitForLog(/^boot recovery: control plane not reached/, 'the boot-recovery warning');
      expect(world.cp.resets.length).toBeGreaterThanOrEqual(1);
      // Node names the same reset either way, by timing: the errno, or its "disconnected before secure TLS" text.
      expect(said.message).toMatch(/ECONNRESET|socket disconnected before secure TLS connection was established/);
      expect(said.message).toMatch(/reset during the TLS handshake, before the control plane presented a certificate/);
      // The CP never got to see, let alone refuse, the client certificate.
      expect(said.message).toMatch(/our client certificate was not sent yet, so it is not the cause/);
      expect(said.message).not.toMatch(/refused our client certificate/);
      expect(lastError(await agent.status())).toMatchObject({ kind: 'tls' });
    } finally {
      // The cases after this one share the CP: never leave it resetting.
      world.cp.setResetConnections(false);
    }

    await world.cp.waitFor(() => world.cp.heartbeats.some((h) => h.status === 200), 15_000, 'a heartbeat once the resets stop');
    await agent.statusWhen((s) => (s.heartbeat as Json).consecutiveFailures === 0, 'heartbeats ok');
  });

  it('a heartbeat answer cut mid-body: a failed heartbeat said as a broken connection, the next one goes through', async () => {
    const { world, agent } = flaky;
    const from = world.cp.heartbeats.length;
    world.cp.respondNext('heartbeat', { cutAfterBytes: 10 });
    await world.cp.waitFor(() => world.cp.heartbeats.slice(from).some((h) => h.cut), 10_000, 'the cut heartbeat');
    const warned = await agent.waitForLog(/^heartbeat to the control plane failed: connection failed mid-request/, 'the warning');
    expect(warned.level).toBe('warn');
    await world.cp.waitFor(
      () => world.cp.heartbeats.slice(from).some((h) => !h.cut && h.status === 200),
      15_000,
      'a whole heartbeat after the cut one',
    );
    await agent.statusWhen((s) => (s.heartbeat as Json).consecutiveFailures === 0, 'heartbeats ok');
  });

  it('an event answer cut after the CP stored the event: resent with the same bytes, held once, never a second body', async () => {
    const { world, agent } = flaky;
    world.cp.respondNext('events', { cutAfterBytes: 0 });
    dispatch(world, ROLLOUT_A, fakeClosure('web-01-26.11', 'b'), 1_000);
    await world.cp.waitFor(() => heldKinds(world, ROLLOUT_A).length === FULL_ROLLOUT.length, 20_000, 'the rollout delivered');
    expect(heldKinds(world, ROLLOUT_A)).toEqual(FULL_ROLLOUT);
    const seq1 = world.cp.eventPosts.filter((p) => (p.body as Json).rolloutId === ROLLOUT_A && ((p.body as Json).event as Json).seq === 1);
    // Stored from the cut POST; the resend was answered as the duplicate it is.
    expect(seq1.map((p) => [p.cut ?? false, p.outcome])).toEqual([
      [true, 'stored'],
      [false, 'duplicate'],
    ]);
    expect(seq1[0].raw).toBe(seq1[1].raw);
    expect(seqsWithTwoBodies(world.cp)).toEqual([]);
    expect(agent.problems()).toContainEqual(
      expect.stringMatching(/^delivering DispatchAck seq 1 of stable@a1b2c3d4 failed: .*retrying the same seq/),
    );
    const after = await agent.statusWhen((s) => (s.outbound as Json).pending === 0, 'nothing pending');
    expect(after.outbound).toMatchObject({ refused: 0, deliveryPausedReason: null });
    expect(await agent.stop()).toBe(0);
  });
});
