import { type BeforeApplicationShutdown, Inject, Injectable, Logger, type OnApplicationBootstrap } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { RANDOM, type RandomSource } from '../clock/random';
import type { ActivationBackendName } from '../config/settings';
import { BootGate } from '../lifecycle/boot-gate';
import { MetricsService } from '../metrics/metrics.service';
import { CurrentSystemReader } from '../recovery/current-system.reader';
import { type EffectOf, type FireRollbackPort, type FireSwitchPort, REDUCER_INPUT, type ReducerInputPort } from '../reducer/reducer.ports';
import { describeInput, inputFields } from '../reducer/reducer.service';
import type { ReducerInput, RolloutEntry } from '../reducer/reducer.types';
import { submitUntilDurable } from '../reducer/submit-until-durable';
import { RESUME_TRUST, type ResumeTrust } from '../trust/trust.service';
import {
  ACTIVATION_BACKEND,
  EX_TEMPFAIL,
  NO_EXIT_CODE,
  PROGRESS_LOG_INTERVAL_MS,
  SIGNATURE_FAILURE_EXIT_CODE,
} from './activation.constants';
import type {
  ActivationBackend,
  ActivationKind,
  ActivationOutcome,
  ActivationPlan,
  ActivationProgress,
  ActivationStatus,
  ProgressSink,
  SwitchMethod,
} from './activation.types';
import { describeRealise } from './backends/realise-progress';

type ActivationEffect = EffectOf<'FireSwitch'> | EffectOf<'FireRollback'>;

interface Job {
  readonly kind: ActivationKind;
  readonly rolloutId: string;
  readonly closure: string;
}

/** The log fields of a job: the rollout, the closure it switches to, and whether it is the switch or the rollback. */
function jobFields(job: Job): { rolloutId: string; closure: string; activation: ActivationKind } {
  return { rolloutId: job.rolloutId, closure: job.closure, activation: job.kind };
}

/**
 * The reducer's FireSwitch and FireRollback ports (ActivationModule binds
 * them). `handle` only queues: the reducer calls it from its one consumer,
 * which must not wait for a switch. Activations run one at a time, in the
 * order they were fired, and report back to the reducer as inputs.
 */
