import { Test, type TestingModule } from '@nestjs/testing';
import { CapturingLogger } from '../../test/support/agent-harness';
import { FakeClock } from '../../test/support/fake-clock';
import { CLOCK } from '../clock/clock';
import type { AgentEvent } from '../protocol/events.wire';
import type { RolloutState } from '../protocol/rollout';
import type { HostRolloutSnapshot } from '../protocol/snapshot.wire';
import { REDUCER_QUEUE_CAPACITY } from './reducer.constants';
import { MetricsModule } from '../metrics/metrics.module';
import { EffectPortRegistry } from './effect-ports';
import {
  type EffectOf,
  type EffectPorts,
  type EmitEventPort,
  type FireRollbackPort,
  type FireSwitchPort,
  REDUCER_POLICY,
  type ResetProbeCachePort,
} from './reducer.ports';
import { ReducerClosedError, ReducerService } from './reducer.service';
import type { Policy, ReducerInput, TransitionResult } from './reducer.types';

const ROLLOUT = 'stable@a1b2c3d4';
const TARGET = `${'a'.repeat(32)}-nixos-system-web-01-26.05`;
const PREVIOUS = `${'b'.repeat(32)}-nixos-system-web-01-26.04`;
const HALT: Policy = { onHealthFailure: 'halt', sustainedFailureThresholdSecs: 120 };
const ROLLBACK: Policy = { onHealthFailure: 'rollback-and-halt', sustainedFailureThresholdSecs: 120 };

const activate = (rolloutId = ROLLOUT): ReducerInput => ({
  type: 'Activate',
  rolloutId,
  targetClosure: TARGET,
  soakDueAt: '2026-11-28T12:10:00.000Z',
  currentClosure: PREVIOUS,
  dispatchedAt: '2026-11-28T11:59:55.000Z',
});
const started = (rolloutId = ROLLOUT): ReducerInput => ({ type: 'ActivationStarted', rolloutId, switchMethod: 'switch' });
const completed = (rolloutId = ROLLOUT): ReducerInput => ({
  type: 'ActivationCompleted',
  rolloutId,
  observedCurrentClosure: TARGET,
  exitCode: 0,
});
const failed = (rolloutId = ROLLOUT): ReducerInput => ({
  type: 'ActivationFailed',
  rolloutId,
  exitCode: 1,
  stderrTail: 'switch-to-configuration failed',
});

function snapshot(state: RolloutState, lastEventSeq: number, rolloutId = ROLLOUT): HostRolloutSnapshot {
  return {
    rolloutId,
    hostname: 'web-01',
    channel: 'stable',
    state,
    targetClosure: TARGET,
    dispatchedAt: '2026-11-28T11:59:55.000Z',
    lastEventSeq,
  };
}

/** A promise the test settles by hand. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

/** What every port saw, in one timeline, so the order across ports shows. */
type Timeline = string[];

/** The event log's stand-in: records the events, can block on a gate, can fail an append. */
class RecordingEmitPort implements EmitEventPort {
  readonly events: { rolloutId: string; event: AgentEvent }[] = [];
  blockedBy: Promise<void> | null = null;
  failNext: Error | null = null;
  active = 0;
  maxActive = 0;

  constructor(private readonly timeline: Timeline = []) {}

  async emit(effects: readonly EffectOf<'EmitEvent'>[]): Promise<void> {
    this.active += 1;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      if (this.blockedBy) await this.blockedBy;
      if (this.failNext) {
        const err = this.failNext;
        this.failNext = null;
        throw err;
      }
      for (const e of effects) {
        this.events.push({ rolloutId: e.rolloutId, event: e.event });
        this.timeline.push(`EmitEvent ${e.rolloutId} ${e.event.kind}#${e.event.seq}`);
      }
    } finally {
      this.active -= 1;
    }
  }
}

/** An effect port that records what reached it and the rollout's state at that moment. */
class RecordingPort<E extends EffectOf<'FireSwitch' | 'FireRollback' | 'ResetProbeCache'>> {
  readonly seen: { effect: E; stateThen: RolloutState | undefined }[] = [];
  reducer: ReducerService | null = null;

