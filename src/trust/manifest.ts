// class-transformer reads design-time metadata, also outside Nest.
import 'reflect-metadata';
import { verify as verifySignature } from 'node:crypto';
import { Type, plainToInstance } from 'class-transformer';
import { IsDefined, IsOptional, ValidateNested, validateSync } from '../common/class-validator';
// json-canonicalize rather than canonicalize: canonicalize 5.x is ESM-only and needs Node 22, while this
// CommonJS agent supports Node 20; json-canonicalize ships CommonJS, and the RFC's own examples pass (spec).
import { canonicalizeEx } from 'json-canonicalize';
import type { HealthGate } from '../probes/health-gate';
import { CLOSURE_PATTERN } from '../protocol/rollout';
import { bigEndian, ED25519_L, isSmallOrderEd25519, littleEndian, P256_N, SIGNATURE_BYTES, toBytes32 } from './keys';
import type { TrustedKey, TrustRoots } from './trust-file';
import { Bool, JsonArray, JsonObject, parseRfc3339, problemsOf, REQUIRED, Rfc3339, Rule, Text, WholeNumber } from './trust.rules';

/** The manifest schema this agent knows (PROTOCOL §12). */
export const MANIFEST_SCHEMA_VERSION = 1;

/** PROTOCOL §12: a manifest is at most this old, plus the clock-skew allowance. */
export const MANIFEST_MAX_AGE_SECS = 3600;
export const DEFAULT_CLOCK_SKEW_SECS = 60;

// ---- RolloutManifest, camelCase (PROTOCOL §12) ----

export class HostSetEntry {
  @IsDefined(REQUIRED)
  @Text()
  hostname!: string;

  @IsDefined(REQUIRED)
  @WholeNumber(0)
  waveIndex!: number;

  // A basename only, as the dispatch carries it: it is compared with target_closure byte for byte.
  @IsDefined(REQUIRED)
  @Rule('closure', (v) => typeof v === 'string' && CLOSURE_PATTERN.test(v), 'must be a store path basename (<hash>-<name>)')
  targetClosure!: string;
}

export class SystemdFailedUnitsGate {
  @IsDefined(REQUIRED)
  @WholeNumber(0)
  max!: number;
}

export class ComplianceProbesGate {
  @IsDefined(REQUIRED)
  @Bool()
  required!: boolean;
}

export class HealthGateWire {
  @IsOptional()
  @JsonObject()
  @ValidateNested()
  @Type(() => SystemdFailedUnitsGate)
  systemdFailedUnits?: SystemdFailedUnitsGate | null;

  @IsOptional()
  @JsonObject()
  @ValidateNested()
  @Type(() => ComplianceProbesGate)
  complianceProbes?: ComplianceProbesGate | null;
}

export class ManifestMeta {
  @IsDefined(REQUIRED)
  @WholeNumber(0)
  schemaVersion!: number;

  // Its absence is a failure of its own (§12 step 3), said after the shape is known good.
  @IsOptional()
  @Rfc3339()
  signedAt?: string | null;

  @IsOptional()
  @Text()
  ciCommit?: string | null;

  // Informative only: the key decides the algorithm, never the artifact.
  @IsOptional()
  @Text()
  signatureAlgorithm?: string | null;
}

/**
 * Fields a reader of the agent needs are checked; the rest may be absent or
 * null (the signature covers them whatever they are). Unknown keys are kept
 * out of the type, not refused: the manifest's schema grows upstream.
 */
export class RolloutManifest {
  @IsDefined(REQUIRED)
  @WholeNumber(0)
  schemaVersion!: number;

  @IsOptional()
  @Rule('string', (v) => typeof v === 'string', 'must be a string')
  displayName?: string | null;

  @IsDefined(REQUIRED)
  @Text()
  channel!: string;

  @IsDefined(REQUIRED)
  @Text()
  channelRef!: string;

  @IsOptional()
  @Rule('string', (v) => typeof v === 'string', 'must be a string')
  fleetResolvedHash?: string | null;

  @IsDefined(REQUIRED)
  @JsonArray()
  @Rule(
    'uniqueHosts',
    (v) => Array.isArray(v) && duplicateHost(v) === null,
    (v) => `names host ${JSON.stringify(Array.isArray(v) ? duplicateHost(v) : '')} twice, so its target is ambiguous`,
  )
  @ValidateNested({ each: true })
  @Type(() => HostSetEntry)
  hostSet!: HostSetEntry[];

  @IsOptional()
  @JsonObject()
  @ValidateNested()
  @Type(() => HealthGateWire)
  healthGate?: HealthGateWire | null;

  @IsOptional()
  disruptionBudgets?: unknown;

  @IsDefined(REQUIRED)
  @JsonObject()
  @ValidateNested()
  @Type(() => ManifestMeta)
  meta!: ManifestMeta;
}

function duplicateHost(entries: unknown[]): string | null {
  const seen = new Set<string>();
  for (const e of entries) {
    const name = typeof e === 'object' && e !== null ? (e as { hostname?: unknown }).hostname : undefined;
    if (typeof name !== 'string') continue;
    if (seen.has(name)) return name;
    seen.add(name);
  }
  return null;
}

