import { sign } from 'node:crypto';
import { canonicalizeEx } from 'json-canonicalize';
import { flipS, ManifestSigner, signCanonical, toDer, type ManifestInput } from '../../dev/manifest-signer';
import { bigEndian, P256_N } from './keys';
import { checkDispatch, healthGateOf, lowS, VERIFY_FAILURES, verifyManifest, type VerifyFailure, type VerifyResult } from './manifest';
import { parseTrustFile, type TrustRoots } from './trust-file';

const NOW = new Date('2026-11-28T12:00:00.000Z');
const T1 = `${'a'.repeat(32)}-nixos-system-web-01`;
const T2 = `${'b'.repeat(32)}-nixos-system-db-01`;
const OTHER = `${'c'.repeat(32)}-nixos-system-web-01`;
const INPUT: ManifestInput = {
  rolloutId: 'stable@a1b2c3d4',
  hosts: [
    { hostname: 'web-01', targetClosure: T1, waveIndex: 0 },
    { hostname: 'db-01', targetClosure: T2, waveIndex: 1 },
  ],
  signedAt: new Date(NOW.getTime() - 120_000),
  healthGate: { systemdFailedUnits: { max: 0 } },
};

function trustOf(signer: ManifestSigner): TrustRoots {
  const loaded = parseTrustFile('/etc/nixfleet/agent/trust.json', JSON.stringify(signer.trustDocument()));
  if (!loaded.ok) throw new Error(loaded.problems.join('\n'));
  return loaded.trust;
}

function refused(result: VerifyResult): { reason: VerifyFailure; detail: string } {
  if (result.ok) throw new Error('expected a refusal, the manifest verified');
  return result;
}

