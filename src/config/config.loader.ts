import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { plainToInstance } from 'class-transformer';
import { isURL, validateSync } from '../common/class-validator';
import { CERT_EXPIRY_WARNING_DAYS } from '../clock/thresholds';
import { errnoText } from '../common/errno';
import { settingProblem, sourceText, whereToSet, type ValueSource } from './config.messages';
import { isLoopback, parseListenAddress, type ListenAddress } from './listen-address';
import { CONTROL_PLANE_URL_RULES, envOf, fileKeyOf, flagOf, SETTING_SPECS, Settings, type SettingKey, type SettingSpec } from './settings';

/** Settings after validation, plus what was derived from them. Read-only everywhere. */
export type AgentConfig = Readonly<Settings> & {
  readonly adminAddress: ListenAddress;
  readonly configFile: string | null;
  /** What systemd told this process through its environment (not settings an operator gives). */
  readonly systemd: SystemdEnv;
  /** `PATH`: where the activation backends' programs are found, as spawning them finds them. */
  readonly execSearchPath: string;
};

export interface SystemdEnv {
  /** `NOTIFY_SOCKET`: where sd_notify messages go; null when not run by systemd with Type=notify. */
  readonly notifySocket: string | null;
  /** `WATCHDOG_USEC`, when `WATCHDOG_PID` is unset or names this process. */
  readonly watchdogUsec: number | null;
}

/** sd_notify(3)'s rules: WATCHDOG_USEC applies only to the process WATCHDOG_PID names, if any. */
export function systemdEnv(env: Readonly<Record<string, string | undefined>>, pid: number): SystemdEnv {
  const notifySocket = env.NOTIFY_SOCKET && env.NOTIFY_SOCKET !== '' ? env.NOTIFY_SOCKET : null;
  const usec = env.WATCHDOG_USEC !== undefined && /^\d+$/.test(env.WATCHDOG_USEC) ? Number(env.WATCHDOG_USEC) : null;
  const forUs = env.WATCHDOG_PID === undefined || env.WATCHDOG_PID === String(pid);
  return { notifySocket, watchdogUsec: usec !== null && usec > 0 && forUs ? usec : null };
}

export type Command = 'run' | 'status' | 'events' | 'diagnostics';

/** What `diagnostics` records of the settings: every value as merged (invalid ones too) and where it came from. */
export interface SettingsSeen {
  readonly values: Readonly<Partial<Record<SettingKey, unknown>>>;
  readonly sources: ReadonlyMap<SettingKey, ValueSource>;
  readonly configFile: string | null;
  /** What `run` would refuse in them (a bug report is written when things are broken: they do not stop `diagnostics`). */
  readonly problems: readonly string[];
}

export type LoadResult =
  | { kind: 'help'; text: string }
  | { kind: 'version' }
  | { kind: 'run'; config: AgentConfig }
  | { kind: 'status'; adminAddress: ListenAddress; json: boolean }
  | { kind: 'events'; stateDir: string; rolloutId: string | null; pendingOnly: boolean; json: boolean }
  | { kind: 'diagnostics'; adminAddress: ListenAddress; stateDir: string; output: string | null; settings: SettingsSeen }
  /** `inspecting`: a command that only reads (status, events, diagnostics): no "the agent did not start" line. */
  | { kind: 'invalid'; problems: string[]; inspecting?: true };

export interface LoadInput {
  argv: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
  stdoutIsTty: boolean;
  /** For WATCHDOG_PID; this process's pid when omitted. */
  pid?: number;
}

