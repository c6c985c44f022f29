import { type BeforeApplicationShutdown, Inject, Injectable, Logger, type OnApplicationBootstrap } from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { type Clock, CLOCK } from '../clock/clock';
import { RANDOM, type RandomSource } from '../clock/random';
import { BootGate } from '../lifecycle/boot-gate';
import { JobRunner } from './job-runner';
import type { JobDefinition, JobHandle, JobStatus } from './job.types';
import { MAX_TIMER_MS, TIMER_SLACK_MS } from './jobs.constants';

/**
 * Every periodic worker of the agent runs here: the runtime owns due times,
 * jitter, single flight, the one backoff policy, abort on shutdown and a
 * typed status per job (see JobRunner). It follows @nestjs/schedule's split
 * and sits on it: jobs are declared by their owners (the explorer's part),
 * this service mounts and stops them (the orchestrator's), and their timers
 * live in the SchedulerRegistry under the job's name (the registry's), where
 * the orchestrator clears whatever is left at shutdown.
 *
 * Each job has one timeout, armed for its next due time and re-armed after
 * each run, so an idle agent wakes only when some job is actually due: a
 * 10 s sweep costs 0.1 wake-ups a second, an hourly compaction nothing
 * measurable, a disabled job (the write probe while the disk is fine)
 * nothing at all. A decorator would fix its period when the class is
 * defined (no configured interval, no watchdog period from systemd) and wake
 * the process at that rate whether or not anything is due.
 *
 * The heartbeat is also an `@Interval`, as the product brief asks: its
 * decorated tick asks the same job whether a beat is due. Its timeout puts
 * each beat on its jittered due time at any interval, so the tick can be
 * coarse (see HEARTBEAT_TICK_MS) rather than set by the shortest interval.
 */
@Injectable()
export class JobRuntime implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(JobRuntime.name);
  private readonly runners = new Map<string, JobRunner>();
  private bootstrapped = false;
  private stopping = false;

  constructor(
    private readonly registry: SchedulerRegistry,
    private readonly bootGate: BootGate,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(RANDOM) private readonly random: RandomSource,
  ) {}

  /** Declares a job; it starts with the application (or after boot recovery, if it says so). */
  register(definition: JobDefinition): JobHandle {
    if (this.runners.has(definition.name)) throw new Error(`a job named "${definition.name}" is already registered`);
    const runner = new JobRunner(definition, {
      clock: this.clock,
      random: this.random,
      logger: new Logger(definition.name),
      changed: (r) => this.arm(r),
    });
    this.runners.set(definition.name, runner);
    if (this.bootstrapped) this.begin(runner);
    return runner;
  }

  /**
   * Stops a job and forgets it: a run in flight is cut or let finish as the
   * job's shutdown policy says, and the name is free for a new job. For jobs
   * that live shorter than the agent (the probes of one rollout).
   */
  async unregister(name: string): Promise<void> {
    const runner = this.runners.get(name);
    if (runner === undefined) return;
    this.runners.delete(name);
    this.disarm(name);
    // From here `arm` ignores it: a new job may already hold the name (and its timer).
    await runner.stop();
  }

  onApplicationBootstrap(): void {
    this.bootstrapped = true;
    for (const runner of this.runners.values()) this.begin(runner);
  }

  status(): JobStatus[] {
    return [...this.runners.values()].map((r) => r.status());
  }

  /** Every job stops: nothing new starts, runs in flight are cut or let finish, as each job says. */
  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.runners.values()].map((r) => r.stop()));
    for (const runner of this.runners.values()) this.disarm(runner.name);
  }

  /**
   * Starts a job now, or as soon as the boot gate opens. No await between
   * the gate and the start: a caller that awaits the handshake resumes after
   * the jobs it gates have started.
   */
  private begin(runner: JobRunner): void {
    const { definition } = runner;
    const start = (): void => {
      if (this.stopping) return;
      try {
        runner.start(definition.firstResult ? definition.firstResult() : null);
      } catch (err) {
        this.logger.error(`job ${definition.name} not started: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    if (!definition.afterBoot || this.bootGate.isOpen()) {
      start();
      return;
    }
    this.bootGate.whenOpen().then(start, (err: unknown) => {
      this.logger.error(`job ${definition.name} not started: ${err instanceof Error ? err.message : String(err)}`);
    });
  }

  /** Keeps exactly one timeout per timer-driven job, for its next due time; none while it runs or is off. */
  private arm(runner: JobRunner): void {
    if (this.runners.get(runner.name) !== runner) return;
    this.disarm(runner.name);
    const due = runner.armedFor();
    if (due === null || this.stopping) return;
    const delay = Math.min(Math.max(0, Math.ceil(due - this.clock.monotonicMs())), MAX_TIMER_MS);
    const timer = setTimeout(() => {
      this.disarm(runner.name);
      // The timer only prompts: the job runs if the clock says it is due, else the timer is re-armed.
      runner.tick(TIMER_SLACK_MS);
      this.arm(runner);
    }, delay);
    // What keeps the daemon alive is its listener and its work, never a job waiting for its turn.
    timer.unref();
    this.registry.addTimeout(runner.name, timer);
  }

  private disarm(name: string): void {
    if (this.registry.doesExist('timeout', name)) this.registry.deleteTimeout(name);
  }
}
