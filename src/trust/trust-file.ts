// class-transformer reads design-time metadata, also outside Nest.
import 'reflect-metadata';
import type { KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Type, plainToInstance } from 'class-transformer';
import { IsDefined, IsIn, IsOptional, ValidateNested, validateSync } from '../common/class-validator';
import { errnoText } from '../common/errno';
import { KEY_ALGORITHMS, publicKeyFromRaw, strictBase64, type KeyAlgorithm } from './keys';
import { describeJson, JsonArray, JsonObject, parseRfc3339, problemsOf, REQUIRED, Rfc3339, Rule } from './trust.rules';

/** The trust file's one known schema (PROTOCOL §12). */
export const TRUST_SCHEMA_VERSION = 1;

/** A Nix binary-cache public key, `<name>:<base64 of 32 ed25519 bytes>` (nix.conf's trusted-public-keys). */
const NIX_PUBLIC_KEY = /^[^\s:]+:([A-Za-z0-9+/=]+)$/;

// ---- the file as written, camelCase ----

class KeyWire {
  @IsDefined(REQUIRED)
  @IsIn(KEY_ALGORITHMS, { message: `must be one of ${KEY_ALGORITHMS.map((a) => `"${a}"`).join(', ')}` })
  algorithm!: string;

  // Judged with the algorithm: its length, and whether it is a key at all.
  @IsDefined(REQUIRED)
  @Rule(
    'publicKey',
    (v, o) => typeof v === 'string' && keyProblem((o as KeyWire).algorithm, v) === null,
    (v, o) => (typeof v === 'string' ? (keyProblem((o as KeyWire).algorithm, v) ?? '') : 'must be a base64 string'),
  )
  public!: string;
}

class CiReleaseKeyWire {
  @IsOptional()
  @JsonObject()
  @ValidateNested()
  @Type(() => KeyWire)
  current?: KeyWire | null;

  @IsOptional()
  @JsonObject()
  @ValidateNested()
  @Type(() => KeyWire)
  previous?: KeyWire | null;

  @IsOptional()
  @Rfc3339()
  rejectBefore?: string | null;

  // Newer upstream versions (PROTOCOL §12). Read so such a file loads; not yet a key that verifies anything.
  @IsOptional()
  @JsonObject()
  @ValidateNested()
  @Type(() => KeyWire)
  successor?: KeyWire | null;

  @IsOptional()
  @Rfc3339()
  retireAt?: string | null;
}

class TrustFileWire {
  @IsDefined(REQUIRED)
  @Rule('schemaVersion', (v) => v === TRUST_SCHEMA_VERSION, `must be ${TRUST_SCHEMA_VERSION}, the only trust file schema this agent knows`)
  schemaVersion!: number;

  @IsDefined(REQUIRED)
  @JsonObject()
  @ValidateNested()
  @Type(() => CiReleaseKeyWire)
  ciReleaseKey!: CiReleaseKeyWire;

  // Each entry is judged below, so its problem names its index.
  @IsDefined(REQUIRED)
  @JsonArray()
  cacheKeys!: string[];

  @IsOptional()
  @JsonObject()
  @ValidateNested()
  @Type(() => KeyWire)
  orgRootKey?: KeyWire | null;
}

function keyProblem(algorithm: unknown, text: string): string | null {
  const raw = strictBase64(text);
  if (raw === null) return 'must be standard base64 with its padding';
  // An unknown algorithm is said once, on `algorithm`.
  if (!KEY_ALGORITHMS.some((a) => a === algorithm)) return null;
  const made = publicKeyFromRaw(algorithm as KeyAlgorithm, raw);
  return made.ok ? null : made.why;
}

function cacheKeyProblem(entry: unknown): string | null {
  if (typeof entry !== 'string') return 'must be a string "<name>:<base64 key>"';
  const m = NIX_PUBLIC_KEY.exec(entry);
  if (!m) return 'must be a Nix public key "<name>:<base64 key>"';
  const raw = strictBase64(m[1]);
  if (raw === null || raw.length !== 32)
    return `must carry 32 bytes of base64 after the colon (got ${raw === null ? 'no valid base64' : `${raw.length} bytes`})`;
  return null;
}

// ---- what the agent uses ----

export interface TrustedKey {
  readonly algorithm: KeyAlgorithm;
  /** Imported once, at load. */
  readonly publicKey: KeyObject;
  /** As the file gives it (base64), for logs and /status. */
  readonly publicBase64: string;
}