const COMMANDS: readonly Command[] = ['run', 'status', 'events', 'diagnostics'];
/** The settings each inspection command needs; the others are not its business, so a bad one does not stop it. */
const COMMAND_SETTINGS: Readonly<Record<Exclude<Command, 'run'>, readonly SettingKey[]>> = {
  status: ['adminListen', 'adminAllowRemote'],
  events: ['stateDir'],
  diagnostics: ['adminListen', 'adminAllowRemote', 'stateDir'],
};
/** Flags of one command only (`--json` of two). */
const COMMAND_FLAGS: Readonly<Record<string, readonly Command[]>> = {
  json: ['status', 'events'],
  rollout: ['events'],
  pending: ['events'],
  output: ['diagnostics'],
};
const ENV_PREFIX = 'NIXFLEET_AGENT_';
const CONFIG_ENV = `${ENV_PREFIX}CONFIG`;

/**
 * Flags > env > JSON file > defaults, validated once. Every problem becomes
 * one line naming the flag, the env variable and the file key; the caller
 * exits 2 on any.
 */
export function loadConfig(input: LoadInput): LoadResult {
  const options: ParseArgsConfig['options'] = {
    help: { type: 'boolean', short: 'h' },
    version: { type: 'boolean' },
    config: { type: 'string' },
    json: { type: 'boolean' },
    rollout: { type: 'string' },
    pending: { type: 'boolean' },
    output: { type: 'string', short: 'o' },
  };
  for (const spec of SETTING_SPECS) {
    options[flagOf(spec.key).slice(2)] = { type: spec.kind === 'bool' ? 'boolean' : 'string' };
  }

  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args: [...input.argv], options, strict: true, allowPositionals: true }) as typeof parsed;
  } catch (err) {
    return { kind: 'invalid', problems: [argvProblem(err)], ...inspectingOf(input.argv, options) };
  }
  if (parsed.values.help) return { kind: 'help', text: helpText(input.stdoutIsTty) };
  if (parsed.values.version) return { kind: 'version' };

  const problems: string[] = [];
  const [commandRaw = 'run', ...extra] = parsed.positionals;
  const command = COMMANDS.find((c) => c === commandRaw);
  if (!command) problems.push(`config error: unknown command "${commandRaw}"; commands are: ${COMMANDS.join(', ')}`);
  if (extra.length > 0) problems.push(`config error: unexpected argument "${extra[0]}" (see --help)`);
  for (const [flag, commands] of Object.entries(COMMAND_FLAGS)) {
    if (parsed.values[flag] === undefined || (command !== undefined && commands.includes(command))) continue;
    const which = commands.length === 1 ? `the ${commands[0]} command` : `the ${commands.join(' and ')} commands`;
    problems.push(`config error: --${flag} only applies to ${which}`);
  }
  for (const flag of ['rollout', 'output']) {
    if (parsed.values[flag] === '') problems.push(`config error: --${flag} needs a value (see --help)`);
  }

  for (const name of Object.keys(input.env)) {
    if (!name.startsWith(ENV_PREFIX) || name === CONFIG_ENV) continue;
    if (!SETTING_SPECS.some((s) => envOf(s.key) === name)) {
      problems.push(`config error: unknown environment variable ${name}; known ones are listed by --help`);
    }
  }

  const configFile = stringOr(parsed.values.config) ?? nonEmpty(input.env[CONFIG_ENV]) ?? null;
  const file = configFile === null ? {} : readConfigFile(configFile, problems);

  const raw: Record<string, unknown> = {};
  const sources = new Map<SettingKey, ValueSource>();
  const needed = command === undefined || command === 'run' ? null : COMMAND_SETTINGS[command];
  /** Problems of settings the command does not need: only `diagnostics` reports them, in its archive. */
  const notNeeded: string[] = [];
  for (const spec of SETTING_SPECS) {
    const picked = pick(spec, parsed.values, input.env, file, input.stdoutIsTty);
    if (picked === undefined) {
      if (spec.required) (command === 'run' ? problems : notNeeded).push(settingProblem(spec.key, 'is required but was not set'));
      continue;
    }
    sources.set(spec.key, picked.source);
    raw[spec.key] = coerce(spec, picked.value);
  }

  const settings = plainToInstance(Settings, raw);
  for (const error of validateSync(settings, { forbidUnknownValues: true })) {
    const key = error.property as SettingKey;
    const source = sources.get(key);
    if (source === undefined) continue; // already reported as missing
    const reported = needed === null || needed.includes(key) ? problems : notNeeded;
    let shown: unknown = error.value;
    if (key === 'controlPlaneUrl' && hasUserinfo(error.value)) {
      // Said below; whether the rest of the URL is good is judged without the credentials (a "/" in a password breaks it).
      if (isURL(withoutUserinfo(error.value, ''), CONTROL_PLANE_URL_RULES)) continue;
      shown = withoutUserinfo(error.value, '***@');
    }
    const reasons = Object.values(error.constraints ?? {}).join('; ');
    reported.push(settingProblem(key, `${reasons}, got ${JSON.stringify(shown)} ${sourceText(key, source, configFile ?? undefined)}`));
  }
  const cpSource = sources.get('controlPlaneUrl');
  if (command === 'run' && cpSource !== undefined && hasUserinfo(settings.controlPlaneUrl)) {
    problems.push(
      settingProblem(
        'controlPlaneUrl',
        `must not carry a user name or password (the agent authenticates with its client certificate, and the URL is shown in logs and /status), got ${JSON.stringify(withoutUserinfo(settings.controlPlaneUrl, '***@'))} ${sourceText('controlPlaneUrl', cpSource, configFile ?? undefined)}`,
      ),
    );
  }

  // Only the state dir: the admin endpoint is not asked.
  if (command === 'events') {
    if (problems.length > 0) return { kind: 'invalid', problems, inspecting: true };
    const rolloutId = stringOr(parsed.values.rollout) ?? null;
    return {
      kind: 'events',
      stateDir: settings.stateDir,
      rolloutId,
      pendingOnly: parsed.values.pending === true,
      json: parsed.values.json === true,
    };
  }
  const adminAddress = resolveAdminAddress(settings, problems);
  if (command === 'status') {
    if (problems.length > 0 || !adminAddress) return { kind: 'invalid', problems, inspecting: true };
    return { kind: 'status', adminAddress, json: parsed.values.json === true };
  }
  if (command === 'diagnostics') {
    if (problems.length > 0 || !adminAddress) return { kind: 'invalid', problems, inspecting: true };
    const values: Partial<Record<SettingKey, unknown>> = {};
    for (const key of sources.keys()) {
      const value = raw[key];
      // Credentials in the URL never leave the host, even in a bug report.
      values[key] = key === 'controlPlaneUrl' && hasUserinfo(value) ? withoutUserinfo(value, '***@') : value;
    }
    return {
      kind: 'diagnostics',
      adminAddress,
      stateDir: settings.stateDir,
      output: stringOr(parsed.values.output) ?? null,
      settings: { values, sources, configFile, problems: notNeeded },
    };
  }

  const clientCertSet = settings.clientCert !== undefined;
  const clientKeySet = settings.clientKey !== undefined;
  if (clientCertSet !== clientKeySet) {
    const [given, missing]: SettingKey[] = clientCertSet ? ['clientCert', 'clientKey'] : ['clientKey', 'clientCert'];
    problems.push(
      settingProblem(missing, `must be set together with ${flagOf(given)}; a client certificate needs its key and the other way round`),
    );
  }
  if (Array.isArray(settings.activationCommand) && settings.activationCommand.length === 0) {
    problems.push(settingProblem('activationCommand', 'must name a program, got []'));
  } else if (settings.activationBackend === 'command') {
    if (settings.activationCommand === undefined) {
      problems.push(settingProblem('activationCommand', 'is required with --activation-backend command'));
    } else if (Array.isArray(settings.activationCommand) && !settings.activationCommand.some((a) => a.includes('{closure}'))) {
      problems.push(settingProblem('activationCommand', 'must contain the {closure} placeholder in some argument'));
    }
  }
  for (const key of ['caCert', 'clientCert', 'clientKey'] as const) {
    const path = settings[key];
    if (path === undefined) continue;
    const why = unreadable(path);
    if (why) problems.push(settingProblem(key, `cannot read ${path}: ${why}`));
  }

  if (problems.length > 0 || !command || !adminAddress) return { kind: 'invalid', problems };
  const config: AgentConfig = Object.freeze(
    Object.assign(settings, {
      adminAddress,
      configFile,
      systemd: systemdEnv(input.env, input.pid ?? process.pid),
      execSearchPath: input.env.PATH ?? '',
    }),
  );
  return { kind: 'run', config };
}

