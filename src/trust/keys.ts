import { createPublicKey, type KeyObject } from 'node:crypto';

/** PROTOCOL §12: the algorithm belongs to the key, never to the artifact. */
export const KEY_ALGORITHMS = ['ed25519', 'ecdsa-p256'] as const;
export type KeyAlgorithm = (typeof KEY_ALGORITHMS)[number];

/** Raw public key sizes: ed25519 the 32-byte encoding, P-256 the point's X‖Y. */
export const PUBLIC_KEY_BYTES: Record<KeyAlgorithm, number> = { ed25519: 32, 'ecdsa-p256': 64 };

/** Both algorithms sign with 64 bytes: ed25519 R‖S, P-256 r‖s. */
export const SIGNATURE_BYTES = 64;

/** Standard base64 with its padding, as the trust file carries keys. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** The bytes of strict standard base64, or null (Buffer.from would skip what it does not understand). */
export function strictBase64(text: string): Buffer | null {
  return BASE64.test(text) ? Buffer.from(text, 'base64') : null;
}

/** The curve order of P-256: a signature's r and s are in [1, n-1]. */
export const P256_N = BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551');

/** The order of ed25519's base point: a signature's S must be below it (RFC 8032 §5.1.7). */
export const ED25519_L = 2n ** 252n + 27742317777372353535851937790883648493n;

const ED25519_P = 2n ** 255n - 19n;

/**
 * Encodings of the ed25519 points of small order (libsodium's list: the
 * identity, the points of order 2, 4 and 8, and p − 1, p, p + 1 spelt out),
 * compared with the sign bit cleared. Such a public key, or such an R in a
 * signature, lets a signature hold for more than one message: strict
 * verification (dalek's `verify_strict`) refuses both.
 */
const SMALL_ORDER_Y: readonly bigint[] = [
  0n,
  1n,
  BigInt('0x05fc536d880238b13933c6d305acdfd5f098eff289f4c345b027b2c28f95e826'),
  BigInt('0x7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7'),
  ED25519_P - 1n,
  ED25519_P,
  ED25519_P + 1n,
];

export function isSmallOrderEd25519(encoded: Buffer): boolean {
  const y = littleEndian(encoded) & ((1n << 255n) - 1n);
  return SMALL_ORDER_Y.includes(y);
}

export function littleEndian(bytes: Buffer): bigint {
  return bigEndian(Buffer.from(bytes).reverse());
}

export function bigEndian(bytes: Buffer): bigint {
  return bytes.length === 0 ? 0n : BigInt(`0x${bytes.toString('hex')}`);
}

/** A non-negative integer below 2^256 as 32 big-endian bytes. */
export function toBytes32(n: bigint): Buffer {
  return Buffer.from(n.toString(16).padStart(64, '0'), 'hex');
}

/**
 * The KeyObject of a raw public key, or why there is none: ed25519 from its
 * 32 bytes, P-256 from X‖Y (OpenSSL refuses a point off the curve).
 */
export function publicKeyFromRaw(algorithm: KeyAlgorithm, raw: Buffer): { ok: true; key: KeyObject } | { ok: false; why: string } {
  const want = PUBLIC_KEY_BYTES[algorithm];
  if (raw.length !== want) return { ok: false, why: `must be ${want} bytes of base64 for ${algorithm} (got ${raw.length})` };
  switch (algorithm) {
    case 'ed25519':
      if (isSmallOrderEd25519(raw)) return { ok: false, why: 'is a point of small order, which would verify forged signatures' };
      return imported('is not an ed25519 public key', () =>
        createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' }),
      );
    case 'ecdsa-p256':
      return imported('is not a point on the P-256 curve', () =>
        createPublicKey({
          key: { kty: 'EC', crv: 'P-256', x: raw.subarray(0, 32).toString('base64url'), y: raw.subarray(32).toString('base64url') },
          format: 'jwk',
        }),
      );
    default: {
      const never: never = algorithm;
      return never;
    }
  }
}

function imported(why: string, make: () => KeyObject): { ok: true; key: KeyObject } | { ok: false; why: string } {
  try {
    return { ok: true, key: make() };
  } catch {
    return { ok: false, why };
  }
}
