import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSigningKey, ManifestSigner, trustKeyDocument } from '../../dev/manifest-signer';
import { loadTrustFile, parseTrustFile, type TrustFileLoad } from './trust-file';

const FILE = '/etc/nixfleet/agent/trust.json';
const ED = trustKeyDocument(generateSigningKey('ed25519'));
const P256 = trustKeyDocument(generateSigningKey('ecdsa-p256'));
const CACHE_KEY = `cache.nixos.org-1:${Buffer.alloc(32, 9).toString('base64')}`;

function parse(doc: unknown): TrustFileLoad {
  return parseTrustFile(FILE, JSON.stringify(doc));
}

function problems(doc: unknown): string[] {
  const r = parse(doc);
  if (r.ok) throw new Error('expected problems, the trust file loaded');
  return r.problems;
}

const good = {
  schemaVersion: 1,
  ciReleaseKey: { current: ED, previous: P256, rejectBefore: '2026-11-01T00:00:00Z' },
  cacheKeys: [CACHE_KEY],
};

describe('trust file', () => {
  it('loads current, previous, rejectBefore, cacheKeys and orgRootKey, keys imported once', () => {
    const r = parse({ ...good, orgRootKey: ED });
    if (!r.ok) throw new Error(r.problems.join('\n'));
    expect(r.trust.file).toBe(FILE);
    expect(r.trust.ciReleaseKey.current).toMatchObject({ algorithm: 'ed25519', publicBase64: ED.public });
    expect(r.trust.ciReleaseKey.current?.publicKey.asymmetricKeyType).toBe('ed25519');
    expect(r.trust.ciReleaseKey.previous?.publicKey.asymmetricKeyType).toBe('ec');
    expect(r.trust.ciReleaseKey.previous?.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(r.trust.ciReleaseKey.rejectBefore).toEqual(new Date('2026-11-01T00:00:00Z'));
    expect(r.trust.cacheKeys).toEqual([CACHE_KEY]);
    expect(r.trust.orgRootKey?.algorithm).toBe('ed25519');
  });

  it('loads a file with only a previous key, and the newer successor/retireAt fields', () => {
    const r = parse({
      schemaVersion: 1,
      ciReleaseKey: { previous: P256, successor: ED, retireAt: '2027-01-01T00:00:00+01:00' },
      cacheKeys: [],
    });
    if (!r.ok) throw new Error(r.problems.join('\n'));
    expect(r.trust.ciReleaseKey.current).toBeNull();
    expect(r.trust.ciReleaseKey.successor?.algorithm).toBe('ed25519');
    expect(r.trust.ciReleaseKey.retireAt).toEqual(new Date('2026-12-31T23:00:00Z'));
  });

  it('reads what the dev signer writes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trust-'));
    try {
      const signer = new ManifestSigner({ rejectBefore: new Date('2026-01-01T00:00:00Z') });
      await signer.writeTrustFile(join(dir, 'trust.json'));
      const r = await loadTrustFile(join(dir, 'trust.json'));
      expect(r.ok && r.trust.ciReleaseKey.rejectBefore?.toISOString()).toBe('2026-01-01T00:00:00.000Z');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe('problems: one line each, naming the file and the key path', () => {
    it('a missing file', async () => {
      expect(await loadTrustFile('/nonexistent/trust.json')).toEqual({
        ok: false,
        problems: ['trust file /nonexistent/trust.json: cannot be read (no such file)'],
      });
    });

    it('not JSON, or not an object', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'trust-'));
      try {
        writeFileSync(join(dir, 't.json'), '{"schemaVersion": 1,');
        expect(await loadTrustFile(join(dir, 't.json'))).toEqual({
          ok: false,
          problems: [expect.stringMatching(new RegExp(`^trust file ${dir}/t\\.json: is not valid JSON \\(`))],
        });
        expect(parseTrustFile(FILE, '[]')).toEqual({ ok: false, problems: [`trust file ${FILE}: must be a JSON object (got an array)`] });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('a public key of the wrong length for its algorithm', () => {
      expect(
        problems({ ...good, ciReleaseKey: { current: { algorithm: 'ed25519', public: Buffer.alloc(31, 1).toString('base64') } } }),
      ).toEqual([`trust file ${FILE}, key "ciReleaseKey.current.public": must be 32 bytes of base64 for ed25519 (got 31)`]);
      expect(problems({ ...good, ciReleaseKey: { previous: { algorithm: 'ecdsa-p256', public: ED.public } } })).toEqual([
        `trust file ${FILE}, key "ciReleaseKey.previous.public": must be 64 bytes of base64 for ecdsa-p256 (got 32)`,
      ]);
    });

    it('a P-256 key that is not on the curve, an ed25519 key of small order, bad base64', () => {
      expect(
        problems({
          ...good,
          ciReleaseKey: {
            current: { algorithm: 'ecdsa-p256', public: Buffer.alloc(64, 7).toString('base64') },
            previous: { algorithm: 'ed25519', public: Buffer.concat([Buffer.from([1]), Buffer.alloc(31)]).toString('base64') },
          },
          orgRootKey: { algorithm: 'ed25519', public: ED.public.replace(/=$/, '') },
        }),
      ).toEqual([
        expect.stringMatching(/key "ciReleaseKey\.current\.public": is not a point on the P-256 curve \(got "/),
        expect.stringMatching(/key "ciReleaseKey\.previous\.public": is a point of small order, which would verify forged signatures/),
        expect.stringMatching(/key "orgRootKey\.public": must be standard base64 with its padding/),
      ]);
    });

    it('an unknown algorithm, a missing public key', () => {
      expect(
        problems({ ...good, ciReleaseKey: { current: { algorithm: 'rsa', public: ED.public }, previous: { algorithm: 'ed25519' } } }),
      ).toEqual([
        `trust file ${FILE}, key "ciReleaseKey.current.algorithm": must be one of "ed25519", "ecdsa-p256" (got "rsa")`,
        `trust file ${FILE}, key "ciReleaseKey.previous.public": is required (got nothing)`,
      ]);
    });

    it('a misspelt key, refused rather than ignored', () => {
      expect(problems({ ...good, ciReleaseKey: { current: ED, rejectBefor: '2026-11-01T00:00:00Z' } })).toEqual([
        `trust file ${FILE}, key "ciReleaseKey.rejectBefor": is not a known key (a misspelt key would be ignored, so none is) (got "2026-11-01T00:00:00Z")`,
      ]);
    });

    it('a schemaVersion other than 1, a rejectBefore that is not RFC 3339, a missing ciReleaseKey', () => {
      expect(problems({ schemaVersion: 2, cacheKeys: [] })).toEqual([
        `trust file ${FILE}, key "schemaVersion": must be 1, the only trust file schema this agent knows (got 2)`,
        `trust file ${FILE}, key "ciReleaseKey": is required (got nothing)`,
      ]);
      expect(problems({ ...good, ciReleaseKey: { current: ED, rejectBefore: '2026-11-01' } })).toEqual([
        `trust file ${FILE}, key "ciReleaseKey.rejectBefore": must be an RFC 3339 date-time with an offset, e.g. "2026-11-28T12:00:00Z" (got "2026-11-01")`,
      ]);
    });

    it('bad cache keys, each by its index', () => {
      expect(problems({ ...good, cacheKeys: [CACHE_KEY, 'no-colon', `c:${Buffer.alloc(31).toString('base64')}`, 7] })).toEqual([
        `trust file ${FILE}, key "cacheKeys[1]": must be a Nix public key "<name>:<base64 key>" (got "no-colon")`,
        `trust file ${FILE}, key "cacheKeys[2]": must carry 32 bytes of base64 after the colon (got 31 bytes)`,
        `trust file ${FILE}, key "cacheKeys[3]": must be a string "<name>:<base64 key>" (got 7)`,
      ]);
      expect(problems({ ...good, cacheKeys: 'x' })).toEqual([`trust file ${FILE}, key "cacheKeys": must be a JSON array (got "x")`]);
    });

    it('no release key at all', () => {
      expect(problems({ ...good, ciReleaseKey: { rejectBefore: '2026-11-01T00:00:00Z' } })).toEqual([
        `trust file ${FILE}, key "ciReleaseKey": names neither a "current" nor a "previous" key, so no manifest could be verified`,
      ]);
    });
  });
});
