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
    writeFileSync(file, JSON.stringify({ heartbeatInterval: 30, stateDir: '/srv/from-file', logLevel: 'debug', currentSystemPath: '/file/current' }));
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
    expect(run(loadConfig({ argv: [...required, '--admin-listen', 'unix:/run/nfa.sock'], env: {}, stdoutIsTty: false })).adminAddress).toEqual({
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
      const result = loadConfig({ argv: [...required, '--activation-backend', 'command', '--activation-command', value], env: {}, stdoutIsTty: false });
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
});