  constructor(private readonly timeline: Timeline) {}

  handle(effect: E): void {
    this.seen.push({ effect, stateThen: this.reducer?.current().rollouts[effect.rolloutId]?.state });
    this.timeline.push(`${effect.type} ${effect.rolloutId}`);
  }
}

interface Built {
  module: TestingModule;
  reducer: ReducerService;
  logs: CapturingLogger;
  clock: FakeClock;
}

/** A reducer with `ports` bound, as the serving modules bind theirs; the others unserved. */
async function build(ports: Partial<EffectPorts>, policy: Policy = HALT): Promise<Built> {
  const clock = new FakeClock();
  const module = await Test.createTestingModule({
    imports: [MetricsModule],
    providers: [ReducerService, EffectPortRegistry, { provide: CLOCK, useValue: clock }, { provide: REDUCER_POLICY, useValue: policy }],
  }).compile();
  const registry = module.get(EffectPortRegistry);
  const bind = <K extends keyof EffectPorts>(kind: K): void => {
    const port = ports[kind];
    if (port) registry.bind(kind, port);
  };
  for (const kind of ['EmitEvent', 'FireSwitch', 'FireRollback', 'ResetProbeCache'] as const) bind(kind);
  const logs = new CapturingLogger();
  // The reducer's `new Logger(...)` writes through the application logger.
  module.useLogger(logs);
  return { module, reducer: module.get(ReducerService), logs, clock };
}

