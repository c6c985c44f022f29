import type { Logger } from '@nestjs/common';
import type { Clock } from '../clock/clock';
import { jitter, type RandomSource } from '../clock/random';
import { retryDelayMs } from './backoff';
import {
  failed,
  type JobContext,
  type JobDefinition,
  type JobHandle,
  type JobProgress,
  type JobResult,
  type JobResultStatus,
  type JobState,
  type JobStatus,
} from './job.types';
import { ABORT_SETTLE_MS, DEFAULT_SHUTDOWN_GRACE_MS } from './jobs.constants';

export interface RunnerDeps {
  clock: Clock;
  random: RandomSource;
  logger: Logger;
  /** Called whenever the next due time or the in-flight state changed: the runtime re-arms its timer. */
  changed(runner: JobRunner): void;
}

/**
 * One job's due times, single flight, backoff and status. It owns no timer:
 * something outside (the runtime's armed timeout, and for the heartbeat also
 * its decorated tick) asks it, through `tick()`, whether a run is due, so
 * tests drive it with a fake clock alone. All times are the injected
 * clock's; due times are monotonic.
 */
export class JobRunner implements JobHandle {
  readonly name: string;
  private started = false;
  private stopped = false;
  private enabled: boolean;
  private startedMono: number | null = null;
  private nextDueMono: number | null = null;
  /** The next slot on an `every` job's grid, drawn when a run starts. */
  private slotAfterStart: number | null = null;
  private flight: Promise<void> | null = null;
  private controller: AbortController | null = null;
  private rerun = false;
  private skipCounted = false;
  private skipped = 0;
  private consecutiveFailures = 0;
  private failingSince: Date | null = null;
  private lastStartAt: Date | null = null;
  private lastStartMono: number | null = null;
  private lastEndAt: Date | null = null;
  private lastEndMono: number | null = null;
  private lastOkMono: number | null = null;
  private lastResult: JobResultStatus | null = null;

  constructor(
    readonly definition: JobDefinition,
    private readonly deps: RunnerDeps,
  ) {
    this.name = definition.name;
    this.enabled = definition.enabled ?? true;
  }

  /** Starts the schedule; `seed` counts as the first run (the heartbeat's boot handshake). */
  start(seed: JobResult | null = null): void {
    if (this.started || this.stopped) return;
    this.started = true;
    const now = this.deps.clock.monotonicMs();
    this.startedMono = now;
    if (seed === null || seed.kind === 'ok') {
      if (seed) this.recordOk(now);
      if (this.enabled) this.nextDueMono = now + this.firstDelayMs();
    } else {
      this.recordFailure(seed);
      if (this.enabled) this.nextDueMono = now + this.failureDelayMs(seed);
    }
    this.definition.onStarted?.(this.nextDueMono === null ? null : this.wallOf(this.nextDueMono));
    // Due at once (a loop, a first run without delay): it starts now, not a timer turn later.
    if (this.nextDueMono !== null && this.nextDueMono <= now && !this.flight) this.launch(now);
    else this.deps.changed(this);
  }

  /** `earlyMs`: how far before its due time a run still counts as due (a timer's slack; none for a tick). */
  tick(earlyMs = 0): void {
    if (!this.active()) return;
    const now = this.deps.clock.monotonicMs();
    if (this.nextDueMono === null || now + earlyMs < this.nextDueMono) return;
    if (this.flight) {
      this.countSkip();
      return;
    }
    this.launch(now);
  }

  trigger(): void {
    if (!this.active()) return;
    if (this.flight) {
      // One follow-up run at most, not a queue: it sees whatever the triggers were about.
      this.rerun = true;
      return;
    }
    const now = this.deps.clock.monotonicMs();
    if (this.consecutiveFailures > 0 && this.nextDueMono !== null && now < this.nextDueMono) return;
    this.launch(now);
  }

  runNow(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (!this.flight) this.launch(this.deps.clock.monotonicMs());
    return this.flight ?? Promise.resolve();
  }

