import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoText } from '../common/errno';
import { MAX_ROLLOUT_ARTIFACT_BYTES } from '../protocol/protocol.constants';
import { ROLLOUT_ID_PATTERN } from '../protocol/rollout';
import {
  DEFAULT_CLOCK_SKEW_SECS,
  isPlainRolloutId,
  manifestRolloutId,
  verifyManifest,
  type VerifiedManifest,
  type VerifyFailure,
  type VerifyOptions,
} from './manifest';
import type { TrustRoots } from './trust-file';

/** Where the verified pairs live, under the state directory (PROTOCOL §12). */
export const ROLLOUTS_DIR = 'rollouts';

/** Longer ids are refused as file names: with ".json" and a temp suffix they must stay under NAME_MAX (255). */
const MAX_ROLLOUT_ID_CHARS = 200;

/** A cached manifest is never bigger than the agent would fetch; a bigger file is not ours. */
const MAX_CACHED_BYTES = MAX_ROLLOUT_ARTIFACT_BYTES;

/** Why a cached pair was refused, beyond the verification's own reasons. */
export const CACHE_FAILURES = ['cache-tampered', 'cache-unreadable'] as const;
export type CacheFailure = (typeof CACHE_FAILURES)[number];

export type CacheLoad =
  | { kind: 'missing' }
  | ({
      kind: 'verified';
      /** When this agent stored the pair (the manifest file's mtime): when it verified the dispatch. */ storedAt: Date;
    } & Omit<VerifiedManifest, 'ok'>)
  | { kind: 'refused'; reason: VerifyFailure | CacheFailure | 'wrong-rollout'; detail: string };

/** A rollout id fit to name a file in the cache directory: the id's pattern, no "..", bounded. */
export function isCacheableRolloutId(id: string): boolean {
  return isPlainRolloutId(id) && ROLLOUT_ID_PATTERN.test(id) && id.length <= MAX_ROLLOUT_ID_CHARS;
}

export class UnsafeRolloutIdError extends Error {
  constructor(readonly rolloutId: string) {
    super(
      `rollout id ${JSON.stringify(rolloutId.slice(0, 80))} cannot name a cache file (it must look like <channel>@<channelRef>, without "..")`,
    );
    this.name = 'UnsafeRolloutIdError';
  }
}

/**
 * The verified manifest and signature of each rollout, as
 * `<state-dir>/rollouts/<id>.json` and `<id>.sig`. Read back, a pair is
 * verified again, so a restart needs no CP and an edited file is caught.
 */
export class ManifestCache {
  readonly dir: string;
  /** Pairs store() could not write, by rollout id: see storeHeld(). */
  private readonly held = new Map<string, { manifest: Buffer; signature: Buffer; storedAt: Date }>();

  constructor(stateDir: string) {
    this.dir = join(stateDir, ROLLOUTS_DIR);
  }

  /**
   * Stores a pair the caller has just verified. Each file is written to a
   * temp file, fsynced and renamed into place, then the directory fsynced.
   * The signature goes first: a crash between the two renames leaves no
   * manifest, or one whose signature no longer matches (refused, moved aside,
   * fetched again). When the write fails the pair is held in memory, used as
   * if cached, and the error thrown for the caller to say.
   */
  async store(rolloutId: string, manifestBytes: Buffer, signature: Buffer, now = new Date()): Promise<void> {
    try {
      await this.writePair(rolloutId, manifestBytes, signature);
      this.held.delete(rolloutId);
    } catch (err) {
      if (err instanceof UnsafeRolloutIdError) throw err;
      this.held.set(rolloutId, { manifest: Buffer.from(manifestBytes), signature: Buffer.from(signature), storedAt: now });
      throw err;
    }
  }

  private async writePair(rolloutId: string, manifestBytes: Buffer, signature: Buffer): Promise<void> {
    const paths = this.pathsOf(rolloutId);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeAtomically(paths.sig, signature);
    await writeAtomically(paths.json, manifestBytes);
    await syncDir(this.dir);
  }

  /** The pair for a rollout, verified again now; 'missing' when no manifest is cached. */
  async load(
    rolloutId: string,
    trust: TrustRoots,
    now: Date,
    options: VerifyOptions & { clockSkewAllowanceSecs?: number } = {},
  ): Promise<CacheLoad> {
    const paths = this.pathsOf(rolloutId);
    const json = await readBounded(paths.json);
    if (json.kind === 'missing') {
      const held = this.held.get(rolloutId);
      if (held === undefined) return { kind: 'missing' };
      return this.judge(
        `the pair of ${rolloutId} held in memory`,
        rolloutId,
        held.manifest,
        held.signature,
        held.storedAt,
        trust,
        now,
        options,
      );
    }
    if (json.kind === 'unusable') return { kind: 'refused', reason: 'cache-unreadable', detail: `${paths.json} ${json.why}` };
    const sig = await readBounded(paths.sig);
    if (sig.kind === 'missing') {
      return { kind: 'refused', reason: 'cache-tampered', detail: `${paths.json} has no signature beside it (${paths.sig})` };
    }
    if (sig.kind === 'unusable') return { kind: 'refused', reason: 'cache-unreadable', detail: `${paths.sig} ${sig.why}` };
    return this.judge(paths.json, rolloutId, json.bytes, sig.bytes, json.mtime, trust, now, options);
  }

