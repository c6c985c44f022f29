import { Inject, Injectable, Logger } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { RANDOM, type RandomSource } from '../clock/random';
import { type CpFailure, describeFailure, failureFields } from '../comms/cp-failure';
import { ControlPlaneClient } from '../comms/control-plane.client';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import type { BackoffPolicy } from '../jobs/backoff';
import { pause } from '../jobs/wait';
import { JobRuntime } from '../jobs/job-runtime.service';
import { failed, type JobHandle, type JobResult, ok, retryAfter, type SettledRun } from '../jobs/job.types';
import type { DispatchOrder } from '../protocol/dispatch.wire';
import { CurrentSystemReader } from '../recovery/current-system.reader';
import { ReducerService } from '../reducer/reducer.service';
import { submitUntilDurable } from '../reducer/submit-until-durable';
import { DispatchVerifier } from './dispatch-verifier';

/** PROTOCOL §8: the CP holds a poll up to this long. */
export const DISPATCH_WAIT_SECS = 60;
export const DISPATCH_POLL_NAME = 'dispatch-poll';
/** An empty answer sooner than this after the poll began is waited out to this: at most one poll a second. */
const MIN_EMPTY_POLL_MS = 1_000;
const DISPATCH_BACKOFF: BackoffPolicy = { firstMs: 1_000, capMs: 60_000 };
/**
 * After a refused dispatch the next poll waits: the CP offers an order it
 * never got an ack for again, and a refusal must not become a request loop
 * against the poll and the manifest routes. Doubles per refusal in a row.
 */
const REFUSAL_PAUSE: BackoffPolicy = { firstMs: 5_000, capMs: 300_000 };

/** `/status` `dispatch`: the long-poll's state. */
export interface DispatchStatus {
  polling: boolean;
  /** When the last poll ended, and how: an order, no order within the CP's hold, or a failure. */
  lastPollAt: string | null;
  lastOutcome: 'order' | 'no-order' | 'failed' | null;
  consecutiveFailures: number;
  /** First failed poll of the current streak; null while polls work. */
  failingSince: string | null;
  /** The last failure, kept after polls work again. */
  lastError: string | null;
  lastErrorAt: string | null;
  /** While a failed poll's backoff runs: when the next poll starts. Null while a poll is open, or none failed. */
  nextPollAt: string | null;
  /** The last order for this host, and what became of it. */
  lastOrder: LastOrder | null;
  /**
   * An order taken from the CP whose events cannot be made durable yet (a
   * full disk): kept in memory and submitted again until it is applied; no
   * new poll meanwhile. Null when none is held.
   */
  heldOrder: HeldOrder | null;
}

export interface LastOrder {
  rolloutId: string;
  targetClosure: string;
  receivedAt: string;
  /**
   * `submitting` until the reducer has it (a held order stays so: see
   * heldOrder); `accepted`: the rollout took it (DispatchAck); `rejected`:
   * the reducer refused it (the rollout is past it); `refused`: its signed
   * manifest failed a check (PROTOCOL §12; `trust.lastFailure` says which),
   * so it was neither acknowledged nor acted on; `not-applied`: it failed
   * otherwise, or the agent stopped before it could be applied.
   */
  outcome: 'submitting' | 'accepted' | 'rejected' | 'refused' | 'not-applied';
  /** Why it was rejected, refused or not applied; null otherwise. */
  detail: string | null;
}

export interface HeldOrder {
  rolloutId: string;
  targetClosure: string;
  receivedAt: string;
  /** Failed submissions so far. */
  attempts: number;
  lastError: string;
  nextTryAt: string;
}

/**
 * Long-polls the CP for dispatches and turns each valid one into the
 * reducer's `Activate` input. A job of the runtime: after the boot
 * handshake, one poll per run, the next as soon as it ends; a failed poll
 * backs off, and shutdown cuts the poll in flight.
 */
@Injectable()
export class DispatchWorker {
  private readonly logger = new Logger(DispatchWorker.name);
  private readonly job: JobHandle;
  private lastError: string | null = null;
  /** The failure behind lastError, for the fields of the warning (its HTTP status above all). */
  private lastFailure: CpFailure | null = null;
  private lastErrorAt: Date | null = null;
  private lastPollAt: Date | null = null;
  private lastOutcome: DispatchStatus['lastOutcome'] = null;
  private lastOrder: LastOrder | null = null;
  private heldOrder: HeldOrder | null = null;
  // Durations are read from the monotonic clock: a wall-clock step must not age a failure.
  private failingSinceMono: number | null = null;
  private lastPollMono: number | null = null;
  private refusalsInARow = 0;