describe('verifyManifest', () => {
  const signer = new ManifestSigner({ current: 'ed25519', previous: 'ecdsa-p256', rejectBefore: new Date('2026-11-01T00:00:00Z') });
  const trust = trustOf(signer);

  it('accepts a manifest signed by the current ed25519 key, served pretty-printed', () => {
    const signed = signer.sign(INPUT);
    expect(signed.bytes.toString()).toContain('\n  ');
    const result = verifyManifest(signed.bytes, signed.signature, trust, NOW);
    expect(result).toMatchObject({ ok: true, keySlot: 'current', signedAt: INPUT.signedAt });
    if (!result.ok) return;
    expect(result.manifest.hostSet.map((h) => h.hostname)).toEqual(['db-01', 'web-01']);
    expect(result.manifest.meta.signedAt).toBe((INPUT.signedAt as Date).toISOString());
  });

  it('accepts a manifest signed by the previous P-256 key', () => {
    const signed = signer.sign(INPUT, 'previous');
    expect(verifyManifest(signed.bytes, signed.signature, trust, NOW)).toMatchObject({ ok: true, keySlot: 'previous' });
  });

  it.each([
    ['ecdsa-p256', 'ed25519'],
    ['ed25519', 'ed25519'],
    ['ecdsa-p256', 'ecdsa-p256'],
  ] as const)('round-trips with a %s current and a %s previous key', (current, previous) => {
    const s = new ManifestSigner({ current, previous });
    const t = trustOf(s);
    for (const role of ['current', 'previous'] as const) {
      const signed = s.sign(INPUT, role);
      expect(verifyManifest(signed.bytes, signed.signature, t, NOW)).toMatchObject({ ok: true, keySlot: role });
    }
  });

  it('refuses a manifest signed by a key the trust file does not name', () => {
    const signed = signer.signedByUnknownKey(INPUT);
    const r = refused(verifyManifest(signed.bytes, signed.signature, trust, NOW));
    expect(r.reason).toBe('bad-signature');
    expect(r.detail).toContain('the current key (ed25519) and the previous key (ecdsa-p256) of /etc/nixfleet/agent/trust.json');
  });

  it('refuses a manifest signed by the previous key once the trust file drops it', () => {
    const s = new ManifestSigner({ previous: 'ecdsa-p256' });
    const doc = s.trustDocument() as { ciReleaseKey: Record<string, unknown> };
    delete doc.ciReleaseKey.previous;
    const loaded = parseTrustFile('/t.json', JSON.stringify(doc));
    if (!loaded.ok) throw new Error(loaded.problems.join());
    const signed = s.sign(INPUT, 'previous');
    expect(refused(verifyManifest(signed.bytes, signed.signature, loaded.trust, NOW)).reason).toBe('bad-signature');
  });

  it('refuses bytes changed after signing', () => {
    const signed = signer.tampered(signer.sign(INPUT));
    expect(refused(verifyManifest(signed.bytes, signed.signature, trust, NOW)).reason).toBe('bad-signature');
  });

  it('refuses bytes that are not UTF-8 JSON, or JSON JCS cannot carry', () => {
    const sig = signer.sign(INPUT).signature;
    for (const bytes of [Buffer.from('{"a":'), Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), Buffer.from('{"n":1e400}')]) {
      expect(refused(verifyManifest(bytes, sig, trust, NOW)).reason).toBe('malformed-json');
    }
  });

  describe('P-256 signatures', () => {
    const p256 = new ManifestSigner({ current: 'ecdsa-p256', previous: null });
    const p256Trust = trustOf(p256);

    it('signs with a low s', () => {
      for (let i = 0; i < 8; i++) {
        const { signature } = p256.sign({ ...INPUT, displayName: `run ${i}` });
        expect(bigEndian(signature.subarray(32)) <= P256_N / 2n).toBe(true);
      }
    });

    it('accepts the high-s twin (n − s) of a signature, normalised to low s', () => {
      const signed = p256.sign(INPUT);
      const high = flipS(signed.signature);
      expect(bigEndian(high.subarray(32)) > P256_N / 2n).toBe(true);
      expect(lowS(high)).toEqual(signed.signature);
      expect(verifyManifest(signed.bytes, high, p256Trust, NOW)).toMatchObject({ ok: true, keySlot: 'current' });
    });

    it('refuses a DER-encoded signature and a 63-byte one', () => {
      const signed = p256.sign(INPUT);
      const der = toDer(signed.signature);
      // The same signature, valid to a DER verifier: only its encoding is wrong.
      const canonical = Buffer.from(canonicalizeEx(signed.document), 'utf8');
      expect(sign('sha256', canonical, p256.keys.current.privateKey).length).toBeGreaterThan(64);
      expect(refused(verifyManifest(signed.bytes, der, p256Trust, NOW)).reason).toBe('malformed-signature');
      expect(refused(verifyManifest(signed.bytes, signed.signature.subarray(1), p256Trust, NOW)).reason).toBe('malformed-signature');
    });

    it('refuses r or s of zero or not below n', () => {
      const signed = p256.sign(INPUT);
      const zeroS = Buffer.concat([signed.signature.subarray(0, 32), Buffer.alloc(32)]);
      const bigR = Buffer.concat([Buffer.from(P256_N.toString(16), 'hex'), signed.signature.subarray(32)]);
      expect(refused(verifyManifest(signed.bytes, zeroS, p256Trust, NOW)).reason).toBe('bad-signature');
      expect(refused(verifyManifest(signed.bytes, bigR, p256Trust, NOW)).reason).toBe('bad-signature');
    });
  });

  describe('ed25519 strict verification', () => {
    const ed = new ManifestSigner({ current: 'ed25519', previous: null });
    const edTrust = trustOf(ed);
    const L = 2n ** 252n + 27742317777372353535851937790883648493n;

    it('refuses a signature whose S is not reduced (S + L)', () => {
      const signed = ed.sign(INPUT);
      const s = Buffer.from(signed.signature.subarray(32)).reverse();
      const sPlusL = Buffer.from((bigEndian(s) + L).toString(16).padStart(64, '0'), 'hex').reverse();
      const malleable = Buffer.concat([signed.signature.subarray(0, 32), sPlusL]);
      expect(refused(verifyManifest(signed.bytes, malleable, edTrust, NOW)).reason).toBe('bad-signature');
    });

    it('refuses a signature whose R is a point of small order', () => {
      const signed = ed.sign(INPUT);
      const identityR = Buffer.concat([Buffer.from([1]), Buffer.alloc(31), signed.signature.subarray(32)]);
      expect(refused(verifyManifest(signed.bytes, identityR, edTrust, NOW)).reason).toBe('bad-signature');
    });
  });

  describe('after the signature', () => {
    it('refuses a verified document that is not a RolloutManifest, naming the key path', () => {
      const doc = signer.sign(INPUT).document;
      const bad = { ...doc, hostSet: [{ hostname: 'web-01', waveIndex: -1, targetClosure: '/nix/store/x' }] };
      const signed = signer.signDocument(INPUT.rolloutId, bad);
      const r = refused(verifyManifest(signed.bytes, signed.signature, trust, NOW));
      expect(r.reason).toBe('schema');
      expect(r.detail).toContain('hostSet[0].waveIndex: must be a whole number >= 0 (got -1)');
      expect(r.detail).toContain('hostSet[0].targetClosure: must be a store path basename (<hash>-<name>) (got "/nix/store/x")');
    });

    it('refuses a hostSet naming one host twice', () => {
      const signed = signer.sign({ ...INPUT, hosts: [...INPUT.hosts, { hostname: 'web-01', targetClosure: OTHER }] });
      const r = refused(verifyManifest(signed.bytes, signed.signature, trust, NOW));
      expect(r).toMatchObject({ reason: 'schema', detail: expect.stringContaining('hostSet: names host "web-01" twice') });
    });

    it('refuses a signed array', () => {
      const signed = signer.signDocument(INPUT.rolloutId, [] as unknown as Record<string, unknown>);
      expect(refused(verifyManifest(signed.bytes, signed.signature, trust, NOW)).reason).toBe('schema');
    });

    it('refuses a schemaVersion other than 1', () => {
      const signed = signer.sign({ ...INPUT, extra: { schemaVersion: 2 } });
      expect(refused(verifyManifest(signed.bytes, signed.signature, trust, NOW)).reason).toBe('schema-version');
    });

    it('refuses a manifest without meta.signedAt', () => {
      const signed = signer.sign({ ...INPUT, meta: { signedAt: undefined } });
      expect(refused(verifyManifest(signed.bytes, signed.signature, trust, NOW)).reason).toBe('no-signed-at');
    });

    it('refuses a signedAt that is not RFC 3339', () => {
      const signed = signer.sign({ ...INPUT, signedAt: '2026-11-28 11:58' });
      const r = refused(verifyManifest(signed.bytes, signed.signature, trust, NOW));
      expect(r.reason).toBe('schema');
      expect(r.detail).toContain('meta.signedAt');
    });
  });

  describe('rejectBefore', () => {
    it('refuses a manifest signed one second before rejectBefore, even by a trusted key', () => {
      const signed = signer.beforeRejectBefore(INPUT);
      const r = refused(verifyManifest(signed.bytes, signed.signature, trust, new Date('2026-10-31T23:59:59Z')));
      expect(r.reason).toBe('signed-before-reject-before');
      expect(r.detail).toContain('rejectBefore 2026-11-01T00:00:00.000Z in /etc/nixfleet/agent/trust.json');
    });

    it('accepts one signed exactly at rejectBefore', () => {
      const signed = signer.sign({ ...INPUT, signedAt: '2026-11-01T00:00:00Z' });
      expect(verifyManifest(signed.bytes, signed.signature, trust, new Date('2026-11-01T00:10:00Z')).ok).toBe(true);
    });
  });

  describe('freshness: at most 3600 s old plus 60 s of skew, at most 60 s ahead', () => {
    const at = (offsetMs: number): VerifyResult => {
      const signed = signer.sign({ ...INPUT, signedAt: new Date(NOW.getTime() - offsetMs) });
      return verifyManifest(signed.bytes, signed.signature, trust, NOW);
    };

    it('accepts a manifest exactly 3660 s old ("at most")', () => {
      expect(at(3_660_000).ok).toBe(true);
    });

    it('refuses one 3660.001 s old as stale', () => {
      const r = refused(at(3_660_001));
      expect(r.reason).toBe('stale');
      expect(r.detail).toContain('3660.001 s ago');
    });

    it('refuses the signer helper\u2019s stale manifest', () => {
      const signed = signer.stale(INPUT, NOW);
      expect(refused(verifyManifest(signed.bytes, signed.signature, trust, NOW)).reason).toBe('stale');
    });

    it('accepts one signed exactly 60 s ahead of this clock', () => {
      expect(at(-60_000).ok).toBe(true);
    });

    it('refuses one signed 60.001 s ahead', () => {
      expect(refused(at(-60_001)).reason).toBe('from-the-future');
    });

    it('takes a wider skew allowance when given one', () => {
      const signed = signer.sign({ ...INPUT, signedAt: new Date(NOW.getTime() - 3_700_000) });
      expect(verifyManifest(signed.bytes, signed.signature, trust, NOW, 120).ok).toBe(true);
      expect(refused(verifyManifest(signed.bytes, signed.signature, trust, NOW, 30)).reason).toBe('stale');
    });

    it('skips the window when told to (a cached pair) but keeps rejectBefore', () => {
      const old = signer.sign({ ...INPUT, signedAt: '2026-11-20T00:00:00Z' });
      expect(verifyManifest(old.bytes, old.signature, trust, NOW, 60, { freshness: 'ignore' }).ok).toBe(true);
      const killed = signer.beforeRejectBefore(INPUT);
      expect(refused(verifyManifest(killed.bytes, killed.signature, trust, NOW, 60, { freshness: 'ignore' })).reason).toBe(
        'signed-before-reject-before',
      );
    });
  });

  it('names every failure reason in VERIFY_FAILURES (metric labels)', () => {
    expect([...VERIFY_FAILURES].sort()).toEqual(
      [
        'bad-signature',
        'from-the-future',
        'malformed-json',
        'malformed-signature',
        'no-signed-at',
        'schema',
        'schema-version',
        'signed-before-reject-before',
        'stale',
      ].sort(),
    );
  });
});

