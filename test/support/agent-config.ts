import { type AgentConfig, loadConfig } from '../../src/config/config.loader';
import { connectionArgs } from '../../dev/agent-args';
import type { ClientIdentity, Pki } from '../../dev/pki';

export interface TestConfigOptions {
  pki: Pki;
  controlPlaneUrl: string;
  stateDir: string;
  currentSystemPath?: string;
  identity?: ClientIdentity;
  machineId?: string;
  caCertPath?: string;
  /** Default trust.json beside the state dir (connectionArgs). */
  trustFile?: string;
  extra?: string[];
}

/** The agent's flags for a test, and the config the real loader makes of them. */
export function testArgs(o: TestConfigOptions): string[] {
  return [
    ...connectionArgs({
      controlPlaneUrl: o.controlPlaneUrl,
      machineId: o.machineId ?? o.pki.machineId,
      caCertPath: o.caCertPath ?? o.pki.caCertPath,
      identity: o.identity ?? o.pki.client,
      stateDir: o.stateDir,
      currentSystemPath: o.currentSystemPath ?? `${o.stateDir}/current-system`,
      trustFile: o.trustFile,
    }),
    '--log-format',
    'json',
    ...(o.extra ?? []),
  ];
}

export function testConfig(o: TestConfigOptions): AgentConfig {
  // No default settings file: a test's settings are its arguments, whatever this host has in /etc.
  const loaded = loadConfig({ argv: testArgs(o), env: {}, stdoutIsTty: false, defaultConfigPath: null });
  if (loaded.kind !== 'run') throw new Error(`test config is invalid: ${JSON.stringify(loaded)}`);
  return loaded.config;
}
