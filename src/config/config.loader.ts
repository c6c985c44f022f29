import { readFileSync, statSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { plainToInstance } from 'class-transformer';
import { isURL, validateSync, type ValidationError } from '../common/class-validator';
import { CERT_EXPIRY_WARNING_DAYS } from '../clock/thresholds';
import { errnoText } from '../common/errno';
import { DEFAULT_CONFIG_PATH } from './config.constants';
import { CONFIG_ENV, configFileProblem, settingProblem, sourceText, whereToSet } from './config.messages';
import { didYouMean } from './did-you-mean';
import { type ConfigFileRef, effectiveSettings, type EffectiveSettings, type PickedSetting } from './effective-settings';
import { isLoopback, parseListenAddress, type ListenAddress } from './listen-address';
import { type StatusWatch, statusWatchOf } from './status-watch';
import { CONTROL_PLANE_URL_RULES, envOf, fileKeyOf, flagOf, SETTING_SPECS, Settings, type SettingKey, type SettingSpec } from './settings';
import { hasUserinfo, withoutUserinfo } from './url-credentials';

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
  /** `JOURNAL_STREAM` (`<dev>:<inode>`) as given; the logger checks it against its own stdout and stderr. */
  readonly journalStream: string | null;
}

/** sd_notify(3)'s rules: WATCHDOG_USEC applies only to the process WATCHDOG_PID names, if any. */
export function systemdEnv(env: Readonly<Record<string, string | undefined>>, pid: number): SystemdEnv {
  const notifySocket = env.NOTIFY_SOCKET && env.NOTIFY_SOCKET !== '' ? env.NOTIFY_SOCKET : null;
  const usec = env.WATCHDOG_USEC !== undefined && /^\d+$/.test(env.WATCHDOG_USEC) ? Number(env.WATCHDOG_USEC) : null;
  const forUs = env.WATCHDOG_PID === undefined || env.WATCHDOG_PID === String(pid);
  const journalStream = env.JOURNAL_STREAM && env.JOURNAL_STREAM !== '' ? env.JOURNAL_STREAM : null;
  return { notifySocket, watchdogUsec: usec !== null && usec > 0 && forUs ? usec : null, journalStream };
}

/**
 * What a command needs of the settings, said once: `agent`, every setting
 * checked as the agent runs with it; `admin`, only those that find the
 * running agent's admin endpoint (the rest may be missing or wrong here: the
 * agent's own unit has them); `state`, only the state dir (it reads the
 * agent's files, not the agent); `report`, both, and the problems of all the
 * others recorded rather than refused (a bug report is written when things
 * are broken). A new command is one line here, its flags one
 * line each in COMMAND_FLAGS, and one case where `loadConfig` builds its result.
 */
interface CommandSpec {
  settings: 'agent' | 'admin' | 'state' | 'report';
  /** For --help: the command's arguments and what it does. */
  usage: string;
}

const COMMAND_SPECS = {
  run: { settings: 'agent', usage: '[run] [settings]       run the agent' },
  status: { settings: 'admin', usage: 'status [--json]        ask the running agent for its status' },
  config: { settings: 'agent', usage: 'config [--json]        print the effective settings and where each came from' },
  events: {
    settings: 'state',
    usage:
      'events [--rollout ID] [--pending] [--json]\n                                             list the event log, read from the state dir (the agent may run or not)',
  },
  diagnostics: { settings: 'report', usage: 'diagnostics [-o FILE]  write a redacted .tar.gz for a bug report (no key material)' },
} as const satisfies Record<string, CommandSpec>;

export type Command = keyof typeof COMMAND_SPECS;
const COMMANDS = Object.keys(COMMAND_SPECS) as Command[];

/** The settings that find the admin endpoint: all an `admin` command reads. */
const ADMIN_SETTINGS: readonly SettingKey[] = ['adminListen', 'adminAllowRemote'];
/** What each command that is not the agent reads of the settings. */
const NEEDED: Readonly<Record<Exclude<CommandSpec['settings'], 'agent'>, readonly SettingKey[]>> = {
  admin: ADMIN_SETTINGS,
  state: ['stateDir'],
  report: [...ADMIN_SETTINGS, 'stateDir'],
};

