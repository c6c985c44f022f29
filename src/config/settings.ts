import {
  IsArray,
  IsBoolean,
  IsIn,
  IsInt,
  IsNotEmpty,
  IsOptional,
  IsString,
  IsUrl,
  isURL,
  Matches,
  Max,
  Min,
  type ValidationArguments,
} from '../common/class-validator';
import { portOutOfRange } from './url-credentials';

export const LOG_FORMATS = ['json', 'text'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export const ACTIVATION_BACKENDS = ['nixos', 'command', 'symlink'] as const;
export type ActivationBackendName = (typeof ACTIVATION_BACKENDS)[number];

export const HEALTH_FAILURE_POLICIES = ['halt', 'rollback-and-halt'] as const;

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug', 'verbose'] as const;
export type AgentLogLevel = (typeof LOG_LEVELS)[number];

export const CONTROL_PLANE_URL_RULES = {
  protocols: ['https'],
  require_protocol: true,
  require_tld: false,
  allow_query_components: false,
};

/** The URL check says only "not a URL"; a port out of range is worth naming, when it is the one thing wrong. */
function controlPlaneUrlProblem(args: ValidationArguments): string {
  const port = portOutOfRange(args.value);
  if (port !== null && isURL(String(args.value).replace(`:${port}`, ':443'), CONTROL_PLANE_URL_RULES)) {
    return `port ${port} is out of range 1-65535`;
  }
  return 'must be an https:// URL';
}

/**
 * The agent's settings, after merging flags > env > file > defaults and
 * validating once. Everything else reads this typed object, never the
 * environment.
 */
export class Settings {
  @IsUrl(CONTROL_PLANE_URL_RULES, { message: controlPlaneUrlProblem })
  controlPlaneUrl!: string;

  // The CP compares it with the certificate's CN (PROTOCOL §1).
  @IsString()
  @IsNotEmpty({ message: 'is required' })
  @Matches(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/, {
    message: 'must be a host name (letters, digits, ".", "_", "-")',
  })
  machineId!: string;

  @IsOptional()
  @IsString()
  @IsNotEmpty()
  caCert?: string;

  @IsOptional()
  @IsString()
  @IsNotEmpty()
  clientCert?: string;

  @IsOptional()
  @IsString()
  @IsNotEmpty()
  clientKey?: string;

  @IsString()
  @Matches(/^\//, { message: 'must be an absolute path' })
  stateDir!: string;

  @IsString()
  @Matches(/^\//, { message: 'must be an absolute path' })
  currentSystemPath!: string;

  @IsInt({ message: 'must be a whole number of seconds' })
  @Min(1, { message: 'must be at least 1 second' })
  @Max(86_400, { message: 'must be at most 86400 seconds (one day)' })
  heartbeatInterval!: number;

  @IsString()
  @IsNotEmpty()
  adminListen!: string;

  @IsBoolean({ message: 'must be true or false' })
  adminAllowRemote!: boolean;

  @IsInt({ message: 'must be a whole number of days' })
  @Min(0, { message: 'must be 0 or more days' })
  @Max(3650, { message: 'must be at most 3650 days' })
  eventRetentionDays!: number;

  @IsInt({ message: 'must be a whole number of MiB' })
  @Min(1, { message: 'must be at least 1 MiB' })
  @Max(10_240, { message: 'must be at most 10240 MiB' })
  eventLogMaxMb!: number;

  @IsString()
  @Matches(/^\//, { message: 'must be an absolute path' })
  storeDir!: string;

  @IsIn(ACTIVATION_BACKENDS, { message: `must be one of: ${ACTIVATION_BACKENDS.join(', ')}` })
  activationBackend!: ActivationBackendName;

  @IsOptional()
  // Empty is checked by the loader: here it would also be said of a value that is no array at all.
  @IsArray({ message: 'must be a JSON array of strings, e.g. ["/usr/local/bin/activate", "{closure}"]' })
  @IsString({ each: true, message: 'must hold only strings' })
  activationCommand?: string[];

  @IsString()
  @Matches(/^\//, { message: 'must be an absolute path' })
  systemProfile!: string;

  @IsIn(HEALTH_FAILURE_POLICIES, { message: `must be one of: ${HEALTH_FAILURE_POLICIES.join(', ')}` })
  onHealthFailure!: (typeof HEALTH_FAILURE_POLICIES)[number];

  @IsString()
  @Matches(/^\//, { message: 'must be an absolute path' })
  healthChecksFile!: string;

  // Shorter than a probe's smallest interval (5 s) could fail a rollout on one result.
  @IsInt({ message: 'must be a whole number of seconds' })
  @Min(10, { message: 'must be at least 10 seconds' })
  @Max(86_400, { message: 'must be at most 86400 seconds (one day)' })
  probeFailureThreshold!: number;

  @IsString()
  @Matches(/^\//, { message: 'must be an absolute path' })
  trustFile!: string;

  @IsBoolean({ message: 'must be true or false' })
  allowUnsigned!: boolean;

  @IsIn(LOG_FORMATS, { message: `must be one of: ${LOG_FORMATS.join(', ')}` })
  logFormat!: LogFormat;

  @IsIn(LOG_LEVELS, { message: `must be one of: ${LOG_LEVELS.join(', ')}` })
  logLevel!: AgentLogLevel;
}

export type SettingKey = keyof Settings;
export type SettingKind = 'string' | 'int' | 'bool' | 'argv';

export interface SettingSpec {
  key: SettingKey;
  kind: SettingKind;
  /** Help text: what it is, in a few words. */
  help: string;
  /** The default as shown in --help; `undefined` means required or unset. */
  default?: (ctx: { stdoutIsTty: boolean }) => string | number | boolean | undefined;
  required?: boolean;
  /**
   * A value that must never be printed (`config`, `diagnostics`): shown as
   * "(set, hidden)". None so far: the key and certificates are settings of
   * their paths, and the files are never printed.
   */
  secret?: boolean;
}

export const DEFAULT_ADMIN_LISTEN = '127.0.0.1:9850';

/** Every setting, in --help order. Flag, env and file key all derive from `key`. */
export const SETTING_SPECS: readonly SettingSpec[] = [
  { key: 'controlPlaneUrl', kind: 'string', required: true, help: 'https URL of the control plane, without a user name or password' },
  { key: 'machineId', kind: 'string', required: true, help: "this host's machine id; must match the client certificate's CN" },
  { key: 'caCert', kind: 'string', help: 'CA bundle (PEM) that signs the control plane certificate; system CAs when unset' },
  { key: 'clientCert', kind: 'string', help: 'client certificate (PEM); set together with --client-key' },
  {
    key: 'clientKey',
    kind: 'string',
    help: 'client key: PEM (PKCS#8, SEC1, PKCS#1) or an OpenSSH ed25519 host key',
  },
  { key: 'stateDir', kind: 'string', default: () => '/var/lib/nixfleet-agent', help: 'state directory (created 0700)' },
  {
    key: 'currentSystemPath',
    kind: 'string',
    default: () => '/run/current-system',
    help: 'symlink whose target names the running closure',
  },
  { key: 'heartbeatInterval', kind: 'int', default: () => 60, help: 'seconds between heartbeats (at least 1)' },
  {
    key: 'adminListen',
    kind: 'string',
    default: () => DEFAULT_ADMIN_LISTEN,
    help: 'admin endpoint: HOST:PORT or unix:/path',
  },
  {
    key: 'adminAllowRemote',
    kind: 'bool',
    default: () => false,
    help: 'allow --admin-listen on a non-loopback address',
  },
  {
    key: 'eventRetentionDays',
    kind: 'int',
    default: () => 7,
    help: 'days a delivered event is kept for replay after its rollout ends',
  },
  { key: 'eventLogMaxMb', kind: 'int', default: () => 64, help: 'size cap of the event log in MiB; pending events are never dropped' },
  { key: 'storeDir', kind: 'string', default: () => '/nix/store', help: 'where dispatched closures (store path basenames) are resolved' },
  {
    key: 'activationBackend',
    kind: 'string',
    default: () => 'nixos',
    help: 'nixos (switch-to-configuration via systemd-run), command, or symlink (demo and tests)',
  },
  {
    key: 'activationCommand',
    kind: 'argv',
    help: 'for --activation-backend command: a JSON array argv with a {closure} placeholder',
  },
  {
    key: 'systemProfile',
    kind: 'string',
    default: () => '/nix/var/nix/profiles/system',
    help: 'system profile the nixos backend sets to the closure',
  },
  {
    key: 'onHealthFailure',
    kind: 'string',
    default: () => 'halt',
    help: 'halt, or rollback-and-halt (roll back to the closure running at dispatch)',
  },
  {
    key: 'healthChecksFile',
    kind: 'string',
    default: () => '/etc/nixfleet/agent/health-checks.json',
    help: 'health checks (probes) that judge a new system; none when the file is missing',
  },
  {
    key: 'probeFailureThreshold',
    kind: 'int',
    default: () => 120,
    help: 'seconds an enforce probe may fail in a row before the rollout fails',
  },
  {
    key: 'trustFile',
    kind: 'string',
    default: () => '/etc/nixfleet/agent/trust.json',
    help: "trust roots (the fleet CI's release keys) that every dispatch's signed manifest is verified with",
  },
  {
    key: 'allowUnsigned',
    kind: 'bool',
    default: () => false,
    help: 'when the trust file is missing, act on dispatches WITHOUT verifying them (loud in logs and status)',
  },
  {
    key: 'logFormat',
    kind: 'string',
    default: (ctx) => (ctx.stdoutIsTty ? 'text' : 'json'),
    help: 'json or text (json when stdout is not a terminal)',
  },
  { key: 'logLevel', kind: 'string', default: () => 'info', help: 'error, warn, info, debug or verbose' },
];

export function flagOf(key: SettingKey): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

export function envOf(key: SettingKey): string {
  return `NIXFLEET_AGENT_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** Keys of the JSON file given by --config are the camelCase setting names. */
export function fileKeyOf(key: SettingKey): string {
  return key;
}
