import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A pause inside a job's run (pacing a replay, waiting to retry a held
 * input): real time, cut short when the run is. Resolves false if `signal`
 * was aborted.
 */
export async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  try {
    await sleep(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}
