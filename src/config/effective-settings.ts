import type { ValueSource } from './config.messages';
import { envOf, fileKeyOf, flagOf, SETTING_SPECS, type SettingKey, type SettingSpec } from './settings';
import { maskUserinfo } from './url-credentials';
import { redactPem } from '../common/pem';

/** Where the --config file's path came from; `default` is DEFAULT_CONFIG_PATH, read only when it exists. */
export type ConfigFileSource = 'flag' | 'env' | 'default';

export interface ConfigFileRef {
  path: string;
  source: ConfigFileSource;
}

/** A setting's value as given (flags and env converted to numbers and booleans), before validation, and its source. */
export interface PickedSetting {
  value: unknown;
  source: ValueSource;
}

export interface EffectiveSetting {
  flag: string;
  env: string;
  /** As given, with a URL's credentials masked; null when unset or hidden. */
  value: unknown;
  /** A secret setting (`SettingSpec.secret`) that is set: its value is never shown. */
  hidden: boolean;
  source: ValueSource | 'unset';
  /** Exactly where: the flag, the env variable, `"key" in /path`; null for a default or an unset setting. */
  from: string | null;
}

/**
 * `nixfleet-agent config --json` and the diagnostics archive: every setting in
 * --help order, keyed by its name (the file key), what it is and where it
 * came from. Never a file's contents: the certificate and key settings are
 * their paths.
 */
export interface EffectiveSettings {
  configFile: ConfigFileRef | null;
  settings: Record<SettingKey, EffectiveSetting>;
}

/** Shown in place of a secret setting's value. */
export const HIDDEN_VALUE = '(set, hidden)';

/**
 * The effective settings and their sources, redacted: a pure function of what
 * the loader picked, so that `config` and `diagnostics` show the same thing.
 */
export function effectiveSettings(
  picked: ReadonlyMap<SettingKey, PickedSetting>,
  configFile: ConfigFileRef | null,
  specs: readonly SettingSpec[] = SETTING_SPECS,
): EffectiveSettings {
  const settings = {} as Record<SettingKey, EffectiveSetting>;
  for (const spec of specs) {
    const got = picked.get(spec.key);
    const base = { flag: flagOf(spec.key), env: envOf(spec.key) };
    if (got === undefined) {
      settings[spec.key] = { ...base, value: null, hidden: false, source: 'unset', from: null };
      continue;
    }
    const hidden = spec.secret === true;
    settings[spec.key] = {
      ...base,
      value: hidden ? null : redact(got.value),
      hidden,
      source: got.source,
      from: whereFrom(spec.key, got.source, configFile),
    };
  }
  return { configFile, settings };
}

function whereFrom(key: SettingKey, source: ValueSource, configFile: ConfigFileRef | null): string | null {
  switch (source) {
    case 'flag':
      return flagOf(key);
    case 'env':
      return envOf(key);
    case 'file':
      return `"${fileKeyOf(key)}" in ${configFile?.path ?? 'the config file'}`;
    case 'default':
      return null;
    default: {
      const never: never = source;
      return never;
    }
  }
}

/** Any string anywhere in the value (an argv holds strings too) with a URL's credentials masked and PEM blocks out. */
function redact(value: unknown): unknown {
  if (typeof value === 'string') return redactPem(maskUserinfo(value));
  if (Array.isArray(value)) return value.map(redact);
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redact(v)]));
  }
  return value;
}