  enable(): void {
    if (this.enabled || this.stopped) return;
    this.enabled = true;
    if (this.started && !this.flight) this.nextDueMono = this.deps.clock.monotonicMs() + this.firstDelayMs();
    this.deps.changed(this);
  }

  /** A run in flight goes on; nothing new starts until enabled again. */
  disable(): void {
    if (!this.enabled) return;
    this.enabled = false;
    this.nextDueMono = null;
    this.deps.changed(this);
  }

  async settled(): Promise<void> {
    while (this.flight) await this.flight;
  }

  /** Whether the runtime should keep a timer armed for this job, and for when (monotonic). */
  armedFor(): number | null {
    return this.active() && !this.flight ? this.nextDueMono : null;
  }

  status(): JobStatus {
    return {
      name: this.name,
      state: this.state(),
      lastStartAt: this.lastStartAt?.toISOString() ?? null,
      lastEndAt: this.lastEndAt?.toISOString() ?? null,
      lastResult: this.lastResult,
      nextDueAt: this.nextDueMono === null || this.stopped ? null : this.wallOf(this.nextDueMono),
      consecutiveFailures: this.consecutiveFailures,
      failingSince: this.failingSince?.toISOString() ?? null,
      skippedTicks: this.skipped,
    };
  }

  progress(): JobProgress {
    return {
      startedMono: this.startedMono,
      lastStartMono: this.lastStartMono,
      lastEndMono: this.lastEndMono,
      lastOkMono: this.lastOkMono,
      nextDueMono: this.stopped ? null : this.nextDueMono,
      inFlightSinceMono: this.flight ? this.lastStartMono : null,
    };
  }

  /**
   * No new run from here on. A run in flight is cut at once, or given its
   * grace first (`onShutdown`); the waits are real time, as they bound how
   * long the process takes to stop.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.nextDueMono = null;
    this.rerun = false;
    this.deps.changed(this);
    const flight = this.flight;
    const controller = this.controller;
    if (!flight || !controller) return;
    const policy = this.definition.onShutdown ?? { kind: 'finish', graceMs: DEFAULT_SHUTDOWN_GRACE_MS };
    if (policy.kind === 'finish') {
      if (await settlesWithin(flight, policy.graceMs)) return;
      this.deps.logger.warn(`${this.name}: the run in flight did not finish within ${policy.graceMs / 1000} s of shutdown; cutting it`);
    }
    controller.abort();
    if (!(await settlesWithin(flight, ABORT_SETTLE_MS))) {
      this.deps.logger.error(
        `${this.name}: the run in flight ignored being cut for ${ABORT_SETTLE_MS / 1000} s; shutdown goes on without it`,
      );
    }
  }

  /** Once per run that a due time passed by. */
  private countSkip(): void {
    if (this.skipCounted) return;
    this.skipCounted = true;
    this.skipped += 1;
    this.deps.logger.debug(`${this.name} due while its previous run is still in flight; that slot is skipped`);
  }

  private active(): boolean {
    return this.started && !this.stopped && this.enabled;
  }

  private state(): JobState {
    if (this.stopped) return 'stopped';
    if (this.flight) return 'running';
    if (!this.started) return 'waiting';
    return this.enabled ? 'scheduled' : 'disabled';
  }

  private launch(now: number): void {
    const controller = new AbortController();
    this.controller = controller;
    this.skipCounted = false;
    this.lastStartMono = now;
    this.lastStartAt = this.deps.clock.now();
    const { schedule } = this.definition;
    // While the run is in flight, "next due" is the slot after it: a tick past that slot is the one skipped.
    this.slotAfterStart = schedule.kind === 'every' ? now + this.cadenceMs() : null;
    this.nextDueMono = this.slotAfterStart;
    this.flight = this.execute(controller, now).finally(() => {
      this.flight = null;
      this.controller = null;
      if (this.rerun && this.active()) {
        this.rerun = false;
        this.trigger();
      }
      this.deps.changed(this);
    });
    this.deps.changed(this);
  }

