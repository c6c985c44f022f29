import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Test, type TestingModule } from '@nestjs/testing';
import { CapturingLogger, fakeClosure, FixedRandom } from '../../test/support/agent-harness';
import { FakeClock } from '../../test/support/fake-clock';
import { CLOCK } from '../clock/clock';
import { RANDOM } from '../clock/random';
import type { ActivationBackendName } from '../config/settings';
import { MetricsModule } from '../metrics/metrics.module';
import type { EffectOf } from '../reducer/reducer.ports';
import { REDUCER_INPUT, type ReducerInputPort } from '../reducer/reducer.ports';
import { EMPTY_STATE, type ReducerInput, type ReducerState, type TransitionResult } from '../reducer/reducer.types';
import { ACTIVATION_BACKEND, EX_TEMPFAIL, NO_EXIT_CODE } from './activation.constants';
import { BootGate } from '../lifecycle/boot-gate';
import { CurrentSystemReader } from '../recovery/current-system.reader';
import type { AgentConfig } from '../config/config.loader';
import { eventually } from '../../test/support/polling';
import { NixosBackend } from './backends/nixos.backend';
import { ActivationService } from './activation.service';
import { RESUME_TRUST, type ResumeTrust } from '../trust/trust.service';
import type { ActivationBackend, ActivationOutcome, ActivationPlan, SwitchMethod } from './activation.types';

const ROLLOUT = 'stable@a1b2c3d4';
const OTHER = 'stable@e5f6a7b8';
const TARGET = fakeClosure('web-01-26.11', 'b');
const PREVIOUS = fakeClosure('web-01-26.05', 'a');

const fireSwitch = (rolloutId = ROLLOUT, targetClosure = TARGET): EffectOf<'FireSwitch'> => ({
  type: 'FireSwitch',
  rolloutId,
  targetClosure,
});
const fireRollback = (rolloutId = ROLLOUT, toClosure = PREVIOUS): EffectOf<'FireRollback'> => ({
  type: 'FireRollback',
  rolloutId,
  toClosure,
});

/** A promise the test settles by hand. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

/** Settles the microtask queue and one macrotask turn. */
/** The resume check, in specs whose boot gate never opens: asked, it fails the test. */
const NEVER_ASKED: ResumeTrust = {
  checkResume: () => Promise.reject(new Error('checkResume asked, though nothing here resumes after a restart')),
};

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * A backend whose activations finish when the test says: each closure's run
 * waits on its gate and ends with its outcome. The real backends have their
 * own specs; this one shows the service's ordering.
 */
class GatedBackend implements ActivationBackend {
  readonly name: ActivationBackendName = 'symlink';
  shutdownWaitMs: number | null = null;
  switchMethod: SwitchMethod = 'symlink';
  readonly timeline: string[];
  private readonly gates = new Map<string, ReturnType<typeof gate>>();
  private readonly outcomes = new Map<string, ActivationOutcome>();
  throwOnPlan: Error | null = null;

  constructor(timeline: string[]) {
    this.timeline = timeline;
  }

  finishWith(closure: string, outcome: ActivationOutcome): void {
    this.outcomes.set(closure, outcome);
  }

  open(closure: string): void {
    this.gateOf(closure).open();
  }

  preflight(): Promise<string[]> {
    return Promise.resolve([]);
  }

  plan(closure: string): Promise<ActivationPlan> {
    if (this.throwOnPlan) return Promise.reject(this.throwOnPlan);
    this.timeline.push(`plan ${closure}`);
    return Promise.resolve({
      switchMethod: this.switchMethod,
      run: async () => {
        this.timeline.push(`run ${closure}`);
        await this.gateOf(closure).promise;
        this.timeline.push(`done ${closure}`);
        return this.outcomes.get(closure) ?? { kind: 'completed', observedCurrentClosure: closure, exitCode: 0 };
      },
    });
  }

  private gateOf(closure: string): ReturnType<typeof gate> {
    let g = this.gates.get(closure);
    if (!g) {
      g = gate();
      this.gates.set(closure, g);
    }
    return g;
  }
}

