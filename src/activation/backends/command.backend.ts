import type { CurrentSystemReader } from '../../recovery/current-system.reader';
import { EX_TEMPFAIL, IN_TREE_SHUTDOWN_WAIT_MS } from '../activation.constants';
import type { ActivationBackend, ActivationOutcome, ActivationPlan } from '../activation.types';
import { composeTail, describeEnd, runProcess } from './process-runner';
import { missingDirectory, missingExecutable } from './prerequisites';
import { failingPlan, resolveExisting } from './store-path';

export interface CommandBackendOptions {
  readonly storeDir: string;
  /** argv; every `{closure}` becomes the full store path. */
  readonly command: readonly string[];
  readonly timeoutMs: number;
  readonly killGraceMs?: number;
}

export const CLOSURE_PLACEHOLDER = '{closure}';

/**
 * Runs the operator's activation command. Exit 0: completed; exit 75
 * (EX_TEMPFAIL): deferred, component "command"; anything else: failed.
 */
export class CommandBackend implements ActivationBackend {
  readonly name = 'command';
  readonly shutdownWaitMs = IN_TREE_SHUTDOWN_WAIT_MS;

  constructor(
    private readonly options: CommandBackendOptions,
    private readonly currentSystem: CurrentSystemReader,
  ) {}

  async preflight(searchPath: string): Promise<string[]> {
    const program = this.options.command[0] ?? '';
    const found = await Promise.all([
      program === '' ? 'the activation command is empty' : missingExecutable(program, searchPath, 'the activation command'),
      missingDirectory(this.options.storeDir, 'the store dir'),
    ]);
    return found.filter((p): p is string => p !== null);
  }

  async plan(closure: string): Promise<ActivationPlan> {
    const resolved = await resolveExisting(this.options.storeDir, closure);
    if (!resolved.ok) return failingPlan('command', resolved.reason);
    const argv = this.options.command.map((arg) => arg.replaceAll(CLOSURE_PLACEHOLDER, resolved.storePath));
    return { switchMethod: 'command', run: () => this.run(argv) };
  }

  private async run(argv: readonly string[]): Promise<ActivationOutcome> {
    const { timeoutMs, killGraceMs } = this.options;
    const result = await runProcess(argv, { timeoutMs, killGraceMs });
    if (result.exitCode === 0 && !result.timedOut) {
      return { kind: 'completed', observedCurrentClosure: await this.currentSystem.read(), exitCode: 0 };
    }
    if (result.exitCode === EX_TEMPFAIL && !result.timedOut) return { kind: 'deferred', component: 'command' };
    return {
      kind: 'failed',
      exitCode: result.exitCode,
      stderrTail: composeTail(describeEnd(`activation command ${argv[0] ?? ''}`, result, timeoutMs), result.stderrTail),
    };
  }
}
