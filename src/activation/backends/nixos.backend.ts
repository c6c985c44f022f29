import { randomBytes } from 'node:crypto';
import { readlink, realpath, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import type { CurrentSystemReader } from '../../recovery/current-system.reader';
import { DETACHED_SHUTDOWN_WAIT_MS, NO_EXIT_CODE, SIGNATURE_FAILURE_EXIT_CODE, SWITCH_LOCK_POLL_MS } from '../activation.constants';
import type {
  ActivationBackend,
  ActivationOutcome,
  ActivationPhase,
  ActivationPlan,
  ProgressSink,
  RealiseProgress,
} from '../activation.types';
import { composeTail, describeEnd, formatMs, runProcess } from './process-runner';
import { missingDirectory, missingExecutable } from './prerequisites';
import { RealiseProgressReader } from './realise-progress';
import { failingPlan, resolveClosure } from './store-path';
import { switchLockHeld } from './switch-lock';

export interface NixosBackendOptions {
  readonly storeDir: string;
  readonly systemProfile: string;
  /** Program names or paths; tests point them at fake scripts. */
  readonly nixStore: string;
  readonly nixEnv: string;
  readonly systemdRun: string;
  /** The running kernel's system: `/run/booted-system` on NixOS. */
  readonly bootedSystemPath: string;
  /** The file switch-to-configuration flocks while it runs: `/run/nixos/switch-to-configuration.lock` on NixOS. */
  readonly switchLockPath: string;
  /** Bounds nix-env and the switch, each. */
  readonly timeoutMs: number;
  /** Bounds `nix-store --realise` (the download). */
  readonly realiseTimeoutMs: number;
  /** How long to wait for another switch to release the lock before failing. */
  readonly switchLockWaitMs: number;
  readonly switchLockPollMs?: number;
  readonly killGraceMs?: number;
}

type Action = 'switch' | 'boot';

/**
 * What a running system cannot take without a reboot, and what each is
 * compared with. The kernel, the initrd and the stage-2 `init` run only at
 * boot, so the running ones are the booted system's (a switch since boot
 * changed the current system's links, not what runs). systemd and D-Bus are
 * what switch-to-configuration hands over in place (it re-executes PID 1), so
 * the running ones are the current system's.
 */
const REBOOT_COMPONENTS: readonly { readonly path: string; readonly running: 'booted' | 'current' }[] = [
  { path: 'kernel', running: 'booted' },
  { path: 'initrd', running: 'booted' },
  { path: 'init', running: 'booted' },
  { path: 'sw/lib/systemd/systemd', running: 'current' },
  { path: 'etc/systemd/system/dbus.service', running: 'current' },
];

/**
 * NixOS: realise the closure (Nix fetches it from the binary caches and
 * checks their signatures), wait for any other switch to finish, set the
 * system profile, then run the closure's switch-to-configuration in a
 * transient systemd unit. The switch may restart the agent itself; as its own
 * unit it is not in the agent's cgroup, so it survives that (our
 * `systemd-run --wait` client does not, and need not).
 */
export class NixosBackend implements ActivationBackend {
  readonly name = 'nixos';
  readonly shutdownWaitMs = DETACHED_SHUTDOWN_WAIT_MS;

  constructor(
    private readonly options: NixosBackendOptions,
    private readonly currentSystem: CurrentSystemReader,
  ) {}

  async preflight(searchPath: string): Promise<string[]> {
    const { nixStore, nixEnv, systemdRun, storeDir } = this.options;
    const found = await Promise.all([
      missingExecutable(nixStore, searchPath, 'fetches the closure'),
      missingExecutable(nixEnv, searchPath, 'sets the system profile'),
      missingExecutable(systemdRun, searchPath, 'runs switch-to-configuration'),
      missingDirectory(storeDir, 'the store dir'),
    ]);
    return found.filter((p): p is string => p !== null);
  }

  /**
   * The closure need not be here yet: the run's realise fetches it. The
   * method reported at the start is a guess when it is not (a switch, the
   * common case); the run decides again once the closure is here, and a
   * deferred outcome names what needs the reboot.
   */
  async plan(closure: string): Promise<ActivationPlan> {
    const resolved = resolveClosure(this.options.storeDir, closure);
    if (!resolved.ok) return failingPlan('switch-to-configuration switch', resolved.reason);
    const { storePath } = resolved;
    const changed = (await exists(storePath)) ? await this.changedComponent(storePath) : null;
    return {
      switchMethod: `switch-to-configuration ${changed === null ? 'switch' : 'boot'}`,
      run: (onProgress) => this.run(storePath, onProgress ?? (() => undefined)),
    };
  }

  private async run(storePath: string, onProgress: ProgressSink): Promise<ActivationOutcome> {
    const { nixEnv, systemdRun, systemProfile, timeoutMs, killGraceMs } = this.options;
    let realise: RealiseProgress | null = null;
    const enter = (phase: ActivationPhase, note: string): void => safely(onProgress, { phase, note, realise });

    const realised = await this.realise(storePath, (progress) => {
      realise = progress;
      safely(onProgress, { phase: 'realising', note: `nix-store --realise ${storePath}`, realise });
    });
    if (realised !== null) return realised;
    if (!(await exists(storePath))) {
      return {
        kind: 'failed',
        exitCode: NO_EXIT_CODE,
        stderrTail: `nix-store --realise exited 0, but ${storePath} is not there; no switch attempted`,
      };
    }

    // After the realise: only now is the new closure's content here to compare.
    const changed = await this.changedComponent(storePath);
    // A new kernel (or init, systemd, D-Bus) only runs after a reboot:
    // install it as the boot default and report deferred, rather than switch
    // userspace onto a base it was not built for.
    const action: Action = changed === null ? 'switch' : 'boot';

    const lockProblem = await this.waitForSwitchLock(enter);
    if (lockProblem !== null) return { kind: 'failed', exitCode: null, stderrTail: lockProblem };

    // The profile first: it is what the bootloader and a later rollback see.
    enter('setting profile', `${nixEnv} --profile ${systemProfile} --set ${storePath}`);
    const profile = await runProcess([nixEnv, '--profile', systemProfile, '--set', storePath], { timeoutMs, killGraceMs });
    if (profile.exitCode !== 0 || profile.timedOut) {
      const head = `${describeEnd(`${nixEnv} --profile ${systemProfile} --set`, profile, timeoutMs)}; no switch attempted`;
      return { kind: 'failed', exitCode: profile.exitCode, stderrTail: composeTail(head, profile.stderrTail) };
    }

    const unit = `nixfleet-switch-${randomBytes(4).toString('hex')}`;
    enter('switching', `switch-to-configuration ${action} in unit ${unit}${changed === null ? '' : ` (${changed} changed)`}`);
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
      if (changed !== null) return { kind: 'deferred', component: changed };
      return { kind: 'completed', observedCurrentClosure: await this.currentSystem.read(), exitCode: 0 };
    }
    const head = [
      describeEnd(`switch-to-configuration ${action} (unit ${unit})`, result, timeoutMs),
      result.timedOut ? '; the unit may still be running' : '',
      `; its output: journalctl -u ${unit}`,
    ].join('');
    return { kind: 'failed', exitCode: result.exitCode, stderrTail: composeTail(head, result.stderrTail) };
  }

  /**
   * `nix-store --realise`: Nix fetches what is missing from the binary caches
   * and refuses a substitute no `trusted-public-keys` key signed. Null when
   * it succeeded; otherwise the failed outcome (§13: -2 for a signature).
   */
  private async realise(storePath: string, onProgress: (progress: RealiseProgress) => void): Promise<ActivationOutcome | null> {
    const { nixStore, realiseTimeoutMs, killGraceMs } = this.options;
    const reader = new RealiseProgressReader();
    onProgress(reader.snapshot());
    const result = await runProcess([nixStore, '--realise', storePath], {
      timeoutMs: realiseTimeoutMs,
      killGraceMs,
      onStderrLine: (line) => {
        reader.read(line);
        onProgress(reader.snapshot());
      },
    });
    if (result.exitCode === 0 && !result.timedOut) return null;
    const what = `${nixStore} --realise ${storePath}`;
    const signature = reader.signatureProblem;
    if (signature !== null && !result.timedOut && result.spawnError === null) {
      const head = `${describeEnd(what, result, realiseTimeoutMs)}: a substitute was refused for its signature (not signed by a key in Nix's trusted-public-keys); no switch attempted`;
      // The refusing line may have scrolled out of the tail; it is the reason, so it stays, after the head.
      const lead = result.stderrTail.includes(signature) ? head : `${head}\n${signature}\n…`;
      return { kind: 'failed', exitCode: SIGNATURE_FAILURE_EXIT_CODE, stderrTail: composeTail(lead, result.stderrTail) };
    }
    const head = `${describeEnd(what, result, realiseTimeoutMs)}; the closure could not be fetched, no switch attempted`;
    return { kind: 'failed', exitCode: result.exitCode ?? NO_EXIT_CODE, stderrTail: composeTail(head, result.stderrTail) };
  }

  /** Null once no other switch holds the lock; the failure's stderrTail when one held it past the bound. */
  private async waitForSwitchLock(enter: (phase: ActivationPhase, note: string) => void): Promise<string | null> {
    const { switchLockPath, switchLockWaitMs } = this.options;
    const pollMs = this.options.switchLockPollMs ?? SWITCH_LOCK_POLL_MS;
    if (!switchLockHeld(switchLockPath)) return null;
    enter(
      'waiting for the switch lock',
      `another switch-to-configuration holds ${switchLockPath}: waiting up to ${formatMs(switchLockWaitMs)} for it to finish before this one starts`,
    );
    const deadline = performance.now() + switchLockWaitMs;
    while (performance.now() < deadline) {
      await new Promise((done) => setTimeout(done, Math.min(pollMs, Math.max(0, deadline - performance.now())))); // not a job: this wait's poll
      if (!switchLockHeld(switchLockPath)) return null;
    }
    return `another switch-to-configuration still held ${switchLockPath} after ${formatMs(switchLockWaitMs)}; the closure is fetched, but the profile was not set and no switch attempted`;
  }

  /** The first component that differs from the running system's; null when none does (or none can be compared). */
  private async changedComponent(storePath: string): Promise<string | null> {
    for (const { path, running } of REBOOT_COMPONENTS) {
      const runningSystem = running === 'booted' ? this.options.bootedSystemPath : this.currentSystem.path;
      const [next, now] = await Promise.all([componentIdentity(join(storePath, path)), componentIdentity(join(runningSystem, path))]);
      // Unknown on either side (a container, no booted system): nothing to compare, so no reason to reboot.
      if (next !== null && now !== null && next !== now) return path;
    }
    return null;
  }
}

/**
 * What a component is, comparable across closures: a link's target (made
 * absolute), or a file's real path (a store path when a parent is the link).
 * Null when it cannot be read.
 */
async function componentIdentity(path: string): Promise<string | null> {
  try {
    const target = await readlink(path);
    return isAbsolute(target) ? target : resolve(await realpath(dirname(path)), target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL') return null;
  }
  try {
    return await realpath(path);
  } catch {
    return null;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

function safely(sink: ProgressSink, progress: Parameters<ProgressSink>[0]): void {
  try {
    sink(progress);
  } catch {
    // Progress is for the reader; the switch does not depend on it.
  }
}
