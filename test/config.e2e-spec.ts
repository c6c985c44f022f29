import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePki, type Pki } from '../dev/pki';
import type { ConfigDocument } from '../src/cli/config.command';
import { NOT_STARTED, WOULD_NOT_START } from '../src/config/config.messages';
import { SETTING_SPECS } from '../src/config/settings';
import { runAgentSync } from './support/agent-process';
import { testArgs } from './support/agent-config';

describe('the built agent refuses bad settings with exit status 2 before starting anything', () => {
  let dir: string;
  let stateDir: string;
  let base: string[];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-config-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  beforeEach(() => {
    stateDir = join(dir, `state-${Math.random().toString(36).slice(2)}`);
    base = ['--control-plane-url', 'https://cp.example:8443', '--machine-id', 'web-01', '--state-dir', stateDir];
  });

  function expectRefused(args: string[], env: Record<string, string>, ...lines: RegExp[]): string {
    const r = runAgentSync(args, env);
    expect(r.status).toBe(2);
    for (const line of lines) expect(r.stderr).toMatch(line);
    expect(r.stderr).toMatch(/the agent did not start/);
    // Nothing started: no log output, no state directory.
    expect(r.stdout).toBe('');
    expect(existsSync(stateDir)).toBe(false);
    return r.stderr;
  }

  it('names both missing required settings, each on its own line with flag, env and file key', () => {
    const stderr = expectRefused(
      ['--state-dir', stateDir],
      {},
      /^config error: --control-plane-url \(env NIXFLEET_AGENT_CONTROL_PLANE_URL, file key "controlPlaneUrl"\): is required but was not set$/m,
      /^config error: --machine-id \(env NIXFLEET_AGENT_MACHINE_ID, file key "machineId"\): is required but was not set$/m,
    );
    expect(stderr.split('\n').filter((l) => l.startsWith('config error:'))).toHaveLength(2);
  });

  it('refuses a control-plane URL that is not https', () => {
    expectRefused(
      [...base, '--control-plane-url', 'http://cp.example:8080'],
      {},
      /^config error: --control-plane-url \(env NIXFLEET_AGENT_CONTROL_PLANE_URL, file key "controlPlaneUrl"\): must be an https:\/\/ URL, got "http:\/\/cp.example:8080" from --control-plane-url$/m,
    );
  });

  it('refuses an unreadable certificate file and names its path', () => {
    const missing = join(dir, 'no-such-ca.pem');
    expectRefused(
      [...base, '--ca-cert', missing],
      {},
      new RegExp(
        `^config error: --ca-cert \\(env NIXFLEET_AGENT_CA_CERT, file key "caCert"\\): cannot read ${missing}: no such file$`,
        'm',
      ),
    );
    expectRefused([...base, '--ca-cert', dir], {}, new RegExp(`^config error: --ca-cert .*: cannot read ${dir}: it is a directory$`, 'm'));
  });

  it('refuses a client certificate without its key, and a key without its certificate', () => {
    const cert = join(dir, 'client.pem');
    writeFileSync(cert, 'not checked before the pairing rule\n');
    expectRefused(
      [...base, '--client-cert', cert],
      {},
      /^config error: --client-key \(env NIXFLEET_AGENT_CLIENT_KEY, file key "clientKey"\): must be set together with --client-cert/m,
    );
    expectRefused(
      [...base],
      { NIXFLEET_AGENT_CLIENT_KEY: cert },
      /^config error: --client-cert \(env NIXFLEET_AGENT_CLIENT_CERT, file key "clientCert"\): must be set together with --client-key/m,
    );
  });

  it('refuses a non-loopback admin address unless remote admin is allowed explicitly', () => {
    expectRefused(
      [...base, '--admin-listen', '0.0.0.0:9850'],
      {},
      /^config error: --admin-listen \(env NIXFLEET_AGENT_ADMIN_LISTEN, file key "adminListen"\): "0.0.0.0:9850" is not a loopback address; .* set --admin-allow-remote/m,
    );
    // Every wildcard, a host name (it resolves to whatever DNS says), and the setting from the environment.
    expectRefused([...base, '--admin-listen', '[::]:9850'], {}, /^config error: --admin-listen .*"\[::\]:9850" is not a loopback address/m);
    expectRefused(base, { NIXFLEET_AGENT_ADMIN_LISTEN: 'fleet-host.example:9850' }, /"fleet-host\.example:9850" is not a loopback address/);
    expectRefused(
      [...base, '--admin-listen', '192.0.2.1:9850'],
      { NIXFLEET_AGENT_ADMIN_ALLOW_REMOTE: 'false' },
      /"192\.0\.2\.1:9850" is not a loopback address/,
    );
  });

  it('refuses a control-plane URL carrying a user name or password, naming flag, env and file key, and never echoes the password', () => {
    const stderr = expectRefused(
      [...base, '--control-plane-url', 'https://fleet:hunter2-s3cret@cp.example:8443'],
      {},
      /^config error: --control-plane-url \(env NIXFLEET_AGENT_CONTROL_PLANE_URL, file key "controlPlaneUrl"\): must not carry a user name or password .*got "https:\/\/\*\*\*@cp\.example:8443" from --control-plane-url$/m,
    );
    expect(stderr.split('\n').filter((l) => l.startsWith('config error:'))).toHaveLength(1);
    expect(stderr).not.toContain('hunter2');
    expect(stderr).not.toContain('fleet:');

    const file = join(dir, 'with-credentials.json');
    writeFileSync(file, JSON.stringify({ controlPlaneUrl: 'https://fleet:hunter2-s3cret@cp.example:8443' }));
    const fromFile = expectRefused(
      ['--machine-id', 'web-01', '--state-dir', stateDir, '--config', file],
      {},
      new RegExp(`must not carry a user name or password .*from "controlPlaneUrl" in ${file}$`, 'm'),
    );
    expect(fromFile).not.toContain('hunter2');
    const fromEnv = expectRefused(
      ['--machine-id', 'web-01', '--state-dir', stateDir],
      { NIXFLEET_AGENT_CONTROL_PLANE_URL: 'https://fleet:hunter2-s3cret@cp.example:8443' },
      /must not carry a user name or password .*from NIXFLEET_AGENT_CONTROL_PLANE_URL$/m,
    );
    expect(fromEnv).not.toContain('hunter2');
  });

  it('refuses a heartbeat interval of 0 and says where the value came from', () => {
    expectRefused(
      [...base, '--heartbeat-interval', '0'],
      {},
      /^config error: --heartbeat-interval \(env NIXFLEET_AGENT_HEARTBEAT_INTERVAL, file key "heartbeatInterval"\): must be at least 1 second, got 0 from --heartbeat-interval$/m,
    );
    expectRefused(base, { NIXFLEET_AGENT_HEARTBEAT_INTERVAL: '0' }, /got 0 from NIXFLEET_AGENT_HEARTBEAT_INTERVAL$/m);
  });

  it('reports a bad value from the --config file by its key and path, with every other problem', () => {
    const file = join(dir, 'agent.json');
    writeFileSync(file, JSON.stringify({ heartbeatInterval: 'often', logFormat: 'xml', colour: true }));
    const stderr = expectRefused(
      [...base, '--config', file],
      {},
      new RegExp(`heartbeatInterval.*must be a whole number of seconds.*got "often" from "heartbeatInterval" in ${file}$`, 'm'),
      /^config error: --log-format \(env NIXFLEET_AGENT_LOG_FORMAT, file key "logFormat"\): must be one of: json, text, got "xml"/m,
      new RegExp(`^config error: unknown key "colour" in ${file}`, 'm'),
    );
    expect(stderr.split('\n').filter((l) => l.startsWith('config error:'))).toHaveLength(3);
  });

  it('refuses an unknown flag and an unknown NIXFLEET_AGENT_ variable', () => {
    expectRefused(
      [...base, '--heartbeat-intervall', '5'],
      {},
      /^config error: unknown flag --heartbeat-intervall; did you mean --heartbeat-interval\?$/m,
    );
    expectRefused(base, { NIXFLEET_AGENT_HEARTBEAT_INTERVALL: '5' }, /unknown environment variable NIXFLEET_AGENT_HEARTBEAT_INTERVALL/);
  });

  it('prints every setting with its env variable and default on --help, and the version on --version', () => {
    const help = runAgentSync(['--help']);
    expect(help.status).toBe(0);
    for (const flag of [
      '--control-plane-url',
      '--machine-id',
      '--ca-cert',
      '--client-cert',
      '--client-key',
      '--state-dir',
      '--current-system-path',
      '--heartbeat-interval',
      '--admin-listen',
      '--log-format',
      '--log-level',
    ]) {
      expect(help.stdout).toContain(flag);
    }
    expect(help.stdout).toMatch(
      /--heartbeat-interval \(env NIXFLEET_AGENT_HEARTBEAT_INTERVAL, file key "heartbeatInterval"\)\s+\[default 60\]/,
    );
    expect(help.stdout).toMatch(/--state-dir .*\[default \/var\/lib\/nixfleet-agent\]/);
    const version = runAgentSync(['--version']);
    expect(version.status).toBe(0);
    expect(version.stdout).toMatch(/^nixfleet-agent \d+\.\d+\.\d+\n$/);
  });
});

