import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { ClientIdentity } from '../dev/pki';
import { DIAGNOSTICS_EXIT } from '../src/cli/diagnostics.command';
import { type Json, statusWhen } from './support/admin-http';
import { type CliResult, runCli } from './support/agent-cli';
import { makeWorld, type World } from './support/agent-harness';
import { HEARTBEAT_STARTED, killIfRunning, type RunningAgent, startAdminAgent } from './support/agent-process';

/** The built CLI in `cwd` (the default archive lands there), SIGKILLed past 20 s. */
function runIn(cwd: string, args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return runCli(args, env, { cwd, timeoutMs: 20_000 });
}

/** Extracts with tar(1), an independent reader; every file's text by its path below the archive's one folder. */
function extract(archive: string, into: string): { folder: string; files: Map<string, string> } {
  mkdirSync(into);
  const r = spawnSync('tar', ['-xzf', archive, '-C', into], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tar -xzf ${archive} failed: ${r.stderr}`);
  const [folder, ...others] = readdirSync(into);
  expect(others).toEqual([]);
  const files = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else files.set(relative(join(into, folder), path), readFileSync(path, 'latin1'));
    }
  };
  walk(join(into, folder));
  return { folder, files };
}

/** The base64 body of a key file: its lines between the armour. */
function keyBody(path: string): string {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('-----'))
    .join('');
}

/**
 * No key material anywhere in the archive: no PEM or OpenSSH private key
 * block, and no 24-character piece of the key's base64 body, across line
 * breaks or not.
 */
function expectNoKeyMaterial(files: Map<string, string>, keyPaths: string[]): void {
  const all = [...files.values()].join('\n');
  const flat = all.replace(/\\n|\s/g, '');
  expect(all).not.toMatch(/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/);
  expect(all).not.toMatch(/-----BEGIN OPENSSH PRIVATE KEY-----/);
  expect(all).not.toMatch(/-----\s*BEGIN/i);
  for (const path of keyPaths) {
    const body = keyBody(path);
    expect(body.length).toBeGreaterThan(60);
    for (let i = 0; i + 24 <= body.length; i += 8) {
      const piece = body.slice(i, i + 24);
      if (flat.includes(piece)) throw new Error(`a piece of ${path}'s key body (${piece}) is in the archive`);
    }
  }
}