describe('checkDispatch', () => {
  const signer = new ManifestSigner();
  const trust = trustOf(signer);
  const verified = (signed = signer.sign(INPUT)) => {
    const r = verifyManifest(signed.bytes, signed.signature, trust, NOW);
    if (!r.ok) throw new Error(r.detail);
    return r.manifest;
  };
  const dispatch = { rolloutId: 'stable@a1b2c3d4', hostname: 'web-01', targetClosure: T1 };

  it('accepts the dispatch the manifest covers', () => {
    expect(checkDispatch(verified(), dispatch)).toEqual({ ok: true });
  });

  it.each(['../etc@x', 'stable@a/b', 'stable@a..b'])('refuses the rollout id %s', (rolloutId) => {
    expect(checkDispatch(verified(), { ...dispatch, rolloutId })).toMatchObject({ ok: false, reason: 'rollout-id' });
  });

  it('refuses a dispatch of another rollout', () => {
    expect(checkDispatch(verified(), { ...dispatch, rolloutId: 'stable@ffff' })).toEqual({
      ok: false,
      reason: 'wrong-rollout',
      detail: 'the manifest is for rollout stable@a1b2c3d4, the dispatch names stable@ffff',
    });
  });

  it('refuses a dispatch for a host the manifest does not name', () => {
    expect(checkDispatch(verified(signer.withoutHost(INPUT, 'web-01')), dispatch)).toMatchObject({
      ok: false,
      reason: 'not-for-this-host',
    });
  });

  it('refuses a dispatch whose target differs from this host\u2019s entry', () => {
    expect(checkDispatch(verified(signer.withTarget(INPUT, 'web-01', OTHER)), dispatch)).toEqual({
      ok: false,
      reason: 'wrong-target',
      detail: `rollout stable@a1b2c3d4 moves web-01 to ${OTHER}, the dispatch names ${T1}`,
    });
    // Another host's target is no licence either.
    expect(checkDispatch(verified(), { ...dispatch, targetClosure: T2 })).toMatchObject({ ok: false, reason: 'wrong-target' });
  });
});