@Injectable()
export class ActivationService implements FireSwitchPort, FireRollbackPort, OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(ActivationService.name);
  /** The last queued job's completion; each job chains on the one before. Never rejects. */
  private tail: Promise<void> = Promise.resolve();
  private queued = 0;
  private running: ActivationStatus['running'] = null;
  private lastResult: ActivationStatus['lastResult'] = null;
  private closed = false;
  /** Rollouts this process has started an activation for: none of them was cut off by a restart. */
  private readonly startedHere = new Set<string>();
  /** Aborted when shutdown begins: ends the wait of an outcome the disk would not take. */
  private readonly stopping = new AbortController();

  constructor(
    @Inject(ACTIVATION_BACKEND) private readonly backend: ActivationBackend,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(REDUCER_INPUT) private readonly reducer: ReducerInputPort,
    private readonly metrics: MetricsService,
    private readonly currentSystem: CurrentSystemReader,
    private readonly bootGate: BootGate,
    @Inject(RANDOM) private readonly random: RandomSource,
    @Inject(RESUME_TRUST) private readonly trust: ResumeTrust,
  ) {}

  onApplicationBootstrap(): void {
    // After the boot handshake: its snapshots may already have settled a rollout.
    this.bootGate
      .whenOpen()
      .then(
        () => this.resumeInterrupted(),
        (err: unknown) => this.logger.error(`interrupted activations not resumed: ${String(err)}`),
      )
      .catch((err: unknown) => this.logger.error(`resuming interrupted activations failed: ${(err as Error).message}`));
  }

  handle(effect: ActivationEffect): void {
    let job: Job;
    switch (effect.type) {
      case 'FireSwitch':
        job = { kind: 'switch', rolloutId: effect.rolloutId, closure: effect.targetClosure };
        break;
      case 'FireRollback':
        job = { kind: 'rollback', rolloutId: effect.rolloutId, closure: effect.toClosure };
        break;
      default: {
        const never: never = effect;
        return never;
      }
    }
    if (this.closed) {
      this.logger.warn(
        `${job.kind} of ${job.rolloutId} to ${job.closure} not started: the agent is shutting down; the rollout stays as it is until the control plane re-dispatches`,
        jobFields(job),
      );
      return;
    }
    this.queued += 1;
    this.startedHere.add(job.rolloutId);
    if (this.running)
      this.logger.log(`${job.kind} of ${job.rolloutId} queued behind the running ${this.running.kind} of ${this.running.rolloutId}`, {
        ...jobFields(job),
        behindRolloutId: this.running.rolloutId,
      });
    this.tail = this.tail.then(() => this.runJob(job));
  }

  status(): ActivationStatus {
    return {
      backend: this.backend.name,
      running: this.running && { ...this.running, realise: this.running.realise && { ...this.running.realise } },
      queued: this.queued,
      lastResult: this.lastResult && { ...this.lastResult },
    };
  }

  /** Resolves when no activation runs or waits, including ones queued while waiting. */
  async idle(): Promise<void> {
    for (let seen = this.tail; ; seen = this.tail) {
      await seen;
      if (seen === this.tail) return;
    }
  }

  /**
   * Waits for the running and queued activations: one in our process tree
   * would die with us. A detached switch continues without us, so its wait is
   * bounded; its outcome then reaches the CP through the next heartbeat's
   * current closure instead of an event.
   */
  async beforeApplicationShutdown(): Promise<void> {
    this.stopping.abort();
    const bound = this.backend.shutdownWaitMs;
    if (this.running || this.queued > 0) {
      this.logger.log(
        `waiting for ${this.running ? `the ${this.running.kind} of ${this.running.rolloutId}` : 'queued activations'} before shutting down`,
      );
    }
    if (bound === null) {
      await this.idle();
    } else {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        this.idle().then(() => false),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(true), bound); // not a job: the bound of this one shutdown wait
        }),
      ]);
      clearTimeout(timer);
      if (timedOut && this.running) {
        this.logger.warn(
          `the ${this.running.kind} of ${this.running.rolloutId} to ${this.running.closure} is still running after ${bound} ms; it continues detached, and its outcome is not reported as an event`,
          { rolloutId: this.running.rolloutId, closure: this.running.closure, activation: this.running.kind },
        );
      }
    }
    this.closed = true;
  }

  private async runJob(job: Job): Promise<void> {
    this.queued -= 1;
    if (this.closed) {
      this.logger.warn(`${job.kind} of ${job.rolloutId} to ${job.closure} not started: the agent is shutting down`, jobFields(job));
      return;
    }
    this.running = {
      rolloutId: job.rolloutId,
      closure: job.closure,
      kind: job.kind,
      startedAt: this.clock.now().toISOString(),
      phase: null,
      realise: null,
    };
    try {
      if (job.kind === 'rollback' && !(await this.rollbackStillWanted(job))) return;
      const plan = await this.planFor(job.closure);
      // Rollbacks have no "started" input: the rollout is Failed, not Activating.
      if (
        job.kind === 'switch' &&
        !(await this.submit({ type: 'ActivationStarted', rolloutId: job.rolloutId, switchMethod: plan.switchMethod }))
      ) {
        // The rollout moved on while the job waited (e.g. a CP snapshot), or its event is not durable: switching now would be unrecorded.
        this.logger.warn(
          `switch of ${job.rolloutId} to ${job.closure} not run: the rollout did not take ActivationStarted`,
          jobFields(job),
        );
        return;
      }
      this.logger.log(`${job.kind} of ${job.rolloutId} to ${job.closure} started (${this.backend.name}: ${plan.switchMethod})`, {
        ...jobFields(job),
        backend: this.backend.name,
        switchMethod: plan.switchMethod,
      });
      const outcome = await runPlan(plan, this.progressSink(job));
      this.record(job, outcome);
      await this.report(job, outcome);
    } finally {
      this.running = null;
    }
  }

  /**
   * Shows the running activation's phase in /status and logs it: a new phase
   * at once, progress within one (a download's "copying path" lines) at most
   * every PROGRESS_LOG_INTERVAL_MS, so a long realise is seen to move without
   * flooding the log.
   */
  private progressSink(job: Job): ProgressSink {
    const what = `${job.kind} of ${job.rolloutId} to ${job.closure}`;
    let lastLoggedMs: number | null = null;
    return (progress: ActivationProgress) => {
      const running = this.running;
      if (running === null || running.rolloutId !== job.rolloutId || running.closure !== job.closure) return;
      const newPhase = running.phase !== progress.phase;
      running.phase = progress.phase;
      running.realise = progress.realise && { ...progress.realise };
      const nowMs = this.clock.monotonicMs();
      if (newPhase) {
        lastLoggedMs = nowMs;
        this.logger.log(`${what}: ${progress.phase}: ${progress.note}`, { ...jobFields(job), phase: progress.phase });
        return;
      }
      if (progress.phase !== 'realising' || progress.realise === null) return;
      if (lastLoggedMs !== null && nowMs - lastLoggedMs < PROGRESS_LOG_INTERVAL_MS) return;
      lastLoggedMs = nowMs;
      this.logger.log(`${what}: realising: ${describeRealise(progress.realise)}`, { ...jobFields(job), phase: progress.phase });
    };
  }

  /**
   * A rollback undoes the failed rollout's switch: only from its target (or
   * from the old closure itself, where it is a no-op that checks the link).
   * A host running a third closure was moved on by someone else (a newer
   * rollout, an operator) while the rollback waited: putting it back would
   * undo their work. Reported as a failed rollback; the rollout stays Failed.
   * An unreadable link does not stop it: after a broken switch, going back
   * is the best the agent can do.
   */
  private async rollbackStillWanted(job: Job): Promise<boolean> {
    const target = this.reducer.current().rollouts[job.rolloutId]?.targetClosure;
    const current = await this.currentSystem.read();
    if (current === null || current === job.closure || current === target) return true;
    this.logger.error(
      `rollback of ${job.rolloutId} to ${job.closure} not run: the host runs ${current}, neither the rollout's target nor that closure, so someone moved it on; reported as a failed rollback (exit code ${NO_EXIT_CODE}), the rollout stays Failed`,
      { ...jobFields(job), currentClosure: current, exitCode: NO_EXIT_CODE },
    );
    await this.submit({ type: 'RollbackCompleted', rolloutId: job.rolloutId, revertedToClosure: job.closure, exitCode: NO_EXIT_CODE });
    return false;
  }

  private async planFor(closure: string): Promise<ActivationPlan> {
    try {
      return await this.backend.plan(closure);
    } catch (err) {
      // Backends promise not to throw; if one does, the rollout still gets an outcome.
      const stderrTail = `activation backend ${this.backend.name} failed to plan: ${(err as Error).message}`;
      return {
        switchMethod: defaultSwitchMethod(this.backend.name),
        run: () => Promise.resolve({ kind: 'failed', exitCode: null, stderrTail }),
      };
    }
  }

  private async report(job: Job, outcome: ActivationOutcome): Promise<void> {
    const what = `${job.kind} of ${job.rolloutId} to ${job.closure}`;
    if (job.kind === 'rollback') {
      let exitCode = rollbackExitCode(outcome);
      switch (outcome.kind) {
        case 'completed':
          // §11: a rollback is done when /run/current-system says so, whatever the backend reported.
          if (outcome.observedCurrentClosure !== job.closure) {
            exitCode = NO_EXIT_CODE;
            this.logger.error(
              `${what} ran, but ${this.currentSystem.path} points at ${outcome.observedCurrentClosure ?? 'nothing readable'}, not ${job.closure}; reported as failed (exit code ${exitCode})`,
              { ...jobFields(job), outcome: outcome.kind, currentClosure: outcome.observedCurrentClosure, exitCode },
            );
            break;
          }
          this.logger.log(`${what} completed; now running ${outcome.observedCurrentClosure}`, {
            ...jobFields(job),
            outcome: outcome.kind,
            currentClosure: outcome.observedCurrentClosure,
            exitCode,
          });
          break;
        case 'deferred':
          this.logger.warn(
            `${what} installed but takes effect at the next boot (${outcome.component} changed); reported with exit code ${exitCode}`,
            { ...jobFields(job), outcome: outcome.kind, component: outcome.component, exitCode },
          );
          break;
        case 'failed':
          this.logger.error(
            `${what} failed (exit code ${String(outcome.exitCode)}): ${outcome.stderrTail}; the host may still run the failed closure and needs an operator`,
            { ...jobFields(job), outcome: outcome.kind, exitCode: outcome.exitCode },
          );
          break;
        default: {
          const never: never = outcome;
          return never;
        }
      }
      await this.submit({ type: 'RollbackCompleted', rolloutId: job.rolloutId, revertedToClosure: job.closure, exitCode });
      return;
    }
    switch (outcome.kind) {
      case 'completed':
        this.logger.log(`${what} completed; now running ${outcome.observedCurrentClosure ?? 'an unreadable current system'}`, {
          ...jobFields(job),
          outcome: outcome.kind,
          currentClosure: outcome.observedCurrentClosure,
          exitCode: outcome.exitCode,
        });
        await this.submit({
          type: 'ActivationCompleted',
          rolloutId: job.rolloutId,
          observedCurrentClosure: outcome.observedCurrentClosure,
          exitCode: outcome.exitCode,
        });
        return;
      case 'deferred':
        this.logger.log(`${what} deferred: installed for the next boot (${outcome.component} changed)`, {
          ...jobFields(job),
          outcome: outcome.kind,
          component: outcome.component,
        });
        await this.submit({ type: 'ActivationDeferred', rolloutId: job.rolloutId, component: outcome.component });
        return;
      case 'failed':
        this.logger.warn(`${what} failed (exit code ${String(outcome.exitCode)}): ${outcome.stderrTail}`, {
          ...jobFields(job),
          outcome: outcome.kind,
          exitCode: outcome.exitCode,
        });
        await this.submit({
          type: 'ActivationFailed',
          rolloutId: job.rolloutId,
          exitCode: outcome.exitCode,
          stderrTail: outcome.stderrTail,
        });
        return;
      default: {
        const never: never = outcome;
        return never;
      }
    }
  }

  private record(job: Job, outcome: ActivationOutcome): void {
    this.lastResult = {
      rolloutId: job.rolloutId,
      kind: job.kind,
      outcome: outcome.kind,
      exitCode: outcomeExitCode(outcome),
      at: this.clock.now().toISOString(),
      detail: describeOutcome(outcome),
    };
    this.metrics.recordActivation(job.kind, outcome.kind);
  }

  /**
   * True when the reducer applied the input. While its events cannot be made
   * durable (a full disk) it is submitted again until they are, or until the
   * agent stops: an outcome dropped here would leave the rollout Activating.
   * A reducer that is shut down leaves the outcome in /status only; a
   * rejection (the rollout moved on) is the reducer's to warn of.
   */
  private async submit(input: ReducerInput): Promise<boolean> {
    let held = 0;
    try {
      const result = await submitUntilDurable(this.reducer, input, {
        signal: this.stopping.signal,
        random: this.random,
        onHeld: (err, failures, retryInMs) => {
          held = failures;
          if (failures === 1) {
            this.logger.error(
              `${describeInput(input)} held: ${err.message}; submitted again with backoff until the event log takes writes (next in ${(retryInMs / 1000).toFixed(1)} s)`,
              inputFields(input),
            );
          }
        },
      });
      if (result === null) {
        this.logger.warn(
          `stopping with ${describeInput(input)} never recorded (${held} attempt(s)); after a restart the agent reads the current system and settles the rollout from it`,
          { ...inputFields(input), attempts: held },
        );
        return false;
      }
      if (held > 0)
        this.logger.log(`${describeInput(input)} applied after ${held} failed attempt(s)`, { ...inputFields(input), attempts: held });
      return result.rejected === undefined;
    } catch (err) {
      this.logger.error(
        `${describeInput(input)} not submitted: ${(err as Error).message}; the control plane learns the outcome from the heartbeat's current closure`,
        inputFields(input),
      );
      return false;
    }
  }

  /**
   * A rollout still Activating after a restart had its activation cut off
   * (the switch restarted the agent, a crash, a stop mid-command): nothing
   * else would ever finish it. If the host already runs the target, the
   * activation completed; otherwise it runs again (activations are idempotent).
   */
  async resumeInterrupted(): Promise<void> {
    for (const entry of Object.values(this.reducer.current().rollouts)) {
      // Dispatched since start (before the boot handshake ended): its activation or rollback is already under way.
      if (this.startedHere.has(entry.rolloutId)) continue;
      if (entry.state === 'Failed') {
        await this.resumeRollback(entry);
        continue;
      }
      if (entry.state !== 'Activating' || entry.targetClosure === '') continue;
      const current = await this.currentSystem.read();
      if (current === entry.targetClosure) {
        this.logger.log(
          `${entry.rolloutId} was Activating when the agent stopped and the host runs its target: reporting the activation completed`,
          { rolloutId: entry.rolloutId, closure: entry.targetClosure, currentClosure: current },
        );
        await this.submit({ type: 'ActivationCompleted', rolloutId: entry.rolloutId, observedCurrentClosure: current, exitCode: 0 });
      } else {
        // PROTOCOL §12: the manifest verified at dispatch, read back from the cache, must still hold.
        const trusted = await this.trust.checkResume({ rolloutId: entry.rolloutId, targetClosure: entry.targetClosure });
        if (!trusted.ok) {
          await this.submit({
            type: 'ActivationFailed',
            rolloutId: entry.rolloutId,
            exitCode: SIGNATURE_FAILURE_EXIT_CODE,
            stderrTail: `not activated again after a restart: the rollout's signed manifest was refused (${trusted.reason}: ${trusted.detail})`,
          });
          continue;
        }
        this.logger.warn(
          `${entry.rolloutId} was Activating when the agent stopped, and the host runs ${current ?? 'an unreadable current system'}, not ${entry.targetClosure}: activating again`,
          { rolloutId: entry.rolloutId, closure: entry.targetClosure, currentClosure: current },
        );
        this.handle({ type: 'FireSwitch', rolloutId: entry.rolloutId, targetClosure: entry.targetClosure });
      }
    }
  }

  /**
   * A rollout Failed under rollback-and-halt whose rollback never reported
   * was cut off by a stop or a crash: nothing else would finish it. If the
   * host already runs the closure from before the dispatch, the rollback
   * completed; if it still runs the failed target, it runs again (a rollback
   * is an activation, idempotent); anything else is left alone.
   */
  private async resumeRollback(entry: RolloutEntry): Promise<void> {
    const to = entry.currentClosureAtDispatch;
    if (entry.policyApplied !== 'rollback-and-halt' || entry.rollback !== undefined || to === undefined) return;
    const current = await this.currentSystem.read();
    if (current === to) {
      this.logger.log(
        `${entry.rolloutId} was rolling back when the agent stopped and the host runs ${to}: reporting the rollback completed`,
        { rolloutId: entry.rolloutId, closure: to, currentClosure: current },
      );
      await this.submit({ type: 'RollbackCompleted', rolloutId: entry.rolloutId, revertedToClosure: to, exitCode: 0 });
      return;
    }
    // Only from the failed closure itself: a host that has moved on since (an operator, a later rollout) is not put back.
    if (current !== entry.targetClosure) {
      this.logger.warn(
        `${entry.rolloutId} failed under rollback-and-halt and its rollback never reported, but the host runs ${current ?? 'an unreadable current system'}, neither its target nor ${to}: not rolling back; it stays Failed`,
        { rolloutId: entry.rolloutId, closure: to, currentClosure: current },
      );
      return;
    }
    this.logger.warn(
      `${entry.rolloutId} was rolling back when the agent stopped, and the host still runs its target: rolling back to ${to} again`,
      { rolloutId: entry.rolloutId, closure: to, currentClosure: current },
    );
    this.handle({ type: 'FireRollback', rolloutId: entry.rolloutId, toClosure: to });
  }
}