/** Flags of commands (not settings), each refused with any command it does not name. */
interface CommandFlag {
  type: 'boolean' | 'string';
  short?: string;
  commands: readonly Command[];
}

const COMMAND_FLAGS = {
  json: { type: 'boolean', commands: ['status', 'config', 'events'] },
  watch: { type: 'boolean', commands: ['status'] },
  interval: { type: 'string', commands: ['status'] },
  rollout: { type: 'string', commands: ['events'] },
  pending: { type: 'boolean', commands: ['events'] },
  output: { type: 'string', short: 'o', commands: ['diagnostics'] },
} as const satisfies Record<string, CommandFlag>;

type CommandFlagName = keyof typeof COMMAND_FLAGS;

export type LoadResult =
  | { kind: 'help'; text: string }
  | { kind: 'version' }
  | { kind: 'run'; config: AgentConfig }
  | { kind: 'status'; adminAddress: ListenAddress; json: boolean; watch?: StatusWatch; notes?: string[] }
  /** Shown even with problems (they are the reason an operator asks); the command exits 2 then. */
  | { kind: 'config'; json: boolean; effective: EffectiveSettings; problems: string[]; notes?: string[] }
  | { kind: 'events'; stateDir: string; rolloutId: string | null; pendingOnly: boolean; json: boolean; notes?: string[] }
  | { kind: 'diagnostics'; adminAddress: ListenAddress; stateDir: string; output: string | null; settings: SettingsSeen; notes?: string[] }
  /** `inspecting`: a command that only reads (status, config, events, diagnostics): no "the agent did not start" line. */
  | { kind: 'invalid'; problems: string[]; inspecting?: true };

/** What `diagnostics` records of the settings: each one's value and source (as `config` shows them), and what `run` would refuse. */
export interface SettingsSeen {
  readonly effective: EffectiveSettings;
  readonly problems: readonly string[];
}

/** The commands that only read: they start nothing, so a problem line is all they say. */
const INSPECTING: readonly Command[] = ['status', 'config', 'events', 'diagnostics'];

export interface LoadInput {
  argv: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
  stdoutIsTty: boolean;
  /** For WATCHDOG_PID; this process's pid when omitted. */
  pid?: number;
  /**
   * The settings file read, when it exists, if neither --config nor
   * NIXFLEET_AGENT_CONFIG is given; DEFAULT_CONFIG_PATH when omitted, none when null.
   */
  defaultConfigPath?: string | null;
  /**
   * Reads the settings file; readFileSync when omitted. Tests run as root, which no file mode refuses: a
   * permission error can only be handed in.
   */
  readFile?: (path: string) => string;
}

const ENV_PREFIX = 'NIXFLEET_AGENT_';

type ArgValues = Record<string, string | boolean | undefined>;

/**
 * Flags > env > JSON file > defaults, validated once. Every problem becomes
 * one line naming the flag, the env variable and the file key; the caller
 * exits 2 on any.
 */
