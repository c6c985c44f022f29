import { ManifestSigner } from '../../dev/manifest-signer';
import { chmodSync, mkdirSync, mkdtempSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Test, type TestingModule } from '@nestjs/testing';
import { CapturingLogger, fakeClosure } from '../../test/support/agent-harness';
import { FakeClock } from '../../test/support/fake-clock';
import { CLOCK } from '../clock/clock';
import { ClockModule } from '../clock/clock.module';
import { type AgentConfig, loadConfig } from '../config/config.loader';
import { ConfigModule } from '../config/config.module';
import { MetricsModule } from '../metrics/metrics.module';
import { EffectPortRegistry } from '../reducer/effect-ports';
import { FIRE_ROLLBACK_PORT, FIRE_SWITCH_PORT, REDUCER_POLICY } from '../reducer/reducer.ports';
import { ReducerService } from '../reducer/reducer.service';
import type { Policy, ReducerState } from '../reducer/reducer.types';
import { BootGate } from '../lifecycle/boot-gate';
import { eventually } from '../../test/support/polling';
import { ManifestCache } from '../trust/manifest-cache';
import { TrustService } from '../trust/trust.service';
import { ACTIVATION_BACKEND } from './activation.constants';
import { ActivationModule } from './activation.module';
import { ActivationPreflight } from './activation.preflight';
import { ActivationService } from './activation.service';
import { CommandBackend } from './backends/command.backend';
import { NixosBackend } from './backends/nixos.backend';
import { SymlinkBackend } from './backends/symlink.backend';

const ROLLOUT = 'stable@a1b2c3d4';
const OLD = fakeClosure('web-01-26.05', 'a');
const NEW = fakeClosure('web-01-26.11', 'b');
const HALT: Policy = { onHealthFailure: 'halt', sustainedFailureThresholdSecs: 120 };
const ROLLBACK: Policy = { onHealthFailure: 'rollback-and-halt', sustainedFailureThresholdSecs: 120 };

/**
 * The module with what it imports (ReducerModule, LifecycleModule) and the
 * globals: ActivationService serves the reducer's switch and rollback ports
 * and submits back to it — a real reducer, with the real transition function.
 */
