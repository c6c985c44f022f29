import { distance } from 'fastest-levenshtein';

/**
 * The known name an operator most likely meant by an unknown one: the only
 * known name it begins (`--machine` for `--machine-id`), or the nearest
 * within a typo or two (`--heartbeat-intervall`). Undefined when nothing is
 * that close: a wild guess is worse than none.
 */
export function didYouMean(given: string, known: readonly string[]): string | undefined {
  if (given.length >= 3) {
    const extending = known.filter((k) => k.startsWith(given));
    if (extending.length === 1) return extending[0];
  }
  const allowed = given.length < 4 ? 1 : given.length < 12 ? 2 : 3;
  let best: string | undefined;
  let bestDistance = allowed + 1;
  for (const name of known) {
    const d = distance(given, name);
    if (d < bestDistance) {
      best = name;
      bestDistance = d;
    }
  }
  return best;
}