/** The reducer's stand-in behind REDUCER_INPUT: records the inputs on the shared timeline. */
class RecordingReducer implements ReducerInputPort {
  readonly inputs: ReducerInput[] = [];
  closed = false;
  constructor(private readonly timeline: string[]) {}
  /** Input types this stand-in rejects, as the reducer does an illegal transition. */
  readonly refuse = new Set<ReducerInput['type']>();
  submit(input: ReducerInput): Promise<TransitionResult> {
    if (this.closed) return Promise.reject(new Error('the reducer is shut down and takes no more input'));
    this.inputs.push(input);
    this.timeline.push(`submit ${input.type}`);
    if (this.refuse.has(input.type)) return Promise.resolve({ state: EMPTY_STATE, effects: [], rejected: `${input.type} is illegal now` });
    return Promise.resolve({ state: EMPTY_STATE, effects: [] });
  }
  current(): ReducerState {
    return EMPTY_STATE;
  }
}

describe('ActivationService', () => {
  let module: TestingModule;
  let service: ActivationService;
  let backend: GatedBackend;
  let reducer: RecordingReducer;
  let logs: CapturingLogger;
  let clock: FakeClock;
  let timeline: string[];

  beforeEach(async () => {
    timeline = [];
    backend = new GatedBackend(timeline);
    reducer = new RecordingReducer(timeline);
    clock = new FakeClock();
    module = await Test.createTestingModule({
      imports: [MetricsModule],
      providers: [
        ActivationService,
        { provide: ACTIVATION_BACKEND, useValue: backend },
        { provide: CLOCK, useValue: clock },
        { provide: RANDOM, useValue: new FixedRandom() },
        { provide: REDUCER_INPUT, useValue: reducer },
        // Never opened here: resuming after a restart has its own e2e test.
        BootGate,
        { provide: CurrentSystemReader, useValue: { read: () => Promise.resolve(null) } },
        // Asked only when resuming after a restart (the gate never opens here): activation.module.spec and rollout.e2e-spec run it for real.
        { provide: RESUME_TRUST, useValue: NEVER_ASKED },
      ],
    }).compile();
    logs = new CapturingLogger();
    module.useLogger(logs);
    service = module.get(ActivationService);
  });
  afterEach(async () => {
    await service.idle();
    await module.close(); // a second close after a test's own finds nothing to wait for
  });

  const messages = (level: 'log' | 'warn' | 'error'): string[] => logs.messages(level, ActivationService.name);

  it('returns from handle() at once and runs the activation afterwards', async () => {
    expect(service.handle(fireSwitch())).toBeUndefined();
    expect(timeline).toEqual([]); // nothing ran inside handle()
    await turn();
    expect(timeline).toEqual(['plan ' + TARGET, 'submit ActivationStarted', 'run ' + TARGET]);
    expect(service.status().running).toEqual({
      rolloutId: ROLLOUT,
      closure: TARGET,
      kind: 'switch',
      startedAt: '2026-11-28T12:00:00.000Z',
      phase: null,
      realise: null,
    });

    clock.advance(5_000);
    backend.open(TARGET);
    await service.idle();
    expect(reducer.inputs).toEqual([
      { type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'symlink' },
      { type: 'ActivationCompleted', rolloutId: ROLLOUT, observedCurrentClosure: TARGET, exitCode: 0 },
    ]);
    expect(service.status()).toEqual({
      backend: 'symlink',
      running: null,
      queued: 0,
      lastResult: {
        rolloutId: ROLLOUT,
        kind: 'switch',
        outcome: 'completed',
        exitCode: 0,
        at: '2026-11-28T12:00:05.000Z',
        detail: `now running ${TARGET}`,
      },
    });
  });

  it('runs one activation at a time: a second waits until the first has reported', async () => {
    const second = fakeClosure('web-01-27.05', 'c');
    service.handle(fireSwitch(ROLLOUT, TARGET));
    service.handle(fireSwitch(OTHER, second));
    await turn();
    expect(timeline).not.toContain(`plan ${second}`);
    expect(service.status()).toMatchObject({ running: { rolloutId: ROLLOUT }, queued: 1 });

    backend.open(second); // finishing the second's gate first changes nothing
    await turn();
    expect(timeline).not.toContain(`plan ${second}`);

    backend.open(TARGET);
    await service.idle();
    expect(timeline).toEqual([
      `plan ${TARGET}`,
      'submit ActivationStarted',
      `run ${TARGET}`,
      `done ${TARGET}`,
      'submit ActivationCompleted',
      `plan ${second}`,
      'submit ActivationStarted',
      `run ${second}`,
      `done ${second}`,
      'submit ActivationCompleted',
    ]);
    expect(reducer.inputs.map((i) => ('rolloutId' in i ? `${i.type} ${i.rolloutId}` : i.type))).toEqual([
      `ActivationStarted ${ROLLOUT}`,
      `ActivationCompleted ${ROLLOUT}`,
      `ActivationStarted ${OTHER}`,
      `ActivationCompleted ${OTHER}`,
    ]);
  });

  it('submits ActivationFailed with the exit code and stderr tail of a failed switch', async () => {
    backend.switchMethod = 'switch-to-configuration switch';
    backend.finishWith(TARGET, { kind: 'failed', exitCode: 4, stderrTail: 'switch-to-configuration exited with code 4' });
    backend.open(TARGET);
    service.handle(fireSwitch());
    await service.idle();
    expect(reducer.inputs).toEqual([
      { type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'switch-to-configuration switch' },
      { type: 'ActivationFailed', rolloutId: ROLLOUT, exitCode: 4, stderrTail: 'switch-to-configuration exited with code 4' },
    ]);
    expect(service.status().lastResult).toMatchObject({
      outcome: 'failed',
      exitCode: 4,
      detail: 'switch-to-configuration exited with code 4',
    });
    expect(messages('warn')).toEqual([expect.stringContaining(`switch of ${ROLLOUT} to ${TARGET} failed (exit code 4)`)]);
  });

  it('submits ActivationDeferred with the component that needs a reboot', async () => {
    backend.switchMethod = 'switch-to-configuration boot';
    backend.finishWith(TARGET, { kind: 'deferred', component: 'kernel' });
    backend.open(TARGET);
    service.handle(fireSwitch());
    await service.idle();
    expect(reducer.inputs).toEqual([
      { type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'switch-to-configuration boot' },
      { type: 'ActivationDeferred', rolloutId: ROLLOUT, component: 'kernel' },
    ]);
    expect(service.status().lastResult).toMatchObject({ outcome: 'deferred', exitCode: null });
  });

  it('runs a rollback queued behind a switch after it, and reports RollbackCompleted without a started input', async () => {
    backend.finishWith(TARGET, { kind: 'failed', exitCode: 1, stderrTail: 'boom' });
    service.handle(fireSwitch());
    service.handle(fireRollback());
    await turn();
    expect(timeline).not.toContain(`plan ${PREVIOUS}`);
    backend.open(TARGET);
    backend.open(PREVIOUS);
    await service.idle();
    expect(reducer.inputs).toEqual([
      { type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'symlink' },
      { type: 'ActivationFailed', rolloutId: ROLLOUT, exitCode: 1, stderrTail: 'boom' },
      { type: 'RollbackCompleted', rolloutId: ROLLOUT, revertedToClosure: PREVIOUS, exitCode: 0 },
    ]);
    expect(service.status().lastResult).toMatchObject({ kind: 'rollback', outcome: 'completed', exitCode: 0 });
  });

  it('reports a failed rollback with a non-zero exit code and logs an error', async () => {
    backend.finishWith(PREVIOUS, { kind: 'failed', exitCode: null, stderrTail: 'killed by SIGKILL' });
    backend.open(PREVIOUS);
    service.handle(fireRollback());
    await service.idle();
    expect(reducer.inputs).toEqual([
      { type: 'RollbackCompleted', rolloutId: ROLLOUT, revertedToClosure: PREVIOUS, exitCode: NO_EXIT_CODE },
    ]);
    expect(messages('error')).toEqual([expect.stringContaining(`rollback of ${ROLLOUT} to ${PREVIOUS} failed`)]);
  });

  it('reports a rollback that only takes effect at the next boot with EX_TEMPFAIL', async () => {
    backend.finishWith(PREVIOUS, { kind: 'deferred', component: 'kernel' });
    backend.open(PREVIOUS);
    service.handle(fireRollback());
    await service.idle();
    expect(reducer.inputs).toEqual([{ type: 'RollbackCompleted', rolloutId: ROLLOUT, revertedToClosure: PREVIOUS, exitCode: EX_TEMPFAIL }]);
    expect(messages('warn')).toEqual([expect.stringContaining('takes effect at the next boot')]);
  });

  it('turns a backend that throws into a failed activation, and keeps going', async () => {
    backend.throwOnPlan = new Error('EMFILE: too many open files');
    service.handle(fireSwitch());
    await service.idle();
    expect(reducer.inputs).toEqual([
      { type: 'ActivationStarted', rolloutId: ROLLOUT, switchMethod: 'symlink' },
      {
        type: 'ActivationFailed',
        rolloutId: ROLLOUT,
        exitCode: null,
        stderrTail: 'activation backend symlink failed to plan: EMFILE: too many open files',
      },
    ]);
    backend.throwOnPlan = null;
    backend.open(TARGET);
    service.handle(fireSwitch(OTHER));
    await service.idle();
    expect(reducer.inputs.at(-1)).toMatchObject({ type: 'ActivationCompleted', rolloutId: OTHER });
  });

  it('does not switch, and says so, when the reducer no longer takes input: a switch with no ActivationStarted on record', async () => {
    reducer.closed = true;
    backend.open(TARGET);
    service.handle(fireSwitch());
    await service.idle();
    expect(messages('error')).toEqual([expect.stringContaining(`ActivationStarted for ${ROLLOUT} not submitted`)]);
    expect(messages('warn')).toEqual([expect.stringContaining(`switch of ${ROLLOUT} to ${TARGET} not run`)]);
    expect(timeline.filter((t) => t.startsWith('run '))).toEqual([]);
    expect(service.status().lastResult).toBeNull();
  });

  it('does not switch when the rollout no longer takes ActivationStarted (it moved on while the job waited)', async () => {
    reducer.refuse.add('ActivationStarted');
    backend.open(TARGET);
    service.handle(fireSwitch());
    await service.idle();
    expect(reducer.inputs.map((i) => i.type)).toEqual(['ActivationStarted']);
    expect(timeline.filter((t) => t.startsWith('run '))).toEqual([]);
    expect(messages('warn')).toEqual([expect.stringContaining('did not take ActivationStarted')]);
  });

  it('waits at shutdown for a running activation in its own process tree, then takes no more', async () => {
    service.handle(fireSwitch());
    await turn();
    let shutDown = false;
    const closing = module.close().then(() => {
      shutDown = true;
    });
    await turn();
    expect(shutDown).toBe(false);
    backend.open(TARGET);
    await closing;
    expect(reducer.inputs.map((i) => i.type)).toEqual(['ActivationStarted', 'ActivationCompleted']);

    service.handle(fireSwitch(OTHER));
    await service.idle();
    expect(reducer.inputs).toHaveLength(2);
    expect(messages('warn')).toEqual([expect.stringContaining(`switch of ${OTHER} to ${TARGET} not started: the agent is shutting down`)]);
  });

  it('waits at shutdown only briefly for a detached switch, which continues without the agent', async () => {
    backend.shutdownWaitMs = 50;
    service.handle(fireSwitch());
    await turn();
    await module.close();
    expect(service.status().running).toMatchObject({ rolloutId: ROLLOUT });
    expect(messages('warn')).toEqual([expect.stringContaining('continues detached')]);
    backend.open(TARGET); // let it end, so the test leaves nothing pending
    await service.idle();
  });
});

