import { generateKeyPairSync, sign as signBytes, type KeyObject } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { canonicalizeEx } from 'json-canonicalize';
import { bigEndian, P256_N, toBytes32, type KeyAlgorithm } from '../src/trust/keys';
import { MANIFEST_MAX_AGE_SECS, DEFAULT_CLOCK_SKEW_SECS } from '../src/trust/manifest';

/**
 * The fleet CI's side of PROTOCOL §12, for tests and the dev CP: key pairs
 * made in process, the trust file a host would get, and signed rollout
 * manifests, good ones and each kind of bad one.
 */

export interface SigningKey {
  readonly algorithm: KeyAlgorithm;
  readonly privateKey: KeyObject;
  /** As the trust file carries it: 32 bytes for ed25519, X‖Y for P-256. */
  readonly publicRaw: Buffer;
}

export function generateSigningKey(algorithm: KeyAlgorithm): SigningKey {
  switch (algorithm) {
    case 'ed25519': {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      return { algorithm, privateKey, publicRaw: Buffer.from(publicKey.export({ format: 'jwk' }).x ?? '', 'base64url') };
    }
    case 'ecdsa-p256': {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const jwk = publicKey.export({ format: 'jwk' });
      return {
        algorithm,
        privateKey,
        publicRaw: Buffer.concat([Buffer.from(jwk.x ?? '', 'base64url'), Buffer.from(jwk.y ?? '', 'base64url')]),
      };
    }
    default: {
      const never: never = algorithm;
      return never;
    }
  }
}

export interface TrustKeyDocument {
  algorithm: KeyAlgorithm;
  public: string;
}

export function trustKeyDocument(key: SigningKey): TrustKeyDocument {
  return { algorithm: key.algorithm, public: key.publicRaw.toString('base64') };
}

/**
 * The JCS form of `document` signed with `key`: ed25519 as is, P-256 as r‖s
 * with s in the lower half (what PROTOCOL §12 asks a verifier to accept).
 */
