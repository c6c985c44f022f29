import type { RealiseProgress } from '../activation.types';

/** The latest line is for a reader of /status: a long one (a store path list) is cut. */
const MAX_LINE_CHARS = 400;

const UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };

/**
 * Nix's own wording when a substitute is refused for its signature:
 * `ignoring substitute for '…' from '…', as it's not signed by any of the
 * keys in 'trusted-public-keys'` (the substitution goal), `cannot add path
 * '…' because it lacks a signature by a trusted key` (the local store), and
 * older releases' `does not have a valid signature`.
 */
const SIGNATURE_PROBLEM =
  /not signed by any of the keys|lacks a (valid )?signature|does not have a valid signature|no signature is trusted/i;

/** "these 12 paths will be fetched (45.67 MiB download, 200.1 MiB unpacked):", or "this path will be fetched (…)". */
const TO_FETCH = /^(?:these (?:(\d+) )?paths|(this) path) will be fetched \(([\d.]+) (B|KiB|MiB|GiB|TiB) download/;

const COPYING = /^copying path '[^']+' from '[^']+'/;

/** Reads `nix-store --realise`'s stderr, line by line, into progress for /status and the log. */
export class RealiseProgressReader {
  private progress: RealiseProgress = { lastLine: null, pathsToFetch: null, pathsCopied: 0, downloadBytes: null };
  private signatureLine: string | null = null;

  read(line: string): void {
    const fetch = TO_FETCH.exec(line);
    if (fetch) {
      const count = fetch[2] === 'this' ? 1 : fetch[1] === undefined ? null : Number(fetch[1]);
      const bytes = Math.round(Number(fetch[3]) * UNITS[fetch[4]]);
      this.progress = { ...this.progress, pathsToFetch: count, downloadBytes: Number.isFinite(bytes) ? bytes : null };
    } else if (COPYING.test(line)) {
      this.progress = { ...this.progress, pathsCopied: this.progress.pathsCopied + 1 };
    }
    if (this.signatureLine === null && SIGNATURE_PROBLEM.test(line)) this.signatureLine = line;
    this.progress = { ...this.progress, lastLine: line.length > MAX_LINE_CHARS ? `${line.slice(0, MAX_LINE_CHARS)}…` : line };
  }

  snapshot(): RealiseProgress {
    return { ...this.progress };
  }

  /** The first line that refused a substitute for its signature; null when none did. */
  get signatureProblem(): string | null {
    return this.signatureLine;
  }
}

/** `3 of 12 paths copied, 45.7 MiB to download; last: …` — the log's progress line. */
export function describeRealise(p: RealiseProgress): string {
  const paths = p.pathsToFetch === null ? `${p.pathsCopied} path(s) copied` : `${p.pathsCopied} of ${p.pathsToFetch} path(s) copied`;
  const size = p.downloadBytes === null ? '' : `, ${(p.downloadBytes / 1024 ** 2).toFixed(1)} MiB to download`;
  return `${paths}${size}; last: ${p.lastLine ?? '(nothing yet)'}`;
}
