import { ROLLOUT_ID_PATTERN } from './rollout';

/**
 * PROTOCOL §7: `X-Nixfleet-Replay-From` is either a plain seq (the CP names no
 * rollout; the agent applies it to its most recent rollout) or our extension,
 * `<rolloutId>=<seq>[, <rolloutId>=<seq>…]`.
 */
export type ReplayFrom = { form: 'plain'; fromSeq: number } | { form: 'per-rollout'; entries: { rolloutId: string; fromSeq: number }[] };

export type ReplayFromParse = { ok: true; value: ReplayFrom } | { ok: false; reason: string };

// 15 digits stay within Number.MAX_SAFE_INTEGER.
const SEQ = /^(0|[1-9][0-9]{0,14})$/;

export function parseReplayFrom(raw: string): ReplayFromParse {
  const value = raw.trim();
  if (value === '') return { ok: false, reason: 'empty value' };
  if (SEQ.test(value)) return { ok: true, value: { form: 'plain', fromSeq: Number(value) } };
  const entries: { rolloutId: string; fromSeq: number }[] = [];
  for (const part of value.split(',')) {
    const pair = part.trim();
    const eq = pair.lastIndexOf('=');
    if (eq <= 0) return { ok: false, reason: `"${pair}" is neither a seq nor <rolloutId>=<seq>` };
    const rolloutId = pair.slice(0, eq).trim();
    const seq = pair.slice(eq + 1).trim();
    if (!ROLLOUT_ID_PATTERN.test(rolloutId)) return { ok: false, reason: `"${rolloutId}" is not a rollout id` };
    if (!SEQ.test(seq)) return { ok: false, reason: `"${seq}" is not a seq for ${rolloutId}` };
    if (entries.some((e) => e.rolloutId === rolloutId)) {
      return { ok: false, reason: `${rolloutId} is named twice` };
    }
    entries.push({ rolloutId, fromSeq: Number(seq) });
  }
  return { ok: true, value: { form: 'per-rollout', entries } };
}

export function formatReplayFrom(value: ReplayFrom): string {
  switch (value.form) {
    case 'plain':
      return String(value.fromSeq);
    case 'per-rollout':
      return value.entries.map((e) => `${e.rolloutId}=${e.fromSeq}`).join(', ');
    default: {
      const never: never = value;
      return never;
    }
  }
}