describe('healthGateOf', () => {
  const signer = new ManifestSigner();
  const trust = trustOf(signer);
  const gateOf = (healthGate: ManifestInput['healthGate']) => {
    const signed = signer.sign({ ...INPUT, healthGate });
    const r = verifyManifest(signed.bytes, signed.signature, trust, NOW);
    if (!r.ok) throw new Error(r.detail);
    return healthGateOf(r.manifest);
  };

  it('carries systemdFailedUnits and complianceProbes', () => {
    expect(gateOf({ systemdFailedUnits: { max: 2 }, complianceProbes: { required: true } })).toEqual({
      systemdFailedUnits: { max: 2 },
      complianceProbes: { required: true },
    });
  });

  it('is null when the manifest sets no gate', () => {
    expect(gateOf(null)).toBeNull();
    expect(gateOf({})).toBeNull();
  });

  it('refuses a gate of the wrong shape as schema', () => {
    const signed = signer.sign({ ...INPUT, healthGate: { systemdFailedUnits: { max: -1 } } });
    expect(refused(verifyManifest(signed.bytes, signed.signature, trust, NOW)).detail).toContain('healthGate.systemdFailedUnits.max');
  });
});

it('signCanonical signs the JCS form, so key order and spacing do not matter', () => {
  const signer = new ManifestSigner({ previous: null });
  const trust = trustOf(signer);
  const doc = signer.sign(INPUT).document;
  const reordered = Object.fromEntries(Object.entries(doc).reverse());
  const signature = signCanonical(reordered, signer.keys.current);
  expect(verifyManifest(Buffer.from(JSON.stringify(doc)), signature, trust, NOW).ok).toBe(true);
});
