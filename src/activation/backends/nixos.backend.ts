import { randomBytes } from 'node:crypto';
import { readlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { CurrentSystemReader } from '../../recovery/current-system.reader';
import { DETACHED_SHUTDOWN_WAIT_MS } from '../activation.constants';
import type { ActivationBackend, ActivationOutcome, ActivationPlan } from '../activation.types';
import { composeTail, describeEnd, runProcess } from './process-runner';
import { missingDirectory, missingExecutable } from './prerequisites';
import { failingPlan, resolveExisting } from './store-path';

export interface NixosBackendOptions {
  readonly storeDir: string;
  readonly systemProfile: string;
  /** Program names or paths; tests point them at fake scripts. */
  readonly nixEnv: string;
  readonly systemdRun: string;
  /** The running kernel's system: `/run/booted-system` on NixOS. */
  readonly bootedSystemPath: string;
  readonly timeoutMs: number;
  readonly killGraceMs?: number;
}

type Action = 'switch' | 'boot';

/** Links of a system closure that a running system cannot change without a reboot. */
const BOOT_COMPONENTS = ['kernel', 'initrd'] as const;

/**
 * NixOS: set the system profile, then run the closure's
 * switch-to-configuration in a transient systemd unit. The switch may
 * restart the agent itself; as its own unit it is not in the agent's cgroup,
 * so it survives that (our `systemd-run --wait` client does not, and need not).
 */
export class NixosBackend implements ActivationBackend {
  readonly name = 'nixos';
  readonly shutdownWaitMs = DETACHED_SHUTDOWN_WAIT_MS;

  constructor(
    private readonly options: NixosBackendOptions,
    private readonly currentSystem: CurrentSystemReader,
  ) {}

  async preflight(searchPath: string): Promise<string[]> {
    const { nixEnv, systemdRun, storeDir } = this.options;
    const found = await Promise.all([
      missingExecutable(nixEnv, searchPath, 'sets the system profile'),
      missingExecutable(systemdRun, searchPath, 'runs switch-to-configuration'),
      missingDirectory(storeDir, 'the store dir'),
    ]);
    return found.filter((p): p is string => p !== null);
  }

  async plan(closure: string): Promise<ActivationPlan> {
    const resolved = await resolveExisting(this.options.storeDir, closure);
    if (!resolved.ok) return failingPlan('switch-to-configuration switch', resolved.reason);
    const changed = await this.changedBootComponent(resolved.storePath);
    // A new kernel or initrd only runs after a reboot: install it as the boot
    // default and report deferred, rather than switch userspace onto a kernel
    // whose modules it does not match.
    const action: Action = changed === null ? 'switch' : 'boot';
    return {
      switchMethod: `switch-to-configuration ${action}`,
      run: () => this.run(resolved.storePath, action, changed),
    };
  }

  private async run(storePath: string, action: Action, changed: string | null): Promise<ActivationOutcome> {
    const { nixEnv, systemdRun, systemProfile, timeoutMs, killGraceMs } = this.options;

    // The profile first: it is what the bootloader and a later rollback see.
    const profile = await runProcess([nixEnv, '--profile', systemProfile, '--set', storePath], { timeoutMs, killGraceMs });
    if (profile.exitCode !== 0 || profile.timedOut) {
      const head = `${describeEnd(`${nixEnv} --profile ${systemProfile} --set`, profile, timeoutMs)}; no switch attempted`;
      return { kind: 'failed', exitCode: profile.exitCode, stderrTail: composeTail(head, profile.stderrTail) };
    }

    const unit = `nixfleet-switch-${randomBytes(4).toString('hex')}`;
    // No --quiet: on failure systemd-run's own "Finished with result…" lines
    // are the stderr we get (the switch's output goes to the unit's journal).
    const argv = [
      systemdRun,
      `--unit=${unit}`,
      `--description=NixFleet switch-to-configuration ${action} ${basename(storePath)}`,
      '--collect',
      '--wait',
      '--no-ask-password',
      '--service-type=exec',
      join(storePath, 'bin', 'switch-to-configuration'),
      action,
    ];
    const result = await runProcess(argv, { timeoutMs, killGraceMs });
    if (result.exitCode === 0 && !result.timedOut) {
      if (action === 'boot') return { kind: 'deferred', component: changed ?? 'kernel' };
      return { kind: 'completed', observedCurrentClosure: await this.currentSystem.read(), exitCode: 0 };
    }
    const head = [
      describeEnd(`switch-to-configuration ${action} (unit ${unit})`, result, timeoutMs),
      result.timedOut ? '; the unit may still be running' : '',
      `; its output: journalctl -u ${unit}`,
    ].join('');
    return { kind: 'failed', exitCode: result.exitCode, stderrTail: composeTail(head, result.stderrTail) };
  }

  /** The first boot component whose link differs from the booted system's; null when none (or unknown). */
  private async changedBootComponent(storePath: string): Promise<string | null> {
    for (const component of BOOT_COMPONENTS) {
      const [next, booted] = await Promise.all([
        readlinkOrNull(join(storePath, component)),
        readlinkOrNull(join(this.options.bootedSystemPath, component)),
      ]);
      // Unknown on either side (a container, no booted system): nothing to compare, so switch.
      if (next !== null && booted !== null && next !== booted) return component;
    }
    return null;
  }
}

async function readlinkOrNull(path: string): Promise<string | null> {
  try {
    return await readlink(path);
  } catch {
    return null;
  }
}