/**
 * `user:password@` in a URL. Judged on the text, not on `new URL()`: a
 * password with an unencoded "/", "?" or "#" makes a parser see a host and a
 * path, and the password would be echoed as part of them.
 *
 * An "@" in the authority (between "//" and the first "/", "?" or "#") is
 * userinfo. An "@" further on is a path's (`https://cp.example/a@b`), unless
 * what stands before that first delimiter is no `host[:port]`: then it is a
 * password cut by its own "/" (`https://fleet:pa/ss@cp.example`).
 */
const AUTHORITY = /^[^/?#]*\/\/([^/?#]*)/;
const HOST_PORT = /^(?:\[[0-9A-Fa-f:.]+\]|[^:@[\]]*)(?::\d*)?$/;

function hasUserinfo(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const authority = AUTHORITY.exec(value);
  if (authority === null) return false;
  if (authority[1].includes('@')) return true;
  return value.indexOf('@', authority[0].length) !== -1 && !HOST_PORT.test(authority[1]);
}

/**
 * The URL with everything between "//" and its last "@" replaced: hiding a
 * path with it is harmless, leaving a piece of a password is not.
 */
function withoutUserinfo(value: string, mask: string): string {
  return value.replace(/^([^/?#]*\/\/).*@/s, `$1${mask}`);
}

function resolveAdminAddress(settings: Settings, problems: string[]): ListenAddress | undefined {
  if (typeof settings.adminListen !== 'string') return undefined;
  const listen = parseListenAddress(settings.adminListen);
  if (!listen.ok) {
    problems.push(settingProblem('adminListen', `${listen.reason}, got "${settings.adminListen}"`));
    return undefined;
  }
  if (!isLoopback(listen.value) && settings.adminAllowRemote !== true) {
    problems.push(
      settingProblem(
        'adminListen',
        `"${settings.adminListen}" is not a loopback address; the admin endpoint has no authentication, so set ${flagOf('adminAllowRemote')} to expose it deliberately`,
      ),
    );
    return undefined;
  }
  return listen.value;
}

function pick(
  spec: SettingSpec,
  flags: Record<string, string | boolean | undefined>,
  env: Readonly<Record<string, string | undefined>>,
  file: Record<string, unknown>,
  stdoutIsTty: boolean,
): { value: unknown; source: ValueSource } | undefined {
  const flag = flags[flagOf(spec.key).slice(2)];
  if (flag !== undefined) return { value: flag, source: 'flag' };
  const fromEnv = env[envOf(spec.key)];
  if (fromEnv !== undefined && fromEnv !== '') return { value: fromEnv, source: 'env' };
  if (Object.hasOwn(file, fileKeyOf(spec.key))) return { value: file[fileKeyOf(spec.key)], source: 'file' };
  const fallback = spec.default?.({ stdoutIsTty });
  return fallback === undefined ? undefined : { value: fallback, source: 'default' };
}

/** Env and flags arrive as strings; leave anything unconvertible as-is so validation names it. */
function coerce(spec: SettingSpec, value: unknown): unknown {
  if (typeof value !== 'string') return value;
  switch (spec.kind) {
    case 'string':
      return value;
    case 'int':
      return /^\s*-?\d+\s*$/.test(value) ? Number(value) : value;
    case 'argv':
      try {
        return JSON.parse(value) as unknown;
      } catch {
        return value;
      }
    case 'bool': {
      const v = value.trim().toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(v)) return true;
      if (['0', 'false', 'no', 'off'].includes(v)) return false;
      return value;
    }
    default: {
      const never: never = spec.kind;
      return never;
    }
  }
}

function readConfigFile(path: string, problems: string[]): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    problems.push(`config error: --config (env ${CONFIG_ENV}): cannot read ${path}: ${errnoText(err)}`);
    return {};
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    problems.push(`config error: --config (env ${CONFIG_ENV}): ${path} is not valid JSON: ${(err as Error).message}`);
    return {};
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    problems.push(`config error: --config (env ${CONFIG_ENV}): ${path} must hold a JSON object of settings`);
    return {};
  }
  const known = new Set(SETTING_SPECS.map((s) => fileKeyOf(s.key)));
  for (const key of Object.keys(data)) {
    if (!known.has(key)) problems.push(`config error: unknown key "${key}" in ${path}; known keys are listed by --help`);
  }
  return data as Record<string, unknown>;
}

function unreadable(path: string): string | null {
  try {
    // Reading is the only honest check: root passes access(2) on any mode.
    readFileSync(path);
    return null;
  } catch (err) {
    return errnoText(err);
  }
}

/** Whether argv names an inspection command, judged leniently: the strict parse failed on a flag. */
function inspectingOf(argv: readonly string[], options: ParseArgsConfig['options']): { inspecting?: true } {
  let positionals: string[];
  try {
    ({ positionals } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true }));
  } catch {
    return {};
  }
  return positionals[0] === 'status' || positionals[0] === 'events' || positionals[0] === 'diagnostics' ? { inspecting: true } : {};
}

