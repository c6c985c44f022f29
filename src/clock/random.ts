/** Jitter source; injected so tests can pin it. Returns a number in [0, 1). */
export interface RandomSource {
  next(): number;
}

export const RANDOM = Symbol('RANDOM');

export const mathRandom: RandomSource = { next: () => Math.random() };

/** `base` scaled by a uniform factor in [1 - spread, 1 + spread]. */
export function jitter(baseMs: number, spread: number, random: RandomSource): number {
  return baseMs * (1 + spread * (2 * random.next() - 1));
}