export function loadConfig(input: LoadInput): LoadResult {
  const options = argvOptions();
  let parsed: { values: ArgValues; positionals: string[] };
  try {
    parsed = parseArgs({ args: joinNegativeValues(input.argv, options), options, strict: true, allowPositionals: true }) as typeof parsed;
  } catch (err) {
    return { kind: 'invalid', problems: [argvProblem(err, options)], ...inspectingOf(input.argv, options) };
  }
  const values = parsed.values;
  if (values.help) return { kind: 'help', text: helpText(input.stdoutIsTty) };
  if (values.version) return { kind: 'version' };

  const [commandRaw = 'run', ...extra] = parsed.positionals;
  const command = COMMANDS.find((c) => c === commandRaw);
  // Without a known command there is no knowing which settings matter: this line alone.
  if (!command) return { kind: 'invalid', problems: [unknownCommand(commandRaw)] };
  const needs: CommandSpec['settings'] = COMMAND_SPECS[command].settings;
  const needed = needs === 'agent' ? null : NEEDED[needs];
  const inspecting = INSPECTING.includes(command) ? { inspecting: true as const } : {};

  const problems: string[] = [];
  /** Problems of the settings a `report` command does not need: recorded in its report, not refused. */
  const notNeeded: string[] = [];
  if (extra.length > 0) problems.push(`config error: unexpected argument "${extra[0]}" (see --help)`);
  for (const [name, flag] of Object.entries(COMMAND_FLAGS) as [CommandFlagName, CommandFlag][]) {
    if (values[name] !== undefined && !flag.commands.includes(command)) {
      problems.push(`config error: --${name} only applies to the ${listed(flag.commands)} command${flag.commands.length > 1 ? 's' : ''}`);
    }
  }
  for (const name of ['rollout', 'output'] as const) {
    if (values[name] === '') problems.push(`config error: --${name} needs a value (see --help)`);
  }
  // `diagnostics` exists for the host whose settings are wrong: what it does not need, it records instead of refusing.
  const unneeded = needs === 'report' ? notNeeded : problems;
  unneeded.push(...unknownEnvProblems(input.env));

  const candidate = configFileOf(values, input.env, input.defaultConfigPath === undefined ? DEFAULT_CONFIG_PATH : input.defaultConfigPath);
  let file = candidate === null ? NO_FILE : readConfigFile(candidate, command !== 'run', input.readFile ?? readUtf8);
  if (!file.ok && needs === 'report') {
    notNeeded.push(file.problem);
    file = NO_FILE;
  }
  // Every setting the file holds would also be reported missing or defaulted: the file's line alone says it.
  if (!file.ok) return { kind: 'invalid', problems: [...problems, file.problem], ...inspecting };
  unneeded.push(...file.problems);
  const configFile = file.read ? candidate : null;
  const notes = file.note === undefined ? {} : { notes: [file.note] };
  if (file.note !== undefined && needs === 'report') notNeeded.push(file.note);

  // `config` shows what the agent would run with, and it runs as a service, its stdout no terminal (JSON logs).
  const stdoutIsTty = command === 'config' ? false : input.stdoutIsTty;
  const picked = new Map<SettingKey, PickedSetting>();
  const raw: Record<string, unknown> = {};
  for (const spec of SETTING_SPECS) {
    const got = pick(spec, values, input.env, file.data, stdoutIsTty);
    if (got === undefined) {
      if (spec.required && needs === 'agent') problems.push(settingProblem(spec.key, 'is required but was not set'));
      if (spec.required && needs === 'report') notNeeded.push(settingProblem(spec.key, 'is required but was not set'));
      continue;
    }
    picked.set(spec.key, got);
    raw[spec.key] = got.value;
  }

  const settings = plainToInstance(Settings, raw);
  const configPath = configFile?.path;
  for (const error of validateSync(settings, { forbidUnknownValues: true })) {
    const key = error.property as SettingKey;
    const source = picked.get(key)?.source;
    if (source === undefined) continue; // already reported as missing
    const reported = needed === null || needed.includes(key) ? problems : needs === 'report' ? notNeeded : null;
    if (reported === null) continue;
    let shown: unknown = error.value;
    if (key === 'controlPlaneUrl' && hasUserinfo(error.value)) {
      // Said below; whether the rest of the URL is good is judged without the credentials (a "/" in a password breaks it).
      if (isURL(withoutUserinfo(error.value, ''), CONTROL_PLANE_URL_RULES)) continue;
      shown = withoutUserinfo(error.value, '***@');
    }
    reported.push(settingProblem(key, `${firstReason(error)}, got ${JSON.stringify(shown)} ${sourceText(key, source, configPath)}`));
  }
  // `events` reads files, not the agent: its admin address is not its business.
  const adminAddress = needs === 'state' ? undefined : resolveAdminAddress(settings, problems);

  if (needs === 'agent') problems.push(...agentProblems(settings, picked, configPath));
  // Not even to check it can be read: diagnostics never opens the key file.
  if (needs === 'report') notNeeded.push(...agentProblems(settings, picked, configPath, { openKey: false }));

  switch (command) {
    case 'status': {
      const watch = statusWatchOf(values, problems);
      if (problems.length > 0 || !adminAddress) return { kind: 'invalid', problems, ...inspecting };
      return { kind: 'status', adminAddress, json: values.json === true, ...(watch === undefined ? {} : { watch }), ...notes };
    }
    case 'events':
      if (problems.length > 0) return { kind: 'invalid', problems, ...inspecting };
      return {
        kind: 'events',
        stateDir: settings.stateDir,
        rolloutId: typeof values.rollout === 'string' ? values.rollout : null,
        pendingOnly: values.pending === true,
        json: values.json === true,
        ...notes,
      };
    case 'diagnostics':
      if (problems.length > 0 || !adminAddress) return { kind: 'invalid', problems, ...inspecting };
      return {
        kind: 'diagnostics',
        adminAddress,
        stateDir: settings.stateDir,
        output: typeof values.output === 'string' ? values.output : null,
        settings: { effective: effectiveSettings(picked, configFile), problems: notNeeded },
        ...notes,
      };
    case 'config':
      return { kind: 'config', json: values.json === true, effective: effectiveSettings(picked, configFile), problems, ...notes };
    case 'run': {
      if (problems.length > 0 || !adminAddress) return { kind: 'invalid', problems };
      const config: AgentConfig = Object.freeze(
        Object.assign(settings, {
          adminAddress,
          configFile: configFile?.path ?? null,
          systemd: systemdEnv(input.env, input.pid ?? process.pid),
          execSearchPath: input.env.PATH ?? '',
        }),
      );
      return { kind: 'run', config };
    }
    default: {
      const never: never = command;
      return never;
    }
  }
}

