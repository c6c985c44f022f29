import { runProcess, type ProcessResult, type RunOptions } from '../../activation/backends/process-runner';
import { errorCode, errorMessage } from './outcome';

/**
 * runProcess, given up on as soon as `signal` aborts: null then. The process
 * group is still killed (SIGTERM, SIGKILL after the grace) in the background;
 * a runner being reset must not wait out a kill grace.
 */
export async function runUntilAbort(
  argv: readonly string[],
  options: RunOptions & { readonly signal: AbortSignal },
): Promise<ProcessResult | null> {
  const { signal } = options;
  if (signal.aborted) return null;
  let onAbort = (): void => undefined;
  const aborted = new Promise<null>((resolve) => {
    onAbort = () => resolve(null);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    // A check leaves nothing behind: what it started in the background goes with it.
    const run = runProcess(argv, { ...options, reapGroup: true }).catch((err: unknown): ProcessResult => {
      // spawn() throws on arguments it cannot pass at all (a NUL byte): that run could not be started.
      const spawnError = `${errorCode(err) ?? 'error'}: ${errorMessage(err)}`;
      return { exitCode: null, signal: null, spawnError, timedOut: false, aborted: false, stderrTail: '', stdout: '' };
    });
    const result = await Promise.race([run, aborted]);
    return result === null || result.aborted ? null : result;
  } finally {
    // The signal outlives this run (it is the rollout's): no listener may stay behind.
    signal.removeEventListener('abort', onAbort);
  }
}