  private async execute(controller: AbortController, startMono: number): Promise<void> {
    let result: JobResult;
    try {
      result = await runOf(this.definition, { signal: controller.signal, progressed: () => this.progressed() });
    } catch (err) {
      // A job handles its own errors; one that escapes is a failed run, never the end of the job.
      result = failed(`unexpected error: ${err instanceof Error ? err.message : String(err)}`);
    }
    const endMono = this.deps.clock.monotonicMs();
    this.lastEndMono = endMono;
    this.lastEndAt = this.deps.clock.now();
    // A run that outlived its next slot skipped it, whether or not a tick came by meanwhile to notice.
    if (this.slotAfterStart !== null && this.slotAfterStart <= endMono) this.countSkip();
    // A run cut by shutdown says nothing about the job's health.
    if (controller.signal.aborted) return;
    const failuresBefore = this.consecutiveFailures;
    let next: number;
    if (result.kind === 'ok') {
      this.recordOk(endMono);
      next = this.nextAfterSuccess(endMono);
    } else {
      this.recordFailure(result);
      next = endMono + this.failureDelayMs(result);
    }
    if (this.stopped || !this.enabled) {
      this.nextDueMono = null;
      return;
    }
    this.nextDueMono = next;
    this.definition.onSettled?.({
      result,
      consecutiveFailures: this.consecutiveFailures,
      failuresBefore,
      delayMs: next - endMono,
      nextDueAt: this.wallOf(next),
      startedMono: startMono,
      endedMono: endMono,
    });
  }

  private recordOk(atMono: number): void {
    this.consecutiveFailures = 0;
    this.failingSince = null;
    this.lastOkMono = atMono;
    this.lastResult = { kind: 'ok' };
  }

  private recordFailure(result: Exclude<JobResult, { kind: 'ok' }>): void {
    this.consecutiveFailures += 1;
    this.failingSince ??= this.deps.clock.now();
    this.lastResult =
      result.kind === 'failed' ? { kind: 'failed', cause: result.cause } : { kind: 'retry-after', cause: result.cause, secs: result.secs };
  }

  private progressed(): void {
    this.consecutiveFailures = 0;
    this.failingSince = null;
  }

  private failureDelayMs(result: Exclude<JobResult, { kind: 'ok' }>): number {
    const policy = result.backoff ?? this.definition.backoff;
    return retryDelayMs(policy, this.consecutiveFailures, result.kind === 'retry-after' ? result.secs : null, this.deps.random);
  }

  private nextAfterSuccess(endMono: number): number {
    const { schedule } = this.definition;
    switch (schedule.kind) {
      case 'loop':
        return endMono;
      case 'every': {
        let next = this.slotAfterStart ?? endMono + this.cadenceMs();
        while (next <= endMono) next += this.cadenceMs();
        return next;
      }
      default: {
        const never: never = schedule;
        return never;
      }
    }
  }

  private firstDelayMs(): number {
    const { schedule } = this.definition;
    switch (schedule.kind) {
      case 'loop':
        return 0;
      case 'every':
        return schedule.firstAfterMs ?? this.cadenceMs();
      default: {
        const never: never = schedule;
        return never;
      }
    }
  }

  private cadenceMs(): number {
    const { schedule } = this.definition;
    if (schedule.kind !== 'every') return 0;
    return schedule.jitter ? jitter(schedule.intervalMs, schedule.jitter, this.deps.random) : schedule.intervalMs;
  }

  private wallOf(mono: number): string {
    return new Date(this.deps.clock.now().getTime() + (mono - this.deps.clock.monotonicMs())).toISOString();
  }
}

/**
 * A run as a promise. A job may answer at once; one that throws before it
 * answers fails like one whose promise rejects, a turn later, so no run ends
 * inside launch() (before it counts as in flight).
 */
function runOf(definition: JobDefinition, context: JobContext): Promise<JobResult> {
  try {
    return Promise.resolve(definition.run(context));
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

/** Whether `promise` settles within `ms` of real time; the timer never outlives the answer. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      timedOut,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
