import type { Logger } from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { Test, type TestingModule } from '@nestjs/testing';
import { CapturingLogger, FixedRandom } from '../../test/support/agent-harness';
import { FakeClock } from '../../test/support/fake-clock';
import { CLOCK } from '../clock/clock';
import { ClockModule } from '../clock/clock.module';
import { mathRandom, RANDOM } from '../clock/random';
import { BootGate } from '../lifecycle/boot-gate';
import { type BackoffPolicy, backoffDelayMs, retryDelayMs } from './backoff';
import { JobRunner } from './job-runner';
import { JobRuntime } from './job-runtime.service';
import { failed, type JobContext, type JobDefinition, type JobHandle, type JobResult, ok, retryAfter, type SettledRun } from './job.types';
import { ABORT_SETTLE_MS, RETRY_AFTER_CAP_MS } from './jobs.constants';
import { JobsModule } from './jobs.module';

const LOWEST = new FixedRandom(0);
// The random source returns [0, 1): the top is approached, never reached.
const HIGHEST = new FixedRandom(1 - Number.EPSILON);
const MIDDLE = new FixedRandom(0.5);

/** A job body the test scripts: each run takes the next result, and can be held in flight until released. */
class Script {
  readonly contexts: JobContext[] = [];
  readonly settled: SettledRun[] = [];
  private readonly results: JobResult[] = [];
  private held: { release: () => void; promise: Promise<void> } | null = null;
  private ran: (() => void) | null = null;
  /** What a run does besides returning its result (a throw, a progress mark). */
  during: ((ctx: JobContext) => void) | null = null;

  get runs(): number {
    return this.contexts.length;
  }

  then(...results: JobResult[]): this {
    this.results.push(...results);
    return this;
  }

  /** The next run stays in flight until `release()`; shutdown's abort also ends it. */
  hold(): () => void {
    let release!: () => void;
    const promise = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.held = { release, promise };
    return release;
  }

  /** Resolves once the next run has started. */
  nextRun(): Promise<void> {
    return new Promise((resolve) => {
      this.ran = resolve;
    });
  }

  readonly run = async (ctx: JobContext): Promise<JobResult> => {
    this.contexts.push(ctx);
    this.ran?.();
    this.ran = null;
    this.during?.(ctx);
    const held = this.held;
    if (held) {
      this.held = null;
      await Promise.race([held.promise, new Promise((resolve) => ctx.signal.addEventListener('abort', resolve))]);
    }
    return this.results.shift() ?? ok();
  };

  readonly onSettled = (run: SettledRun): void => {
    this.settled.push(run);
  };
}

const EVERY_10S: JobDefinition['schedule'] = { kind: 'every', intervalMs: 10_000 };
const STEPS: BackoffPolicy = { firstMs: 1_000, capMs: 8_000 };

function job(name: string, script: Script, over: Partial<JobDefinition> = {}): JobDefinition {
  return { name, afterBoot: false, schedule: EVERY_10S, backoff: STEPS, run: script.run, onSettled: script.onSettled, ...over };
}

interface Rig {
  module: TestingModule;
  runtime: JobRuntime;
  registry: SchedulerRegistry;
  gate: BootGate;
  clock: FakeClock;
  random: FixedRandom;
  logs: CapturingLogger;
  /** Moves the fake clock, ticks the job and waits for any run that started. */
  advanceAndTick(handle: JobHandle, ms: number): Promise<void>;
  /** Milliseconds from the fake now to the job's next due time. */
  dueIn(handle: JobHandle): number | null;
}