/** The rules across settings, and the files the agent reads at start; only the agent's commands need them. */
function agentProblems(
  settings: Settings,
  picked: ReadonlyMap<SettingKey, PickedSetting>,
  configPath: string | undefined,
  { openKey }: { openKey: boolean } = { openKey: true },
): string[] {
  const problems: string[] = [];
  const cpSource = picked.get('controlPlaneUrl')?.source;
  if (cpSource !== undefined && hasUserinfo(settings.controlPlaneUrl)) {
    problems.push(
      settingProblem(
        'controlPlaneUrl',
        `must not carry a user name or password (the agent authenticates with its client certificate, and the URL is shown in logs and /status), got ${JSON.stringify(withoutUserinfo(settings.controlPlaneUrl, '***@'))} ${sourceText('controlPlaneUrl', cpSource, configPath)}`,
      ),
    );
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
    if (typeof path !== 'string' || path === '') continue;
    const why = key === 'clientKey' && !openKey ? notAFile(path) : unreadable(path);
    if (why) problems.push(settingProblem(key, `cannot read ${path}: ${why}`));
  }
  return problems;
}

/**
 * One reason per value: "abc" for a number breaks its type and both its
 * bounds, and only the first is true to say. A check of the type comes
 * before one of the form, which comes before the bounds.
 */
const REASON_ORDER = ['isString', 'isInt', 'isBoolean', 'isArray', 'isNotEmpty', 'isUrl', 'isIn', 'matches', 'min', 'max'];

function firstReason(error: ValidationError): string {
  const constraints = Object.entries(error.constraints ?? {});
  const rank = (name: string): number => {
    const i = REASON_ORDER.indexOf(name);
    return i === -1 ? REASON_ORDER.length : i;
  };
  constraints.sort(([a], [b]) => rank(a) - rank(b));
  return constraints[0]?.[1] ?? 'is not valid';
}

function argvOptions(): NonNullable<ParseArgsConfig['options']> {
  const options: NonNullable<ParseArgsConfig['options']> = {
    help: { type: 'boolean', short: 'h' },
    version: { type: 'boolean' },
    config: { type: 'string' },
  };
  for (const [name, flag] of Object.entries(COMMAND_FLAGS) as [CommandFlagName, CommandFlag][]) {
    options[name] = flag.short === undefined ? { type: flag.type } : { type: flag.type, short: flag.short };
  }
  for (const spec of SETTING_SPECS) {
    options[flagOf(spec.key).slice(2)] = { type: spec.kind === 'bool' ? 'boolean' : 'string' };
  }
  return options;
}

