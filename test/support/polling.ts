/**
 * Waiting, in real time, for something a child process or the dev CP will
 * do: a poll every 50 ms, bounded, and a failure that says what was awaited.
 */

import { inspect } from 'node:util';

/**
 * Polls (real time, every 50 ms) until `probe` gives something other than
 * null, and resolves with it. A throw counts as "not yet" (an agent not
 * listening yet); the failure says what was awaited and the last error.
 */
export async function until<T>(
  probe: () => T | null | Promise<T | null>,
  timeoutMs: number,
  what: string,
  context: () => string = () => '',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  for (;;) {
    try {
      const value = await probe();
      if (value !== null) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const last = lastError === null ? '' : ` (last error: ${describeThrown(lastError)})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last}\n${context()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `until` for a yes/no condition. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
  context: () => string = () => '',
): Promise<void> {
  await until(async () => ((await check()) ? true : null), timeoutMs, what, context);
}

/** An Error as "Error: message"; anything else thrown as the value itself, not "[object Object]". */
function describeThrown(err: unknown): string {
  return err instanceof Error ? String(err) : inspect(err);
}
