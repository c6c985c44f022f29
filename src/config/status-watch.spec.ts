import { loadConfig } from './config.loader';

const ADMIN = ['--admin-listen', '127.0.0.1:1234'];
const load = (...argv: string[]) => loadConfig({ argv, env: {}, stdoutIsTty: false });

describe('status --watch and --interval, as the config loader reads them', () => {
  it('watches every 2 s by default, or every --interval seconds, with or without --json', () => {
    expect(load('status', '--watch', ...ADMIN)).toEqual({
      kind: 'status',
      adminAddress: { kind: 'tcp', host: '127.0.0.1', port: 1234 },
      json: false,
      watch: { intervalSecs: 2 },
    });
    expect(load('status', '--watch', '--interval', '0.5', '--json', ...ADMIN)).toMatchObject({
      kind: 'status',
      json: true,
      watch: { intervalSecs: 0.5 },
    });
  });

  it('leaves a status without --watch as it was: no watch key', () => {
    expect(load('status', ...ADMIN)).not.toHaveProperty('watch');
  });

  it.each([['abc'], ['0'], ['0.05'], ['3601'], ['1e3'], [' 2']])(
    'refuses --interval %j in one line naming the flag and its range',
    (value) => {
      // `inspecting`: status starts nothing, so the problem line is all it prints.
      expect(load('status', '--watch', '--interval', value, ...ADMIN)).toEqual({
        kind: 'invalid',
        inspecting: true,
        problems: [`config error: --interval must be a number of seconds from 0.1 to 3600, got ${JSON.stringify(value)}`],
      });
    },
  );

  it('refuses --interval without --watch, and --watch with another command', () => {
    expect(load('status', '--interval', '5', ...ADMIN)).toEqual({
      kind: 'invalid',
      inspecting: true,
      problems: ['config error: --interval only applies to status --watch (how often it refreshes)'],
    });
    const run = load('run', '--watch');
    expect(run.kind).toBe('invalid');
    expect(run.kind === 'invalid' && run.problems).toContain('config error: --watch only applies to the status command');
  });
});