// ---- verification ----

/** Why a manifest was refused: a closed set, used as a metric label. */
export const VERIFY_FAILURES = [
  /** The bytes are not UTF-8 JSON, or JSON that JCS cannot canonicalise (1e400). */
  'malformed-json',
  /** The signature is not 64 bytes (a DER-encoded ECDSA signature, a truncated one). */
  'malformed-signature',
  /** No trusted key verifies it: the bytes changed after signing, or a key we do not trust signed them. */
  'bad-signature',
  /** Verified, but not a RolloutManifest. */
  'schema',
  'schema-version',
  'no-signed-at',
  /** Signed before the trust file's `rejectBefore` (the compromise kill-switch). */
  'signed-before-reject-before',
  'stale',
  'from-the-future',
] as const;
export type VerifyFailure = (typeof VERIFY_FAILURES)[number];

/** Why a verified manifest does not cover a dispatch (PROTOCOL §12). */
export const DISPATCH_FAILURES = ['rollout-id', 'wrong-rollout', 'not-for-this-host', 'wrong-target'] as const;
export type DispatchFailure = (typeof DISPATCH_FAILURES)[number];

export type KeySlot = 'current' | 'previous';

export interface VerifiedManifest {
  ok: true;
  manifest: RolloutManifest;
  keySlot: KeySlot;
  /** `meta.signedAt`, parsed. */
  signedAt: Date;
}

export type VerifyResult = VerifiedManifest | { ok: false; reason: VerifyFailure; detail: string };

export interface VerifyOptions {
  /**
   * 'enforce' (default): PROTOCOL §12's window. 'ignore': only for a pair
   * verified fresh before and read back from the cache, where a long soak
   * would otherwise outlive it; `rejectBefore` still applies.
   */
  freshness?: 'enforce' | 'ignore';
}

/**
 * PROTOCOL §12, in its order: parse, canonicalise (RFC 8785), verify with the
 * current key then the previous one, then the schema and the time checks.
 * Nothing of the document is believed before its signature holds.
 */
export function verifyManifest(
  bytes: Buffer,
  signature: Buffer,
  trust: TrustRoots,
  now: Date,
  clockSkewAllowanceSecs = DEFAULT_CLOCK_SKEW_SECS,
  options: VerifyOptions = {},
): VerifyResult {
  let canonical: Buffer;
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
    canonical = Buffer.from(canonicalizeEx(parsed, { strictUndefined: true }), 'utf8');
  } catch (err) {
    return fail('malformed-json', `the manifest is not JSON that can be canonicalised (${oneLine(err)})`);
  }

  if (signature.length !== SIGNATURE_BYTES) {
    return fail(
      'malformed-signature',
      `the signature is ${signature.length} bytes; a signature is ${SIGNATURE_BYTES} raw bytes (r‖s for P-256)`,
    );
  }
  const slots: [KeySlot, TrustedKey | null][] = [
    ['current', trust.ciReleaseKey.current],
    ['previous', trust.ciReleaseKey.previous],
  ];
  const tried: string[] = [];
  let keySlot: KeySlot | null = null;
  for (const [slot, key] of slots) {
    if (key === null) continue;
    tried.push(`the ${slot} key (${key.algorithm})`);
    if (signatureHolds(key, canonical, signature)) {
      keySlot = slot;
      break;
    }
  }
  if (keySlot === null) {
    return fail(
      'bad-signature',
      `the signature verifies with none of ${tried.join(' and ')} of ${trust.file}: the manifest changed after signing, or a key this host does not trust signed it`,
    );
  }

  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return fail('schema', 'the manifest is not a JSON object');
  }
  const manifest = plainToInstance(RolloutManifest, parsed);
  const problems = problemsOf(validateSync(manifest, { forbidUnknownValues: false }));
  if (problems.length > 0) return fail('schema', problems.map(([key, what]) => `${key}: ${what}`).join('; '));
  if (manifest.schemaVersion !== MANIFEST_SCHEMA_VERSION) {
    return fail('schema-version', `schemaVersion is ${manifest.schemaVersion}; this agent knows ${MANIFEST_SCHEMA_VERSION} only`);
  }
  const signedAt = manifest.meta.signedAt ? parseRfc3339(manifest.meta.signedAt) : null;
  if (signedAt === null) return fail('no-signed-at', 'meta.signedAt is missing, so neither the kill-switch nor freshness can be judged');

  const rejectBefore = trust.ciReleaseKey.rejectBefore;
  if (rejectBefore !== null && signedAt.getTime() < rejectBefore.getTime()) {
    return fail(
      'signed-before-reject-before',
      `signed at ${manifest.meta.signedAt}, before rejectBefore ${rejectBefore.toISOString()} in ${trust.file}`,
    );
  }
  if ((options.freshness ?? 'enforce') === 'enforce') {
    const ageMs = now.getTime() - signedAt.getTime();
    const skewMs = clockSkewAllowanceSecs * 1000;
    if (ageMs > MANIFEST_MAX_AGE_SECS * 1000 + skewMs) {
      return fail(
        'stale',
        `signed at ${manifest.meta.signedAt}, ${seconds(ageMs)} s ago; a manifest is good for ${MANIFEST_MAX_AGE_SECS} s plus ${clockSkewAllowanceSecs} s of clock skew`,
      );
    }
    if (-ageMs > skewMs) {
      return fail(
        'from-the-future',
        `signed at ${manifest.meta.signedAt}, ${seconds(-ageMs)} s ahead of this host's clock; at most ${clockSkewAllowanceSecs} s of skew is allowed`,
      );
    }
  }
  return { ok: true, manifest, keySlot, signedAt };
}

