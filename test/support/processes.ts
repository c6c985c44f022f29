import { readFileSync } from 'node:fs';

/**
 * True once the process is gone or a zombie (nobody in a container may reap
 * it), polled from /proc every 20 ms; false if it is still running after
 * `timeoutMs`.
 */
export async function processGone(pid: number, timeoutMs = 2_000): Promise<boolean> {
  for (const deadline = Date.now() + timeoutMs; ;) {
    let state: string;
    try {
      state = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] ?? '';
    } catch {
      return true;
    }
    if (state === 'Z' || state === 'X') return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
