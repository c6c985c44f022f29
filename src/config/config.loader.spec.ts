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
      defaultConfigPath: null,
    });
    expect(result).toEqual({ kind: 'events', stateDir: '/srv/state', rolloutId: 'stable@a1', pendingOnly: true, json: true });
    expect(loadConfig({ argv: ['events'], env: {}, stdoutIsTty: false, defaultConfigPath: null })).toEqual({
      kind: 'events',
      stateDir: '/var/lib/nixfleet-agent',
      rolloutId: null,
      pendingOnly: false,
      json: false,
    });
  });

  it('refuses a relative state dir for events, and the flags of one command on another, one line each', () => {
    const problems = (argv: string[]): string[] => {
      const result = loadConfig({ argv, env: {}, stdoutIsTty: false, defaultConfigPath: null });
      return result.kind === 'invalid' ? result.problems : [];
    };
    expect(problems(['events', '--state-dir', 'state'])).toEqual([
      'config error: --state-dir (env NIXFLEET_AGENT_STATE_DIR, file key "stateDir"): must be an absolute path, got "state" from --state-dir',
    ]);
    expect(problems(['status', '--pending'])).toEqual(['config error: --pending only applies to the events command']);
    expect(problems(['events', '-o', 'x.tgz'])).toEqual(['config error: --output only applies to the diagnostics command']);
    expect(problems(['events', '--rollout', ''])).toEqual(['config error: --rollout needs a value (see --help)']);
    expect(problems(['diagnostics', '-o'])).toEqual(['config error: --output needs a value (see --help)']);
    const invalid = loadConfig({ argv: ['events', '--rollout'], env: {}, stdoutIsTty: false, defaultConfigPath: null });
    expect(invalid).toEqual({ kind: 'invalid', problems: ['config error: --rollout needs a value (see --help)'], inspecting: true });
  });

  it('gives diagnostics every setting with its source, and what run would refuse, without stopping on it', () => {
    const result = loadConfig({
      argv: ['diagnostics', '-o', '/tmp/d.tgz', '--heartbeat-interval', 'abc', '--control-plane-url', 'https://fleet:s3cret@cp.test'],
      env: { NIXFLEET_AGENT_MACHINE_ID: 'web-01' },
      stdoutIsTty: false,
      defaultConfigPath: null,
    });
    if (result.kind !== 'diagnostics') throw new Error(`expected diagnostics, got ${JSON.stringify(result)}`);
    expect(result).toMatchObject({
      adminAddress: { kind: 'tcp', host: '127.0.0.1', port: 9850 },
      stateDir: '/var/lib/nixfleet-agent',
      output: '/tmp/d.tgz',
    });
    expect(result.settings.effective.settings).toMatchObject({
      machineId: { value: 'web-01', source: 'env' },
      heartbeatInterval: { value: 'abc', source: 'flag' },
      controlPlaneUrl: { value: 'https://***@cp.test', source: 'flag' },
      stateDir: { value: '/var/lib/nixfleet-agent', source: 'default' },
    });
    expect(result.settings.problems).toEqual([
      expect.stringMatching(
        /^config error: --heartbeat-interval .*must be a whole number of seconds.*, got "abc" from --heartbeat-interval$/,
      ),
      expect.stringMatching(
        /^config error: --control-plane-url .*: must not carry a user name or password .*, got "https:\/\/\*\*\*@cp.test" from --control-plane-url$/,
      ),
    ]);
    expect(JSON.stringify(result.settings.effective)).not.toContain('s3cret');
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

describe('loadConfig: one line per bad value, naming the flag', () => {
  const required = ['--control-plane-url', 'https://cp.test', '--machine-id', 'web-01'];
  const INTERVAL = 'config error: --heartbeat-interval (env NIXFLEET_AGENT_HEARTBEAT_INTERVAL, file key "heartbeatInterval"): ';
  const URL = 'config error: --control-plane-url (env NIXFLEET_AGENT_CONTROL_PLANE_URL, file key "controlPlaneUrl"): ';

  function problems(argv: string[], env: Record<string, string> = {}): string[] {
    const result = loadConfig({ argv, env, stdoutIsTty: false, defaultConfigPath: null });
    if (result.kind !== 'invalid') throw new Error(`expected problems, got ${JSON.stringify(result)}`);
    return result.problems;
  }

  it('says a heartbeat interval of "abc" is no whole number, and nothing about its bounds', () => {
    expect(problems([...required, '--heartbeat-interval', 'abc'])).toEqual([
      `${INTERVAL}must be a whole number of seconds, got "abc" from --heartbeat-interval`,
    ]);
    expect(problems(required, { NIXFLEET_AGENT_HEARTBEAT_INTERVAL: '1.5' })).toEqual([
      `${INTERVAL}must be a whole number of seconds, got "1.5" from NIXFLEET_AGENT_HEARTBEAT_INTERVAL`,
    ]);
  });

  it.each([
    [['--heartbeat-interval', '-5']],
    [['--heartbeat-interval=-5']],
    // After other flags, and before one: the "-5" is a value, the next flag still a flag.
    [['--heartbeat-interval', '-5', '--log-level', 'debug']],
  ])('takes %j as the value -5 and says it must be at least 1', (args) => {
    expect(problems([...required, ...args])).toEqual([`${INTERVAL}must be at least 1 second, got -5 from --heartbeat-interval`]);
  });

  it('still says a flag at the end of the line needs a value, and how to give one that starts with "-"', () => {
    expect(problems([...required, '--heartbeat-interval'])).toEqual(['config error: --heartbeat-interval needs a value (see --help)']);
    expect(problems([...required, '--state-dir', '-x'])).toEqual([
      'config error: --state-dir needs a value; one that starts with "-" is written --state-dir=VALUE',
    ]);
  });

  it.each([
    ['https://cp.test:70000', 'port 70000 is out of range 1-65535'],
    ['https://cp.test:0/fleet', 'port 0 is out of range 1-65535'],
    ['https://[fd00::1]:65536', 'port 65536 is out of range 1-65535'],
    // Not only the port is wrong: the first thing to fix is the scheme.
    ['http://cp.test:70000', 'must be an https:// URL'],
  ])('names what is wrong with the control-plane URL %s', (url, reason) => {
    expect(problems(['--control-plane-url', url, '--machine-id', 'web-01'])).toEqual([
      `${URL}${reason}, got ${JSON.stringify(url)} from --control-plane-url`,
    ]);
  });

  it('reports a --config file that cannot be read alone, not the required settings it would have set', () => {
    const missing = join(tmpdir(), 'nfa-no-such-dir', 'agent.json');
    expect(problems(['--config', missing])).toEqual([
      `config error: --config (env NIXFLEET_AGENT_CONFIG): cannot read ${missing}: no such file`,
    ]);
    expect(problems([], { NIXFLEET_AGENT_CONFIG: missing })).toEqual([
      `config error: --config (env NIXFLEET_AGENT_CONFIG): cannot read ${missing}: no such file`,
    ]);
  });

  it.each([
    ['--heartbeat-intervall', 'config error: unknown flag --heartbeat-intervall; did you mean --heartbeat-interval?'],
    ['--heartbeat-intervall=5', 'config error: unknown flag --heartbeat-intervall; did you mean --heartbeat-interval?'],
    ['--machine', 'config error: unknown flag --machine; did you mean --machine-id?'],
    ['--admin-listne', 'config error: unknown flag --admin-listne; did you mean --admin-listen?'],
    ['--frobnicate', 'config error: unknown flag --frobnicate (see --help)'],
  ])('refuses the unknown flag %s with a guess only when one is close', (flag, line) => {
    expect(problems([...required, flag])).toEqual([line]);
  });

  it('guesses the command, the environment variable and the file key meant, too', () => {
    expect(problems(['statsu'])).toEqual([
      'config error: unknown command "statsu"; did you mean "status"? commands are: run, status, config, events, diagnostics',
    ]);
    expect(problems(['deploy'])).toEqual([
      'config error: unknown command "deploy"; commands are: run, status, config, events, diagnostics',
    ]);
    expect(problems(required, { NIXFLEET_AGENT_MACHINE_IDD: 'x' })).toEqual([
      'config error: unknown environment variable NIXFLEET_AGENT_MACHINE_IDD; did you mean NIXFLEET_AGENT_MACHINE_ID?',
    ]);
    const dir = mkdtempSync(join(tmpdir(), 'nfa-loader-keys-'));
    try {
      const file = join(dir, 'agent.json');
      writeFileSync(file, JSON.stringify({ machineID: 'web-01', colour: true }));
      expect(problems([...required, '--config', file])).toEqual([
        `config error: unknown key "machineID" in ${file}; did you mean "machineId"?`,
        `config error: unknown key "colour" in ${file}; known keys are listed by --help`,
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses --json with run, naming the commands it applies to', () => {
    expect(problems([...required, '--json'])).toEqual(['config error: --json only applies to the status, config and events commands']);
  });
});

describe('loadConfig: how the commands find the settings and the agent', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-loader-discovery-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function settingsFile(name: string, settings: Record<string, unknown>): string {
    const file = join(dir, name);
    writeFileSync(file, JSON.stringify(settings));
    return file;
  }

  it('status finds the admin address in the default settings file when neither --config nor the env names one', () => {
    const defaultConfigPath = settingsFile('default.json', { adminListen: '127.0.0.1:4100', controlPlaneUrl: 'not a url' });
    expect(loadConfig({ argv: ['status'], env: {}, stdoutIsTty: false, defaultConfigPath })).toEqual({
      kind: 'status',
      adminAddress: { kind: 'tcp', host: '127.0.0.1', port: 4100 },
      json: false,
    });
  });

  it('status takes --admin-listen over the env over --config (flag or env) over the default file', () => {
    const defaultConfigPath = settingsFile('default-2.json', { adminListen: '127.0.0.1:4100' });
    const named = settingsFile('named.json', { adminListen: 'unix:/run/named.sock' });
    const port = (argv: string[], env: Record<string, string>): unknown => {
      const r = loadConfig({ argv: ['status', ...argv], env, stdoutIsTty: false, defaultConfigPath });
      return r.kind === 'status' ? r.adminAddress : r;
    };
    expect(port([], {})).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 4100 });
    expect(port(['--config', named], {})).toEqual({ kind: 'unix', path: '/run/named.sock' });
    expect(port([], { NIXFLEET_AGENT_CONFIG: named })).toEqual({ kind: 'unix', path: '/run/named.sock' });
    expect(port(['--config', named], { NIXFLEET_AGENT_ADMIN_LISTEN: '127.0.0.1:4200' })).toEqual({
      kind: 'tcp',
      host: '127.0.0.1',
      port: 4200,
    });
    expect(port(['--admin-listen', '[::1]:4300'], { NIXFLEET_AGENT_ADMIN_LISTEN: '127.0.0.1:4200' })).toEqual({
      kind: 'tcp',
      host: '::1',
      port: 4300,
    });
  });

  it('run reads the default settings file too, and records which file it read', () => {
    const defaultConfigPath = settingsFile('default-run.json', { controlPlaneUrl: 'https://cp.test', machineId: 'web-07' });
    const config = run(loadConfig({ argv: [], env: {}, stdoutIsTty: false, defaultConfigPath }));
    expect(config.machineId).toBe('web-07');
    expect(config.configFile).toBe(defaultConfigPath);
  });

  it('a default settings file that does not exist is none; one that cannot be read is named as the default', () => {
    const absent = join(dir, 'absent.json');
    const status = loadConfig({ argv: ['status'], env: {}, stdoutIsTty: false, defaultConfigPath: absent });
    expect(status).toEqual({ kind: 'status', adminAddress: { kind: 'tcp', host: '127.0.0.1', port: 9850 }, json: false });
    const config = run(
      loadConfig({
        argv: ['--control-plane-url', 'https://cp.test', '--machine-id', 'w'],
        env: {},
        stdoutIsTty: false,
        defaultConfigPath: absent,
      }),
    );
    expect(config.configFile).toBeNull();
    // A directory where the file should be: reading fails with EISDIR, not "no such file".
    expect(loadConfig({ argv: ['status'], env: {}, stdoutIsTty: false, defaultConfigPath: dir })).toEqual({
      kind: 'invalid',
      problems: [
        `config error: the default settings file (read when neither --config nor NIXFLEET_AGENT_CONFIG is set, if it exists): cannot read ${dir}: it is a directory`,
      ],
      inspecting: true,
    });
  });

  it('goes on without a default settings file it may not read, for the commands that only read; the agent itself refuses', () => {
    const defaultConfigPath = settingsFile('default-0600.json', { adminListen: '127.0.0.1:4100' });
    const denied = (path: string): string => {
      throw Object.assign(new Error(`EACCES: permission denied, open '${path}'`), { code: 'EACCES' });
    };
    const note = `note: the default settings file ${defaultConfigPath} cannot be read (permission denied); going on without it (give --config, or run as the agent's user)`;
    expect(loadConfig({ argv: ['status'], env: {}, stdoutIsTty: false, defaultConfigPath, readFile: denied })).toEqual({
      kind: 'status',
      adminAddress: { kind: 'tcp', host: '127.0.0.1', port: 9850 },
      json: false,
      notes: [note],
    });
    expect(loadConfig({ argv: ['events'], env: {}, stdoutIsTty: false, defaultConfigPath, readFile: denied })).toMatchObject({
      kind: 'events',
      notes: [note],
    });
    const report = loadConfig({ argv: ['diagnostics'], env: {}, stdoutIsTty: false, defaultConfigPath, readFile: denied });
    expect(report.kind === 'diagnostics' && report.settings.problems).toContain(note);
    // A file named by --config or the env is asked for: not reading it is an error, whoever asks.
    expect(loadConfig({ argv: ['status', '--config', defaultConfigPath], env: {}, stdoutIsTty: false, readFile: denied })).toEqual({
      kind: 'invalid',
      problems: [`config error: --config (env NIXFLEET_AGENT_CONFIG): cannot read ${defaultConfigPath}: permission denied`],
      inspecting: true,
    });
    const agent = loadConfig({ argv: [], env: {}, stdoutIsTty: false, defaultConfigPath, readFile: denied });
    expect(agent.kind === 'invalid' && agent.problems).toEqual([
      `config error: the default settings file (read when neither --config nor NIXFLEET_AGENT_CONFIG is set, if it exists): cannot read ${defaultConfigPath}: permission denied`,
    ]);
  });

  it('reads no settings file at all, not even the default, when NIXFLEET_AGENT_CONFIG is set and empty', () => {
    const defaultConfigPath = settingsFile('default-ignored.json', { adminListen: '127.0.0.1:4100' });
    expect(loadConfig({ argv: ['status'], env: { NIXFLEET_AGENT_CONFIG: '' }, stdoutIsTty: false, defaultConfigPath })).toEqual({
      kind: 'status',
      adminAddress: { kind: 'tcp', host: '127.0.0.1', port: 9850 },
      json: false,
    });
  });

  it('lets diagnostics record a settings file it cannot parse, unknown keys and unknown variables instead of refusing', () => {
    const broken = join(dir, 'broken.json');
    writeFileSync(broken, '{ "machineId": ');
    const unparsable = loadConfig({ argv: ['diagnostics', '--config', broken], env: {}, stdoutIsTty: false, defaultConfigPath: null });
    if (unparsable.kind !== 'diagnostics') throw new Error(`expected diagnostics, got ${JSON.stringify(unparsable)}`);
    expect(unparsable.settings.problems[0]).toMatch(
      new RegExp(`^config error: --config \\(env NIXFLEET_AGENT_CONFIG\\): ${broken} is not valid JSON`),
    );

    const typo = settingsFile('typo.json', { machineId: 'web-01', hearbeatInterval: 5 });
    const result = loadConfig({ argv: ['diagnostics', '--config', typo], env: { NIXFLEET_AGENT_STAT_DIR: '/x' }, stdoutIsTty: false });
    if (result.kind !== 'diagnostics') throw new Error(`expected diagnostics, got ${JSON.stringify(result)}`);
    expect(result.settings.problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          /^config error: unknown environment variable NIXFLEET_AGENT_STAT_DIR; did you mean NIXFLEET_AGENT_STATE_DIR\?/,
        ),
        `config error: unknown key "hearbeatInterval" in ${typo}; did you mean "heartbeatInterval"?`,
      ]),
    );
    expect(result.settings.effective.settings).toMatchObject({ machineId: { value: 'web-01', source: 'file' } });
  });

  it('has diagnostics stat the client key, never read it: a key path that is a directory is "not a regular file"', () => {
    const result = loadConfig({
      argv: ['diagnostics', '--client-cert', join(dir, 'absent.crt'), '--client-key', dir],
      env: {},
      stdoutIsTty: false,
      defaultConfigPath: null,
    });
    if (result.kind !== 'diagnostics') throw new Error(`expected diagnostics, got ${JSON.stringify(result)}`);
    expect(result.settings.problems).toContain(
      `config error: --client-key (env NIXFLEET_AGENT_CLIENT_KEY, file key "clientKey"): cannot read ${dir}: not a regular file`,
    );
    // The agent reads it, and says what reading said.
    const agent = loadConfig({ argv: ['--client-cert', join(dir, 'absent.crt'), '--client-key', dir], env: {}, stdoutIsTty: false });
    expect(agent.kind === 'invalid' && agent.problems.join('\n')).toContain(`cannot read ${dir}: it is a directory`);
  });

  it('does not read the default file when --config names another', () => {
    const defaultConfigPath = settingsFile('default-3.json', { machineId: 'from-default' });
    const named = settingsFile('named-2.json', { controlPlaneUrl: 'https://cp.test' });
    const result = loadConfig({ argv: ['--config', named], env: {}, stdoutIsTty: false, defaultConfigPath });
    expect(result).toEqual({
      kind: 'invalid',
      problems: ['config error: --machine-id (env NIXFLEET_AGENT_MACHINE_ID, file key "machineId"): is required but was not set'],
    });
  });

  it('config shows the effective settings with their sources, and the problems the agent would stop on', () => {
    const file = settingsFile('shown.json', { heartbeatInterval: 30, logLevel: 'loud' });
    const result = loadConfig({
      argv: ['config', '--json', '--config', file, '--machine-id', 'web-01'],
      env: { NIXFLEET_AGENT_STATE_DIR: '/srv/agent' },
      stdoutIsTty: false,
      defaultConfigPath: null,
    });
    if (result.kind !== 'config') throw new Error(JSON.stringify(result));
    expect(result.json).toBe(true);
    expect(result.effective.configFile).toEqual({ path: file, source: 'flag' });
    const s = result.effective.settings;
    expect(s.machineId).toEqual({
      flag: '--machine-id',
      env: 'NIXFLEET_AGENT_MACHINE_ID',
      value: 'web-01',
      hidden: false,
      source: 'flag',
      from: '--machine-id',
    });
    expect(s.stateDir).toMatchObject({ value: '/srv/agent', source: 'env', from: 'NIXFLEET_AGENT_STATE_DIR' });
    expect(s.heartbeatInterval).toMatchObject({ value: 30, source: 'file', from: `"heartbeatInterval" in ${file}` });
    expect(s.eventLogMaxMb).toMatchObject({ value: 64, source: 'default', from: null });
    expect(s.controlPlaneUrl).toMatchObject({ value: null, source: 'unset', from: null });
    expect(result.problems).toEqual([
      'config error: --control-plane-url (env NIXFLEET_AGENT_CONTROL_PLANE_URL, file key "controlPlaneUrl"): is required but was not set',
      `config error: --log-level (env NIXFLEET_AGENT_LOG_LEVEL, file key "logLevel"): must be one of: error, warn, info, debug, verbose, got "loud" from "logLevel" in ${file}`,
    ]);
  });
});