  constructor(
    private readonly client: ControlPlaneClient,
    private readonly verifier: DispatchVerifier,
    private readonly reducer: ReducerService,
    private readonly currentSystem: CurrentSystemReader,
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    @Inject(RANDOM) private readonly random: RandomSource,
    @Inject(CLOCK) private readonly clock: Clock,
    runtime: JobRuntime,
  ) {
    this.job = runtime.register({
      name: DISPATCH_POLL_NAME,
      afterBoot: true,
      schedule: { kind: 'loop' },
      backoff: DISPATCH_BACKOFF,
      // A long-poll holds nothing the agent must finish: cut it.
      onShutdown: { kind: 'abort' },
      run: ({ signal }) => this.poll(signal),
      onSettled: (run) => this.settledRun(run),
    });
  }

  status(): DispatchStatus {
    const job = this.job.status();
    return {
      polling: job.state === 'scheduled' || job.state === 'running',
      lastPollAt: this.lastPollAt?.toISOString() ?? null,
      lastOutcome: this.lastOutcome,
      consecutiveFailures: job.consecutiveFailures,
      failingSince: job.failingSince,
      lastError: this.lastError,
      lastErrorAt: this.lastErrorAt?.toISOString() ?? null,
      // Only while a failed poll backs off: otherwise the next poll follows the last at once.
      nextPollAt: job.consecutiveFailures > 0 && job.state === 'scheduled' ? job.nextDueAt : null,
      lastOrder: this.lastOrder && { ...this.lastOrder },
      heldOrder: this.heldOrder && { ...this.heldOrder },
    };
  }

  /** Monotonic ms of the last poll's end and of the current failure streak's start; null when none. */
  progress(): { lastPollMono: number | null; failingSinceMono: number | null } {
    return { lastPollMono: this.lastPollMono, failingSinceMono: this.failingSinceMono };
  }

  private async poll(signal: AbortSignal): Promise<JobResult> {
    // Real time, as it paces real requests: the fake clock of a test must not turn this into a busy loop either.
    const startedMs = performance.now();
    this.lastFailure = null;
    await this.verifier.storeHeld();
    const result = await this.client.pollDispatch(DISPATCH_WAIT_SECS, { signal });
    if (signal.aborted) return failed('cut short by shutdown');
    this.lastPollAt = this.clock.now();
    this.lastPollMono = this.clock.monotonicMs();
    if (result.ok) {
      this.failingSinceMono = null;
      this.lastOutcome = result.response.body ? 'order' : 'no-order';
      if (result.response.body) {
        const refused = (await this.accept(result.response.body, signal)) === 'refused';
        this.refusalsInARow = refused ? this.refusalsInARow + 1 : 0;
        if (refused) await pause(refusalPauseMs(this.refusalsInARow), signal);
      } else {
        this.refusalsInARow = 0;
        // A CP (or a proxy) that answers "nothing" at once instead of holding the poll must not get a request loop.
        const early = MIN_EMPTY_POLL_MS - (performance.now() - startedMs);
        if (early > 0) await pause(early, signal);
      }
      return ok();
    }
    this.lastOutcome = 'failed';
    this.failingSinceMono ??= this.lastPollMono;
    this.lastError = describeFailure(result.failure);
    this.lastFailure = result.failure;
    this.lastErrorAt = this.lastPollAt;
    const retryAfterSecs = result.failure.kind === 'http-status' ? result.failure.retryAfterSecs : null;
    return retryAfterSecs === null ? failed(this.lastError) : retryAfter(retryAfterSecs, this.lastError);
  }

  private settledRun(run: SettledRun): void {
    if (run.result.kind === 'ok') return;
    this.logger.warn(
      `dispatch poll failed: ${run.result.cause}; polling again in ${(run.delayMs / 1000).toFixed(1)} s (${run.consecutiveFailures} failure(s) in a row)`,
      {
        ...(this.lastFailure === null ? {} : failureFields(this.lastFailure)),
        retryInSecs: Math.round(run.delayMs / 100) / 10,
        consecutiveFailures: run.consecutiveFailures,
      },
    );
  }

