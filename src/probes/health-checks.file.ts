import { readFile } from 'node:fs/promises';
import { plainToInstance } from 'class-transformer';
import { validateSync } from '../common/class-validator';
import { errnoText } from '../common/errno';
import { PROBE_MODES, type ProbeMode } from '../protocol/rollout';
import {
  ENTRY_CLASSES,
  ENTRY_KEYS,
  ENTRY_KINDS,
  ProbeEntry,
  quotedList,
  kindsOfKey,
  type EntryKind,
  type ExecProbeEntry,
  type HttpProbeEntry,
  type TcpProbeEntry,
} from './health-checks.entries';
import { entryProblem, fieldClause, fileProblem, renamedEntryProblem, shownValue } from './health-checks.messages';
import {
  HEALTH_CHECKS_FILE_PROBE,
  MIN_PROBE_INTERVAL_MS,
  PROBE_DEFAULTS,
  SYSTEMD_FAILED_UNITS_PROBE,
  type ProbeDeclaration,
  type ProbeSpec,
} from './probe.types';

export type HealthChecksLoad =
  | { readonly kind: 'missing' }
  | {
      readonly kind: 'loaded';
      /** Sorted by name. A bad file or entry is here too, as a failing enforce probe of kind `invalid`. */
      readonly probes: ProbeDeclaration[];
      /** One line per bad file or entry, to log. */
      readonly problems: string[];
    };

/** §10's limits on a probe name, ours: it appears in events, logs and metric labels. */
export const MAX_PROBE_NAME_CHARS = 128;

/** How a JSON parse error is quoted: enough to find the spot, not the whole file. */
const JSON_ERROR_MAX_CHARS = 200;

/**
 * Reads the health-checks file of PROTOCOL §10. A missing file means no
 * probes. Anything else that is wrong is said in `problems`, one line each,
 * and declared as a failing enforce probe, never dropped: a typo must not
 * make a rollout pass. Never rejects.
 */
export async function loadHealthChecks(path: string): Promise<HealthChecksLoad> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    return wholeFileInvalid(path, `cannot be read (${errnoText(err)})`);
  }
  return parseHealthChecks(path, text);
}

/** The file's text, read from `file` (named in the problem lines). */
export function parseHealthChecks(file: string, text: string): HealthChecksLoad {
  if (text.trim() === '') return wholeFileInvalid(file, 'is empty, expected a JSON object mapping probe names to declarations');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    const detail = oneLine(err instanceof Error ? err.message : String(err));
    const shown = detail.length > JSON_ERROR_MAX_CHARS ? `${detail.slice(0, JSON_ERROR_MAX_CHARS - 1)}…` : detail;
    return wholeFileInvalid(file, `not valid JSON (${shown})`);
  }
  if (!isPlainObject(parsed)) {
    return wholeFileInvalid(file, `expected a JSON object mapping probe names to declarations, got ${describeJson(parsed)}`);
  }

  const names = Object.keys(parsed);
  const taken = new Set(names);
  const probes: ProbeDeclaration[] = [];
  const problems: string[] = [];
  names.forEach((name, index) => {
    const position = index + 1;
    const entry = readEntry(parsed[name]);
    const badName = nameProblem(name);
    if (badName !== null) {
      const declaredAs = freeName(`invalid-probe-${position}`, taken);
      const problem = renamedEntryProblem(file, position, name, [`the name ${badName}`, ...entry.clauses], declaredAs);
      probes.push(invalidDeclaration(declaredAs, entry.declaredKind, 'enforce', problem));
      problems.push(problem);
    } else if (entry.clauses.length > 0 || entry.valid === null) {
      const problem = entryProblem(file, name, entry.clauses, entry.declaredMode);
      probes.push(invalidDeclaration(name, entry.declaredKind, entry.declaredMode, problem));
      problems.push(problem);
    } else {
      probes.push({ name, ...entry.valid });
    }
  });
  probes.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { kind: 'loaded', probes, problems };
}

/**
 * The implicit probe of a verified manifest's `healthGate.systemdFailedUnits`
 * (§10): enforce, every 30 s, systemctl given 10 s.
 */
export function systemdFailedUnitsDeclaration(max: number): ProbeDeclaration {
  return {
    name: SYSTEMD_FAILED_UNITS_PROBE,
    mode: 'enforce',
    intervalMs: PROBE_DEFAULTS.intervalSeconds * 1000,
    runOnce: false,
    spec: { kind: 'systemd-failed-units', max, timeoutMs: PROBE_DEFAULTS.timeoutSecs * 1000 },
  };
}