/** parseArgs explains at length; one line naming the flag is what an operator needs. */
function argvProblem(err: unknown): string {
  const e = err as { code?: string; message: string };
  const option = /'(-[^' ]+)/.exec(e.message)?.[1];
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `config error: unknown flag ${option ?? e.message} (see --help)`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return /does not take an argument/.test(e.message)
        ? `config error: ${option ?? 'a flag'} is a switch and takes no value (see --help)`
        : `config error: ${option ?? 'a flag'} needs a value (see --help)`;
    case undefined: // not parseArgs's own error: its message is all there is
    default:
      return `config error: ${e.message} (see --help)`;
  }
}

function stringOr(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

export function helpText(stdoutIsTty: boolean): string {
  const lines = [
    'Usage: nixfleet-agent [run] [settings]       run the agent',
    '       nixfleet-agent status [--json]        ask the running agent for its status',
    '       nixfleet-agent events [--rollout ID] [--pending] [--json]',
    '                                             list the event log (read from --state-dir; the agent may be running)',
    '       nixfleet-agent diagnostics [-o FILE]  write a redacted .tar.gz for a bug report (no key material)',
    '       nixfleet-agent --help | --version',
    '',
    'Settings (flags win over environment, environment over the --config JSON file, which wins over defaults):',
    '',
    `  --config PATH  (env ${CONFIG_ENV})`,
    '      JSON file of settings; its keys are the names in quotes below',
  ];
  for (const spec of SETTING_SPECS) {
    const def = spec.default?.({ stdoutIsTty });
    const shown = spec.required ? 'required' : def === undefined ? 'unset' : `default ${String(def)}`;
    lines.push(`  ${whereToSet(spec.key)}  [${shown}]`, `      ${spec.help}`);
  }
  lines.push(
    '',
    'Exit status of the agent: 0 clean shutdown, 2 configuration error (systemd does not restart on it), 1 any other failure.',
    // What `assess` in cli/status.command.ts calls degraded; its spec checks that this says all of it.
    'Exit status of status: 0 healthy; 1 degraded: control plane unreachable, event log failing, dispatch poll failing,',
    `event delivery paused, or the client certificate expired or within ${CERT_EXPIRY_WARNING_DAYS} days of expiry; 2 bad flags;`,
    '3 no agent answers at --admin-listen.',
  );
  return lines.join('\n');
}
