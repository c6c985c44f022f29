import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { flockSync } from 'fs-ext';
import { fakeClosure } from '../../../test/support/agent-harness';
import { eventually } from '../../../test/support/polling';
import type { AgentConfig } from '../../config/config.loader';
import { CurrentSystemReader } from '../../recovery/current-system.reader';
import type { ActivationOutcome, ActivationProgress } from '../activation.types';
import { NixosBackend, type NixosBackendOptions } from './nixos.backend';

const OLD = fakeClosure('web-01-26.05', 'a');
const NEW = fakeClosure('web-01-26.11', 'b');

/** The store paths a system closure's reboot components come from. */
interface Parts {
  kernel: string;
  initrd: string;
  init: string;
  systemd: string;
  /** The etc tree: the closure's `etc` links to it, and its dbus.service is a regular file (compared by real path). */
  etc: string;
}

const PARTS: Parts = {
  kernel: `${'k'.repeat(32)}-linux-6.6.60`,
  initrd: `${'i'.repeat(32)}-initrd-linux-6.6.60`,
  init: `${'c'.repeat(32)}-stage-2-init.sh`,
  systemd: `${'s'.repeat(32)}-systemd-256.8`,
  etc: `${'d'.repeat(32)}-etc`,
};

/** For each component, a closure that differs from PARTS in it alone. */
const CHANGED: Record<string, Partial<Parts>> = {
  kernel: { kernel: `${'n'.repeat(32)}-linux-6.12.4` },
  initrd: { initrd: `${'j'.repeat(32)}-initrd-linux-6.6.60` },
  init: { init: `${'f'.repeat(32)}-stage-2-init.sh` },
  'sw/lib/systemd/systemd': { systemd: `${'x'.repeat(32)}-systemd-257.1` },
  'etc/systemd/system/dbus.service': { etc: `${'y'.repeat(32)}-etc` },
};

const SIGNATURE_WARNING = (path: string): string =>
  `warning: ignoring substitute for '${path}' from 'https://cache.example.org', as it's not signed by any of the keys in 'trusted-public-keys'`;

/**
 * No systemd or Nix runs here: `nix-store`, `nix-env` and `systemd-run` are
 * fake scripts that record their argv and their order. The fake nix-store
 * "fetches" a closure by copying it from a fake cache dir into the fake
 * store; the fake systemd-run runs the command in the foreground (a real one
 * starts a transient unit and waits for it), and each fake closure's
 * switch-to-configuration re-points the current-system link, as the real one
 * does.
 */
