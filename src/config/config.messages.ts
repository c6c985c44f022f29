import type { ConfigFileRef } from './effective-settings';
import { envOf, fileKeyOf, flagOf, type SettingKey } from './settings';

export type ValueSource = 'flag' | 'env' | 'file' | 'default';

export const CONFIG_ENV = 'NIXFLEET_AGENT_CONFIG';

/** Where an operator can set a setting, named in every problem line. */
export function whereToSet(key: SettingKey): string {
  return `${flagOf(key)} (env ${envOf(key)}, file key "${fileKeyOf(key)}")`;
}

export function sourceText(key: SettingKey, source: ValueSource, configPath?: string): string {
  switch (source) {
    case 'flag':
      return `from ${flagOf(key)}`;
    case 'env':
      return `from ${envOf(key)}`;
    case 'file':
      return `from "${fileKeyOf(key)}" in ${configPath ?? 'the config file'}`;
    case 'default':
      return 'the default';
    default: {
      const never: never = source;
      return never;
    }
  }
}

export function settingProblem(key: SettingKey, what: string): string {
  return `config error: ${whereToSet(key)}: ${what}`;
}

/** A problem with the settings file itself, naming how it was chosen: the default path surprises whoever did not give one. */
export function configFileProblem(file: ConfigFileRef, what: string): string {
  switch (file.source) {
    case 'flag':
    case 'env':
      return `config error: --config (env ${CONFIG_ENV}): ${what}`;
    case 'default':
      return `config error: the default settings file (read when neither --config nor ${CONFIG_ENV} is set, if it exists): ${what}`;
    default: {
      const never: never = file.source;
      return never;
    }
  }
}

export const NOT_STARTED = 'the agent did not start; fix the settings above (see --help) and start it again';

/** The closing line of `config` with bad settings: nothing was to start. */
export const WOULD_NOT_START = 'the agent would not start with these settings; fix the ones above (see --help)';