/**
 * The nixos backend's phases as /status and the log show them, while a slow
 * fake `nix-store --realise` downloads: it prints its "copying path" lines,
 * then waits for the test's go-ahead files.
 */
describe('ActivationService with the nixos backend', () => {
  let dir: string;
  let module: TestingModule;
  let service: ActivationService;
  let logs: CapturingLogger;
  let clock: FakeClock;

  const copying = (name: string): string => `copying path '/nix/store/${name}' from 'https://cache.example.org'...`;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-activation-nixos-'));
    const store = join(dir, 'store');
    const link = join(dir, 'current-system');
    mkdirSync(join(store, PREVIOUS), { recursive: true });
    symlinkSync(join(store, PREVIOUS), link);
    // The target is only in the fake cache: the realise fetches it.
    mkdirSync(join(dir, 'cache', TARGET, 'bin'), { recursive: true });
    const script = (path: string, body: string[]): void => writeFileSync(path, `#!/bin/sh\n${body.join('\n')}\n`, { mode: 0o755 });
    const waitFor = (file: string): string => `while [ ! -e '${join(dir, file)}' ]; do sleep 0.05; done`;
    script(join(dir, 'cache', TARGET, 'bin', 'switch-to-configuration'), [`ln -sfn '${join(store, TARGET)}' '${link}'`]);
    script(join(dir, 'nix-store'), [
      `echo 'these 3 paths will be fetched (12.00 MiB download, 40.00 MiB unpacked):' >&2`,
      `echo "${copying('a-dependency')}" >&2`,
      `echo "${copying('b-dependency')}" >&2`,
      waitFor('go'),
      `echo "${copying(TARGET)}" >&2`,
      waitFor('release'),
      `cp -a '${join(dir, 'cache', TARGET)}' "$2"`,
    ]);
    script(join(dir, 'nix-env'), ['ln -sfn "$4" "$2"']);
    script(join(dir, 'systemd-run'), ['while [ $# -gt 0 ]; do case "$1" in --*) shift ;; *) break ;; esac; done', '"$@"']);
    const reader = new CurrentSystemReader({ currentSystemPath: link } as AgentConfig);
    const backend = new NixosBackend(
      {
        storeDir: store,
        systemProfile: join(dir, 'system-profile'),
        nixStore: join(dir, 'nix-store'),
        nixEnv: join(dir, 'nix-env'),
        systemdRun: join(dir, 'systemd-run'),
        bootedSystemPath: join(dir, 'booted-system'),
        switchLockPath: join(dir, 'switch.lock'),
        timeoutMs: 10_000,
        realiseTimeoutMs: 10_000,
        switchLockWaitMs: 10_000,
      },
      reader,
    );
    clock = new FakeClock();
    module = await Test.createTestingModule({
      imports: [MetricsModule],
      providers: [
        ActivationService,
        { provide: ACTIVATION_BACKEND, useValue: backend },
        { provide: CLOCK, useValue: clock },
        { provide: RANDOM, useValue: new FixedRandom() },
        { provide: REDUCER_INPUT, useValue: new RecordingReducer([]) },
        BootGate,
        { provide: CurrentSystemReader, useValue: reader },
        { provide: RESUME_TRUST, useValue: NEVER_ASKED },
      ],
    }).compile();
    logs = new CapturingLogger();
    module.useLogger(logs);
    service = module.get(ActivationService);
  });
  afterEach(async () => {
    writeFileSync(join(dir, 'go'), '');
    writeFileSync(join(dir, 'release'), '');
    await service.idle();
    await module.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const logged = (): string[] => logs.messages('log', ActivationService.name);

  it('shows the realise in /status while it downloads, and logs its progress at most every 15 s', async () => {
    service.handle(fireSwitch());
    await eventually(() => service.status().running?.realise?.pathsCopied === 2, 5_000, 'two paths copying');
    expect(service.status().running).toMatchObject({
      rolloutId: ROLLOUT,
      phase: 'realising',
      realise: { lastLine: copying('b-dependency'), pathsToFetch: 3, pathsCopied: 2, downloadBytes: 12 * 1024 ** 2 },
    });
    const what = `switch of ${ROLLOUT} to ${TARGET}`;
    // The phase at once; its first lines came within 15 s of it, so no progress line yet.
    expect(logged().filter((m) => m.startsWith(`${what}: realising`))).toEqual([
      `${what}: realising: nix-store --realise ${join(dir, 'store', TARGET)}`,
    ]);

    clock.advance(15_000);
    writeFileSync(join(dir, 'go'), '');
    await eventually(() => service.status().running?.realise?.pathsCopied === 3, 5_000, 'the third path copying');
    expect(logged().filter((m) => m.startsWith(`${what}: realising: 3`))).toEqual([
      `${what}: realising: 3 of 3 path(s) copied, 12.0 MiB to download; last: ${copying(TARGET)}`,
    ]);

    writeFileSync(join(dir, 'release'), '');
    await service.idle();
    expect(service.status()).toMatchObject({ running: null, lastResult: { outcome: 'completed', detail: `now running ${TARGET}` } });
    expect(logged()).toEqual(
      expect.arrayContaining([
        expect.stringMatching(new RegExp(`^${what}: setting profile: `)),
        expect.stringMatching(new RegExp(`^${what}: switching: switch-to-configuration switch in unit nixfleet-switch-`)),
      ]),
    );
  });
});