  /**
   * Stores what store() could not write (a full disk): the pair stays in
   * memory, used as if cached, until a later try writes it. Resolves to the
   * number of pairs still held.
   */
  async storeHeld(): Promise<number> {
    for (const [rolloutId, held] of [...this.held]) {
      try {
        await this.writePair(rolloutId, held.manifest, held.signature);
        this.held.delete(rolloutId);
      } catch {
        // Still failing: kept, tried again next time.
      }
    }
    return this.held.size;
  }

  private judge(
    where: string,
    rolloutId: string,
    manifestBytes: Buffer,
    signature: Buffer,
    storedAt: Date,
    trust: TrustRoots,
    now: Date,
    options: VerifyOptions & { clockSkewAllowanceSecs?: number },
  ): CacheLoad {
    const verified = verifyManifest(
      manifestBytes,
      signature,
      trust,
      now,
      options.clockSkewAllowanceSecs ?? DEFAULT_CLOCK_SKEW_SECS,
      options,
    );
    if (!verified.ok) {
      switch (verified.reason) {
        // Stored only after it verified: what no longer parses or verifies was changed on disk.
        case 'malformed-json':
        case 'malformed-signature':
        case 'bad-signature':
          return { kind: 'refused', reason: 'cache-tampered', detail: `${where}: ${verified.reason}: ${verified.detail}` };
        case 'schema':
        case 'schema-version':
        case 'no-signed-at':
        case 'signed-before-reject-before':
        case 'stale':
        case 'from-the-future':
          return { kind: 'refused', reason: verified.reason, detail: `${where}: ${verified.detail}` };
        default: {
          const never: never = verified.reason;
          return never;
        }
      }
    }
    const signedId = manifestRolloutId(verified.manifest);
    if (signedId !== rolloutId) {
      // A genuine manifest of another rollout copied over this one.
      return { kind: 'refused', reason: 'wrong-rollout', detail: `${where} holds the manifest of rollout ${signedId}` };
    }
    return { kind: 'verified', manifest: verified.manifest, keySlot: verified.keySlot, signedAt: verified.signedAt, storedAt };
  }

  /**
   * Moves a refused pair aside (`<id>.json.refused-<time>`, `.sig` likewise)
   * for an operator to inspect, so the next use fetches afresh instead of
   * refusing the rollout until someone deletes the file. Returns the new
   * manifest path. Missing files are no error.
   */
  async quarantine(rolloutId: string, at: Date): Promise<string> {
    const paths = this.pathsOf(rolloutId);
    const suffix = `.refused-${at.toISOString().replace(/[:.]/g, '-')}`;
    for (const path of [paths.json, paths.sig]) {
      await rename(path, `${path}${suffix}`).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
    await syncDir(this.dir);
    return `${paths.json}${suffix}`;
  }

  /** Throws UnsafeRolloutIdError for an id that could leave the directory or is not a rollout id. */
  pathsOf(rolloutId: string): { json: string; sig: string } {
    if (!isCacheableRolloutId(rolloutId)) throw new UnsafeRolloutIdError(rolloutId);
    return { json: join(this.dir, `${rolloutId}.json`), sig: join(this.dir, `${rolloutId}.sig`) };
  }
}

async function writeAtomically(path: string, data: Buffer): Promise<void> {
  const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const fh = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
}

/** So that the renames survive a power loss. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

type Read = { kind: 'bytes'; bytes: Buffer; mtime: Date } | { kind: 'missing' } | { kind: 'unusable'; why: string };

/** The file's bytes, unless it is missing, unreadable or bigger than any manifest (judged before reading it). */
async function readBounded(path: string): Promise<Read> {
  try {
    const fh = await open(path, constants.O_RDONLY);
    try {
      const { size, mtime } = await fh.stat();
      if (size > MAX_CACHED_BYTES) return { kind: 'unusable', why: `is ${size} bytes, more than a cached manifest can be` };
      return { kind: 'bytes', bytes: await fh.readFile(), mtime };
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'unusable', why: `cannot be read (${errnoText(err)})` };
  }
}
