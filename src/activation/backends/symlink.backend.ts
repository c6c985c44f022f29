import { randomBytes } from 'node:crypto';
import { rename, rm, symlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { errnoText } from '../../common/errno';
import type { CurrentSystemReader } from '../../recovery/current-system.reader';
import type { ActivationBackend, ActivationOutcome, ActivationPlan } from '../activation.types';
import { missingDirectory } from './prerequisites';
import { failingPlan, resolveClosure } from './store-path';

export interface SymlinkBackendOptions {
  readonly storeDir: string;
  readonly currentSystemPath: string;
}

/**
 * For the demo and tests: "activating" re-points the current-system link at
 * `<storeDir>/<closure>`. The target need not exist — nothing runs from it,
 * and the demo's closures are names only.
 */
export class SymlinkBackend implements ActivationBackend {
  readonly name = 'symlink';
  readonly shutdownWaitMs = null;

  constructor(
    private readonly options: SymlinkBackendOptions,
    private readonly currentSystem: CurrentSystemReader,
  ) {}

  async preflight(): Promise<string[]> {
    const problem = await missingDirectory(this.options.storeDir, 'the store dir');
    return problem === null ? [] : [problem];
  }

  plan(closure: string): Promise<ActivationPlan> {
    const resolved = resolveClosure(this.options.storeDir, closure);
    if (!resolved.ok) return Promise.resolve(failingPlan('symlink', resolved.reason));
    return Promise.resolve({ switchMethod: 'symlink', run: () => this.repoint(resolved.storePath) });
  }

  private async repoint(target: string): Promise<ActivationOutcome> {
    const link = this.options.currentSystemPath;
    // A new link beside the old one, renamed over it: rename(2) replaces
    // atomically, so a reader never finds the link missing (rm + symlink would).
    const temp = join(dirname(link), `.${basename(link)}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await symlink(target, temp);
      await rename(temp, link);
    } catch (err) {
      await rm(temp, { force: true }).catch(() => undefined);
      return { kind: 'failed', exitCode: null, stderrTail: `cannot point ${link} at ${target}: ${errnoText(err)}` };
    }
    return { kind: 'completed', observedCurrentClosure: await this.currentSystem.read(), exitCode: 0 };
  }
}
