// class-transformer reads design-time metadata, also outside Nest.
import 'reflect-metadata';
import { isAbsolute } from 'node:path';
import { IsDefined, IsOptional, isFQDN, isIP, ValidateBy, type ValidationArguments } from '../common/class-validator';
import { PROBE_MODES, type ProbeMode } from '../protocol/rollout';

// One class per kind of a health-checks file entry (PROTOCOL §10), camelCase
// as the file has it. Each field has one rule and one message, so a bad
// field is one clause of the entry's problem line. `null` counts as absent:
// the upstream Nix renderer writes null for an option left unset.

/** The kinds this agent runs. */
export const ENTRY_KINDS = ['http', 'tcp', 'exec'] as const;
export type EntryKind = (typeof ENTRY_KINDS)[number];

/**
 * The longest timeout or interval a file may set. Node's timers fire at once
 * past 2^31 ms (about 24.8 days); a day is far past any sensible probe.
 */
export const MAX_PROBE_SECONDS = 86_400;

/** A rule that leaves null and absent to IsDefined / IsOptional, so a missing field gets one message. */
function Rule(name: string, test: (value: unknown) => boolean, message: string | ((value: unknown) => string)): PropertyDecorator {
  return ValidateBy({
    name,
    validator: {
      validate: (value: unknown) => value === undefined || value === null || test(value),
      defaultMessage: (args?: ValidationArguments) => (typeof message === 'string' ? message : message(args?.value)),
    },
  });
}

const REQUIRED = { message: 'is required' };

function WholeNumber(min: number, max: number, unit = ''): PropertyDecorator {
  return Rule(
    'wholeNumber',
    (v) => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max,
    `must be a whole number${unit} from ${min} to ${max}`,
  );
}

function Seconds(): PropertyDecorator {
  return Rule(
    'seconds',
    (v) => typeof v === 'number' && Number.isFinite(v) && v > 0 && v <= MAX_PROBE_SECONDS,
    `must be a number of seconds greater than 0 and at most ${MAX_PROBE_SECONDS}`,
  );
}

function Bool(): PropertyDecorator {
  return Rule('bool', (v) => typeof v === 'boolean', 'must be true or false');
}

function OneOf(values: readonly string[]): PropertyDecorator {
  return Rule('oneOf', (v) => typeof v === 'string' && values.includes(v), `must be ${quotedList(values)}`);
}

function HttpUrl(): PropertyDecorator {
  return Rule('httpUrl', (v) => typeof v === 'string' && isHttpUrl(v), 'must be an http:// or https:// URL with a host');
}

/** What axios will be given: the WHATWG parser's view, not a looser regex. */
function isHttpUrl(text: string): boolean {
  if (!/^https?:\/\//i.test(text)) return false;
  try {
    const url = new URL(text);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
  } catch {
    return false;
  }
}

function Host(): PropertyDecorator {
  return Rule(
    'host',
    (v) => typeof v === 'string' && (isIP(v) || isFQDN(v, { require_tld: false, allow_underscores: true, allow_trailing_dot: true })),
    'must be a host name or an IP address',
  );
}

/** Why an argv is unusable, or null when it is fine. */
export function argvProblem(value: unknown): string | null {
  if (!Array.isArray(value) || value.length === 0 || !value.every((a) => typeof a === 'string' && a !== '')) {
    return 'must be a non-empty array of non-empty strings, the argv run without a shell';
  }
  const argv = value as string[];
  // spawn() cannot pass a NUL byte in an argument.
  if (argv.some((a) => a.includes('\0'))) return 'must not contain a NUL character';
  if (!isAbsolute(argv[0])) {
    return 'its first element, the program, must be an absolute path such as /run/current-system/sw/bin/<name>: probes run with a clean environment';
  }
  return null;
}

function Argv(): PropertyDecorator {
  return Rule(
    'argv',
    (v) => argvProblem(v) === null,
    (v) => argvProblem(v) ?? '',
  );
}

/** The keys every kind has. `kind` is read by hand: it picks the class. */
export class ProbeEntry {
  @IsOptional()
  @OneOf(PROBE_MODES)
  mode?: ProbeMode | null;

  @IsOptional()
  @WholeNumber(1, MAX_PROBE_SECONDS, ' of seconds')
  intervalSeconds?: number | null;

  @IsOptional()
  @Bool()
  runOnce?: boolean | null;
}

export class HttpProbeEntry extends ProbeEntry {
  @IsDefined(REQUIRED)
  @HttpUrl()
  url!: string;

  @IsOptional()
  @WholeNumber(100, 599)
  expectStatus?: number | null;

  @IsOptional()
  @Seconds()
  timeoutSecs?: number | null;
}

export class TcpProbeEntry extends ProbeEntry {
  @IsOptional()
  @Host()
  host?: string | null;

  @IsDefined(REQUIRED)
  @WholeNumber(1, 65535)
  port!: number;

  @IsOptional()
  @Seconds()
  connectTimeoutSecs?: number | null;
}

export class ExecProbeEntry extends ProbeEntry {
  @IsDefined(REQUIRED)
  @Argv()
  command!: string[];

  @IsOptional()
  @Seconds()
  timeoutSecs?: number | null;
}

export const ENTRY_CLASSES = { http: HttpProbeEntry, tcp: TcpProbeEntry, exec: ExecProbeEntry } as const;

const COMMON_KEYS = ['kind', 'mode', 'intervalSeconds', 'runOnce'] as const;

/** Each kind's keys, in the order of the §10 table. */
export const ENTRY_KEYS: Readonly<Record<EntryKind, readonly string[]>> = {
  http: [...COMMON_KEYS, 'url', 'expectStatus', 'timeoutSecs'],
  tcp: [...COMMON_KEYS, 'host', 'port', 'connectTimeoutSecs'],
  exec: [...COMMON_KEYS, 'command', 'timeoutSecs'],
};

/** The kinds a key belongs to, for the keys of some kind only. */
export function kindsOfKey(key: string): EntryKind[] {
  return ENTRY_KINDS.filter((kind) => ENTRY_KEYS[kind].includes(key));
}

/** `"a", "b" or "c"`. */
export function quotedList(values: readonly string[]): string {
  const quoted = values.map((v) => `"${v}"`);
  return quoted.length <= 1 ? quoted.join('') : `${quoted.slice(0, -1).join(', ')} or ${quoted[quoted.length - 1]}`;
}
