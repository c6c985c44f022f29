import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LoadResult, loadConfig } from './config.loader';

function run(result: LoadResult) {
  if (result.kind !== 'run') throw new Error(`expected a runnable config, got ${JSON.stringify(result)}`);
  return result.config;
}

describe('loadConfig', () => {
  let dir: string;
  const required = ['--control-plane-url', 'https://cp.test', '--machine-id', 'web-01'];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-loader-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('takes flags over env over the --config file over defaults', () => {
    const file = join(dir, 'precedence.json');
    writeFileSync(
      file,
      JSON.stringify({ heartbeatInterval: 30, stateDir: '/srv/from-file', logLevel: 'debug', currentSystemPath: '/file/current' }),
    );
    const config = run(
      loadConfig({
        argv: [...required, '--config', file, '--heartbeat-interval', '5'],
        env: { NIXFLEET_AGENT_HEARTBEAT_INTERVAL: '7', NIXFLEET_AGENT_STATE_DIR: '/srv/from-env' },
        stdoutIsTty: false,
      }),
    );
    expect(config.heartbeatInterval).toBe(5);
    expect(config.stateDir).toBe('/srv/from-env');
    expect(config.logLevel).toBe('debug');
    expect(config.currentSystemPath).toBe('/file/current');
    expect(config.adminAddress).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 9850 });
    expect(config.configFile).toBe(file);
  });

  it('defaults to JSON logs when stdout is not a terminal and text when it is', () => {
    expect(run(loadConfig({ argv: required, env: {}, stdoutIsTty: false })).logFormat).toBe('json');
    expect(run(loadConfig({ argv: required, env: {}, stdoutIsTty: true })).logFormat).toBe('text');
  });

  it('accepts a unix socket admin address and a remote one only with --admin-allow-remote', () => {
    expect(
      run(loadConfig({ argv: [...required, '--admin-listen', 'unix:/run/nfa.sock'], env: {}, stdoutIsTty: false })).adminAddress,
    ).toEqual({
      kind: 'unix',
      path: '/run/nfa.sock',
    });
    const refused = loadConfig({ argv: [...required, '--admin-listen', '192.0.2.1:9850'], env: {}, stdoutIsTty: false });
    expect(refused.kind).toBe('invalid');
    const allowed = loadConfig({
      argv: [...required, '--admin-listen', '192.0.2.1:9850'],
      env: { NIXFLEET_AGENT_ADMIN_ALLOW_REMOTE: 'true' },
      stdoutIsTty: false,
    });
    expect(run(allowed).adminAddress).toEqual({ kind: 'tcp', host: '192.0.2.1', port: 9850 });
    expect(run(loadConfig({ argv: [...required, '--admin-listen', '[::1]:9850'], env: {}, stdoutIsTty: false })).adminAddress).toEqual({
      kind: 'tcp',
      host: '::1',
      port: 9850,
    });
  });

  it('lets the status command run without the agent-only required settings', () => {
    const result = loadConfig({ argv: ['status', '--json', '--admin-listen', '127.0.0.1:1234'], env: {}, stdoutIsTty: false });
    expect(result).toEqual({ kind: 'status', adminAddress: { kind: 'tcp', host: '127.0.0.1', port: 1234 }, json: true });
  });

  it('lets events run on the state dir alone, with its filters; a bad admin address or a missing CP URL is not its business', () => {
    const result = loadConfig({
      argv: ['events', '--rollout', 'stable@a1', '--pending', '--json', '--admin-listen', '0.0.0.0:1'],
      env: { NIXFLEET_AGENT_STATE_DIR: '/srv/state' },
      stdoutIsTty: false,
    });
    expect(result).toEqual({ kind: 'events', stateDir: '/srv/state', rolloutId: 'stable@a1', pendingOnly: true, json: true });
    expect(loadConfig({ argv: ['events'], env: {}, stdoutIsTty: false })).toEqual({
      kind: 'events',
      stateDir: '/var/lib/nixfleet-agent',
      rolloutId: null,
      pendingOnly: false,
      json: false,
    });
  });

  it('refuses a relative state dir for events, and the flags of one command on another, one line each', () => {
    const problems = (argv: string[]): string[] => {
      const result = loadConfig({ argv, env: {}, stdoutIsTty: false });
      return result.kind === 'invalid' ? result.problems : [];
    };
    expect(problems(['events', '--state-dir', 'state'])).toEqual([
      'config error: --state-dir (env NIXFLEET_AGENT_STATE_DIR, file key "stateDir"): must be an absolute path, got "state" from --state-dir',
    ]);
    expect(problems(['status', '--pending'])).toEqual(['config error: --pending only applies to the events command']);
    expect(problems(['events', '-o', 'x.tgz'])).toEqual(['config error: --output only applies to the diagnostics command']);
    expect(problems([...required, '--json'])).toEqual(['config error: --json only applies to the status and events commands']);
    expect(problems(['events', '--rollout', ''])).toEqual(['config error: --rollout needs a value (see --help)']);
  });

  it('gives diagnostics every setting with its source, and what run would refuse, without stopping on it', () => {
    const result = loadConfig({
      argv: ['diagnostics', '-o', '/tmp/d.tgz', '--heartbeat-interval', 'abc', '--control-plane-url', 'https://fleet:s3cret@cp.test'],
      env: { NIXFLEET_AGENT_MACHINE_ID: 'web-01' },
      stdoutIsTty: false,
    });
    if (result.kind !== 'diagnostics') throw new Error(`expected diagnostics, got ${JSON.stringify(result)}`);
    expect(result).toMatchObject({
      adminAddress: { kind: 'tcp', host: '127.0.0.1', port: 9850 },
      stateDir: '/var/lib/nixfleet-agent',
      output: '/tmp/d.tgz',
    });
    expect(result.settings.values).toMatchObject({ machineId: 'web-01', heartbeatInterval: 'abc', controlPlaneUrl: 'https://***@cp.test' });
    expect(result.settings.sources.get('machineId')).toBe('env');
    expect(result.settings.sources.get('stateDir')).toBe('default');
    expect(result.settings.problems).toEqual([
      expect.stringMatching(
        /^config error: --heartbeat-interval .*must be a whole number of seconds.*, got "abc" from --heartbeat-interval$/,
      ),
    ]);
    expect(JSON.stringify(result.settings.values)).not.toContain('s3cret');
  });

  it('refuses a malformed admin address, naming what it should look like', () => {
    const result = loadConfig({ argv: [...required, '--admin-listen', 'localhost'], env: {}, stdoutIsTty: false });
    expect(result).toEqual({
      kind: 'invalid',
      problems: [
        'config error: --admin-listen (env NIXFLEET_AGENT_ADMIN_LISTEN, file key "adminListen"): must be HOST:PORT, [IPv6]:PORT or unix:/path, got "localhost"',
      ],
    });
  });

  it('says one thing of an --activation-command that is not a JSON argv, and another of an empty one', () => {
    const problems = (value: string): string[] => {
      const result = loadConfig({
        argv: [...required, '--activation-backend', 'command', '--activation-command', value],
        env: {},
        stdoutIsTty: false,
      });
      return result.kind === 'invalid' ? result.problems : [];
    };
    const prefix = 'config error: --activation-command (env NIXFLEET_AGENT_ACTIVATION_COMMAND, file key "activationCommand"): ';
    expect(problems('/bin/activate {closure}')).toEqual([
      `${prefix}must be a JSON array of strings, e.g. ["/usr/local/bin/activate", "{closure}"], got "/bin/activate {closure}" from --activation-command`,
    ]);
    expect(problems('[]')).toEqual([`${prefix}must name a program, got []`]);
    expect(problems('["/bin/activate"]')).toEqual([`${prefix}must contain the {closure} placeholder in some argument`]);
  });

  it('refuses a --config file that is not JSON, naming the file', () => {
    const file = join(dir, 'broken.json');
    writeFileSync(file, '{ "heartbeatInterval": ');
    const result = loadConfig({ argv: [...required, '--config', file], env: {}, stdoutIsTty: false });
    expect(result.kind).toBe('invalid');
    expect(result.kind === 'invalid' && result.problems[0]).toMatch(
      new RegExp(`^config error: --config \\(env NIXFLEET_AGENT_CONFIG\\): ${file} is not valid JSON`),
    );
  });

  it('refuses a control-plane URL with a user name or password, naming where it came from and never echoing the password', () => {
    const file = join(dir, 'credentials.json');
    writeFileSync(file, JSON.stringify({ controlPlaneUrl: 'https://fleet:file-s3cret@cp.test:8443' }));
    const cases: { argv: string[]; env: Record<string, string>; from: string; secret: string }[] = [
      {
        argv: ['--control-plane-url', 'https://fleet:flag-s3cret@cp.test', '--machine-id', 'web-01'],
        env: {},
        from: 'from --control-plane-url',
        secret: 'flag-s3cret',
      },
      {
        argv: ['--machine-id', 'web-01'],
        env: { NIXFLEET_AGENT_CONTROL_PLANE_URL: 'https://fleet:env-s3cret@cp.test' },
        from: 'from NIXFLEET_AGENT_CONTROL_PLANE_URL',
        secret: 'env-s3cret',
      },
      { argv: ['--machine-id', 'web-01', '--config', file], env: {}, from: `from "controlPlaneUrl" in ${file}`, secret: 'file-s3cret' },
      // A "/" or "#" in the password: a URL parser would take "fleet:pa" for the host and the rest for a path or fragment.
      {
        argv: ['--control-plane-url', 'https://fleet:pa/s3cret@cp.test', '--machine-id', 'web-01'],
        env: {},
        from: 'from --control-plane-url',
        secret: 's3cret',
      },
      {
        argv: ['--control-plane-url', 'https://fleet:pa#s3cret@cp.test', '--machine-id', 'web-01'],
        env: {},
        from: 'from --control-plane-url',
        secret: 's3cret',
      },
      {
        argv: ['--control-plane-url', 'https://only-a-user@cp.test', '--machine-id', 'web-01'],
        env: {},
        from: 'from --control-plane-url',
        secret: 'only-a-user',
      },
    ];
    for (const c of cases) {
      const result = loadConfig({ argv: c.argv, env: c.env, stdoutIsTty: false });
      expect(result.kind).toBe('invalid');
      const problems = result.kind === 'invalid' ? result.problems : [];
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatch(
        /^config error: --control-plane-url \(env NIXFLEET_AGENT_CONTROL_PLANE_URL, file key "controlPlaneUrl"\): must not carry a user name or password/,
      );
      expect(problems[0]).toContain('"https://***@cp.test');
      expect(problems[0].endsWith(c.from)).toBe(true);
      expect(problems[0]).not.toContain(c.secret);
    }
  });

  it('masks the credentials of a control-plane URL that is refused for another reason too', () => {
    const result = loadConfig({
      argv: ['--control-plane-url', 'http://fleet:s3cret@cp.test', '--machine-id', 'web-01'],
      env: {},
      stdoutIsTty: false,
    });
    expect(result).toEqual({
      kind: 'invalid',
      problems: [
        'config error: --control-plane-url (env NIXFLEET_AGENT_CONTROL_PLANE_URL, file key "controlPlaneUrl"): must be an https:// URL, got "http://***@cp.test" from --control-plane-url',
        expect.stringMatching(/must not carry a user name or password.*got "http:\/\/\*\*\*@cp\.test" from --control-plane-url$/),
      ],
    });
  });

  it('still takes a plain https control-plane URL with a port and a path', () => {
    expect(
      run(
        loadConfig({ argv: ['--control-plane-url', 'https://cp.test:8443/fleet', '--machine-id', 'web-01'], env: {}, stdoutIsTty: false }),
      ).controlPlaneUrl,
    ).toBe('https://cp.test:8443/fleet');
  });

  it.each(['https://cp.example/a@b', 'https://cp.example:8443/fleets/ops@example/', 'https://[fd00::1]:8443/a@b'])(
    'takes an "@" in the path of %s: only the authority can carry credentials',
    (url) => {
      expect(
        run(loadConfig({ argv: ['--control-plane-url', url, '--machine-id', 'web-01'], env: {}, stdoutIsTty: false })).controlPlaneUrl,
      ).toBe(url);
    },
  );

  it.each([
    ['https://u:p@cp.example/', 'u:p', '"https://***@cp.example/"'],
    // Hiding the path too is the price of never leaving a piece of a password.
    ['https://u:s3cret@cp.example/a@b', 's3cret', '"https://***@b"'],
    ['https://fleet:pa?s3cret@cp.example', 's3cret', '"https://***@cp.example"'],
  ])('refuses %s and masks its credentials', (url, secret, shown) => {
    const result = loadConfig({ argv: ['--control-plane-url', url, '--machine-id', 'web-01'], env: {}, stdoutIsTty: false });
    expect(result.kind).toBe('invalid');
    const problems = result.kind === 'invalid' ? result.problems : [];
    expect(problems).toEqual([expect.stringMatching(/must not carry a user name or password/)]);
    expect(problems[0]).toContain(`got ${shown} from --control-plane-url`);
    expect(problems[0]).not.toContain(secret);
  });
});