/** Settles the microtask queue and one macrotask turn. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('ReducerService', () => {
  const opened: TestingModule[] = [];
  afterEach(async () => {
    for (const m of opened.splice(0)) await m.close();
  });
  async function make(ports: Partial<EffectPorts>, policy: Policy = HALT): Promise<Built> {
    const b = await build(ports, policy);
    opened.push(b.module);
    return b;
  }

  it('applies concurrently submitted inputs in submission order, through one consumer', async () => {
    const emitter = new RecordingEmitPort();
    const { reducer } = await make({ EmitEvent: emitter });

    const results = await Promise.all([reducer.submit(activate()), reducer.submit(started()), reducer.submit(completed())]);

    expect(results.map((r) => r.rejected)).toEqual([undefined, undefined, undefined]);
    expect(emitter.events.map((e) => `${e.event.kind}#${e.event.seq}`)).toEqual([
      'DispatchAck#1',
      'ActivationStarted#2',
      'ActivationCompleted#3',
    ]);
    // One mutator: no second append starts while one is in progress.
    expect(emitter.maxActive).toBe(1);
    expect(reducer.current().rollouts[ROLLOUT]?.state).toBe('Soaking');
    expect(reducer.statistics()).toMatchObject({ applied: 3, rejected: 0, failed: 0, queueDepth: 0, waitingProducers: 0 });
  });

  it('applies an input submitted just as the consumer finds the queue empty: none is stranded', async () => {
    // The consumer's wind-down spans a few microtasks; probe every offset in and around it.
    for (let offset = 0; offset < 12; offset++) {
      const { reducer } = await make({});
      const tick: ReducerInput = { type: 'Tick', currentClosure: TARGET };
      const first = reducer.submit(tick);
      let late = Promise.resolve();
      for (let i = 0; i < offset; i++) late = late.then(() => undefined);
      let lateApplied = false;
      const second = late
        .then(() => reducer.submit(tick))
        .then(() => {
          lateApplied = true;
        });
      await first;
      await turn();

      expect({ offset, lateApplied, queueDepth: reducer.statistics().queueDepth }).toEqual({ offset, lateApplied: true, queueDepth: 0 });
      expect(reducer.statistics().applied).toBe(2);
      await second;
    }
  });

  it('resolves submit with the transition result once the state has changed, and lastEventSeqByRollout follows', async () => {
    const emitter = new RecordingEmitPort();
    const { reducer } = await make({ EmitEvent: emitter });
    expect(reducer.lastEventSeqByRollout()).toEqual({});

    const first = await reducer.submit(activate());
    expect(reducer.current()).toBe(first.state);
    expect(first.state.rollouts[ROLLOUT]).toMatchObject({ state: 'Activating', lastEventSeq: 1 });
    expect(first.effects.map((e) => e.type)).toEqual(['EmitEvent', 'FireSwitch']);
    expect(reducer.lastEventSeqByRollout()).toEqual({ [ROLLOUT]: 1 });

    const second = await reducer.submit(started());
    expect(reducer.current()).toBe(second.state);
    expect(reducer.lastEventSeqByRollout()).toEqual({ [ROLLOUT]: 2 });

    await reducer.submit(activate('canary@e5f6a7b8'));
    expect(reducer.lastEventSeqByRollout()).toEqual({ [ROLLOUT]: 2, 'canary@e5f6a7b8': 1 });
  });

  it('tells a watcher the state at once and each committed state after it, never a rejected or unchanged one', async () => {
    const { reducer } = await make({ EmitEvent: new RecordingEmitPort() });
    const seen: string[] = [];
    reducer.watch((state) => seen.push(state.rollouts[ROLLOUT]?.state ?? 'none'));
    expect(seen).toEqual(['none']);

    await reducer.submit(activate());
    await reducer.submit(activate());
    await reducer.submit({ type: 'Tick', currentClosure: TARGET });
    await reducer.submit(started());
    await reducer.submit(completed());

    // Not told: the second Activate (rejected) and the tick (nothing soaks yet). Told: ActivationStarted, still Activating.
    expect(seen).toEqual(['none', 'Activating', 'Activating', 'Soaking']);
    expect(reducer.current().rollouts[ROLLOUT]?.state).toBe('Soaking');
  });

  it(`bounds the queue at ${REDUCER_QUEUE_CAPACITY}: further producers wait, none is dropped, all apply in order once it moves`, async () => {
    const emitter = new RecordingEmitPort();
    const hold = gate();
    emitter.blockedBy = hold.promise;
    const { reducer } = await make({ EmitEvent: emitter });

    // The first input is taken off the queue and blocks in the append; 64 fill the queue; 5 more must wait.
    const total = 1 + REDUCER_QUEUE_CAPACITY + 5;
    const ids = Array.from({ length: total }, (_, i) => `stable@r${String(i).padStart(3, '0')}`);
    const settled: boolean[] = ids.map(() => false);
    const pending = ids.map((id, i) =>
      reducer.submit(activate(id)).then((r) => {
        settled[i] = true;
        return r;
      }),
    );
    await turn();

    const stats = reducer.statistics();
    expect(stats.queueDepth).toBe(REDUCER_QUEUE_CAPACITY);
    expect(stats.waitingProducers).toBe(5);
    expect(settled.some(Boolean)).toBe(false);
    expect(emitter.events).toHaveLength(0);

    hold.open();
    const results: TransitionResult[] = await Promise.all(pending);

    expect(results.every((r) => r.rejected === undefined)).toBe(true);
    expect(emitter.events.map((e) => e.rolloutId)).toEqual(ids);
    expect(Object.keys(reducer.lastEventSeqByRollout()).sort()).toEqual(ids);
    expect(reducer.statistics()).toMatchObject({ applied: total, queueDepth: 0, waitingProducers: 0, failed: 0 });
  });

  it('rejects an illegal transition with a warning and leaves the state as it was', async () => {
    const emitter = new RecordingEmitPort();
    const { reducer, logs } = await make({ EmitEvent: emitter });
    await reducer.submit(activate());
    await reducer.submit(started());
    await reducer.submit(completed());
    const before = reducer.current();

    // Soaking: a second activation completion is illegal.
    const result = await reducer.submit(completed());

    expect(result.rejected).toBe(`ActivationCompleted for ${ROLLOUT} is illegal in state Soaking`);
    expect(result.effects).toEqual([]);
    expect(reducer.current()).toBe(before);
    expect(reducer.lastEventSeqByRollout()).toEqual({ [ROLLOUT]: 3 });
    expect(emitter.events).toHaveLength(3);
    expect(logs.messages('warn', 'ReducerService')).toEqual([
      `ActivationCompleted for ${ROLLOUT} is illegal in state Soaking; input ignored, rollout state unchanged`,
    ]);
    expect(reducer.statistics()).toMatchObject({ applied: 3, rejected: 1, failed: 0 });
  });

  it('does not commit a transition whose append failed: the producer gets the error and the seq is used again', async () => {
    const timeline: Timeline = [];
    const emitter = new RecordingEmitPort(timeline);
    const switches = new RecordingPort<EffectOf<'FireSwitch'>>(timeline);
    const { reducer, logs } = await make({
      EmitEvent: emitter,
      FireSwitch: switches,
    });
    emitter.failNext = new Error('ENOSPC: no space left on device');

    await expect(reducer.submit(activate())).rejects.toThrow('ENOSPC: no space left on device');

    expect(reducer.current().rollouts).toEqual({});
    expect(reducer.lastEventSeqByRollout()).toEqual({});
    // Nothing durable, so no switch for it either.
    expect(switches.seen).toHaveLength(0);
    expect(reducer.statistics()).toMatchObject({ applied: 0, failed: 1 });
    expect(logs.messages('error', 'ReducerService')).toEqual([
      expect.stringContaining(`Activate for ${ROLLOUT} not applied: its events could not be made durable (ENOSPC`),
    ]);

    // The reducer keeps going, and the next activation of the same rollout numbers from 1 again.
    const again = await reducer.submit(activate());
    expect(again.rejected).toBeUndefined();
    expect(emitter.events.map((e) => `${e.rolloutId} ${e.event.kind}#${e.event.seq}`)).toEqual([`${ROLLOUT} DispatchAck#1`]);
    expect(reducer.lastEventSeqByRollout()).toEqual({ [ROLLOUT]: 1 });
    expect(timeline).toEqual([`EmitEvent ${ROLLOUT} DispatchAck#1`, `FireSwitch ${ROLLOUT}`]);
  });

  it('sends each effect to its port, the event first and the action after it, with the state already committed', async () => {
    const timeline: Timeline = [];
    const emitter = new RecordingEmitPort(timeline);
    const switches = new RecordingPort<EffectOf<'FireSwitch'>>(timeline);
    const rollbacks = new RecordingPort<EffectOf<'FireRollback'>>(timeline);
    const probeCache = new RecordingPort<EffectOf<'ResetProbeCache'>>(timeline);
    const { reducer } = await make(
      {
        EmitEvent: emitter satisfies EmitEventPort,
        FireSwitch: switches satisfies FireSwitchPort,
        FireRollback: rollbacks satisfies FireRollbackPort,
        ResetProbeCache: probeCache satisfies ResetProbeCachePort,
      },
      ROLLBACK,
    );
    for (const p of [switches, rollbacks, probeCache]) p.reducer = reducer;
    const OTHER = 'canary@e5f6a7b8';

    await reducer.submit(activate());
    await reducer.submit(started());
    await reducer.submit(completed());
    await reducer.submit(activate(OTHER));
    await reducer.submit(failed(OTHER));
    await reducer.submit({ type: 'Snapshot', snapshot: snapshot('Soaking', 9, 'beta@c0ffee00') });

    expect(timeline).toEqual([
      `EmitEvent ${ROLLOUT} DispatchAck#1`,
      `FireSwitch ${ROLLOUT}`,
      `EmitEvent ${ROLLOUT} ActivationStarted#2`,
      `EmitEvent ${ROLLOUT} ActivationCompleted#3`,
      `ResetProbeCache ${ROLLOUT}`,
      `EmitEvent ${OTHER} DispatchAck#1`,
      `FireSwitch ${OTHER}`,
      `EmitEvent ${OTHER} ActivationFailed#2`,
      `FireRollback ${OTHER}`,
      'ResetProbeCache beta@c0ffee00',
    ]);
    expect(switches.seen.map((s) => [s.effect.targetClosure, s.stateThen])).toEqual([
      [TARGET, 'Activating'],
      [TARGET, 'Activating'],
    ]);
    expect(rollbacks.seen.map((s) => [s.effect.toClosure, s.stateThen])).toEqual([[PREVIOUS, 'Failed']]);
    expect(probeCache.seen.map((s) => s.stateThen)).toEqual(['Soaking', 'Soaking']);
    expect(reducer.statistics().unconnectedEffects).toEqual({ EmitEvent: 0, FireSwitch: 0, FireRollback: 0, ResetProbeCache: 0 });
  });

  it('counts effects for ports no module provides and logs them at debug, still applying the input', async () => {
    const { reducer, logs } = await make({}, ROLLBACK);

    await reducer.submit(activate());
    await reducer.submit(started());
    await reducer.submit(failed());
    await reducer.submit({ type: 'Snapshot', snapshot: snapshot('Soaking', 7, 'beta@c0ffee00') });

    expect(reducer.current().rollouts[ROLLOUT]).toMatchObject({ state: 'Failed', lastEventSeq: 3 });
    expect(reducer.statistics().unconnectedEffects).toEqual({ EmitEvent: 3, FireSwitch: 1, FireRollback: 1, ResetProbeCache: 1 });
    const debug = logs.messages('debug', 'ReducerService');
    expect(debug).toEqual(
      expect.arrayContaining([
        `EmitEvent (DispatchAck#1): no consumer is connected to this port; counted only`,
        `FireSwitch (${ROLLOUT} → ${TARGET}): no consumer is connected to this port; counted only`,
        `FireRollback (${ROLLOUT} → ${PREVIOUS}): no consumer is connected to this port; counted only`,
        'ResetProbeCache (beta@c0ffee00): no consumer is connected to this port; counted only',
      ]),
    );
    expect(logs.messages('warn')).toEqual([]);
    expect(logs.messages('error')).toEqual([]);
  });

  it('logs once, at info, the soak due time it derived for a Soaking snapshot without one', async () => {
    const { reducer, logs } = await make({});

    await reducer.submit({ type: 'Snapshot', snapshot: snapshot('Soaking', 2) });
    await reducer.submit({ type: 'Snapshot', snapshot: snapshot('Soaking', 2) });

    const info = logs.messages('log', 'ReducerService');
    const derived = info.filter((line) => line.includes('has no soakDueAt'));
    expect(derived).toHaveLength(1);
    expect(derived[0]).toMatch(new RegExp(`^Soaking rollout ${ROLLOUT} has no soakDueAt from the control plane; soak due at `));
    // Besides it, the one line of the state change the first snapshot made; the repeat changed nothing.
    expect(info.filter((line) => !line.includes('has no soakDueAt'))).toEqual([
      expect.stringMatching(
        new RegExp(`^rollout ${ROLLOUT}: Soaking since an unknown time, soak due at .* \\(from the control plane's snapshot\\)$`),
      ),
    ]);
    expect(reducer.current().rollouts[ROLLOUT]?.soakDueAt).toBeDefined();
    expect(logs.messages('warn')).toEqual([]);
  });

  it('drains the inputs queued before shutdown, then refuses new ones with ReducerClosedError', async () => {
    const emitter = new RecordingEmitPort();
    const hold = gate();
    emitter.blockedBy = hold.promise;
    const { module, reducer } = await build({ EmitEvent: emitter });

    const queued = [reducer.submit(activate()), reducer.submit(started()), reducer.submit(completed())];
    await turn();
    expect(reducer.statistics().queueDepth).toBe(2);

    // module.close() runs the shutdown hooks, as the app's close() does on SIGTERM.
    let closed = false;
    const closing = module.close().then(() => {
      closed = true;
    });
    await turn();
    await expect(reducer.submit(activate('canary@e5f6a7b8'))).rejects.toBeInstanceOf(ReducerClosedError);
    expect(closed).toBe(false);

    hold.open();
    await closing;
    const results = await Promise.all(queued);
    expect(results.map((r) => r.rejected)).toEqual([undefined, undefined, undefined]);
    expect(emitter.events.map((e) => `${e.event.kind}#${e.event.seq}`)).toEqual([
      'DispatchAck#1',
      'ActivationStarted#2',
      'ActivationCompleted#3',
    ]);
    expect(reducer.current().rollouts[ROLLOUT]?.state).toBe('Soaking');
    expect(Object.keys(reducer.current().rollouts)).toEqual([ROLLOUT]);
    await expect(reducer.submit(started())).rejects.toThrow('the reducer is shut down and takes no more input');
  });
});