/**
 * ed25519: strict, as dalek's verify_strict (S below the group order, R and
 * the key not of small order). P-256: r‖s, s normalised to the low half, so
 * both encodings of one signature are the same signature.
 */
function signatureHolds(key: TrustedKey, data: Buffer, signature: Buffer): boolean {
  switch (key.algorithm) {
    case 'ed25519': {
      if (littleEndian(signature.subarray(32)) >= ED25519_L) return false;
      if (isSmallOrderEd25519(signature.subarray(0, 32))) return false;
      return verifySignature(null, data, key.publicKey, signature);
    }
    case 'ecdsa-p256': {
      const low = lowS(signature);
      return low !== null && verifySignature('sha256', data, { key: key.publicKey, dsaEncoding: 'ieee-p1363' }, low);
    }
    default: {
      // A trust file refuses an unknown algorithm; a key that still has one verifies nothing.
      const never: never = key.algorithm;
      return never;
    }
  }
}

/** r‖s with s in the lower half of [1, n-1]; null when r or s is out of range. */
export function lowS(signature: Buffer): Buffer | null {
  if (signature.length !== SIGNATURE_BYTES) return null;
  const r = bigEndian(signature.subarray(0, 32));
  const s = bigEndian(signature.subarray(32));
  if (r === 0n || r >= P256_N || s === 0n || s >= P256_N) return null;
  return s > P256_N / 2n ? Buffer.concat([signature.subarray(0, 32), toBytes32(P256_N - s)]) : signature;
}

// ---- the dispatch ----

export interface DispatchToCheck {
  rolloutId: string;
  /** This machine's name (the dispatch's `hostname` names it). */
  hostname: string;
  targetClosure: string;
}

export type DispatchCheck = { ok: true } | { ok: false; reason: DispatchFailure; detail: string };

/** PROTOCOL §12: a dispatch is acted on only when the verified manifest covers exactly it. */
export function checkDispatch(manifest: RolloutManifest, dispatch: DispatchToCheck): DispatchCheck {
  if (!isPlainRolloutId(dispatch.rolloutId)) {
    return { ok: false, reason: 'rollout-id', detail: `rollout id ${JSON.stringify(dispatch.rolloutId)} contains "/", ".." or a NUL` };
  }
  const signedId = manifestRolloutId(manifest);
  if (signedId !== dispatch.rolloutId) {
    return {
      ok: false,
      reason: 'wrong-rollout',
      detail: `the manifest is for rollout ${signedId}, the dispatch names ${dispatch.rolloutId}`,
    };
  }
  const entry = manifest.hostSet.find((h) => h.hostname === dispatch.hostname);
  if (!entry) {
    return { ok: false, reason: 'not-for-this-host', detail: `rollout ${signedId}'s hostSet does not name ${dispatch.hostname}` };
  }
  if (entry.targetClosure !== dispatch.targetClosure) {
    return {
      ok: false,
      reason: 'wrong-target',
      detail: `rollout ${signedId} moves ${dispatch.hostname} to ${entry.targetClosure}, the dispatch names ${dispatch.targetClosure}`,
    };
  }
  return { ok: true };
}

/** `<channel>@<channelRef>`, the rollout id a manifest signs for. */
export function manifestRolloutId(manifest: RolloutManifest): string {
  return `${manifest.channel}@${manifest.channelRef}`;
}

/** §12's rule for a rollout id the agent will use in a path: no "/" and no "..". */
export function isPlainRolloutId(id: string): boolean {
  return id !== '' && !id.includes('/') && !id.includes('..') && !id.includes('\0');
}

/** The verified manifest's health gate (PROTOCOL §10), null when it sets none. */
export function healthGateOf(manifest: RolloutManifest): HealthGate | null {
  const gate = manifest.healthGate;
  if (!gate) return null;
  const out: { systemdFailedUnits?: { max: number }; complianceProbes?: { required: boolean } } = {};
  if (gate.systemdFailedUnits) out.systemdFailedUnits = { max: gate.systemdFailedUnits.max };
  if (gate.complianceProbes) out.complianceProbes = { required: gate.complianceProbes.required };
  return out.systemdFailedUnits || out.complianceProbes ? out : null;
}

function fail(reason: VerifyFailure, detail: string): { ok: false; reason: VerifyFailure; detail: string } {
  return { ok: false, reason, detail };
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(3).replace(/\.?0+$/, '');
}

function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s+/g, ' ').slice(0, 200);
}
