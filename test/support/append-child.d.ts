// append-child.js is plain JS, so that node runs it against dist/ with no build step; its exports, typed.
export declare const ROLLOUTS: readonly string[];
export declare function envelopeOf(rolloutId: string, seq: number): string;