describe('the built agent refuses a bad TLS identity with exit status 2', () => {
  let dir: string;
  let pki: Pki;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-config-tls-'));
    pki = await makePki(join(dir, 'pki'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('names the OpenSSH RSA key file and its type, and starts nothing', () => {
    const stateDir = join(dir, 'state');
    const r = runAgentSync([...testArgs({ pki, controlPlaneUrl: 'https://127.0.0.1:1', stateDir }), '--client-key', pki.opensshRsaKeyPath]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`${pki.opensshRsaKeyPath} is an OpenSSH rsa key; only ed25519 keys are read in OpenSSH format`);
    expect(r.stdout).toBe('');
    expect(existsSync(stateDir)).toBe(false);
  });

  it('names a machine id that the certificate does not carry', () => {
    const r = runAgentSync(
      testArgs({ pki, controlPlaneUrl: 'https://127.0.0.1:1', stateDir: join(dir, 's2'), identity: pki.otherMachine }),
    );
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--machine-id .*"web-01" does not match the client certificate .*CN "db-02"/);
  });
});

describe('the built agent refuses a missing or malformed trust file with exit status 2', () => {
  let dir: string;
  let pki: Pki;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-config-trust-'));
    pki = await makePki(join(dir, 'pki'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** Exit 2 with nothing started; the problem lines, without the closing one. */
  function refused(trustFile: string, extra: string[] = []): string[] {
    const stateDir = join(dir, `state-${Math.random().toString(36).slice(2)}`);
    const r = runAgentSync([...testArgs({ pki, controlPlaneUrl: 'https://127.0.0.1:1', stateDir, trustFile }), ...extra]);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(existsSync(stateDir)).toBe(false);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines.at(-1)).toBe(NOT_STARTED);
    return lines.slice(0, -1);
  }

  it('a missing trust file without --allow-unsigned: one line naming --trust-file, the path and the way out', () => {
    const missing = join(dir, 'absent-trust.json');

    expect(refused(missing)).toEqual([
      `config error: --trust-file (env NIXFLEET_AGENT_TRUST_FILE, file key "trustFile"): ${missing} does not exist, so no dispatch could be verified; install the fleet's trust file there (README "Trust"), or set --allow-unsigned to act on unverified dispatches`,
    ]);
  });

  it('a malformed trust file, even with --allow-unsigned: one line per problem naming the file and the key', () => {
    const file = join(dir, 'trust.json');
    writeFileSync(
      file,
      JSON.stringify({
        schemaVersion: 1,
        ciReleaseKey: { current: { algorithm: 'ed25519', public: 'not base64!' }, rejectBefore: 'yesterday' },
        cacheKeys: [],
      }),
    );

    expect(refused(file, ['--allow-unsigned'])).toEqual([
      `config error: trust file ${file}, key "ciReleaseKey.current.public": must be standard base64 with its padding (got "not base64!")`,
      expect.stringMatching(new RegExp(`^config error: trust file ${file}, key "ciReleaseKey.rejectBefore": .*"yesterday"`)),
    ]);
    writeFileSync(file, '{"schemaVersion": 1,');
    expect(refused(file, ['--allow-unsigned'])).toEqual([
      expect.stringMatching(new RegExp(`^config error: trust file ${file}: is not valid JSON \\(`)),
    ]);
  });
});

describe('nixfleet-agent config: the effective settings and where each came from', () => {
  let dir: string;
  let file: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-config-cmd-'));
    file = join(dir, 'agent.json');
    writeFileSync(file, JSON.stringify({ controlPlaneUrl: 'https://cp.example:8443', heartbeatInterval: 30 }));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('prints a table of every setting with its value and source, exit 0, starting nothing', () => {
    const stateDir = join(dir, 'state');
    const r = runAgentSync(['config', '--machine-id', 'web-01', '--state-dir', stateDir], {
      NIXFLEET_AGENT_CONFIG: file,
      NIXFLEET_AGENT_LOG_LEVEL: 'debug',
    });
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe(`settings file: ${file} (from NIXFLEET_AGENT_CONFIG)`);
    expect(lines[2]).toMatch(/^SETTING +VALUE +SOURCE$/);
    expect(r.stdout).toMatch(/^--control-plane-url +https:\/\/cp\.example:8443 +file "controlPlaneUrl" in \S+agent\.json$/m);
    expect(r.stdout).toMatch(/^--heartbeat-interval +30 +file "heartbeatInterval" in /m);
    expect(r.stdout).toMatch(/^--machine-id +web-01 +flag --machine-id$/m);
    expect(r.stdout).toMatch(/^--log-level +debug +env NIXFLEET_AGENT_LOG_LEVEL$/m);
    expect(r.stdout).toMatch(/^--admin-listen +127\.0\.0\.1:9850 +default$/m);
    expect(r.stdout).toMatch(/^--client-key +- +unset$/m);
    // One row per setting, after the file line, a blank line and the header.
    expect(lines).toHaveLength(3 + SETTING_SPECS.length);
    expect(existsSync(stateDir)).toBe(false);
  });

  it('prints the same as one JSON document with --json', () => {
    const r = runAgentSync(['config', '--json', '--config', file, '--machine-id', 'web-01']);
    expect(r.status).toBe(0);
    const doc = JSON.parse(r.stdout) as ConfigDocument;
    expect(doc.configFile).toEqual({ path: file, source: 'flag' });
    expect(doc.problems).toEqual([]);
    expect(doc.settings.heartbeatInterval).toEqual({
      flag: '--heartbeat-interval',
      env: 'NIXFLEET_AGENT_HEARTBEAT_INTERVAL',
      value: 30,
      hidden: false,
      source: 'file',
      from: `"heartbeatInterval" in ${file}`,
    });
    expect(doc.settings.trustFile).toMatchObject({ value: '/etc/nixfleet/agent/trust.json', source: 'default', from: null });
  });

  it('with bad settings shows them all the same, then each problem on stderr, and exits 2; never a password', () => {
    const r = runAgentSync(['config', '--control-plane-url', 'https://fleet:hunter2@cp.example', '--heartbeat-interval', '0']);
    expect(r.status).toBe(2);
    expect(r.stdout).toMatch(/^--control-plane-url +https:\/\/\*\*\*@cp\.example +flag --control-plane-url$/m);
    expect(r.stdout).toMatch(/^--heartbeat-interval +0 +flag --heartbeat-interval$/m);
    expect(r.stderr.trimEnd().split('\n')).toEqual([
      'config error: --machine-id (env NIXFLEET_AGENT_MACHINE_ID, file key "machineId"): is required but was not set',
      expect.stringMatching(/^config error: --heartbeat-interval .*must be at least 1 second, got 0 from --heartbeat-interval$/),
      expect.stringMatching(/^config error: --control-plane-url .*must not carry a user name or password/),
      WOULD_NOT_START,
    ]);
    expect(`${r.stdout}${r.stderr}`).not.toContain('hunter2');
  });

  it('refuses --json with run, and an unreadable --config with config: one line each, exit 2', () => {
    const withRun = runAgentSync(['--json', '--control-plane-url', 'https://cp.example', '--machine-id', 'web-01']);
    expect(withRun.status).toBe(2);
    expect(withRun.stderr).toBe(`config error: --json only applies to the status, config and events commands\n${NOT_STARTED}\n`);
    const missing = join(dir, 'absent.json');
    const unreadable = runAgentSync(['config', '--config', missing]);
    expect(unreadable.status).toBe(2);
    expect(unreadable.stdout).toBe('');
    // config starts nothing: its problem line alone, no "the agent did not start".
    expect(unreadable.stderr).toBe(`config error: --config (env NIXFLEET_AGENT_CONFIG): cannot read ${missing}: no such file\n`);
  });

  it('never prints a PEM key pasted into a setting: config redacts its table and its problem lines, as run does its errors', () => {
    const pem = `-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKkeyMaterialThatMustNeverBePrinted0123456789\n-----END PRIVATE KEY-----`;
    const args = ['--control-plane-url', 'https://cp.example', '--machine-id', 'web-01'];
    // Pasted where a path belongs, in the environment (a flag's value cannot start with "-" unless written --flag=VALUE).
    const env = { NIXFLEET_AGENT_CLIENT_CERT: pem, NIXFLEET_AGENT_CLIENT_KEY: pem };
    for (const r of [runAgentSync(['config', ...args], env), runAgentSync(['config', '--json', ...args], env), runAgentSync(args, env)]) {
      expect(r.status).toBe(2);
      const out = `${r.stdout}${r.stderr}`;
      expect(out).toContain('[PRIVATE KEY redacted]');
      expect(out).not.toContain('KeyMaterialThatMustNeverBePrinted');
      expect(out).not.toContain('BEGIN PRIVATE KEY');
    }
  });
});
