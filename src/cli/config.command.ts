import { WOULD_NOT_START } from '../config/config.messages';
import { type EffectiveSetting, type EffectiveSettings, HIDDEN_VALUE } from '../config/effective-settings';
import { SETTING_SPECS } from '../config/settings';
import { redactPem } from '../common/pem';

/** Exit statuses of `nixfleet-agent config`. */
export const CONFIG_EXIT = { valid: 0, invalid: 2 } as const;
export type ConfigExit = (typeof CONFIG_EXIT)[keyof typeof CONFIG_EXIT];

/** `nixfleet-agent config --json`: a contract, like /status; keys are only ever added. */
export interface ConfigDocument extends EffectiveSettings {
  /** The loader's problem lines, as on stderr; empty when the agent would start with these settings. */
  problems: string[];
}

export interface ConfigCommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

/**
 * Prints the effective settings (a table, or the JSON document), then any
 * problems on stderr. Shown with problems too: what the agent would run
 * with, and from where, is what explains them. Exit 0 valid, 2 not.
 */
export function runConfigCommand(
  effective: EffectiveSettings,
  problems: readonly string[],
  json: boolean,
  io: ConfigCommandIo,
): ConfigExit {
  if (json) {
    // A problem line quotes the value it refuses, a pasted key included: the logger's PEM rule applies here too.
    const doc: ConfigDocument = { ...effective, problems: problems.map(redactPem) };
    io.out(JSON.stringify(doc, null, 2));
  } else {
    io.out(formatEffectiveSettings(effective));
  }
  if (problems.length === 0) return CONFIG_EXIT.valid;
  for (const line of problems) io.err(redactPem(line));
  io.err(WOULD_NOT_START);
  return CONFIG_EXIT.invalid;
}

/** The settings file line, then one aligned row per setting: flag, value, where it came from. */
export function formatEffectiveSettings(effective: EffectiveSettings): string {
  const file = effective.configFile;
  const fileLine =
    file === null
      ? 'settings file: none'
      : `settings file: ${file.path} (${file.source === 'flag' ? 'from --config' : file.source === 'env' ? 'from NIXFLEET_AGENT_CONFIG' : 'the default path'})`;
  const rows: [string, string, string][] = [['SETTING', 'VALUE', 'SOURCE']];
  for (const spec of SETTING_SPECS) {
    const s = effective.settings[spec.key];
    rows.push([s.flag, valueText(s), sourceText(s)]);
  }
  const widths = [0, 1].map((col) => Math.max(...rows.map((r) => r[col].length)));
  const table = rows.map(([a, b, c]) => `${a.padEnd(widths[0])}  ${b.padEnd(widths[1])}  ${c}`.trimEnd());
  return [fileLine, '', ...table].join('\n');
}

function valueText(s: EffectiveSetting): string {
  if (s.hidden) return HIDDEN_VALUE;
  if (s.value === null || s.value === undefined) return '-';
  // Plain words as they are; anything with spaces, quotes or control characters quoted, so the columns stay columns.
  if (typeof s.value === 'string' && /^[\x21-\x7e]+$/.test(s.value) && !s.value.includes('"')) return s.value;
  if (typeof s.value === 'number' || typeof s.value === 'boolean') return String(s.value);
  return JSON.stringify(s.value);
}

function sourceText(s: EffectiveSetting): string {
  switch (s.source) {
    case 'flag':
    case 'env':
    case 'file':
      return `${s.source} ${s.from ?? ''}`;
    case 'default':
      return 'default';
    case 'unset':
      return 'unset';
    default: {
      const never: never = s.source;
      return never;
    }
  }
}
