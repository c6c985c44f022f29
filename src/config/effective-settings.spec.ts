import { effectiveSettings, HIDDEN_VALUE, type PickedSetting } from './effective-settings';
import { SETTING_SPECS, type SettingKey } from './settings';

describe('effectiveSettings', () => {
  const picked = (entries: [SettingKey, PickedSetting][]): Map<SettingKey, PickedSetting> => new Map(entries);

  it('lists every setting in --help order, each with its flag, env variable, value and exact source', () => {
    const e = effectiveSettings(
      picked([
        ['machineId', { value: 'web-01', source: 'flag' }],
        ['heartbeatInterval', { value: 30, source: 'file' }],
        ['stateDir', { value: '/srv/agent', source: 'env' }],
        ['logLevel', { value: 'info', source: 'default' }],
      ]),
      { path: '/etc/nixfleet-agent.json', source: 'default' },
    );
    expect(Object.keys(e.settings)).toEqual(SETTING_SPECS.map((s) => s.key));
    expect(e.configFile).toEqual({ path: '/etc/nixfleet-agent.json', source: 'default' });
    expect(e.settings.machineId).toEqual({
      flag: '--machine-id',
      env: 'NIXFLEET_AGENT_MACHINE_ID',
      value: 'web-01',
      hidden: false,
      source: 'flag',
      from: '--machine-id',
    });
    expect(e.settings.heartbeatInterval).toMatchObject({
      value: 30,
      source: 'file',
      from: '"heartbeatInterval" in /etc/nixfleet-agent.json',
    });
    expect(e.settings.stateDir).toMatchObject({ value: '/srv/agent', source: 'env', from: 'NIXFLEET_AGENT_STATE_DIR' });
    expect(e.settings.logLevel).toMatchObject({ value: 'info', source: 'default', from: null });
    expect(e.settings.caCert).toEqual({
      flag: '--ca-cert',
      env: 'NIXFLEET_AGENT_CA_CERT',
      value: null,
      hidden: false,
      source: 'unset',
      from: null,
    });
  });

  it('never shows a secret setting: set, it is "(set, hidden)" in the table and null in JSON', () => {
    const specs = SETTING_SPECS.map((s) => (s.key === 'machineId' ? { ...s, secret: true } : s));
    const e = effectiveSettings(picked([['machineId', { value: 'hunter2', source: 'env' }]]), null, specs);
    expect(e.settings.machineId).toEqual({
      flag: '--machine-id',
      env: 'NIXFLEET_AGENT_MACHINE_ID',
      value: null,
      hidden: true,
      source: 'env',
      from: 'NIXFLEET_AGENT_MACHINE_ID',
    });
    expect(JSON.stringify(e)).not.toContain('hunter2');
    expect(HIDDEN_VALUE).toBe('(set, hidden)');
  });

  it("masks a URL's user name and password wherever a value holds one, in an argv too", () => {
    const e = effectiveSettings(
      picked([
        ['controlPlaneUrl', { value: 'https://fleet:s3cret@cp.example:8443', source: 'flag' }],
        ['activationCommand', { value: ['/bin/fetch', 'https://u:pa/ss@mirror.example/x', '{closure}'], source: 'file' }],
      ]),
      { path: '/tmp/a.json', source: 'flag' },
    );
    expect(e.settings.controlPlaneUrl.value).toBe('https://***@cp.example:8443');
    expect(e.settings.activationCommand.value).toEqual(['/bin/fetch', 'https://***@mirror.example/x', '{closure}']);
    expect(JSON.stringify(e)).not.toMatch(/s3cret|pa\/ss/);
  });
});
