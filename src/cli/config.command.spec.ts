import { loadConfig } from '../config/config.loader';
import { CONFIG_EXIT, type ConfigDocument, formatEffectiveSettings, runConfigCommand } from './config.command';

function loaded(argv: string[], env: Record<string, string> = {}) {
  const result = loadConfig({ argv: ['config', ...argv], env, stdoutIsTty: false, defaultConfigPath: null });
  if (result.kind !== 'config') throw new Error(JSON.stringify(result));
  return result;
}

function runIt(argv: string[], env: Record<string, string> = {}) {
  const r = loaded(argv, env);
  const out: string[] = [];
  const err: string[] = [];
  const code = runConfigCommand(r.effective, r.problems, r.json, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err };
}

describe('nixfleet-agent config', () => {
  const good = ['--control-plane-url', 'https://cp.test:8443', '--machine-id', 'web-01'];

  it('prints an aligned table of every setting, its value and where it came from, and exits 0', () => {
    const { code, out, err } = runIt(good, { NIXFLEET_AGENT_HEARTBEAT_INTERVAL: '15' });
    expect(code).toBe(CONFIG_EXIT.valid);
    expect(err).toEqual([]);
    const lines = out.split('\n');
    expect(lines[0]).toBe('settings file: none');
    expect(lines[2]).toMatch(/^SETTING +VALUE +SOURCE$/);
    const row = (flag: string): string => lines.find((l) => l.startsWith(`${flag} `)) ?? '';
    expect(row('--control-plane-url')).toMatch(/^--control-plane-url +https:\/\/cp\.test:8443 +flag --control-plane-url$/);
    expect(row('--heartbeat-interval')).toMatch(/^--heartbeat-interval +15 +env NIXFLEET_AGENT_HEARTBEAT_INTERVAL$/);
    expect(row('--state-dir')).toMatch(/^--state-dir +\/var\/lib\/nixfleet-agent +default$/);
    expect(row('--ca-cert')).toMatch(/^--ca-cert +- +unset$/);
    // Aligned: every row's value starts in the same column.
    const valueColumn = lines[2].indexOf('VALUE');
    for (const l of lines.slice(3)) expect(l.slice(valueColumn - 2, valueColumn)).toBe('  ');
  });

  it('prints the JSON document with --json: the settings file, each setting by name, and the problems', () => {
    const { code, out } = runIt([...good, '--json']);
    expect(code).toBe(0);
    const doc = JSON.parse(out) as ConfigDocument;
    expect(Object.keys(doc)).toEqual(['configFile', 'settings', 'problems']);
    expect(doc.configFile).toBeNull();
    expect(doc.problems).toEqual([]);
    expect(doc.settings.machineId).toEqual({
      flag: '--machine-id',
      env: 'NIXFLEET_AGENT_MACHINE_ID',
      value: 'web-01',
      hidden: false,
      source: 'flag',
      from: '--machine-id',
    });
    expect(doc.settings.adminAllowRemote).toMatchObject({ value: false, source: 'default' });
  });

  it('with bad settings still shows them, then says each problem on stderr and exits 2', () => {
    const { code, out, err } = runIt(['--machine-id', 'web-01', '--heartbeat-interval', 'abc']);
    expect(code).toBe(CONFIG_EXIT.invalid);
    expect(out).toMatch(/^--heartbeat-interval +"?abc"? +flag --heartbeat-interval$/m);
    expect(err).toEqual([
      'config error: --control-plane-url (env NIXFLEET_AGENT_CONTROL_PLANE_URL, file key "controlPlaneUrl"): is required but was not set',
      'config error: --heartbeat-interval (env NIXFLEET_AGENT_HEARTBEAT_INTERVAL, file key "heartbeatInterval"): must be a whole number of seconds, got "abc" from --heartbeat-interval',
      'the agent would not start with these settings; fix the ones above (see --help)',
    ]);
  });

  it("never prints a control-plane URL's password, though it is the reason the settings are refused", () => {
    const { code, out, err } = runIt(['--control-plane-url', 'https://fleet:hunter2@cp.test', '--machine-id', 'web-01']);
    expect(code).toBe(2);
    expect(out).toContain('https://***@cp.test');
    expect(`${out}\n${err.join('\n')}`).not.toContain('hunter2');
  });

  it('shows a hidden setting as "(set, hidden)" and an argv as JSON', () => {
    const r = loaded([...good, '--activation-backend', 'command', '--activation-command', '["/bin/act", "{closure}"]']);
    const text = formatEffectiveSettings({
      ...r.effective,
      settings: { ...r.effective.settings, machineId: { ...r.effective.settings.machineId, value: null, hidden: true } },
    });
    expect(text).toMatch(/^--machine-id +\(set, hidden\) +flag --machine-id$/m);
    expect(text).not.toContain('web-01');
    expect(text).toMatch(/^--activation-command +\["\/bin\/act","\{closure\}"\] +flag --activation-command$/m);
  });
});

describe('nixfleet-agent config in a terminal', () => {
  it('shows the log format default of the agent as a service (JSON), not of the terminal it is typed in', () => {
    const r = loadConfig({ argv: ['config'], env: {}, stdoutIsTty: true, defaultConfigPath: null });
    if (r.kind !== 'config') throw new Error(JSON.stringify(r));
    expect(r.effective.settings.logFormat).toMatchObject({ value: 'json', source: 'default' });
  });
});