  /** 'refused': the order's signed manifest failed a check, and the next poll should wait. */
  private async accept(order: DispatchOrder, signal: AbortSignal): Promise<'refused' | 'done'> {
    const fields = { rolloutId: order.rollout_id, closure: order.target_closure };
    if (order.hostname !== this.config.machineId) {
      this.logger.warn(`dispatch for ${order.rollout_id} names host "${order.hostname}", not "${this.config.machineId}"; ignored`, {
        ...fields,
        hostname: order.hostname,
      });
      return 'done';
    }
    const lastOrder: LastOrder = {
      rolloutId: order.rollout_id,
      targetClosure: order.target_closure,
      receivedAt: this.clock.now().toISOString(),
      outcome: 'submitting',
      detail: null,
    };
    this.lastOrder = lastOrder;
    this.logger.log(`dispatch received: ${order.rollout_id} → ${order.target_closure} (soak until ${order.soak_due_at})`, {
      ...fields,
      soakDueAt: order.soak_due_at,
    });
    const receivedAt = lastOrder.receivedAt;
    const settle = (outcome: LastOrder['outcome'], detail: string | null = null): void => {
      lastOrder.outcome = outcome;
      lastOrder.detail = detail;
    };
    // PROTOCOL §12: nothing is acknowledged or switched before the fleet CI's signature holds.
    const verdict = await this.verifier.judge(order, signal);
    switch (verdict.kind) {
      case 'act':
        break;
      case 'refused':
        settle('refused', `${verdict.refusal.reason}: ${verdict.refusal.detail}`);
        return 'refused';
      case 'stopped':
        settle('not-applied', 'the agent stopped first');
        return 'done';
      default: {
        const never: never = verdict;
        return never;
      }
    }
    let result;
    try {
      // The CP hands an order out once (§8): one lost to a full disk would never come back.
      result = await submitUntilDurable(
        this.reducer,
        {
          type: 'Activate',
          rolloutId: order.rollout_id,
          targetClosure: order.target_closure,
          soakDueAt: order.soak_due_at,
          currentClosure: await this.currentSystem.read(),
          dispatchedAt: order.enqueued_at,
        },
        {
          signal,
          random: this.random,
          onHeld: (err, attempts, retryInMs) => {
            this.heldOrder = {
              rolloutId: order.rollout_id,
              targetClosure: order.target_closure,
              receivedAt,
              attempts,
              lastError: err.message,
              nextTryAt: new Date(this.clock.now().getTime() + retryInMs).toISOString(),
            };
            if (attempts === 1) {
              this.logger.error(
                `dispatch for ${order.rollout_id} held: ${err.message}; kept in memory and applied once the event log takes writes (tried again with backoff); no new poll meanwhile`,
                fields,
              );
            }
          },
        },
      );
    } catch (err) {
      this.heldOrder = null; // not applied, for a reason other than the disk: said here, not below
      settle('not-applied', (err as Error).message);
      // A throw here would end the poll loop for good; the next poll goes on.
      this.logger.error(`dispatch for ${order.rollout_id} not applied: ${(err as Error).message}; polling goes on`, fields);
      return 'done';
    } finally {
      const held = this.heldOrder;
      this.heldOrder = null;
      if (held && signal.aborted) {
        settle('not-applied', `the agent stopped first (${held.attempts} attempt(s): ${held.lastError})`);
        this.logger.warn(
          `stopping with the dispatch for ${held.rolloutId} → ${held.targetClosure} never applied (${held.attempts} attempt(s): ${held.lastError}); the control plane must dispatch it again`,
          { ...fields, attempts: held.attempts },
        );
      } else if (held) {
        this.logger.log(`dispatch for ${held.rolloutId} applied after ${held.attempts} failed attempt(s) since ${held.receivedAt}`, {
          ...fields,
          attempts: held.attempts,
        });
      }
    }
    if (result === null) {
      if (lastOrder.outcome === 'submitting') settle('not-applied', 'the agent stopped first');
      return 'done';
    }
    if (result.rejected) {
      settle('rejected', result.rejected);
      this.logger.warn(`dispatch for ${order.rollout_id} not accepted: ${result.rejected}`, fields);
    } else {
      settle('accepted');
    }
    return 'done';
  }
}

/** The pause before the poll after the n-th refusal in a row (n ≥ 1). */
export function refusalPauseMs(n: number): number {
  return Math.min(REFUSAL_PAUSE.capMs, REFUSAL_PAUSE.firstMs * 2 ** Math.min(n - 1, 30));
}
