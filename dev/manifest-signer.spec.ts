import { createPublicKey, verify } from 'node:crypto';
import { canonicalizeEx } from 'json-canonicalize';
import { buildManifest, flipS, generateSigningKey, ManifestSigner, toDer } from './manifest-signer';

describe('manifest signer', () => {
  it('makes raw public keys of the sizes the trust file carries', () => {
    expect(generateSigningKey('ed25519').publicRaw).toHaveLength(32);
    expect(generateSigningKey('ecdsa-p256').publicRaw).toHaveLength(64);
  });

  it('builds a manifest with the hostSet sorted by hostname and the rollout id split into channel and ref', () => {
    const doc = buildManifest({
      rolloutId: 'stable@a1b2',
      hosts: [
        { hostname: 'web-02', targetClosure: 'x' },
        { hostname: 'db-01', targetClosure: 'y', waveIndex: 1 },
      ],
      signedAt: '2026-11-28T12:00:00Z',
    });
    expect(doc).toMatchObject({
      schemaVersion: 1,
      channel: 'stable',
      channelRef: 'a1b2',
      hostSet: [
        { hostname: 'db-01', waveIndex: 1, targetClosure: 'y' },
        { hostname: 'web-02', waveIndex: 0, targetClosure: 'x' },
      ],
      meta: { schemaVersion: 1, signedAt: '2026-11-28T12:00:00Z' },
    });
  });

  it('signs P-256 as r‖s; its DER form and its flipped s verify with OpenSSL as the same signature', () => {
    const signer = new ManifestSigner({ current: 'ecdsa-p256', previous: null });
    const signed = signer.sign({ rolloutId: 'stable@a1', hosts: [], signedAt: '2026-11-28T12:00:00Z' });
    const data = Buffer.from(canonicalizeEx(signed.document), 'utf8');
    const key = createPublicKey(signer.keys.current.privateKey);
    expect(signed.signature).toHaveLength(64);
    expect(verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signed.signature)).toBe(true);
    expect(verify('sha256', data, { key, dsaEncoding: 'der' }, toDer(signed.signature))).toBe(true);
    expect(verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, flipS(signed.signature))).toBe(true);
    expect(flipS(flipS(signed.signature))).toEqual(signed.signature);
  });

  it('writes a trust file naming current, previous and rejectBefore, never the unknown key', () => {
    const signer = new ManifestSigner({ rejectBefore: new Date('2026-11-01T00:00:00Z') });
    const doc = signer.trustDocument() as { ciReleaseKey: Record<string, { public: string } | string> };
    expect(doc.ciReleaseKey).toEqual({
      current: { algorithm: 'ed25519', public: signer.keys.current.publicRaw.toString('base64') },
      previous: { algorithm: 'ecdsa-p256', public: signer.keys.previous?.publicRaw.toString('base64') },
      rejectBefore: '2026-11-01T00:00:00.000Z',
    });
    expect(JSON.stringify(doc)).not.toContain(signer.keys.unknown.publicRaw.toString('base64'));
  });

  it('refuses to make a before-rejectBefore manifest without a rejectBefore', () => {
    expect(() => new ManifestSigner().beforeRejectBefore({ rolloutId: 's@a', hosts: [], signedAt: '2026-11-28T12:00:00Z' })).toThrow(
      'without rejectBefore',
    );
  });
});