export function signCanonical(document: unknown, key: SigningKey): Buffer {
  const canonical = Buffer.from(canonicalizeEx(document, { strictUndefined: true }), 'utf8');
  switch (key.algorithm) {
    case 'ed25519':
      return signBytes(null, canonical, key.privateKey);
    case 'ecdsa-p256': {
      const raw = signBytes('sha256', canonical, { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
      const s = bigEndian(raw.subarray(32));
      return s > P256_N / 2n ? withS(raw, P256_N - s) : raw;
    }
    default: {
      const never: never = key.algorithm;
      return never;
    }
  }
}

// ---- signatures in the forms a verifier must refuse or normalise ----

/** The other s of a P-256 signature (n − s): as valid to OpenSSL, high when the original was low. */
export function flipS(signature: Buffer): Buffer {
  return withS(signature, P256_N - bigEndian(signature.subarray(32)));
}

/** A P-256 r‖s signature in DER (SEQUENCE of two INTEGERs), as many ECDSA tools emit it. */
export function toDer(signature: Buffer): Buffer {
  const integer = (bytes: Buffer): Buffer => {
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) i++;
    const body = bytes[i] & 0x80 ? Buffer.concat([Buffer.from([0]), bytes.subarray(i)]) : bytes.subarray(i);
    return Buffer.concat([Buffer.from([0x02, body.length]), body]);
  };
  const seq = Buffer.concat([integer(signature.subarray(0, 32)), integer(signature.subarray(32))]);
  return Buffer.concat([Buffer.from([0x30, seq.length]), seq]);
}

function withS(signature: Buffer, s: bigint): Buffer {
  return Buffer.concat([signature.subarray(0, 32), toBytes32(s)]);
}

// ---- manifests ----

export interface HostTarget {
  hostname: string;
  targetClosure: string;
  waveIndex?: number;
}

export interface ManifestInput {
  /** `<channel>@<channelRef>`. */
  rolloutId: string;
  hosts: readonly HostTarget[];
  signedAt: Date | string;
  healthGate?: { systemdFailedUnits?: { max: number }; complianceProbes?: { required: boolean } } | null;
  displayName?: string;
  ciCommit?: string;
  /** Extra top-level keys, or overrides of the built ones (e.g. `schemaVersion: 2`). */
  extra?: Record<string, unknown>;
  /** Replaces `meta` keys (e.g. `{ signedAt: undefined }` removes it). */
  meta?: Record<string, unknown>;
}

/** A RolloutManifest document (PROTOCOL §12), hostSet sorted by hostname. */
export function buildManifest(input: ManifestInput): Record<string, unknown> {
  const at = input.rolloutId.indexOf('@');
  if (at <= 0) throw new Error(`rollout id ${input.rolloutId} is not <channel>@<channelRef>`);
  const channel = input.rolloutId.slice(0, at);
  const channelRef = input.rolloutId.slice(at + 1);
  const signedAt = typeof input.signedAt === 'string' ? input.signedAt : input.signedAt.toISOString();
  const meta: Record<string, unknown> = {
    schemaVersion: 1,
    signedAt,
    ciCommit: input.ciCommit ?? channelRef,
    ...input.meta,
  };
  for (const [k, v] of Object.entries(meta)) if (v === undefined) delete meta[k];
  return {
    schemaVersion: 1,
    displayName: input.displayName ?? input.rolloutId,
    channel,
    channelRef,
    fleetResolvedHash: `sha256-${channelRef}`,
    hostSet: [...input.hosts]
      .sort((a, b) => (a.hostname < b.hostname ? -1 : a.hostname > b.hostname ? 1 : 0))
      .map((h) => ({ hostname: h.hostname, waveIndex: h.waveIndex ?? 0, targetClosure: h.targetClosure })),
    healthGate: input.healthGate ?? null,
    disruptionBudgets: [],
    meta,
    ...input.extra,
  };
}

export interface SignedManifest {
  rolloutId: string;
  document: Record<string, unknown>;
  /** What the CP serves: pretty-printed, so only JCS makes it match the signature. */
  bytes: Buffer;
  /** 64 raw bytes. */
  signature: Buffer;
}

export type KeyRole = 'current' | 'previous' | 'unknown';

export interface SignerOptions {
  current?: KeyAlgorithm;
  previous?: KeyAlgorithm | null;
  /** The algorithm of a key the trust file does not name. */
  unknown?: KeyAlgorithm;
  rejectBefore?: Date | null;
  cacheKeys?: string[];
}

/**
 * A fleet CI in a box: a current and a previous release key (ed25519 and
 * P-256 by default), an untrusted third, and the trust file naming the first two.
 */
export class ManifestSigner {
  readonly keys: { current: SigningKey; previous: SigningKey | null; unknown: SigningKey };
  readonly rejectBefore: Date | null;
  private readonly cacheKeys: string[];

  constructor(opts: SignerOptions = {}) {
    const previous = opts.previous === undefined ? 'ecdsa-p256' : opts.previous;
    this.keys = {
      current: generateSigningKey(opts.current ?? 'ed25519'),
      previous: previous === null ? null : generateSigningKey(previous),
      unknown: generateSigningKey(opts.unknown ?? 'ed25519'),
    };
    this.rejectBefore = opts.rejectBefore ?? null;
    this.cacheKeys = opts.cacheKeys ?? [`cache.fleet.test-1:${Buffer.alloc(32, 7).toString('base64')}`];
  }

  /** The trust file (PROTOCOL §12) a host of this fleet gets. */
  trustDocument(): Record<string, unknown> {
    return {
      schemaVersion: 1,
      ciReleaseKey: {
        current: trustKeyDocument(this.keys.current),
        ...(this.keys.previous ? { previous: trustKeyDocument(this.keys.previous) } : {}),
        ...(this.rejectBefore ? { rejectBefore: this.rejectBefore.toISOString() } : {}),
      },
      cacheKeys: this.cacheKeys,
    };
  }

  async writeTrustFile(path: string): Promise<void> {
    await writeFile(path, `${JSON.stringify(this.trustDocument(), null, 2)}\n`, { mode: 0o644 });
  }

  sign(input: ManifestInput, role: KeyRole = 'current'): SignedManifest {
    return this.signDocument(input.rolloutId, buildManifest(input), role);
  }

  /** Any document, as CI would sign it (for manifests no builder would make). */
  signDocument(rolloutId: string, document: Record<string, unknown>, role: KeyRole = 'current'): SignedManifest {
    const key = role === 'previous' ? this.keys.previous : this.keys[role];
    if (key === null) throw new Error('this signer has no previous key');
    return {
      rolloutId,
      document,
      bytes: Buffer.from(`${JSON.stringify(document, null, 2)}\n`, 'utf8'),
      signature: signCanonical(document, key),
    };
  }

  // ---- the bad cases of PROTOCOL §12 ----

  /** The served bytes changed after signing: the first host's target swapped. */
  tampered(signed: SignedManifest): SignedManifest {
    const document = structuredClone(signed.document);
    const hostSet = document.hostSet as { targetClosure: string }[];
    hostSet[0].targetClosure = `${'0'.repeat(32)}-nixos-system-evil`;
    return { ...signed, document, bytes: Buffer.from(`${JSON.stringify(document, null, 2)}\n`, 'utf8') };
  }

  signedByUnknownKey(input: ManifestInput): SignedManifest {
    return this.sign(input, 'unknown');
  }

  /** Signed just past the window at `now`: 3600 s plus the skew allowance plus one second. */
  stale(input: ManifestInput, now: Date): SignedManifest {
    return this.sign({ ...input, signedAt: new Date(now.getTime() - (MANIFEST_MAX_AGE_SECS + DEFAULT_CLOCK_SKEW_SECS + 1) * 1000) });
  }

  /** Signed one second before the trust file's rejectBefore. */
  beforeRejectBefore(input: ManifestInput): SignedManifest {
    if (this.rejectBefore === null) throw new Error('this signer was made without rejectBefore');
    return this.sign({ ...input, signedAt: new Date(this.rejectBefore.getTime() - 1000) });
  }

  /** The same rollout, with `hostname` left out of its hostSet. */
  withoutHost(input: ManifestInput, hostname: string): SignedManifest {
    return this.sign({ ...input, hosts: input.hosts.filter((h) => h.hostname !== hostname) });
  }

  /** The same rollout, moving `hostname` to `targetClosure` instead. */
  withTarget(input: ManifestInput, hostname: string, targetClosure: string): SignedManifest {
    return this.sign({ ...input, hosts: input.hosts.map((h) => (h.hostname === hostname ? { ...h, targetClosure } : h)) });
  }
}