describe('nixfleet-agent diagnostics: the built CLI, the built agent, the dev CP; no key material in the archive', () => {
  let world: World;
  let agent: RunningAgent | null = null;
  let admin: string;
  let port: number;
  let stateDir: string;
  let out: string;
  let n = 0;

  beforeAll(async () => {
    world = await makeWorld();
    stateDir = join(world.dir, 'state');
    out = join(world.dir, 'out');
    mkdirSync(out);
    ({ agent, admin, port } = await startAdminAgent(world, { stateDir, readyWhen: HEARTBEAT_STARTED }));
    await statusWhen(agent, port, (s) => (s.heartbeat as Json).lastSuccessAt !== null, 'a first successful heartbeat', 20_000);
  });
  afterAll(async () => {
    await killIfRunning(agent);
    await world.close();
  });

  /** The settings the CLI is given: the world's CA, and a client identity whose key the archive must not hold. */
  function settings(id: ClientIdentity): string[] {
    return [
      '--admin-listen',
      admin,
      '--state-dir',
      stateDir,
      '--machine-id',
      world.pki.machineId,
      '--control-plane-url',
      world.cp.url,
      '--ca-cert',
      world.pki.caCertPath,
      '--client-cert',
      id.certPath,
      '--client-key',
      id.keyPath,
    ];
  }

  async function diagnose(
    args: string[],
    env: Record<string, string> = {},
  ): Promise<{ r: CliResult; files: Map<string, string>; folder: string }> {
    const archive = join(out, `d-${++n}.tar.gz`);
    const r = await runIn(world.dir, ['diagnostics', '-o', archive, ...args], env);
    expect(r.code).toBe(DIAGNOSTICS_EXIT.written);
    expect(r.stdout).toBe(`${archive}\n`);
    expect(statSync(archive).mode & 0o777).toBe(0o600);
    return { r, ...extract(archive, join(out, `x-${n}`)) };
  }

  const json = (files: Map<string, string>, name: string): Json => JSON.parse(files.get(name) ?? 'null') as Json;

  it('with the agent running: status, metrics, config with sources, certificate summaries, the log summary and versions', async () => {
    const { r, files } = await diagnose(settings(world.pki.client));

    expect(r.stderr).toBe('');
    expect([...files.keys()].sort()).toEqual(
      ['certificates.json', 'config.json', 'event-log.json', 'metrics.txt', 'status.json', 'summary.json', 'versions.json'].sort(),
    );
    expect(json(files, 'summary.json').agent).toMatchObject({
      address: admin,
      reachable: true,
      error: null,
      statusHttp: 200,
      metricsHttp: 200,
    });
    expect(json(files, 'status.json')).toMatchObject({ machineId: world.pki.machineId, pid: agent!.child.pid });
    expect(files.get('metrics.txt')).toMatch(/^# HELP /m);
    expect(json(files, 'config.json')).toMatchObject({
      settings: { stateDir: { value: stateDir, source: 'flag' }, heartbeatInterval: { value: 60, source: 'default' } },
      problems: [],
    });
    const client = new X509Certificate(readFileSync(world.pki.client.certPath));
    expect(json(files, 'certificates.json')).toMatchObject({
      caCert: { path: world.pki.caCertPath, certificates: [{ subject: 'CN=nixfleet dev CA', isCa: true }] },
      clientCert: {
        certificates: [
          {
            subject: `CN=${world.pki.machineId}`,
            fingerprintSha256: client.fingerprint256,
            notAfter: new Date(client.validTo).toISOString(),
          },
        ],
      },
      clientKey: { path: world.pki.client.keyPath, file: { mode: '0600' } },
    });
    expect(json(files, 'event-log.json')).toMatchObject({
      path: join(stateDir, 'events.log'),
      events: 0,
      rollouts: [],
      incompleteTailBytes: 0,
    });
    expect(json(files, 'versions.json')).toMatchObject({ node: process.versions.node, nest: expect.stringMatching(/^\d+\.\d+\.\d+/) });
    expectNoKeyMaterial(files, [world.pki.client.keyPath]);
  });

  it('holds no key material for PKCS#8, SEC1 and OpenSSH ed25519 keys, nor for a key bundled into the certificate file', async () => {
    const bundled = join(world.dir, 'bundled.pem');
    writeFileSync(bundled, readFileSync(world.pki.clientSec1.certPath, 'utf8') + readFileSync(world.pki.clientSec1.keyPath, 'utf8'));
    const ids: ClientIdentity[] = [
      world.pki.client,
      world.pki.clientSec1,
      world.pki.clientOpensshEd25519,
      { ...world.pki.clientSec1, certPath: bundled },
    ];
    for (const id of ids) {
      const { files } = await diagnose(settings(id));
      expectNoKeyMaterial(files, [id.keyPath]);
    }
    const { files } = await diagnose(settings({ ...world.pki.clientSec1, certPath: bundled }));
    expect(json(files, 'certificates.json')).toMatchObject({ clientCert: { path: bundled, otherBlocks: ['EC PRIVATE KEY'] } });
  });

  it('redacts a setting whose value is a PEM private key, from the environment or the --config file, wherever it shows', async () => {
    const configFile = join(world.dir, 'pem-in-config.json');
    writeFileSync(configFile, JSON.stringify({ clientCert: readFileSync(world.pki.clientOpensshEd25519.keyPath, 'utf8') }));
    const { files } = await diagnose(['--admin-listen', admin, '--state-dir', stateDir, '--config', configFile], {
      NIXFLEET_AGENT_CLIENT_KEY: readFileSync(world.pki.client.keyPath, 'utf8'),
    });

    expectNoKeyMaterial(files, [world.pki.client.keyPath, world.pki.clientOpensshEd25519.keyPath]);
    expect(json(files, 'config.json')).toMatchObject({
      settings: {
        clientKey: { value: '[PRIVATE KEY redacted]\n', source: 'env' },
        clientCert: { value: '[OPENSSH PRIVATE KEY redacted]\n', source: 'file' },
      },
    });
  });

  it('with the agent down: says so on stderr in one line and in the archive, which holds the rest; default name in the cwd', async () => {
    agent!.child.kill('SIGTERM');
    expect(await agent!.exited).toBe(0);
    agent = null;

    const r = await runIn(world.dir, ['diagnostics', ...settings(world.pki.clientOpensshEd25519)]);

    expect(r.code).toBe(DIAGNOSTICS_EXIT.written);
    expect(r.stdout).toMatch(new RegExp(`^${world.dir}/nixfleet-agent-diagnostics-${world.pki.machineId}-\\d{8}T\\d{6}Z\\.tar\\.gz\\n$`));
    expect(r.stderr.trimEnd().split('\n')).toEqual([
      expect.stringMatching(
        new RegExp(
          `^nixfleet-agent diagnostics: no agent answered at ${admin} \\(.*ECONNREFUSED.*\\); the archive says so and holds the rest$`,
        ),
      ),
    ]);
    const { folder, files } = extract(r.stdout.trim(), join(out, 'down'));
    expect(`${world.dir}/${folder}.tar.gz`).toBe(r.stdout.trim());
    expect([...files.keys()].sort()).toEqual(['certificates.json', 'config.json', 'event-log.json', 'summary.json', 'versions.json']);
    expect(json(files, 'summary.json').agent).toMatchObject({ reachable: false, error: expect.stringContaining('ECONNREFUSED') });
    expect(json(files, 'event-log.json')).toMatchObject({ path: join(stateDir, 'events.log'), bytes: 0, events: 0 });
    expectNoKeyMaterial(files, [world.pki.clientOpensshEd25519.keyPath]);
    // PKCS#8 and SEC1 too, with nothing answering.
    for (const id of [world.pki.client, world.pki.clientSec1]) {
      const down = await diagnose(settings(id));
      expect(json(down.files, 'summary.json').agent).toMatchObject({ reachable: false });
      expectNoKeyMaterial(down.files, [id.keyPath]);
    }
  });

  it('exits 1 with one line naming the path and errno when it cannot write the archive, and 2 for a bad flag', async () => {
    const nowhere = join(world.dir, 'no-such-dir', 'd.tar.gz');

    const unwritable = await runIn(world.dir, ['diagnostics', '--state-dir', stateDir, '-o', nowhere]);
    const bad = await runIn(world.dir, ['diagnostics', '--pending']);

    expect(unwritable.code).toBe(DIAGNOSTICS_EXIT.notWritten);
    expect(unwritable.stderr.split('\n')).toContainEqual(
      `nixfleet-agent diagnostics: cannot write ${nowhere} (ENOENT, no such file); give another place with -o FILE`,
    );
    expect(bad).toMatchObject({ code: 2, stdout: '', stderr: 'config error: --pending only applies to the events command\n' });
  });
});