/**
 * `--heartbeat-interval -5` as `--heartbeat-interval=-5`: parseArgs takes
 * "-5" for a flag and says the value is missing, when the value is there and
 * only out of range. A negative number is never a flag of ours.
 */
function joinNegativeValues(argv: readonly string[], options: NonNullable<ParseArgsConfig['options']>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const next = argv[i + 1];
    const name = arg.startsWith('--') && !arg.includes('=') ? arg.slice(2) : undefined;
    if (name !== undefined && options[name]?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      out.push(`${arg}=${next}`);
      i++;
      continue;
    }
    out.push(arg);
  }
  return out;
}

function unknownEnvProblems(env: Readonly<Record<string, string | undefined>>): string[] {
  const known = SETTING_SPECS.map((s) => envOf(s.key));
  const problems: string[] = [];
  for (const name of Object.keys(env)) {
    if (!name.startsWith(ENV_PREFIX) || name === CONFIG_ENV || known.includes(name)) continue;
    const guess = didYouMean(name, known);
    problems.push(
      `config error: unknown environment variable ${name}; ${guess ? `did you mean ${guess}?` : 'known ones are listed by --help'}`,
    );
  }
  return problems;
}

function unknownCommand(given: string): string {
  const guess = didYouMean(given, COMMANDS);
  return `config error: unknown command "${given}"; ${guess ? `did you mean "${guess}"? ` : ''}commands are: ${COMMANDS.join(', ')}`;
}

function listed(names: readonly string[]): string {
  return names.length <= 1 ? names.join('') : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
}

