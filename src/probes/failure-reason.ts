import { MAX_FAILURE_REASON_CHARS } from './probe.types';

/** Marks where a reason was cut. One character, so it fits in the budget it takes from. */
export const CUT_MARK = '…';

/**
 * The reason cut to at most `max` characters (code points: an astral
 * character counts once and a surrogate pair is never split), its end
 * replaced by `…` when cut. §10: `failureReason` is cut to 512 characters.
 */
export function capFailureReason(text: string, max: number = MAX_FAILURE_REASON_CHARS): string {
  if (max <= 0) return '';
  if (text.length <= max) return text; // UTF-16 units ≥ code points: short enough either way
  let out = '';
  let count = 0;
  for (const ch of text) {
    if (count === max - 1) {
      // `ch` is the max-th code point: the text fits only if nothing follows it.
      return out + (text.length === out.length + ch.length ? ch : CUT_MARK);
    }
    out += ch;
    count += 1;
  }
  return out;
}

/**
 * The last `max` code points of `text`, its start replaced by `…` when cut:
 * for the end of a stderr, where the last words are the ones that explain.
 */
export function keepEnd(text: string, max: number): string {
  if (max <= 0) return '';
  if (text.length <= max) return text;
  const points = Array.from(text);
  if (points.length <= max) return text;
  return CUT_MARK + points.slice(points.length - (max - 1)).join('');
}

/** Code points, as the cap counts them. */
export function reasonLength(text: string): number {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}
