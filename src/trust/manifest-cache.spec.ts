import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManifestSigner, type ManifestInput } from '../../dev/manifest-signer';
import { ManifestCache, UnsafeRolloutIdError } from './manifest-cache';
import { parseTrustFile, type TrustRoots } from './trust-file';

const NOW = new Date('2026-11-28T12:00:00.000Z');
const INPUT: ManifestInput = {
  rolloutId: 'stable@a1b2c3d4',
  hosts: [{ hostname: 'web-01', targetClosure: `${'a'.repeat(32)}-nixos-system-web-01` }],
  signedAt: new Date(NOW.getTime() - 60_000),
  healthGate: { systemdFailedUnits: { max: 0 } },
};

describe('ManifestCache', () => {
  const signer = new ManifestSigner();
  let trust: TrustRoots;
  let stateDir: string;
  let cache: ManifestCache;

  beforeAll(() => {
    const loaded = parseTrustFile('/t.json', JSON.stringify(signer.trustDocument()));
    if (!loaded.ok) throw new Error(loaded.problems.join());
    trust = loaded.trust;
  });
  beforeEach(() => {
    stateDir = mkdtempSync(join(tmpdir(), 'manifest-cache-'));
    cache = new ManifestCache(stateDir);
  });
  afterEach(() => rmSync(stateDir, { recursive: true, force: true }));

  it('writes <state-dir>/rollouts/<id>.json and .sig, 0600, no temp files left, and reads them back verified', async () => {
    const signed = signer.sign(INPUT);
    await cache.store(INPUT.rolloutId, signed.bytes, signed.signature);
    const dir = join(stateDir, 'rollouts');
    expect(readdirSync(dir).sort()).toEqual(['stable@a1b2c3d4.json', 'stable@a1b2c3d4.sig']);
    expect(readFileSync(join(dir, 'stable@a1b2c3d4.json'))).toEqual(signed.bytes);
    expect(readFileSync(join(dir, 'stable@a1b2c3d4.sig'))).toEqual(signed.signature);
    expect(statSync(join(dir, 'stable@a1b2c3d4.json')).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const load = await cache.load(INPUT.rolloutId, trust, NOW);
    expect(load).toMatchObject({ kind: 'verified', keySlot: 'current' });
    expect(load.kind === 'verified' && load.manifest.hostSet[0].hostname).toBe('web-01');
  });

  it('replaces a stored pair whole', async () => {
    const first = signer.sign(INPUT);
    const second = signer.sign(INPUT, 'previous');
    await cache.store(INPUT.rolloutId, first.bytes, first.signature);
    await cache.store(INPUT.rolloutId, second.bytes, second.signature);
    expect(readdirSync(join(stateDir, 'rollouts'))).toHaveLength(2);
    expect(await cache.load(INPUT.rolloutId, trust, NOW)).toMatchObject({ kind: 'verified', keySlot: 'previous' });
  });

  it('says missing for a rollout it never stored', async () => {
    expect(await cache.load('stable@other', trust, NOW)).toEqual({ kind: 'missing' });
  });

  it('refuses a tampered manifest file as cache-tampered', async () => {
    const signed = signer.sign(INPUT);
    await cache.store(INPUT.rolloutId, signed.bytes, signed.signature);
    const tampered = signer.tampered(signed);
    writeFileSync(join(stateDir, 'rollouts', 'stable@a1b2c3d4.json'), tampered.bytes);
    const load = await cache.load(INPUT.rolloutId, trust, NOW);
    expect(load).toMatchObject({ kind: 'refused', reason: 'cache-tampered' });
    expect(load.kind === 'refused' && load.detail).toContain('bad-signature');
  });

  it('refuses a truncated signature and a missing one as cache-tampered', async () => {
    const signed = signer.sign(INPUT);
    await cache.store(INPUT.rolloutId, signed.bytes, signed.signature);
    const sigPath = join(stateDir, 'rollouts', 'stable@a1b2c3d4.sig');
    writeFileSync(sigPath, signed.signature.subarray(0, 40));
    expect(await cache.load(INPUT.rolloutId, trust, NOW)).toMatchObject({ kind: 'refused', reason: 'cache-tampered' });
    rmSync(sigPath);
    expect(await cache.load(INPUT.rolloutId, trust, NOW)).toMatchObject({
      kind: 'refused',
      reason: 'cache-tampered',
      detail: expect.stringContaining('has no signature beside it'),
    });
  });

  it('refuses a genuine manifest of another rollout copied over this one', async () => {
    const other = signer.sign({ ...INPUT, rolloutId: 'stable@ffff' });
    await cache.store(INPUT.rolloutId, other.bytes, other.signature);
    expect(await cache.load(INPUT.rolloutId, trust, NOW)).toMatchObject({ kind: 'refused', reason: 'wrong-rollout' });
  });

  it('verifies freshness again unless told a cached pair may be old; rejectBefore always', async () => {
    const signed = signer.sign(INPUT);
    await cache.store(INPUT.rolloutId, signed.bytes, signed.signature);
    const later = new Date(NOW.getTime() + 2 * 3600_000);
    expect(await cache.load(INPUT.rolloutId, trust, later)).toMatchObject({ kind: 'refused', reason: 'stale' });
    expect(await cache.load(INPUT.rolloutId, trust, later, { freshness: 'ignore' })).toMatchObject({ kind: 'verified' });
    const killSwitched = parseTrustFile(
      '/t.json',
      JSON.stringify({
        ...signer.trustDocument(),
        ciReleaseKey: { ...(signer.trustDocument().ciReleaseKey as object), rejectBefore: NOW.toISOString() },
      }),
    );
    if (!killSwitched.ok) throw new Error(killSwitched.problems.join());
    expect(await cache.load(INPUT.rolloutId, killSwitched.trust, later, { freshness: 'ignore' })).toMatchObject({
      kind: 'refused',
      reason: 'signed-before-reject-before',
    });
  });

  it.each(['../../etc/passwd', 'stable@a/b', 'stable@..', '.hidden@x', '', `s@${'x'.repeat(200)}`])(
    'refuses %j as a file name before touching the disk',
    async (id) => {
      const signed = signer.sign(INPUT);
      await expect(cache.store(id, signed.bytes, signed.signature)).rejects.toBeInstanceOf(UnsafeRolloutIdError);
      await expect(cache.load(id, trust, NOW)).rejects.toBeInstanceOf(UnsafeRolloutIdError);
      expect(readdirSync(stateDir)).toEqual([]);
    },
  );
});