describe('ActivationModule', () => {
  let dir: string;
  let store: string;
  let link: string;
  let opened: TestingModule[];
  let trustFile: string;
  let signer: ManifestSigner;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-activation-'));
    store = join(dir, 'store');
    mkdirSync(join(store, OLD), { recursive: true });
    mkdirSync(join(store, NEW), { recursive: true });
    link = join(dir, 'current-system');
    symlinkSync(join(store, OLD), link);
    opened = [];
    // TrustModule, imported for the resume check, loads a trust file at start.
    trustFile = join(dir, 'trust.json');
    signer = new ManifestSigner();
    await signer.writeTrustFile(trustFile);
  });
  afterEach(async () => {
    for (const m of opened.splice(0)) await m.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function configWith(extra: string[], env: Record<string, string> = {}): AgentConfig {
    const loaded = loadConfig({
      argv: [
        '--control-plane-url',
        'https://cp.test:8443',
        '--machine-id',
        'web-01',
        '--state-dir',
        join(dir, 'state'),
        '--current-system-path',
        link,
        '--store-dir',
        store,
        '--trust-file',
        trustFile,
        ...extra,
      ],
      env,
      stdoutIsTty: false,
    });
    if (loaded.kind !== 'run') throw new Error(`test config is invalid: ${JSON.stringify(loaded)}`);
    return loaded.config;
  }

  async function build(
    config: AgentConfig,
    policy = HALT,
    logs = new CapturingLogger(),
    restored?: ReducerState,
  ): Promise<{ module: TestingModule; reducer: ReducerService; activation: ActivationService }> {
    const module = await Test.createTestingModule({
      imports: [ConfigModule.forRoot(config), ClockModule, MetricsModule, ActivationModule],
    })
      .overrideProvider(CLOCK)
      .useValue(new FakeClock())
      .overrideProvider(REDUCER_POLICY)
      .useValue(policy)
      .compile();
    opened.push(module);
    module.useLogger(logs);
    // As after a restart: the reducer rebuilt from the log before anything runs.
    if (restored !== undefined) module.get(ReducerService).restore(restored);
    await module.init();
    return { module, reducer: module.get(ReducerService), activation: module.get(ActivationService) };
  }

  const activate = (reducer: ReducerService): Promise<unknown> =>
    reducer.submit({
      type: 'Activate',
      rolloutId: ROLLOUT,
      targetClosure: NEW,
      soakDueAt: '2026-11-28T12:10:00.000Z',
      currentClosure: OLD,
      dispatchedAt: '2026-11-28T11:59:55.000Z',
    });

  it('connects the reducer’s switch and rollback ports to one ActivationService, without a DI cycle', async () => {
    const { module, activation } = await build(configWith(['--activation-backend', 'symlink']));
    const ports = module.get(EffectPortRegistry);
    expect(ports.port('FireSwitch')).toBe(activation);
    expect(ports.port('FireRollback')).toBe(activation);
    // The tokens resolve to the port's method alone: the service itself there would have its lifecycle hooks run once per token.
    expect(Object.keys(module.get<object>(FIRE_SWITCH_PORT))).toEqual(['handle']);
    expect(Object.keys(module.get<object>(FIRE_ROLLBACK_PORT))).toEqual(['handle']);
    expect(module.get(ACTIVATION_BACKEND)).toBeInstanceOf(SymlinkBackend);
  });

  it('carries a dispatch through the symlink backend: the link moves and the rollout reaches Soaking', async () => {
    const { reducer, activation } = await build(configWith(['--activation-backend', 'symlink']));
    await activate(reducer);
    await activation.idle();
    expect(readlinkSync(link)).toBe(join(store, NEW));
    expect(reducer.current().rollouts[ROLLOUT]).toMatchObject({ state: 'Soaking', currentClosure: NEW, lastEventSeq: 3 });
    // The ports' wiring shows here: a port left unbound would count the switch as unconnected.
    expect(reducer.statistics()).toMatchObject({
      rejected: 0,
      unconnectedEffects: { FireSwitch: 0, FireRollback: 0 },
    });
    expect(activation.status()).toMatchObject({ backend: 'symlink', running: null, lastResult: { outcome: 'completed' } });
  });

  it('rolls back after a failed command under rollback-and-halt: the rollout ends Reverted on the old closure', async () => {
    const script = join(dir, 'activate');
    // Fails for the new closure; "activates" any other by re-pointing the link.
    writeFileSync(
      script,
      `#!/bin/sh\ncase "$1" in *${NEW}) echo "error: unit nginx.service failed" >&2; exit 1 ;; esac\nln -sfn "$1" '${link}'\n`,
      { mode: 0o755 },
    );
    const config = configWith(['--activation-backend', 'command', '--activation-command', JSON.stringify([script, '{closure}'])]);
    const { module, reducer, activation } = await build(config, ROLLBACK);
    expect(module.get(ACTIVATION_BACKEND)).toBeInstanceOf(CommandBackend);

    await activate(reducer);
    await activation.idle();
    expect(reducer.current().rollouts[ROLLOUT]).toMatchObject({
      state: 'Reverted',
      policyApplied: 'rollback-and-halt',
      revertedToClosure: OLD,
      lastEventSeq: 4, // DispatchAck, ActivationStarted, ActivationFailed, RollbackComplete
    });
    expect(readlinkSync(link)).toBe(join(store, OLD));
    expect(activation.status().lastResult).toMatchObject({ kind: 'rollback', outcome: 'completed', exitCode: 0 });
  });

  /** A command backend that "activates" any closure by re-pointing the link, and leaves the link alone when told. */
  function linkingCommand(leaveLinkFor?: string): AgentConfig {
    const script = join(dir, 'activate');
    const skip = leaveLinkFor === undefined ? '' : `case "$1" in *${leaveLinkFor}) exit 0 ;; esac\n`;
    writeFileSync(script, `#!/bin/sh\n${skip}ln -sfn "$1" '${link}'\n`, { mode: 0o755 });
    return configWith(['--activation-backend', 'command', '--activation-command', JSON.stringify([script, '{closure}'])]);
  }

  /** The reducer state of a rollout that failed under rollback-and-halt and whose rollback never reported. */
  function failedAwaitingRollback(): ReducerState {
    return {
      rollouts: {
        [ROLLOUT]: {
          rolloutId: ROLLOUT,
          channel: 'stable',
          state: 'Failed',
          targetClosure: NEW,
          currentClosureAtDispatch: OLD,
          dispatchedAt: '2026-11-28T11:59:55.000Z',
          lastEventSeq: 7,
          probes: {},
          failedAt: '2026-11-28T12:05:00.000Z',
          policyApplied: 'rollback-and-halt',
        },
      },
    };
  }

  it('reports a rollback whose command exits 0 but leaves the host on the failed closure as failed, and the rollout stays Failed', async () => {
    const { reducer, activation, module } = await build(linkingCommand(OLD), ROLLBACK, new CapturingLogger(), failedAwaitingRollback());
    symlinkAgain(join(store, NEW));
    module.get(BootGate).open({ reachedControlPlane: false });
    await eventually(() => reducer.current().rollouts[ROLLOUT]?.rollback !== undefined, 5_000, 'the rollback reported');
    await activation.idle();

    expect(readlinkSync(link)).toBe(join(store, NEW));
    expect(reducer.current().rollouts[ROLLOUT]).toMatchObject({ state: 'Failed', rollback: { toClosure: OLD, exitCode: -1 } });
  });

  it.each<[string, 'old' | 'new' | 'other', string, string | null]>([
    ['still on the failed target: the rollback runs again', 'new', 'Reverted', OLD],
    ['already back on the old closure: the rollback is reported done', 'old', 'Reverted', OLD],
    ['on a third closure (an operator moved it): left alone, still Failed', 'other', 'Failed', null],
  ])('resumes an interrupted rollback after a restart, the host %s', async (_name, on, state, rolledBackTo) => {
    const other = fakeClosure('web-01-hotfix', 'c');
    mkdirSync(join(store, other), { recursive: true });
    symlinkAgain(join(store, on === 'old' ? OLD : on === 'new' ? NEW : other));
    const logs = new CapturingLogger();
    const { reducer, activation, module } = await build(linkingCommand(), ROLLBACK, logs, failedAwaitingRollback());
    module.get(BootGate).open({ reachedControlPlane: false });
    // Done once the rollback reported, or once the agent said it leaves the host alone.
    await eventually(
      () =>
        reducer.current().rollouts[ROLLOUT]?.rollback !== undefined || logs.messages('warn').some((l) => l.includes('not rolling back')),
      5_000,
      'the interrupted rollback settled',
    );
    await activation.idle();

    expect(reducer.current().rollouts[ROLLOUT]?.state).toBe(state);
    expect(reducer.current().rollouts[ROLLOUT]?.rollback?.toClosure ?? null).toBe(rolledBackTo);
    if (on === 'other') expect(readlinkSync(link)).toBe(join(store, other));
    else expect(readlinkSync(link)).toBe(join(store, OLD));
  });

  it('does not roll back a host that runs a third closure by the time the rollback starts; the rollout stays Failed, the rollback reported failed', async () => {
    const other = fakeClosure('web-01-hotfix', 'c');
    mkdirSync(join(store, other), { recursive: true });
    symlinkAgain(join(store, other));
    const logs = new CapturingLogger();
    const { reducer, activation } = await build(linkingCommand(), ROLLBACK, logs, failedAwaitingRollback());

    activation.handle({ type: 'FireRollback', rolloutId: ROLLOUT, toClosure: OLD });
    await activation.idle();
    await reducer.drain();

    expect(readlinkSync(link)).toBe(join(store, other));
    expect(reducer.current().rollouts[ROLLOUT]).toMatchObject({ state: 'Failed', rollback: { toClosure: OLD, exitCode: -1 } });
    expect(logs.messages('error', ActivationService.name)).toEqual([
      expect.stringMatching(new RegExp(`^rollback of ${ROLLOUT} to ${OLD} not run: the host runs ${other}, neither`)),
    ]);
  });

  /** As a restart finds it: the dispatch was verified and acknowledged, the switch cut off before it reported. */
  function activatingInterrupted(): ReducerState {
    return {
      rollouts: {
        [ROLLOUT]: {
          rolloutId: ROLLOUT,
          channel: 'stable',
          state: 'Activating',
          targetClosure: NEW,
          currentClosureAtDispatch: OLD,
          dispatchedAt: '2026-11-28T11:59:55.000Z',
          dispatchAckedAt: '2026-11-28T11:59:56.000Z',
          lastEventSeq: 2,
          probes: {},
        },
      },
    };
  }

  /** The pair the dispatch worker cached for ROLLOUT; `tamper` changes a byte of the manifest after signing. */
  async function cachePair(config: AgentConfig, o: { tamper?: boolean; storedAt?: Date } = {}): Promise<void> {
    const signed = signer.sign({
      rolloutId: ROLLOUT,
      hosts: [{ hostname: 'web-01', targetClosure: NEW }],
      signedAt: '2026-11-28T11:59:50Z',
    });
    const cache = new ManifestCache(config.stateDir);
    const bytes = o.tamper ? Buffer.from(signed.bytes.toString('utf8').replace('"waveIndex": 0', '"waveIndex": 1')) : signed.bytes;
    await cache.store(ROLLOUT, bytes, signed.signature);
    if (o.storedAt) utimesSync(cache.pathsOf(ROLLOUT).json, o.storedAt, o.storedAt);
  }

  it('resumes an interrupted activation once its cached manifest verifies again: one switch, one line', async () => {
    const config = configWith(['--activation-backend', 'symlink']);
    await cachePair(config);
    const logs = new CapturingLogger();
    const { reducer, activation, module } = await build(config, HALT, logs, activatingInterrupted());
    module.get(BootGate).open({ reachedControlPlane: false });
    await eventually(() => reducer.current().rollouts[ROLLOUT]?.state === 'Soaking', 5_000, 'the resumed activation completed');
    await activation.idle();

    expect(readlinkSync(link)).toBe(join(store, NEW));
    expect(logs.messages('warn', ActivationService.name).filter((l) => l.includes('activating again'))).toHaveLength(1);
    expect(logs.messages('log', 'Trust').filter((l) => l.includes(`dispatch ${ROLLOUT} → ${NEW} verified`))).toHaveLength(1);
  });

  it.each<[string, { tamper?: boolean; storedAt?: Date } | null, string]>([
    ['its cached manifest was changed on disk', { tamper: true }, 'cache-tampered'],
    ['no manifest is cached for it', null, 'cache-missing'],
    ['it was verified and cached longer ago than a manifest is good for', { storedAt: new Date('2026-11-28T10:00:00Z') }, 'stale'],
  ])(
    'does not resume an interrupted activation when %s: ActivationFailed -2, nothing switched, one warning',
    async (_name, pair, reason) => {
      const config = configWith(['--activation-backend', 'symlink']);
      if (pair !== null) await cachePair(config, pair);
      const logs = new CapturingLogger();
      const { reducer, activation, module } = await build(config, HALT, logs, activatingInterrupted());
      module.get(BootGate).open({ reachedControlPlane: false });
      await eventually(() => reducer.current().rollouts[ROLLOUT]?.state === 'Failed', 5_000, 'the rollout failed');
      await activation.idle();

      expect(readlinkSync(link)).toBe(join(store, OLD));
      const refused = logs.messages('warn', 'Trust');
      expect(refused).toEqual([expect.stringContaining(`dispatch ${ROLLOUT} → ${NEW} REFUSED (${reason})`) as string]);
      expect(refused[0]).toContain('not activated again; the rollout is reported failed');
      expect(module.get(TrustService).status()).toMatchObject({ refusedTotal: 1, lastFailure: { reason, during: 'resume' } });
    },
  );

  function symlinkAgain(target: string): void {
    rmSync(link, { force: true });
    symlinkSync(target, link);
  }

  describe('preflight at start', () => {
    /** A directory of executables standing in for the host's PATH. */
    function bin(...programs: string[]): string {
      const d = join(dir, `bin-${programs.join('-') || 'empty'}`);
      mkdirSync(d, { recursive: true });
      for (const p of programs) writeFileSync(join(d, p), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
      return d;
    }

    async function preflight(extra: string[], env: Record<string, string>): Promise<{ problems: string[]; warnings: string[] }> {
      const logs = new CapturingLogger();
      const { module } = await build(configWith(extra, env), HALT, logs);
      const status = module.get(ActivationPreflight).status();
      expect(status.checkedAt).not.toBeNull();
      return { problems: status.problems, warnings: logs.messages('warn', ActivationPreflight.name) };
    }

    it('nixos: finds nix-store, nix-env and systemd-run on PATH and the store, and says nothing', async () => {
      const r = await preflight([], { PATH: `${join(dir, 'nowhere')}:${bin('nix-store', 'nix-env', 'systemd-run')}` });
      expect(r).toEqual({ problems: [], warnings: [] });
    });

    it('nixos: logs one warning at start naming each missing tool, the PATH searched, and the missing store', async () => {
      const path = bin('nix-store', 'systemd-run');
      const r = await preflight(['--store-dir', join(dir, 'no-store')], { PATH: path });

      expect(r.problems).toEqual([
        `nix-env (sets the system profile) is not found on PATH (${path})`,
        `the store dir ${join(dir, 'no-store')} does not exist`,
      ]);
      expect(r.warnings).toHaveLength(1);
      expect(r.warnings[0]).toBe(
        `activation backend nixos (--activation-backend) cannot activate: ${r.problems.join('; ')}; the agent runs on, but a dispatch to this host fails with ActivationFailed until this is fixed (checked at start)`,
      );
      expect((await preflight([], {})).problems).toEqual([
        'nix-store (fetches the closure) is not found on PATH (PATH is empty)',
        'nix-env (sets the system profile) is not found on PATH (PATH is empty)',
        'systemd-run (runs switch-to-configuration) is not found on PATH (PATH is empty)',
      ]);
    });

    it('command: the executable must exist and be executable, by path or on PATH', async () => {
      const script = join(dir, 'activate');
      writeFileSync(script, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
      const command = (argv: string[]): string[] => ['--activation-backend', 'command', '--activation-command', JSON.stringify(argv)];

      expect((await preflight(command([script, '{closure}']), {})).problems).toEqual([
        `${script} (the activation command) is not executable`,
      ]);
      chmodSync(script, 0o755);
      expect((await preflight(command([script, '{closure}']), {})).problems).toEqual([]);
      expect((await preflight(command([join(dir, 'gone'), '{closure}']), {})).problems).toEqual([
        `${join(dir, 'gone')} (the activation command) does not exist`,
      ]);
      expect((await preflight(command(['activate-it', '{closure}']), { PATH: bin('activate-it') })).problems).toEqual([]);
    });

    it('symlink: the store dir must exist', async () => {
      expect((await preflight(['--activation-backend', 'symlink'], {})).problems).toEqual([]);
      const file = join(dir, 'a-file');
      writeFileSync(file, '');
      expect((await preflight(['--activation-backend', 'symlink', '--store-dir', file], {})).problems).toEqual([
        `the store dir ${file} is not a directory`,
      ]);
    });
  });

  it('builds the nixos backend by default', async () => {
    const { module, activation } = await build(configWith([]));
    expect(module.get(ACTIVATION_BACKEND)).toBeInstanceOf(NixosBackend);
    expect(activation.status().backend).toBe('nixos');
  });
});