type ValidEntry = Omit<ProbeDeclaration, 'name'>;

interface ReadEntry {
  /** The kind the entry named, or `invalid`. */
  readonly declaredKind: string;
  /** The mode the entry asked for when that field itself is valid, else enforce (a typo there must not lift the gate). */
  readonly declaredMode: ProbeMode;
  /** What is wrong, one clause per field, in the entry's key order. */
  readonly clauses: string[];
  /** The declaration when nothing is wrong. */
  readonly valid: ValidEntry | null;
}

function readEntry(raw: unknown): ReadEntry {
  if (!isPlainObject(raw)) {
    return {
      declaredKind: 'invalid',
      declaredMode: 'enforce',
      clauses: [`the declaration must be a JSON object (got ${describeJson(raw)})`],
      valid: null,
    };
  }
  const kind = raw.kind;
  const declaredKind = typeof kind === 'string' && kind !== '' ? kind : 'invalid';
  const declaredMode: ProbeMode = (PROBE_MODES as readonly unknown[]).includes(raw.mode) ? (raw.mode as ProbeMode) : 'enforce';
  if (!isEntryKind(kind)) {
    // Without a kind, only the keys every kind has can be judged.
    return {
      declaredKind,
      declaredMode,
      clauses: [kindClause(kind), ...validate(ProbeEntry, raw, ['mode', 'intervalSeconds', 'runOnce'])],
      valid: null,
    };
  }
  const own = ENTRY_KEYS[kind];
  const clauses: string[] = [];
  for (const key of Object.keys(raw)) {
    if (own.includes(key)) continue;
    const owners = kindsOfKey(key);
    if (owners.length === 0) {
      // A typo such as `expectedStatus` would otherwise leave the default in force, unseen.
      clauses.push(fieldClause(key, `is not a field of ${article(kind)} ${kind} probe (its fields: ${own.join(', ')})`));
    } else if (raw[key] !== null) {
      const of = owners.join(' and ');
      clauses.push(fieldClause(key, `belongs to ${of} probes, and in ${article(kind)} ${kind} probe it must be null or absent`, raw[key]));
    }
  }
  clauses.push(...validate(ENTRY_CLASSES[kind], raw, own));
  if (clauses.length > 0) return { declaredKind, declaredMode, clauses: inKeyOrder(clauses, raw), valid: null };
  return { declaredKind, declaredMode, clauses, valid: declare(kind, raw) };
}

/** The clauses of class-validator's verdict on the entry's own keys. */
function validate(cls: new () => ProbeEntry, raw: Record<string, unknown>, keys: readonly string[]): string[] {
  // Only the keys this class knows are handed over: nothing else reaches class-transformer.
  const plain: Record<string, unknown> = {};
  for (const key of keys) if (key !== 'kind' && Object.hasOwn(raw, key)) plain[key] = raw[key];
  const instance = plainToInstance(cls, plain);
  return validateSync(instance, { forbidUnknownValues: false, stopAtFirstError: true }).map((error) => {
    const what = Object.values(error.constraints ?? {})[0] ?? 'is not valid';
    const value: unknown = raw[error.property];
    return fieldClause(error.property, what, value === undefined || value === null ? undefined : value);
  });
}

/** Clauses ordered as the entry's keys (a missing field last), so the line reads like the file. */
function inKeyOrder(clauses: string[], raw: Record<string, unknown>): string[] {
  const keys = Object.keys(raw);
  const rank = (clause: string): number => {
    const field = /^field "([^"]*)"/.exec(clause)?.[1];
    const index = field === undefined ? -1 : keys.indexOf(field);
    return index === -1 ? keys.length : index;
  };
  return clauses
    .map((clause, i) => ({ clause, i, r: rank(clause) }))
    .sort((a, b) => a.r - b.r || a.i - b.i)
    .map((x) => x.clause);
}

function declare(kind: EntryKind, raw: Record<string, unknown>): ValidEntry {
  const common = plainToInstance(ProbeEntry, raw);
  const intervalSeconds = common.intervalSeconds ?? PROBE_DEFAULTS.intervalSeconds;
  return {
    mode: common.mode ?? 'enforce',
    // §10: floored to 5 s; a shorter interval is not an error.
    intervalMs: Math.max(intervalSeconds * 1000, MIN_PROBE_INTERVAL_MS),
    runOnce: common.runOnce ?? false,
    spec: specOf(kind, raw),
  };
}