async function runPlan(plan: ActivationPlan, onProgress: ProgressSink): Promise<ActivationOutcome> {
  try {
    return await plan.run(onProgress);
  } catch (err) {
    return { kind: 'failed', exitCode: null, stderrTail: `activation failed unexpectedly: ${(err as Error).message}` };
  }
}

function defaultSwitchMethod(backend: ActivationBackendName): SwitchMethod {
  switch (backend) {
    case 'symlink':
      return 'symlink';
    case 'command':
      return 'command';
    case 'nixos':
      return 'switch-to-configuration switch';
    default: {
      const never: never = backend;
      return never;
    }
  }
}

function outcomeExitCode(outcome: ActivationOutcome): number | null {
  switch (outcome.kind) {
    case 'completed':
      return outcome.exitCode;
    case 'failed':
      return outcome.exitCode;
    case 'deferred':
      return null;
    default: {
      const never: never = outcome;
      return never;
    }
  }
}

/**
 * RollbackComplete carries only an exit code. A deferred rollback is
 * installed but not running: EX_TEMPFAIL says "done, takes effect later",
 * the convention the command backend uses too.
 */
function rollbackExitCode(outcome: ActivationOutcome): number {
  switch (outcome.kind) {
    case 'completed':
      return outcome.exitCode;
    case 'deferred':
      return EX_TEMPFAIL;
    case 'failed':
      return outcome.exitCode === null || outcome.exitCode === 0 ? NO_EXIT_CODE : outcome.exitCode;
    default: {
      const never: never = outcome;
      return never;
    }
  }
}

function describeOutcome(outcome: ActivationOutcome): string {
  switch (outcome.kind) {
    case 'completed':
      return `now running ${outcome.observedCurrentClosure ?? '(current system unreadable)'}`;
    case 'deferred':
      return `takes effect at the next boot (${outcome.component} changed)`;
    case 'failed':
      return outcome.stderrTail;
    default: {
      const never: never = outcome;
      return never;
    }
  }
}
