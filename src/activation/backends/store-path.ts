import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoText } from '../../common/errno';
import type { ActivationOutcome, ActivationPlan, SwitchMethod } from '../activation.types';

export type Resolved = { ok: true; storePath: string } | { ok: false; reason: string };

/**
 * `<storeDir>/<closure>` for a plain store basename. Anything else is refused:
 * a `/` or `..` would let a dispatch point the switch outside the store.
 */
export function resolveClosure(storeDir: string, closure: string): Resolved {
  if (closure === '' || closure === '.' || closure === '..' || closure.includes('/') || closure.includes('\0')) {
    return { ok: false, reason: `refused closure ${JSON.stringify(closure)}: not a store path basename` };
  }
  return { ok: true, storePath: join(storeDir, closure) };
}

/** Like `resolveClosure`, and the path must exist: switching to a closure that was never built or copied here cannot work. */
export async function resolveExisting(storeDir: string, closure: string): Promise<Resolved> {
  const resolved = resolveClosure(storeDir, closure);
  if (!resolved.ok) return resolved;
  try {
    await stat(resolved.storePath);
    return resolved;
  } catch (err) {
    const problem = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `is not usable (${errnoText(err)})`;
    return {
      ok: false,
      reason: `store path ${resolved.storePath} ${problem}; the closure must be built or copied to this host before it is dispatched`,
    };
  }
}

/** A plan that reports `started` and then fails without running anything. */
export function failingPlan(switchMethod: SwitchMethod, reason: string): ActivationPlan {
  const outcome: ActivationOutcome = { kind: 'failed', exitCode: null, stderrTail: reason };
  return { switchMethod, run: () => Promise.resolve(outcome) };
}