describe('JobRuntime: the job runtime, on a fake clock', () => {
  const open: TestingModule[] = [];

  afterEach(async () => {
    for (const m of open.splice(0)) await m.close();
  });

  /** The runtime in its own module; `register` declares the jobs before the application starts. */
  async function rig(register: (runtime: JobRuntime) => void = () => undefined): Promise<Rig> {
    const clock = new FakeClock();
    const random = new FixedRandom();
    const logs = new CapturingLogger();
    const module = await Test.createTestingModule({ imports: [ClockModule, JobsModule] })
      .overrideProvider(CLOCK)
      .useValue(clock)
      .overrideProvider(RANDOM)
      .useValue(random)
      .compile();
    module.useLogger(logs);
    open.push(module);
    const runtime = module.get(JobRuntime);
    register(runtime);
    await module.init();
    return {
      module,
      runtime,
      registry: module.get(SchedulerRegistry),
      gate: module.get(BootGate),
      clock,
      random,
      logs,
      async advanceAndTick(handle, ms) {
        clock.advance(ms);
        handle.tick();
        await handle.settled();
      },
      dueIn(handle) {
        const next = handle.status().nextDueAt;
        return next === null ? null : Date.parse(next) - clock.now().getTime();
      },
    };
  }

  describe('due times', () => {
    it('runs a job when its interval is due by the clock and not a millisecond before', async () => {
      const script = new Script();
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('sweep', script));
      });
      expect(handle.status()).toMatchObject({ state: 'scheduled', nextDueAt: new Date(r.clock.now().getTime() + 10_000).toISOString() });
      await r.advanceAndTick(handle, 9_999);
      expect(script.runs).toBe(0);
      await r.advanceAndTick(handle, 1);
      expect(script.runs).toBe(1);
      expect(r.dueIn(handle)).toBe(10_000);
    });

    it('arms one timeout per job in the SchedulerRegistry, under its name, which runs the job once the clock says it is due', async () => {
      const script = new Script();
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('quick', script, { schedule: { kind: 'every', intervalMs: 30 } }));
      });
      expect(r.registry.getTimeouts()).toEqual(['quick']);
      expect(r.registry.getIntervals()).toEqual([]);
      const ran = script.nextRun();
      r.clock.advance(30);
      // No tick from the test: the armed timeout fires (after 30 ms of real time) and finds the job due.
      await ran;
      await handle.settled();
      expect(script.runs).toBe(1);
      expect(r.registry.getTimeouts()).toEqual(['quick']);
    });

    it('starts a `loop` job at once, with the application, and runs it again as soon as a run ends', async () => {
      const script = new Script();
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('poll', script, { schedule: { kind: 'loop' } }));
      });
      expect(script.runs).toBe(1);
      await handle.settled();
      expect(r.dueIn(handle)).toBe(0);
      handle.tick();
      await handle.settled();
      expect(script.runs).toBe(2);
    });

    it('unregisters a job: its timer goes, a run in flight is cut as its shutdown policy says, and the name is free again', async () => {
      const first = new Script();
      const r = await rig();
      const handle = r.runtime.register(
        job('probe:db', first, { schedule: { kind: 'every', intervalMs: 30, firstAfterMs: 0 }, onShutdown: { kind: 'abort' } }),
      );
      expect(first.runs).toBe(1);
      await handle.settled();
      first.hold();
      r.clock.advance(30);
      handle.tick();
      expect(first.runs).toBe(2);
      const inFlight = first.contexts[1];

      await r.runtime.unregister('probe:db');

      expect(inFlight?.signal.aborted).toBe(true);
      expect(r.registry.getTimeouts()).toEqual([]);
      expect(r.runtime.status().map((j) => j.name)).toEqual([]);

      const second = new Script();
      const again = r.runtime.register(job('probe:db', second, { schedule: { kind: 'every', intervalMs: 30, firstAfterMs: 0 } }));
      expect(second.runs).toBe(1);
      await again.settled();
      // The stopped job's last word did not take the new one's timer with it.
      expect(r.registry.getTimeouts()).toEqual(['probe:db']);
      r.clock.advance(1_000);
      handle.tick();
      expect(first.runs).toBe(2);
    });

    it('takes `firstAfterMs` for the first run only', async () => {
      const script = new Script();
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('first-now', script, { schedule: { kind: 'every', intervalMs: 10_000, firstAfterMs: 0 } }));
      });
      expect(script.runs).toBe(1);
      await handle.settled();
      expect(r.dueIn(handle)).toBe(10_000);
    });

    it('spreads an interval by its jitter, within its bounds', async () => {
      const script = new Script();
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('jittered', script, { schedule: { kind: 'every', intervalMs: 10_000, jitter: 0.1 } }));
      });
      r.random.value = LOWEST.value;
      await r.advanceAndTick(handle, 10_000);
      expect(r.dueIn(handle)).toBe(9_000);
      r.random.value = HIGHEST.value;
      await r.advanceAndTick(handle, 9_000);
      expect(r.dueIn(handle)).toBeCloseTo(11_000, 3);
      expect(r.dueIn(handle)).toBeLessThanOrEqual(11_000);
    });
  });

  describe('single flight', () => {
    it('skips a tick that falls due while a run is in flight, counts it once, never queues it, and runs next on the first free slot', async () => {
      const script = new Script();
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('slow', script));
      });
      const release = script.hold();
      r.clock.advance(10_000);
      const startedAt = r.clock.now().getTime();
      handle.tick();
      expect(handle.status().state).toBe('running');
      expect(r.registry.getTimeouts()).toEqual([]);
      // Three more slots pass while the run is in flight.
      for (let i = 0; i < 5; i++) {
        r.clock.advance(5_000);
        handle.tick();
      }
      expect(script.runs).toBe(1);
      expect(handle.status().skippedTicks).toBe(1);
      release();
      await handle.settled();
      // Started at T, ended at T+25 s: the next slot on the T + k·10 s grid is T+30 s, and only one run is due there.
      expect(Date.parse(handle.status().nextDueAt!)).toBe(startedAt + 30_000);
      expect(r.registry.getTimeouts()).toEqual(['slow']);
      await r.advanceAndTick(handle, 4_999);
      expect(script.runs).toBe(1);
      await r.advanceAndTick(handle, 1);
      await r.advanceAndTick(handle, 0);
      expect(script.runs).toBe(2);
    });

    it('counts the slot a run outlived as skipped, once, even when no tick came by while it ran', async () => {
      const script = new Script();
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('overrun', script));
      });
      const release = script.hold();
      r.clock.advance(10_000);
      handle.tick();
      // Two slots pass with no tick: a job on its armed timeout is not prompted while it runs.
      r.clock.advance(25_000);
      release();
      await handle.settled();
      expect(handle.status().skippedTicks).toBe(1);
      await r.advanceAndTick(handle, 5_000);
      expect(script.runs).toBe(2);
      expect(handle.status().skippedTicks).toBe(1);
    });

    it('a tick during a run that has not reached its next slot is no skip', async () => {
      const script = new Script();
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('quick-run', script));
      });
      const release = script.hold();
      await r.advanceAndTick(handle, 0);
      r.clock.advance(10_000);
      handle.tick();
      r.clock.advance(9_999);
      handle.tick();
      release();
      await handle.settled();
      expect(handle.status().skippedTicks).toBe(0);
    });

    it('runs once more after a run in flight when triggered meanwhile, however many triggers came', async () => {
      const script = new Script();
      let handle!: JobHandle;
      await rig((rt) => {
        handle = rt.register(job('drain', script));
      });
      const release = script.hold();
      handle.trigger();
      for (let i = 0; i < 3; i++) handle.trigger();
      expect(script.runs).toBe(1);
      release();
      await handle.settled();
      expect(script.runs).toBe(2);
    });

    it('runNow() while a run is in flight waits for that run instead of starting another', async () => {
      const script = new Script();
      let handle!: JobHandle;
      await rig((rt) => {
        handle = rt.register(job('manual', script));
      });
      const release = script.hold();
      const first = handle.runNow();
      const second = handle.runNow();
      release();
      await Promise.all([first, second]);
      expect(script.runs).toBe(1);
    });
  });

  describe('backoff', () => {
    it('doubles from the first step to the cap on repeated failures, and a success returns to the cadence', async () => {
      const script = new Script().then(...Array.from({ length: 6 }, (_, i) => failed(`HTTP 500 (${i + 1})`)));
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('flaky', script));
      });
      await r.advanceAndTick(handle, 10_000);
      const failedAt = r.clock.now().toISOString();
      const delays: number[] = [];
      for (let i = 0; i < 6; i++) {
        const due = r.dueIn(handle)!;
        delays.push(due);
        expect(handle.status()).toMatchObject({
          consecutiveFailures: i + 1,
          failingSince: failedAt,
          lastResult: { kind: 'failed', cause: `HTTP 500 (${i + 1})` },
        });
        await r.advanceAndTick(handle, due - 1);
        expect(script.runs).toBe(i + 1);
        await r.advanceAndTick(handle, 1);
      }
      expect(delays).toEqual([1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
      expect(script.settled.map((s) => s.delayMs)).toEqual([...delays, 10_000]);
      expect(handle.status()).toMatchObject({ consecutiveFailures: 0, failingSince: null, lastResult: { kind: 'ok' } });
      expect(script.settled.at(-1)).toMatchObject({ failuresBefore: 6, consecutiveFailures: 0 });
      expect(r.dueIn(handle)).toBe(10_000);
    });

    it('ignores a trigger while backing off: the retry waits for its due time', async () => {
      const script = new Script().then(failed('HTTP 503'));
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('backing-off', script));
      });
      handle.trigger();
      await handle.settled();
      r.clock.advance(999);
      handle.trigger();
      await handle.settled();
      expect(script.runs).toBe(1);
      r.clock.advance(1);
      handle.trigger();
      await handle.settled();
      expect(script.runs).toBe(2);
    });

    it('takes other steps when a failure names its own policy (a paused delivery retries less often)', async () => {
      const paused: BackoffPolicy = { firstMs: 1_000, capMs: 300_000 };
      const script = new Script().then(...Array.from({ length: 10 }, () => failed('HTTP 403', paused)));
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('paused', script));
      });
      await r.advanceAndTick(handle, 10_000);
      for (let i = 0; i < 9; i++) await r.advanceAndTick(handle, r.dueIn(handle)!);
      expect(script.settled.map((s) => s.delayMs)).toEqual([1, 2, 4, 8, 16, 32, 64, 128, 256, 300].map((s) => s * 1000));
    });

    it('starts a new streak when a failure follows progress in the same run', async () => {
      const script = new Script().then(failed('first'), failed('after progress'));
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('partial', script));
      });
      await r.advanceAndTick(handle, 10_000);
      expect(handle.status().consecutiveFailures).toBe(1);
      script.during = (ctx) => ctx.progressed();
      r.clock.advance(5_000);
      await r.advanceAndTick(handle, r.dueIn(handle)!);
      expect(handle.status()).toMatchObject({ consecutiveFailures: 1, failingSince: r.clock.now().toISOString() });
      expect(r.dueIn(handle)).toBe(1_000);
    });

    it('counts an unexpected throw as a failed run; the job goes on', async () => {
      const script = new Script();
      script.during = () => {
        throw new Error('disk on fire');
      };
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('throws', script));
      });
      await r.advanceAndTick(handle, 10_000);
      expect(handle.status()).toMatchObject({
        state: 'scheduled',
        consecutiveFailures: 1,
        lastResult: { kind: 'failed', cause: 'unexpected error: disk on fire' },
      });
      script.during = null;
      await r.advanceAndTick(handle, r.dueIn(handle)!);
      expect(handle.status().consecutiveFailures).toBe(0);
    });

    it('runs a job that answers at once like one that answers later: a throw before it answers fails the run, settled while it is in flight', async () => {
      let fail = true;
      const states: string[] = [];
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register({
          ...job('at-once', new Script()),
          run: () => {
            if (fail) throw new Error('disk on fire');
            return ok();
          },
          onSettled: () => states.push(handle.status().state),
        });
      });
      await r.advanceAndTick(handle, 10_000);
      expect(handle.status()).toMatchObject({
        consecutiveFailures: 1,
        lastResult: { kind: 'failed', cause: 'unexpected error: disk on fire' },
      });
      fail = false;
      await r.advanceAndTick(handle, r.dueIn(handle)!);
      expect(handle.status()).toMatchObject({ state: 'scheduled', consecutiveFailures: 0, lastResult: { kind: 'ok' } });
      expect(states).toEqual(['running', 'running']);
    });
  });

  describe('the backoff policy (pure)', () => {
    const policy: BackoffPolicy = { firstMs: 5_000, capMs: 60_000 };

    it('grows 5, 10, 20, 40 s to its cap of 60 s, and stays there after very many failures', () => {
      expect([1, 2, 3, 4, 5, 6, 10_000].map((n) => backoffDelayMs(policy, n, MIDDLE))).toEqual([
        5_000, 10_000, 20_000, 40_000, 60_000, 60_000, 60_000,
      ]);
    });

    it('jitters every step by at most ±20 %, and never goes under the first step', () => {
      for (let n = 1; n <= 8; n++) {
        const base = backoffDelayMs(policy, n, MIDDLE);
        expect(backoffDelayMs(policy, n, LOWEST)).toBe(Math.max(base * 0.8, 5_000));
        expect(backoffDelayMs(policy, n, HIGHEST)).toBeCloseTo(base * 1.2, 3);
        for (let i = 0; i < 200; i++) {
          const d = backoffDelayMs(policy, n, mathRandom);
          expect(d).toBeGreaterThanOrEqual(Math.max(base * 0.8, 5_000));
          expect(d).toBeLessThanOrEqual(base * 1.2);
        }
      }
    });

    it('at the cap goes no sooner than `atCapNoSoonerThanMs`', () => {
      expect(backoffDelayMs({ ...policy, atCapNoSoonerThanMs: 54_000 }, 6, LOWEST)).toBe(54_000);
      expect(backoffDelayMs({ ...policy, atCapNoSoonerThanMs: 54_000 }, 2, LOWEST)).toBe(8_000);
    });

    it('honours a Retry-After longer than the backoff, not a shorter one, and caps it at 10 min', () => {
      expect(retryDelayMs(policy, 1, 30, MIDDLE)).toBe(30_000);
      expect(retryDelayMs(policy, 1, 1, MIDDLE)).toBe(5_000);
      expect(retryDelayMs(policy, 4, 30, MIDDLE)).toBe(40_000);
      expect(retryDelayMs(policy, 1, 86_400, MIDDLE)).toBe(RETRY_AFTER_CAP_MS);
      expect(RETRY_AFTER_CAP_MS).toBe(600_000);
      expect(retryDelayMs({ ...policy, retryAfterCapMs: 120_000 }, 1, 86_400, MIDDLE)).toBe(120_000);
      expect(retryDelayMs(policy, 1, null, MIDDLE)).toBe(5_000);
    });
  });

  describe('Retry-After', () => {
    it('waits as long as the peer asked when that is longer than the backoff, and only up to the cap', async () => {
      const script = new Script().then(retryAfter(30, 'HTTP 503'), retryAfter(86_400, 'HTTP 503'));
      let handle!: JobHandle;
      const r = await rig((rt) => {
        handle = rt.register(job('asked-to-wait', script));
      });
      await r.advanceAndTick(handle, 10_000);
      expect(r.dueIn(handle)).toBe(30_000);
      expect(handle.status().lastResult).toEqual({ kind: 'retry-after', cause: 'HTTP 503', secs: 30 });
      await r.advanceAndTick(handle, 29_999);
      expect(script.runs).toBe(1);
      await r.advanceAndTick(handle, 1);
      expect(script.runs).toBe(2);
      expect(r.dueIn(handle)).toBe(RETRY_AFTER_CAP_MS);
    });
  });

  describe('boot gate', () => {
    it('holds a job that waits for boot recovery until the gate opens, with no timer and no run; others start with the application', async () => {
      const gated = new Script();
      const free = new Script();
      let g!: JobHandle;
      let f!: JobHandle;
      const r = await rig((rt) => {
        g = rt.register(job('gated', gated, { afterBoot: true }));
        f = rt.register(job('free', free));
      });
      expect(g.status()).toMatchObject({ state: 'waiting', nextDueAt: null });
      expect(f.status().state).toBe('scheduled');
      expect(r.registry.getTimeouts()).toEqual(['free']);
      r.clock.advance(60_000);
      g.tick();
      g.trigger();
      expect(gated.runs).toBe(0);

      r.gate.open({ reachedControlPlane: true });
      await r.gate.whenOpen();
      expect(g.status()).toMatchObject({ state: 'scheduled', nextDueAt: new Date(r.clock.now().getTime() + 10_000).toISOString() });
      expect(r.registry.getTimeouts().sort()).toEqual(['free', 'gated']);
    });

    it('never starts a gated job when the application stops before the gate opens', async () => {
      const gated = new Script();
      let g!: JobHandle;
      const r = await rig((rt) => {
        g = rt.register(job('never', gated, { afterBoot: true }));
      });
      await r.module.close();
      open.splice(open.indexOf(r.module), 1);
      r.gate.open({ reachedControlPlane: true });
      await r.gate.whenOpen();
      g.trigger();
      expect(gated.runs).toBe(0);
      expect(g.status().state).toBe('stopped');
      expect(r.registry.getTimeouts()).toEqual([]);
    });

    it('counts `firstResult` as the first run: a failed one starts the job on its backoff', async () => {
      let h!: JobHandle;
      const r = await rig((rt) => {
        h = rt.register(job('seeded', new Script(), { afterBoot: true, firstResult: () => retryAfter(20, 'HTTP 503 at boot') }));
      });
      r.gate.open({ reachedControlPlane: false });
      await r.gate.whenOpen();
      expect(h.status()).toMatchObject({
        consecutiveFailures: 1,
        failingSince: r.clock.now().toISOString(),
        lastResult: { kind: 'retry-after', secs: 20, cause: 'HTTP 503 at boot' },
      });
      expect(r.dueIn(h)).toBe(20_000);
    });
  });

  describe('enable and disable', () => {
    it('arms a disabled job only once enabled, one interval away, and a disable during a run leaves nothing due after it', async () => {
      const script = new Script();
      let h!: JobHandle;
      const r = await rig((rt) => {
        h = rt.register(job('probe', script, { enabled: false }));
      });
      expect(h.status()).toMatchObject({ state: 'disabled', nextDueAt: null });
      expect(r.registry.getTimeouts()).toEqual([]);
      r.clock.advance(60_000);
      h.tick();
      h.trigger();
      expect(script.runs).toBe(0);

      h.enable();
      expect(r.dueIn(h)).toBe(10_000);
      expect(r.registry.getTimeouts()).toEqual(['probe']);
      script.during = () => h.disable();
      await r.advanceAndTick(h, 10_000);
      expect(script.runs).toBe(1);
      expect(h.status()).toMatchObject({ state: 'disabled', nextDueAt: null });
      expect(r.registry.getTimeouts()).toEqual([]);
    });
  });

  describe('typed status', () => {
    it('says when each run started and ended, how it went, when the next is due, and the failures in a row', async () => {
      const script = new Script().then(ok(), failed('ECONNREFUSED'));
      let h!: JobHandle;
      const r = await rig((rt) => {
        h = rt.register(job('reported', script));
      });
      expect(h.status()).toEqual({
        name: 'reported',
        state: 'scheduled',
        lastStartAt: null,
        lastEndAt: null,
        lastResult: null,
        nextDueAt: '2026-11-28T12:00:10.000Z',
        consecutiveFailures: 0,
        failingSince: null,
        skippedTicks: 0,
      });
      const release = script.hold();
      r.clock.advance(10_000);
      h.tick();
      r.clock.advance(300);
      expect(h.status()).toMatchObject({ state: 'running', lastStartAt: '2026-11-28T12:00:10.000Z', lastEndAt: null });
      expect(h.progress().inFlightSinceMono).toBe(h.progress().lastStartMono);
      release();
      await h.settled();
      await r.advanceAndTick(h, 9_700);
      expect(h.status()).toEqual({
        name: 'reported',
        state: 'scheduled',
        lastStartAt: '2026-11-28T12:00:20.000Z',
        lastEndAt: '2026-11-28T12:00:20.000Z',
        lastResult: { kind: 'failed', cause: 'ECONNREFUSED' },
        nextDueAt: '2026-11-28T12:00:21.000Z',
        consecutiveFailures: 1,
        failingSince: '2026-11-28T12:00:20.000Z',
        skippedTicks: 0,
      });
      expect(h.progress()).toMatchObject({ inFlightSinceMono: null, lastOkMono: 1_010_300 });
      expect(r.runtime.status().map((s) => s.name)).toEqual(['reported']);
    });
  });

  describe('shutdown', () => {
    it('cuts a run in flight at once when the job says abort, and leaves no timer behind', async () => {
      const script = new Script();
      script.hold();
      let h!: JobHandle;
      const r = await rig((rt) => {
        h = rt.register(job('long-poll', script, { schedule: { kind: 'loop' }, onShutdown: { kind: 'abort' } }));
        rt.register(job('idle', new Script()));
      });
      expect(h.status().state).toBe('running');
      await r.module.close();
      open.splice(open.indexOf(r.module), 1);
      expect(script.contexts[0].signal.aborted).toBe(true);
      expect(h.status()).toMatchObject({ state: 'stopped', nextDueAt: null });
      // A run cut by shutdown is no failure.
      expect(h.status().consecutiveFailures).toBe(0);
      expect(script.settled).toEqual([]);
      expect(r.registry.getTimeouts()).toEqual([]);
      expect(r.registry.getIntervals()).toEqual([]);
      r.clock.advance(600_000);
      h.tick();
      h.trigger();
      await h.runNow();
      expect(script.runs).toBe(1);
    });

    it('lets a run finish within its grace, uncut, and shutdown waits for it', async () => {
      const script = new Script();
      let h!: JobHandle;
      const r = await rig((rt) => {
        h = rt.register(job('beat', script, { onShutdown: { kind: 'finish', graceMs: 10_000 } }));
      });
      const release = script.hold();
      r.clock.advance(10_000);
      h.tick();
      let closed = false;
      const closing = r.module.close().then(() => {
        closed = true;
      });
      open.splice(open.indexOf(r.module), 1);
      await new Promise((resolve) => setImmediate(resolve));
      expect(closed).toBe(false);
      release();
      await closing;
      expect(script.contexts[0].signal.aborted).toBe(false);
      expect(h.status()).toMatchObject({ state: 'stopped', lastResult: { kind: 'ok' }, nextDueAt: null });
    });

    it('cuts a run that outlives its grace, with a warning', async () => {
      const script = new Script();
      let h!: JobHandle;
      const r = await rig((rt) => {
        h = rt.register(job('stuck', script, { onShutdown: { kind: 'finish', graceMs: 20 } }));
      });
      script.hold();
      r.clock.advance(10_000);
      h.tick();
      await r.module.close();
      open.splice(open.indexOf(r.module), 1);
      expect(script.contexts[0].signal.aborted).toBe(true);
      expect(r.logs.messages('warn', 'stuck')).toEqual(['stuck: the run in flight did not finish within 0.02 s of shutdown; cutting it']);
    });
  });

  it('refuses a second job of the same name', async () => {
    await rig((rt) => {
      rt.register(job('twice', new Script()));
      expect(() => rt.register(job('twice', new Script()))).toThrow('a job named "twice" is already registered');
    });
  });
});