describe('NixosBackend', () => {
  let dir: string;
  let store: string;
  let cache: string;
  let link: string;
  let profile: string;
  let booted: string;
  let lock: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-nixos-'));
    store = join(dir, 'store');
    cache = join(dir, 'cache');
    link = join(dir, 'current-system');
    profile = join(dir, 'profiles', 'system');
    booted = join(dir, 'booted-system');
    lock = join(dir, 'switch-to-configuration.lock');
    mkdirSync(join(dir, 'profiles'));
    mkdirSync(cache);
    systemClosure(OLD);
    symlinkSync(join(store, OLD), link);
    symlinkSync(join(store, OLD), booted);
    fakeNixStore();
    fakeNixEnv(0);
    fakeSystemdRun();
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function write(path: string, body: string): void {
    writeFileSync(path, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  }

  /** Appends the program's name to the order log and its argv to `<name>.argv`. */
  const record = (name: string): string =>
    `echo ${name} >> '${join(dir, 'order.log')}'; printf '%s\\n' "$@" > '${join(dir, `${name}.argv`)}'`;

  /**
   * A system closure with the five reboot components, and a
   * switch-to-configuration that exits with `exit`. In the store, or in the
   * fake cache (`inCache`) for the fake nix-store to fetch.
   */
  function systemClosure(closure: string, o: Partial<Parts> & { exit?: number; stderr?: string; inCache?: boolean } = {}): void {
    const parts = { ...PARTS, ...o };
    const top = join(o.inCache === true ? cache : store, closure);
    mkdirSync(join(top, 'bin'), { recursive: true });
    mkdirSync(join(top, 'sw', 'lib', 'systemd'), { recursive: true });
    symlinkSync(join(store, parts.kernel, 'bzImage'), join(top, 'kernel'));
    symlinkSync(join(store, parts.initrd, 'initrd'), join(top, 'initrd'));
    symlinkSync(join(store, parts.init), join(top, 'init'));
    symlinkSync(join(store, parts.systemd, 'lib', 'systemd', 'systemd'), join(top, 'sw', 'lib', 'systemd', 'systemd'));
    // As on NixOS: `etc` links to the etc tree, whose unit files are in it.
    mkdirSync(join(store, parts.etc, 'systemd', 'system'), { recursive: true });
    writeFileSync(join(store, parts.etc, 'systemd', 'system', 'dbus.service'), '[Service]\n');
    symlinkSync(join(store, parts.etc), join(top, 'etc'));
    const finalTop = join(store, closure);
    write(
      join(top, 'bin', 'switch-to-configuration'),
      [
        `echo "$1" >> '${join(dir, 'switch.log')}'`,
        o.stderr ? `echo '${o.stderr}' >&2` : '',
        `[ "$1" = switch ] && [ ${o.exit ?? 0} -eq 0 ] && ln -sfn '${finalTop}' '${link}'`,
        `exit ${o.exit ?? 0}`,
      ].join('\n'),
    );
  }

  /**
   * Prints `stderr` (one echo per line), copies the closure from the cache
   * when it is there and not yet in the store (unless it fails), waits for
   * `<dir>/release` when `hold`, and exits with `exit`.
   */
  function fakeNixStore(o: { exit?: number; stderr?: string[]; hold?: boolean; sleep?: number } = {}): void {
    write(
      join(dir, 'nix-store'),
      [
        record('nix-store'),
        ...(o.stderr ?? []).map((line) => `echo "${line}" >&2`),
        o.hold === true ? `while [ ! -e '${join(dir, 'release')}' ]; do sleep 0.05; done` : '',
        o.sleep === undefined ? '' : `sleep ${o.sleep}`,
        (o.exit ?? 0) === 0 ? `name=$(basename "$2"); [ -e "$2" ] || { [ -e '${cache}'/"$name" ] && cp -a '${cache}'/"$name" "$2"; }` : '',
        `exit ${o.exit ?? 0}`,
      ].join('\n'),
    );
  }

  function fakeNixEnv(exit: number, stderr = ''): void {
    write(
      join(dir, 'nix-env'),
      [record('nix-env'), stderr ? `echo '${stderr}' >&2` : '', exit === 0 ? 'ln -sfn "$4" "$2"' : '', `exit ${exit}`].join('\n'),
    );
  }

  /** Records argv, skips the options, runs the command and passes on its exit status. */
  function fakeSystemdRun(): void {
    write(
      join(dir, 'systemd-run'),
      [
        record('systemd-run'),
        'while [ $# -gt 0 ]; do case "$1" in --*) shift ;; *) break ;; esac; done',
        '"$@"',
        'status=$?',
        '[ $status -ne 0 ] && echo "Finished with result: exit-code" >&2',
        'exit $status',
      ].join('\n'),
    );
  }

  function backend(options: Partial<NixosBackendOptions> = {}): NixosBackend {
    const reader = new CurrentSystemReader({ currentSystemPath: link } as AgentConfig);
    return new NixosBackend(
      {
        storeDir: store,
        systemProfile: profile,
        nixStore: join(dir, 'nix-store'),
        nixEnv: join(dir, 'nix-env'),
        systemdRun: join(dir, 'systemd-run'),
        bootedSystemPath: booted,
        switchLockPath: lock,
        timeoutMs: 10_000,
        realiseTimeoutMs: 10_000,
        switchLockWaitMs: 10_000,
        switchLockPollMs: 20,
        killGraceMs: 200,
        ...options,
      },
      reader,
    );
  }

  function argvOf(program: 'nix-store' | 'nix-env' | 'systemd-run'): string[] {
    return readFileSync(join(dir, `${program}.argv`), 'utf8')
      .split('\n')
      .slice(0, -1);
  }

  const order = (): string[] =>
    existsSync(join(dir, 'order.log')) ? readFileSync(join(dir, 'order.log'), 'utf8').split('\n').slice(0, -1) : [];

  function failure(outcome: ActivationOutcome): { exitCode: number | null; stderrTail: string } {
    if (outcome.kind !== 'failed') throw new Error(`expected a failure, got ${JSON.stringify(outcome)}`);
    return outcome;
  }

  /** Holds the lock as switch-to-configuration does: an exclusive flock on its own open file. */
  function holdLock(): () => void {
    writeFileSync(lock, '');
    const fd = openSync(lock, 'r');
    flockSync(fd, 'ex');
    return () => closeSync(fd);
  }

  describe('realise, then switch', () => {
    it('realises the closure, sets the profile, then runs switch-to-configuration switch in a transient unit', async () => {
      systemClosure(NEW);
      const storePath = join(store, NEW);
      const plan = await backend().plan(NEW);
      expect(plan.switchMethod).toBe('switch-to-configuration switch');

      expect(await plan.run()).toEqual({ kind: 'completed', observedCurrentClosure: NEW, exitCode: 0 });
      expect(order()).toEqual(['nix-store', 'nix-env', 'systemd-run']);
      expect(argvOf('nix-store')).toEqual(['--realise', storePath]);
      expect(argvOf('nix-env')).toEqual(['--profile', profile, '--set', storePath]);
      expect(readlinkSync(profile)).toBe(storePath);
      const run = argvOf('systemd-run');
      expect(run[0]).toMatch(/^--unit=nixfleet-switch-[0-9a-f]{8}$/);
      expect(run).toEqual(expect.arrayContaining(['--collect', '--wait']));
      expect(run.slice(-2)).toEqual([join(storePath, 'bin', 'switch-to-configuration'), 'switch']);
      expect(readFileSync(join(dir, 'switch.log'), 'utf8')).toBe('switch\n');
      expect(readlinkSync(link)).toBe(storePath);
    });

    it('plans for a closure that is not here yet, and switches to it once the realise has fetched it', async () => {
      systemClosure(NEW, { inCache: true });
      const plan = await backend().plan(NEW);
      expect(plan.switchMethod).toBe('switch-to-configuration switch');
      expect(existsSync(join(store, NEW))).toBe(false);

      expect(await plan.run()).toEqual({ kind: 'completed', observedCurrentClosure: NEW, exitCode: 0 });
      expect(existsSync(join(store, NEW, 'bin', 'switch-to-configuration'))).toBe(true);
      expect(order()).toEqual(['nix-store', 'nix-env', 'systemd-run']);
    });

    it('decides on boot once the fetched closure shows a new kernel, though the plan guessed switch', async () => {
      systemClosure(NEW, { ...CHANGED.kernel, inCache: true });
      const plan = await backend().plan(NEW);
      expect(plan.switchMethod).toBe('switch-to-configuration switch');
      expect(await plan.run()).toEqual({ kind: 'deferred', component: 'kernel' });
      expect(argvOf('systemd-run').slice(-1)).toEqual(['boot']);
    });

    it('reports the realise’s progress (paths to fetch, download size, paths copied, the latest line) and each phase in order', async () => {
      systemClosure(NEW, { inCache: true });
      const copying = (name: string): string => `copying path '/nix/store/${name}' from 'https://cache.example.org'...`;
      fakeNixStore({
        stderr: [
          'these 2 paths will be fetched (45.50 MiB download, 200.00 MiB unpacked):',
          `  /nix/store/${PARTS.kernel}`,
          `  /nix/store/${NEW}`,
          copying(PARTS.kernel),
          copying(NEW),
        ],
      });
      const seen: ActivationProgress[] = [];
      await (await backend().plan(NEW)).run((p) => seen.push(p));

      const realising = seen.filter((p) => p.phase === 'realising');
      expect(realising[0].realise).toEqual({ lastLine: null, pathsToFetch: null, pathsCopied: 0, downloadBytes: null });
      expect(realising.at(-1)?.realise).toEqual({
        lastLine: copying(NEW),
        pathsToFetch: 2,
        pathsCopied: 2,
        downloadBytes: Math.round(45.5 * 1024 ** 2),
      });
      const phases = seen.map((p) => p.phase).filter((p, i, all) => i === 0 || all[i - 1] !== p);
      expect(phases).toEqual(['realising', 'setting profile', 'switching']);
      expect(seen.find((p) => p.phase === 'switching')?.note).toMatch(/^switch-to-configuration switch in unit nixfleet-switch-/);
    });

    it('uses a fresh unit name for each switch', async () => {
      systemClosure(NEW);
      await (await backend().plan(NEW)).run();
      const first = argvOf('systemd-run')[0];
      await (await backend().plan(NEW)).run();
      expect(argvOf('systemd-run')[0]).not.toBe(first);
    });
  });

  describe('a realise that fails', () => {
    it('fails with exit code -2 and the refusal when a substitute was not signed by a trusted key', async () => {
      systemClosure(NEW, { inCache: true });
      const path = join(store, NEW);
      fakeNixStore({
        exit: 1,
        stderr: [SIGNATURE_WARNING(path), `error: path '${path}' is required, but there is no substituter that can build it`],
      });
      const { exitCode, stderrTail } = failure(await (await backend().plan(NEW)).run());
      expect(exitCode).toBe(-2);
      expect(stderrTail).toMatch(/^.*nix-store --realise .* exited with code 1: a substitute was refused for its signature/);
      expect(stderrTail).toContain(SIGNATURE_WARNING(path));
      expect(stderrTail).toMatch(/no substituter that can build it$/);
      expect(order()).toEqual(['nix-store']);
      expect(readlinkSync(link)).toBe(join(store, OLD));
    });

    it('keeps the signature line in the tail when later output pushed it out', async () => {
      systemClosure(NEW, { inCache: true });
      const path = join(store, NEW);
      const noise = Array.from(
        { length: 80 },
        (_, i) => `error: while fetching dependency number ${i} of the closure, nothing to see here`,
      );
      fakeNixStore({ exit: 1, stderr: [SIGNATURE_WARNING(path), ...noise] });
      const { exitCode, stderrTail } = failure(await (await backend().plan(NEW)).run());
      expect(exitCode).toBe(-2);
      expect(stderrTail).toContain(SIGNATURE_WARNING(path));
      expect(stderrTail).toMatch(/number 79 of the closure, nothing to see here$/);
    });

    it('fails with the realise’s own exit code and output tail on any other failure', async () => {
      systemClosure(NEW, { inCache: true });
      fakeNixStore({ exit: 100, stderr: ["error: unable to download 'https://cache.example.org/nar/abc.nar.xz': HTTP error 503"] });
      const { exitCode, stderrTail } = failure(await (await backend().plan(NEW)).run());
      expect(exitCode).toBe(100);
      expect(stderrTail).toMatch(/nix-store --realise .* exited with code 100; the closure could not be fetched, no switch attempted\n/);
      expect(stderrTail).toMatch(/HTTP error 503$/);
      expect(order()).toEqual(['nix-store']);
    });

    it('kills a realise that outlives its bound and fails with -1', async () => {
      systemClosure(NEW, { inCache: true });
      fakeNixStore({ stderr: ['these 2 paths will be fetched (1.00 GiB download, 3.00 GiB unpacked):'], sleep: 30 });
      const { exitCode, stderrTail } = failure(await (await backend({ realiseTimeoutMs: 300 }).plan(NEW)).run());
      expect(exitCode).toBe(-1);
      expect(stderrTail).toMatch(
        /nix-store --realise .* timed out after 300 ms and was killed by SIGTERM; the closure could not be fetched/,
      );
      expect(order()).toEqual(['nix-store']);
    });

    it('fails when the realise says it succeeded but the closure is still not in the store', async () => {
      const { exitCode, stderrTail } = failure(await (await backend().plan(NEW)).run());
      expect(exitCode).toBe(-1);
      expect(stderrTail).toContain(`nix-store --realise exited 0, but ${join(store, NEW)} is not there`);
      expect(order()).toEqual(['nix-store']);
    });

    it('fails with -1 when nix-store is not installed', async () => {
      systemClosure(NEW);
      rmSync(join(dir, 'nix-store'));
      const { exitCode, stderrTail } = failure(await (await backend().plan(NEW)).run());
      expect(exitCode).toBe(-1);
      expect(stderrTail).toMatch(/could not be started \(ENOENT/);
      expect(order()).toEqual([]);
    });
  });

  describe('what needs a reboot', () => {
    it.each(Object.keys(CHANGED))('installs for the next boot and reports deferred by "%s" when only it differs', async (component) => {
      systemClosure(NEW, CHANGED[component]);
      const plan = await backend().plan(NEW);
      expect(plan.switchMethod).toBe('switch-to-configuration boot');

      expect(await plan.run()).toEqual({ kind: 'deferred', component });
      expect(readlinkSync(profile)).toBe(join(store, NEW));
      expect(argvOf('systemd-run').slice(-1)).toEqual(['boot']);
      expect(readFileSync(join(dir, 'switch.log'), 'utf8')).toBe('boot\n');
      expect(readlinkSync(link)).toBe(join(store, OLD)); // still running the old system
    });

    it('compares the kernel, initrd and init with the booted system, not with a system switched to since', async () => {
      const switched = fakeClosure('web-01-26.08', 'c');
      systemClosure(switched, { ...CHANGED.kernel, ...CHANGED.init });
      rmSync(link);
      symlinkSync(join(store, switched), link);
      systemClosure(NEW, { ...CHANGED.kernel, ...CHANGED.init });
      expect(await (await backend().plan(NEW)).run()).toEqual({ kind: 'deferred', component: 'kernel' });
    });

    it('compares systemd and dbus.service with the current system: one switched to since boot already runs them', async () => {
      const switched = fakeClosure('web-01-26.08', 'c');
      const parts = { ...CHANGED['sw/lib/systemd/systemd'], ...CHANGED['etc/systemd/system/dbus.service'] };
      systemClosure(switched, parts);
      rmSync(link);
      symlinkSync(join(store, switched), link);
      systemClosure(NEW, parts);
      expect(await (await backend().plan(NEW)).run()).toEqual({ kind: 'completed', observedCurrentClosure: NEW, exitCode: 0 });
    });

    it('switches when there is no booted or current system to compare with (e.g. a container)', async () => {
      rmSync(booted);
      rmSync(link);
      systemClosure(NEW, { ...CHANGED.kernel, ...CHANGED['sw/lib/systemd/systemd'] });
      const plan = await backend().plan(NEW);
      expect(plan.switchMethod).toBe('switch-to-configuration switch');
      expect(await plan.run()).toEqual({ kind: 'completed', observedCurrentClosure: NEW, exitCode: 0 });
    });

    it('treats a component missing from one side as unknown, not as a change', async () => {
      systemClosure(NEW, CHANGED.init);
      rmSync(join(store, NEW, 'init'));
      expect((await (await backend().plan(NEW)).run()).kind).toBe('completed');
    });
  });

  describe('the switch lock', () => {
    it('waits while another switch holds the lock, says so, and goes on once it is released', async () => {
      systemClosure(NEW);
      const release = holdLock();
      const seen: ActivationProgress[] = [];
      const running = (await backend().plan(NEW)).run((p) => seen.push(p));

      await eventually(() => seen.some((p) => p.phase === 'waiting for the switch lock'), 5_000, 'the lock wait');
      const waiting = seen.find((p) => p.phase === 'waiting for the switch lock');
      expect(waiting?.note).toContain(`another switch-to-configuration holds ${lock}: waiting up to 10 s`);
      // Polled a few times, still waiting: neither the profile nor the switch has been touched.
      await new Promise((r) => setTimeout(r, 200));
      expect(order()).toEqual(['nix-store']);
      release();

      expect(await running).toEqual({ kind: 'completed', observedCurrentClosure: NEW, exitCode: 0 });
      expect(order()).toEqual(['nix-store', 'nix-env', 'systemd-run']);
      const phases = seen.map((p) => p.phase).filter((p, i, all) => i === 0 || all[i - 1] !== p);
      expect(phases).toEqual(['realising', 'waiting for the switch lock', 'setting profile', 'switching']);
    });

    it('fails, touching neither the profile nor the system, when the lock is still held past the bound', async () => {
      systemClosure(NEW);
      const release = holdLock();
      try {
        const { exitCode, stderrTail } = failure(await (await backend({ switchLockWaitMs: 300 }).plan(NEW)).run());
        expect(exitCode).toBeNull();
        expect(stderrTail).toBe(
          `another switch-to-configuration still held ${lock} after 300 ms; the closure is fetched, but the profile was not set and no switch attempted`,
        );
        expect(order()).toEqual(['nix-store']);
        expect(existsSync(profile)).toBe(false);
      } finally {
        release();
      }
    });

    it('does not wait for a lock file that exists but nobody holds', async () => {
      systemClosure(NEW);
      writeFileSync(lock, '');
      const seen: ActivationProgress[] = [];
      expect((await (await backend().plan(NEW)).run((p) => seen.push(p))).kind).toBe('completed');
      expect(seen.map((p) => p.phase)).not.toContain('waiting for the switch lock');
    });
  });

  describe('other failures', () => {
    it('fails with nix-env’s exit code and stderr, and attempts no switch, when setting the profile fails', async () => {
      systemClosure(NEW);
      fakeNixEnv(1, 'error: opening lock file: Permission denied');
      const { exitCode, stderrTail } = failure(await (await backend().plan(NEW)).run());
      expect(exitCode).toBe(1);
      expect(stderrTail).toMatch(/nix-env --profile .* --set exited with code 1; no switch attempted\n/);
      expect(stderrTail).toMatch(/Permission denied$/);
      expect(existsSync(join(dir, 'systemd-run.argv'))).toBe(false);
      expect(readlinkSync(link)).toBe(join(store, OLD));
    });

    it('fails with the switch’s exit code and points at the unit’s journal when the switch fails', async () => {
      systemClosure(NEW, { exit: 4, stderr: 'warning: the following units failed: nginx.service' });
      const { exitCode, stderrTail } = failure(await (await backend().plan(NEW)).run());
      expect(exitCode).toBe(4);
      const unit = argvOf('systemd-run')[0].slice('--unit='.length);
      expect(stderrTail).toContain(`switch-to-configuration switch (unit ${unit}) exited with code 4; its output: journalctl -u ${unit}`);
      expect(stderrTail).toMatch(/Finished with result: exit-code$/);
    });

    it('refuses a closure that is not a store basename, running nothing', async () => {
      const { stderrTail } = failure(await (await backend().plan(`../${OLD}`)).run());
      expect(stderrTail).toMatch(/not a store path basename/);
      expect(order()).toEqual([]);
    });

    it('fails with a null exit code when nix-env is not installed', async () => {
      systemClosure(NEW);
      rmSync(join(dir, 'nix-env'));
      const { exitCode, stderrTail } = failure(await (await backend().plan(NEW)).run());
      expect(exitCode).toBeNull();
      expect(stderrTail).toMatch(/could not be started \(ENOENT/);
    });
  });

  it('names nix-store, nix-env and systemd-run in the preflight when they are missing', async () => {
    const problems = await backend({ nixStore: 'nix-store', nixEnv: 'nix-env', systemdRun: 'systemd-run' }).preflight(
      join(dir, 'empty-bin'),
    );
    expect(problems).toEqual([
      expect.stringMatching(/^nix-store \(fetches the closure\) is not found on PATH/),
      expect.stringMatching(/^nix-env \(sets the system profile\) is not found on PATH/),
      expect.stringMatching(/^systemd-run \(runs switch-to-configuration\) is not found on PATH/),
    ]);
    expect(await backend({ nixStore: 'nix-store', nixEnv: 'nix-env', systemdRun: 'systemd-run' }).preflight(dir)).toEqual([]);
  });
});
