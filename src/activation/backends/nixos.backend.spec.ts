import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fakeClosure } from '../../../test/support/agent-harness';
import type { AgentConfig } from '../../config/config.loader';
import { CurrentSystemReader } from '../../recovery/current-system.reader';
import type { ActivationOutcome } from '../activation.types';
import { NixosBackend } from './nixos.backend';

const OLD = fakeClosure('web-01-26.05', 'a');
const NEW = fakeClosure('web-01-26.11', 'b');
const KERNEL = `${'k'.repeat(32)}-linux-6.6.60`;
const NEW_KERNEL = `${'n'.repeat(32)}-linux-6.12.4`;
const INITRD = `${'i'.repeat(32)}-initrd-linux-6.6.60`;

/**
 * No systemd or Nix runs here: `nix-env` and `systemd-run` are fake scripts
 * that record their argv. The fake systemd-run runs the command in the
 * foreground (a real one starts a transient unit and waits for it), and each
 * fake closure's switch-to-configuration re-points the current-system link,
 * as the real one does.
 */
describe('NixosBackend', () => {
  let dir: string;
  let store: string;
  let link: string;
  let profile: string;
  let booted: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-nixos-'));
    store = join(dir, 'store');
    link = join(dir, 'current-system');
    profile = join(dir, 'profiles', 'system');
    booted = join(dir, 'booted-system');
    mkdirSync(join(dir, 'profiles'));
    systemClosure(OLD, { kernel: KERNEL, initrd: INITRD });
    symlinkSync(join(store, OLD), link);
    symlinkSync(join(store, OLD), booted);
    fakeNixEnv(0);
    fakeSystemdRun();
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function write(path: string, body: string): void {
    writeFileSync(path, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  }

  /** A system closure: kernel and initrd links, and a switch-to-configuration that exits with `exit`. */
  function systemClosure(closure: string, o: { kernel: string; initrd: string; exit?: number; stderr?: string }): void {
    const top = join(store, closure);
    mkdirSync(join(top, 'bin'), { recursive: true });
    symlinkSync(join(store, o.kernel, 'bzImage'), join(top, 'kernel'));
    symlinkSync(join(store, o.initrd, 'initrd'), join(top, 'initrd'));
    write(
      join(top, 'bin', 'switch-to-configuration'),
      [
        `echo "$1" >> '${join(dir, 'switch.log')}'`,
        o.stderr ? `echo '${o.stderr}' >&2` : '',
        `[ "$1" = switch ] && [ ${o.exit ?? 0} -eq 0 ] && ln -sfn '${top}' '${link}'`,
        `exit ${o.exit ?? 0}`,
      ].join('\n'),
    );
  }

  function fakeNixEnv(exit: number, stderr = ''): void {
    write(
      join(dir, 'nix-env'),
      [
        `printf '%s\\n' "$@" > '${join(dir, 'nix-env.argv')}'`,
        stderr ? `echo '${stderr}' >&2` : '',
        exit === 0 ? 'ln -sfn "$4" "$2"' : '',
        `exit ${exit}`,
      ].join('\n'),
    );
  }

  /** Records argv, skips the options, runs the command and passes on its exit status. */
  function fakeSystemdRun(): void {
    write(
      join(dir, 'systemd-run'),
      [
        `printf '%s\\n' "$@" > '${join(dir, 'systemd-run.argv')}'`,
        'while [ $# -gt 0 ]; do case "$1" in --*) shift ;; *) break ;; esac; done',
        '"$@"',
        'status=$?',
        '[ $status -ne 0 ] && echo "Finished with result: exit-code" >&2',
        'exit $status',
      ].join('\n'),
    );
  }

  function backend(): NixosBackend {
    const reader = new CurrentSystemReader({ currentSystemPath: link } as AgentConfig);
    return new NixosBackend(
      {
        storeDir: store,
        systemProfile: profile,
        nixEnv: join(dir, 'nix-env'),
        systemdRun: join(dir, 'systemd-run'),
        bootedSystemPath: booted,
        timeoutMs: 10_000,
      },
      reader,
    );
  }

  function argvOf(program: 'nix-env' | 'systemd-run'): string[] {
    return readFileSync(join(dir, `${program}.argv`), 'utf8')
      .split('\n')
      .slice(0, -1);
  }

  function failure(outcome: ActivationOutcome): { exitCode: number | null; stderrTail: string } {
    if (outcome.kind !== 'failed') throw new Error(`expected a failure, got ${JSON.stringify(outcome)}`);
    return outcome;
  }

  it('sets the profile, then runs switch-to-configuration switch in a transient unit, and reports the closure read back', async () => {
    systemClosure(NEW, { kernel: KERNEL, initrd: INITRD });
    const storePath = join(store, NEW);
    const plan = await backend().plan(NEW);
    expect(plan.switchMethod).toBe('switch-to-configuration switch');

    expect(await plan.run()).toEqual({ kind: 'completed', observedCurrentClosure: NEW, exitCode: 0 });
    expect(argvOf('nix-env')).toEqual(['--profile', profile, '--set', storePath]);
    expect(readlinkSync(profile)).toBe(storePath);
    const run = argvOf('systemd-run');
    expect(run[0]).toMatch(/^--unit=nixfleet-switch-[0-9a-f]{8}$/);
    expect(run).toEqual(expect.arrayContaining(['--collect', '--wait']));
    expect(run.slice(-2)).toEqual([join(storePath, 'bin', 'switch-to-configuration'), 'switch']);
    expect(readFileSync(join(dir, 'switch.log'), 'utf8')).toBe('switch\n');
    expect(readlinkSync(link)).toBe(storePath);
  });

  it('uses a fresh unit name for each switch', async () => {
    systemClosure(NEW, { kernel: KERNEL, initrd: INITRD });
    await (await backend().plan(NEW)).run();
    const first = argvOf('systemd-run')[0];
    await (await backend().plan(NEW)).run();
    expect(argvOf('systemd-run')[0]).not.toBe(first);
  });

  it('installs for the next boot and reports deferred by "kernel" when the kernel differs from the booted one', async () => {
    systemClosure(NEW, { kernel: NEW_KERNEL, initrd: INITRD });
    const plan = await backend().plan(NEW);
    expect(plan.switchMethod).toBe('switch-to-configuration boot');

    expect(await plan.run()).toEqual({ kind: 'deferred', component: 'kernel' });
    expect(readlinkSync(profile)).toBe(join(store, NEW));
    expect(argvOf('systemd-run').slice(-1)).toEqual(['boot']);
    expect(readFileSync(join(dir, 'switch.log'), 'utf8')).toBe('boot\n');
    expect(readlinkSync(link)).toBe(join(store, OLD)); // still running the old system
  });

  it('reports deferred by "initrd" when only the initrd differs', async () => {
    systemClosure(NEW, { kernel: KERNEL, initrd: `${'j'.repeat(32)}-initrd-linux-6.6.60` });
    const plan = await backend().plan(NEW);
    expect(plan.switchMethod).toBe('switch-to-configuration boot');
    expect(await plan.run()).toEqual({ kind: 'deferred', component: 'initrd' });
  });

  it('switches when there is no booted system to compare with (e.g. a container)', async () => {
    rmSync(booted);
    systemClosure(NEW, { kernel: NEW_KERNEL, initrd: INITRD });
    const plan = await backend().plan(NEW);
    expect(plan.switchMethod).toBe('switch-to-configuration switch');
    expect((await plan.run()).kind).toBe('completed');
  });

  it('fails with nix-env’s exit code and stderr, and attempts no switch, when setting the profile fails', async () => {
    systemClosure(NEW, { kernel: KERNEL, initrd: INITRD });
    fakeNixEnv(1, 'error: opening lock file: Permission denied');
    const { exitCode, stderrTail } = failure(await (await backend().plan(NEW)).run());
    expect(exitCode).toBe(1);
    expect(stderrTail).toMatch(/nix-env --profile .* --set exited with code 1; no switch attempted\n/);
    expect(stderrTail).toMatch(/Permission denied$/);
    expect(existsSync(join(dir, 'systemd-run.argv'))).toBe(false);
    expect(readlinkSync(link)).toBe(join(store, OLD));
  });

  it('fails with the switch’s exit code and points at the unit’s journal when the switch fails', async () => {
    systemClosure(NEW, { kernel: KERNEL, initrd: INITRD, exit: 4, stderr: 'warning: the following units failed: nginx.service' });
    const { exitCode, stderrTail } = failure(await (await backend().plan(NEW)).run());
    expect(exitCode).toBe(4);
    const unit = argvOf('systemd-run')[0].slice('--unit='.length);
    expect(stderrTail).toContain(`switch-to-configuration switch (unit ${unit}) exited with code 4; its output: journalctl -u ${unit}`);
    expect(stderrTail).toMatch(/Finished with result: exit-code$/);
  });

  it('fails before running anything when the closure is not in the store', async () => {
    const plan = await backend().plan(NEW);
    expect(plan.switchMethod).toBe('switch-to-configuration switch');
    const { exitCode, stderrTail } = failure(await plan.run());
    expect(exitCode).toBeNull();
    expect(stderrTail).toContain(`store path ${join(store, NEW)} does not exist`);
    expect(existsSync(join(dir, 'nix-env.argv'))).toBe(false);
  });

  it('refuses a closure that is not a store basename', async () => {
    const { stderrTail } = failure(await (await backend().plan(`../${OLD}`)).run());
    expect(stderrTail).toMatch(/not a store path basename/);
    expect(existsSync(join(dir, 'nix-env.argv'))).toBe(false);
  });

  it('fails with a null exit code when nix-env is not installed', async () => {
    systemClosure(NEW, { kernel: KERNEL, initrd: INITRD });
    rmSync(join(dir, 'nix-env'));
    const { exitCode, stderrTail } = failure(await (await backend().plan(NEW)).run());
    expect(exitCode).toBeNull();
    expect(stderrTail).toMatch(/could not be started \(ENOENT/);
  });
});