function configFileOf(
  values: ArgValues,
  env: Readonly<Record<string, string | undefined>>,
  defaultPath: string | null,
): ConfigFileRef | null {
  const flag = values.config;
  if (typeof flag === 'string' && flag !== '') return { path: flag, source: 'flag' };
  const fromEnv = env[CONFIG_ENV];
  if (fromEnv !== undefined && fromEnv !== '') return { path: fromEnv, source: 'env' };
  // Set and empty: no settings file at all, not even the default one (a test, a one-off run beside the service's).
  if (fromEnv === '') return null;
  return defaultPath === null ? null : { path: defaultPath, source: 'default' };
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
  flags: ArgValues,
  env: Readonly<Record<string, string | undefined>>,
  file: Record<string, unknown>,
  stdoutIsTty: boolean,
): PickedSetting | undefined {
  const flag = flags[flagOf(spec.key).slice(2)];
  if (flag !== undefined) return { value: coerce(spec, flag), source: 'flag' };
  const fromEnv = env[envOf(spec.key)];
  if (fromEnv !== undefined && fromEnv !== '') return { value: coerce(spec, fromEnv), source: 'env' };
  if (Object.hasOwn(file, fileKeyOf(spec.key))) return { value: coerce(spec, file[fileKeyOf(spec.key)]), source: 'file' };
  const fallback = spec.default?.({ stdoutIsTty });
  return fallback === undefined ? undefined : { value: coerce(spec, fallback), source: 'default' };
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

type ConfigFileRead =
  { ok: true; read: boolean; data: Record<string, unknown>; problems: string[]; note?: string } | { ok: false; problem: string };

const NO_FILE: ConfigFileRead = { ok: true, read: false, data: {}, problems: [] };

/** A default path that does not exist is no file at all; a path someone gave must exist. */
/**
 * `inspecting`: a command other than the agent's run. The default file may be
 * the agent's, 0600 root: an operator's `status` must still work without it.
 */
function readConfigFile(file: ConfigFileRef, inspecting: boolean, readFile: (path: string) => string): ConfigFileRead {
  let text: string;
  try {
    text = readFile(file.path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (file.source === 'default' && code === 'ENOENT') return NO_FILE;
    if (file.source === 'default' && inspecting && (code === 'EACCES' || code === 'EPERM')) {
      return {
        ok: true,
        read: false,
        data: {},
        problems: [],
        note: `note: the default settings file ${file.path} cannot be read (${errnoText(err)}); going on without it (give --config, or run as the agent's user)`,
      };
    }
    return { ok: false, problem: configFileProblem(file, `cannot read ${file.path}: ${errnoText(err)}`) };
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    return { ok: false, problem: configFileProblem(file, `${file.path} is not valid JSON: ${(err as Error).message}`) };
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    return { ok: false, problem: configFileProblem(file, `${file.path} must hold a JSON object of settings`) };
  }
  const known = SETTING_SPECS.map((s) => fileKeyOf(s.key));
  const problems: string[] = [];
  for (const key of Object.keys(data)) {
    if (known.includes(key)) continue;
    const guess = didYouMean(key, known);
    problems.push(
      `config error: unknown key "${key}" in ${file.path}; ${guess ? `did you mean "${guess}"?` : 'known keys are listed by --help'}`,
    );
  }
  return { ok: true, read: true, data: data as Record<string, unknown>, problems };
}

function readUtf8(path: string): string {
  return readFileSync(path, 'utf8');
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

function notAFile(path: string): string | null {
  try {
    return statSync(path).isFile() ? null : 'not a regular file';
  } catch (err) {
    return errnoText(err);
  }
}

/** Whether argv names a command that only reads, judged leniently: the strict parse failed on a flag. */
function inspectingOf(argv: readonly string[], options: NonNullable<ParseArgsConfig['options']>): { inspecting?: true } {
  let positionals: string[];
  try {
    ({ positionals } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true }));
  } catch {
    return {};
  }
  return INSPECTING.some((c) => c === positionals[0]) ? { inspecting: true } : {};
}

/** parseArgs explains at length; one line naming the flag is what an operator needs. */
function argvProblem(err: unknown, options: NonNullable<ParseArgsConfig['options']>): string {
  const e = err as { code?: string; message: string };
  // "Option '-o, --output <value>' argument missing": the long name is the one --help shows.
  const option = /'(?:-\w, )?(-[^' =,]+)/.exec(e.message)?.[1];
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': {
      if (option === undefined) return `config error: ${e.message} (see --help)`;
      const guess = option.startsWith('--') ? didYouMean(option.slice(2), Object.keys(options)) : undefined;
      return guess ? `config error: unknown flag ${option}; did you mean --${guess}?` : `config error: unknown flag ${option} (see --help)`;
    }
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (/does not take an argument/.test(e.message))
        return `config error: ${option ?? 'a flag'} is a switch and takes no value (see --help)`;
      if (/ambiguous/.test(e.message)) {
        return `config error: ${option ?? 'a flag'} needs a value; one that starts with "-" is written ${option ?? '--flag'}=VALUE`;
      }
      return `config error: ${option ?? 'a flag'} needs a value (see --help)`;
    case undefined: // not parseArgs's own error: its message is all there is
    default:
      return `config error: ${e.message} (see --help)`;
  }
}

export function helpText(stdoutIsTty: boolean): string {
  const lines = COMMANDS.map((c, i) => `${i === 0 ? 'Usage:' : '      '} nixfleet-agent ${COMMAND_SPECS[c].usage}`);
  lines.push(
    '       nixfleet-agent --help | --version',
    '',
    `Commands that ask the running agent (status, diagnostics) find it by its --admin-listen: a flag, env ${envOf('adminListen')} or the settings file;`,
    `events (and diagnostics) read its --state-dir (env ${envOf('stateDir')}) the same way.`,
    'status --watch [--interval SECS] asks again every 2 s (or SECS) until Ctrl-C; with --json, one document per line.',
    '',
    'Settings (flags win over environment, environment over the settings file, which wins over defaults):',
    '',
    `  --config PATH  (env ${CONFIG_ENV})  [default ${DEFAULT_CONFIG_PATH}, if it exists]`,
    '      JSON file of settings; its keys are the names in quotes below',
  );
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
    'Exit status of config: 0 the settings are valid; 2 they are not (each problem on stderr, the settings still shown).',
    'Exit status of events: 0 listed; 1 the event log cannot be read; 2 bad flags.',
    'Exit status of diagnostics: 0 archive written (also when no agent answers); 1 it cannot be written; 2 bad flags.',
  );
  return lines.join('\n');
}
