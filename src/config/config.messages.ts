import { envOf, fileKeyOf, flagOf, type SettingKey } from './settings';

export type ValueSource = 'flag' | 'env' | 'file' | 'default';

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

export const NOT_STARTED = 'the agent did not start; fix the settings above (see --help) and start it again';