describe('JobRunner.stop, on fake timers: a run that ignores being cut', () => {
  afterEach(() => {
    jest.useRealTimers();
  });

  it('gives the grace, cuts the run, and goes on after the settle time without it, saying so', async () => {
    jest.useFakeTimers();
    const lines: string[] = [];
    const logger = {
      debug: () => undefined,
      warn: (m: string) => lines.push(`warn ${m}`),
      error: (m: string) => lines.push(`error ${m}`),
    } as unknown as Logger;
    let signal: AbortSignal | null = null;
    const runner = new JobRunner(
      {
        name: 'deaf',
        afterBoot: false,
        schedule: { kind: 'loop' },
        backoff: STEPS,
        onShutdown: { kind: 'finish', graceMs: 10_000 },
        run: (ctx) => {
          signal = ctx.signal;
          return new Promise<JobResult>(() => undefined);
        },
      },
      { clock: new FakeClock(), random: MIDDLE, logger, changed: () => undefined },
    );
    runner.start();
    runner.tick();
    let stopped = false;
    const stopping = runner.stop().then(() => {
      stopped = true;
    });
    await jest.advanceTimersByTimeAsync(9_999);
    expect(signal!.aborted).toBe(false);
    await jest.advanceTimersByTimeAsync(1);
    expect(signal!.aborted).toBe(true);
    expect(stopped).toBe(false);
    await jest.advanceTimersByTimeAsync(ABORT_SETTLE_MS);
    await stopping;
    expect(lines).toEqual([
      'warn deaf: the run in flight did not finish within 10 s of shutdown; cutting it',
      'error deaf: the run in flight ignored being cut for 2 s; shutdown goes on without it',
    ]);
  });
});
