import * as zlib from 'node:zlib';

/**
 * The Node.js releases the agent runs on, as package.json `engines` says it.
 * The floor is `zlib.crc32`, which every event-log record carries: it came
 * in 22.2.0 and was backported to 20.15.0, so 20.11–20.14 and 21.x–22.1
 * would start and then fail every append (every dispatch).
 */
export const NODE_ENGINES = '^20.15.0 || >=22.2.0';
export const MIN_NODE_VERSION = '20.15.0';

/** Newer release lines where the feature arrived later than on the 20.x line. */
const MIN_ON_LINE: Readonly<Record<number, readonly [number, number]>> = { 20: [15, 0], 22: [2, 0] };

export interface NodeRuntime {
  /** `process.versions.node`, e.g. `20.20.2`. */
  version: string;
  /** Whether `zlib.crc32` is there: the check that counts whatever the version says. */
  hasCrc32: boolean;
}

export function currentNodeRuntime(): NodeRuntime {
  return { version: process.versions.node, hasCrc32: typeof (zlib as { crc32?: unknown }).crc32 === 'function' };
}

/** One line saying what is missing, or null when this Node.js can run the agent. */
export function nodeRuntimeProblem(runtime: NodeRuntime): string | null {
  if (versionSupported(runtime.version) && runtime.hasCrc32) return null;
  const why = runtime.hasCrc32 ? '' : ', which lacks zlib.crc32 (the event log checksums every record with it)';
  return (
    `nixfleet-agent needs Node.js ${MIN_NODE_VERSION} or newer (${NODE_ENGINES}); ` +
    `this is Node.js ${runtime.version}${why}: not started`
  );
}

export function versionSupported(version: string): boolean {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (!m) return false;
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (major < 20 || major === 21) return false;
  const floor = MIN_ON_LINE[major];
  if (floor === undefined) return true;
  return minor > floor[0] || (minor === floor[0] && patch >= floor[1]);
}