function specOf(kind: EntryKind, raw: Record<string, unknown>): ProbeSpec {
  switch (kind) {
    case 'http': {
      const e = raw as unknown as HttpProbeEntry;
      return {
        kind,
        url: e.url,
        expectStatus: e.expectStatus ?? PROBE_DEFAULTS.expectStatus,
        timeoutMs: toMs(e.timeoutSecs ?? PROBE_DEFAULTS.timeoutSecs),
      };
    }
    case 'tcp': {
      const e = raw as unknown as TcpProbeEntry;
      return {
        kind,
        host: e.host ?? PROBE_DEFAULTS.host,
        port: e.port,
        connectTimeoutMs: toMs(e.connectTimeoutSecs ?? PROBE_DEFAULTS.connectTimeoutSecs),
      };
    }
    case 'exec': {
      const e = raw as unknown as ExecProbeEntry;
      return { kind, command: [...e.command], timeoutMs: toMs(e.timeoutSecs ?? PROBE_DEFAULTS.timeoutSecs) };
    }
    default: {
      const never: never = kind;
      return never;
    }
  }
}

/** Seconds to whole milliseconds, never 0: a timeout of 0.0001 s is 1 ms, not none. */
function toMs(seconds: number): number {
  return Math.max(1, Math.ceil(seconds * 1000));
}

function kindClause(kind: unknown): string {
  if (kind === undefined || kind === null) return fieldClause('kind', `is required: ${quotedList(ENTRY_KINDS)}`);
  if (kind === 'evidence') {
    return fieldClause('kind', 'is "evidence" (a signed compliance file), which this agent does not run');
  }
  return fieldClause('kind', `must be ${quotedList(ENTRY_KINDS)}`, kind);
}

/** Why a name cannot be a probe's, as the end of "the name …"; null when it can. */
function nameProblem(name: string): string | null {
  const rule = `(a probe name has 1 to ${MAX_PROBE_NAME_CHARS} characters, none of them a control character)`;
  if (name === '') return `is empty ${rule}`;
  if (Array.from(name).length > MAX_PROBE_NAME_CHARS) return `is longer than ${MAX_PROBE_NAME_CHARS} characters ${rule}`;
  // eslint-disable-next-line no-control-regex -- control characters are what this looks for
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return `contains a control character ${rule}`;
  if (name === SYSTEMD_FAILED_UNITS_PROBE) return "is reserved for the signed manifest's systemdFailedUnits gate";
  // As a key of a plain object it would set the prototype, not name a probe: the probe would vanish.
  if (name === '__proto__') return 'is "__proto__", which cannot name a probe';
  return null;
}

/** `wanted`, or `wanted-2`, `wanted-3`… whichever no entry of the file uses; taken from then on. */
function freeName(wanted: string, taken: Set<string>): string {
  let name = wanted;
  for (let n = 2; taken.has(name); n += 1) name = `${wanted}-${n}`;
  taken.add(name);
  return name;
}

/**
 * A declaration the agent cannot run. It fails, in the mode the entry asked
 * for when that was readable: an enforce probe (the default, and any unreadable
 * mode) then holds the rollout, as a typo must; an observe probe never gated
 * anyway; a disabled one (upstream's `evidence` kind, say) is not run.
 */
function invalidDeclaration(name: string, declaredKind: string, mode: ProbeMode, problem: string): ProbeDeclaration {
  return {
    name,
    mode,
    intervalMs: PROBE_DEFAULTS.intervalSeconds * 1000,
    runOnce: false,
    spec: { kind: 'invalid', declaredKind, problem },
  };
}

function wholeFileInvalid(file: string, what: string): HealthChecksLoad {
  const problem = fileProblem(file, what);
  return { kind: 'loaded', probes: [invalidDeclaration(HEALTH_CHECKS_FILE_PROBE, 'invalid', 'enforce', problem)], problems: [problem] };
}

function isEntryKind(kind: unknown): kind is EntryKind {
  return typeof kind === 'string' && (ENTRY_KINDS as readonly string[]).includes(kind);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describeJson(value: unknown): string {
  return Array.isArray(value) ? 'an array' : shownValue(value);
}

function article(kind: EntryKind): string {
  return kind === 'http' || kind === 'exec' ? 'an' : 'a';
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}