export interface CiReleaseKeys {
  readonly current: TrustedKey | null;
  readonly previous: TrustedKey | null;
  /** The compromise kill-switch: a manifest signed before this instant is refused. */
  readonly rejectBefore: Date | null;
  /** Read and validated, not used to verify yet (PROTOCOL §12's newer fields). */
  readonly successor: TrustedKey | null;
  readonly retireAt: Date | null;
}

export interface TrustRoots {
  /** The file they came from, named in every message about them. */
  readonly file: string;
  readonly ciReleaseKey: CiReleaseKeys;
  /** For Nix's trusted-public-keys when realising a closure (PROTOCOL §13). */
  readonly cacheKeys: readonly string[];
  readonly orgRootKey: TrustedKey | null;
}

export type TrustFileLoad = { ok: true; trust: TrustRoots } | { ok: false; problems: string[] };

/** Past this a "trust file" is not one; nothing is parsed. */
const MAX_TRUST_FILE_BYTES = 1024 * 1024;
const JSON_ERROR_MAX_CHARS = 200;

/**
 * Reads and validates the trust file of PROTOCOL §12. Every problem is one
 * line naming the file and the key path. Never rejects.
 */
export async function loadTrustFile(path: string): Promise<TrustFileLoad> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    return { ok: false, problems: [fileProblem(path, `cannot be read (${errnoText(err)})`)] };
  }
  if (bytes.length > MAX_TRUST_FILE_BYTES) {
    return {
      ok: false,
      problems: [fileProblem(path, `is ${bytes.length} bytes, more than a trust file can be (${MAX_TRUST_FILE_BYTES})`)],
    };
  }
  return parseTrustFile(path, bytes.toString('utf8'));
}

/** The file's text, read from `file` (named in the problem lines). */
export function parseTrustFile(file: string, text: string): TrustFileLoad {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    const detail = (err instanceof Error ? err.message : String(err)).replace(/\s+/g, ' ');
    return { ok: false, problems: [fileProblem(file, `is not valid JSON (${detail.slice(0, JSON_ERROR_MAX_CHARS)})`)] };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return { ok: false, problems: [fileProblem(file, `must be a JSON object (got ${describeJson(parsed)})`)] };
  }
  const wire = plainToInstance(TrustFileWire, parsed);
  // Exact: a misspelt "rejectBefore" silently ignored would switch off the kill-switch.
  const errors = validateSync(wire, { forbidUnknownValues: false, whitelist: true, forbidNonWhitelisted: true });
  const problems = problemsOf(errors).map(([key, what]) => keyProblemLine(file, key, what));
  if (Array.isArray(wire.cacheKeys)) {
    wire.cacheKeys.forEach((entry: unknown, i) => {
      const what = cacheKeyProblem(entry);
      if (what !== null)
        problems.push(keyProblemLine(file, `cacheKeys[${i}]`, what.includes('(got ') ? what : `${what} (got ${describeJson(entry)})`));
    });
  }
  if (problems.length > 0) return { ok: false, problems };

  const ci = wire.ciReleaseKey;
  if (!ci.current && !ci.previous) {
    return {
      ok: false,
      problems: [keyProblemLine(file, 'ciReleaseKey', 'names neither a "current" nor a "previous" key, so no manifest could be verified')],
    };
  }
  return {
    ok: true,
    trust: {
      file,
      ciReleaseKey: {
        current: trustedKey(ci.current),
        previous: trustedKey(ci.previous),
        rejectBefore: ci.rejectBefore ? parseRfc3339(ci.rejectBefore) : null,
        successor: trustedKey(ci.successor),
        retireAt: ci.retireAt ? parseRfc3339(ci.retireAt) : null,
      },
      cacheKeys: [...wire.cacheKeys],
      orgRootKey: trustedKey(wire.orgRootKey),
    },
  };
}

/** A validated key slot: the checks above already imported it once. */
function trustedKey(wire: KeyWire | null | undefined): TrustedKey | null {
  if (!wire) return null;
  const algorithm = wire.algorithm as KeyAlgorithm;
  const made = publicKeyFromRaw(algorithm, strictBase64(wire.public) ?? Buffer.alloc(0));
  if (!made.ok) throw new Error(`trust key passed validation but does not import: ${made.why}`);
  return { algorithm, publicKey: made.key, publicBase64: wire.public };
}

function fileProblem(file: string, what: string): string {
  return `trust file ${file}: ${what}`;
}

function keyProblemLine(file: string, key: string, what: string): string {
  return `trust file ${file}, key "${key}": ${what}`;
}
