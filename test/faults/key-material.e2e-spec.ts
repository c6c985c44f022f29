import { copyFileSync, readFileSync, renameSync } from 'node:fs';
import * as crypto from 'node:crypto';
import { join } from 'node:path';
import sshpk from 'sshpk';
import { runCli } from '../support/agent-cli';
import { dispatch, FULL_ROLLOUT, heldKinds, ROLLOUT_A } from '../support/cp-record';
import {
  fakeClosure,
  killAllFaultAgents,
  makeFaultWorld,
  startFaultAgent,
  type FaultAgent,
  type Json,
  type World,
} from '../support/fault-world';

/** Every form a key's secret could leak in: PEM/OpenSSH body lines, the raw secret in hex, base64 and base64url, the PKCS#8 DER. */
function secretForms(keyPath: string): string[] {
  const text = readFileSync(keyPath, 'utf8');
  const forms = text.split('\n').filter((l) => /^[A-Za-z0-9+/=]{16,}$/.test(l));
  let key: crypto.KeyObject;
  if (text.includes('OPENSSH PRIVATE KEY')) {
    const parsed = sshpk.parsePrivateKey(text, 'ssh-private');
    const parts = parsed.part as unknown as Record<string, { data: Buffer }>;
    const seed = parts.k.data.subarray(0, 32);
    forms.push(seed.toString('hex'), seed.toString('base64'), seed.toString('base64url'));
    key = crypto.createPrivateKey({
      key: { kty: 'OKP', crv: 'Ed25519', d: seed.toString('base64url'), x: parts.A.data.toString('base64url') },
      format: 'jwk',
    });
  } else {
    key = crypto.createPrivateKey(text);
    const d = key.export({ format: 'jwk' }).d;
    if (d) forms.push(d, Buffer.from(d, 'base64url').toString('hex'), Buffer.from(d, 'base64url').toString('base64'));
  }
  const der = key.export({ type: 'pkcs8', format: 'der' });
  forms.push(der.toString('base64'), der.toString('hex'));
  // Long enough never to match by chance.
  return forms.filter((f) => f.length >= 16);
}

/** `status --json`, all it printed on stdout and stderr. */
async function statusJson(port: number): Promise<string> {
  const cli = await runCli(['status', '--json', '--admin-listen', `127.0.0.1:${port}`]);
  return cli.stdout + cli.stderr;
}

/**
 * An agent whose client key is the host's OpenSSH ed25519 key lives through
 * a run of faults (a TLS reset, bad answers, cut connections, refused events,
 * a rotation to a key that does not fit); then everything it ever said or
 * served is searched for its key.
 */
describe('faults: no key material in any output', () => {
  let world: World;
  let agent: FaultAgent;
  let keyPath: string;

  beforeAll(async () => {
    world = await makeFaultWorld();
    // The agent's own copy: the test swaps it for a wrong key mid-run.
    keyPath = join(world.dir, 'ssh_host_ed25519_key');
    copyFileSync(world.pki.clientOpensshEd25519.keyPath, keyPath);
  });
  afterAll(async () => {
    await killAllFaultAgents();
    await world.close();
  });

  it('across a run full of faults, stdout, stderr, /status, /metrics, /healthz, /readyz and `status --json` hold no PEM block and no byte of the private key', async () => {
    world.cp.setResetConnections(true);
    world.cp.respondNext('heartbeat', { status: 500, body: { error: 'internal' }, headers: { 'Retry-After': 'whenever' } });
    world.cp.respondNext('heartbeat', { cutAfterBytes: 5 });
    agent = await startFaultAgent(world, {
      identity: { certPath: world.pki.clientOpensshEd25519.certPath, keyPath, cn: world.pki.machineId },
    });
    await agent.waitForLog(/^boot recovery: control plane not reached/, 'the handshake reset');
    world.cp.setResetConnections(false);

    // Events refused for our identity, then one answer cut after the CP stored it.
    world.cp.setDefault('events', { status: 401, body: { error: 'unauthorized' } });
    dispatch(world, ROLLOUT_A, fakeClosure('web-01-26.11', 'b'), 1_000);
    await agent.statusWhen((s) => (s.outbound as Json).deliveryPausedReason !== null, 'delivery paused');
    world.cp.setDefault('events', null);
    world.cp.respondNext('events', { cutAfterBytes: 0 });

    // A rotation to a key that does not belong to the certificate, refused; then the right one back.
    const wrong = join(world.dir, 'wrong.key');
    copyFileSync(world.pki.mismatchedKeyPath, wrong);
    renameSync(wrong, keyPath);
    await agent.waitForLog(/^client identity files changed but cannot be used/, 'the refused rotation');
    copyFileSync(world.pki.clientOpensshEd25519.keyPath, `${keyPath}.tmp`);
    renameSync(`${keyPath}.tmp`, keyPath);

    await world.cp.waitFor(
      () => world.cp.heartbeats.filter((h) => !h.scripted && h.status === 200).length >= 1,
      30_000,
      'heartbeats through the faults',
    );
    await world.cp.waitFor(() => heldKinds(world, ROLLOUT_A).length === FULL_ROLLOUT.length, 20_000, 'the rollout delivered');
    await agent.statusWhen((s) => (s.heartbeat as Json).consecutiveFailures === 0 && (s.outbound as Json).pending === 0, 'all well again');

    const served = await Promise.all(['/status', '/healthz', '/readyz'].map(async (p) => JSON.stringify((await agent.admin(p)).body)));
    const outputs: Record<string, string> = {
      'agent stdout+stderr': agent.run.output(),
      '/status history': JSON.stringify(agent.history),
      '/metrics': await agent.metricsText(),
      '/status, /healthz, /readyz': served.join('\n'),
      'status --json': await statusJson(agent.port),
    };
    expect(await agent.stop()).toBe(0);
    outputs['agent stdout+stderr'] = agent.run.output();

    // The run did go through the faults it claims to.
    const said = outputs['agent stdout+stderr'];
    for (const fault of [
      /reset during the TLS handshake/,
      /HTTP 500/,
      /Retry-After .{0,2}whenever/,
      /connection failed mid-request/,
      /event delivery paused: HTTP 401/,
      /does not belong to the certificate/,
    ]) {
      expect(said).toMatch(fault);
    }

    const secrets = [...secretForms(world.pki.clientOpensshEd25519.keyPath), ...secretForms(world.pki.mismatchedKeyPath)];
    expect(secrets.length).toBeGreaterThan(8);
    for (const [where, text] of Object.entries(outputs)) {
      expect([where, text.match(/-----BEGIN [A-Z ]+-----/g)]).toEqual([where, null]);
      expect([where, /PRIVATE KEY/.test(text)]).toEqual([where, false]);
      for (const secret of secrets) expect([where, text.includes(secret)]).toEqual([where, false]);
    }
  });
});
